"""The grading scheduler (course_grader/schedule.py), with fake workers: no kernels, a second or so."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from course_grader.autograde import Job, Result, _claim
from course_grader.schedule import Scheduler, claim_order, remember, run_jobs

NOTEBOOKS = [f"Q{i}" for i in range(1, 10)]


def _fake_worker(seconds: dict[tuple[str, str], float], log: list):
    """A worker that claims its student's notebooks like autograde.grade and 'grades' each by sleeping."""
    lock = threading.Lock()

    def grade_one(job: Job) -> Result:
        result = Result(job.student)
        for name in job.notebooks:
            if _claim(job.claims, name):
                time.sleep(seconds.get((job.student, name), 0.01))
                result.graded.append(name)
                with lock:
                    log.append((job.student, job.scratch, name))
        return result

    return grade_one


def _scheduler(tmp_path: Path, students: list[str]) -> Scheduler:
    def make_job(student: str, share: int) -> Job:
        return Job(student=student, submission="", release="", source="", template_db="",
                   scratch=f"{student}.{share}", notebooks=NOTEBOOKS, claims=str(tmp_path / "claims" / student))

    return Scheduler(students, make_job, tmp_path / "claims", len(NOTEBOOKS))


def _run(scheduler: Scheduler, threads: int, grade_one) -> tuple[list, list]:
    results, finished = [], []
    for job, result in run_jobs(scheduler, threads, grade_one):
        results.append((job, result))
        if scheduler.done(job):
            finished.append(job.student)
    return results, finished


def test_one_student_is_shared_by_every_thread(tmp_path):
    log: list = []
    slow = {("alice", n): 0.05 for n in NOTEBOOKS}
    results, finished = _run(_scheduler(tmp_path, ["alice"]), 2, _fake_worker(slow, log))
    assert finished == ["alice"]
    assert sorted(n for _, _, n in log) == NOTEBOOKS  # each notebook graded exactly once
    workers = {w for _, w, _ in log}
    assert workers == {"alice.0", "alice.1"}, workers  # both threads graded some of them


def test_idle_workers_help_a_student_who_hangs(tmp_path):
    """The last student hangs in its first notebook: the thread that runs out of students grades the rest."""
    log: list = []
    slow = {("looper", "Q1"): 1.0}
    results, finished = _run(_scheduler(tmp_path, ["alice", "bob", "looper"]), 2, _fake_worker(slow, log))
    assert sorted(finished) == ["alice", "bob", "looper"] and len(finished) == 3
    looper = {n: w for s, w, n in log if s == "looper"}
    assert sorted(looper) == NOTEBOOKS
    assert looper["Q1"] == "looper.0" and set(looper.values()) - {"looper.0"}, looper  # a helper took the rest
    assert all(len([1 for s, _, n in log if s == st and n == nb]) == 1 for st in ("alice", "bob") for nb in NOTEBOOKS)


def test_a_failing_worker_costs_one_reason_not_the_batch(tmp_path):
    def grade_one(job: Job) -> Result:
        if job.student == "bob":
            raise RuntimeError("worker exploded")
        return _fake_worker({}, [])(job)

    results, finished = _run(_scheduler(tmp_path, ["alice", "bob", "carol"]), 2, grade_one)
    assert sorted(finished) == ["alice", "bob", "carol"]
    errors = {job.student: r.error for job, r in results if not r.ok}
    assert set(errors) == {"bob"} and "worker exploded" in errors["bob"]


def test_claim_order_puts_the_slowest_first(tmp_path):
    history = tmp_path / "seconds.json"
    assert claim_order(["Q2", "Q1"], history) == ["Q1", "Q2"]  # no history: by name
    remember(history, {"a": Result("a", seconds={"Q1": 1.0, "Q2": 4.0, "Q3": 50.0, "total": 60.0},
                                    problems={"Q3": "the kernel died"})})
    assert claim_order(["Q1", "Q2", "Q3"], history) == ["Q3", "Q2", "Q1"]  # Q3 unknown (its run broke): first
    remember(history, {"a": Result("a", seconds={"Q1": 9.0})})
    assert claim_order(["Q1", "Q2"], history) == ["Q1", "Q2"]  # (1 + 9) / 2 = 5 > 4
    history.write_text("{not json")
    assert claim_order(["Q2", "Q1"], history) == ["Q1", "Q2"]  # a broken file is ignored
