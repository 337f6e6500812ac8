"""Notebooks held for the instructor's review, and the instructor's decisions (reviews.json at the course root).

When the audit finds code it does not judge by itself (course_judge's `review`), the notebook keeps its scores
and is held: its row's status is "review" and the finding is quoted in the table, grades.csv and the class
report until the instructor decides, with one command each:

  python -m course_grader --review-clear alice:Q3     the scores stand (the row goes back to ok or attention)
  python -m course_grader --review-confirm alice:Q3   the notebook's autograded tests score 0

A confirmation is written into the gradebook as nbgrader's own manual score (0 on each autograded test cell of
that notebook), so nbgrader's totals, formgrader and a regrade (which keeps manual scores) all agree; the manual
scores it replaced are kept here, and a later clear puts them back. Decisions are kept in reviews.json, so a
regrade or `--report` keeps them; a decision holds for the findings it was made on: a regrade that finds
something else holds the notebook again (and undoes a confirmation's zeros).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

from course_grader import gradebook, inert
from course_grader.autograde import Result
from course_grader.report import Row, question

FILE = "reviews.json"
DECISIONS = ("cleared", "confirmed")


class NotHeld(ValueError):
    """A decision named a student or notebook that is not held for review."""


@dataclass
class Held:
    """One notebook's findings and what the instructor decided about them."""

    findings: list[str]
    decision: str = ""  # "" (waiting), "cleared" or "confirmed"
    decided: str = ""  # when, UTC ISO 8601
    kept: dict[str, float | None] = field(default_factory=dict)  # confirmed: test -> its manual score before


@dataclass
class Entry:
    """One student: their row of the last run before the reviews (report.Row as data), their held notebooks."""

    row: dict = field(default_factory=dict)
    notebooks: dict[str, Held] = field(default_factory=dict)


def _base(row: Row) -> dict:
    """A row as data without what the reviews add (they are applied afresh from this file)."""
    return {k: v for k, v in asdict(row).items() if k not in ("held", "confirmed")}


class Reviews:
    """reviews.json: every student with a notebook held or decided."""

    def __init__(self, path: Path, students: dict[str, Entry] | None = None) -> None:
        self.path = path
        self.students = students or {}

    @classmethod
    def load(cls, root: Path) -> Reviews:
        """The course's reviews (none when the file does not exist yet)."""
        path = root / FILE
        if not path.exists():
            return cls(path)
        data = json.loads(path.read_text())
        return cls(path, {student: Entry(entry.get("row", {}), {nb: Held(**held) for nb, held in
                                                                 entry.get("notebooks", {}).items()})
                          for student, entry in data.get("students", {}).items()})

    def save(self) -> None:
        """Write the file atomically (a concurrent reader sees the old one or the new one); a course that never
        held a notebook gets none."""
        if not self.students and not self.path.exists():
            return
        data = {"students": {s: asdict(e) for s, e in sorted(self.students.items()) if e.notebooks}}
        partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(partial, self.path)

    def record(self, db_url: str, results: dict[str, Result]) -> None:
        """This run's findings for every notebook it graded; a decision made on other findings is dropped."""
        for student, result in results.items():
            entry = self.students.setdefault(student, Entry())
            for notebook in result.graded:
                found = [inert.plain(f) for f in result.review.get(notebook, [])]
                held = entry.notebooks.pop(notebook, None)
                if held and held.findings != found:
                    if held.decision == "confirmed":
                        gradebook.restore_tests(db_url, student, notebook, held.kept)
                    held = None
                if found:
                    entry.notebooks[notebook] = held or Held(found)
            if not entry.notebooks:
                del self.students[student]

    def keep_rows(self, rows: list[Row]) -> None:
        """Remember the run's rows (before the reviews) of the students with a held notebook, for decide."""
        for row in rows:
            if row.student in self.students:
                self.students[row.student].row = _base(row)

    def apply(self, row: Row) -> Row:
        """The row with its held and confirmed notebooks (a cleared one is as if never held)."""
        entry = self.students.get(row.student)
        for notebook, held in sorted((entry.notebooks if entry else {}).items()):
            if held.decision == "confirmed":
                row.confirmed[question(notebook)] = list(held.findings)
            elif not held.decision:
                row.held[question(notebook)] = list(held.findings)
        return row

    def held(self) -> list[tuple[str, str, Held]]:
        """(student, notebook, Held) for every notebook with findings, decided or not."""
        return [(s, nb, h) for s, e in sorted(self.students.items()) for nb, h in sorted(e.notebooks.items())]

    def find(self, spec: str) -> tuple[str, str]:
        """`alice:Q3` (or `alice:Q3_batchnorm`) -> (student, notebook) of a held notebook, else NotHeld."""
        student, sep, name = spec.rpartition(":")
        if not sep or not student or not name:
            raise NotHeld(f"{spec!r}: say which student and notebook, as STUDENT:Q3")
        entry = self.students.get(student)
        notebooks = [nb for nb in (entry.notebooks if entry else {}) if name in (nb, question(nb))]
        if not notebooks:
            held = ", ".join(f"{s}:{question(nb)}" for s, nb, _ in self.held()) or "none"
            raise NotHeld(f"{inert.plain(spec)} is not held for review (held or decided: {inert.plain(held)})")
        return student, notebooks[0]

    def decide(self, db_url: str, spec: str, decision: str) -> str:
        """Clear or confirm one held notebook, in the gradebook and here (not saved yet); its student."""
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}")
        student, notebook = self.find(spec)
        held = self.students[student].notebooks[notebook]
        if held.decision == decision:
            return student  # said twice: nothing changes
        if decision == "confirmed":
            held.kept = gradebook.zero_tests(db_url, student, notebook)
        else:
            if held.decision == "confirmed":
                gradebook.restore_tests(db_url, student, notebook, held.kept)
            held.kept = {}
        held.decision = decision
        held.decided = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return student

    def row(self, student: str, db_url: str) -> Row:
        """A student's row as the last run made it, with today's gradebook scores and the reviews applied."""
        known = {f.name for f in fields(Row)}
        row = Row(**{k: v for k, v in self.students[student].row.items() if k in known} or {"student": student})
        scores = gradebook.scores(db_url, [student]).get(student, {})
        by_question = {question(nb): score for nb, score in scores.items()}
        for q in row.scores:
            if q in by_question:
                row.scores[q] = by_question[q].score
        shown = [by_question[q] for q in row.scores if q in by_question]
        if shown:
            row.total = sum(s.score for s in shown)
            row.max_total = sum(s.max_score for s in shown)
        return self.apply(row)
