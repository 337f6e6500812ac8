"""Who grades what (course_grader/workers.py, pipeline._grade, schedule.py), with fake workers: no kernels, a second
or so. The pipeline hands a backend one task per notebook; these tests check that a lone submission uses every
thread, that students finish in class order, that a grader failure is retried once before anything new, and that a
task that raises costs that notebook a reason, not the batch."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from course_grader import pipeline
from course_grader.autograde import Result
from course_grader.schedule import remember, slowest_first
from course_grader.workers import Done, LocalWorkers, Task

NOTEBOOKS = [f"Q{i}" for i in range(1, 10)]


class Fake:
    """A grade function for LocalWorkers: each task 'takes' `seconds` and is graded, unless `fails` says how often
    it fails first (a grader failure: nothing graded) or that it raises."""

    def __init__(self, seconds: float = 0.01, fails: dict[tuple[str, str], int] | None = None,
                 raises: set[tuple[str, str]] = frozenset()):
        self.seconds, self.fails, self.raises = seconds, dict(fails or {}), raises
        self.log: list[tuple[Task, int]] = []  # (task, thread) in the order they started
        self.lock = threading.Lock()

    def __call__(self, task: Task) -> Done:
        with self.lock:
            self.log.append((task, threading.get_ident()))
        key = (task.student, task.notebook)
        if key in self.raises:
            raise RuntimeError("a grader bug")
        time.sleep(self.seconds)
        if self.fails.get(key, 0) > task.attempt:
            return Done(task, Result(task.student, ok=False, error="the kernel did not start",
                                     not_graded={task.notebook: "the kernel did not start"}), Path("/nonexistent"))
        return Done(task, Result(task.student, graded=[task.notebook]), Path("/nonexistent"))


@pytest.fixture
def no_gradebook(monkeypatch):
    """pipeline._grade without a gradebook or folders to install: what it merges is not looked at here."""
    monkeypatch.setattr(pipeline, "_merge", lambda course, db_url, result: None)
    monkeypatch.setattr(pipeline, "_install", lambda src, dest: None)


def _grade(students: list[str], fake: Fake, threads: int) -> tuple[list[str], dict[str, Result]]:
    """Grade the class with `threads` local threads; (students in the order they finished, their results)."""
    workers = LocalWorkers(fake, threads)
    finished, results = [], {}
    try:
        for student, parts in pipeline._grade(workers, dict.fromkeys(students, Path(".")), NOTEBOOKS, "", Path(".")):
            finished.append(student)
            results[student] = pipeline._combine(student, parts, NOTEBOOKS)
    finally:
        workers.close()
    return finished, results


def test_a_lone_submission_uses_every_thread(no_gradebook):
    fake = Fake(seconds=0.05)
    started = time.monotonic()
    finished, results = _grade(["alice"], fake, threads=3)
    assert finished == ["alice"] and results["alice"].graded == NOTEBOOKS and results["alice"].ok
    assert len({thread for _, thread in fake.log}) == 3
    assert time.monotonic() - started < 9 * 0.05 * 0.8  # not one notebook after another


def test_students_finish_in_class_order_and_the_last_one_spreads_over_every_thread(no_gradebook):
    fake = Fake(seconds=0.02)
    finished, _ = _grade(["a", "b", "c"], fake, threads=2)
    assert finished == ["a", "b", "c"]
    assert [t.notebook for t, _ in fake.log if t.student == "a"] == NOTEBOOKS  # each student's notebooks in order
    assert len({thread for task, thread in fake.log if task.student == "c"}) == 2


def test_a_grader_failure_is_retried_once_before_anything_new(no_gradebook):
    fake = Fake(seconds=0.03, fails={("a", "Q2"): 1, ("b", "Q1"): 5})
    finished, results = _grade(["a", "b", "c"], fake, threads=1)
    assert sorted(finished) == ["a", "b", "c"]
    started = [t for t, _ in fake.log]
    retry = started.index(Task("a", "Q2", 1))
    assert retry < started.index(Task("b", "Q1", 0))  # before the next student's notebooks
    assert results["a"].ok and results["a"].graded == NOTEBOOKS
    assert started.count(Task("b", "Q1", 1)) == 1 and Task("b", "Q1", 2) not in started  # once only
    assert not results["b"].ok and results["b"].not_graded == {"Q1": "the kernel did not start"}
    assert results["b"].graded == NOTEBOOKS[1:] and results["c"].ok


def test_a_task_that_raises_costs_its_notebook_a_reason_not_the_batch(no_gradebook):
    fake = Fake(raises={("a", "Q5")})
    finished, results = _grade(["a", "b"], fake, threads=2)
    assert sorted(finished) == ["a", "b"] and results["b"].ok
    assert results["a"].not_graded == {"Q5": "RuntimeError: a grader bug"}, results["a"].not_graded
    assert results["a"].graded == [n for n in NOTEBOOKS if n != "Q5"]


def test_slowest_first_puts_the_slowest_first(tmp_path):
    history = tmp_path / "seconds.json"
    assert slowest_first(["Q2", "Q1"], history) == ["Q1", "Q2"]  # no history: by name
    remember(history, {"a": Result("a", seconds={"Q1": 1.0, "Q2": 4.0, "Q3": 50.0, "total": 60.0},
                                    problems={"Q3": "the kernel died"})})
    assert slowest_first(["Q1", "Q2", "Q3"], history) == ["Q3", "Q2", "Q1"]  # Q3 unknown (its run broke): first
    remember(history, {"a": Result("a", seconds={"Q1": 9.0})})
    assert slowest_first(["Q1", "Q2"], history) == ["Q1", "Q2"]  # (1 + 9) / 2 = 5 > 4
    history.write_text("{not json")
    assert slowest_first(["Q2", "Q1"], history) == ["Q1", "Q2"]  # a broken file is ignored
