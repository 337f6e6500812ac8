"""Grade one student's notebooks in a private scratch course with its own SQLite gradebook (a worker process).

Run as `python -m course_grader.autograde JOB.json`, or as a server that grades one job after another
(`--serve`, what the pipeline runs: see serve). The job names the student's submission folder,
a template gradebook (the assignment already recorded), the limits and the fork server's socket. Notebook by
notebook (the pipeline sends one per job: workers.Task), the worker repairs it (repair.py) and runs nbgrader's autograde with RobustExecute and the sandboxed kernel (kernel.py);
then it generates the feedback HTML and writes `result.json` next to its gradebook. The parent merges that
gradebook into the course's: no two processes ever write the same SQLite file.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from course_grader import settings
from course_grader.failures import one_line, root_cause
from course_grader.settings import ASSIGNMENT


@dataclass
class Job:
    """Everything one worker needs; written as JSON by the parent."""

    student: str
    submission: str  # folder with the student's notebooks (and maybe timestamp.txt)
    release: str  # the release assignment folder, to compare test cells against
    source: str  # the course's source/ folder (nbgrader copies non-notebook files from it)
    template_db: str
    scratch: str
    notebooks: list[str] = field(default_factory=list)  # notebook names; empty = all
    cell_timeout: int = settings.CELL_TIMEOUT  # the limits: settings.py says what each is
    notebook_timeout: float = settings.NOTEBOOK_TIMEOUT
    memory_mb: int = settings.MEMORY_MB
    max_output_bytes: int = settings.MAX_OUTPUT_BYTES  # the output caps (kernel.OutputBudget)
    max_cell_output_bytes: int = settings.MAX_CELL_OUTPUT_BYTES
    max_notebook_output_bytes: int = settings.MAX_NOTEBOOK_OUTPUT_BYTES
    max_record_bytes: int = settings.MAX_RECORD_BYTES
    max_submission_bytes: int = settings.MAX_SUBMISSION_BYTES  # a notebook file larger is not read (repair.py)
    worker_memory_mb: int = settings.WORKER_MEMORY_MB  # this worker's own memory limit (limit_memory); 0: none
    isolate: bool = False
    expose: list[str] = field(default_factory=list)  # what an isolated kernel may read (sandbox.py)
    feedback: bool = True
    run_experiments: bool = False  # run the release's demo and experiment cells too (settings.SKIP_TAGS)
    zygote: str = ""  # the fork server's socket (zygote.py); empty: fresh kernel processes
    sockets: str = ""  # where isolated kernels' socket folders are made (machine.Machine.sockets); empty: scratch's


@dataclass
class Result:
    """What the worker reports back (result.json)."""

    student: str
    ok: bool = True
    error: str = ""
    notes: list[str] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)  # notebook -> why it stopped early
    seconds: dict[str, float] = field(default_factory=dict)
    graded: list[str] = field(default_factory=list)  # notebooks whose grades (or zeros) are in its gradebook
    not_graded: dict[str, str] = field(default_factory=dict)  # notebook -> the grader failure that stopped it
    retried: list[str] = field(default_factory=list)  # "notebook: cause" of each grader failure that was retried
    machine: dict[str, str] = field(default_factory=dict)  # where it ran (Dask): worker, sandbox mode, kernels
    # notebook -> what the audit is unsure of (quoted, scrubbed): held for the instructor's review (reviews.py)
    review: dict[str, list[str]] = field(default_factory=dict)
    # seconds spent per phase, over every notebook (EXECUTED + JUDGED + the rest: see _phases); the bench's budget
    phases: dict[str, float] = field(default_factory=dict)


# The phases the executor (kernel.RobustExecute) and the judge (judging.JudgeVerdicts) time themselves.
EXECUTED = ("kernel start", "cells", "kernel stop")
JUDGED = ("judge",)


def _phase(result: Result, name: str, since: float) -> None:
    result.phases[name] = result.phases.get(name, 0.0) + time.monotonic() - since


def _config(job: Job, course: Path, report: Path, fresh_kernel: bool = False):
    """The nbgrader configuration of one worker (nothing is read from nbgrader_config.py); `fresh_kernel`:
    exec the kernel afresh even when there is a fork server (a retry after a grader failure)."""
    from traitlets.config import Config

    c = Config()
    c.CourseDirectory.root = str(course)
    c.CourseDirectory.course_id = ASSIGNMENT
    c.CourseDirectory.source_directory = job.source
    c.CourseDirectory.db_url = f"sqlite:///{course / 'gradebook.db'}"
    from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
    from nbgrader.preprocessors import AssignLatePenalties, CheckCellMetadata, GetGrades, LimitOutput, SaveAutoGrades

    from course_grader.judging import JudgeVerdicts, StudentCopy
    from course_grader.kernel import RobustExecute
    from course_grader.mathml import MathToMathML
    from course_grader.sanitise import SanitiseStudentContent

    # The judge decides every test cell (its verdict replaces the cell's outputs) before nbgrader scores it.
    # Student content is made inert for formgrader's page last, once scored: it changes what is shown, never a score.
    c.Autograde.autograde_preprocessors = [RobustExecute, JudgeVerdicts, ClearMetadataPreprocessor, LimitOutput,
                                           SaveAutoGrades, AssignLatePenalties, CheckCellMetadata,
                                           SanitiseStudentContent]
    c.JudgeVerdicts.release_dir = job.release
    c.JudgeVerdicts.report_file = str(report)
    # Feedback is the student's copy: visible tests and verdicts, no grading-run outputs (judging.py), and its
    # markdown made inert for the student's browser (sanitise.py).
    c.GenerateFeedback.preprocessors = [StudentCopy, SanitiseStudentContent, MathToMathML, GetGrades,
                                        CSSHTMLHeaderPreprocessor]
    c.StudentCopy.release_dir = job.release
    c.RobustExecute.timeout = job.cell_timeout
    c.RobustExecute.notebook_timeout = job.notebook_timeout
    c.RobustExecute.report_file = str(report)
    c.RobustExecute.interrupt_on_timeout = True
    c.RobustExecute.max_output_bytes = job.max_output_bytes
    c.RobustExecute.max_cell_output_bytes = job.max_cell_output_bytes
    c.RobustExecute.max_notebook_output_bytes = job.max_notebook_output_bytes
    c.RobustExecute.max_record_bytes = job.max_record_bytes
    c.RobustExecute.kernel_log = str(Path(job.scratch) / "kernel.log")
    # The instructor's demo and experiment cells: tests never depend on them (docs/AUTHORING.md).
    c.RobustExecute.skip_tags = [] if job.run_experiments else list(settings.SKIP_TAGS)
    c.RobustExecute.release_dir = job.release
    c.RobustExecute.submitted_dir = str(course / "submitted" / job.student / ASSIGNMENT)
    c.SandboxKernelManager.memory_mb = job.memory_mb
    c.SandboxKernelManager.isolate = job.isolate
    c.SandboxKernelManager.expose = job.expose
    c.SandboxKernelManager.socket_root = job.sockets or str(Path(job.scratch) / "sockets")
    c.SandboxKernelManager.zygote = "" if fresh_kernel else job.zygote
    c.OverwriteCells.add_missing_cells = True
    c.HTMLExporter.template_name = "feedback"
    c.GenerateFeedback.exporter_class = feedback_exporter()
    return c


LANGUAGE = "en"  # the language the course is written in (the feedback page's lang attribute)
NO_MATHJAX = "{%- macro mathjax(url='') -%}{%- endmacro -%}"
# Colours a reader can read (WCAG AA: 4.5:1 for text; tests/test_feedback_browser.py runs axe-core on a page):
# links underlined and dark blue (7.9:1 on the score panel's #f5f5f5, where Bootstrap's #337ab7 gives 4.17:1; white
# on a blue test-cell heading, 4.5:1, where nbgrader's #bbb gives 2.4:1); code on white, where Pygments' comment,
# keyword and string colours give 4.4-4.5:1 on #f5f5f5 and 4.8-4.9:1 on white. Long lines of code and tracebacks
# wrap: a region that scrolls sideways cannot be reached from the keyboard.
ACCESSIBLE_CSS = ("<style>a, a:visited, div.nbgrader_cell .panel-heading a { color: #1f4e79; "
                  "text-decoration: underline; } "
                  "div.nbgrader_cell.panel-primary > .panel-heading a { color: #ffffff; } "
                  "div.input_area, div.input_area .highlight, div.input_area pre { background: #ffffff; } "
                  "div.output_subarea pre, div.input_area pre { white-space: pre-wrap; overflow-wrap: anywhere; }"
                  "</style>")


def accessible(page: str) -> str:
    """nbgrader's feedback page with its language declared, its colours readable, and every part in a landmark (a
    screen reader's way around a page): nbconvert's notebook is a <main>; nbgrader's score panel above it, whose
    links lead to the test cells, is marked as the page's navigation."""
    page = page.replace("<html>", f'<html lang="{LANGUAGE}">', 1).replace("</head>", f"{ACCESSIBLE_CSS}</head>", 1)
    head = page.find("</head>")
    panel = page.find('<div class="panel-heading">', head)  # the first after the inlined CSS: the score panel's
    if head < 0 or panel < 0:
        return page
    return page[:panel] + '<div class="panel-heading" role="navigation" aria-label="Scores">' + \
        page[panel + len('<div class="panel-heading">'):]


@functools.cache
def feedback_exporter():
    """nbconvert's HTMLExporter for the feedback pages, its templates compiled once per worker process instead of at
    every page.

    nbgrader builds a new exporter, and so a new Jinja environment, for every generate_feedback call, and compiling
    the feedback template and the ones it extends took about 0.14 s of the 0.25 s a page costs. Jinja's own bytecode
    cache (its documented BytecodeCache interface) keeps the compiled code here, keyed by template and checked against
    the template's source, so a changed template is compiled again."""
    import jinja2
    from nbconvert.exporters import HTMLExporter

    class MemoryBytecode(jinja2.BytecodeCache):
        store: dict[str, bytes] = {}

        def load_bytecode(self, bucket) -> None:
            if bucket.key in self.store:
                bucket.bytecode_from_string(self.store[bucket.key])

        def dump_bytecode(self, bucket) -> None:
            self.store[bucket.key] = bucket.bytecode_to_string()

    class FeedbackExporter(HTMLExporter):
        """Also: no MathJax from a CDN (the math is MathML already: mathml.py; the templates' `mathjax()` macro
        writes nothing), and the page says its language (nbgrader's feedback template has a bare <html>)."""

        def _create_environment(self):
            environment = super()._create_environment()
            environment.bytecode_cache = MemoryBytecode()
            environment.loader = jinja2.ChoiceLoader([jinja2.DictLoader({"mathjax.html.j2": NO_MATHJAX}),
                                                      environment.loader])
            return environment

        def from_notebook_node(self, nb, resources=None, **kw):
            output, resources = super().from_notebook_node(nb, resources, **kw)
            return accessible(output), resources

    return FeedbackExporter


def student_glob(student: str) -> str:
    """The glob nbgrader is given for `student` (its student_id is a file glob): one that matches exactly the
    student's folder when the id holds `*`, `?` or `[`. nbgrader reads the id back from the folder it matched, so the
    gradebook gets the id itself. (Ids it cannot take at all: unusable_id.)"""
    import glob

    return glob.escape(student)


def unusable_id(student: str, db_url: str = "") -> str:
    """Why nbgrader itself cannot grade a student of this id, or "" (every other id grades, whatever its length up
    to a folder name's 255 bytes, its script or its shell characters: scratch and socket paths never hold it).

    - blanks at either end: nbgrader's CourseDirectory strips them from the id, and then finds no such student;
    - a bracket expression (`[ab]`): nbgrader globs the folder it found once more, as a pattern, and `[ab]` does
      not match itself;
    - over 128 characters with a database that enforces column lengths (PostgreSQL): nbgrader's gradebook declares
      the student's id as String(128) (SQLite does not enforce it)."""
    import fnmatch

    if student != student.strip():
        return "the student id has blanks at its start or end, which nbgrader strips (rename the folder)"
    if not fnmatch.fnmatchcase(student, student):
        return "the student id holds a bracket expression ([...]), which nbgrader reads as a file glob (rename the folder)"
    if len(student) > 128 and db_url and not db_url.startswith("sqlite"):
        return f"the student id has {len(student)} characters; nbgrader's gradebook holds at most 128"
    return ""


def _zero(coursedir, student: str, names: list[str]) -> None:
    """Zero for notebooks that were not submitted or could not be read (as nbgrader does for missing ones)."""
    from nbgrader.api import Gradebook

    inbox = Path(coursedir.format_path(coursedir.submitted_directory, student, ASSIGNMENT))
    with Gradebook(coursedir.db_url) as gb:
        gb.update_or_create_student(student)
        gb.update_or_create_submission(ASSIGNMENT, student, timestamp=coursedir.get_existing_timestamp(str(inbox)))
        for name in names:
            for grade in gb.find_submission_notebook(name, ASSIGNMENT, student).grades:
                grade.auto_score = 0
                grade.needs_manual_grade = False
        gb.db.commit()


def _failure(report: Path, name: str, done: dict) -> str:
    """Why autograde of notebook `name` failed: the grader failure the executor recorded, else the log's cause."""
    recorded = [r["grader_failure"] for r in _records(report)
                if "grader_failure" in r and Path(r["notebook"]).name.removesuffix(".ipynb") == name]
    return recorded[-1] if recorded else root_cause((done.get("log") or "") + "\n" + (done.get("error") or ""))


def _records(report: Path) -> list[dict]:
    return [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []


def grade(job: Job) -> Result:
    """Repair, autograde and (optionally) build feedback for one student's notebooks; never raises.

    Notebook by notebook (the pipeline sends one a job: workers.Task). A student's own failures
    never fail autograde (the executor records them in the notebook), so a failed autograde is the grader's:
    it is tried again once with a fresh kernel exec'd afresh, and a notebook that still fails is left out
    of the gradebook and reported in `not_graded` with its cause (the parent may try a fresh worker).
    """
    from course_grader.repair import repair

    result = Result(job.student)
    scratch = Path(job.scratch)
    course = scratch / "course"
    if course.exists():
        shutil.rmtree(course)
    inbox = course / "submitted" / job.student / ASSIGNMENT
    inbox.mkdir(parents=True)
    shutil.copy(job.template_db, course / "gradebook.db")
    submitted = Path(job.submission)
    release = Path(job.release)
    if (submitted / "timestamp.txt").exists():
        shutil.copy(submitted / "timestamp.txt", inbox / "timestamp.txt")
    report = scratch / "cells.jsonl"
    report.unlink(missing_ok=True)
    name = ""
    try:
        from nbgrader.apps import NbGraderAPI
        from nbgrader.coursedir import CourseDirectory

        def api_for(fresh_kernel: bool) -> NbGraderAPI:
            config = _config(job, course, report, fresh_kernel)
            return NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)

        apis = [api_for(False), api_for(True)]  # the kernel as configured; a retry's, exec'd afresh
        ungraded = []
        for name in job.notebooks or sorted(p.stem for p in release.glob("*.ipynb")):
            path = submitted / f"{name}.ipynb"
            if not path.exists():
                result.notes.append(f"{name}: not submitted")
                ungraded.append(name)
                continue
            since = time.monotonic()
            result.notes += repair(path, release / f"{name}.ipynb", inbox / path.name, job.max_submission_bytes)
            _phase(result, "repair", since)
            if not (inbox / path.name).exists():
                ungraded.append(name)  # malformed
                continue
            for attempt, api in enumerate(apis):
                api.coursedir.notebook_id = name
                since = time.monotonic()
                done = api.autograde(ASSIGNMENT, student_glob(job.student), force=True, create=True)
                _phase(result, "autograde", since)
                if done["success"]:
                    result.graded.append(name)
                    result.not_graded.pop(name, None)
                    break
                cause = _failure(report, name, done)
                if "MemoryError" in cause:
                    cause += f" (the grading worker reached its memory limit, {job.worker_memory_mb} MiB)"
                if attempt + 1 < len(apis):
                    result.retried.append(f"{name}: {cause}")
                else:  # this notebook's grades are not merged; the others' still are
                    result.not_graded[name] = cause
        name = ""
        if ungraded:
            _zero(apis[0].coursedir, job.student, ungraded)
            result.graded += ungraded
        if job.feedback and (course / "autograded" / job.student).exists():
            apis[0].coursedir.notebook_id = "*"
            since = time.monotonic()
            fb = apis[0].generate_feedback(ASSIGNMENT, student_glob(job.student), force=True)
            _phase(result, "feedback", since)
            if not fb["success"] and not result.not_graded:  # else the missing notebook says why
                result.notes.append("feedback HTML could not be generated")
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which keeps going (and may retry)
        result.ok, result.error = False, one_line(f"{type(exc).__name__}: {exc}")
        if name:
            result.not_graded[name] = result.error
    result.ok = result.ok and not result.not_graded
    result.graded.sort()
    result.notes = list(dict.fromkeys(result.notes))  # a retried notebook's judge notes are not said twice
    for record in _records(report):
        name = Path(record["notebook"]).name.removesuffix(".ipynb")
        for phase, seconds in (record.get("phases") or {}).items():
            result.phases[phase] = result.phases.get(phase, 0.0) + seconds
        if "judge" in record:  # the judge's notes: tampering, delegation, a judge that failed
            result.notes += [f"{name}: {note}" for note in record["judge"]]
            # Read as data, never parsed out of a message; a retried notebook's last grading decides.
            result.review.pop(name, None)
            if record.get("review") and name in result.graded:
                result.review[name] = [str(f) for f in record["review"]]
        elif "seconds" in record and name in result.graded:
            result.seconds[name] = record["seconds"]
            result.notes += [f"{name}: {cut}" for cut in record.get("truncated", [])]
            if record["problem"]:
                result.problems[name] = record["problem"]
    _phases(result)
    return result


def _phases(result: Result) -> None:
    """What autograde spent besides running the kernel and the judge: nbgrader's own passes (reading, overwriting
    cells, scoring, writing the gradebook and the notebook)."""
    total = result.phases.pop("autograde", 0.0)
    if total:
        result.phases["nbgrader's own passes"] = max(0.0, total - sum(result.phases.get(p, 0.0)
                                                                       for p in EXECUTED + JUDGED))
    result.phases = {k: round(v, 3) for k, v in result.phases.items()}


def skip_slow_imports() -> None:
    """Spare a grader process the 1.8 s that importing nbformat costs with `rfc3987_syntax` installed.

    jsonschema (which nbformat imports) loads rfc3987_syntax when it is installed (jupyter-events pulls it in),
    and that module compiles a grammar at import: 1.8 s of CPU in every worker, for a check ("iri" strings) that
    the notebook schema never asks for. Marking the module missing makes jsonschema skip it, as it does when
    the package is absent. Grader processes only: kernels never import this module.
    """
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[assignment]


def limit_memory(mb: int) -> None:
    """Limit this process's data (heap and private mappings: RLIMIT_DATA) to `mb` MiB; 0: no limit.

    A grading worker reads everything its kernels send. The output caps (kernel.OutputBudget) bound what it keeps,
    so no student reaches this limit: it is the backstop against the worker's own growth, and an allocation past
    it raises MemoryError (said as the worker's memory limit, and retried) instead of the machine swapping or the
    kernel's OOM killer choosing a process. Not RLIMIT_AS: the CUDA build of torch reserves far more address space
    than it uses and cannot start under it. Only the soft limit is set, so a later job may set another.
    """
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    soft = resource.RLIM_INFINITY if mb <= 0 else mb << 20
    if hard != resource.RLIM_INFINITY and (soft == resource.RLIM_INFINITY or soft > hard):
        soft = hard
    resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def run_job(path: Path, startup: float = 0.0) -> None:
    """Grade the job in `path` (job.json) and write result.json beside it (`startup`: the seconds this process took to
    get ready before it, for the budget's "worker start-up")."""
    job = Job(**json.loads(path.read_text()))
    # Never below three times a kernel's limit: one output message is decoded whole before the caps can cut it, and
    # a kernel can send one about a third of its memory (the text, its JSON, its bytes): a lower limit would let a
    # student's single message stop the worker, a grader failure.
    limit_memory(job.worker_memory_mb and max(job.worker_memory_mb, 3 * job.memory_mb))
    started = time.monotonic()
    result = grade(job)
    result.seconds["total"] = round(time.monotonic() - started, 2)
    if startup:
        result.phases["worker start-up"] = round(startup, 3)
    Path(job.scratch, "result.json").write_text(json.dumps(asdict(result), indent=1))


def private_pipes(*fds: int) -> None:
    """Keep the worker's own pipes from everything it starts (student code must not read or answer its jobs)."""
    for fd in fds:
        os.set_inheritable(fd, False)


def serve(jobs_fd: int, replies_fd: int) -> None:
    """Grade job after job in one process, so that nbgrader, torch and the judge are imported once, not once a student.

    The parent (workers.WorkerProcess) writes the path of each job.json on `jobs_fd`, a line each; for each,
    this process points its standard output and error at the job's worker.log, works in the job's folder, grades
    it and answers with the same line on `replies_fd` once result.json is written. It ends at the end of
    `jobs_fd`. The two pipes are not inherited by anything it starts (the kernels' launchers).
    """
    import gc

    private_pipes(jobs_fd, replies_fd)
    # What grading a notebook imports anyway, paid before the first job rather than inside it.
    import nbgrader.apps  # noqa: F401
    import course_grader.judging  # noqa: F401
    import course_grader.kernel  # noqa: F401
    import course_grader.repair  # noqa: F401

    ready = time.time()
    first = True
    with os.fdopen(jobs_fd) as jobs, os.fdopen(replies_fd, "w") as replies:
        for line in jobs:
            path = Path(line.strip())
            # The budget's "worker start-up": how long the first job waited for these imports (the parent writes
            # job.json just before it sends the job). None for a process started ahead of its jobs (the warm service).
            startup = max(0.0, ready - path.stat().st_mtime) if first else 0.0
            first = False
            sys.stdout.flush()
            sys.stderr.flush()
            log = os.open(path.parent / "worker.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.close(log)
            os.chdir(path.parent)
            run_job(path, startup)
            sys.stdout.flush()
            sys.stderr.flush()
            gc.collect()
            replies.write(f"{path}\n")
            replies.flush()


def main(argv: list[str] | None = None) -> int:
    """`JOB.json`: grade one job; `--serve JOBS_FD REPLIES_FD`: grade jobs as the parent sends them (serve)."""
    from course_grader.sandbox import die_with_parent

    skip_slow_imports()
    die_with_parent()  # the grader (or a Dask worker) gone: this worker goes too
    argv = sys.argv[1:] if argv is None else argv
    if argv[0] == "--serve":
        serve(int(argv[1]), int(argv[2]))
    else:
        run_job(Path(argv[0]))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.exit(main())
