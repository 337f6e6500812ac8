"""The class report (course_grader/class_report.py) for the demo class: its counts are the gradebook's, its named
mistakes are the demo students' known ones, and the page stands alone (offline)."""

from __future__ import annotations

import base64
import csv
import re

import nbformat

from course_grader import class_report, gradebook
from course_grader.__main__ import main
from course_grader.judging import VERDICTS_KEY
from course_judge.compare import NAMED_MISTAKE
from course_lib.mistakes import MISTAKES
from course_mutation import demo
from demo_class import points_per_test


def _report(course):
    return class_report.collect(course, gradebook.default_db_url(course), course / "grades.csv")


def _tests_of_each_solution(course, notebook: str) -> dict[str, list[str]]:
    """{solution grade_id: the graded test cells after it and before the next solution cell}."""
    nb = nbformat.read(course / "source" / demo.ASSIGNMENT / f"{notebook}.ipynb", as_version=4)
    out, current = {}, None
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or not meta.get("grade_id"):
            continue
        if meta.get("solution"):
            current = out.setdefault(meta["grade_id"], [])
        elif meta.get("grade") and current is not None:
            current.append(meta["grade_id"])
    return out


def test_every_grading_run_writes_the_report_beside_grades_csv(graded, course):
    html, table = class_report.paths(course / "grades.csv")
    assert graded.report == html and html.exists() and table.exists()
    assert class_report.paths(course / "killed.csv") == (course / "killed-report.html", course / "killed-report.csv")


def test_pass_rates_and_points_are_the_gradebooks(graded, course):
    report = _report(course)
    points = points_per_test(course)
    students = [p.student for p in graded.plans]
    tested = sorted({nb for s in students for nb in graded.scores.get(s, {})})
    assert tested, "the demo class left nothing in the gradebook"
    for t in report.tests:
        if t.notebook not in tested:
            continue
        had = [s for s in students if t.notebook in graded.scores.get(s, {})]
        full = [s for s in had if graded.scores[s][t.notebook].tests[t.test] >= points[t.notebook][t.test]]
        assert sorted(set(t.graded) & set(students)) == sorted(had), t.test
        assert sorted(set(t.passed) & set(students)) == sorted(full), t.test
        failed = [s for who in t.mistakes.values() for s in who] + t.unnamed
        assert sorted(t.passed + failed) == sorted(t.graded) and len(set(failed)) == len(failed), t.test
    for nb in tested:
        for s in students:
            if nb in graded.scores.get(s, {}):
                auto = sum(graded.scores[s][nb].tests.values())
                assert report.scores[nb][s] == auto, (s, nb)


def test_the_demo_students_known_mistakes_are_where_the_report_puts_them(graded, course):
    """A realistic student's catalogued mistake fails the tests the catalogue says, and the report lists the
    student among those tests' failures; a correct alternative passes its own tests (the test cells between its
    solution cell and the next one), also where another solution cell of the notebook holds a mistake (Q4, Q6, Q9)."""
    report = _report(course)
    by_test = {(t.notebook, t.test): t for t in report.tests}
    checked = 0
    for plan in graded.plans:
        for nb, variants in plan.variants.items():
            if nb not in graded.scores.get(plan.student, {}):
                continue
            owned = _tests_of_each_solution(course, nb)
            for variant in variants:
                if variant.correct:
                    assert owned[variant.solution], (nb, variant.solution)
                    lost = [t for t in owned[variant.solution] if plan.student not in by_test[(nb, t)].passed]
                    assert not lost, (plan.student, variant.name, lost)
                    continue
                for test in variant.fails:
                    assert plan.student not in by_test[(nb, test)].passed, (plan.student, variant.name, test)
                    checked += 1
    assert checked, "no demo student made a catalogued mistake in the notebooks graded"
    named = [(t.test, m, who) for t, m, who in report.named]
    assert named, "no failed test named a mistake: the judge's verdict data is missing or not read"
    for test, mistake, who in named:  # the catalogue's sentence, grouped by its id
        assert mistake in MISTAKES.values(), mistake
        nb = next(t.notebook for t in report.tests if t.test == test)
        for student in who:  # the judge's data in the student's autograded notebook names it, and so does the verdict
            graded_nb = nbformat.read(course / "autograded" / student / demo.ASSIGNMENT / f"{nb}.ipynb", as_version=4)
            data = next(v for v in graded_nb.metadata[VERDICTS_KEY] if v["grade_id"] == test)
            assert not data["passed"] and MISTAKES.get(data["mistake"]) == mistake, (student, test, data)
            cell = next(c for c in graded_nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == test)
            said = " ".join(str(o.get("evalue", "")) for o in cell.outputs)
            assert NAMED_MISTAKE + mistake in said, (student, test, mistake, said[:300])


def test_attention_and_written_answers_match_the_run(graded, course):
    report = _report(course)
    attention = {s: (status, reasons) for s, status, reasons in report.attention}
    for row in graded.rows:
        if row.status != "ok":  # grades.csv's reasons: the held and confirmed findings, then the run's own
            status, reasons = attention[row.student]
            assert (status, "; ".join(reasons)) == (row.status, "; ".join(row.why)), row.student
        else:
            assert row.student not in attention
    students = [p.student for p in graded.plans]
    for w in report.written:
        waiting = [s for s in students if w.notebook in graded.scores.get(s, {})
                   and graded.scores[s][w.notebook].needs_manual_grade]
        assert sorted(set(w.pending) & set(students)) == sorted(waiting), w.answer


def test_the_page_works_offline_and_the_csv_has_the_same_numbers(graded, course, capsys):
    html, table = class_report.paths(course / "grades.csv")
    assert main(["--root", str(course), "--report"]) == 0  # rebuilt from the gradebook alone
    assert "class report:" in capsys.readouterr().out
    page = html.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the page must not load anything"
    png = re.search(r'src="data:image/png;base64,([^"]+)"', page)
    assert png and base64.b64decode(png.group(1)).startswith(b"\x89PNG")
    report = _report(course)
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    tests = {(r["question"], r["item"]): (int(r["count"]), int(r["of"])) for r in rows if r["section"] == "test"}
    assert tests == {(t.notebook.split("_")[0], t.test): (len(t.passed), len(t.graded)) for t in report.tests}
    mistakes = {(r["item"], r["detail"]): int(r["count"]) for r in rows if r["section"] == "mistake"
                and r["detail"] != "(no named mistake)"}
    assert mistakes == {(t.test, m): len(who) for t, m, who in report.named}
    for _, mistake, who in report.named:
        assert all(student in page for student in who)
    bars = {}
    for r in rows:
        if r["section"] == "points":
            bars[r["question"]] = bars.get(r["question"], 0) + int(r["count"])
    assert bars == {nb.split("_")[0]: len(v) for nb, v in report.scores.items() if v}
