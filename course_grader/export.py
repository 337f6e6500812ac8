"""The grades as an LMS imports them: `python -m course_grader --export canvas|moodle --roster roster.csv`.

Read from the last run's grades.csv (the run's own statuses: a notebook the grader could not grade has no score
there, never an older one from the gradebook) and the roster, which maps the course's student ids (the submission
folders' names) to the LMS's. Written with the csv module, one file per export:

- **canvas**: Canvas's gradebook import layout: `Student, ID, SIS User ID, SIS Login ID, Section`, then one column per
  assignment (a new column name makes a new assignment on import), and a second row `Points Possible` with each
  column's points. Canvas finds a student by ID, SIS User ID or SIS Login ID.
- **moodle**: Moodle's "Import grades from CSV file": one column that identifies the user (the roster's `email`,
  `username` or `idnumber`: `--moodle-id`), one column per grade item and a feedback column per item, which the
  instructor maps on import.

`--export-by assignment` (the default) gives the course one column with the student's total; `--export-by question`
one column per question (Q1 ... Q9). A student the grader could not grade, and a notebook held for the instructor's
review, get an empty cell (never 0) with a note; a student whose written answers are not graded yet gets the
autograded points, flagged. Notes go to Moodle's feedback column, and for Canvas to a file beside the export
(`<name>.notes.csv`, a Canvas import would read any extra column as a new assignment). Students missing from the
roster, and roster rows without graded work, are listed on stderr. docs/LMS_EXPORT.md says how to import each file.

Optionally (`--canvas-url URL --canvas-course ID --canvas-assignment ID`, the token in CANVAS_API_TOKEN) the Canvas
file's grades go straight to one Canvas assignment through canvasapi (UCF's maintained client of Canvas's REST API),
as one bulk update of `posted_grade` per student: `upload_canvas`. An empty cell is not sent (the student's Canvas
grade stays as it was), never a 0. canvasapi is imported only then: the export never needs it.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path

from course_grader import inert
from course_grader.report import _fmt

CANVAS_IDS = ("id", "sis_user_id", "sis_login_id")  # a Canvas roster row needs one of them
CANVAS_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")  # before the grade columns
MOODLE_IDS = ("email", "username", "idnumber")
PENDING = "manual grading pending: "


@dataclass
class Graded:
    """One student's line of grades.csv, read back."""

    student: str  # the cell grades.csv wrote (inert.csv_cell of the id)
    scores: dict[str, str]  # question -> points as written ("" when there is none)
    total: str
    status: str
    reasons: list[str]

    def blank(self, question: str | None) -> str:
        """Why this question (None: the total) must stay empty in the LMS, or ""."""
        not_graded = [r for r in self.reasons if r.startswith("not graded: ")]
        held = [r for r in self.reasons if r.startswith("held for review: ")]
        if question is None:
            return "not graded" if not_graded or not self.total else ("held for review" if held else "")
        if any(r.startswith(f"not graded: {question}: ") for r in not_graded) or not self.scores.get(question):
            return "not graded"
        return "held for review" if any(r.startswith(f"held for review: {question}: ") for r in held) else ""

    def notes(self) -> list[str]:
        """What an instructor must know about the exported cells: no score given, or points still to come."""
        said = [r for r in self.reasons if r.startswith(("not graded: ", "held for review: "))]
        said += [f"{r} (the points count the autograded tests only)" for r in self.reasons if r.startswith(PENDING)]
        return said


@dataclass
class Export:
    """What was written, and what the instructor is told."""

    path: Path
    rows: int
    missing: list[str] = field(default_factory=list)  # graded students without a roster row
    unmatched: list[str] = field(default_factory=list)  # roster students without a line in grades.csv
    notes: dict[str, list[str]] = field(default_factory=dict)


def read_grades(path: Path) -> tuple[list[str], list[Graded]]:
    """(question columns, one Graded per student) of a grades.csv report.write_csv wrote."""
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    if not lines or lines[0][:1] != ["student"] or lines[0][-4:] != ["total", "max", "status", "reasons"]:
        raise ValueError(f"{path} is not a grades.csv of this grader (student, Q1.., total, max, status, reasons)")
    questions = lines[0][1:-4]
    graded = []
    for line in lines[1:]:
        if len(line) != len(lines[0]):
            continue
        reasons = [r for r in inert.csv_text(line[-1]).split("; ") if r]
        graded.append(Graded(line[0], dict(zip(questions, line[1:-4])), line[-4], line[-2], reasons))
    return questions, graded


def read_roster(path: Path, ids: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """{course student id: the roster row} (headers as _header reads them, cells stripped); a row must name the
    student and one of `ids`."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        headers = [_header(h) for h in reader.fieldnames or []]
        if "student" not in headers or not set(ids) & set(headers):
            raise ValueError(f"{path}: a roster needs a `student` column (the course's id: the submission folder's "
                             f"name) and one of {', '.join(ids)}")
        roster = {}
        for raw in reader:
            row = {_header(k): (v or "").strip() for k, v in raw.items() if k}
            if row.get("student") and any(row.get(i) for i in ids):
                roster[row["student"]] = row
    return roster


def _header(name: str | None) -> str:
    """`SIS User ID`, `sis_user_id` and ` Sis-User-Id ` are one column."""
    return "_".join((name or "").strip().lower().replace("-", " ").split())


def _match(graded: list[Graded], roster: dict[str, dict[str, str]], export: Export) -> list[tuple[Graded, dict]]:
    """Each graded student with their roster row (grades.csv holds the inert cell of each id)."""
    by_cell = {inert.csv_cell(student): row for student, row in roster.items()}
    matched = [(g, by_cell[g.student]) for g in graded if g.student in by_cell]
    export.missing = [inert.csv_text(g.student) for g in graded if g.student not in by_cell]
    found = {g.student for g, _ in matched}
    export.unmatched = [s for s in roster if inert.csv_cell(s) not in found]
    return matched


def _cells(g: Graded, questions: list[str], by: str) -> list[str]:
    """The grade cells of one student: empty where no score may be given."""
    if by == "assignment":
        return ["" if g.blank(None) else g.total]
    return ["" if g.blank(q) else g.scores.get(q, "") for q in questions]


def canvas(graded: list[Graded], questions: list[str], roster: dict, maxima: dict[str, float], title: str, by: str,
           out: Path) -> Export:
    export = Export(out, 0)
    columns = [title] if by == "assignment" else [f"{title} {q}" for q in questions]
    points = [_fmt(sum(maxima.values()))] if by == "assignment" else [_fmt(maxima.get(q, 0)) for q in questions]
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*CANVAS_COLUMNS, *columns])
        writer.writerow(["    Points Possible", "", "", "", "", *points])
        for g, row in _match(graded, roster, export):
            writer.writerow(inert.csv_row([row.get("name", ""), row.get("id", ""), row.get("sis_user_id", ""),
                                           row.get("sis_login_id", ""), row.get("section", "")])
                            + _cells(g, questions, by))
            export.rows += 1
            if g.notes():
                export.notes[row["student"]] = g.notes()
    with open(out.with_suffix(".notes.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "ID", "SIS User ID", "SIS Login ID", "note"])
        for student, notes in export.notes.items():
            row = roster[student]
            for note in notes:
                writer.writerow(inert.csv_row([student, row.get("id", ""), row.get("sis_user_id", ""),
                                               row.get("sis_login_id", ""), note]))
    return export


def moodle(graded: list[Graded], questions: list[str], roster: dict, key: str, title: str, by: str,
           out: Path) -> Export:
    export = Export(out, 0)
    items = [title] if by == "assignment" else [f"{title} {q}" for q in questions]
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([key, *(c for item in items for c in (item, f"{item} feedback"))])
        for g, row in _match(graded, roster, export):
            notes = g.notes()
            cells = _cells(g, questions, by)
            feedback = [_feedback(q, notes) for q in ([None] if by == "assignment" else questions)]
            writer.writerow(inert.csv_row([row.get(key, "")]) +
                            [c for pair in zip(cells, inert.csv_row(feedback)) for c in pair])
            export.rows += 1
            if notes:
                export.notes[row["student"]] = notes
    return export


@dataclass
class Upload:
    """What one Canvas upload sent, and how Canvas's job for it ended."""

    sent: dict[str, str] = field(default_factory=dict)  # Canvas user (id, or sis_user_id:/sis_login_id:) -> points
    left_empty: list[str] = field(default_factory=list)  # rows with an empty cell: not sent
    state: str = ""  # Canvas's Progress workflow_state at the end: completed, failed, or queued/running (timed out)


def _canvas_user(row: dict[str, str]) -> str:
    """How Canvas's API names a user: its id, else `sis_user_id:...` or `sis_login_id:...` (Canvas's SIS id forms)."""
    if row.get("ID", "").strip():
        return row["ID"].strip()
    for column, prefix in (("SIS User ID", "sis_user_id"), ("SIS Login ID", "sis_login_id")):
        if row.get(column, "").strip():
            return f"{prefix}:{inert.csv_text(row[column].strip())}"
    return ""


def check_canvas_url(url: str) -> str:
    """The Canvas address a token may be sent to: https, or http only to this machine (a local stand-in)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    local = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and local):
        raise ValueError(f"{url!r}: the Canvas address must start with https:// (the token would travel in clear)")
    return url.rstrip("/")


def upload_canvas(path: Path, url: str, course_id: int, assignment_id: int, token: str, wait: float = 120.0,
                  poll: float = 1.0) -> Upload:
    """Send a Canvas export file's grades (by assignment: one grade column) to one assignment, and wait up to
    `wait` seconds for Canvas's job to finish. Raises ValueError for a file with several grade columns."""
    import time

    try:
        from canvasapi import Canvas
    except ImportError as exc:  # the upload is optional; the CSV export never needs it
        raise ValueError("the Canvas upload needs canvasapi: pip install canvasapi==3.6.0") from exc
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    grade_columns = [c for c in (rows[0].keys() if rows else []) if c not in CANVAS_COLUMNS]
    if len(grade_columns) != 1:
        raise ValueError(f"{path.name} has {len(grade_columns)} grade columns: upload an export made with "
                         f"--export-by assignment (one Canvas assignment)")
    column, done = grade_columns[0], Upload()
    for row in rows:
        if row["Student"].strip() == "Points Possible":
            continue
        user, points = _canvas_user(row), row[column].strip()
        if not points or not user:
            done.left_empty.append(inert.csv_text(row["Student"]))
            continue
        done.sent[user] = points
    assignment = Canvas(check_canvas_url(url), token).get_course(course_id).get_assignment(assignment_id)
    progress = assignment.submissions_bulk_update(
        grade_data={user: {"posted_grade": points} for user, points in done.sent.items()})
    deadline = time.monotonic() + wait
    while progress.workflow_state not in ("completed", "failed") and time.monotonic() < deadline:
        time.sleep(poll)
        progress = progress.query()
    done.state = progress.workflow_state
    return done


def _feedback(question: str | None, notes: list[str]) -> str:
    """The feedback cell beside a grade (None: the total): why it is empty, or that points are still to come."""
    return "; ".join(n for n in notes if question is None or _about(n, question))


def _about(note: str, question: str) -> bool:
    if note.startswith((f"not graded: {question}: ", f"held for review: {question}: ")):
        return True
    return note.startswith(PENDING) and question in note[len(PENDING):].split(" (")[0].split()


def run(lms: str, grades_csv: Path, roster_path: Path, out: Path, maxima: dict[str, float], title: str,
        by: str = "assignment", moodle_id: str = "email") -> Export:
    """Write the export; say on stderr who is missing on either side and whose cells are empty or partial."""
    questions, graded = read_grades(grades_csv)
    if lms == "canvas":
        export = canvas(graded, questions, read_roster(roster_path, CANVAS_IDS), maxima, title, by, out)
    else:
        export = moodle(graded, questions, read_roster(roster_path, (moodle_id,)), moodle_id, title, by, out)
    for label, students in (("graded but not in the roster (not exported)", export.missing),
                            ("in the roster without a line in grades.csv (not exported)", export.unmatched)):
        if students:
            print(f"{len(students)} student(s) {label}: {' '.join(inert.plain(s) for s in students)}",
                  file=sys.stderr)
    for student, notes in export.notes.items():
        print(f"{inert.plain(student)}: {inert.plain('; '.join(notes), 500)}", file=sys.stderr)
    return export
