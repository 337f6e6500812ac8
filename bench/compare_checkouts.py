"""One submission graded by this checkout and by an older one, side by side in one run (printed, not asserted).

The older checkout is a copy of any earlier commit (it must have `make grade`'s engine, as
`course_grading.grade` or `course_grader`), run with this environment's Python:

    mkdir /opt/before && git archive <commit> | tar -x -C /opt/before
    python bench/compare_checkouts.py --before /opt/before

(not under /tmp, /var/tmp or /root, which grading kernels cannot see; the older checkout's kernels import its own
course packages through a sitecustomize this script writes).

Each round grades the demo class's `reference` student (all nine notebooks, grading mode, N jobs, no feedback)
once with each checkout, in turn, each in a throw-away copy of its own course; one warm-up round of each is not
counted (caches: the template gradebook, the judge's reference runs, matplotlib's fonts). Medians are compared.
Usage: python bench/compare_checkouts.py --before DIR [--jobs N] [--repeat R]
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


def engine(checkout: Path) -> str:
    """The module that runs `make grade` in a checkout."""
    return "course_grader" if (checkout / "course_grader" / "__main__.py").exists() else "course_grading.grade"


def course_copy(checkout: Path, base: Path) -> Path:
    """A throw-away course of the checkout: its source, config, packages (linked) and a fresh release."""
    course = base / "course"
    course.mkdir()
    shutil.copytree(checkout / "source", course / "source")
    shutil.copy(checkout / "nbgrader_config.py", course)
    for entry in checkout.iterdir():
        if entry.is_dir() and entry.name.startswith("course_"):
            (course / entry.name).symlink_to(entry)
    shutil.copytree(checkout / "release", course / "release")
    return course


# The environment's editable install maps the course packages to this checkout; a kernel imports some of them
# late (course_lib.checks), so an older checkout's kernels would mix its recorder with this checkout's library.
# A sitecustomize on the older checkout's PYTHONPATH points the mapping at it instead.
REMAP = """import sys
for _finder in sys.meta_path:
    _mod = sys.modules.get(getattr(_finder, "__module__", "") or "")
    if _mod is not None and "editable" in _mod.__name__ and hasattr(_mod, "MAPPING"):
        _mod.MAPPING.update({{k: v.replace({root!r}, {other!r}) for k, v in _mod.MAPPING.items()}})
"""


def remapped(checkout: Path, base: Path) -> str:
    """A folder holding the sitecustomize that points this environment's course packages at `checkout`."""
    site = base / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(REMAP.format(root=str(ROOT), other=str(checkout)))
    return str(site)


def _env(checkout: Path, site: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [site, str(checkout)])), MPLBACKEND="Agg")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def demo_class(checkout: Path, course: Path, site: str = "") -> None:
    """Write the checkout's demo class into the course's submitted/ where the checkout's make grade does so
    itself (course_mutation.demo); older engines built it on every run."""
    if (checkout / "course_mutation" / "demo.py").exists():
        subprocess.run([sys.executable, "-m", "course_mutation.demo", "--root", str(course)], cwd=course,
                       env=_env(checkout, site), check=True, capture_output=True, text=True)


def grade(label: str, checkout: Path, course: Path, jobs: int, site: str = "") -> float:
    """Seconds to grade the reference student with the checkout's engine."""
    env = _env(checkout, site)
    cmd = [sys.executable, "-m", engine(checkout), "--root", str(course), "--student", "reference", "--jobs",
           str(jobs), "--no-feedback", "--quiet", "--csv", str(course / "grades.csv")]
    started = time.monotonic()
    done = subprocess.run(cmd, cwd=course, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode != 0 or "reference" not in done.stdout:
        raise SystemExit(f"grading with {checkout} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    import csv

    with open(course / "grades.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["student"] == "reference")
    print(f"  {label:<7} {seconds:6.1f} s   (reference: {row['total']} of {row['max']} points)", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the older commit")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    checkouts = {"before": args.before.resolve(), "after": ROOT}
    if str(checkouts["before"]).startswith(("/var/tmp/", "/tmp/", "/root/")):
        raise SystemExit(f"{checkouts['before']}: grading kernels cannot see /tmp, /var/tmp or /root; put the older "
                         f"checkout elsewhere (e.g. /opt/before)")
    base = Path(tempfile.mkdtemp(prefix="bench-before-after-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    sites = {"before": remapped(checkouts["before"], base), "after": ""}
    try:
        courses = {}
        for name, checkout in checkouts.items():
            (base / name).mkdir()
            courses[name] = course_copy(checkout, base / name)
            demo_class(checkout, courses[name], sites[name])
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; {args.jobs} jobs; "
              f"before = {checkouts['before']}, after = {ROOT}")
        print("warm-up (not counted):")
        for name, checkout in checkouts.items():
            grade(name, checkout, courses[name], args.jobs, sites[name])
        times: dict[str, list[float]] = {name: [] for name in checkouts}
        for round_ in range(args.repeat):
            print(f"round {round_ + 1}:")
            for name, checkout in (checkouts.items() if round_ % 2 == 0 else reversed(checkouts.items())):
                times[name].append(grade(name, checkout, courses[name], args.jobs, sites[name]))
        before, after = median(times["before"]), median(times["after"])
        print(f"one submission (9 notebooks, {args.jobs} jobs): before {before:.1f} s, after {after:.1f} s "
              f"(medians of {args.repeat}); after / before = {after / before:.2f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
