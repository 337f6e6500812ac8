"""Benchmark of grading a class at scale (issue 10), printed, not asserted, everything side by side in one run.

1. One full submission (the demo class's `reference`, every notebook, the experiment cells included, as
   `make grade` runs them): this grader with N jobs (`make grade`), against stock `nbgrader autograde` on the
   same course and submission (nbgrader's own Execute: a fresh kernel per notebook, no sandbox, no fork server,
   no judge), in grading mode both.
2. Class throughput, the same class each time: 1 and N local jobs; 1 and 2 Dask worker processes started on this
   machine (`--dask-workers`, a scheduler and its workers over loopback TCP).
3. Grading time against class size: 10, 20 and 40 students (the class repeated under new names), N local jobs.

The class is by default the demo class's well-behaved students (reference, blank and the four realistic
ones), repeated to the size asked for; `--with-problems` adds the crasher, the looper (who holds a worker for
its cell limit) and the two tamperers. Parts 2 and 3 skip the experiment cells (`--skip-experiments`: tests
never depend on them) to keep the run short; part 1 runs everything.

Targets on a 2-core machine: >= 4x faster than stock nbgrader per submission, one submission in <= 12 s,
2-job throughput >= 1.8x one job, two Dask workers >= 0.9x the local 2-job throughput, time linear in students.
Usage: python bench/bench_scale.py [--jobs N] [--sizes 10 20 40] [--with-problems] [--skip PART ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from course_mutation import demo  # noqa: E402
from course_grader.machine import DATA_DIR  # noqa: E402
from course_grader.pipeline import Options, run  # noqa: E402

WELL_BEHAVED = ["reference", "blank", *demo.REALISTIC]
PROBLEMS = ["crasher", "looper", "deleter", "paster"]


def stock_nbgrader(root: Path, student: str) -> float:
    """Seconds of `nbgrader autograde` for one student, as nbgrader ships it (the course's nbgrader_config.py)."""
    env = dict(os.environ, PYTHONPATH=str(root), MPLBACKEND="Agg", COURSE_GRADING_MODE="1",
               COURSE_DATA_DIR=str(DATA_DIR))
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
    return seconds


def class_folder(root: Path, students: list[str], size: int, out: Path) -> Path:
    """`size` submissions: the demo students' folders repeated under new names (alice, alice-2, ...)."""
    if out.exists():
        shutil.rmtree(out)
    for i in range(size):
        student = students[i % len(students)]
        name = student if i < len(students) else f"{student}-{i // len(students) + 1}"
        shutil.copytree(root / "submitted" / student, out / name)
    return out


def timed(**options) -> tuple[float, object]:
    started = time.monotonic()
    outcome = run(Options(**{"progress": False, "feedback": True, **options}))
    seconds = time.monotonic() - started
    lost = [s for s, r in outcome.results.items() if not r.ok]
    if lost:
        print(f"    (NOT GRADED: {lost})")
    return seconds, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--with-problems", action="store_true")
    parser.add_argument("--skip", nargs="*", default=[], choices=["submission", "throughput", "sizes"])
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-scale-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    try:
        root = demo.course_copy(base, ROOT)
        demo.build(root, root / "submitted")  # the demo class, as make grade writes it
        run(Options(root=root, students=["reference"], notebooks=["Q6"], progress=False, csv=base / "warm.csv"))
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; nothing else should run")
        students = WELL_BEHAVED + (PROBLEMS if args.with_problems else [])
        if "submission" not in args.skip:
            one = class_folder(root, ["reference"], 1, base / "one")
            ours, _ = timed(root=root, class_dir=one, jobs=args.jobs, csv=base / "one.csv", feedback=False)
            with_feedback, _ = timed(root=root, class_dir=one, jobs=args.jobs, csv=base / "one.csv")
            stock = stock_nbgrader(root, "reference")
            print(f"1. one full submission, autograde only: this grader ({args.jobs} jobs) {ours:6.1f} s; stock nbgrader "
                  f"autograde {stock:6.1f} s; {stock / ours:.1f}x faster (target >= 4x, <= 12 s); with the feedback "
                  f"pages too (make grade) {with_feedback:6.1f} s", flush=True)
        if "throughput" not in args.skip:
            folder = class_folder(root, students, len(students), base / "class")
            common = dict(root=root, class_dir=folder, csv=base / "class.csv")
            rows = {}
            for label, extra in (("1 local job", dict(jobs=1)), (f"{args.jobs} local jobs", dict(jobs=args.jobs)),
                                 ("1 Dask worker", dict(dask_workers=1)), ("2 Dask workers", dict(dask_workers=2))):
                rows[label], _ = timed(**common, **extra)
                print(f"2. class of {len(students)}, {label:<14}: {rows[label]:6.1f} s "
                      f"({60 * len(students) / rows[label]:5.1f} students/min)", flush=True)
            one, many = rows["1 local job"], rows[f"{args.jobs} local jobs"]
            print(f"   {args.jobs} local jobs: {one / many:.2f}x one job (target >= 1.8x); 2 Dask workers: "
                  f"{many / rows['2 Dask workers']:.2f}x the local {args.jobs}-job throughput (target >= 0.9x); "
                  f"1 Dask worker: {one / rows['1 Dask worker']:.2f}x one local job", flush=True)
        if "sizes" not in args.skip:
            per = {}
            for size in args.sizes:
                folder = class_folder(root, students, size, base / f"class-{size}")
                seconds, _ = timed(root=root, class_dir=folder, jobs=args.jobs, csv=base / f"size-{size}.csv")
                per[size] = seconds
                print(f"3. {size:3d} students, {args.jobs} jobs: {seconds:6.1f} s ({seconds / size:5.2f} s/student)",
                      flush=True)
            first = min(per)
            print("   seconds per student relative to the smallest class: " +
                  ", ".join(f"{s}: {per[s] / s / (per[first] / first):.2f}" for s in per) + " (linear: 1.00)")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
