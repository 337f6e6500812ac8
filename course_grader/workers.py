"""Where notebooks are graded: one interface, local worker processes or Dask workers behind it.

The pipeline (pipeline.py) hands out tasks and merges what comes back; a backend only grades. A task is one
notebook of one student (`Task`), so that at the end of a class the last student's notebooks spread over every
worker, here and on Dask alike. A backend implements three methods:

- `submit(task, rank)`: grade this task; a lower `rank` starts first (a retry before anything new, then the class
  in order, each student's notebooks slowest first);
- `completed()`: yield a `Done` for each task as it ends (tasks submitted meanwhile included), until none is left;
- `close()`: stop, and let go of the processes and folders it holds.

A `Done` holds the worker's `Result` as data and the folder of the worker's private course: its gradebook
(`gradebook.db`), `autograded/<student>/` and `feedback/<student>/`. Whatever goes wrong in a backend (a worker that
dies, a task that raises) comes back as a Result with its cause, never as an exception: the batch always goes on.

`LocalWorkers` runs `--jobs N` threads, each with one grading worker process (`WorkerProcess`: autograde.serve) that
grades one task after another, so nbgrader, torch and the judge are imported once a thread, not once a task. Dask's
backend (distributed.DaskWorkers) runs the same worker process on each Dask worker.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from course_grader.autograde import Job, Result
from course_grader.failures import one_line, root_cause


@dataclass(frozen=True)
class Task:
    """One notebook of one student; `attempt` > 0: again, in a fresh worker process, after a grader failure."""

    student: str
    notebook: str
    attempt: int = 0


@dataclass
class Done:
    """A task that ended: the worker's result, and its private course folder (`course`) inside `folder`, which the
    pipeline removes once it has merged and installed what it needs."""

    task: Task
    result: Result
    folder: Path

    @property
    def course(self) -> Path:
        return self.folder / "course"


def scratch_name(student: str) -> str:
    """A student's scratch folder name: a fixed-length digest of the id, never the id itself. An id is whatever the
    LMS or the class folder says (an e-mail address, 200 characters, unicode, spaces, shell characters): as a folder
    name it would push a kernel's socket path past the 107 bytes of a unix socket address (the kernel could not
    start) and, with a suffix, a name past 255 bytes."""
    return hashlib.sha256(student.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def task_folder(scratch: Path, task: Task) -> Path:
    """Where one task is graded: <scratch>/students/<digest of the student>.<digest of the notebook>.<attempt>."""
    return scratch / "students" / f"{scratch_name(task.student)}.{scratch_name(task.notebook)[:8]}.{task.attempt}"


def job_for(options, task: Task, submission: Path, release: Path, source: Path, template: Path, work: Path,
            machine) -> Job:
    """The worker's job for `task` on `machine`, with the run's limits (pipeline.Options: settings.py's defaults)."""
    return Job(student=task.student, submission=str(submission.resolve()), release=str(release), source=str(source),
               template_db=str(template), scratch=str(work), notebooks=[task.notebook],
               cell_timeout=options.cell_timeout, notebook_timeout=options.notebook_timeout,
               memory_mb=options.memory_mb, isolate=machine.isolate, max_output_bytes=options.max_output_bytes,
               max_cell_output_bytes=options.max_cell_output_bytes,
               max_notebook_output_bytes=options.max_notebook_output_bytes, max_record_bytes=options.max_record_bytes,
               max_submission_bytes=options.max_submission_bytes, worker_memory_mb=options.worker_memory_mb,
               expose=machine.expose, feedback=options.feedback, run_experiments=options.run_experiments,
               zygote=machine.zygote, sockets=machine.sockets)


def worker_limit(options) -> float:
    """Seconds a worker may take over one task: the notebook's limit, and five minutes more."""
    return options.notebook_timeout + 300


class WorkerProcess:
    """One grading worker process (autograde.serve) that grades one job after another.

    Any failure of the worker becomes a Result with its cause, and the process is replaced for the next job: a
    worker that died, ran past its limit or could not be told the job. `fresh=True` grades in a new process
    (the retry after a grader failure). The process dies with the thread that started it (die_with_parent).
    """

    SERVE = [sys.executable, "-m", "course_grader.autograde", "--serve"]  # + the two pipes' descriptors

    def __init__(self, env: dict[str, str], command: list[str] | None = None,
                 spawn: Callable[[Callable[[], None]], None] | None = None) -> None:
        """`spawn(start)`: run `start` where the process may be started (default: here). The process dies with the
        thread that starts it, so a caller whose threads come and go (the warm service) starts it from one that stays."""
        self.env = env
        self.command = command or self.SERVE
        self.spawn = spawn or (lambda start: start())
        self.proc: subprocess.Popen | None = None
        self.jobs = self.replies = -1

    def warm(self, log: Path) -> None:
        """Start the process now (its imports), before its first job; what it prints before that goes to `log`."""
        if not self.proc:
            self._start(log)

    def _start(self, log: Path) -> None:
        self.spawn(lambda: self._popen(log))

    def _popen(self, log: Path) -> None:
        jobs_r, self.jobs = os.pipe()
        self.replies, replies_w = os.pipe()
        try:
            with open(log, "ab") as out:
                self.proc = subprocess.Popen([*self.command, str(jobs_r), str(replies_w)], env=self.env,
                                             stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                             pass_fds=(jobs_r, replies_w), cwd=log.parent)
        except BaseException:
            self.stop()
            raise
        finally:
            os.close(jobs_r)
            os.close(replies_w)

    def stop(self) -> None:
        """End the process (at the end of its job pipe; killed if it does not go)."""
        for fd in (self.jobs, self.replies):
            if fd >= 0:
                os.close(fd)
        self.jobs = self.replies = -1
        if self.proc:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def _kill(self) -> int:
        """Kill the process (if it still runs) and close its pipes; its exit status (0 when there was none)."""
        code = 0
        if self.proc:
            self.proc.kill()  # nothing happens to one that has already ended
            code = self.proc.wait()
            self.proc = None
        self.stop()
        return code

    def _answer(self, limit: float) -> bool | None:
        """True when the worker answered, None when it ran past `limit`, False when it ended first."""
        deadline = time.monotonic() + limit
        data = b""
        while not data.endswith(b"\n"):
            ready, _, _ = select.select([self.replies], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(self.replies, 4096)
            if not chunk:
                return False
            data += chunk
        return True

    def grade(self, job: Job, limit: float, fresh: bool = False) -> Result:
        scratch = Path(job.scratch)
        path = scratch / "job.json"
        path.write_text(json.dumps(asdict(job)))
        log = scratch / "worker.log"
        if fresh or (self.proc and self.proc.poll() is not None):
            self._kill()
        try:
            if not self.proc:
                self._start(log)
            os.write(self.jobs, f"{path}\n".encode())
        except OSError as exc:  # no process could be started (out of processes or memory), or it is gone
            self._kill()
            return Result(job.student, ok=False, error=one_line(f"the grading worker did not start: {exc}"))
        answered = self._answer(limit)
        if answered is None:
            self._kill()
            return Result(job.student, ok=False, error=f"the grading worker ran past {limit:.0f} s")
        if not answered:
            code = self._kill()
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
            try:
                text = log.read_text(errors="replace")[-20000:]
            except OSError:
                text = ""
            cause = root_cause(text) if text.strip() else "it wrote nothing"
            return Result(job.student, ok=False, error=one_line(f"the grading worker died ({how}): {cause}"))
        try:
            return Result(**json.loads((scratch / "result.json").read_text()))
        except (OSError, ValueError, TypeError) as exc:  # a full disk, or a worker of another grader version
            return Result(job.student, ok=False, error=one_line(f"the grading worker's result could not be read: "
                                                                f"{type(exc).__name__}: {exc}"))


class WorkerProcesses:
    """A WorkerProcess for each thread that grades (LocalWorkers' threads, a Dask worker's task threads)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.lock = threading.Lock()
        self.workers: dict[int, WorkerProcess] = {}

    def here(self) -> WorkerProcess:
        with self.lock:
            return self.workers.setdefault(threading.get_ident(), WorkerProcess(self.env))

    def stop(self) -> None:
        with self.lock:
            workers, self.workers = list(self.workers.values()), {}
        for worker in workers:
            worker.stop()


class LocalWorkers:
    """`threads` threads grading tasks on this machine, lowest rank first; `grade(task)` grades one (in a thread).
    `close` runs once the threads have ended (the worker processes, the machine); `describe(results)` says where the
    kernels ran: (sandbox mode, how kernels start)."""

    def __init__(self, grade: Callable[[Task], Done], threads: int, close: Callable[[], None] = lambda: None,
                 describe: Callable[[dict], tuple[str, str]] = lambda results: ("", "")) -> None:
        self.grade = grade
        self.on_close = close
        self.describe = describe
        self.tasks: queue.PriorityQueue = queue.PriorityQueue()
        self.results: queue.Queue = queue.Queue()
        self.count = itertools.count()  # ties keep the order of submission
        self.outstanding = 0
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(max(1, threads))]
        for thread in self.threads:
            thread.start()

    def submit(self, task: Task, rank: tuple = ()) -> None:
        self.outstanding += 1
        self.tasks.put((rank, next(self.count), task))

    def _work(self) -> None:
        while (item := self.tasks.get())[-1] is not None:
            task = item[-1]
            try:
                done = self.grade(task)
            except Exception as exc:  # noqa: BLE001 - a grader bug costs one notebook a reason, not the batch
                done = Done(task, Result(task.student, ok=False, error=one_line(f"{type(exc).__name__}: {exc}")),
                            Path("/nonexistent"))
            self.results.put(done)

    def completed(self) -> Iterator[Done]:
        while self.outstanding:
            done = self.results.get()
            self.outstanding -= 1
            yield done

    def close(self) -> None:
        """Start nothing more (tasks not started are dropped: the pipeline is done or gone), end the threads when
        their tasks end, then `close` (the machine's fork server...)."""
        try:
            while True:
                self.tasks.get_nowait()
        except queue.Empty:
            pass
        for _ in self.threads:
            self.tasks.put(((float("inf"),), next(self.count), None))
        for thread in self.threads:
            thread.join()
        self.on_close()


class Graders:
    """Where a process's grading threads send their jobs: its own machine (machine.Machine) and one worker process
    per thread. The warm service's client (service.Warm) has the same three methods.

    `grade(build, limit, fresh)` grades the job `build(machine)` makes for this machine (workers.job_for);
    `describe()` says (sandbox mode, how kernels start); `stop()` ends the worker processes and the machine."""

    def __init__(self, machine) -> None:
        self.machine = machine
        self.processes = WorkerProcesses(machine.env)

    @property
    def mode(self) -> str:
        return self.machine.mode

    def grade(self, build: Callable[[object], Job], limit: float, fresh: bool = False) -> Result:
        return self.processes.here().grade(build(self.machine), limit, fresh)

    def describe(self) -> tuple[str, str]:
        return self.machine.mode, self.machine.kernels()

    def stop(self) -> None:
        self.processes.stop()
        self.machine.stop()
