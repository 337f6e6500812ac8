"""The warm grading service (course_grader/service.py, `--warm`): a run through it gives the scores of a run without,
a second run pays no start-up, a service killed during a run costs no notebook, and a folder another user prepared
is never trusted.

Each test's services have a key of their own (COURSE_TEST_SERVICE, part of the key) and are stopped by the test, so
a service of the machine's user (an instructor's `make grade`) is neither used nor stopped here.
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

from course_grader import service
from course_grader.machine import code_root
from course_grader.pipeline import Options, run
from demo_class import LIMITS, scores_of

SETUP = dict(isolate=True, fork_server=True, one_thread=True)  # what a run with jobs=2 asks of a service


@pytest.fixture
def own_key(monkeypatch, course):
    """Services of this test only: at its end, those of its key (the course copy's code, and the installed code that
    Dask workers import) are asked to stop, waited for, and their files removed."""
    monkeypatch.setenv("COURSE_TEST_SERVICE", uuid.uuid4().hex)
    pids: list[int] = []
    folder, codes = service.home(), (course, code_root())
    yield pids
    asked = [remote for code in codes if (remote := service.connect(code, **SETUP))]
    for remote in asked:  # kept until the services have ended: closing must end the connection by itself
        pids.append(remote.ask({"stop": True})["stopping"])
        remote.close()
    lingered = [pid for pid in pids if not _ended(pid, 30)]
    for pid in lingered:
        os.kill(pid, signal.SIGKILL)
    for code in codes:
        for path in folder.glob(f"{service.key(code, **SETUP)}.*"):
            path.unlink()
    assert not lingered, "a service asked to stop was still running 30 s later (killed)"


def _ended(pid: int, seconds: float) -> bool:
    """True once process `pid` is gone or a zombie (a service this process started is its child until it ends)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.1)
    return False


def _options(course, tmp_path, name, **more):
    return Options(root=course, jobs=2, students=["reference", "alice"], notebooks=["Q7", "Q2"], feedback=False,
                   report=False, csv=tmp_path / f"{name}.csv", **LIMITS, **more)


def test_a_run_through_the_warm_service_scores_as_one_without_and_the_next_pays_no_start_up(course, tmp_path, own_key):
    plain = run(_options(course, tmp_path, "plain"))
    first = run(_options(course, tmp_path, "first", warm=True))
    remote = service.connect(course, **SETUP)
    assert remote is not None, "the first --warm run left no service for the next"
    own_key.append(remote.info["pid"])
    second = run(_options(course, tmp_path, "second", warm=True))
    for student in ("reference", "alice"):
        assert scores_of(first, student) == scores_of(plain, student)
        assert scores_of(second, student) == scores_of(plain, student)
        assert second.results[student].ok and not second.results[student].retried
    assert "kept warm between runs" in second.kernels
    assert service.connect(course, **SETUP).info["pid"] == remote.info["pid"], "the second run started another"
    # The plain run's workers imported nbgrader, torch and the judge while its first jobs waited; the second run's
    # were ready before it asked.
    assert sum(r.phases.get("worker start-up", 0.0) for r in plain.results.values()) > 1.0
    assert sum(r.phases.get("worker start-up", 0.0) for r in second.results.values()) == 0.0


def test_a_service_killed_during_a_run_costs_no_notebook(course, tmp_path, own_key, monkeypatch):
    """The service dies (SIGKILL) as the run sends its second job: the jobs on it come back not graded, and the run
    grades them, and every later one, with its own machine and worker processes. Same scores; it says so."""
    plain = run(_options(course, tmp_path, "plain"))
    remote, how = service.start(course, **SETUP)
    assert remote, how
    pid = remote.info["pid"]
    own_key.append(pid)
    sent = []
    grade = service.Remote.grade

    def kill_on_the_second(self, job, limit, fresh):
        sent.append(job.notebooks)
        if len(sent) == 2:
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        return grade(self, job, limit, fresh)

    monkeypatch.setattr(service.Remote, "grade", kill_on_the_second)
    killed = run(_options(course, tmp_path, "killed", warm=True))
    assert len(sent) >= 2
    for student in ("reference", "alice"):
        assert killed.results[student].ok, killed.results[student].error
        assert scores_of(killed, student) == scores_of(plain, student)
    assert "the warm grading service stopped during the run" in killed.kernels


def test_a_service_folder_another_user_could_enter_is_not_used(course, tmp_path, own_key, monkeypatch, capsys):
    """An attacker who creates the service folder first (world-writable /tmp) could put a socket of theirs there and
    read every job. A folder that is not private to this user is refused, and the run grades without a service."""
    monkeypatch.setattr(service, "BASE", str(tmp_path))
    folder = tmp_path / f"course-grade-warm-{os.geteuid()}"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    with pytest.raises(PermissionError):
        service.home()
    remote, why = service.start(course, **SETUP)
    assert remote is None and "not a folder private to this user" in why
    outcome = run(Options(root=course, jobs=1, students=["reference"], notebooks=["Q7"], feedback=False,
                          report=False, csv=tmp_path / "g.csv", warm=True, **LIMITS))
    assert outcome.results["reference"].ok
    assert "grading without the warm service" in capsys.readouterr().err
    assert not list(folder.iterdir()), "something was written in a folder that is not private"


def test_changed_code_or_settings_get_another_service(course, tmp_path):
    """A service grades with the code it imported: a run with other course code (or another sandbox or kernel setup)
    must not reach it."""
    import shutil

    base = service.key(course, **SETUP)
    assert service.key(course, **{**SETUP, "isolate": False}) != base
    assert service.key(course, **{**SETUP, "fork_server": False}) != base
    copy = tmp_path / "copy"
    shutil.copytree(course / "course_judge", copy / "course_judge")
    before = service.key(copy, **SETUP)
    path = copy / "course_judge" / "q3.py"
    path.write_text(path.read_text() + "\n# changed\n")
    assert service.key(copy, **SETUP) != before


def test_dask_workers_grade_through_their_machine_s_service(course, tmp_path, own_key):
    """`--dask-workers 2 --warm`: both Dask workers of this machine grade through one service, with the local scores."""
    plain = run(_options(course, tmp_path, "plain"))
    dask = run(_options(course, tmp_path, "dask", warm=True, dask_workers=2))
    for student in ("reference", "alice"):
        assert scores_of(dask, student) == scores_of(plain, student)
    assert "kept warm between runs" in dask.kernels
    assert service.connect(code_root(), **SETUP) is not None, "the Dask workers (the installed code) left no service"
