"""Benchmark of the grading engine (issue 21), printed, not asserted, everything side by side in one run.

Every run's scores are checked before its time is reported: the reference submission must get every autograded
point of the course, and every student of every run the same points, test by test, as in the first run of the
class (a setup where kernels cannot import course_lib grades fast and wrong; it is refused, not timed).

1. One full submission (the demo class's `reference`, every notebook), as `make grade` grades it (feedback pages
   included): this grader with N jobs (median of --repeat runs), cold (the run starts its fork server and worker
   processes) and warm (through the warm grading service a first run started: `--warm`, what `make grade` passes),
   against stock `nbgrader autograde` on the same course and submission (nbgrader's own Execute: a fresh kernel per
   notebook, every cell run, no sandbox, no fork server, no judge). Then the time budget of the median cold and warm
   runs: the run's wall-clock phases, and the workers' seconds per phase over all notebooks.
2. A class of six (reference, blank and the four realistic students): 1 and N local jobs, and 2 Dask worker
   processes started on this machine (`--dask-workers 2`: a scheduler and its workers over loopback TCP), cold and
   warm (the second run through the machine's service), against the local N jobs cold and warm (the part 1 service).
3. 10, 20 and 40 students (the six repeated under new names), N local jobs: students per minute, and seconds per
   student relative to the smallest class (linear: 1.00).

Targets on a 2-core machine: one submission in <= 5 s, >= 8x stock nbgrader, >= 15 students a minute, 2 Dask
workers >= 0.9x the local N jobs, linear in students.
Usage: python bench/bench_scale.py [--jobs N] [--repeat R] [--sizes 10 20 40] [--skip PART ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nbformat  # noqa: E402

from course_grader.machine import DATA_DIR  # noqa: E402
from course_grader.pipeline import Options, run  # noqa: E402
from course_mutation import demo  # noqa: E402

CLASS = ["reference", "blank", *demo.REALISTIC]
# Warm services of this bench only (COURSE_* is part of a service's key): never an instructor's, never left running.
# setdefault: a Dask worker process imports this module again, and must keep the bench's key, not make its own.
os.environ.setdefault("COURSE_BENCH_RUN", f"{os.getpid()}-{time.time_ns()}")


def autograded_points(root: Path) -> dict[str, float]:
    """{notebook: its autograded tests' points} (what the reference must score)."""
    total: dict[str, float] = {}
    for path in (root / "source" / "normalization").glob("*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type == "code" and meta.get("grade") and not meta.get("solution"):
                total[path.stem] = total.get(path.stem, 0.0) + float(meta.get("points", 0))
    return total


def scores(outcome) -> dict[str, dict[str, dict[str, float]]]:
    """{student: {notebook: {test: points}}} of a run."""
    return {s: {nb: score.tests for nb, score in per.items()} for s, per in outcome.scores.items()}


class Checked:
    """Runs the pipeline, refusing to report a time for a run whose scores are not the expected ones."""

    def __init__(self, root: Path, full: dict[str, float]) -> None:
        self.root, self.full = root, full
        self.expected: dict[str, dict] = {}  # base student -> points test by test (the first run that graded them)

    def __call__(self, label: str, **options) -> tuple[float, object]:
        started = time.monotonic()
        outcome = run(Options(root=self.root, progress=False, **options))
        seconds = time.monotonic() - started
        lost = [s for s, r in outcome.results.items() if not r.ok]
        if lost:
            raise SystemExit(f"{label}: NOT GRADED {lost}: {[outcome.results[s].error for s in lost]}")
        for student, got in scores(outcome).items():
            base = student.split("~")[0]
            short = {nb: (sum(t.values()), self.full[nb]) for nb, t in got.items() if sum(t.values()) != self.full[nb]}
            if base == "reference" and short:
                raise SystemExit(f"{label}: the reference did not score every autograded point (notebook: (scored, "
                                 f"points)): {short}: a broken setup, not timed")
            want = self.expected.setdefault(base, got)
            if got != want:
                raise SystemExit(f"{label}: {student}'s scores differ from the first run's: not timed")
        return seconds, outcome


def class_folder(root: Path, size: int, out: Path) -> Path:
    """`size` submissions: the class of six repeated under new names (alice, alice~2, ...)."""
    shutil.rmtree(out, ignore_errors=True)
    for i in range(size):
        student = CLASS[i % len(CLASS)]
        name = student if i < len(CLASS) else f"{student}~{i // len(CLASS) + 1}"
        shutil.copytree(root / "submitted" / student, out / name)
    return out


def stock_nbgrader(root: Path, student: str) -> tuple[float, float]:
    """(seconds, auto score) of `nbgrader autograde` for one student, as nbgrader ships it (the course's config)."""
    env = dict(os.environ, PYTHONPATH=str(root), MPLBACKEND="Agg", COURSE_GRADING_MODE="1",
               COURSE_DATA_DIR=str(DATA_DIR))
    env.pop("COURSE_DB_URL", None)
    nbgrader = str(Path(sys.executable).with_name("nbgrader"))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    subprocess.run([nbgrader, "generate_assignment", "normalization", "--force", "--log-level=ERROR"], cwd=root,
                   env=env, check=True, capture_output=True)
    started = time.monotonic()
    done = subprocess.run([nbgrader, "autograde", "normalization", "--student", student, "--force"], cwd=root, env=env,
                          capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"stock nbgrader autograde failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    with sqlite3.connect(root / "gradebook.db") as db:
        (score,) = db.execute("select sum(auto_score) from grade join submitted_notebook on "
                              "grade.notebook_id = submitted_notebook.id join submitted_assignment on "
                              "submitted_notebook.assignment_id = submitted_assignment.id "
                              "where submitted_assignment.student_id = ?", (student,)).fetchone()
    return seconds, float(score or 0)


def budget(outcome, student: str) -> str:
    """The run's wall-clock phases and the workers' seconds per phase (over every notebook) for one submission."""
    wall = ", ".join(f"{k} {v:.2f}" for k, v in outcome.phases.items())
    phases = outcome.results[student].phases
    work = sum(phases.values())
    parts = ", ".join(f"{k} {v:.2f} ({100 * v / work:.0f} %)" for k, v in sorted(phases.items(), key=lambda kv: -kv[1]))
    return f"   wall-clock seconds: {wall}\n   worker seconds ({work:.1f} over 9 notebooks): {parts}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--repeat", type=int, default=3, help="runs of part 1 (median)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--skip", nargs="*", default=[], choices=["submission", "class", "sizes"])
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-scale-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    try:
        root = demo.course_copy(base, ROOT)
        demo.build(root, root / "submitted")  # the demo class, as make grade writes it
        checked = Checked(root, autograded_points(root))
        one = class_folder(root, 1, base / "one")
        checked("warm-up", class_dir=one, notebooks=["Q6"], csv=base / "warm.csv", report=False)
        checked.expected.clear()
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start", flush=True)
        if "submission" not in args.skip:
            one_submission(checked, root, one, base, args)
        if "class" not in args.skip:
            folder = class_folder(root, len(CLASS), base / "class")
            # The local warm service (part 1 started it; otherwise here, untimed) for the "local, warm" row.
            run(Options(root=root, class_dir=one, notebooks=["Q7"], jobs=args.jobs, warm=True, progress=False,
                        report=False, csv=base / "warm.csv"))
            rows = {}
            for label, extra in (("1 local job", dict(jobs=1)), (f"{args.jobs} local jobs", dict(jobs=args.jobs)),
                                 (f"{args.jobs} local, warm", dict(jobs=args.jobs, warm=True)),
                                 ("2 Dask workers", dict(dask_workers=2)),
                                 ("2 Dask, starts", dict(dask_workers=2, warm=True)),
                                 ("2 Dask, warm", dict(dask_workers=2, warm=True))):
                rows[label], _ = checked(label, class_dir=folder, csv=base / "class.csv", **extra)
                print(f"2. class of {len(CLASS)}, {label:<14}: {rows[label]:6.1f} s "
                      f"({60 * len(CLASS) / rows[label]:5.1f} students/min)", flush=True)
            one_job, many = rows["1 local job"], rows[f"{args.jobs} local jobs"]
            print(f"   {args.jobs} local jobs: {one_job / many:.2f}x one job; 2 Dask workers: "
                  f"{many / rows['2 Dask workers']:.2f}x the local {args.jobs} jobs cold, "
                  f"{many / rows['2 Dask, warm']:.2f}x warm, {rows[f'{args.jobs} local, warm'] / rows['2 Dask, warm']:.2f}x "
                  f"the local {args.jobs} jobs warm (target >= 0.9x)", flush=True)
        if "sizes" not in args.skip:
            per = {}
            for size in args.sizes:
                folder = class_folder(root, size, base / f"class-{size}")
                per[size], _ = checked(f"{size} students", class_dir=folder, jobs=args.jobs,
                                       csv=base / f"size-{size}.csv")
                print(f"3. {size:3d} students, {args.jobs} jobs: {per[size]:6.1f} s, {60 * size / per[size]:5.1f} "
                      f"students/min (target >= 15)", flush=True)
            first = min(per)
            print("   seconds per student relative to the smallest class: " +
                  ", ".join(f"{s}: {per[s] / s / (per[first] / first):.2f}" for s in per) + " (linear: 1.00)")
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        stop_services(root if "root" in locals() else ROOT, args.jobs)
        shutil.rmtree(base, ignore_errors=True)


def one_submission(checked: Checked, root: Path, one: Path, base: Path, args) -> None:
    """Part 1: cold runs, a run that starts the warm service, warm runs, stock nbgrader; the budgets."""
    def runs(warm: bool) -> list:
        return [checked("one submission", class_dir=one, jobs=args.jobs, csv=base / "one.csv", report=False,
                        warm=warm) for _ in range(args.repeat)]

    cold = runs(False)
    starts, _ = checked("starts the service", class_dir=one, jobs=args.jobs, csv=base / "one.csv", report=False,
                        warm=True)
    warm = runs(True)
    stock, stock_score = stock_nbgrader(root, "reference")
    for label, measured in (("cold", cold), ("warm", warm)):
        ours = median(seconds for seconds, _ in measured)
        print(f"1. one full submission, {label} ({args.jobs} jobs, feedback pages included): {ours:.1f} s (median of "
              f"{args.repeat}: {', '.join(f'{s:.1f}' for s, _ in measured)}; target <= 5 s); stock nbgrader "
              f"autograde {stock:.1f} s; {stock / ours:.1f}x faster (target >= 8x)", flush=True)
        print(budget(sorted(measured, key=lambda r: r[0])[len(measured) // 2][1], "reference"), flush=True)
    print(f"   the run that started the warm service: {starts:.1f} s. Scores: every one of the "
          f"{sum(checked.full.values()):g} autograded points; stock nbgrader gave {stock_score:g} (it has no judge)",
          flush=True)


def stop_services(root: Path, jobs: int) -> None:
    """End the warm services this bench's runs started (its own key: BENCH_KEY), locally and for the Dask workers."""
    from course_grader import service
    from course_grader.machine import code_root

    for code, one_thread in ((root, jobs > 1), (code_root(), True)):  # a Dask worker's kernels: one thread each
        remote = service.connect(code, isolate=True, fork_server=True, one_thread=one_thread)
        if remote:
            remote.ask({"stop": True})
            remote.close()
            for path in service.home().glob(f"{service.key(code, True, True, one_thread)}.*"):
                path.unlink()


if __name__ == "__main__":
    main()
