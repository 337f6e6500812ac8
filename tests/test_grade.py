"""The grading pipeline (issue 4): exact scores for the demo class, repeatable, parallel == serial, PostgreSQL.

The whole demo class is graded once, in parallel, in a throw-away copy of the course (a session fixture);
the other tests regrade a few students or one notebook and compare. Training-heavy demo and experiment
cells are not run (the default: tests never depend on them), so the file fits in a few minutes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from course_grader import gradebook
from course_grader.pipeline import Options, run
from course_grader.repair import repair
from course_mutation import demo
from course_mutation.harness import run_variants
from demo_class import LIMITS, fixture_notebooks, graded_notebooks, points_per_test

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _tests_before(course: Path, notebook: str, solution: str) -> set[str]:
    nb = nbformat.read(course / "source" / "normalization" / f"{notebook}.ipynb", as_version=4)
    before = set()
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade_id") == solution:
            return before
        if cell.cell_type == "code" and meta.get("grade"):
            before.add(meta["grade_id"])
    raise KeyError(solution)


def _expected(course: Path, plan: demo.Plan) -> dict[str, dict[str, float]]:
    """The points each test cell must get for one demo student."""
    points = points_per_test(course)
    expected = {nb: dict(tests) for nb, tests in points.items()}
    if plan.how == "blank":
        return {nb: dict.fromkeys(tests, 0.0) for nb, tests in points.items()}
    if plan.stop:
        notebook, solution = plan.stop
        kept = _tests_before(course, notebook, solution)
        expected[notebook] = {t: (p if t in kept else 0.0) for t, p in points[notebook].items()}
    for notebook, variants in plan.variants.items():
        if all(v.correct for v in variants):
            continue
        result = run_variants(course / "source" / "normalization" / f"{notebook}.ipynb", variants)
        expected[notebook] = {t: r.points for t, r in result.tests.items()}
        lost = {t for t, r in result.tests.items() if not r.passed}
        for variant in variants:
            assert set(variant.fails) <= lost, f"{plan.student}/{notebook}: {variant.name} should fail {variant.fails}"
    return expected


def _got(outcome, student: str) -> dict[str, dict[str, float]]:
    return {nb: score.tests for nb, score in outcome.scores[student].items()}


def test_every_demo_student_is_in_grades_csv(graded, course):
    text = (course / "grades.csv").read_text().splitlines()
    assert text[0].startswith("student,")
    students = [line.split(",")[0] for line in text[1:]]
    assert students == [p.student for p in graded.plans]
    assert all(r.ok for r in graded.results.values()), {s: r.error for s, r in graded.results.items() if not r.ok}


@pytest.mark.parametrize("student", ["reference", "blank", *demo.REALISTIC, "crasher", "looper", "deleter", "paster",
                                     "copier"])
def test_demo_student_gets_exactly_the_expected_points(graded, course, student):
    plan = next(p for p in graded.plans if p.student == student)
    expected = _expected(course, plan)
    got = _got(graded, student)
    assert set(got) == set(fixture_notebooks(course))
    assert got == {nb: expected[nb] for nb in got}, f"{student}: {plan}"


def test_problem_students_are_flagged_with_a_reason(graded):
    rows = {r.student: r for r in graded.rows}
    assert any("kernel died" in r for r in rows["crasher"].reasons), rows["crasher"].reasons
    assert any("time limit" in r for r in rows["looper"].reasons), rows["looper"].reasons
    assert any("deleted (restored)" in r for r in rows["deleter"].reasons), rows["deleter"].reasons
    assert any("pasted twice" in r for r in rows["paster"].reasons), rows["paster"].reasons
    assert not [r for r in rows["blank"].reasons if "manual" not in r]


def test_feedback_html_for_every_student(graded, course):
    for plan in graded.plans:
        pages = list((course / "feedback" / plan.student / "normalization").glob("*.html"))
        assert len(pages) == len(fixture_notebooks(course)), plan.student


def test_serial_regrade_gives_identical_grades(graded, course):
    """A second run, with one job, on a subset of students: the same points, test by test."""
    students = ["reference", "alice", "crasher"]
    again = run(Options(root=course, jobs=1, students=students, notebooks=graded_notebooks(course)[:1],
                        csv=course / "serial.csv", **LIMITS))
    for student in students:
        got = _got(again, student)
        assert got and got == {nb: graded.scores[student][nb].tests for nb in got}, student


def test_one_notebook_of_one_student(graded, course):
    first = sorted(graded.scores["bob"])[0]
    again = run(Options(root=course, jobs=1, students=["bob"], notebooks=[first.split("_")[0]],
                        csv=course / "one.csv", feedback=False, **LIMITS))
    assert _got(again, "bob") == {first: graded.scores["bob"][first].tests}


def test_one_student_on_two_jobs_with_fresh_kernels(graded, course):
    """Fewer students than jobs: the student's notebooks are shared by two workers. Kernels exec'd afresh
    (--fresh-kernels) instead of forked from the warm server: the same points, test by test."""
    assert graded.kernels == "forked from a warm fork server", graded.kernels
    notebooks = graded_notebooks(course)
    again = run(Options(root=course, jobs=2, students=["alice"], notebooks=notebooks, fresh_kernels=True,
                        csv=course / "fresh.csv", feedback=False, **LIMITS))
    assert again.kernels.startswith("fresh processes"), again.kernels
    assert again.results["alice"].graded == notebooks
    assert _got(again, "alice") == {nb: graded.scores["alice"][nb].tests for nb in notebooks}


def test_missing_and_malformed_notebooks_score_zero(graded, course, tmp_path):
    """A real class (--class) where a student sent one good notebook, one broken file and nothing else."""
    good, broken, *missing = graded_notebooks(course)
    folder = tmp_path / "class" / "zoe" / "normalization"
    folder.mkdir(parents=True)
    shutil.copy(course / "submitted" / "reference" / "normalization" / f"{good}.ipynb", folder)
    (folder / f"{broken}.ipynb").write_text("{not json")
    outcome = run(Options(root=course, class_dir=tmp_path / "class", jobs=2, notebooks=graded_notebooks(course),
                          csv=course / "zoe.csv", feedback=False, **LIMITS))
    got = _got(outcome, "zoe")
    assert got[good] == graded.scores["reference"][good].tests
    assert all(points == 0 for nb in [broken, *missing] for points in got[nb].values()) and broken in got
    reasons = " ".join(outcome.rows[0].reasons)
    assert "malformed" in reasons and all(f"{demo.question(nb)}: not submitted" in reasons for nb in missing)


def test_assignment_is_recorded_only_when_needed(course, tmp_path):
    """The template gradebook comes from the cache when source/ is unchanged; the course gradebook is
    copied when new, left alone when it records the same cells, recorded again when they differ."""
    template, cache = tmp_path / "template.db", tmp_path / "cache"
    assert not gradebook.template(course, template, cache)  # generated
    assert gradebook.template(course, tmp_path / "again.db", cache)  # cached
    url = f"sqlite:///{tmp_path / 'course.db'}"
    assert gradebook.ensure_recorded(course, url, template)  # a new gradebook: the template's copy
    assert not gradebook.ensure_recorded(course, url, template)
    with Gradebook(url) as gb:
        gb.find_assignment("normalization").notebooks[0].source_cells[0].checksum = "stale"
        gb.db.commit()
    assert gradebook.fingerprint(url) != gradebook.fingerprint(f"sqlite:///{template}")
    assert gradebook.ensure_recorded(course, url, template)  # stale: recorded again
    assert gradebook.fingerprint(url) == gradebook.fingerprint(f"sqlite:///{template}")


def test_repair_reports_and_fixes_tampering(tmp_path, course):
    release = sorted((course / "release" / "normalization").glob("*.ipynb"))[0]
    nb = nbformat.read(release, as_version=4)
    test_index = next(i for i, c in enumerate(nb.cells)
                      if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade"))
    copy = nbformat.from_dict(nb.cells[test_index])
    copy.id = "pasted-copy"
    nb.cells.insert(test_index + 1, copy)
    nb.cells[test_index].source += "\n# edited"
    bad = tmp_path / release.name
    nbformat.write(nb, bad)
    notes = repair(bad, release, tmp_path / "out" / release.name)
    assert any("pasted twice" in n for n in notes) and any("edited" in n for n in notes), notes
    bad.write_text("{not json")
    assert "malformed" in repair(bad, release, tmp_path / "out2" / release.name)[0]


@pytest.fixture(scope="session")
def postgres():
    """A throw-away PostgreSQL server on a unix socket, run as the unprivileged `postgres` user."""
    if not (PG_BIN / "initdb").exists():
        subprocess.run(["apt-get", "install", "-y", "postgresql"], check=True, capture_output=True)
    base = Path(tempfile.mkdtemp(prefix="test-grade-pg-"))
    shutil.chown(base, "postgres")
    as_pg = ["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups", "--"]
    subprocess.run(as_pg + [str(PG_BIN / "initdb"), "-D", str(base / "data"), "-U", "postgres", "--auth=trust"],
                   check=True, capture_output=True)
    server = subprocess.Popen(as_pg + [str(PG_BIN / "postgres"), "-D", str(base / "data"), "-k", str(base),
                                       "-c", "listen_addresses=", "-c", "fsync=off"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if (base / ".s.PGSQL.5432").exists():
                break
            time.sleep(0.1)
        subprocess.run(as_pg + [str(PG_BIN / "createdb"), "-h", str(base), "-U", "postgres", "gradebook"],
                       check=True, capture_output=True)
        yield f"postgresql://postgres@/gradebook?host={base}"
    finally:
        server.send_signal(signal.SIGINT)  # fast shutdown: a pooled client connection must not keep it waiting
        server.wait(timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def test_postgresql_gradebook(graded, course, postgres):
    """db_url points the gradebook at PostgreSQL: the same grades as the SQLite run."""
    first = sorted(graded.scores["reference"])[0]
    students = ["reference", "carol"]
    outcome = run(Options(root=course, jobs=2, students=students, notebooks=[first.split("_")[0]],
                          db_url=postgres, csv=course / "pg.csv", feedback=False, **LIMITS))
    for student in students:
        assert _got(outcome, student) == {first: graded.scores[student][first].tests}
    assert outcome.sandbox == graded.sandbox == "isolated"
    stored = gradebook.scores(gradebook.driver_url(postgres), students)
    assert {s: stored[s][first].tests for s in students} == {s: graded.scores[s][first].tests for s in students}


def test_the_command_line_the_pipeline_and_the_kernel_have_the_same_output_caps():
    """The caps are declared by the worker's job (autograde.Job) and by the kernel's executor (kernel.OutputBudget,
    which the worker's process imports but the parent never does): the command line's defaults must be theirs."""
    from course_grader.__main__ import parse
    from course_grader.kernel import OutputBudget, RobustExecute

    options = parse(["--root", "."])[0]
    executor = RobustExecute()
    budget = OutputBudget()
    assert (options.max_output_bytes, options.max_cell_output_bytes, options.max_notebook_output_bytes,
            options.max_record_bytes) == (executor.max_output_bytes, executor.max_cell_output_bytes,
                                          executor.max_notebook_output_bytes, executor.max_record_bytes) == (
        budget.per_output, budget.per_cell, budget.per_notebook, budget.per_test_records)
