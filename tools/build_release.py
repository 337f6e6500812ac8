"""Generate the student release (release/normalization/) from source/ with nbgrader.

nbgrader's generate_assignment strips solutions and hidden tests, prepends the header notebook and
clears outputs. It records the assignment in a gradebook; here that is a throw-away one, so building the
release never touches the course's gradebook. Two things are added to what nbgrader writes:
- every stub's `raise NotImplementedError()` names what to write ("GroupNorm.forward is not written yet..."),
  so an untouched stub says in one line where the work is;
- `nbgrader_config.py` with a per-cell limit for Validate (JupyterLab's button and `nbgrader validate`, run from
  the release folder): the course's grading limit times `settings.VALIDATE_SLACK`, so Validate works on a slow
  laptop.

Usage: python tools/build_release.py [--check]
  --check   build into a temporary folder and report whether release/ differs (exit 1 if it does)
"""

from __future__ import annotations

import argparse
import ast
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT = "normalization"
RELEASE = ROOT / "release"


def generate(release_dir: Path) -> Path:
    """Run nbgrader generate_assignment into release_dir; return the assignment folder."""
    nbgrader = Path(sys.executable).with_name("nbgrader")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            str(nbgrader), "generate_assignment", ASSIGNMENT, "--force", "--log-level=ERROR",
            f"--CourseDirectory.release_directory={release_dir}",
            f"--CourseDirectory.db_url=sqlite:///{tmp}/gradebook.db",
        ]
        # nbgrader runs `alembic` from PATH: put this environment's scripts first.
        env = dict(os.environ, PATH=f"{nbgrader.parent}{os.pathsep}{os.environ.get('PATH', '')}")
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"nbgrader generate_assignment failed:\n{done.stdout}\n{done.stderr}")
    finish(release_dir / ASSIGNMENT)
    return release_dir / ASSIGNMENT


RELEASE_CONFIG = '''"""nbgrader settings for students: Validate (JupyterLab's button, or `nbgrader validate Qn_....ipynb` run
in this folder) reads this file. Written by tools/build_release.py from the course's own limit."""

c = get_config()  # noqa: F821 (provided by nbgrader when it loads this file)

# A per-cell limit: generous, so that Validate works on a slow or busy laptop (Validate uses the small
# grading subset of MNIST, as grading does).
c.Execute.timeout = {timeout}
'''


def course_config():
    """The course's nbgrader_config.py, loaded as nbgrader loads it."""
    from traitlets.config.loader import PyFileConfigLoader

    return PyFileConfigLoader("nbgrader_config.py", path=str(ROOT)).load_config()


def _enclosing(source: str, line_number: int) -> str:
    """The qualified name (Class.method or function) of the def that holds line `line_number` (1-based)."""
    best: list[str] = []

    def visit(node: ast.AST, path: list[str]) -> None:
        nonlocal best
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if child.lineno <= line_number <= (child.end_lineno or child.lineno):
                    best = path + [child.name]
                    visit(child, best)

    visit(ast.parse(source), [])
    return ".".join(best)


def name_stubs(source: str, stub: str) -> str:
    """Each stub's `raise NotImplementedError()` (the last line of the course's code stub) with a message naming
    the function it sits in."""
    lines = source.splitlines()
    for number, line in enumerate(lines, start=1):
        if line.strip() == stub:
            where = _enclosing(source, number) or "this cell"
            lines[number - 1] = line.replace(
                stub, f'raise NotImplementedError("{where} is not written yet: replace this line with your code")')
    return "\n".join(lines)


def finish(assignment: Path) -> None:
    """Name the stubs of every release notebook and write the students' nbgrader_config.py."""
    from nbgrader.utils import compute_checksum

    config = course_config()
    stub = config.ClearSolutions.code_stub["python"].splitlines()[-1].strip()  # raise NotImplementedError()
    for path in sorted(assignment.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type == "code" and meta.get("solution") and stub in cell.source:
                cell.source = name_stubs(cell.source, stub)
                if "checksum" in meta:
                    meta["checksum"] = compute_checksum(cell)
        nbformat.write(nb, path)
    from course_grader import settings

    timeout = settings.VALIDATE_SLACK * settings.cell_timeout(ROOT)  # the grading limit, with room for a slow laptop
    (assignment / "nbgrader_config.py").write_text(RELEASE_CONFIG.format(timeout=timeout))


def differences(a: Path, b: Path) -> list[str]:
    """Relative paths that differ between two folders (missing on either side or different content)."""
    out = []
    cmp = filecmp.dircmp(a, b)
    out += [f"only in {a.name}: {p}" for p in cmp.left_only] + [f"only in {b.name}: {p}" for p in cmp.right_only]
    out += [f"differs: {p}" for p in cmp.diff_files]
    for sub in cmp.common_dirs:
        out += [f"{sub}/{d}" for d in differences(a / sub, b / sub)]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        built = generate(Path(tmp) / "release")
        if args.check:
            committed = RELEASE / ASSIGNMENT
            if not committed.exists():
                print(f"release/{ASSIGNMENT} is missing: run `make release`")
                return 1
            diff = differences(built, committed)
            if diff:
                print("release/ is stale (run `make release`):", *diff, sep="\n  ")
                return 1
            return 0
        target = RELEASE / ASSIGNMENT
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(built, target)
    print(f"wrote {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
