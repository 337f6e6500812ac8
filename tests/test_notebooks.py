"""The exercise notebooks: built from authoring/, the release built from source, nothing secret in what
students receive, every solution notebook runs and passes its own tests (nbgrader's Validator, every cell),
the outputs marked for checking match (nbval), and every graded test fails on the untouched release stubs."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "source" / "normalization"
RELEASE = ROOT / "release" / "normalization"
NOTEBOOKS = sorted(SOURCE.glob("Q*.ipynb"))
EXERCISE_NAMES = {"BatchNorm", "LayerNorm", "InstanceNorm", "GroupNorm", "RunningBatchNorm", "conv_layer"}
INSTRUCTOR_PACKAGES = ("course_recorder", "course_judge", "course_grader", "course_mutation")
REGION = re.compile(r"### BEGIN (SOLUTION|HIDDEN TESTS)\n(.*?)### END \1", re.S)
WORKERS = 2  # notebooks executed side by side (kernels are single-notebook, the machine has 2 cores)


def _env() -> dict[str, str]:
    env = dict(os.environ, COURSE_GRADING_MODE="1", MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(cmd: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)


def _each_notebook(make_cmd, notebooks: list[Path] = NOTEBOOKS) -> dict[str, str]:
    """Run one command per notebook, two at a time; {notebook: output} for those that failed."""
    with ThreadPoolExecutor(WORKERS) as pool:
        done = list(pool.map(lambda nb: (nb, _run(make_cmd(nb))), notebooks))
    return {nb.name: (p.stdout + p.stderr)[-4000:] for nb, p in done if p.returncode != 0}


def _cells(path: Path) -> list:
    return nbformat.read(path, as_version=4).cells


def test_nine_notebooks_and_a_header():
    numbers = [int(re.match(r"Q(\d)_", nb.name)[1]) for nb in NOTEBOOKS]
    assert numbers == list(range(1, 10)), [nb.name for nb in NOTEBOOKS]
    assert (ROOT / "source" / "header.ipynb").exists()


def test_source_notebooks_are_built_from_authoring():
    done = _run([sys.executable, "tools/build_notebooks.py", "--check"])
    assert done.returncode == 0, done.stdout + done.stderr


def test_release_is_fresh():
    done = _run([sys.executable, "tools/build_release.py", "--check"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in RELEASE.glob("*.ipynb")) == [nb.name for nb in NOTEBOOKS]


def _secret_lines() -> dict[str, str]:
    """Significant lines of every solution and hidden-test region, minus lines also shown to students."""
    secret, visible = {}, set()
    for path in NOTEBOOKS:
        for cell in _cells(path):
            regions = REGION.findall(cell.source)
            for _, body in regions:
                for line in body.splitlines():
                    text = line.strip()
                    if len(text) >= 24 and not text.startswith("#"):
                        secret.setdefault(text, path.name)
            if cell.cell_type == "markdown" and cell.metadata.get("nbgrader", {}).get("solution"):
                for line in cell.source.splitlines():  # a written answer's model answer is secret too
                    if len(line.strip()) >= 40:
                        secret.setdefault(line.strip(), path.name)
            else:
                shown = REGION.sub("", cell.source)
                visible.update(line.strip() for line in shown.splitlines())
    return {line: nb for line, nb in secret.items() if line not in visible}


def _student_files() -> list[Path]:
    # course_lib is checked by name (test_course_lib_solves_no_exercise): it carries the lesson's own
    # combine_scheds, which Q5 asks students to re-derive, so its lines may coincide with a solution's.
    return [p for p in (ROOT / "release").rglob("*") if p.is_file()]


def test_no_solution_or_hidden_test_reaches_students():
    secrets = _secret_lines()
    assert len(secrets) > 50, "expected the notebooks to hold solutions and hidden tests"
    leaks = []
    for path in _student_files():
        text = path.read_text(errors="replace")
        if re.search(r"BEGIN (SOLUTION|HIDDEN TESTS)|END HIDDEN TESTS", text):
            leaks.append(f"{path.relative_to(ROOT)}: solution or hidden-test markers")
        for package in INSTRUCTOR_PACKAGES:  # students do not have them, and they hold the answer key
            if package in text:
                leaks.append(f"{path.relative_to(ROOT)}: uses {package}")
        if path.suffix == ".ipynb":
            text = "\n".join(c.source for c in nbformat.reads(text, as_version=4).cells)
        lines = {line.strip() for line in text.splitlines()}
        leaks += [f"{path.relative_to(ROOT)}: {line!r} (from {nb})" for line, nb in secrets.items() if line in lines]
    assert not leaks, "\n".join(leaks[:20])


def test_course_lib_solves_no_exercise():
    defined = set()
    for path in (ROOT / "course_lib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                defined.add(node.name)
    assert not defined & EXERCISE_NAMES


def test_graded_cells_follow_the_house_pattern():
    """Each test cell opens with a docstring, has visible checks, ends with a statement; hidden tests exist."""
    problems = []
    for path in NOTEBOOKS:
        hidden = 0
        for cell in _cells(path):
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type != "code" or not meta.get("grade") or meta.get("solution"):
                continue
            gid = meta["grade_id"]
            tree = ast.parse(cell.source)
            visible = ast.parse(REGION.sub("", cell.source)).body
            hidden += "BEGIN HIDDEN TESTS" in cell.source
            if not (tree.body and isinstance(tree.body[0], ast.Expr) and isinstance(tree.body[0].value, ast.Constant)):
                problems.append(f"{path.name}/{gid}: does not open with a docstring")
            if len(visible) < 2:
                problems.append(f"{path.name}/{gid}: no visible check besides the docstring")
            last = tree.body[-1]
            if isinstance(last, ast.Expr) and not isinstance(last.value, ast.Call) and not (
                isinstance(last.value, ast.Constant) and last.value.value is None):
                problems.append(f"{path.name}/{gid}: ends with an expression (nbgrader reads it as partial credit)")
        if not hidden:
            problems.append(f"{path.name}: no hidden tests")
    assert not problems, "\n".join(problems)


def test_solution_notebooks_run_and_pass_their_own_tests():
    """One run of each solution notebook under nbgrader's Validator: every graded test passes, and every other
    code cell runs without an error or a line on stderr (validate_all)."""
    failed = _each_notebook(lambda nb: [sys.executable, "tools/validate.py", "--every-cell", str(nb.relative_to(ROOT))])
    assert not failed, failed


def test_checked_outputs_match_under_nbval():
    """The demo cells marked NBVAL_CHECK_OUTPUT (values small enough to check by hand) print what the notebook
    shows; nbval compares them. The notebooks without such a cell are run by the Validator test above."""
    marked = [nb for nb in NOTEBOOKS if "NBVAL_CHECK_OUTPUT" in nb.read_text()]
    assert marked, "no notebook has a NBVAL_CHECK_OUTPUT cell"
    failed = _each_notebook(lambda nb: [
        sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-cell-timeout=300", "-q", "-p", "no:cacheprovider",
        str(nb.relative_to(ROOT))], marked)
    assert not failed, failed


def test_every_graded_test_fails_on_the_release_stubs():
    failed = _each_notebook(lambda nb: [sys.executable, "tools/validate.py", "--invert",
                                        str((RELEASE / nb.name).relative_to(ROOT))])
    assert not failed, failed
