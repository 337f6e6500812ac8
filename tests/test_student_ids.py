"""Any student id an LMS or a zip collect can produce grades: long (an e-mail address, a 200-character id),
unicode, spaces, shell and glob characters. Graded end to end (course_grader.pipeline.run) in a throw-away copy of
the course, one notebook each, next to a student with a plain id: every one gets exactly the plain student's points.

A 46-character id once put the kernel's socket path past the 107 bytes of a unix socket address: the kernel could
not start and the worker hung in zmq's teardown. Scratch folders and socket paths are now fixed-length names.
"""

from __future__ import annotations

import os

import nbformat
import pytest

from course_grader.pipeline import Options, run
from hostile import Q3, notebook
from submissions import release_and_source

LONG_46 = "firstname.middlename.lastname.1234@example.edu"  # 46 characters, as LMS ids and e-mails are
LONG_200 = ("a-very-long-lms-identifier-" * 8)[:200]
IDS = {
    "plain": "plain",
    "e-mail": LONG_46,
    "200 characters": LONG_200,
    "unicode": "Zoë Łukasz 山田",
    "shell": "o'brien; rm -rf ~ & $(id) `id` | \"x\" > y",
    "glob": "*?{b,c} a[1",
}
# What nbgrader itself cannot take (autograde.unusable_id): not graded, with the reason, and no worker started.
REFUSED = {"bracket expression": ("[ab]c", "bracket expression"), "blanks at the ends": (" padded ", "blanks")}


def test_the_ids_are_what_they_claim():
    assert len(LONG_46) == 46 and len(LONG_200) == 200
    assert all(len(s.encode()) <= 255 for s in IDS.values())  # a folder name's limit


@pytest.fixture(scope="module")
def graded(course, tmp_path_factory):
    class_dir = tmp_path_factory.mktemp("ids") / "class"
    nb = notebook(*release_and_source(course), Q3, "ref")
    for student in [*IDS.values(), *(student for student, _ in REFUSED.values())]:
        folder = class_dir / student / "normalization"
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / f"{Q3}.ipynb")
    os.chmod(class_dir.parent, 0o755)
    return run(Options(root=course, class_dir=class_dir, jobs=2, notebooks=["Q3"], cell_timeout=25,
                       notebook_timeout=240, progress=False, feedback=True,
                       csv=course / "ids.csv"))


@pytest.mark.parametrize("kind", [k for k in IDS if k != "plain"])
def test_a_student_with_this_id_gets_the_plain_students_points(graded, kind):
    student = IDS[kind]
    assert not graded.results[student].not_graded, graded.results[student]
    assert graded.scores[student][Q3].tests == graded.scores["plain"][Q3].tests, graded.results[student]
    assert sum(graded.scores["plain"][Q3].tests.values()) > 0


@pytest.mark.parametrize("kind", list(REFUSED))
def test_an_id_nbgrader_cannot_take_is_not_graded_and_says_why(graded, kind):
    student, reason = REFUSED[kind]
    result = graded.results[student]
    assert set(result.not_graded) == {Q3} and reason in result.not_graded[Q3], result
    assert not result.graded and not any(result.seconds.values()), result  # no worker graded it
    row = next(r for r in graded.rows if r.student == student)
    assert any(reason in why for why in row.why), row.why


def test_every_student_is_in_the_csv_and_has_feedback(graded, course):
    import csv

    with open(course / "ids.csv", newline="") as f:
        listed = {row[0] for row in list(csv.reader(f))[1:]}
    assert set(IDS.values()) <= {s.lstrip("'") for s in listed}, listed
    missing = [s for s in IDS.values() if not (course / "feedback" / s / "normalization" / f"{Q3}.html").is_file()]
    assert not missing, missing


def test_scratch_and_socket_paths_do_not_grow_with_the_id():
    """The worker's scratch folder is named by a fixed-length digest, so a kernel's socket path has a fixed length."""
    from course_grader.workers import scratch_name

    names = {scratch_name(s) for s in IDS.values()}
    assert len(names) == len(IDS) and len({len(n) for n in names}) == 1, names
    assert all(n.isascii() and n.isalnum() for n in names), names


def test_what_nbgrader_cannot_take_is_named():
    """autograde.unusable_id, case by case: nbgrader strips blanks around an id, globs the folder it found (a bracket
    expression does not match itself), and its gradebook's student id is String(128), which PostgreSQL enforces."""
    from course_grader.autograde import unusable_id

    assert all(not unusable_id(s) for s in IDS.values())
    assert "blanks" in unusable_id("alice ") and "blanks" in unusable_id("\talice")
    assert "bracket" in unusable_id("a[bc]d") and not unusable_id("a[b") and not unusable_id("a]b[")
    assert not unusable_id(LONG_200, "sqlite:///gradebook.db")
    assert "128" in unusable_id(LONG_200, "postgresql+psycopg2://grader@db/gradebook")
    assert not unusable_id("x" * 128, "postgresql+psycopg2://grader@db/gradebook")
