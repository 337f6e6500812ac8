"""The class table (one row per student, one column per question) and grades.csv."""

from __future__ import annotations

import csv
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from course_grader import inert
from course_grader.gradebook import NotebookScore

COMMAND = "python -m course_grader"


@dataclass
class Row:
    """One student's line: scores per question and why the student needs attention, if they do."""

    student: str
    scores: dict[str, float] = field(default_factory=dict)  # question -> points
    total: float = 0.0
    max_total: float = 0.0
    reasons: list[str] = field(default_factory=list)
    not_graded: dict[str, str] = field(default_factory=dict)  # question -> the grader failure that stopped it
    held: dict[str, list[str]] = field(default_factory=dict)  # question -> findings waiting for the instructor
    confirmed: dict[str, list[str]] = field(default_factory=dict)  # question -> findings the instructor confirmed

    @property
    def status(self) -> str:
        """not graded > review > attention > ok."""
        if self.not_graded:
            return "not graded"
        if self.held:
            return "review"
        return "attention" if self.reasons or self.confirmed else "ok"

    @property
    def why(self) -> list[str]:
        """Every reason, as grades.csv and the class report show them: the findings first (quoted, inert)."""
        held = [f"held for review: {q}: {inert.plain(f)}" for q, found in sorted(self.held.items()) for f in found]
        return held + self.decided

    @property
    def decided(self) -> list[str]:
        """The reasons other than the notebooks still held: the confirmed findings, then the run's own reasons."""
        confirmed = [f"{q}: confirmed after review (its autograded tests score 0): {inert.plain(f)}"
                     for q, found in sorted(self.confirmed.items()) for f in found]
        return confirmed + [inert.plain(r, 2000) for r in self.reasons]


def decide_commands(student: str, q: str) -> tuple[str, str]:
    """The two commands that decide a held notebook: keep its scores, or zero its autograded tests."""
    spec = shlex.quote(inert.plain(f"{student}:{q}"))
    return f"{COMMAND} --review-clear {spec}", f"{COMMAND} --review-confirm {spec}"


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
        writer.writerow(inert.csv_row(["student", *cols, "total", "max", "status", "reasons"]))
        for row in rows:
            writer.writerow(inert.csv_row(csv_line(row, cols)))


def csv_line(row: Row, cols: list[str]) -> list[str]:
    """One student's grades.csv line under the question columns `cols` (text cells never run as formulas)."""
    cells = [_fmt(row.scores[q]) if q in row.scores else "" for q in cols]
    total = "" if row.not_graded else _fmt(row.total)  # never a score for a student not fully graded
    return [inert.csv_cell(row.student), *cells, total, _fmt(row.max_total), row.status,
            inert.csv_cell("; ".join(row.why))]


def replace_line(path: Path, row: Row) -> bool:
    """Rewrite one student's line of an existing grades.csv (the other lines as they are); False if not there."""
    if not path.exists():
        return False
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    if not lines:
        return False
    cols = lines[0][1:-4]  # student, the questions, total, max, status, reasons
    found = [i for i, line in enumerate(lines[1:], 1) if line and line[0] == inert.csv_cell(row.student)]
    for i in found:
        lines[i] = csv_line(row, cols)
    if found:  # the other lines too are written inert (a file an older grader wrote may hold raw cells)
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows(inert.csv_row(line) for line in lines)
    return bool(found)


def _fmt(x: float) -> str:
    return f"{x:g}"


def table(rows: list[Row]) -> str:
    """The printed table, then the students who need attention and why."""
    cols = questions(rows)
    width = max([len("student")] + [len(inert.plain(r.student)) for r in rows])
    head = f"{'student':<{width}} " + " ".join(f"{q:>5}" for q in cols) + f" {'total':>7} {'max':>5}"
    lines = [head, "-" * len(head)]
    flags = {"not graded": "  not graded", "review": "  review", "attention": "  !", "ok": ""}
    for row in rows:
        cells = " ".join(f"{_fmt(row.scores[q]) if q in row.scores else '-':>5}" for q in cols)
        total = "-" if row.not_graded else _fmt(row.total)
        lines.append(f"{inert.plain(row.student):<{width}} {cells} {total:>7} {_fmt(row.max_total):>5}"
                     f"{flags[row.status]}")
    held = [r for r in rows if r.held]
    if held:
        lines += ["", "Held for review (the audit found code it does not judge by itself; the scores stand until "
                      "you decide):"]
        for row in held:
            for q, found in sorted(row.held.items()):
                lines.append(f"  {inert.plain(row.student)} {q}:")
                lines += [f"    - {inert.plain(f)}" for f in found]
                clear, confirm = decide_commands(row.student, q)
                lines += [f"    keep the scores: {clear}", f"    zero the tests:  {confirm}"]
    attention = [r for r in rows if r.reasons or r.confirmed]
    if attention:
        lines += ["", "Needs attention:"]
        for row in attention:
            lines.append(f"  {inert.plain(row.student)}:")
            lines += [f"    - {reason}" for reason in row.decided]  # the held ones are listed above
    return "\n".join(lines)
