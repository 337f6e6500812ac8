"""Load time of a notebook's data cell: cold (no cache) and cached, each in a fresh process.

Uses a temporary COURSE_DATA_DIR so the user's cache is neither used nor touched.
Usage: .venv/bin/python bench/bench_data.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The data cell of a notebook: load, then normalise with the training statistics.
CELL = """
import json, time
t0 = time.perf_counter()
from course_lib import get_data, normalize_to
t1 = time.perf_counter()
x_train, y_train, x_valid, y_valid = get_data()
x_train, x_valid = normalize_to(x_train, x_valid)
t2 = time.perf_counter()
x_train, y_train, x_valid, y_valid = get_data()
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "cell": t2 - t1, "again": t3 - t2}))
"""


def run_cell(env: dict) -> dict:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CELL], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["process"] = time.perf_counter() - t
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    rows: dict[str, list[dict]] = {"cold": [], "cached": []}
    for mode in ("full", "grading"):
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as d:
                env = {**os.environ, "COURSE_DATA_DIR": d, "PYTHONPATH": str(ROOT)}
                env.pop("NBGRADER_EXECUTION", None)
                env["COURSE_GRADING_MODE"] = "1" if mode == "grading" else "0"
                rows.setdefault(f"cold ({mode})", []).append(run_cell(env))
                rows.setdefault(f"cached ({mode})", []).append(run_cell(env))
    rows = {k: v for k, v in rows.items() if v}
    print(f"cores: {os.cpu_count()}, {args.repeats} fresh processes each, medians in seconds")
    print(f"{'case':<18}{'get_data+normalize':>20}{'2nd call':>10}{'import':>9}{'process':>9}")
    for name, rs in rows.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(f"{name:<18}{med['cell']:>20.3f}{med['again']:>10.3f}{med['import']:>9.3f}{med['process']:>9.3f}")


if __name__ == "__main__":
    main()
