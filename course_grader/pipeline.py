"""The grading pipeline: collect submissions, grade students in parallel workers, merge, report.

Every notebook of every student is a task (workers.py), each student's slowest first (schedule.py); a worker
process grades one notebook after another (autograde.py) in a private scratch course with a private SQLite
gradebook, and the parent merges the finished gradebooks one at a time into the course's, so `--jobs N` never has
two writers on one database. Kernels are forked from one warm server per machine (machine.py, zygote.py), kept
between runs by the warm grading service with `--warm` (service.py). With `--scheduler` or `--dask-workers` the
tasks go to Dask workers instead (distributed.py), merged here the same way.

A worker that fails (even by crashing) is the grader's failure, never the student's (failures.py): the
notebooks it left ungraded get one fresh worker, and a notebook still ungraded is reported "not graded" with
its cause, never scored. The batch always goes on.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from course_grader import class_report, gradebook, leftovers, report, reviews, settings
from course_grader.machine import GRADEBOOKS, Machine
from course_grader.autograde import ASSIGNMENT, Job, Result, unusable_id
from course_grader.failures import one_line
from course_grader.schedule import slowest_first, remember
from course_grader.workers import Done, Graders, LocalWorkers, Task, job_for, task_folder, worker_limit

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
    warm: bool = False  # grade through this machine's warm grading service (service.py), started if none runs
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
    phases: dict[str, float] = field(default_factory=dict)  # wall-clock seconds of the run's phases (the bench's)


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
    backend = None
    try:
        folders = _submissions(options, scratch)
        names = _notebooks(options) or sorted(p.stem for p in release.glob("*.ipynb"))
        history = GRADEBOOKS / "seconds.json"
        order = slowest_first(names, history)
        # A student id nbgrader itself cannot take is not graded, said at once, and no worker is started for it.
        refused = {s: why for s in folders if (why := unusable_id(s, db_url))}
        parts = {s: [Result(s, ok=False, error=why, not_graded={n: why for n in order})] for s, why in refused.items()}
        to_grade = {s: folder for s, folder in folders.items() if s not in refused}
        template = scratch / "template.db"
        if not options.distributed:  # its machine gets ready (fork server, data cache) while the template is made
            backend = _local_workers(options, to_grade, release, root, template, scratch)
        gradebook.template(root, template, GRADEBOOKS)
        gradebook.ensure_recorded(root, db_url, template)
        if options.distributed:
            from course_grader.distributed import DaskWorkers

            backend = DaskWorkers(options, to_grade, release, root / "source", template, scratch)
        phases = {"start-up": time.monotonic() - started}
        graded = _grade(backend, to_grade, order, db_url, root)
        for student, student_parts in _progress(graded, len(to_grade), options.progress):
            parts[student] = student_parts
        phases["grading"] = time.monotonic() - started - sum(phases.values())
        results = {student: _combine(student, parts.get(student, []), order) for student in folders}
        remember(history, results)
        mode, kernels = backend.describe(results)
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
        phases["gradebook and grades.csv"] = time.monotonic() - started - sum(phases.values())
        outcome = Outcome(rows, results, scores, mode, time.monotonic() - started, kernels, phases=phases)
        if options.report:
            outcome.report = class_report.write(root, db_url, grades_csv)[0]
            phases["class report"] = time.monotonic() - started - sum(phases.values())
        outcome.seconds = time.monotonic() - started
        return outcome
    finally:
        if backend:
            backend.close()
        if os.environ.get("COURSE_GRADE_KEEP_SCRATCH"):  # for debugging the grader itself
            (scratch / leftovers.LOCK).unlink(missing_ok=True)  # no lock file: never swept (leftovers.py)
            print(f"scratch kept: {scratch}", file=sys.stderr)
        else:
            owned.remove()


def _grade(backend, folders: dict[str, Path], order: list[str], db_url: str, root: Path):
    """Hand the backend every notebook of every student, merge each as it ends, and yield (student, its results)
    once all of a student's notebooks have ended: the one place where what workers return meets the gradebook.

    Ranks: a retry first, then the class in order, each student's notebooks slowest first (`order`), so that the
    workers finish students one after another and the last student's notebooks spread over every worker. A notebook a
    task left ungraded (a grader failure left after the worker's own fresh-kernel retry, or a worker that died) is
    tried once more, in a fresh worker process."""
    index = {student: i for i, student in enumerate(folders)}
    left = dict.fromkeys(folders, len(order))
    parts: dict[str, list[Result]] = {student: [] for student in folders}
    for student in folders:
        for rank, notebook in enumerate(order):
            backend.submit(Task(student, notebook), (1, index[student], rank))
    for done in backend.completed():
        task, result = done.task, done.result
        parts[task.student].append(result)
        if result.graded:
            _merge(done.course, db_url, result)
        _install(done.course / "autograded" / task.student, root / "autograded" / task.student)
        _install(done.course / "feedback" / task.student, root / "feedback" / task.student)
        if not os.environ.get("COURSE_GRADE_KEEP_SCRATCH"):  # kept for debugging the grader itself (run's end)
            shutil.rmtree(done.folder, ignore_errors=True)
        if task.notebook not in result.graded and task.attempt < WORKER_RETRIES:
            backend.submit(replace(task, attempt=task.attempt + 1), (0, index[task.student], order.index(task.notebook)))
            continue
        left[task.student] -= 1
        if not left[task.student]:
            yield task.student, parts[task.student]


def _local_workers(options: Options, folders: dict[str, Path], release: Path, root: Path, template: Path,
                   scratch: Path) -> LocalWorkers:
    """`--jobs` threads on this machine, each with its grading worker process, kernels forked from one fork server:
    this run's own (Graders), or the warm service's (`--warm`: service.py)."""
    setup = dict(one_thread=options.jobs > 1, isolate=options.sandbox, fork_server=not options.fresh_kernels)

    def own() -> Graders:
        return Graders(Machine.prepare(scratch, root, **setup))

    if options.warm:
        from course_grader import service

        graders = service.graders(root, setup, own, say=lambda why: print(why, file=sys.stderr, flush=True))
    else:
        graders = own()

    def grade(task: Task) -> Done:
        work = task_folder(scratch, task)
        work.mkdir(parents=True)

        def build(machine) -> Job:
            return job_for(options, task, folders[task.student], release, root / "source", template, work, machine)

        return Done(task, graders.grade(build, worker_limit(options), fresh=task.attempt > 0), work)

    try:
        _check_isolation(graders.mode, options.require_isolation)
    except BaseException:
        graders.stop()
        raise
    return LocalWorkers(grade, options.jobs, graders.stop, lambda results: graders.describe())


def _check_isolation(mode: str, required: bool) -> None:
    """Refuse (--require-isolation) or warn loudly when kernels cannot be isolated."""
    if mode == "isolated":
        return
    if required:
        raise SystemExit(f"refusing to grade with --require-isolation: kernels would be {mode}")
    print(f"WARNING: grading kernels are {mode}. Student code can then read whatever the grader can "
          f"(source/, the gradebook, other students' work) and reach the network. Grade as root (or use "
          f"--require-isolation to refuse).", file=sys.stderr, flush=True)


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
        if part.machine:  # where its notebooks ran (Dask): every worker that graded one, named once
            workers = [*out.machine.get("worker", "").split(", "), part.machine.get("worker", "")]
            out.machine = {**part.machine, "worker": ", ".join(sorted(set(filter(None, workers))))}
        for phase, seconds in part.phases.items():
            out.phases[phase] = round(out.phases.get(phase, 0.0) + seconds, 3)
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
