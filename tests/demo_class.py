"""The demo class as the grading tests use it: a throw-away copy of the course, the limits, the notebooks graded.

The session fixtures `course` and `graded` (conftest.py) are built from these, so the grading tests and the
grader-failure tests share one graded demo class.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from course_mutation import demo

ROOT = Path(__file__).resolve().parent.parent
# Training-heavy demo and experiment cells are not run (the pipeline's default: tests never depend on them).
LIMITS = dict(cell_timeout=25, notebook_timeout=240, progress=False)


def graded_notebooks(course: Path) -> list[str]:
    """The notebooks where the demo's crash, hang and tampering happen (realistic students err in them too), and
    those the copier copied (the class report's similarity section reads the autograded notebooks).

    Grading every notebook of the class takes a kernel start per notebook and student; these few notebooks
    exercise every case within the test budget on 2 shared cores.
    """
    names = sorted(p.stem for p in (course / "release" / "normalization").glob("*.ipynb"))
    plans = demo.plans(names, [n for n in names if demo.stop_cell(course / "source" / "normalization" / f"{n}.ipynb")],
                       [n for n in names if points_per_test(course)[n]])
    chosen = {p.stop[0] for p in plans if p.stop} | {p.tampered[0] for p in plans if p.tampered}
    chosen |= {n for p in plans if p.copied_from for n in p.variants}
    return sorted(chosen)


def points_per_test(course: Path) -> dict[str, dict[str, float]]:
    """{notebook: {test grade_id: points}} from the source notebooks, in notebook order."""
    out = {}
    for path in sorted((course / "source" / "normalization").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        out[path.stem] = {c.metadata.nbgrader["grade_id"]: float(c.metadata.nbgrader["points"])
                          for c in nb.cells if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")}
    return out


def scores_of(outcome, student: str) -> dict[str, dict[str, float]]:
    """{notebook: {test: points}} a run gave one student."""
    return {nb: score.tests for nb, score in outcome.scores[student].items()}
