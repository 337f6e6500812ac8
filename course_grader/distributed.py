"""Grading on many machines with Dask distributed: the pipeline's tasks (workers.Task: one notebook of one student)
as Dask tasks, their results returned as data. `DaskWorkers` is the backend; the pipeline merges what it returns
exactly as it merges the local workers' (workers.py says the interface).

The instructor's process (pipeline.run with `--scheduler tcp://HOST:PORT`, or `--dask-workers N` for a
cluster started here) sends the course once, with the worker plugin (the release, source/ and the template
gradebook, as bytes), and one task per notebook with that notebook's file as bytes. Each Dask worker prepares its
own machine once (machine.Machine, through the worker plugin below: the data cache, the sandbox, a fork server) and
keeps it, and one grading worker process per task thread, across all its tasks. A task runs exactly as a local
one: the same worker process (autograde.py), the same sandboxed kernels. It returns the result (as data: its notes,
and the findings that hold a notebook for review), the worker's private gradebook, the autograded notebook and the
feedback page as bytes. No filesystem is shared. Every task of one notebook has the same key prefix
(`grade_<notebook>`), so the scheduler learns how long that notebook takes and balances the workers by it; earlier
students have a higher priority, so students finish one after another.

Failures: a task whose worker dies is run again on another worker by Dask itself (the scheduler's
`allowed-failures`, 3 by default); after that, or when the task raises, the notebook comes back "not graded" with
the cause, and the pipeline sends it once more as a new task in a fresh worker process, as it does locally.

A worker refuses a task when its course code (course_lib, the recorder, the judge, the grader) differs from
the instructor's, since its judge would then grade with other tests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

from course_grader.autograde import Job, Result
from course_grader.failures import one_line
from course_grader.machine import code_root, code_version
from course_grader.workers import Done, Graders, Task, job_for, scratch_name, task_folder, worker_limit

PLUGIN = "normalization-course-grading"


def _head(path: Path, limit: int) -> bytes:
    """The file's bytes, at most `limit` of them (all when limit < 0)."""
    with open(path, "rb") as f:
        return f.read(limit)


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, by its path relative to it."""
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".ipynb_checkpoints" not in p.parts}


def _write(files: dict[str, bytes], folder: Path) -> None:
    """Write `files` (relative path -> bytes) under `folder`, and nowhere else."""
    base = folder.resolve()
    for name, data in files.items():
        target = (folder / name).resolve()
        if not target.is_relative_to(base):
            raise ValueError(f"refusing to write outside {folder}: {name}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


@dataclass
class Course:
    """What a worker needs of the course, as data: sent once, kept on each worker for the run."""

    release: dict[str, bytes]
    source: dict[str, bytes]
    template_db: bytes
    code: str

    @cached_property
    def key(self) -> str:
        digest = hashlib.sha256(self.code.encode() + self.template_db)
        for part in (self.release, self.source):
            for name, data in sorted(part.items()):
                digest.update(name.encode() + b"\0" + data)
        return digest.hexdigest()[:16]


def for_workers(options):
    """The instructor's options as the Dask workers get them: all that decides how a notebook is graded (limits,
    output caps, sandbox, feedback...), whatever is added to Options later; nothing that names the instructor's
    files or gradebook (its URL may hold a password). Each worker grades with them in its own course folder."""
    return dataclasses.replace(options, root=Path("."), class_dir=None, zip_dir=None, students=[], db_url=None,
                               csv=None, scheduler="")


try:
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # the instructor extra is not installed: local grading only
    WorkerPlugin = object


class GradingPlugin(WorkerPlugin):
    """On each worker: a private scratch folder and the machine's grading setup (data, sandbox, fork server)."""

    name = PLUGIN

    def __init__(self, settings, course: Course) -> None:
        """`settings`: the run's options, for_workers."""
        self.settings = settings
        self.data = course  # sent with the plugin to every worker, those that join later too
        self.graders = None
        self.scratch: Path | None = None
        self.folder: Path | None = None
        self.tasks = 0

    def setup(self, worker) -> None:
        from course_grader.machine import Machine

        from course_grader import leftovers

        leftovers.sweep()  # what a killed worker left here (folders whose owner is gone only: leftovers.py)
        self.held = leftovers.Scratch(prefix="course-grade-dask-")  # removed at teardown, or by the next sweep
        self.scratch = self.held.path
        # One kernel thread per task slot: the worker's threads (tasks at once) share its cores.
        setup = dict(one_thread=True, isolate=self.settings.sandbox, fork_server=not self.settings.fresh_kernels)

        def own() -> Graders:  # a grading process per task thread, kept between tasks
            return Graders(Machine.prepare(self.scratch, code_root(), **setup))

        if self.settings.warm:  # this machine's warm service (service.py), kept between runs
            from course_grader import service

            self.graders = service.graders(code_root(), setup, own, say=lambda why: print(why, flush=True))
        else:
            self.graders = own()
        self.address = worker.address
        self.code = code_version()  # this worker's course code, read once

    def teardown(self, worker) -> None:
        if getattr(self, "graders", None):
            self.graders.stop()
        if getattr(self, "held", None):
            self.held.remove()

    def course(self) -> Path:
        """The course's files on this worker (written once per run)."""
        if self.folder is None:
            folder = self.scratch / f"course-{self.data.key}"
            _write(self.data.release, folder / "release")
            _write(self.data.source, folder / "source")
            (folder / "template.db").write_bytes(self.data.template_db)
            self.folder = folder
        return self.folder


def grade_task(course_key: str, task: Task, submission: dict[str, bytes], settings) -> dict:
    """One task on this Dask worker: the local pipeline's worker process, its outputs returned as bytes (a retry,
    task.attempt > 0, in a new worker process)."""
    from distributed import get_worker

    plugin: GradingPlugin = get_worker().plugins[PLUGIN]
    if plugin.data.key != course_key:
        raise RuntimeError(f"worker {plugin.address} holds another run's course: one grading run per cluster at a time")
    if plugin.code != plugin.data.code:
        raise RuntimeError(f"worker {plugin.address} has other course code ({plugin.code}, the instructor's is "
                           f"{plugin.data.code}): update its checkout")
    graders = plugin.graders
    if settings.require_isolation and graders.mode != "isolated":
        raise RuntimeError(f"worker {plugin.address} cannot isolate kernels ({graders.mode}) and isolation is required")
    folder = plugin.course()
    plugin.tasks += 1
    work = task_folder(plugin.scratch, task)
    work = work.with_name(f"{work.name}.{plugin.tasks}")
    _write(submission, work / "submitted")
    options = dataclasses.replace(settings, root=folder)

    def build(machine) -> Job:
        return job_for(options, task, work / "submitted", folder / "release", folder / "source",
                       folder / "template.db", work, machine)

    try:
        result = graders.grade(build, worker_limit(options), fresh=task.attempt > 0)
        mode, kernels = graders.describe()
        result.machine = {"worker": plugin.address, "mode": mode, "kernels": kernels}
        out = work / "course"
        return {"result": asdict(result),
                "gradebook": (out / "gradebook.db").read_bytes() if (out / "gradebook.db").exists() else b"",
                "autograded": _files(out / "autograded" / task.student),
                "feedback": _files(out / "feedback" / task.student)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def course_data(release: Path, source: Path, template: Path) -> Course:
    return Course(release=_files(release), source=_files(source), template_db=template.read_bytes(),
                  code=code_version())


class DaskWorkers:
    """The pipeline's backend on a Dask cluster (workers.py: submit, completed, close, describe)."""

    def __init__(self, options, folders: dict[str, Path], release: Path, source: Path, template: Path,
                 scratch: Path) -> None:
        from distributed import Client, LocalCluster, as_completed

        self.settings = for_workers(options)
        self.folders, self.scratch = folders, scratch
        # A file over the submission cap travels cut one byte past it: the worker's repair says it is too large.
        self.limit = options.max_submission_bytes + 1 if options.max_submission_bytes else -1
        self.cluster = None
        if options.scheduler:
            self.client = Client(options.scheduler, timeout=60)
        else:
            self.cluster = LocalCluster(n_workers=options.dask_workers, threads_per_worker=1, processes=True,
                                        dashboard_address=None, host="127.0.0.1")
            self.client = Client(self.cluster)
        # The course travels with the plugin, so a task depends on nothing: the scheduler hands tasks out as
        # workers free up (none waits for the worker that holds some data).
        data = course_data(release, source, template)
        self.client.register_plugin(GradingPlugin(self.settings, data), name=PLUGIN)
        self.course = data.key
        self.tasks: dict = {}
        self.done = as_completed()

    def submit(self, task: Task, rank: tuple = ()) -> None:
        folder = self.folders[task.student]
        names = {f"{task.notebook}.ipynb", "timestamp.txt"}
        files = {p.name: _head(p, self.limit) for p in sorted(folder.iterdir()) if p.name in names and p.is_file()}
        # Dask runs a higher priority first: the pipeline's lower rank (retries, then students in order).
        retry, student, notebook = (rank + (0, 0, 0))[:3]
        priority = (1 - retry) * 10**9 - student * 1000 - notebook
        future = self.client.submit(grade_task, self.course, task, files, self.settings, pure=False, priority=priority,
                                    key=f"grade_{task.notebook}-{scratch_name(task.student)}-{task.attempt}")
        self.tasks[future] = task
        self.done.add(future)

    def completed(self) -> Iterator[Done]:
        for future in self.done:
            task = self.tasks.pop(future)
            work = task_folder(self.scratch, task)
            try:
                answer = future.result()
                result = Result(**answer["result"])
                (work / "course").mkdir(parents=True)
                (work / "course" / "gradebook.db").write_bytes(answer["gradebook"])
                _write(answer["autograded"], work / "course" / "autograded" / task.student)
                _write(answer["feedback"], work / "course" / "feedback" / task.student)
            except Exception as exc:  # noqa: BLE001 - the task failed for good (its workers died, or it raised)
                result = Result(task.student, ok=False,
                                error=one_line(f"the Dask task failed: {type(exc).__name__}: {exc}"))
            finally:
                future.release()
            yield Done(task, result, work)

    def describe(self, results: dict[str, Result]) -> tuple[str, str]:
        """(sandbox modes, how kernels start) as the workers reported them."""
        ran = [r.machine for r in results.values() if r.machine]
        modes = "; ".join(sorted({m.get("mode", "?") for m in ran})) or "no worker answered"
        return modes, f"on Dask workers ({', '.join(sorted({m.get('kernels', '?') for m in ran}))})"

    def close(self) -> None:
        self.client.close()
        if self.cluster:
            self.cluster.close()
