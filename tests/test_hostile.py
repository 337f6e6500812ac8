"""A class of hostile students (tests/hostile.py), graded in one batch with their classmates, as `make grade` grades.

For every attack: the batch completes; every student is in grades.csv, with a reason where the grader noticed
something; the hostile student gets no more points, test by test, than the same submission without its
payload; every classmate and base gets exactly its points; nothing outside the students' own output folders
changes; no line of the hidden tests, the judge or the probes reaches anything a student receives; no process
is left; nothing reaches the network. The grader runs as root, as in CI, so kernels are isolated.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import nbformat
import pytest

from course_mutation import demo
from course_grader.pipeline import Options, run
from course_judge.secrets import leaks, package_lines, notebook_lines, visible_lines
from course_mutation.harness import run_notebook, run_variant
from hostile import class_of, corpus, wrong_variant, write_class
from kernel_tools import Listener
from process_tools import KernelWatch, shared_leftovers

ROOT = Path(__file__).resolve().parent.parent
MARKER = "hunter2"  # a secret in the grader's environment that no kernel may see
# What the grader itself writes at the course root: the gradebook, the grades and the class report beside them,
# the notebooks held for review.
OUTPUTS = ("autograded", "feedback", "gradebook.db", "grades.csv", "hostile.csv", "report.html", "report.csv",
           "hostile-report.html", "hostile-report.csv", "reviews.json")


def _tree(folder: Path) -> set[tuple[str, int, int]]:
    """(path, size, mtime) of every file under folder."""
    out = set()
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            stat = path.stat()
            out.add((str(path.relative_to(folder)), stat.st_size, stat.st_mtime_ns))
    return out


def _snapshot(course: Path, class_dir: Path, other: Path) -> dict:
    course_files = {f for f in _tree(course) if not f[0].startswith(OUTPUTS)}
    # "shared": in the machine's shared temporary folders, only what the grader and its kernels' users made: other
    # processes on a shared CI machine write there at any time (process_tools.shared_leftovers; test_leftovers.py).
    return {"course": course_files, "class": _tree(class_dir), "other": _tree(other), "shared": shared_leftovers(),
            "packages": _tree(ROOT / "course_lib") | _tree(ROOT / "course_recorder")}


def _expected(course: Path, student) -> dict[str, float]:
    """The points a base student's notebook gets, test by test (from the mutation harness for a wrong one)."""
    path = course / "source" / "normalization" / f"{student.notebook}.ipynb"
    result = run_variant(path, wrong_variant(student.notebook)) if student.base == "wrong" else run_notebook(path)
    if student.base == "init":  # the layer's parameters and buffers only
        return {t: (r.max_points if t == "test_parameters_and_buffers" else 0.0) for t, r in result.tests.items()}
    return {t: (r.points if student.base == "wrong" else (r.max_points if student.base == "ref" else 0.0))
            for t, r in result.tests.items()}


@pytest.fixture(scope="module")
def hostile():
    assert os.geteuid() == 0, "the hostile class is graded as root, as in CI, so that kernels are isolated"
    base = Path(tempfile.mkdtemp(prefix="test-hostile-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    listener = Listener()
    saved = os.environ.get("GRADER_SECRET")
    os.environ["GRADER_SECRET"] = f"postgresql://grader:{MARKER}@db/gradebook"
    try:
        course = demo.course_copy(base, ROOT)
        class_dir, other = base / "class", base / "other-checkout"
        (other / "source" / "normalization").mkdir(parents=True)
        shutil.copy(ROOT / "source" / "normalization" / "Q3_batchnorm.ipynb", other / "source" / "normalization")
        attacks = corpus(course, class_dir, other, listener.port)
        students = class_of(attacks)
        write_class(students, class_dir, course / "release" / "normalization", course / "source" / "normalization")
        expected = {s.name: _expected(course, s) for s in students if s.attack is None}
        before = _snapshot(course, class_dir, other)
        with KernelWatch() as kernels:  # the users of this run's kernels, seen as they run
            outcome = run(Options(root=course, class_dir=class_dir, jobs=2, notebooks=["Q1", "Q3"], cell_timeout=20,
                                  require_isolation=True,  # never run the corpus unconfined (a broken sandbox fails fast)
                                  notebook_timeout=180, progress=False,
                                  csv=course / "hostile.csv"))
        after = _snapshot(course, class_dir, other)
        listener.stop()
        yield {"course": course, "class_dir": class_dir, "students": students, "attacks": attacks, "expected": expected, "outcome": outcome,
               "before": before, "after": after, "listener": listener, "kernels": kernels}
    finally:
        listener.stopping = True
        if saved is None:
            os.environ.pop("GRADER_SECRET", None)
        else:
            os.environ["GRADER_SECRET"] = saved
        shutil.rmtree(base, ignore_errors=True)


def _points(h, student) -> dict[str, float]:
    return h["outcome"].scores[student.name][student.notebook].tests


def test_the_corpus_is_large_enough(hostile):
    assert len(hostile["attacks"]) >= 30


def test_the_batch_completes_and_every_student_is_in_grades_csv(hostile):
    lines = (hostile["course"] / "hostile.csv").read_text().splitlines()
    listed = [line.split(",")[0] for line in lines[1:]]
    assert sorted(listed) == sorted(s.name for s in hostile["students"])
    missing = [s.name for s in hostile["students"] if s.notebook not in hostile["outcome"].scores.get(s.name, {})]
    assert not missing, missing


def test_no_attack_gains_a_point(hostile):
    """Test by test, a hostile submission scores at most what the same submission without its payload scores."""
    gained = {}
    for student in hostile["students"]:
        if student.attack is None:
            continue
        mine, bound = _points(hostile, student), hostile["expected"][student.expected_base]
        more = {t: (p, bound.get(t)) for t, p in mine.items() if p > bound.get(t, 0.0)}
        if more:
            gained[student.name] = more
    assert not gained, gained


def test_classmates_and_bases_keep_exactly_their_points(hostile):
    wrong = {s.name: (_points(hostile, s), hostile["expected"][s.expected_base or s.name])
             for s in hostile["students"] if s.attack is None
             and _points(hostile, s) != hostile["expected"][s.expected_base or s.name]}
    assert not wrong, wrong


def test_the_grader_says_what_it_noticed(hostile):
    rows = {row.student: row for row in hostile["outcome"].rows}
    # What the grader says: its reasons and the findings it holds for review (row.why, as grades.csv has them).
    silent = {s.name: rows[s.name].why for s in hostile["students"]
              if s.attack and s.attack.flagged and not any(s.attack.flagged in r for r in rows[s.name].why)}
    assert not silent, silent


def _payload_output(course: Path, student) -> dict:
    nb = nbformat.read(course / "autograded" / student.name / "normalization" / f"{student.notebook}.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.strip() == student.attack.code.strip():
            text = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
            lines = [line for line in text.splitlines() if line.startswith("{")]
            assert lines, f"{student.name}: the payload printed nothing: {cell.outputs}"
            return json.loads(lines[-1])
    raise AssertionError(f"{student.name}: the payload cell is not in the autograded notebook")


def test_nothing_could_be_read_written_or_sent(hostile):
    """What each reading, writing or network payload reported it managed (the instructor's autograded copy)."""
    found = {s.name: _payload_output(hostile["course"], s)["found"] for s in hostile["students"]
             if s.attack and s.attack.prints_found}
    assert found and not any(found.values()), found
    assert not hostile["listener"].received, hostile["listener"].received


def test_nothing_outside_the_students_output_folders_changes(hostile):
    before, after = hostile["before"], hostile["after"]
    changed = {key: sorted(set(before[key]) ^ set(after[key]))[:10] for key in before if before[key] != after[key]}
    assert not changed, changed


def _text(html: str) -> str:
    """The text of a page as a reader sees it (script and style left out), its whitespace as it is."""
    from browser_tools import page_parts

    return "".join(page_parts(html))


def test_no_hidden_line_reaches_what_students_receive(hostile):
    course = hostile["course"]
    secrets = set(package_lines())
    visible: set[str] = set()
    for path in (course / "source" / "normalization").glob("*.ipynb"):
        secrets |= notebook_lines(nbformat.read(path, as_version=4))
    for path in (course / "release" / "normalization").glob("*.ipynb"):
        visible |= visible_lines(nbformat.read(path, as_version=4))
    secrets = frozenset(secrets - visible)
    pages = sorted((course / "feedback").rglob("*.html"))
    assert len(pages) >= len(hostile["students"]) // 2
    found = {}
    for page in pages:  # the student's own lines are theirs to see again
        student, _, name = page.relative_to(course / "feedback").parts
        submitted = nbformat.read(hostile["class_dir"] / student / "normalization" / f"{Path(name).stem}.ipynb",
                                  as_version=4)
        hits = leaks(_text(page.read_text()), secrets - {line.strip() for c in submitted.cells
                                                         for line in c.source.splitlines()})
        if hits:
            found[str(page.relative_to(course))] = hits[:3]
    assert not found, found


def test_no_process_is_left(hostile):
    """No process of this run's kernels' users is left (a daemon a payload started included); another run's
    kernels on a shared machine are not this run's to count (process_tools.KernelWatch)."""
    assert hostile["kernels"].uids, "no kernel of the run was seen"
    assert not hostile["kernels"].left(), hostile["kernels"].left()


# ---- issue 18 item 2: verdicts are data; every CSV cell is inert ----

def test_a_students_text_names_no_mistake_and_no_csv_cell_runs(hostile):
    """The forged-named-mistake student's exception text is the judge's sentence for a real mistake, a formula, a
    script and escapes: the judge quotes it, but its data names no mistake, so the class report names none for the
    student; no cell of hostile.csv or its report.csv is a formula or holds a control character."""
    from course_grader import class_report, gradebook
    from course_grader.judging import VERDICTS_KEY
    from hostile import FORGED_SENTENCE
    from submissions import csv_cells, not_inert

    course = hostile["course"]
    forgers = [s for s in hostile["students"] if s.attack and s.attack.name == "forged-named-mistake"]
    assert forgers
    for student in forgers:  # the attack reached the verdict text (else this test would prove nothing)
        nb = nbformat.read(course / "autograded" / student.name / "normalization" / f"{student.notebook}.ipynb",
                           as_version=4)
        quoted = [v for v in nb.metadata[VERDICTS_KEY] if FORGED_SENTENCE in v["message"]]
        assert quoted and all(v["mistake"] is None for v in quoted), nb.metadata[VERDICTS_KEY]
    report = class_report.collect(course, gradebook.default_db_url(course), course / "hostile.csv")
    names = {s.name for s in forgers}
    named = [(t.test, m, who) for t, m, who in report.named if names & set(who)]
    assert not named, named
    for path in (course / "hostile.csv", class_report.paths(course / "hostile.csv")[1]):
        bad = [c for c in csv_cells(path) if not_inert(c)]
        assert not bad, (path.name, bad[:5])


# ---- issue 18 item 1: student content is inert wherever a person sees it ----

def _pages(course: Path, student: str, notebook: str) -> dict[str, str]:
    """The pages a person opens for a student's notebook: formgrader's (rendered as it renders the autograded
    notebook) and the feedback page; none for a notebook that was not graded."""
    from browser_tools import formgrader_html

    autograded = course / "autograded" / student / "normalization" / f"{notebook}.ipynb"
    feedback = course / "feedback" / student / "normalization" / f"{notebook}.html"
    return {**({"formgrader": formgrader_html(autograded)} if autograded.exists() else {}),
            **({"feedback": feedback.read_text()} if feedback.exists() else {})}


def test_no_page_a_person_opens_runs_a_students_content(hostile):
    """Every attack's autograded notebook as formgrader renders it, and its feedback page: no script, event
    handler, frame, form or fetch beyond what the same page holds for its base (the same submission without the
    payload; html-that-runs carries every kind), no payload marker or listener address in an active place; and
    html-that-runs' written answer is still shown on both."""
    from browser_tools import active_content, active_elements, page_text
    from hostile import HARMLESS, MARK

    course, marks = hostile["course"], (MARK, f"127.0.0.1:{hostile['listener'].port}")
    found, shown = {}, []
    for student in hostile["students"]:
        if student.attack is None:
            continue
        base = _pages(course, student.expected_base, student.notebook)
        for kind, page in _pages(course, student.name, student.notebook).items():
            added = active_elements(page) - active_elements(base.get(kind, ""))
            if added or active_content(page, *marks):
                found[f"{kind}: {student.name}"] = (dict(added), active_content(page, *marks)[:3])
            if student.attack.name == "html-that-runs" and HARMLESS in page_text(page):
                shown.append(kind)
    assert not found, found
    assert sorted(shown) == ["feedback", "formgrader"], shown
