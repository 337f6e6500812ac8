"""What the corpora of submissions share (tests/hostile.py, habits.py, routes.py): filling a release notebook with
solutions, adding a student's cell or editing a solution cell, grading a class of one-notebook students through
the real pipeline, and reading back each student's points and what the grader said about them (and the cells of
the CSV files it wrote, and whether each is inert)."""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
import time
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from course_grader import inert
from course_grader.pipeline import Options, run
from course_mutation import demo
from demo_class import points_per_test

ROOT = Path(__file__).resolve().parent.parent


def notebook_name(course: Path, question: str) -> str:
    """`Q3` -> `Q3_batchnorm` (the release's name)."""
    return next(p.stem for p in (course / "release" / "normalization").glob(f"{question}_*.ipynb"))


def cell_index(nb: nbformat.NotebookNode, grade_id: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def add_cell(nb: nbformat.NotebookNode, code: str, after: str = "", first: bool = False) -> None:
    """A code cell the student added: right after the cell whose grade_id is `after`, or as the notebook's first
    code cell (before the locked setup cell: where fast.ai's `%load_ext autoreload` goes)."""
    if first:
        index = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    else:
        index = cell_index(nb, after) + 1
    nb.cells.insert(index, nbformat.v4.new_code_cell(code))


def edit_cell(nb: nbformat.NotebookNode, grade_id: str, edits: tuple[tuple[str, str], ...] = (),
              prefix: str = "", suffix: str = "") -> None:
    """Change a solution cell as a student would: each (old, new) replaced exactly once, code before and after."""
    cell = nb.cells[cell_index(nb, grade_id)]
    text = cell.source
    for old, new in edits:
        if text.count(old) != 1:
            raise ValueError(f"{grade_id}: {old!r} occurs {text.count(old)} times")
        text = text.replace(old, new)
    cell.source = prefix + text + suffix


@dataclass
class Graded:
    """One student's result in a graded class."""

    points: dict[str, float]  # test -> points
    maximum: dict[str, float]  # test -> the test's points
    findings: list[str] = field(default_factory=list)  # notes, reasons, review: whatever the grader said

    @property
    def total(self) -> float:
        return sum(self.points.values())

    @property
    def max_total(self) -> float:
        return sum(self.maximum.values())


def _said(outcome, student: str, notebook: str) -> list[str]:
    """Everything the grader said about a student's notebook: the judge's notes, the row's reasons as grades.csv has
    them (row.why: the findings held for review first), and the findings the worker returned for the notebook."""
    result = outcome.results.get(student)
    row = next((r for r in outcome.rows if r.student == student), None)
    said = [*(result.notes if result else []), *(row.why if row else []),
            *(f"review: {f}" for f in (result.review.get(notebook, []) if result else []))]
    # one notebook per student, the others missing on purpose; written answers wait for manual grading
    return list(dict.fromkeys(t for t in said if "not submitted" not in t and "manual grading pending" not in t))


@contextmanager
def graded_class(make: Callable[[Path, Path], dict[str, tuple[str, nbformat.NotebookNode]]], prefix: str,
                 **limits) -> Iterator[tuple[dict[str, Graded], float, object]]:
    """Grade the class `make(release, source)` returns ({student: (notebook name, its notebook file)}, built from
    a throw-away course's release and source folders) as root (kernels isolated) with 2 jobs, without the
    experiment cells: ({student: Graded}, seconds the grading took, the pipeline's Outcome).
    CORPUS_KEEP=1 keeps the course (autograded notebooks, feedback) for a look afterwards."""
    assert os.geteuid() == 0, "graded as root, as in CI, so that kernels are isolated"
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    os.chmod(base, 0o755)
    try:
        course = demo.course_copy(base, ROOT)
        submissions = make(*release_and_source(course))
        class_dir = base / "class"
        for student, (name, nb) in submissions.items():
            folder = class_dir / student / "normalization"
            folder.mkdir(parents=True)
            nbformat.write(nb, folder / f"{name}.ipynb")
        questions = sorted({name.split("_")[0] for name, _ in submissions.values()})
        options = dict(cell_timeout=30, notebook_timeout=240, progress=False, report=False)
        options.update(limits)
        started = time.monotonic()
        outcome = run(Options(root=course, class_dir=class_dir, jobs=2, notebooks=questions, csv=course / "corpus.csv", **options))
        seconds = time.monotonic() - started
        maximum = points_per_test(course)
        graded = {}
        for student, (name, _) in submissions.items():
            score = outcome.scores.get(student, {}).get(name)
            graded[student] = Graded(dict(score.tests) if score else {}, maximum[name],
                                     _said(outcome, student, name))
        yield graded, seconds, outcome
    finally:
        if os.environ.get("CORPUS_KEEP"):
            print(f"kept: {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def release_and_source(course_or_root: Path) -> tuple[Path, Path]:
    return course_or_root / "release" / "normalization", course_or_root / "source" / "normalization"


def csv_cells(path: Path) -> list[str]:
    """Every cell of a CSV file the grader wrote, row after row."""
    with open(path, newline="") as f:
        return [cell for row in csv.reader(f) for cell in row]


def not_inert(cell: str) -> str | None:
    """Why a CSV cell is not inert text (a formula, a control character), or None when it is."""
    if cell.startswith(inert.FORMULA):
        return "formula"
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in cell):
        return "control character"
    return None
