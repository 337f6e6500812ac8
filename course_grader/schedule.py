"""Which worker grades what: each student's own job in class order, then help for the students still running.

`--jobs N` threads each run one worker process at a time (pipeline._grade_one). A thread takes the next
student who is waiting; when nobody is waiting it starts a helper for the running student with the most
notebooks nobody has claimed yet (workers claim a student's notebooks one at a time: autograde._claim). So
one submission graded alone uses every core, and at the end of a class the last students (a hung one who
holds a worker for its cell limit) are finished by the workers that would otherwise be idle.

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
    """Hands out jobs to worker threads and says when a student's last job has ended."""

    def __init__(self, students: list[str], make_job: Callable[[str, int], Job], claims: Path, notebooks: int):
        self.waiting = deque(students)
        self.make_job = make_job
        self.claims = claims
        self.notebooks = notebooks
        self.running: dict[str, int] = {}  # student -> jobs running now
        self.started: dict[str, int] = {}  # student -> jobs started so far
        self.lock = threading.Lock()

    def _unclaimed(self, student: str) -> int:
        return self.notebooks - len(os.listdir(self.claims / student))

    def next(self) -> Job | None:
        """The next job, or None when there is nothing left to start."""
        with self.lock:
            if self.waiting:
                student = self.waiting.popleft()
                (self.claims / student).mkdir(parents=True)
            else:
                helpable = [(self._unclaimed(s), s) for s, n in self.running.items() if n > 0]
                helpable = [(left, s) for left, s in helpable if left > 0]
                if not helpable:
                    return None
                student = max(helpable)[1]
            self.running[student] = self.running.get(student, 0) + 1
            self.started[student] = self.started.get(student, 0) + 1
            return self.make_job(student, self.started[student] - 1)

    def done(self, job: Job) -> bool:
        """Record that a job ended; True when it was its student's last."""
        with self.lock:
            self.running[job.student] -= 1
            return self.running[job.student] == 0


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
                results.put((job, result))
        finally:
            results.put(None)

    pool = [threading.Thread(target=work, daemon=True) for _ in range(max(1, threads))]
    for thread in pool:
        thread.start()
    alive = len(pool)
    while alive:
        item = results.get()
        if item is None:
            alive -= 1
        else:
            yield item
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
