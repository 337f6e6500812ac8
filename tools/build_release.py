"""Generate the student release (release/normalization/) from source/ with nbgrader.

nbgrader's generate_assignment strips solutions and hidden tests, prepends the header notebook and
clears outputs. It records the assignment in a gradebook; here that is a throw-away one, so building the
release never touches the course's gradebook.

Usage: python tools/build_release.py [--check]
  --check   build into a temporary folder and report whether release/ differs (exit 1 if it does)
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

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
    return release_dir / ASSIGNMENT


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
