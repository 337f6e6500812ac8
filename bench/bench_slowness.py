"""The machine's measured slowness (course_grader/speed.py) on a quiet machine and beside CPU burners.

The grader scales the waits that only tell a lost kernel from a slow one by this factor; it should grow when the
cores are busy. This is a measurement, so it lives here and not in the tests (which check the mechanism with a
stubbed clock): on a shared machine the numbers move with whatever else runs.
Prints the median slowness of each state over the repeats, and the ratio busy / quiet.
Usage: .venv/bin/python bench/bench_slowness.py [--burners N] [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_grader import speed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burners", type=int, default=2 * (os.cpu_count() or 1), help="CPU-bound processes (busy)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    quiet = [speed.slowness() for _ in range(args.repeats)]
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.burners)]
    try:
        time.sleep(0.5)  # the burners get going
        busy = [speed.slowness() for _ in range(args.repeats)]
    finally:
        for proc in burners:
            proc.kill()
            proc.wait()
    q, b = statistics.median(quiet), statistics.median(busy)
    print(f"{'state':<28}{'slowness':>10}{'iopub wait':>12}{'startup wait':>14}")
    print(f"{'quiet':<28}{q:>10.2f}{speed.iopub_timeout(q):>11} s{speed.startup_timeout(q):>13} s")
    print(f"{f'beside {args.burners} CPU burners':<28}{b:>10.2f}{speed.iopub_timeout(b):>11} s"
          f"{speed.startup_timeout(b):>13} s")
    print(f"ratio busy / quiet: {b / q:.2f} (cores: {os.cpu_count()})")


if __name__ == "__main__":
    main()
