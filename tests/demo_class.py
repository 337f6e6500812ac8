"""The demo class as the grading tests use it: a throw-away copy of the course, the limits, the notebooks graded.

The session fixtures `course` and `graded` (conftest.py) are built from these, so the grading tests and the
grader-failure tests share one graded demo class.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

from course_mutation import demo

ROOT = Path(__file__).resolve().parent.parent
# Training-heavy demo and experiment cells are not run (the pipeline's default: tests never depend on them).
LIMITS = dict(cell_timeout=25, notebook_timeout=240, progress=False)


def graded_notebooks(course: Path) -> list[str]:
    """The notebooks where the demo's crash, hang and tampering happen (realistic students err in them too).

    Grading every notebook of the class takes a kernel start per notebook and student; these two or three
    notebooks exercise every case within the test budget on 2 shared cores.
    """
    names = sorted(p.stem for p in (course / "release" / "normalization").glob("*.ipynb"))
    plans = demo.plans(names, [n for n in names if demo.stop_cell(course / "source" / "normalization" / f"{n}.ipynb")],
                       [n for n in names if points_per_test(course)[n]])
    chosen = {p.stop[0] for p in plans if p.stop} | {p.tampered[0] for p in plans if p.tampered}
    return sorted(chosen)


def fixture_notebooks(course: Path) -> list[str]:
    """What the shared `graded` fixture grades: graded_notebooks, and those the copier copied (the class report's
    similarity section reads the autograded notebooks). The other runs of the demo class grade graded_notebooks."""
    names = sorted(p.stem for p in (course / "release" / "normalization").glob("*.ipynb"))
    copied = {n for n in names if demo.question(n) in demo.COPIED[1]}
    return sorted(set(graded_notebooks(course)) | copied)


def points_per_test(course: Path) -> dict[str, dict[str, float]]:
    """{notebook: {test grade_id: points}} from the source notebooks, in notebook order."""
    out = {}
    for path in sorted((course / "source" / "normalization").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        out[path.stem] = {c.metadata.nbgrader["grade_id"]: float(c.metadata.nbgrader["points"])
                          for c in nb.cells if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")}
    return out


def reasons_on(rows, notebooks: list[str]) -> dict[str, list[str]]:
    """{student: reasons} of a run's rows, the manual-grading-pending reason cut to `notebooks`' questions: a run of
    graded_notebooks compares with the `graded` fixture, which graded the copier's notebooks too."""
    questions = {demo.question(n) for n in notebooks}
    pending = "manual grading pending: "
    out = {}
    for row in rows:
        kept = []
        for reason in row.reasons:
            if reason.startswith(pending):
                reason = pending + " ".join(q for q in reason[len(pending):].split() if q in questions)
            first = reason.removeprefix("not graded: ").removeprefix("held for review: ").split(":", 1)[0]
            if re.fullmatch(r"Q\d+", first) and first not in questions:
                continue  # about a notebook only one of the runs graded
            kept.append(reason)
        out[row.student] = kept
    return out


def scores_of(outcome, student: str) -> dict[str, dict[str, float]]:
    """{notebook: {test: points}} a run gave one student."""
    return {nb: score.tests for nb, score in outcome.scores[student].items()}


def same_scores(outcome, graded, students, notebooks) -> None:
    """Every student graded, with exactly the quiet run's points on `notebooks`, test by test."""
    for student in students:
        assert outcome.results[student].ok, (student, outcome.results[student].not_graded)
        assert scores_of(outcome, student) == {nb: scores_of(graded, student)[nb] for nb in notebooks}, \
            (student, outcome.results[student].problems, outcome.results[student].retried,
             next((r.reasons for r in outcome.rows if r.student == student), None))
