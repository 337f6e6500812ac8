"""The student environment for tests: `make student` builds it (.venv-student/) the first time."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUDENT_VENV = ROOT / ".venv-student"


def student_bin() -> Path:
    """The bin folder of the student environment; `make student` builds it, or rebuilds it when student/ or
    course_lib/ changed since (it does nothing when it is up to date)."""
    done = subprocess.run(["make", "student"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"make student failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return STUDENT_VENV / "bin"
