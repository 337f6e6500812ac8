"""The student's side for tests and benchmarks: the student environment (`make student` builds .venv-student/),
a shell of a student's own, and the release folder as a student who solved every exercise has it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUDENT_VENV = ROOT / ".venv-student"
RELEASE = ROOT / "release" / "normalization"
SOURCE = ROOT / "source" / "normalization"

# Variables of the test process that must not reach a student's programs: a user's Jupyter and IPython
# settings, a Python path or virtual environment, and the course's own switches (conftest.py turns grading
# mode on for the test process; a student's JupyterLab does not have it).
_PRIVATE_PREFIXES = ("JUPYTER", "IPYTHON", "PYTHON", "VIRTUAL_ENV", "COURSE_", "NBGRADER", "XDG_")


def student_bin() -> Path:
    """The bin folder of the student environment; `make student` builds it, or rebuilds it when student/ or
    course_lib/ changed since (it does nothing when it is up to date)."""
    done = subprocess.run(["make", "student"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"make student failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return STUDENT_VENV / "bin"


def private_env(bin_dir: Path, home: Path, **extra: str) -> dict[str, str]:
    """The environment of programs run from bin_dir with their own HOME and Jupyter folders under home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_PRIVATE_PREFIXES)}
    jupyter = home / ".jupyter"
    data = home / ".local" / "share" / "jupyter"
    env.update(
        HOME=str(home),
        JUPYTER_CONFIG_DIR=str(jupyter),
        JUPYTER_DATA_DIR=str(data),
        JUPYTER_RUNTIME_DIR=str(data / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(jupyter / "lab" / "user-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(jupyter / "lab" / "workspaces"),
        IPYTHONDIR=str(home / ".ipython"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        VIRTUAL_ENV=str(bin_dir.parent),
        MPLBACKEND="Agg",
    )
    env.update(extra)
    return env


def solved_release(dest: Path) -> list[Path]:
    """A copy of the release folder (its nbgrader_config.py included) with every notebook filled with the
    instructor's solutions; the notebooks, sorted."""
    from course_mutation.demo import Plan, write_student

    write_student(Plan("reference"), SOURCE, RELEASE, dest)
    shutil.copyfile(RELEASE / "nbgrader_config.py", dest / "nbgrader_config.py")
    return sorted(dest.glob("Q*.ipynb"))
