"""Grading on Dask workers (issue 10): a scheduler and two worker processes on loopback, as a course would run
them on several machines (`dask scheduler`, `dask worker tcp://HOST:PORT --nthreads 1 --no-nanny`), grade the
demo class to exactly the scores of the local run (the session fixture `graded`), although one worker is
killed while it grades: Dask runs its task again on the other worker, and no student is lost.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from demo_class import LIMITS, graded_notebooks, reasons_on, same_scores
from process_tools import children, job_folder, kill_inside_a_cell, killer, processes, run_tmp, slow_class

from course_grader.pipeline import Options, run

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A Dask scheduler and two single-threaded worker processes without nannies (a killed one stays dead)."""
    from distributed import Client

    folder = tmp_path_factory.mktemp("dask")
    address = f"tcp://127.0.0.1:{_free_port()}"
    log = open(folder / "cluster.log", "w")
    procs = [_scheduler(address, log)]
    time.sleep(1.0)
    for i in range(2):
        procs.append(_worker(address, f"grader-{i}", folder / f"worker-{i}", log))
    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address, procs[1:]
    finally:
        _stop(procs, log)


def _scheduler(address: str, log) -> subprocess.Popen:
    """A Dask scheduler on loopback at `address` (tcp://127.0.0.1:PORT)."""
    return subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                             "--no-dashboard"], stdout=log, stderr=subprocess.STDOUT)


def _worker(address: str, name: str, folder: Path, log, env: dict | None = None) -> subprocess.Popen:
    """A single-threaded Dask worker without a nanny (a killed one stays dead), its files in `folder`."""
    return subprocess.Popen([str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                             "--name", name, "--local-directory", str(folder)], stdout=log, stderr=subprocess.STDOUT,
                            env=env)


def _stop(procs: list, log) -> None:
    """Terminate a cluster's processes (the scheduler first in the list, stopped last), killing any that linger."""
    for proc in reversed(procs):
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    log.close()


def test_two_dask_workers_grade_the_demo_class_to_the_local_scores_though_one_is_killed(graded, course, dask_cluster):
    address, workers = dask_cluster
    victim = workers[0].pid
    seen: set[str] = set()

    def victim_on_its_second_student():  # so that it has returned one result before it dies
        grading = [c for c in children(victim) if c in processes("course_grader.autograde")]
        seen.update(folder for folder in map(job_folder, grading) if folder)
        return victim if len(seen) >= 2 and grading else None

    with killer(victim_on_its_second_student, settle=3.0) as killed:
        outcome = run(Options(root=course, scheduler=address, notebooks=graded_notebooks(course),
                              csv=course / "dask.csv", **LIMITS))
    assert killed == [victim], "the worker was not killed mid-run"
    students = [p.student for p in graded.plans]
    same_scores(outcome, graded, students, graded_notebooks(course))
    assert reasons_on(outcome.rows, graded_notebooks(course)) == reasons_on(graded.rows, graded_notebooks(course))
    ran_on = {worker for r in outcome.results.values() for worker in r.machine["worker"].split(", ")}
    assert len(ran_on) == 2 and all(r.machine["mode"] == "isolated" for r in outcome.results.values()), ran_on
    assert outcome.sandbox == "isolated" and "forked from a warm fork server" in outcome.kernels, outcome.kernels
    for student in students:  # the autograded notebooks and the feedback came back as data
        assert len(list((course / "autograded" / student / "normalization").glob("*.ipynb"))) >= 2, student
        assert len(list((course / "feedback" / student / "normalization").glob("*.html"))) >= 2, student


def test_a_dask_worker_killed_mid_kernel_leaves_no_kernel_and_the_next_worker_sweeps_its_scratch(course, tmp_path):
    """A Dask worker SIGKILLed while its kernel is inside a cell (the kernel said so): no process of that kernel is
    left, and the worker that joins next removes the killed one's scratch folder (the student's work and a gradebook
    with the hidden tests) before grading the task again. The workers use a temporary folder of their own, so the
    test sees their folders alone."""
    q1, class_dir = slow_class(course, tmp_path / "class")  # its marker cell ends at the 5 s cell limit
    with run_tmp() as tmp:
        env = dict(os.environ, TMPDIR=str(tmp))
        address = f"tcp://127.0.0.1:{_free_port()}"
        log = open(tmp_path / "cluster.log", "w")
        procs = [_scheduler(address, log)]

        def worker(name: str) -> subprocess.Popen:
            procs.append(_worker(address, name, tmp_path / name, log, env))
            return procs[-1]

        outcome: list = []
        grading = threading.Thread(target=lambda: outcome.append(run(Options(
            root=course, class_dir=class_dir, scheduler=address, notebooks=["Q1"], cell_timeout=5, notebook_timeout=120,
            progress=False, feedback=False, report=False, csv=tmp_path / "dask.csv"))),
            daemon=True)
        try:
            victim = worker("victim")
            grading.start()
            kill_inside_a_cell(victim, "Dask worker")
            left = list(tmp.glob("course-grade-dask-*"))
            assert left, "the killed worker's scratch folder is not where the test looks"
            worker("next")  # its setup sweeps, then it grades the task again
            grading.join(600)
            log.flush()
            assert outcome and outcome[0].results["slow"].graded == [q1], \
                (outcome and outcome[0].results["slow"].error, (tmp_path / "cluster.log").read_text()[-3000:])
            assert not any(folder.exists() for folder in left), "the next worker left the killed one's scratch folder"
        finally:
            _stop(procs, log)


def test_dask_workers_grade_with_every_option_the_instructor_gave_and_none_of_their_paths():
    """Every option that decides how a notebook is graded reaches the workers as the instructor set it (the output
    caps and the worker's memory limit were once lost on the way: a hand-written subset carried the rest), while the
    instructor's own paths and the gradebook's URL (it may hold a password) stay on their machine."""
    import dataclasses

    from course_grader.distributed import for_workers

    defaults = Options(root=Path("/course"))
    given = {}
    for f in dataclasses.fields(Options):
        value = getattr(defaults, f.name)
        if isinstance(value, bool):
            given[f.name] = not value
        elif isinstance(value, (int, float)):
            given[f.name] = value + 3
    given.update(cell_timeout=47, db_url="postgresql://teacher:secret@db/course", csv=Path("/course/g.csv"), students=["a"],
                 class_dir=Path("/course/class"), scheduler="tcp://10.0.0.1:8786")
    instructor = dataclasses.replace(defaults, **given)
    sent = for_workers(instructor)
    private = {"root", "class_dir", "zip_dir", "students", "db_url", "csv", "scheduler"}
    for f in dataclasses.fields(Options):
        if f.name not in private:
            assert getattr(sent, f.name) == getattr(instructor, f.name), f.name
    assert "secret" not in repr(sent) and "/course" not in repr(sent)
