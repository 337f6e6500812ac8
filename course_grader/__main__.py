"""`python -m course_grader`: autograde a class (the course's submitted/ by default), print the table.

Examples (from the course root; `make grade` runs the first):
  python -m course_grader --jobs 2                      submitted/ (make grade first writes the demo class there)
  python -m course_grader --class path/to/submitted     a real class (<student>/normalization/*.ipynb)
  python -m course_grader --zip-collect downloads/      LMS archives (nbgrader's zip_collect names)
  python -m course_grader --student alice --notebook Q4 one student, one notebook
  python -m course_grader --db-url postgresql://...     a PostgreSQL gradebook (or COURSE_DB_URL)
  python -m course_grader --warm                        through the warm grading service (started if none runs)
  python -m course_grader --stop-warm                   end the warm grading services
  python -m course_grader --scheduler tcp://HOST:8786   on the workers of a Dask cluster (many machines)
  python -m course_grader --dask-workers 2              on a Dask cluster of 2 worker processes started here
  python -m course_grader --review-clear alice:Q3       a notebook held for review keeps its scores
  python -m course_grader --review-confirm alice:Q3     ... or its autograded tests score 0
  python -m course_grader --export canvas --roster roster.csv   the grades as Canvas imports them
      ... --canvas-url https://canvas.uni.edu --canvas-course 1234 --canvas-assignment 5678   and sent to Canvas
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from course_grader.autograde import skip_slow_imports

skip_slow_imports()  # before nbformat is imported (by the pipeline)

from course_grader import inert, settings  # noqa: E402
from course_grader.pipeline import ZIP_REGEXP, Options, run  # noqa: E402
from course_grader.report import table  # noqa: E402


def parse(argv: list[str] | None = None) -> tuple[Options, bool, list[tuple[str, str]], dict | None]:
    """The command line as Options, whether only the class report is asked for (--report), the review
    decisions asked for ((STUDENT:Q3, "cleared" or "confirmed"); none: grade), and the LMS export asked for."""
    p = argparse.ArgumentParser(prog="python -m course_grader", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--root", type=Path, default=Path.cwd(), help="course root (default: the current folder)")
    p.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1, help="students graded at once")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--class", dest="class_dir", type=Path, help="folder of <student>/<assignment>/ submissions (default: the course's submitted/)")
    source.add_argument("--zip-collect", dest="zip_dir", type=Path, help="folder of LMS archives or extracted files")
    p.add_argument("--zip-regexp", default=ZIP_REGEXP, help="file name pattern for --zip-collect")
    p.add_argument("--student", action="append", default=[], help="grade only this student (repeatable)")
    p.add_argument("--notebook", action="append", default=[], help="grade only this notebook, e.g. Q4 (repeatable)")
    p.add_argument("--db-url", help="gradebook URL (default: $COURSE_DB_URL or sqlite:///<root>/gradebook.db)")
    p.add_argument("--cell-timeout", type=int, default=None,
                   help="seconds per cell (default: c.Execute.timeout in the course's nbgrader_config.py)")
    p.add_argument("--notebook-timeout", type=float, default=Options.notebook_timeout,
                   help="wall-clock seconds per notebook")
    p.add_argument("--memory-mb", type=int, default=Options.memory_mb, help="memory limit of each kernel (RLIMIT_DATA)")
    caps = p.add_argument_group("caps on what a student's kernel sends back, applied as it arrives")
    caps.add_argument("--max-output-bytes", type=int, default=Options.max_output_bytes, help="bytes kept of one output")
    caps.add_argument("--max-cell-output-bytes", type=int, default=Options.max_cell_output_bytes,
                      help="bytes kept of one cell's outputs")
    caps.add_argument("--max-notebook-output-bytes", type=int, default=Options.max_notebook_output_bytes,
                      help="bytes kept of a notebook's outputs")
    caps.add_argument("--max-record-bytes", type=int, default=Options.max_record_bytes,
                      help="bytes kept of one test cell's record bundles (what the judge decides from)")
    caps.add_argument("--max-submission-bytes", type=int, default=Options.max_submission_bytes,
                      help="a submitted notebook file larger than this is not read: not graded, and told why")
    p.add_argument("--worker-memory-mb", type=int, default=Options.worker_memory_mb,
                   help="memory limit of each grading worker process (RLIMIT_DATA; never below 3 x --memory-mb; "
                        "0: none)")
    p.add_argument("--no-sandbox", dest="sandbox", action="store_false", help="kernels with limits only")
    p.add_argument("--require-isolation", action="store_true",
                   help="refuse to grade unless every kernel can be isolated (root, Linux namespaces)")
    p.add_argument("--no-feedback", dest="feedback", action="store_false", help="skip the feedback HTML")
    p.add_argument("--run-experiments", action="store_true",
                   help="also run the demo and experiment cells the student left as given (by default they are not "
                        "run: no test depends on them, and the autograded copy shows the outputs the student submitted)")
    p.add_argument("--fresh-kernels", action="store_true",
                   help="start every kernel as a new process instead of forking it from a warm server (slower)")
    p.add_argument("--warm", action="store_true",
                   help="grade through this machine's warm grading service, started if none runs: it keeps the fork "
                        "server and the grading processes between runs (ends after %d s without one)" % settings.WARM_IDLE)
    p.add_argument("--stop-warm", action="store_true", help="grade nothing: end this user's warm grading services")
    dask = p.add_mutually_exclusive_group()
    dask.add_argument("--scheduler", default="", metavar="tcp://HOST:PORT",
                      help="grade on the workers of this Dask scheduler (docs/GRADING_PIPELINE.md: many machines)")
    dask.add_argument("--dask-workers", type=int, default=0, metavar="N",
                      help="grade on a Dask cluster of N worker processes started on this machine")
    p.add_argument("--csv", type=Path, help="where to write the grades (default: <root>/grades.csv)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--report", dest="report_only", action="store_true",
                   help="grade nothing: write the class report (report.html, report.csv beside grades.csv) from "
                        "the gradebook and the autograded notebooks as they are")
    p.add_argument("--no-report", dest="report", action="store_false", help="grade without writing the class report")
    lms = p.add_argument_group("LMS export (grade nothing: the last run's grades.csv as the LMS imports it; "
                               "docs/LMS_EXPORT.md)")
    lms.add_argument("--export", choices=["canvas", "moodle"], help="write the grades in this LMS's import format")
    lms.add_argument("--roster", type=Path, help="CSV mapping the course's student ids (column `student`) to the "
                                                 "LMS's (Canvas: id, sis_user_id or sis_login_id, name, section; "
                                                 "Moodle: email, username or idnumber)")
    lms.add_argument("--export-by", choices=["assignment", "question"], default="assignment",
                     help="one column with the total (default), or one per question")
    lms.add_argument("--export-title", default="Normalization", help="the LMS assignment's name (default: %(default)s)")
    lms.add_argument("--export-file", type=Path, help="where to write it (default: <root>/export-<lms>.csv)")
    lms.add_argument("--moodle-id", choices=["email", "username", "idnumber"], default="email",
                     help="the roster column Moodle identifies users by (default: %(default)s)")
    lms.add_argument("--canvas-url", help="also send the grades to Canvas (canvasapi; the token in the environment "
                                          "variable CANVAS_API_TOKEN): the Canvas address, https://...")
    lms.add_argument("--canvas-course", type=int, metavar="ID", help="with --canvas-url: the Canvas course's id")
    lms.add_argument("--canvas-assignment", type=int, metavar="ID",
                     help="with --canvas-url: the Canvas assignment's id (the total goes to it: --export-by assignment)")
    decide = p.add_argument_group("notebooks held for review (the audit found code it does not judge by itself)")
    decide.add_argument("--review-clear", action="append", default=[], metavar="STUDENT:Q3",
                        help="grade nothing: the held notebook keeps its scores (repeatable)")
    decide.add_argument("--review-confirm", action="append", default=[], metavar="STUDENT:Q3",
                        help="grade nothing: the held notebook's autograded tests score 0 (repeatable)")
    a = p.parse_args(argv)
    if a.export and not a.roster:
        p.error("--export needs --roster (the course's student ids mapped to the LMS's)")
    if a.canvas_url and (a.export != "canvas" or a.export_by != "assignment" or not a.canvas_course
                         or not a.canvas_assignment):
        p.error("--canvas-url needs --export canvas, --export-by assignment, --canvas-course and --canvas-assignment")
    if a.canvas_url and not os.environ.get("CANVAS_API_TOKEN"):
        p.error("--canvas-url needs a Canvas access token in the environment variable CANVAS_API_TOKEN "
                "(never on the command line, where other users' ps can read it)")
    if a.stop_warm:
        from course_grader import service

        stopped = service.stop_all()
        print(f"{len(stopped)} warm grading service(s) stopping: pid {' '.join(map(str, stopped)) or '-'}")
        raise SystemExit(0)
    return Options(root=a.root, jobs=a.jobs, class_dir=a.class_dir, zip_dir=a.zip_dir, zip_regexp=a.zip_regexp,
                   students=a.student, notebooks=a.notebook, db_url=a.db_url, cell_timeout=a.cell_timeout,
                   notebook_timeout=a.notebook_timeout, memory_mb=a.memory_mb, sandbox=a.sandbox,
                   max_output_bytes=a.max_output_bytes, max_cell_output_bytes=a.max_cell_output_bytes,
                   max_notebook_output_bytes=a.max_notebook_output_bytes, max_record_bytes=a.max_record_bytes,
                   max_submission_bytes=a.max_submission_bytes, worker_memory_mb=a.worker_memory_mb,
                   require_isolation=a.require_isolation,
                   feedback=a.feedback, run_experiments=a.run_experiments,
                   fresh_kernels=a.fresh_kernels, warm=a.warm, csv=a.csv, progress=not a.quiet, scheduler=a.scheduler,
                   dask_workers=a.dask_workers, report=a.report), a.report_only, \
        [(spec, "cleared") for spec in a.review_clear] + [(spec, "confirmed") for spec in a.review_confirm], \
        (dict(lms=a.export, roster_path=a.roster, by=a.export_by, title=a.export_title, moodle_id=a.moodle_id,
              out=a.export_file, canvas=(a.canvas_url, a.canvas_course, a.canvas_assignment) if a.canvas_url else None)
         if a.export else None)


def write_report(options: Options) -> int:
    """--report: the class report from the gradebook as it is."""
    from course_grader import class_report, gradebook

    root = options.root.resolve()
    db_url = gradebook.driver_url(options.db_url or gradebook.default_db_url(root))
    grades_csv = options.csv or root / "grades.csv"
    try:
        html, table_csv, seconds = class_report.write(root, db_url, grades_csv)
    except Exception as exc:  # noqa: BLE001 - said in one line: no gradebook yet, or not this course's
        print(f"no class report: {type(exc).__name__}: {exc} (grade first: make grade)", file=sys.stderr)
        return 2
    print(f"class report: {html} and {table_csv} ({seconds:.1f} s)")
    _say_similar(table_csv)
    return 0


def _say_similar(report_csv: Path) -> None:
    """The flagged pairs of the class report's similarity section, in one line (nothing when there are none)."""
    from course_grader import class_report

    similar = class_report.similar_line(report_csv)
    if similar:
        print(similar)


def decide(options: Options, decisions: list[tuple[str, str]]) -> int:
    """--review-clear / --review-confirm: record the decisions, print the rows, rewrite grades.csv and the report."""
    from course_grader import gradebook, reviews
    from course_grader.report import replace_line

    root = options.root.resolve()
    db_url = gradebook.driver_url(options.db_url or gradebook.default_db_url(root))
    held = reviews.Reviews.load(root)
    try:
        for spec, _ in decisions:  # every one checked before any is written: all decided, or none
            held.find(spec)
    except reviews.NotHeld as exc:
        print(f"nothing decided: {exc}", file=sys.stderr)
        return 2
    students = list(dict.fromkeys(held.decide(db_url, spec, decision) for spec, decision in decisions))
    held.save()
    rows = [held.row(student, db_url) for student in students]
    print(table(rows))
    grades_csv = options.csv or root / "grades.csv"
    missing = [row.student for row in rows if not replace_line(grades_csv, row)]
    if missing:
        print(f"{grades_csv} does not list {' '.join(inert.plain(m) for m in missing)} (another run's grades): "
              "left as it is")
    if options.report and grades_csv.exists():
        return write_report(options)
    return 0


def export_grades(options: Options, asked: dict) -> int:
    """--export: the last run's grades.csv in the LMS's import format (export.py)."""
    from course_grader import export, gradebook

    root = options.root.resolve()
    grades_csv = options.csv or root / "grades.csv"
    out = asked.pop("out") or root / f"export-{asked['lms']}.csv"
    canvas = asked.pop("canvas", None)
    try:
        maxima = gradebook.max_scores(gradebook.driver_url(options.db_url or gradebook.default_db_url(root)))
        done = export.run(grades_csv=grades_csv, out=out, maxima=maxima, **asked)
    except (OSError, ValueError) as exc:
        print(f"nothing exported: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    notes = f"; notes: {out.with_suffix('.notes.csv')}" if asked["lms"] == "canvas" else ""
    print(f"{asked['lms']} export: {done.path} ({done.rows} students{notes})")
    if canvas:
        url, course, assignment = canvas
        try:
            sent = export.upload_canvas(out, url, course, assignment, os.environ["CANVAS_API_TOKEN"])
        except Exception as exc:  # noqa: BLE001 - canvasapi's and requests' errors: the file is written, say why
            print(f"nothing uploaded to Canvas: {type(exc).__name__}: {inert.plain(str(exc), 500)}", file=sys.stderr)
            return 3
        empty = f"; not sent (empty cell): {' '.join(inert.plain(s) for s in sent.left_empty)}" if sent.left_empty else ""
        print(f"canvas upload: {len(sent.sent)} grades to assignment {assignment}: {sent.state}{empty}")
        return 0 if sent.state == "completed" else 3
    return 0


def main(argv: list[str] | None = None) -> int:
    options, report_only, decisions, asked = parse(argv)
    if asked:
        return export_grades(options, asked)
    if decisions:
        return decide(options, decisions)
    if report_only:
        return write_report(options)
    outcome = run(options)
    print(table(outcome.rows))
    where = (f"Dask scheduler {options.scheduler}" if options.scheduler else
             f"{options.dask_workers} local Dask worker(s)" if options.dask_workers else f"{options.jobs} job(s)")
    print(f"\n{len(outcome.rows)} students graded in {outcome.seconds:.0f} s with {where}; "
          f"kernels: {outcome.sandbox}, {outcome.kernels}; grades: {options.csv or options.root / 'grades.csv'}")
    if outcome.report:
        print(f"class report: {outcome.report}")
        _say_similar(outcome.report.with_suffix(".csv"))
    retried = [(student, note) for student, r in outcome.results.items() for note in r.retried]
    if retried:
        print(f"{len(retried)} grader failure(s) were retried with a fresh kernel; scores are unaffected:")
        print("\n".join(f"  {inert.plain(student)}: {inert.plain(note)}" for student, note in retried[:20]))
    failed = [s for s, r in outcome.results.items() if not r.ok]
    if failed:
        print(f"{len(failed)} student(s) NOT GRADED after retries (the grader's failure, not theirs; no score given): "
              f"{' '.join(inert.plain(s) for s in failed)}. Grade them again once the cause is fixed: --student NAME.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
