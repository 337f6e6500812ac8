"""Run a source notebook's graded test cells against an injected implementation, in-process, and judge them.

The mutation tests use this to prove that each hidden test catches the mistakes it is meant for and
passes correct alternatives, without a kernel or a full autograde. It keeps the notebook's order:
setup cells and solution cells run (a solution cell's code can be replaced), demo and experiment cells
are skipped, and every test cell runs with the recorder sending its results here instead of to a kernel's
display. The same judge as in grading (course_judge.judge_notebook) then decides each test from those
records and the notebook's source, so a test passes here exactly when it would pass under autograde.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import nbformat

from course_grader.settings import ASSIGNMENT

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "source" / ASSIGNMENT
RELEASE = ROOT / "release" / ASSIGNMENT


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
    output: str = ""  # the judge's message when the test failed
    mistake: str | None = None  # the catalogued mistake the judge named, its id (Verdict.mistake)

    @property
    def passed(self) -> bool:
        return self.points == self.max_points


@dataclass
class RunResult:
    tests: dict[str, TestResult] = field(default_factory=dict)
    error: str | None = None  # a setup or solution cell that raised
    notes: list[str] = field(default_factory=list)  # the judge's notes for the instructor (tampering, delegation)

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


def _kind(cell: nbformat.NotebookNode) -> str:
    """setup, solution, test, answer, demo, experiment, markdown or other, from the nbgrader metadata and tags."""
    meta = cell.metadata.get("nbgrader", {})
    tags = cell.metadata.get("tags", [])
    if cell.cell_type != "code":
        return "answer" if meta.get("solution") else "markdown"
    if meta.get("solution"):
        return "solution"
    if meta.get("grade"):
        return "test"
    for tag in ("setup", "demo", "experiment"):
        if tag in tags:
            return tag
    return "other"


def read_cells(path: Path) -> list[Cell]:
    """The cells of a notebook, classified by their nbgrader metadata and tags."""
    nb = nbformat.read(path, as_version=4)
    cells = []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        cells.append(Cell(_kind(cell), meta.get("grade_id"), cell.source, float(meta.get("points", 0) or 0)))
    return cells


def _strip_magics(source: str) -> str:
    """IPython line magics (%matplotlib) have no meaning outside a kernel."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def _error(exc: BaseException) -> dict:
    return nbformat.v4.new_output("error", ename=type(exc).__name__, evalue=str(exc)[:2000],
                                  traceback=traceback.format_exception_only(type(exc), exc))


def _run_cell(cell: nbformat.NotebookNode, namespace: dict, where: str, bundles: list) -> None:
    """Execute one cell as a kernel would: its record bundles and its error (if any) become its outputs."""
    from course_recorder import MIME

    bundles.clear()
    cell.outputs = []
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            exec(compile(_strip_magics(cell.source), where, "exec"), namespace)
    except BaseException as exc:  # noqa: BLE001 - a cell may raise anything, SystemExit included
        if isinstance(exc, KeyboardInterrupt):
            raise
        cell.outputs.append(_error(exc))
    for bundle in bundles:  # through JSON, as a kernel's display output would be
        cell.outputs.insert(-1 if cell.outputs and cell.outputs[-1].output_type == "error" else len(cell.outputs),
                            nbformat.v4.new_output("display_data", data={MIME: json.loads(json.dumps(bundle))}))


HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS\n.*?### END HIDDEN TESTS\n?", re.S)


def _execute(path: Path, replace: dict[str, str], only: set[str] | None, visible_only: bool,
             result: RunResult) -> nbformat.NotebookNode:
    """Run the notebook's setup, solution and (chosen) test cells in one namespace; the executed notebook."""
    import course_recorder

    nb = nbformat.read(path, as_version=4)
    kinds = [_kind(cell) for cell in nb.cells]
    unknown = set(replace) - {c.metadata["nbgrader"]["grade_id"] for c, k in zip(nb.cells, kinds) if k == "solution"}
    if unknown:
        raise KeyError(f"{path.name} has no solution cell named {sorted(unknown)}")
    namespace: dict = {"__name__": "__main__"}
    bundles: list = []
    course_recorder.set_sink(bundles.append)
    try:
        for cell, kind in zip(nb.cells, kinds):
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            if kind == "solution" and grade_id in replace:
                cell.source = replace[grade_id]
            if kind == "test" and visible_only:
                cell.source = HIDDEN.sub("", cell.source)
            if kind in ("setup", "solution") or (kind == "test" and (only is None or grade_id in only)):
                _run_cell(cell, namespace, f"<{path.stem}:{grade_id}>", bundles)
                if kind != "test" and cell.outputs and not result.error:
                    result.error = f"{grade_id}: {cell.outputs[0].ename}: {cell.outputs[0].evalue}"
            elif cell.cell_type == "code":
                cell.outputs = []
    finally:
        course_recorder.set_sink(None)
    return nb


def run_notebook(path: Path | str, replace: dict[str, str] | None = None, only: set[str] | None = None) -> RunResult:
    """Run setup, solution and test cells of a notebook and judge them; `replace` maps solution grade_ids to code.

    `only` restricts which test cells are run and reported (all by default). Grading mode is switched on, as
    under autograde (the visible checks of course_lib.checks stand aside there, as they do under autograde),
    and plots go to a non-interactive backend.
    """
    from course_judge import judge_notebook

    path = notebook_path(str(path)) if not isinstance(path, Path) else path
    os.environ.setdefault("COURSE_GRADING_MODE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    result = RunResult()
    with mock.patch.dict(os.environ, NBGRADER_EXECUTION="autograde"):
        nb = _execute(path, dict(replace or {}), only, False, result)
    release = nbformat.read(RELEASE / path.name, as_version=4)
    judged = judge_notebook(nb, release, path.stem)
    result.notes = judged.notes
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if _kind(cell) == "test" and (only is None or grade_id in only):
            points = float(cell.metadata["nbgrader"].get("points", 0) or 0)
            verdict = judged.verdicts[grade_id]
            result.tests[grade_id] = TestResult(grade_id, points if verdict.passed else 0.0, points, verdict.message,
                                                verdict.mistake)
    return result


def run_visible(path: Path | str, replace: dict[str, str] | None = None) -> dict[str, str]:
    """The visible checks alone, as a student's Validate runs them (hidden tests stripped, not under autograde):
    {test grade_id: "" when its visible part passed, else "ErrorName: message"}."""
    path = notebook_path(str(path)) if not isinstance(path, Path) else path
    os.environ.setdefault("MPLBACKEND", "Agg")
    result = RunResult()
    with mock.patch.dict(os.environ, NBGRADER_EXECUTION="validate", COURSE_GRADING_MODE="1"):
        nb = _execute(path, dict(replace or {}), None, True, result)
    if result.error:
        raise RuntimeError(f"{path.name}: {result.error}")
    return {cell.metadata["nbgrader"]["grade_id"]: next(
                (f"{o.ename}: {o.evalue}" for o in cell.outputs if o.output_type == "error"), "")
            for cell in nb.cells if _kind(cell) == "test"}


def solution_source(path: Path | str, grade_id: str) -> str:
    """The instructor's solution code of one solution cell (for building variants by editing it)."""
    path = notebook_path(str(path)) if not isinstance(path, Path) else path
    for cell in read_cells(path):
        if cell.kind == "solution" and cell.grade_id == grade_id:
            return cell.source
    raise KeyError(f"{path.name} has no solution cell {grade_id!r}")


def variant_code(path: Path | str, variant) -> dict[str, str]:
    """{solution grade_id: code} for one catalogue variant (course_mutation.Variant)."""
    path = notebook_path(str(path)) if not isinstance(path, Path) else path
    return {variant.solution: variant.source(solution_source(path, variant.solution))}


def run_variant(path: Path | str, variant, only: set[str] | None = None) -> RunResult:
    """run_notebook with one solution cell replaced by a catalogue variant (course_mutation.Variant)."""
    return run_variants(path, (variant,), only=only)


def run_variants(path: Path | str, variants, only: set[str] | None = None) -> RunResult:
    """run_notebook with several solution cells each replaced by a catalogue variant (one per cell)."""
    replace: dict[str, str] = {}
    for variant in variants:
        if variant.solution in replace:
            raise ValueError(f"two variants replace the solution cell {variant.solution!r}")
        replace.update(variant_code(path, variant))
    return run_notebook(path, replace=replace, only=only)
