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
    def make_job(student: str, share: int, notebooks: list[str] | None = None) -> Job:
        return Job(student=student, submission="", release="", source="", template_db="",
                   scratch=f"{student}.{share}", notebooks=notebooks or NOTEBOOKS,
                   claims="" if notebooks else str(tmp_path / "claims" / student))

    return Scheduler(students, make_job, tmp_path / "claims", len(NOTEBOOKS))


def _run(scheduler: Scheduler, threads: int, grade_one) -> tuple[list, list]:
    results, finished = [], []
    for job, result in run_jobs(scheduler, threads, grade_one):
        results.append((job, result))
        if scheduler.done(job):
            scheduler.close(job.student)
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
    stuck = looper["Q1"]  # looper.0, or a helper that claimed Q1 first: whichever holds it, the other does the rest
    assert [n for n, w in looper.items() if w == stuck] == ["Q1"] and len(set(looper.values())) == 2, looper
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


def test_a_retry_finds_a_thread_when_every_other_student_is_done(tmp_path):
    """bob's only worker claims all his notebooks and dies (a grader failure) after alice is finished and the
    other thread has nothing left to start: that thread waits, and runs the fresh worker the consumer asks for."""
    log: list = []
    ran: list[Job] = []

    def grade_one(job: Job) -> Result:
        ran.append(job)
        if job.student == "bob" and job.claims:
            for name in job.notebooks:
                _claim(job.claims, name)
            time.sleep(0.3)  # alice is finished meanwhile, and no notebook of bob's is left to help with
            return Result("bob", ok=False, error="the grading worker died (killed by SIGKILL)")
        return _fake_worker({}, log)(job)

    scheduler = _scheduler(tmp_path, ["alice", "bob"])
    graded: dict[str, set] = {}
    finished = []
    for job, result in run_jobs(scheduler, 2, grade_one):
        graded.setdefault(job.student, set()).update(result.graded)
        if scheduler.done(job):
            missing = [n for n in NOTEBOOKS if n not in graded[job.student]]
            if missing and not [j for j in ran if j.student == job.student and not j.claims]:
                scheduler.retry(job.student, missing)
                continue
            scheduler.close(job.student)
            finished.append(job.student)
    assert sorted(finished) == ["alice", "bob"] and graded["bob"] == set(NOTEBOOKS)
    retry = [j for j in ran if j.student == "bob" and not j.claims]
    assert len(retry) == 1 and retry[0].notebooks == NOTEBOOKS, ran
    assert len([j for j in ran if j.student == "bob"]) == 2, ran  # no helper beside the fresh worker


def test_workers_that_die_before_claiming_are_not_replaced_by_helpers(tmp_path):
    """carol's workers die at once, before they claim a notebook: once one has ended, idle threads start no more
    helpers for her (only the consumer's one retry runs), and alice is graded meanwhile."""
    events: list = []  # ("start" | "end", student, scratch), in order
    lock = threading.Lock()
    alice = _fake_worker({("alice", n): 0.05 for n in NOTEBOOKS}, [])

    def grade_one(job: Job) -> Result:
        with lock:
            events.append(("start", job.student, job.scratch, bool(job.claims)))
        if job.student == "carol":
            time.sleep(0.05)
            result = Result("carol", ok=False, error="the grading worker died (killed by SIGKILL)")
        else:
            result = alice(job)
        with lock:
            events.append(("end", job.student, job.scratch, bool(job.claims)))
        return result

    scheduler = _scheduler(tmp_path, ["carol", "alice"])
    finished = []
    retried = False
    for job, result in run_jobs(scheduler, 3, grade_one):
        if scheduler.done(job):
            if job.student == "carol" and not retried:
                retried = True
                scheduler.retry("carol", NOTEBOOKS)
                continue
            scheduler.close(job.student)
            finished.append(job.student)
    assert sorted(finished) == ["alice", "carol"]
    first_end = events.index(next(e for e in events if e[:2] == ("end", "carol")))
    late = [e for e in events[first_end:] if e[:2] == ("start", "carol")]
    assert [claims for *_, claims in late] == [False], events  # after a death: the retry alone, no helper
    assert len([e for e in events if e[:2] == ("start", "carol")]) <= 3, events  # at most one helper beside


def test_a_lone_submission_uses_every_thread_from_the_start(tmp_path):
    """The helper of a student graded alone starts before the student's first worker has claimed anything
    (a real worker spends seconds importing nbgrader and torch before its first claim)."""
    started: list = []
    lock = threading.Lock()
    alice = _fake_worker({}, [])

    def grade_one(job: Job) -> Result:
        with lock:
            started.append(job.scratch)
        time.sleep(0.3)  # the imports, before the first claim
        return alice(job)

    results, finished = _run(_scheduler(tmp_path, ["alice"]), 2, grade_one)
    assert finished == ["alice"]
    assert sorted(started) == ["alice.0", "alice.1"], started
    graded = sorted(n for _, r in results for n in r.graded)
    assert graded == NOTEBOOKS  # each notebook once, whichever worker claimed it


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
