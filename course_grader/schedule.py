"""Which worker grades what: each student's own job in class order, then help for the students still running.

`--jobs N` threads each run one worker process at a time (pipeline.WorkerProcess). A thread takes a retry
first (a fresh worker for the notebooks a grader failure left ungraded), then the next student who is waiting;
when nobody is waiting it starts a helper for the running student with the most notebooks nobody has claimed
yet (workers claim a student's notebooks one at a time: autograde._claim), at once, without waiting for the
student's first worker to claim one. So one submission graded alone uses every core from the start, and at the
end of a class the last students (a hung one who holds a worker for its cell limit) are finished by the
workers that would otherwise be idle.

Notebooks are claimed in order of their cost in earlier runs, the slowest first (a small JSON file of
seconds per notebook kept with the cached gradebooks), so two workers sharing a student end together.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from course_grader.autograde import Job, Result


class Scheduler:
    """Hands out jobs to worker threads and says when a student's last job has ended.

    A student stays open from its first job until the consumer closes it (`close`) or asks for one more worker
    for the notebooks still not graded (`retry`, after a grader failure); threads with nothing to start wait
    while any student is open, so a retry always finds a thread.
    """

    def __init__(self, students: list[str], make_job: Callable[..., Job], claims: Path, notebooks: int):
        self.waiting = deque(students)
        self.retries: deque[tuple[str, list[str]]] = deque()
        self.make_job = make_job  # make_job(student, share) or, for a retry, make_job(student, share, notebooks)
        self.claims = claims
        self.notebooks = notebooks
        self.running: dict[str, int] = {}  # student -> jobs running now
        self.started: dict[str, int] = {}  # student -> jobs started so far
        self.returned_from: set[str] = set()  # students one of whose workers has returned (before `done`)
        self.open: set[str] = set()  # students started and not closed yet
        self.retrying: set[str] = set()  # students whose fresh worker (a retry) has started
        self.cond = threading.Condition()
        self.stopped = False

    def _unclaimed(self, student: str) -> int:
        return self.notebooks - len(os.listdir(self.claims / student))

    def _start(self, student: str, *notebooks: list[str]) -> Job:
        self.running[student] = self.running.get(student, 0) + 1
        self.started[student] = self.started.get(student, 0) + 1
        return self.make_job(student, self.started[student] - 1, *notebooks)

    def next(self) -> Job | None:
        """The next job, or None when there is nothing left to start (waits while a student may still need one)."""
        with self.cond:
            while not self.stopped:
                if self.retries:
                    student, notebooks = self.retries.popleft()
                    self.retrying.add(student)  # its fresh worker grades those notebooks alone: no helpers
                    return self._start(student, notebooks)
                if self.waiting:
                    student = self.waiting.popleft()
                    (self.claims / student).mkdir(parents=True)
                    self.open.add(student)
                    return self._start(student)
                # Help a running student with notebooks nobody has claimed; never one being retried, never with
                # more workers than notebooks, and not once one of the student's workers has ended without
                # claiming anything (workers that die at once would otherwise be replaced by helpers forever).
                # A helper may start before the student's first worker has claimed: a lone submission uses
                # every core from the start, not after the first worker's imports.
                helpable = [(self._unclaimed(s), s) for s, n in self.running.items()
                            if n > 0 and s not in self.retrying and self.started[s] < self.notebooks]
                helpable = [(left, s) for left, s in helpable
                            if 0 < left and (left < self.notebooks or s not in self.returned_from)]
                if helpable:
                    return self._start(max(helpable)[1])
                if not self.open:
                    return None
                self.cond.wait()
            return None

    def returned(self, job: Job) -> None:
        """Record, in the worker's thread, that its worker has returned (the consumer hears of it later)."""
        with self.cond:
            self.returned_from.add(job.student)

    def done(self, job: Job) -> bool:
        """Record that a job ended; True when it was its student's last (the student is then closed or retried)."""
        with self.cond:
            self.running[job.student] -= 1
            self.cond.notify_all()
            return self.running[job.student] == 0

    def retry(self, student: str, notebooks: list[str]) -> None:
        """One more worker for `student`'s `notebooks`, before any student still waiting."""
        with self.cond:
            self.retries.append((student, notebooks))
            self.cond.notify_all()

    def close(self, student: str) -> None:
        """The student is finished: no job of theirs will start again."""
        with self.cond:
            self.open.discard(student)
            self.cond.notify_all()

    def stop(self) -> None:
        """Start nothing more (the consumer has gone)."""
        with self.cond:
            self.stopped = True
            self.cond.notify_all()


def run_jobs(scheduler: Scheduler, threads: int, grade_one: Callable[[Job], Result]) -> Iterator[tuple[Job, Result]]:
    """Run the scheduler's jobs on `threads` threads; yield each (job, result) as it ends, in this thread."""
    results: queue.Queue = queue.Queue()

    def work() -> None:
        try:
            while (job := scheduler.next()) is not None:
                try:
                    result = grade_one(job)
                except Exception as exc:  # noqa: BLE001 - a grader bug costs one student a reason, not the batch
                    result = Result(job.student, ok=False, error=f"{type(exc).__name__}: {exc}")
                scheduler.returned(job)
                results.put((job, result))
        finally:
            results.put(None)

    pool = [threading.Thread(target=work, daemon=True) for _ in range(max(1, threads))]
    for thread in pool:
        thread.start()
    alive = len(pool)
    try:
        while alive:
            item = results.get()
            if item is None:
                alive -= 1
            else:
                yield item
    finally:
        scheduler.stop()
    for thread in pool:
        thread.join()


def claim_order(names: list[str], history: Path) -> list[str]:
    """The notebooks, slowest first according to earlier runs (unknown ones first, then by name)."""
    seconds = _read(history)
    return sorted(names, key=lambda n: (-seconds.get(n, float("inf")), n))


def remember(history: Path, results: dict[str, Result]) -> None:
    """Fold this run's seconds per notebook (notebooks that ran to the end) into the history."""
    seconds = _read(history)
    runs: dict[str, list[float]] = {}
    for result in results.values():
        for name, value in result.seconds.items():
            if name != "total" and name not in result.problems:
                runs.setdefault(name, []).append(value)
    for name, values in runs.items():
        mean = sum(values) / len(values)
        seconds[name] = round(mean if name not in seconds else (seconds[name] + mean) / 2, 2)
    partial = history.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(seconds, indent=1, sort_keys=True))
    os.replace(partial, history)


def _read(history: Path) -> dict[str, float]:
    try:
        data = json.loads(history.read_text())
        return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError, TypeError):
        return {}
