"""The class table (one row per student, one column per question) and grades.csv."""

from __future__ import annotations

import csv
import re
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

    @property
    def status(self) -> str:
        return "ok" if not self.reasons else "attention"


def _root_cause(log: str) -> str:
    """The most telling line of a failed run's log: the first exception that is not nbgrader's summary."""
    lines = [l.strip() for l in log.strip().splitlines() if l.strip()]
    causes = [l for l in lines if re.match(r"^[\w.]+(Error|Exception|Exit)\b", l) and "NbGraderException" not in l]
    return causes[0] if causes else (lines[-1] if lines else "no log")


def question(notebook: str) -> str:
    """`Q4_nn_batchnorm` -> `Q4`."""
    return notebook.split("_", 1)[0]


def build_rows(students: list[str], scores: dict[str, dict[str, NotebookScore]], notes: dict[str, list[str]],
               problems: dict[str, dict[str, str]], errors: dict[str, str]) -> list[Row]:
    """Rows for every student, whether or not grading produced scores for them."""
    rows = []
    for student in students:
        row = Row(student)
        for name, nb in sorted(scores.get(student, {}).items()):
            row.scores[question(name)] = nb.score
            row.total += nb.score
            row.max_total += nb.max_score
        if errors.get(student):
            row.reasons.append("grading failed: " + _root_cause(errors[student])[:200])
        if student not in scores:
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
    found = {q for row in rows for q in row.scores}
    return sorted(found, key=lambda q: (len(q), q))


def write_csv(rows: list[Row], path: Path) -> None:
    """grades.csv: student, one column per question, total, max, status, reasons."""
    cols = questions(rows)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", *cols, "total", "max", "status", "reasons"])
        for row in rows:
            cells = [_fmt(row.scores[q]) if q in row.scores else "" for q in cols]
            writer.writerow([row.student, *cells, _fmt(row.total), _fmt(row.max_total), row.status,
                             "; ".join(row.reasons)])


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
        flag = "  !" if row.reasons else ""
        lines.append(f"{row.student:<{width}} {cells} {_fmt(row.total):>7} {_fmt(row.max_total):>5}{flag}")
    attention = [r for r in rows if r.reasons]
    if attention:
        lines += ["", "Needs attention:"]
        for row in attention:
            lines.append(f"  {row.student}:")
            lines += [f"    - {reason}" for reason in row.reasons]
    return "\n".join(lines)
