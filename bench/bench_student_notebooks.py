"""How long each notebook takes a student (printed, not asserted): the release filled with the solutions, run
from the top with the full data (student mode), one notebook after another, in the student install.

Each figure is the wall time of `jupyter nbconvert --execute` on one notebook (a fresh kernel: importing torch,
loading MNIST from its cache, the experiments and their training runs), which is what Restart & Run All costs.
The data cache is warmed first, so the first notebook does not pay for building it. Measure on a quiet machine.
Usage: python bench/bench_student_notebooks.py [--repeat R] [--python PATH]   (default: .venv-student, else .venv)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    from tests.student_env import private_env, solved_release

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    default = ROOT / ".venv-student" / "bin" / "python"
    parser.add_argument("--python", type=Path, default=default if default.exists() else ROOT / ".venv" / "bin" / "python")
    args = parser.parse_args(argv)
    jupyter = args.python.with_name("jupyter")
    home = Path(tempfile.mkdtemp())
    env = private_env(args.python.parent, home)
    warm = subprocess.run([str(args.python), "-c", "from course_lib import get_data; get_data()"], env=env,
                          capture_output=True, text=True)
    if warm.returncode != 0:
        raise SystemExit(f"could not load the data:\n{warm.stderr[-2000:]}")
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "normalization"
        notebooks = solved_release(folder)
        for _ in range(args.repeat):
            for path in notebooks:
                start = time.perf_counter()
                done = subprocess.run([str(jupyter), "nbconvert", "--to", "notebook", "--execute", "--output",
                                       str(Path(tmp) / "out.ipynb"), "--ExecutePreprocessor.timeout=1800", path.name],
                                      cwd=folder, env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"{path.name} failed in student mode:\n{done.stderr[-3000:]}")
                times.setdefault(path.stem, []).append(time.perf_counter() - start)
    shutil.rmtree(home, ignore_errors=True)
    print(f"student mode (full data), {args.python.parent.parent.name}, median of {args.repeat}:")
    for name, values in times.items():
        print(f"  {name:<28} {median(values):6.1f} s")
    print(f"  {'all nine':<28} {sum(median(v) for v in times.values()):6.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
