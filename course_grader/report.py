"""The class table (one row per student, one column per question) and grades.csv."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from course_grader.gradebook import NotebookScore


@dataclass
class Row:
    """One student's line: scores per question and why the student needs attention, if they do."""

    student: str
    scores: dict[str, float] = field(default_factory=dict)  # question -> points
    total: float = 0.0
    max_total: float = 0.0
    reasons: list[str] = field(default_factory=list)
    not_graded: dict[str, str] = field(default_factory=dict)  # question -> the grader failure that stopped it

    @property
    def status(self) -> str:
        if self.not_graded:
            return "not graded"
        return "ok" if not self.reasons else "attention"


def question(notebook: str) -> str:
    """`Q4_nn_batchnorm` -> `Q4`."""
    return notebook.split("_", 1)[0]


def build_rows(students: list[str], scores: dict[str, dict[str, NotebookScore]], notes: dict[str, list[str]],
               problems: dict[str, dict[str, str]], not_graded: dict[str, dict[str, str]]) -> list[Row]:
    """Rows for every student, whether or not grading produced scores for them.

    A notebook the grader could not grade (not_graded: notebook -> cause) has no score, and neither has the
    student's total: the row says "not graded: Qn: <cause>" instead.
    """
    rows = []
    for student in students:
        row = Row(student)
        for name, cause in sorted(not_graded.get(student, {}).items()):
            row.not_graded[question(name)] = cause
            row.reasons.append(f"not graded: {question(name)}: {cause}")
        for name, nb in sorted(scores.get(student, {}).items()):
            if question(name) in row.not_graded:
                continue
            row.scores[question(name)] = nb.score
            row.total += nb.score
            row.max_total += nb.max_score
        if student not in scores and not row.not_graded:
            row.reasons.append("no grades recorded")
        for name, why in sorted(problems.get(student, {}).items()):
            row.reasons.append(f"{question(name)}: {why}")
        row.reasons += [_short(note) for note in notes.get(student, [])]
        pending = [question(n) for n, nb in sorted(scores.get(student, {}).items()) if nb.needs_manual_grade]
        if pending:
            row.reasons.append("manual grading pending: " + " ".join(pending))
        rows.append(row)
    return rows


def _short(note: str) -> str:
    """`Q4_nn_batchnorm: ...` -> `Q4: ...`."""
    head, sep, rest = note.partition(": ")
    return f"{question(head)}{sep}{rest}" if sep else note


def questions(rows: list[Row]) -> list[str]:
    """Question columns in numeric order (Q1 ... Q9)."""
    found = {q for row in rows for q in [*row.scores, *row.not_graded]}
    return sorted(found, key=lambda q: (len(q), q))


def write_csv(rows: list[Row], path: Path) -> None:
    """grades.csv: student, one column per question, total, max, status, reasons."""
    cols = questions(rows)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", *cols, "total", "max", "status", "reasons"])
        for row in rows:
            cells = [_fmt(row.scores[q]) if q in row.scores else "" for q in cols]
            total = "" if row.not_graded else _fmt(row.total)  # never a score for a student not fully graded
            writer.writerow([row.student, *cells, total, _fmt(row.max_total), row.status, "; ".join(row.reasons)])


def _fmt(x: float) -> str:
    return f"{x:g}"


def table(rows: list[Row]) -> str:
    """The printed table, then the students who need attention and why."""
    cols = questions(rows)
    width = max([len("student")] + [len(r.student) for r in rows])
    head = f"{'student':<{width}} " + " ".join(f"{q:>5}" for q in cols) + f" {'total':>7} {'max':>5}"
    lines = [head, "-" * len(head)]
    for row in rows:
        cells = " ".join(f"{_fmt(row.scores[q]) if q in row.scores else '-':>5}" for q in cols)
        flag = "  not graded" if row.not_graded else "  !" if row.reasons else ""
        total = "-" if row.not_graded else _fmt(row.total)
        lines.append(f"{row.student:<{width}} {cells} {total:>7} {_fmt(row.max_total):>5}{flag}")
    attention = [r for r in rows if r.reasons]
    if attention:
        lines += ["", "Needs attention:"]
        for row in attention:
            lines.append(f"  {row.student}:")
            lines += [f"    - {reason}" for reason in row.reasons]
    return "\n".join(lines)
