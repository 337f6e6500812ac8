"""Benchmark of the grading pipeline (printed, not asserted), everything measured side by side in one run.

1. One full submission (the demo class's `reference`, all notebooks), seconds to grade it in grading mode:
   with N jobs (the default of `make grade`: its notebooks shared by N workers) and with 1 job, kernels
   forked from the warm fork server (the default); with 1 job and --fresh-kernels (every kernel a new
   process: the pipeline before the fork server); against plain re-execution in student mode (full data,
   `jupyter nbconvert --execute`, one notebook after another).
2. Class throughput on the same demo class with 1 job and with N jobs (students per minute): by default its
   six well-behaved students; `--students 0` adds the crasher, the looper and the two tamperers.

Targets on a 2-core machine: one submission graded in <= 60 s, >= 5x faster than re-execution, >= 1.7x
throughput with 2 jobs. Each measurement is repeated (`--repeat`, 3) in interleaved rounds and the medians are
compared; the fresh-kernel reference and the student-mode run are measured once.
Usage: python bench/bench_grade.py [--jobs N] [--notebook Q4 ...] [--students K] [--repeat R]
[--run-experiments] [--no-student-mode] [--no-class]
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
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from course_mutation import demo  # noqa: E402
from course_grader.pipeline import Options, run  # noqa: E402


def student_mode(root: Path, notebooks: list[str]) -> float:
    """Seconds to re-execute the reference submission with full data, as a student would."""
    env = {k: v for k, v in os.environ.items() if k not in ("COURSE_GRADING_MODE", "NBGRADER_EXECUTION")}
    env.update(PYTHONPATH=str(root), MPLBACKEND="Agg")
    folder = root / "submitted" / "reference" / "normalization"
    started = time.monotonic()
    for path in sorted(folder.glob("*.ipynb")):
        if notebooks and path.stem.split("_")[0] not in notebooks:
            continue
        jupyter = Path(sys.executable).with_name("jupyter")
        done = subprocess.run([str(jupyter), "nbconvert", "--execute", "--to", "notebook", "--output-dir",
                               str(root / "student"), "--ExecutePreprocessor.timeout=1800", str(path)],
                              env=env, check=False, capture_output=True, text=True)
        if done.returncode != 0:  # a failed notebook would make re-execution look cheaper than it is
            raise SystemExit(f"student-mode run of {path.name} failed:\n{done.stderr[-2000:]}")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--notebook", action="append", default=[])
    parser.add_argument("--students", type=int, default=6,
                        help="class: the first K demo students (default 6: reference, blank and the four realistic "
                             "ones; 0: all ten, whose looper holds one worker for its 90 s cell limit)")
    parser.add_argument("--run-experiments", action="store_true")
    parser.add_argument("--no-student-mode", action="store_true")
    parser.add_argument("--no-class", action="store_true", help="skip the class throughput part")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds per measurement (medians)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-grade-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    try:
        root = demo.course_copy(base, ROOT)
        demo.build(root, root / "submitted")  # the demo class, as make grade writes it
        common = dict(root=root, notebooks=args.notebook, run_experiments=args.run_experiments, progress=False,
                      feedback=False, csv=base / "grades.csv")
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (shared machines are noisy)")
        # Each configuration `--repeat` times, interleaved (noise on a shared machine hits all alike); medians.
        configs = [(f"{args.jobs} jobs, forked kernels (make grade)", args.jobs, False, args.repeat),
                   ("1 job, forked kernels", 1, False, args.repeat),
                   ("1 job, fresh kernel processes", 1, True, 1)]
        submission: dict[str, list[float]] = {label: [] for label, *_ in configs}
        for round_ in range(args.repeat):
            for label, jobs, fresh, repeats in configs:
                if round_ >= repeats:
                    continue
                started = time.monotonic()
                one = run(Options(students=["reference"], jobs=jobs, fresh_kernels=fresh, **common))
                submission[label].append(time.monotonic() - started)
                cells = sum(v for k, v in one.results["reference"].seconds.items() if k != "total")
                print(f"one submission, grading mode, {label:<38}: {submission[label][-1]:6.1f} s "
                      f"({cells:.1f} s in notebooks; kernels {one.kernels})", flush=True)
        if not args.no_student_mode:
            plain = student_mode(root, args.notebook)
            print(f"one submission, student mode (nbconvert --execute, full data){'':<17}: {plain:6.1f} s")
            for label, seconds in submission.items():
                print(f"  grading with {label:<38} (median of {len(seconds)}: {median(seconds):5.1f} s) "
                      f"is {plain / median(seconds):4.1f}x faster than re-execution")
        if args.no_class:
            return
        students = [*("reference", "blank"), *demo.REALISTIC, "crasher", "looper", "deleter", "paster", "copier"]
        if args.students:
            students = students[:args.students]
        timings: dict[int, list[float]] = {}
        for _ in range(args.repeat):
            for jobs in sorted({1, args.jobs}):
                started = time.monotonic()
                run(Options(students=students, jobs=jobs, **common))
                timings.setdefault(jobs, []).append(time.monotonic() - started)
                print(f"class of {len(students)}, {jobs} job(s): {timings[jobs][-1]:7.1f} s "
                      f"({60 * len(students) / timings[jobs][-1]:.1f} students/min)", flush=True)
        if len(timings) == 2:
            ratios = sorted(a / b for a, b in zip(timings[1], timings[args.jobs]))
            print(f"throughput with {args.jobs} jobs: {median(timings[1]) / median(timings[args.jobs]):.2f}x "
                  f"(medians of {args.repeat}; per round {', '.join(f'{r:.2f}' for r in ratios)})")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
