"""The grading pipeline: collect submissions, grade students in parallel workers, merge, report.

Each student is graded by a worker process (autograde.py) in a private scratch course with a private SQLite
gradebook; threads with no student left to start help the running ones (schedule.py); the parent merges the
finished gradebooks one at a time into the course's, so `--jobs N` never has two writers on one database.
Kernels are forked from one warm server per run (zygote.py). A worker that fails (even by crashing) costs
that student a reason in the report, never the batch.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from course_grader import gradebook, report, sandbox, zygote
from course_grader.autograde import ASSIGNMENT, Job, Result
from course_grader.schedule import Scheduler, claim_order, remember, run_jobs

# What a grading kernel imports of the course: the student library and the recorder (never the judge).
KERNEL_PACKAGES = ("course_lib", "course_recorder")
# nbgrader's documented example of an LMS download name: <anything>_<student>_attempt_<timestamp>_<file>.
ZIP_REGEXP = r".+_(?P<student_id>\w+?)_attempt_(?P<timestamp>[0-9\-]+)_(?P<file_id>.+)"


@dataclass
class Options:
    """What to grade and how (the CLI's flags)."""

    root: Path
    jobs: int = os.cpu_count() or 1
    class_dir: Path | None = None  # submitted/<student>/<assignment>/ layout (default: the demo class)
    zip_dir: Path | None = None  # zip_collect layout: archives or extracted files named by ZIP_REGEXP
    zip_regexp: str = ZIP_REGEXP
    students: list[str] = field(default_factory=list)
    notebooks: list[str] = field(default_factory=list)
    db_url: str | None = None
    cell_timeout: int = 90
    notebook_timeout: float = 600.0
    memory_mb: int = 4096
    sandbox: bool = True
    require_isolation: bool = False  # refuse to grade when kernels cannot be isolated (not root, no namespaces)
    feedback: bool = True
    skip_experiments: bool = False
    fresh_kernels: bool = False  # exec every kernel afresh instead of forking it from a warm server
    csv: Path | None = None
    progress: bool = True


@dataclass
class Outcome:
    """What a run produced."""

    rows: list[report.Row]
    results: dict[str, Result]
    scores: dict[str, dict[str, gradebook.NotebookScore]]
    sandbox: str
    seconds: float
    plans: list = field(default_factory=list)
    kernels: str = ""  # forked from the fork server, or fresh processes (and why)


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


def _submissions(options: Options, scratch: Path) -> tuple[dict[str, Path], list]:
    """{student: folder of notebooks}, and the demo plans when grading the demo class."""
    plans = []
    if options.zip_dir:
        base = _zip_class(options.zip_dir, options.zip_regexp, scratch / "zip")
    elif options.class_dir:
        base = options.class_dir
    else:
        from course_grader import demo

        base = options.root / "submitted"
        plans = demo.build(options.root, base)
    folders = {}
    for student_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        folder = student_dir / ASSIGNMENT
        folders[student_dir.name] = folder if folder.is_dir() else student_dir
    if plans:  # the demo class in its own order; other folders in submitted/ are ignored
        folders = {p.student: folders[p.student] for p in plans}
    if options.students:
        unknown = set(options.students) - set(folders)
        if unknown:
            raise SystemExit(f"no submission for {sorted(unknown)} in {base}")
        folders = {s: folders[s] for s in options.students}
    return folders, plans


def _notebooks(options: Options) -> list[str]:
    """Notebook names to grade (`Q4` or `Q4_nn_batchnorm`), all by default."""
    names = sorted(p.stem for p in (options.root / "release" / ASSIGNMENT).glob("*.ipynb"))
    if not options.notebooks:
        return []
    chosen = [n for n in names if any(n == w or n.split("_", 1)[0] == w for w in options.notebooks)]
    if not chosen:
        raise SystemExit(f"no notebook matches {options.notebooks}; the assignment has {names}")
    return chosen


def _worker_env(options: Options, data_dir: Path) -> dict[str, str]:
    """The environment of workers and (through them) of kernels."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(options.root), env.get("PYTHONPATH", "")) if p)
    # NBGRADER_EXECUTION as nbgrader sets it for autograde: the visible checks (course_lib.checks) stand aside
    env.update(MPLBACKEND="Agg", COURSE_GRADING_MODE="1", COURSE_DATA_DIR=str(data_dir), PYTHONHASHSEED="0",
               NBGRADER_EXECUTION="autograde")
    if options.jobs > 1:  # one thread per kernel: N kernels share N cores without oversubscription
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return env


def _prepare_data(env: dict[str, str]) -> None:
    """Build the shared MNIST cache once, before the kernels read it (read-only) in parallel.

    Skipped when the cache files are there (a kernel that finds them unusable rebuilds them atomically).
    """
    if all((Path(env["COURSE_DATA_DIR"]) / f"{name}.npy").is_file()
           for name in ("x_train", "y_train", "x_valid", "y_valid")):
        return
    code = "from course_lib.data import get_data; get_data()"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"could not prepare the MNIST data cache:\n{done.stderr[-2000:]}")


def _install(src: Path, dest: Path) -> None:
    """Copy a worker's output folder over the course's, file by file (other notebooks stay)."""
    if not src.is_dir():
        return
    for item in src.rglob("*"):
        if item.is_file():
            target = dest / item.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(item, target)


def _grade_one(job: Job, env: dict[str, str], limit: float) -> Result:
    """Run one worker process; any failure becomes a Result with a reason."""
    scratch = Path(job.scratch)
    (scratch / "job.json").write_text(json.dumps(asdict(job)))
    log = scratch / "worker.log"
    try:
        with open(log, "w") as out:
            subprocess.run([sys.executable, "-m", "course_grader.autograde", str(scratch / "job.json")],
                           env=env, stdout=out, stderr=subprocess.STDOUT, timeout=limit, cwd=scratch)
    except subprocess.TimeoutExpired:
        return Result(job.student, ok=False, error=f"the grading worker ran past {limit:.0f} s")
    path = scratch / "result.json"
    if not path.exists():
        return Result(job.student, ok=False, error="the grading worker died: " + log.read_text()[-500:])
    return Result(**json.loads(path.read_text()))


def run(options: Options) -> Outcome:
    """Grade the class; merge into the gradebook; write grades.csv; return the rows."""
    started = time.monotonic()
    root = options.root.resolve()
    db_url = gradebook.driver_url(options.db_url or gradebook.default_db_url(root))
    release = root / "release" / ASSIGNMENT
    if not any(release.glob("*.ipynb")):
        raise SystemExit(f"{release} has no notebooks: build the release first (make release)")
    scratch = Path(tempfile.mkdtemp(prefix="course-grade-"))
    os.chmod(scratch, 0o700)
    background = ThreadPoolExecutor(1)
    starting = None
    try:
        folders, plans = _submissions(options, scratch)
        notebooks = _notebooks(options)
        names = notebooks or sorted(p.stem for p in release.glob("*.ipynb"))
        # The grader's own copy of the MNIST cache, world-readable: kernels (users of their own) read it.
        data_dir = Path.home().resolve() / ".cache" / "normalization-course-grading"
        env = _worker_env(options, data_dir)
        # The judge's reference results (training runs), computed once and kept with the private gradebooks.
        env["COURSE_JUDGE_CACHE"] = str(data_dir.with_name(data_dir.name + "-judge"))
        mode = sandbox.probe() if options.sandbox else "NOT ISOLATED (--no-sandbox: kernels run with limits only)"
        isolate = mode == "isolated"
        if not isolate:
            if options.require_isolation:
                raise SystemExit(f"refusing to grade with --require-isolation: kernels would be {mode}")
            print(f"WARNING: grading kernels are {mode}. Student code can then read whatever the grader can "
                  f"(source/, the gradebook, other students' work) and reach the network. Grade as root (or use "
                  f"--require-isolation to refuse).", file=sys.stderr, flush=True)
        template = scratch / "template.db"
        gradebooks = data_dir.with_name(data_dir.name + "-gradebooks")  # private: gradebooks hold the hidden tests
        # The fork server starts (about 3 s) while the workers start; their first kernels wait for it.
        socket_path = scratch / "zygote.sock"
        starting = None if options.fresh_kernels else background.submit(
            zygote.start, socket_path, env, scratch / "zygote.log", data_dir.with_name(data_dir.name + "-matplotlib"))
        with ThreadPoolExecutor(2) as pool:  # independent: the assignment, the data cache
            data = pool.submit(_prepare_data, env)
            gradebook.template(root, template, gradebooks)
            course_db = pool.submit(gradebook.ensure_recorded, root, db_url, template)
            data.result()
            course_db.result()
        # An isolated kernel sees an allowlist only (sandbox.py): the Python installation, the environment, the
        # packages a kernel imports (course_lib, the recorder) and the data, read-only. Not the course root (source/,
        # the gradebook, the judge), not the class, not the grader's scratch. Found, not imported (course_lib
        # imports torch).
        packages = {Path(importlib.util.find_spec(m).origin).resolve().parent for m in KERNEL_PACKAGES}
        expose = [Path(os.path.realpath(p)) for p in (sys.base_prefix, sys.prefix)] + sorted(packages) + [data_dir]
        history = gradebooks / "seconds.json"
        order = claim_order(names, history)

        def make_job(student: str, share: int) -> Job:
            work = scratch / "students" / f"{student}.{share}"
            work.mkdir(parents=True)
            return Job(student=student, submission=str(folders[student].resolve()), release=str(release),
                       source=str(root / "source"), template_db=str(template), scratch=str(work), notebooks=order,
                       cell_timeout=options.cell_timeout, notebook_timeout=options.notebook_timeout,
                       memory_mb=options.memory_mb, isolate=isolate, expose=[str(p) for p in expose],
                       feedback=options.feedback,
                       skip_experiments=options.skip_experiments, zygote=str(socket_path) if starting else "",
                       claims=str(scratch / "claims" / student))

        limit = options.notebook_timeout * len(names) + 300
        scheduler = Scheduler(list(folders), make_job, scratch / "claims", len(names))
        parts: dict[str, list[Result]] = {}

        def finished_students():
            for job, result in run_jobs(scheduler, options.jobs, lambda job: _grade_one(job, env, limit)):
                parts.setdefault(job.student, []).append(result)
                work = Path(job.scratch) / "course"
                if result.graded:
                    try:
                        gradebook.merge(work / "gradebook.db", db_url, job.student, result.graded)
                    except Exception as exc:  # noqa: BLE001 - one student's bad gradebook must not stop the batch
                        result.ok, result.error = False, f"merge failed: {type(exc).__name__}: {exc}"
                _install(work / "autograded" / job.student, root / "autograded" / job.student)
                _install(work / "feedback" / job.student, root / "feedback" / job.student)
                if scheduler.done(job):
                    yield job.student

        for _ in _progress(finished_students(), len(folders), options.progress):
            pass
        results = {student: _combine(student, parts.get(student, [])) for student in folders}
        remember(history, results)
        server, why = starting.result() if starting else (None, "--fresh-kernels")
        kernels = "forked from a warm fork server" if server else f"fresh processes ({why})"
        students = list(folders)
        scores = gradebook.scores(db_url, students)
        scores = {s: {n: nb for n, nb in per.items() if n in names} for s, per in scores.items()}
        rows = report.build_rows(students, scores, {s: r.notes for s, r in results.items()},
                                 {s: r.problems for s, r in results.items()},
                                 {s: r.error for s, r in results.items() if not r.ok})
        report.write_csv(rows, options.csv or root / "grades.csv")
        return Outcome(rows, results, scores, mode, time.monotonic() - started, plans, kernels)
    finally:
        if starting:
            zygote.stop(starting.result()[0])
        background.shutdown()
        sandbox.kill_kernels_under(scratch)
        sandbox.sweep_cgroups()
        if os.environ.get("COURSE_GRADE_KEEP_SCRATCH"):  # for debugging the grader itself
            print(f"scratch kept: {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def _combine(student: str, parts: list[Result]) -> Result:
    """One student's result from the workers that shared the student's notebooks."""
    if len(parts) == 1:
        return parts[0]
    out = Result(student, ok=all(p.ok for p in parts))
    out.error = "; ".join(p.error for p in parts if p.error)
    for part in parts:
        out.notes += part.notes
        out.problems.update(part.problems)
        out.seconds.update({k: v for k, v in part.seconds.items() if k != "total"})
        out.graded += part.graded
    out.seconds["total"] = max(p.seconds.get("total", 0.0) for p in parts) if parts else 0.0
    out.graded.sort()
    out.notes.sort()
    return out


def _progress(items, total: int, show: bool):
    """A progress bar over students in the terminal (fastprogress), or the plain iterator."""
    if not show:
        return items
    from fastprogress.fastprogress import progress_bar

    return progress_bar(items, total=total)
