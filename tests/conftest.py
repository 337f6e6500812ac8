"""Test-wide settings: the course root is importable, grading mode is on, plots go nowhere."""

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("COURSE_GRADING_MODE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def course():
    """A throw-away copy of the course (not under /tmp: grading kernels get a private /tmp and must still import
    the course packages), with the demo class in its submitted/ (as `make grade` writes it)."""
    from course_mutation import demo

    base = Path(tempfile.mkdtemp(prefix="test-grade-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    try:
        course = demo.course_copy(base, ROOT)
        DEMO_PLANS[course] = demo.build(course, course / "submitted")
        yield course
    finally:
        shutil.rmtree(base, ignore_errors=True)


DEMO_PLANS: dict = {}  # course -> the demo class's plans (what each demo student did)


class Graded:
    """A run's outcome (pipeline.Outcome's fields) and the demo plans it graded."""

    def __init__(self, outcome, plans):
        self.outcome, self.plans = outcome, plans

    def __getattr__(self, name):
        return getattr(self.outcome, name)


@pytest.fixture(scope="session")
def graded(course):
    """The whole demo class, graded with 2 jobs (on the notebooks where something happens, demo_class.fixture_notebooks),
    in the class's order."""
    from course_grader.pipeline import Options, run
    from demo_class import LIMITS, fixture_notebooks

    plans = DEMO_PLANS[course]
    started = time.monotonic()
    outcome = run(Options(root=course, jobs=2, students=[p.student for p in plans], notebooks=fixture_notebooks(course),
                          **LIMITS))
    print(f"demo class graded in {time.monotonic() - started:.0f} s; kernels: {outcome.sandbox}")
    return Graded(outcome, plans)


def pytest_configure(config):
    """Markers of tests that depend on work landing elsewhere (they say so when they fail)."""
    config.addinivalue_line("markers", "audit_review: depends on the audit (course_judge/audit.py) putting a finding it "
                                       "is unsure of under review (issue 17, item 1)")
