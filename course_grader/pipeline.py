"""The grading pipeline: collect submissions, grade students in parallel workers, merge, report.

Each student is graded by a worker process (autograde.py) in a private scratch course with a private SQLite
gradebook; threads with no student left to start help the running ones (schedule.py); the parent merges the
finished gradebooks one at a time into the course's, so `--jobs N` never has two writers on one database.
Kernels are forked from one warm server per machine and run (machine.py, zygote.py). With `--scheduler` or
`--dask-workers` the students are tasks on Dask workers instead (distributed.py), merged here the same way.

A worker that fails (even by crashing) is the grader's failure, never the student's (failures.py): the
notebooks it left ungraded get one fresh worker, and a notebook still ungraded is reported "not graded" with
its cause, never scored. The batch always goes on.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from course_grader import class_report, gradebook, leftovers, report, reviews, settings
from course_grader.machine import GRADEBOOKS, Machine
from course_grader.autograde import ASSIGNMENT, Job, Result, unusable_id
from course_grader.failures import one_line, root_cause
from course_grader.schedule import Scheduler, claim_order, remember, run_jobs

# Fresh workers a student gets after its workers left notebooks ungraded (grader failures; a worker also retries
# each notebook once with a fresh kernel itself).
WORKER_RETRIES = 1
# nbgrader's documented example of an LMS download name: <anything>_<student>_attempt_<timestamp>_<file>.
ZIP_REGEXP = r".+_(?P<student_id>\w+?)_attempt_(?P<timestamp>[0-9\-]+)_(?P<file_id>.+)"


@dataclass
class Options:
    """What to grade and how (the CLI's flags)."""

    root: Path
    jobs: int = os.cpu_count() or 1
    class_dir: Path | None = None  # <student>/<assignment>/ layout (default: the course's submitted/)
    zip_dir: Path | None = None  # zip_collect layout: archives or extracted files named by ZIP_REGEXP
    zip_regexp: str = ZIP_REGEXP
    students: list[str] = field(default_factory=list)
    notebooks: list[str] = field(default_factory=list)
    db_url: str | None = None
    # The limits (settings.py says what each is). cell_timeout None: the course's nbgrader_config.py (c.Execute.timeout).
    cell_timeout: int | None = None
    notebook_timeout: float = settings.NOTEBOOK_TIMEOUT
    memory_mb: int = settings.MEMORY_MB
    max_output_bytes: int = settings.MAX_OUTPUT_BYTES
    max_cell_output_bytes: int = settings.MAX_CELL_OUTPUT_BYTES
    max_notebook_output_bytes: int = settings.MAX_NOTEBOOK_OUTPUT_BYTES
    max_record_bytes: int = settings.MAX_RECORD_BYTES
    max_submission_bytes: int = settings.MAX_SUBMISSION_BYTES
    worker_memory_mb: int = settings.WORKER_MEMORY_MB
    sandbox: bool = True
    require_isolation: bool = False  # refuse to grade when kernels cannot be isolated (not root, no namespaces)
    feedback: bool = True
    run_experiments: bool = False  # also run the demo and experiment cells left as given (settings.SKIP_TAGS)
    fresh_kernels: bool = False  # exec every kernel afresh instead of forking it from a warm server
    csv: Path | None = None
    progress: bool = True
    scheduler: str = ""  # a Dask scheduler's address (tcp://HOST:PORT): grade on its workers
    dask_workers: int = 0  # or start a local Dask cluster of this many worker processes
    report: bool = True  # write the class report (class_report.py) beside grades.csv

    @property
    def distributed(self) -> bool:
        return bool(self.scheduler or self.dask_workers)


@dataclass
class Outcome:
    """What a run produced."""

    rows: list[report.Row]
    results: dict[str, Result]
    scores: dict[str, dict[str, gradebook.NotebookScore]]
    sandbox: str
    seconds: float
    kernels: str = ""  # forked from the fork server, or fresh processes (and why)
    report: Path | None = None  # the class report (report.html beside grades.csv)


def _zip_class(zip_dir: Path, regexp: str, out: Path) -> Path:
    """Turn a zip_collect download (archives and/or extracted files) into submitted/<student>/<assignment>/."""
    files = out / "extracted"
    files.mkdir(parents=True)
    for item in sorted(zip_dir.rglob("*")):
        if item.suffix == ".zip":
            with zipfile.ZipFile(item) as archive:
                archive.extractall(files / item.stem)
        elif item.is_file():
            shutil.copy(item, files / item.name)
    pattern = re.compile(regexp)
    latest: dict[tuple[str, str], tuple[str, Path]] = {}
    for item in sorted(files.rglob("*.ipynb")):
        match = pattern.fullmatch(item.name)
        if not match:
            continue
        key = (match["student_id"], match["file_id"])
        stamp = match.groupdict().get("timestamp") or ""
        if key not in latest or stamp > latest[key][0]:
            latest[key] = (stamp, item)
    target = out / "submitted"
    for (student, file_id), (_, item) in latest.items():
        folder = target / student / ASSIGNMENT
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(item, folder / file_id)
    return target


def _submissions(options: Options, scratch: Path) -> dict[str, Path]:
    """{student: folder of notebooks}: the --zip-collect archives, the --class folder, or the course's submitted/
    (where `make grade` writes the demo class)."""
    if options.zip_dir:
        base = _zip_class(options.zip_dir, options.zip_regexp, scratch / "zip")
    else:
        base = options.class_dir or options.root / "submitted"
    students = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    if not students:
        raise SystemExit(f"no submissions in {base} (<student>/{ASSIGNMENT}/*.ipynb): `make grade` builds the demo "
                         f"class there (python -m course_mutation.demo), or pass --class DIR")
    folders = {}
    for student_dir in students:
        folder = student_dir / ASSIGNMENT
        folders[student_dir.name] = folder if folder.is_dir() else student_dir
    if options.students:
        unknown = set(options.students) - set(folders)
        if unknown:
            raise SystemExit(f"no submission for {sorted(unknown)} in {base}")
        folders = {s: folders[s] for s in options.students}
    return folders


def _notebooks(options: Options) -> list[str]:
    """Notebook names to grade (`Q4` or `Q4_nn_batchnorm`), all by default."""
    names = sorted(p.stem for p in (options.root / "release" / ASSIGNMENT).glob("*.ipynb"))
    if not options.notebooks:
        return []
    chosen = [n for n in names if any(n == w or n.split("_", 1)[0] == w for w in options.notebooks)]
    if not chosen:
        raise SystemExit(f"no notebook matches {options.notebooks}; the assignment has {names}")
    return chosen


def _install(src: Path, dest: Path) -> None:
    """Copy a worker's output folder over the course's, file by file (other notebooks stay)."""
    if not src.is_dir():
        return
    for item in src.rglob("*"):
        if item.is_file():
            target = dest / item.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(item, target)


class WorkerProcess:
    """One grading worker process (autograde.serve) that grades one job after another: nbgrader, torch and the
    judge are imported once per thread of the grader, not once per student (about 4 s of CPU each time).

    Any failure of the worker becomes a Result with its cause, and the process is replaced for the next job: a
    worker that died, ran past its limit or could not be told the job. `fresh=True` grades in a new process
    (the retry after a grader failure). The process dies with the thread that started it (die_with_parent).
    """

    SERVE = [sys.executable, "-m", "course_grader.autograde", "--serve"]  # + the two pipes' descriptors

    def __init__(self, env: dict[str, str], command: list[str] | None = None) -> None:
        self.env = env
        self.command = command or self.SERVE
        self.proc: subprocess.Popen | None = None
        self.jobs = self.replies = -1

    def _start(self, log: Path) -> None:
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
    """A WorkerProcess for each thread that grades (the local pipeline's threads, a Dask worker's task threads)."""

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


def _merge(work: Path, db_url: str, result: Result) -> None:
    """Merge a worker's gradebook; a failure (twice) turns its notebooks into grader failures (retried)."""
    for attempt in range(2):
        try:
            gradebook.merge(work / "gradebook.db", db_url, result.student, result.graded)
            return
        except Exception as exc:  # noqa: BLE001 - one student's bad gradebook must not stop the batch
            cause = one_line(f"the gradebook merge failed: {type(exc).__name__}: {exc}")
            if attempt == 0:
                time.sleep(1.0)
    result.not_graded.update(dict.fromkeys(result.graded, cause))
    result.graded, result.ok, result.error = [], False, cause


def run(options: Options) -> Outcome:
    """Grade the class; merge into the gradebook; write grades.csv; return the rows."""
    started = time.monotonic()
    leftovers.sweep()  # what a killed run or Dask worker left (only folders whose owner is gone: leftovers.py)
    root = options.root.resolve()
    if options.cell_timeout is None:  # the course's nbgrader_config.py says it (settings.cell_timeout)
        options = replace(options, cell_timeout=settings.cell_timeout(root))
    db_url = gradebook.driver_url(options.db_url or gradebook.default_db_url(root))
    release = root / "release" / ASSIGNMENT
    if not any(release.glob("*.ipynb")):
        raise SystemExit(f"{release} has no notebooks: build the release first (make release)")
    owned = leftovers.Scratch()  # removed below; if this process is killed, by the next run's sweep
    scratch = owned.path
    local = None
    try:
        folders = _submissions(options, scratch)
        notebooks = _notebooks(options)
        names = notebooks or sorted(p.stem for p in release.glob("*.ipynb"))
        if not options.distributed:
            local = Machine.prepare(scratch, root, one_thread=options.jobs > 1, isolate=options.sandbox,
                                    fork_server=not options.fresh_kernels)
            _check_isolation(local.mode, options.require_isolation)
        template = scratch / "template.db"
        gradebook.template(root, template, GRADEBOOKS)
        gradebook.ensure_recorded(root, db_url, template)
        history = GRADEBOOKS / "seconds.json"
        order = claim_order(names, history)
        parts: dict[str, list[Result]] = {}
        # A student id nbgrader itself cannot take is not graded, said at once, and no worker is started for it.
        refused = {s: why for s in folders if (why := unusable_id(s, db_url))}
        for student, why in refused.items():
            parts[student] = [Result(student, ok=False, error=why, not_graded={n: why for n in order})]
        to_grade = {s: folder for s, folder in folders.items() if s not in refused}

        def finish(result: Result, work: Path) -> None:
            """Merge one worker's gradebook and install its autograded notebooks and feedback (work: its course)."""
            parts.setdefault(result.student, []).append(result)
            if result.graded:
                _merge(work, db_url, result)
            _install(work / "autograded" / result.student, root / "autograded" / result.student)
            _install(work / "feedback" / result.student, root / "feedback" / result.student)

        if local:
            finished = _grade_here(options, local, to_grade, order, release, root, template, scratch, finish, parts)
        else:
            from course_grader.distributed import grade_on_dask

            finished = grade_on_dask(options, to_grade, order, release, root, template, scratch, finish, parts)
        for _ in _progress(finished, len(to_grade), options.progress):
            pass
        results = {student: _combine(student, parts.get(student, []), order) for student in folders}
        remember(history, results)
        if local:
            mode, kernels = local.mode, local.kernels()
        else:
            modes = sorted({r.machine.get("mode", "?") for p in parts.values() for r in p if r.machine})
            mode = "; ".join(modes) or "no worker answered"
            kernels = f"on Dask workers ({', '.join(sorted({r.machine.get('kernels', '?') for p in parts.values() for r in p if r.machine}))})"
        students = list(folders)
        # Before the scores are read: a confirmation made on other findings than this run's is undone there.
        held = reviews.Reviews.load(root)
        held.record(db_url, results)
        scores = gradebook.scores(db_url, students)
        scores = {s: {n: nb for n, nb in per.items() if n in names and n not in results[s].not_graded}
                  for s, per in scores.items()}
        rows = report.build_rows(students, scores, {s: r.notes for s, r in results.items()},
                                 {s: r.problems for s, r in results.items()},
                                 {s: r.not_graded for s, r in results.items()})
        held.keep_rows(rows)
        held.save()
        rows = [held.apply(row) for row in rows]
        grades_csv = options.csv or root / "grades.csv"
        report.write_csv(rows, grades_csv)
        outcome = Outcome(rows, results, scores, mode, time.monotonic() - started, kernels)
        if options.report:
            outcome.report = class_report.write(root, db_url, grades_csv)[0]
        return outcome
    finally:
        if local:
            local.stop()
        if os.environ.get("COURSE_GRADE_KEEP_SCRATCH"):  # for debugging the grader itself
            (scratch / leftovers.LOCK).unlink(missing_ok=True)  # no lock file: never swept (leftovers.py)
            print(f"scratch kept: {scratch}", file=sys.stderr)
        else:
            owned.remove()


def _check_isolation(mode: str, required: bool) -> None:
    """Refuse (--require-isolation) or warn loudly when kernels cannot be isolated."""
    if mode == "isolated":
        return
    if required:
        raise SystemExit(f"refusing to grade with --require-isolation: kernels would be {mode}")
    print(f"WARNING: grading kernels are {mode}. Student code can then read whatever the grader can "
          f"(source/, the gradebook, other students' work) and reach the network. Grade as root (or use "
          f"--require-isolation to refuse).", file=sys.stderr, flush=True)


def _grade_here(options: Options, machine: Machine, folders: dict[str, Path], order: list[str], release: Path,
                root: Path, template: Path, scratch: Path, finish, parts: dict[str, list[Result]]):
    """Grade on this machine with `--jobs` worker processes; yield each student when they are finished."""

    def make_job(student: str, share: int, notebooks: list[str] | None = None) -> Job:
        """Job number `share` of a student: one of the workers sharing its notebooks, or (with `notebooks`)
        a fresh worker grading those alone after a grader failure."""
        work = scratch / "students" / f"{scratch_name(student)}.{share}"
        work.mkdir(parents=True)
        return job_for(options, student, folders[student], release, root / "source", template, work,
                       notebooks or order, machine, claims="" if notebooks else str(scratch / "claims" / student))

    limit = worker_limit(options, len(order))
    scheduler = Scheduler(list(folders), make_job, scratch / "claims", len(order))
    retries: dict[str, int] = {}
    workers = WorkerProcesses(machine.env)

    def grade_one(job: Job) -> Result:  # a retry (no claims: its notebooks alone) gets a new worker process
        return workers.here().grade(job, limit, fresh=not job.claims)

    try:
        for job, result in run_jobs(scheduler, options.jobs, grade_one):
            finish(result, Path(job.scratch) / "course")
            if not scheduler.done(job):
                continue
            missing = _missing(order, parts[job.student])
            if missing and retries.get(job.student, 0) < WORKER_RETRIES:
                retries[job.student] = retries.get(job.student, 0) + 1
                scheduler.retry(job.student, missing)  # a fresh worker for what the grader failed to grade
                continue
            scheduler.close(job.student)
            yield job.student
    finally:
        workers.stop()


def scratch_name(student: str) -> str:
    """A student's scratch folder name: a fixed-length digest of the id, never the id itself. An id is whatever the
    LMS or the class folder says (an e-mail address, 200 characters, unicode, spaces, shell characters): as a folder
    name it would push a kernel's socket path past the 107 bytes of a unix socket address (the kernel could not
    start) and, with a suffix, a name past 255 bytes."""
    import hashlib

    return hashlib.sha256(student.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def job_for(options: Options, student: str, submission: Path, release: Path, source: Path, template: Path,
            work: Path, notebooks: list[str], machine: Machine, claims: str = "") -> Job:
    """One worker's job on `machine`."""
    return Job(student=student, submission=str(submission.resolve()), release=str(release), source=str(source),
               template_db=str(template), scratch=str(work), notebooks=notebooks, cell_timeout=options.cell_timeout,
               notebook_timeout=options.notebook_timeout, memory_mb=options.memory_mb, isolate=machine.isolate,
               max_output_bytes=options.max_output_bytes, max_cell_output_bytes=options.max_cell_output_bytes,
               max_notebook_output_bytes=options.max_notebook_output_bytes, max_record_bytes=options.max_record_bytes,
               max_submission_bytes=options.max_submission_bytes, worker_memory_mb=options.worker_memory_mb,
               expose=machine.expose, feedback=options.feedback, run_experiments=options.run_experiments,
               zygote=machine.zygote, claims=claims)


def worker_limit(options: Options, notebooks: int) -> float:
    """Seconds a worker may run: every notebook to its limit, and five minutes more."""
    return options.notebook_timeout * notebooks + 300


def _missing(order: list[str], parts: list[Result]) -> list[str]:
    """The notebooks of `order` that none of a student's workers got into the gradebook."""
    graded = {name for part in parts for name in part.graded}
    return [name for name in order if name not in graded]


def _combine(student: str, parts: list[Result], order: list[str]) -> Result:
    """One student's result from every worker that graded some of the student's notebooks (a retry's too).

    A notebook no worker graded is not graded, with the last cause a worker gave for it (or for itself).
    """
    out = Result(student)
    for part in parts:
        out.notes += part.notes
        out.problems.update(part.problems)
        out.seconds.update({k: v for k, v in part.seconds.items() if k != "total"})
        out.graded += part.graded
        out.retried += part.retried
        out.review.update(part.review)  # each notebook is graded by one worker (a retry's part comes later)
        out.machine = part.machine or out.machine
    causes: dict[str, str] = {}
    for part in parts:
        causes.update(dict.fromkeys(_missing(order, [part]), part.error) if part.error and not part.graded else {})
        causes.update(part.not_graded)
    out.not_graded = {name: causes.get(name) or "no worker graded it" for name in _missing(order, parts)}
    out.ok = not out.not_graded
    out.error = "; ".join(dict.fromkeys(out.not_graded.values()))
    out.seconds["total"] = max(p.seconds.get("total", 0.0) for p in parts) if parts else 0.0
    out.graded = sorted(set(out.graded))
    out.notes = sorted(dict.fromkeys(out.notes))
    return out


def _progress(items, total: int, show: bool):
    """A progress bar over students in the terminal (fastprogress), or the plain iterator."""
    if not show:
        return items
    from fastprogress.fastprogress import progress_bar

    return progress_bar(items, total=total)
