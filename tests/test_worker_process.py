"""The parent's side of a grading worker process (workers.WorkerProcess), against a stand-in server: no kernels.

The stand-in speaks autograde.serve's protocol (a job.json path a line on one pipe, the same line back on the
other once result.json is written) and misbehaves as each job's student asks: it dies, hangs, writes garbage.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from course_grader.autograde import Job
from course_grader.workers import WorkerProcess

SERVER = '''
import json, os, sys, time
jobs, replies = os.fdopen(int(sys.argv[1])), os.fdopen(int(sys.argv[2]), "w")
print("started", flush=True)
for line in jobs:
    path = line.strip()
    job = json.load(open(path))
    folder = os.path.dirname(path)
    log = os.open(os.path.join(folder, "worker.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1), os.dup2(log, 2)  # as autograde.serve does: the job's output goes to the job's log
    student = job["student"]
    if student == "dies":
        print("Traceback (most recent call last):\\nMemoryError: the worker ran out of memory", file=sys.stderr, flush=True)
        os.kill(os.getpid(), 9)
    if student == "hangs":
        time.sleep(60)
    text = "{not json" if student == "garbage" else json.dumps({"student": student, "notes": [f"pid {os.getpid()}"]})
    open(os.path.join(folder, "result.json"), "w").write(text)
    replies.write(line)
    replies.flush()
'''


@pytest.fixture
def worker(tmp_path):
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    worker = WorkerProcess(dict(os.environ), command=[sys.executable, str(script)])
    yield worker
    worker.stop()


def _job(tmp_path: Path, student: str, n: int) -> Job:
    folder = tmp_path / "students" / f"{student}.{n}"
    folder.mkdir(parents=True)
    return Job(student=student, submission="", release="", source="", template_db="", scratch=str(folder))


def _pid(result) -> str:
    return result.notes[0]


def test_one_process_grades_job_after_job_and_a_retry_gets_a_new_one(worker, tmp_path):
    first = worker.grade(_job(tmp_path, "alice", 0), limit=30)
    second = worker.grade(_job(tmp_path, "bob", 0), limit=30)
    assert first.ok and second.ok and first.student == "alice" and second.student == "bob"
    assert _pid(first) == _pid(second)  # the imports are paid once
    retry = worker.grade(_job(tmp_path, "bob", 1), limit=30, fresh=True)
    assert retry.ok and _pid(retry) != _pid(second)


def test_a_worker_that_dies_is_the_graders_failure_with_its_cause_and_is_replaced(worker, tmp_path):
    before = worker.grade(_job(tmp_path, "alice", 0), limit=30)
    died = worker.grade(_job(tmp_path, "dies", 0), limit=30)
    assert not died.ok and died.student == "dies"
    assert died.error == "the grading worker died (killed by SIGKILL): MemoryError: the worker ran out of memory"
    after = worker.grade(_job(tmp_path, "carol", 0), limit=30)
    assert after.ok and _pid(after) != _pid(before)


def test_a_worker_past_its_limit_is_killed_and_replaced(worker, tmp_path):
    hung = worker.grade(_job(tmp_path, "hangs", 0), limit=2)
    assert not hung.ok and hung.error == "the grading worker ran past 2 s"
    assert worker.proc is None  # killed, not left running
    assert worker.grade(_job(tmp_path, "alice", 0), limit=30).ok


def test_an_unreadable_result_is_said_and_the_next_job_still_runs(worker, tmp_path):
    bad = worker.grade(_job(tmp_path, "garbage", 0), limit=30)
    assert not bad.ok and bad.error.startswith("the grading worker's result could not be read: JSONDecodeError")
    assert worker.grade(_job(tmp_path, "alice", 0), limit=30).ok


def test_a_worker_killed_between_jobs_is_replaced(worker, tmp_path):
    first = worker.grade(_job(tmp_path, "alice", 0), limit=30)
    worker.proc.kill()
    worker.proc.wait()
    second = worker.grade(_job(tmp_path, "bob", 0), limit=30)
    assert second.ok and _pid(second) != _pid(first)


def test_the_job_pipes_are_not_inherited_by_what_the_worker_starts(tmp_path):
    """The real server's pipes (passed to it inheritable): what it starts (the kernels' launchers, and through them
    student code) cannot read the next students' jobs or answer for them, even when started with close_fds=False."""
    from course_grader.autograde import private_pipes

    r, w = os.pipe()
    for fd in (r, w):
        os.set_inheritable(fd, True)
    try:
        listing = [sys.executable, "-c", "import os; print(' '.join(os.listdir('/proc/self/fd')))"]
        inherited = subprocess.run(listing, capture_output=True, text=True, close_fds=False).stdout.split()
        assert str(r) in inherited and str(w) in inherited  # the attack, before the defence
        private_pipes(r, w)
        inherited = subprocess.run(listing, capture_output=True, text=True, close_fds=False).stdout.split()
        assert str(r) not in inherited and str(w) not in inherited, inherited
    finally:
        os.close(r)
        os.close(w)
