"""The LMS export (course_grader/export.py, `--export canvas|moodle --roster`): the formats' documented headers,
points possible, the roster's mapping, and never a 0 for a student the grader could not grade or a notebook held
for review. Built from grades.csv lines written by report.write_csv (the run's own writer), no grading needed; the
last test exports the graded demo class through the command line."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from course_grader import export
from course_grader.report import Row, write_csv

MAXIMA = {"Q1": 7.0, "Q2": 3.0, "Q3": 12.0}


def _rows() -> list[Row]:
    ok = Row("ada", {"Q1": 7, "Q2": 3, "Q3": 12}, 22, 22)
    pending = Row("bo", {"Q1": 5, "Q2": 0, "Q3": 12}, 17, 22, reasons=["manual grading pending: Q1 Q2"])
    broken = Row("cy", {"Q1": 7, "Q2": 3}, 10, 10, reasons=["not graded: Q3: the kernel did not start: OSError"],
                 not_graded={"Q3": "the kernel did not start: OSError"})
    held = Row("=cmd|' /C calc'!A0", {"Q1": 7, "Q2": 3, "Q3": 12}, 22, 22,
               held={"Q3": ["reads a frame object (sys._getframe)"]})
    stray = Row("eve", {"Q1": 1, "Q2": 1, "Q3": 1}, 3, 22)  # graded, but not in the roster
    return [ok, pending, broken, held, stray]


def _roster(path: Path) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Student", "Name", "ID", "SIS User ID", "SIS Login ID", "Section", "Email"])  # any case
        writer.writerow(["ada", "Lovelace, Ada", "101", "S101", "ada@uni", "A", "ada@uni.edu"])
        writer.writerow(["bo", "Bo, Bo", "102", "S102", "bo@uni", "A", "bo@uni.edu"])
        writer.writerow(["cy", "Cy, Cy", "103", "S103", "cy@uni", "B", "cy@uni.edu"])
        writer.writerow(["=cmd|' /C calc'!A0", "=HYPERLINK(\"http://x\")", "104", "S104", "d@uni", "B", "d@uni.edu"])
        writer.writerow(["zed", "Zed, Zed", "105", "S105", "zed@uni", "B", "zed@uni.edu"])  # no submission
    return path


@pytest.fixture
def files(tmp_path):
    grades = tmp_path / "grades.csv"
    write_csv(_rows(), grades)
    roster = _roster(tmp_path / "roster.csv")
    return grades, roster, tmp_path


def _read(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_canvas_has_its_import_columns_points_possible_and_no_zero_for_the_ungraded(files, capsys):
    grades, roster, tmp = files
    done = export.run("canvas", grades, roster, tmp / "canvas.csv", MAXIMA, "Normalization")
    lines = _read(tmp / "canvas.csv")
    # Canvas's gradebook import: the five student columns, then one per assignment, then a Points Possible row.
    assert lines[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Normalization"]
    assert lines[1][0].strip() == "Points Possible" and lines[1][-1] == "22"
    by_id = {line[1]: line for line in lines[2:]}
    assert by_id["101"] == ["Lovelace, Ada", "101", "S101", "ada@uni", "A", "22"]
    assert by_id["102"][-1] == "17"  # autograded points, flagged below
    assert by_id["103"][-1] == "" and by_id["104"][-1] == "", "a student not graded or held must never get a score"
    assert by_id["104"][0] == "'=HYPERLINK(\"http://x\")", "a roster cell was written as a formula"
    assert done.rows == 4 and done.missing == ["eve"] and done.unmatched == ["zed"]
    notes = _read(tmp / "canvas.notes.csv")
    said = {(line[1], line[-1].split(":")[0]) for line in notes[1:]}
    assert said == {("102", "manual grading pending"), ("103", "not graded"), ("104", "held for review")}
    err = capsys.readouterr().err
    assert "not in the roster" in err and "eve" in err and "zed" in err


def test_canvas_by_question_leaves_only_the_ungraded_and_held_questions_empty(files):
    grades, roster, tmp = files
    export.run("canvas", grades, roster, tmp / "q.csv", MAXIMA, "Normalization", by="question")
    lines = _read(tmp / "q.csv")
    assert lines[0][5:] == ["Normalization Q1", "Normalization Q2", "Normalization Q3"]
    assert lines[1][5:] == ["7", "3", "12"]
    by_id = {line[1]: line[5:] for line in lines[2:]}
    assert by_id["103"] == ["7", "3", ""] and by_id["104"] == ["7", "3", ""] and by_id["102"] == ["5", "0", "12"]


def test_moodle_identifies_users_by_the_chosen_column_with_a_feedback_column_per_item(files):
    grades, roster, tmp = files
    export.run("moodle", grades, roster, tmp / "m.csv", MAXIMA, "Normalization", by="question", moodle_id="email")
    lines = _read(tmp / "m.csv")
    assert lines[0] == ["email", "Normalization Q1", "Normalization Q1 feedback", "Normalization Q2",
                        "Normalization Q2 feedback", "Normalization Q3", "Normalization Q3 feedback"]
    by_email = {line[0]: line[1:] for line in lines[1:]}
    assert by_email["cy@uni.edu"][4] == "" and by_email["cy@uni.edu"][5].startswith("not graded: Q3")
    assert by_email["bo@uni.edu"][0] == "5" and by_email["bo@uni.edu"][1].startswith("manual grading pending")
    assert by_email["bo@uni.edu"][5] == "", "a note about Q1 and Q2 was put beside Q3"
    assert by_email["ada@uni.edu"] == ["7", "", "3", "", "12", ""]


def test_a_roster_without_the_lms_ids_or_a_grades_file_of_another_kind_is_refused(files, tmp_path):
    grades, _, tmp = files
    bad = tmp / "bad.csv"
    bad.write_text("student,name\nada,Ada\n")
    with pytest.raises(ValueError, match="roster needs"):
        export.run("canvas", grades, bad, tmp / "x.csv", MAXIMA, "N")
    other = tmp / "other.csv"
    other.write_text("name,score\nada,3\n")
    with pytest.raises(ValueError, match="not a grades.csv"):
        export.run("canvas", other, _roster(tmp / "r.csv"), tmp / "x.csv", MAXIMA, "N")


def test_the_command_exports_the_graded_demo_class(graded, course, tmp_path, capsys):
    """End to end on the course's own grades.csv (whichever run wrote it last) and gradebook."""
    import nbformat

    from course_grader.__main__ import main

    _, lines = export.read_grades(course / "grades.csv")
    students = [export.inert.csv_text(g.student) for g in lines]
    roster = tmp_path / "roster.csv"
    with open(roster, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "name", "sis_user_id"])
        for i, student in enumerate(students[1:]):  # the first has no roster row
            writer.writerow([student, f"{student.title()}, Demo", f"S{i}"])
        writer.writerow(["nobody", "Nobody, No", "S999"])
    out = tmp_path / "canvas.csv"
    assert main(["--root", str(course), "--export", "canvas", "--roster", str(roster), "--export-file", str(out)]) == 0
    written = _read(out)
    assert written[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Normalization"]
    points = sum(float(cell.metadata.nbgrader.get("points", 0))
                 for path in (course / "source" / "normalization").glob("*.ipynb")
                 for cell in nbformat.read(path, as_version=4).cells if cell.metadata.get("nbgrader", {}).get("grade"))
    assert float(written[1][5]) == points  # every question's points, autograded and written (129 in this course)
    assert [line[2] for line in written[2:]] == [f"S{i}" for i in range(len(students) - 1)]
    err = capsys.readouterr().err
    assert students[0] in err and "nobody" in err


class _CanvasStandIn:
    """A local stand-in for Canvas's REST API: the four calls canvasapi makes for a bulk grade update (course,
    assignment, update_grades, progress), answering as Canvas's API documentation shows; it records what arrives."""

    def __init__(self):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qsl

        stand_in = self
        self.posted: list[list[tuple[str, str]]] = []
        self.auth: set[str] = set()
        self.polls = 0

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, body: dict, status: int = 200):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                stand_in.auth.add(self.headers.get("Authorization", ""))
                if self.path.startswith("/api/v1/courses/7/assignments/9"):
                    self._answer({"id": 9, "course_id": 7, "name": "Normalization", "points_possible": 22})
                elif self.path.startswith("/api/v1/courses/7"):
                    self._answer({"id": 7, "name": "Normalization from the Foundations"})
                elif self.path.startswith("/api/v1/progress/1"):
                    stand_in.polls += 1
                    self._answer({"id": 1, "workflow_state": "completed" if stand_in.polls > 1 else "running"})
                else:
                    self._answer({"errors": [{"message": "not found"}]}, 404)

            def do_POST(self):
                stand_in.auth.add(self.headers.get("Authorization", ""))
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                if self.path == "/api/v1/courses/7/assignments/9/submissions/update_grades":
                    stand_in.posted.append(parse_qsl(body))
                    self._answer({"id": 1, "workflow_state": "queued", "url": f"{stand_in.url}/api/v1/progress/1"})
                else:
                    self._answer({"errors": [{"message": "not found"}]}, 404)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_canvas_upload_sends_each_graded_students_points_and_never_a_zero_for_the_ungraded(files, monkeypatch, capsys):
    """The optional direct upload (canvasapi): one bulk update of posted_grade to the assignment, keyed by Canvas
    user id; the student who could not be graded and the held one are not sent; the token only in the header."""
    from course_grader import gradebook
    from course_grader.__main__ import main

    grades, roster, tmp = files
    monkeypatch.setattr(gradebook, "max_scores", lambda url: MAXIMA)  # the points possible (no gradebook here)
    stand_in = _CanvasStandIn()
    try:
        monkeypatch.setenv("CANVAS_API_TOKEN", "s3cret-token")
        argv = ["--root", str(tmp), "--csv", str(grades), "--export", "canvas", "--roster", str(roster),
                "--export-file", str(tmp / "canvas.csv"), "--canvas-url", stand_in.url, "--canvas-course", "7",
                "--canvas-assignment", "9", "--db-url", f"sqlite:///{tmp / 'none.db'}"]
        assert main(argv) == 0, capsys.readouterr().err
    finally:
        stand_in.close()
    said = capsys.readouterr()
    assert len(stand_in.posted) == 1
    sent = dict(stand_in.posted[0])
    assert sent == {"grade_data[101][posted_grade]": "22", "grade_data[102][posted_grade]": "17"}, sent
    assert stand_in.auth == {"Bearer s3cret-token"}
    assert "2 grades to assignment 9: completed" in said.out and "s3cret" not in said.out + said.err
    assert "Cy, Cy" in said.out  # left empty: named, not sent


def test_canvas_upload_refuses_plain_http_a_missing_token_and_a_file_per_question(files, monkeypatch, capsys):
    from course_grader.__main__ import main

    grades, roster, tmp = files
    with pytest.raises(ValueError, match="https"):
        export.check_canvas_url("http://canvas.uni.edu")
    assert export.check_canvas_url("https://canvas.uni.edu/") == "https://canvas.uni.edu"
    monkeypatch.delenv("CANVAS_API_TOKEN", raising=False)
    base = ["--root", str(tmp), "--csv", str(grades), "--export", "canvas", "--roster", str(roster),
            "--canvas-url", "https://canvas.uni.edu", "--canvas-course", "7", "--canvas-assignment", "9"]
    with pytest.raises(SystemExit):
        main(base)
    assert "CANVAS_API_TOKEN" in capsys.readouterr().err
    monkeypatch.setenv("CANVAS_API_TOKEN", "t")
    with pytest.raises(SystemExit):
        main([*base, "--export-by", "question"])
    assert "--export-by assignment" in capsys.readouterr().err
    export.run("canvas", grades, roster, tmp / "per-q.csv", MAXIMA, "Normalization", by="question")
    with pytest.raises(ValueError, match="3 grade columns"):
        export.upload_canvas(tmp / "per-q.csv", "https://canvas.uni.edu", 7, 9, "t")
