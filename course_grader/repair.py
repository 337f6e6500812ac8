"""Check a submitted notebook before grading, repair what would stop the batch, and say what was wrong.

nbgrader aborts a whole run on a duplicated grade_id and silently turns a deleted test cell into
"needs manual grade". Here a duplicated graded cell is dropped (a duplicated solution cell keeps its code
but loses its nbgrader identity, so it still runs where the student put it), deleted test cells are put
back by nbgrader's OverwriteCells.add_missing_cells, and edited test cells are restored by OverwriteCells;
each of these becomes a note in the report. The student's submitted file is never modified.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbgrader import utils

from course_grader.autograde import Job


def _graded_ids(nb: nbformat.NotebookNode) -> dict[str, nbformat.NotebookNode]:
    return {c.metadata.nbgrader["grade_id"]: c for c in nb.cells
            if utils.is_grade(c) and c.metadata.get("nbgrader", {}).get("grade_id")}


def _restore_metadata(nb: nbformat.NotebookNode, release: nbformat.NotebookNode, name: str) -> list[str]:
    """Give every nbgrader cell the release's nbgrader metadata (points, grade, solution, locked): a student who
    marks a solution cell as graded or invents a graded cell would otherwise make nbgrader's autograde fail,
    which is the student's doing, not the grader's. A cell with an id the release does not have runs as plain
    code."""
    released = {c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"] for c in release.cells
                if c.metadata.get("nbgrader", {}).get("grade_id")}
    notes = []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader")
        if not meta:
            continue
        grade_id = meta.get("grade_id")
        if grade_id not in released:
            del cell.metadata["nbgrader"]
            notes.append(f"{name}: cell {grade_id or '(no id)'} is not in the assignment (its nbgrader metadata removed)")
        elif dict(meta) != dict(released[grade_id]):
            cell.metadata["nbgrader"] = nbformat.from_dict(dict(released[grade_id]))
            notes.append(f"{name}: the nbgrader metadata of cell {grade_id} was edited (restored)")
    return notes


def repair(submitted: Path, release: Path | None, out: Path, max_bytes: int = Job.max_submission_bytes) -> list[str]:
    """Write a gradable copy of `submitted` to `out`; return notes (empty when nothing was wrong).

    A file over `max_bytes` is not read at all (its source would reach the autograded notebook, the judge's audit and
    the feedback whole): it is not graded, and the note says why and what to do."""
    name = submitted.stem
    size = submitted.stat().st_size
    if max_bytes and size > max_bytes:
        return [f"{name}: the notebook file is over the {max_bytes / (1 << 20):.0f} MiB a submission may be: not graded "
                f"(clear its outputs and submit it again)"]
    try:
        nb = nbformat.read(submitted, as_version=4)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the student's, not the grader's, problem
        return [f"{name}: malformed notebook, not graded ({type(exc).__name__})"]
    notes: list[str] = []
    seen: set[str] = set()
    kept = []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        grade_id = meta.get("grade_id")
        if not grade_id or not (utils.is_grade(cell) or utils.is_solution(cell) or utils.is_locked(cell)):
            kept.append(cell)
            continue
        if grade_id in seen:
            if utils.is_solution(cell) and not utils.is_grade(cell):
                del cell.metadata["nbgrader"]  # still runs, as an ordinary cell, where the student put it
                notes.append(f"{name}: solution cell {grade_id} pasted twice (the copy runs as plain code)")
                kept.append(cell)
            else:
                notes.append(f"{name}: graded cell {grade_id} pasted twice (the copy was removed)")
            continue
        seen.add(grade_id)
        kept.append(cell)
    nb.cells = kept
    if release is not None and release.exists():
        released = nbformat.read(release, as_version=4)
        notes += _restore_metadata(nb, released, name)
        expected = _graded_ids(released)
        present = _graded_ids(nb)
        for grade_id, cell in expected.items():
            if grade_id not in present:
                notes.append(f"{name}: graded cell {grade_id} was deleted (restored)")
            elif cell.cell_type == "code" and present[grade_id].source.strip() != cell.source.strip():
                notes.append(f"{name}: test cell {grade_id} was edited (restored)")
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    return notes
