"""No student is lost to the grader (issue 10): the grader's failures are retried, never scored, and named.

Each test makes the grader fail the way it fails in the field and checks that the students get exactly the
points the quiet run of the demo class gave them (the session fixture `graded`), or, when a student cannot be
graded at all, that they get no score and a one-line cause:
- a machine whose cores are all busy with other work (the demo class beside as many CPU burners as cores);
- the fork server killed while its kernels run (kernels die under student code that did nothing wrong);
- a grading worker killed mid-run (a fresh worker grades what it left);
- kernels that cannot start at all (a memory limit too small for Python): "not graded", with the cause.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
import threading

import pytest

from course_grader import speed
from course_grader.failures import root_cause
from course_grader.pipeline import Options, run
from course_grader.workers import scratch_name
from demo_class import LIMITS, ROOT, graded_notebooks, reasons_on, same_scores
from process_tools import (ancestors, children, cpu_burners, gone, job_folder, kernels_inside, kill_inside_a_cell,
                           killer, poll, processes, processes_of, run_tmp, slow_class, uid_of, with_marker)


def test_the_root_cause_is_one_line_without_kernel_noise():
    log = ("[IPKernelApp] WARNING | Kernel is running over TCP without encryption. Anyone on the network could "
           "connect.\n[AutogradeApp | ERROR] There was an error processing assignment\nTraceback (most recent call "
           "last):\n  File \"x.py\", line 3, in f\n    start()\nRuntimeError: Kernel died before replying to "
           "kernel_info\nnbgrader.converters.base.NbGraderException: Please see the error log above for details.\n")
    assert root_cause(log) == "RuntimeError: Kernel died before replying to kernel_info"
    assert root_cause("[IPKernelApp] WARNING | Kernel is running over TCP without encryption.\n") == \
        "no reason in the log"
    assert "\n" not in root_cause("OSError: " + "no space\n" * 100) and len(root_cause("E" * 999)) <= 200


class _Clock:
    """A stand-in for speed.clock (time.perf_counter) that moves on by `step` s each time it is read."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_the_dead_kernel_waits_grow_when_the_machine_is_busy(monkeypatch):
    """The waits that only tell a lost kernel from a slow one follow the machine's measured slowness. The mechanism,
    with a stubbed clock (a real measurement moves with the machine's load: bench/bench_slowness.py prints it): the
    calibration work timed as a quiet core takes it, then three times slower."""
    monkeypatch.setattr(speed, "clock", _Clock(speed.QUIET_SECONDS))
    quiet = speed.slowness()
    monkeypatch.setattr(speed, "clock", _Clock(3 * speed.QUIET_SECONDS))
    busy = speed.slowness()
    assert quiet == 1.0 and busy == pytest.approx(3.0)
    assert speed.iopub_timeout(busy) > speed.iopub_timeout(quiet) >= speed.IOPUB_SECONDS
    assert speed.startup_timeout(busy) > speed.startup_timeout(quiet) >= speed.STARTUP_SECONDS
    monkeypatch.setattr(speed, "clock", _Clock(speed.QUIET_SECONDS / 10))
    assert speed.slowness() == 1.0  # a faster machine: the quiet waits, never shorter ones
    monkeypatch.setattr(speed, "clock", _Clock(1000 * speed.QUIET_SECONDS))
    assert speed.slowness() == speed.MAX_FACTOR  # bounded: a stalled measurement cannot make a wait endless
    samples = iter([1.0, 1.0, 40.0, 1.0, 1.0])  # one sample caught behind a burst of other work
    monkeypatch.setattr(speed, "_work", lambda: next(samples) * speed.QUIET_SECONDS)
    assert speed.slowness() == 1.0  # the median: one outlier does not stretch every wait


def test_a_class_graded_beside_cpu_burners_gets_the_quiet_scores(graded, course):
    """As many CPU-bound processes as cores run beside the whole demo class: exactly the quiet run's points."""
    with cpu_burners(os.cpu_count() or 1):
        busy = run(Options(root=course, jobs=2, notebooks=graded_notebooks(course), csv=course / "busy.csv",
                           feedback=False, **LIMITS))
    same_scores(busy, graded, [p.student for p in graded.plans], graded_notebooks(course))
    assert reasons_on(busy.rows, graded_notebooks(course)) == reasons_on(graded.rows, graded_notebooks(course))


def test_a_fork_server_killed_under_its_kernels_costs_no_points(graded, course, tmp_path):
    """The fork server dies while its kernels run student code: those notebooks are graded again with fresh
    kernels, and the students keep exactly their points. The kill comes at a known point: when a kernel forked
    from the server says it is inside a cell (a first cell that marks it, then works 3 s), not after a delay."""
    students = ["reference", "alice", "bob"]
    notebooks = graded_notebooks(course)
    class_dir = tmp_path / "class"
    for student in students:
        shutil.copytree(course / "submitted" / student, class_dir / student)
    with_marker(course / "submitted", class_dir, ["reference"], notebooks[:1], seconds=3)

    def server_under_a_kernel_inside_a_cell():
        # A kernel's supervisor is forked from the server and has its command line: the server is the farthest one.
        servers = set(processes("course_grader.zygote", "serve"))
        for kernel in kernels_inside(os.getpid()):
            found = [pid for pid in ancestors(kernel) if pid in servers]
            if found:
                return found[-1]
        return None

    with killer(server_under_a_kernel_inside_a_cell, settle=0.0) as killed:
        outcome = run(Options(root=course, class_dir=class_dir, jobs=2, students=students, notebooks=notebooks,
                              csv=course / "server-killed.csv", feedback=False, **LIMITS))
    assert killed, "no forked kernel was ever seen inside its cell"
    same_scores(outcome, graded, students, notebooks)
    retried = outcome.results["reference"].retried
    assert any("fork server died" in note for note in retried), retried


def test_a_killed_worker_is_replaced_and_a_student_never_graded_gets_no_score(graded, course):
    """bob's first grading worker is killed: a fresh one grades what it left, with bob's quiet points. Every one
    of carol's workers is killed: carol is 'not graded' with the cause, and no total."""
    notebooks = graded_notebooks(course)[:1]

    def worker_of(student):  # a grading worker of this process at work in <scratch>/students/<digest>.<share>/
        def find():
            pids = [pid for pid in set(children(os.getpid())) & set(processes("course_grader.autograde"))
                    if f"/students/{scratch_name(student)}." in job_folder(pid)]
            return min(pids) if pids else None
        return find

    with killer(worker_of("bob"), times=1) as bob_killed, killer(worker_of("carol"), times=10) as carol_killed:
        outcome = run(Options(root=course, jobs=2, students=["bob", "carol"], notebooks=notebooks,
                              csv=course / "killed.csv", feedback=False, **LIMITS))
    assert bob_killed and len(carol_killed) >= 2, (bob_killed, carol_killed)
    same_scores(outcome, graded, ["bob"], notebooks)
    carol = next(r for r in outcome.rows if r.student == "carol")
    assert carol.status == "not graded" and not carol.scores, carol
    assert "the grading worker died (killed by SIGKILL)" in carol.reasons[0], carol.reasons
    with open(course / "killed.csv") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    assert rows["carol"]["total"] == "" and rows["carol"]["status"] == "not graded"
    assert rows["bob"]["total"] != "" and rows["bob"]["status"] != "not graded"


def test_kernels_that_cannot_start_leave_the_student_not_graded_with_the_cause(course):
    """A memory limit too small for Python: every kernel dies before its first answer. No student code ran, so
    it is the grader's failure: retried (a fresh kernel, a fresh worker), then reported, never scored."""
    notebook = graded_notebooks(course)[0]
    outcome = run(Options(root=course, jobs=1, students=["reference"], notebooks=[notebook.split("_")[0]],
                          memory_mb=64, csv=course / "no-kernel.csv", feedback=False, **LIMITS))
    result, row = outcome.results["reference"], outcome.rows[0]
    assert not result.ok and list(result.not_graded) == [notebook]
    assert len(result.retried) >= 2, result.retried  # a fresh kernel in each of two workers
    assert row.status == "not graded" and not row.scores and row.reasons, row
    reason = row.reasons[0]
    assert reason.startswith(f"not graded: {notebook.split('_')[0]}: the kernel did not start: "), reason
    assert "Kernel died before replying to kernel_info" in reason and "\n" not in reason and len(reason) < 260
    assert "WARNING" not in reason and "[IPKernelApp]" not in reason


KILLED_RUN = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from course_grader.pipeline import Options, run
run(Options(root=Path(sys.argv[2]), class_dir=Path(sys.argv[3]), jobs=1, notebooks=["Q1"], cell_timeout=600,
            notebook_timeout=900, progress=False, feedback=False, report=False,
            csv=Path(sys.argv[4])))
"""


def test_a_killed_grading_run_leaves_no_kernel_and_the_next_run_sweeps_its_scratch(course, tmp_path, monkeypatch):
    """The whole grader SIGKILLed while its kernel is inside a cell (the kernel said so): the kernel goes with it,
    and the scratch folder it could not remove (the students' work, a gradebook with the hidden tests) is removed
    by the next run to start. The run uses a temporary folder of its own, so the test sees its folders alone."""
    _, class_dir = slow_class(course, tmp_path / "class")
    with run_tmp() as tmp:
        grader = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(ROOT), str(course), str(class_dir),
                                   str(tmp_path / "grades.csv")], env=dict(os.environ, TMPDIR=str(tmp)))
        kill_inside_a_cell(grader, "grader")
        assert list(tmp.glob("course-grade-*")), "the killed grader's scratch folder is not where the test looks"
        monkeypatch.setattr(tempfile, "tempdir", str(tmp))
        (tmp_path / "empty").mkdir()
        with pytest.raises(SystemExit, match="has no notebooks"):  # the next run: it stops early, having swept
            run(Options(root=tmp_path / "empty", progress=False))
        assert not list(tmp.glob("course-grade-*")), "the next run left the killed one's scratch folder"


def test_a_killed_grading_worker_takes_its_kernel_with_it(course, tmp_path):
    """A local grading worker (autograde --serve) SIGKILLed while its kernel is inside a cell: the kernel goes at
    once, while the run goes on (its retry still grading), not when the run's end sweeps what is left."""
    q1, class_dir = slow_class(course, tmp_path / "class")
    seen: dict[str, int] = {}

    def worker_under_a_kernel_inside_a_cell():  # one student, one job: the run's one grading worker
        kernels = kernels_inside(os.getpid())  # forked from the fork server: the worker runs its client
        workers = set(children(os.getpid())).intersection(processes("course_grader.autograde"))
        if kernels and len(workers) == 1:
            seen["uid"] = uid_of(kernels[0])
            return workers.pop()
        return None

    outcome: list = []
    grading = threading.Thread(target=lambda: outcome.append(run(Options(
        root=course, class_dir=class_dir, jobs=1, notebooks=["Q1"], cell_timeout=20, notebook_timeout=120,
        progress=False, feedback=False, report=False, csv=tmp_path / "grades.csv"))),
        daemon=True)
    with killer(worker_under_a_kernel_inside_a_cell, settle=0.0) as killed:
        grading.start()
        assert poll(lambda: killed), "no grading worker was seen with a kernel inside its cell"
        assert gone(lambda: processes_of(seen["uid"])), "the kernel outlived its grading worker"
        assert grading.is_alive(), "the run ended first: its end-of-run sweep, not the worker's death, did it"
    grading.join(600)
    assert outcome and outcome[0].results["slow"].graded == [q1], outcome
