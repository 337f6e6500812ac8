"""Run a source notebook's graded test cells against an injected implementation, in-process.

The mutation tests use this to prove that each hidden test catches the mistakes it is meant for and
passes correct alternatives, without a kernel or a full autograde. It keeps the notebook's order:
setup cells and solution cells run (a solution cell's code can be replaced), demo and experiment cells
are skipped, and every test cell is graded as nbgrader grades it: full points when it raises nothing
and writes nothing to stderr, zero otherwise.
"""

from __future__ import annotations

import contextlib
import io
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "source" / "normalization"


@dataclass
class Cell:
    """One notebook cell as the harness sees it."""

    kind: str  # setup, solution, test, answer, demo, experiment, markdown, other
    grade_id: str | None
    source: str
    points: float = 0.0


@dataclass
class TestResult:
    grade_id: str
    points: float
    max_points: float
    output: str = ""  # the error and anything written to stderr, for failure messages

    @property
    def passed(self) -> bool:
        return self.points == self.max_points


@dataclass
class RunResult:
    tests: dict[str, TestResult] = field(default_factory=dict)
    error: str | None = None  # a setup or solution cell that raised

    @property
    def score(self) -> float:
        return sum(t.points for t in self.tests.values())

    @property
    def max_score(self) -> float:
        return sum(t.max_points for t in self.tests.values())

    def failed(self) -> list[str]:
        return [gid for gid, t in self.tests.items() if not t.passed]


def notebook_path(name: str) -> Path:
    """`Q3` or `Q3_batchnorm` or a path -> the source notebook."""
    path = Path(name)
    if path.suffix == ".ipynb" and path.exists():
        return path
    matches = sorted(SOURCE.glob(f"{name}*.ipynb"))
    if len(matches) != 1:
        raise FileNotFoundError(f"expected one source notebook matching {name!r} in {SOURCE}, found {len(matches)}")
    return matches[0]


def read_cells(path: Path) -> list[Cell]:
    """The cells of a notebook, classified by their nbgrader metadata and tags."""
    nb = nbformat.read(path, as_version=4)
    cells = []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        tags = cell.metadata.get("tags", [])
        grade_id = meta.get("grade_id")
        if cell.cell_type != "code":
            kind = "answer" if meta.get("solution") else "markdown"
        elif meta.get("solution"):
            kind = "solution"
        elif meta.get("grade"):
            kind = "test"
        elif "setup" in tags:
            kind = "setup"
        elif "demo" in tags or "experiment" in tags:
            kind = tags[0] if tags[0] in ("demo", "experiment") else ("demo" if "demo" in tags else "experiment")
        else:
            kind = "other"
        cells.append(Cell(kind, grade_id, cell.source, float(meta.get("points", 0) or 0)))
    return cells


def _strip_magics(source: str) -> str:
    """IPython line magics (%matplotlib) have no meaning outside a kernel."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def run_notebook(path: Path | str, replace: dict[str, str] | None = None, only: set[str] | None = None) -> RunResult:
    """Run setup, solution and test cells of a notebook; `replace` maps solution grade_ids to new code.

    `only` restricts which test cells are run (all by default). Grading mode is switched on, as under
    autograde, and plots go to a non-interactive backend.
    """
    path = notebook_path(str(path)) if not isinstance(path, Path) else path
    replace = dict(replace or {})
    os.environ.setdefault("COURSE_GRADING_MODE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    cells = read_cells(path)
    unknown = set(replace) - {c.grade_id for c in cells if c.kind == "solution"}
    if unknown:
        raise KeyError(f"{path.name} has no solution cell named {sorted(unknown)}")
    namespace: dict = {"__name__": "__main__"}
    result = RunResult()
    for cell in cells:
        if cell.kind in ("setup", "solution"):
            code = replace.get(cell.grade_id, cell.source) if cell.kind == "solution" else cell.source
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    exec(compile(_strip_magics(code), f"<{path.stem}:{cell.grade_id}>", "exec"), namespace)
            except Exception:  # a broken variant: later tests must fail, as in a real notebook
                result.error = result.error or f"{cell.grade_id}: {traceback.format_exc(limit=3)}"
        elif cell.kind == "test" and (only is None or cell.grade_id in only):
            result.tests[cell.grade_id] = _run_test(cell, namespace, path.stem)
    return result


def _run_test(cell: Cell, namespace: dict, stem: str) -> TestResult:
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            exec(compile(_strip_magics(cell.source), f"<{stem}:{cell.grade_id}>", "exec"), namespace)
    except BaseException as exc:  # noqa: BLE001 - a test cell may raise anything, SystemExit included
        if isinstance(exc, KeyboardInterrupt):
            raise
        text = "".join(traceback.format_exception_only(type(exc), exc))
        return TestResult(cell.grade_id, 0.0, cell.points, text + err.getvalue())
    if err.getvalue():  # nbgrader gives no points to a cell that writes to stderr
        return TestResult(cell.grade_id, 0.0, cell.points, "stderr: " + err.getvalue())
    return TestResult(cell.grade_id, cell.points, cell.points)


def solution_source(path: Path | str, grade_id: str) -> str:
    """The instructor's solution code of one solution cell (for building variants by editing it)."""
    path = notebook_path(str(path)) if not isinstance(path, Path) else path
    for cell in read_cells(path):
        if cell.kind == "solution" and cell.grade_id == grade_id:
            return cell.source
    raise KeyError(f"{path.name} has no solution cell {grade_id!r}")
