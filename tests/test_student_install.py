"""The student install (student/pyproject.toml, `make student`): exactly what the release notebooks need.

A student environment is built in .venv-student/ the first time (a few minutes: PyTorch). In it, every
release notebook filled with the instructor's solutions passes nbgrader's own `nbgrader validate`, run from
the release folder as a student's Validate button runs it, while two CPU-bound processes and the other
validations keep the two cores busy (a slow laptop); the untouched stubs fail naming the function to write.
The environment holds none of the instructor's tools or grading packages.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest

from process_tools import cpu_burners
from tests.student_env import RELEASE, ROOT, private_env, solved_release, student_bin

SUCCESS = "Success! Your notebook passes all the tests."
NOTEBOOK_IMPORTS = {"course_lib", "torch", "matplotlib"}  # besides the standard library
BURNERS = 2  # CPU-bound processes beside the validations: a slow laptop that is doing other work
AT_ONCE = 3  # validations at a time
INSTRUCTOR_ONLY = ("course_recorder", "course_judge", "course_grader", "course_mutation", "nbval", "pytest",
                   "psycopg2", "playwright")


@pytest.fixture(scope="module")
def student() -> Path:
    return student_bin()


def test_the_student_environment_has_no_instructor_tools(student, tmp_path):
    code = "import importlib.util, sys; print([m for m in sys.argv[1:] if importlib.util.find_spec(m)])"
    done = subprocess.run([str(student / "python"), "-c", code, *INSTRUCTOR_ONLY, "course_lib"], cwd=tmp_path,
                          env=private_env(student, tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['course_lib']", f"found in the student install: {done.stdout}"
    installed = Path(subprocess.run([str(student / "python"), "-c", "import course_lib; print(course_lib.__file__)"],
                                    cwd=tmp_path, env=private_env(student, tmp_path), capture_output=True, text=True,
                                    timeout=120).stdout.strip())
    assert ROOT / "course_lib" not in installed.parents, "course_lib should be installed, not read from the course root"


def test_release_notebooks_import_only_course_lib_torch_and_matplotlib():
    found = {}
    for path in sorted(RELEASE.glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "code":
                continue
            code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in cell.source.splitlines())
            for node in ast.walk(ast.parse(code)):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
                for name in names:
                    top = name.split(".")[0]
                    if top not in NOTEBOOK_IMPORTS and top not in sys.stdlib_module_names:
                        found.setdefault(path.name, set()).add(name)
    assert not found, f"release notebooks import more than course_lib, torch, matplotlib and the standard library: {found}"


def _validate(student: Path, folder: Path, home: Path, name: str) -> str:
    done = subprocess.run([str(student / "nbgrader"), "validate", name], cwd=folder, env=private_env(student, home),
                          capture_output=True, text=True, timeout=1200)
    return done.stdout + done.stderr


def test_validate_passes_every_solved_notebook_on_a_busy_machine(student, tmp_path):
    """nbgrader validate, from the release folder (its nbgrader_config.py), on a machine kept busy: two CPU-bound
    processes run throughout, and the notebooks are validated three at a time, so every Validate has at least
    two other CPU-bound processes beside it (usually four) and the nine share the cores instead of waiting."""
    folder = tmp_path / "normalization"
    notebooks = solved_release(folder)
    with cpu_burners(BURNERS), ThreadPoolExecutor(AT_ONCE) as pool:
        outputs = pool.map(lambda path: _validate(student, folder, tmp_path, path.name), notebooks)
        results = dict(zip((path.name for path in notebooks), outputs))
    failed = {name: out[-2500:] for name, out in results.items() if SUCCESS not in out}
    assert len(results) == 9
    assert not failed, failed


def test_an_untouched_stub_names_the_function_to_write(student, tmp_path):
    folder = tmp_path / "normalization"
    shutil.copytree(RELEASE, folder)
    out = _validate(student, folder, tmp_path, "Q8_groupnorm.ipynb")
    assert SUCCESS not in out
    assert "NotImplementedError: GroupNorm.__init__ is not written yet" in out, out[-3000:]  # nbgrader shortens it
