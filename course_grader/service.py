"""The warm grading service: one machine's grading setup, kept between runs, so that a run pays no start-up.

`python -m course_grader --warm` (what `make grade` runs) grades through this machine's service, and starts one
when none runs. The service holds what every run would otherwise prepare and import again:
- the machine (machine.Machine): the sandbox probe, the data cache, the fork server with torch and course_lib
  imported;
- grading worker processes (autograde.serve) with nbgrader, torch and the judge imported, started before any run
  asks (one per core).

A run opens one connection (a unix socket) per grading thread. The service lends each connection a worker process
for as long as it lasts and grades every job sent on it in that process, exactly as a local thread does
(workers.WorkerProcess): the same job, limits and sandboxed kernels, the result returned as data. The run keeps
everything else (the submissions, its scratch folder where each job's worker writes, merging, the gradebook, the
reports), so a run through the service writes the same files and scores as one without.

Which service: one per machine setup (`key`): the course code (machine.code_version), the Python, the sandbox and
kernel choices, and the COURSE_* and PYTHONPATH environment. Changed code gets a new service; an old one ends after
settings.WARM_IDLE seconds without a run, as every service does. `--stop-warm` ends them now.

Who may use it: its socket is in a folder only this user may enter (0700, checked before use), like the fork
server's. Isolated kernels do not see it (sandbox.py exposes an allowlist), and a kernel that is not isolated can
already run the grader itself.

If the service stops during a run (killed, out of memory), the notebooks in flight come back not graded with the
cause, and the run grades the rest, and those again, with a machine and worker processes of its own (Warm): the
grader's failure, never the student's.

Hand-written because what it serves is the grader's own worker process: a process pool (concurrent.futures,
multiprocessing) or Dask cannot lend a long-lived, already-imported process across separate runs of the CLI.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from course_grader import settings
from course_grader.autograde import Job, Result
from course_grader.failures import one_line

PROTOCOL = "1"  # changes whenever the requests or answers below change
START_LIMIT = 120.0  # seconds a run waits for a service it started to answer
NO_INFO = {"mode": "", "isolate": False, "expose": [], "zygote": "", "sockets": ""}  # before a service answers
BASE: str | None = None  # where the services' folder is made (None: the temporary folder)


class ServiceGone(OSError):
    """The service closed the connection or did not answer."""


def home() -> Path:
    """The folder of this user's services' sockets, logs and locks: private to the user, or none is used."""
    path = Path(BASE or tempfile.gettempdir()) / f"course-grade-warm-{os.geteuid()}"
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise PermissionError(f"{path} is not a folder private to this user: no warm grading service")
    return path


def key(code: Path, isolate: bool, fork_server: bool, one_thread: bool) -> str:
    """Which service grades for this setup (the module's docstring says what it covers)."""
    from course_grader.machine import code_version

    code = code.resolve()
    parts = [PROTOCOL, sys.executable, str(code), code_version(code), f"{isolate} {fork_server} {one_thread}"]
    parts += [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("COURSE_") or k == "PYTHONPATH"]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------- the service
class Service:
    """The service process: the machine, a pool of warm worker processes, one thread per connection."""

    def __init__(self, code: Path, isolate: bool, fork_server: bool, one_thread: bool, idle: float) -> None:
        self.code, self.isolate, self.fork_server, self.one_thread = code, isolate, fork_server, one_thread
        self.idle = idle
        self.key = key(code, isolate, fork_server, one_thread)
        self.size = os.cpu_count() or 1
        self.lock = threading.Lock()
        self.pool: list = []
        self.active = 0
        self.last = time.monotonic()
        self.stopping = False

    def run(self) -> int:
        folder = home()
        held = os.open(folder / f"{self.key}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another service of this key lives: it serves
            os.close(held)
            return 0
        from course_grader import leftovers
        from course_grader.machine import Machine
        from course_grader.workers import WorkerProcess

        scratch = leftovers.Scratch(prefix="course-grade-service-")  # removed at the end, or by the next sweep
        address = folder / f"{self.key}.sock"
        self.spawner = ThreadPoolExecutor(1)  # starts every worker process (they die with the thread that starts them)
        self.machine = None
        try:
            self.machine = Machine.prepare(scratch.path, self.code, self.one_thread, self.isolate, self.fork_server)
            self.new = lambda: WorkerProcess(self.machine.env, spawn=lambda start: self.spawner.submit(start).result())
            self.log = scratch.path / "workers.log"
            for _ in range(self.size):
                worker = self.new()
                worker.warm(self.log)
                self.pool.append(worker)
            self._serve(self._listen(address))
        finally:
            address.unlink(missing_ok=True)
            for worker in self.pool:
                worker.stop()
            if self.machine:
                self.machine.stop()
            self.spawner.shutdown()
            scratch.remove()
            os.close(held)
        return 0

    @staticmethod
    def _listen(address: Path) -> socket.socket:
        """Bound and listening before it appears under its name (a client that sees it can connect)."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        partial = f"{address}.{os.getpid()}"
        listener.bind(partial)
        os.chmod(partial, 0o600)
        listener.listen(64)
        os.rename(partial, address)
        listener.settimeout(0.5)
        return listener

    def _serve(self, listener: socket.socket) -> None:
        def stop(*_: object) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        print(f"serving {self.key} (pid {os.getpid()})", flush=True)
        with listener:
            while not self.stopping:
                with self.lock:
                    if not self.active and time.monotonic() - self.last > self.idle:
                        break
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                with self.lock:
                    self.active += 1
                threading.Thread(target=self._connection, args=(conn,), daemon=True).start()
            deadline = time.monotonic() + 60  # stopping: the jobs in flight end first (each answers its run)
            while self.active and time.monotonic() < deadline:
                time.sleep(0.1)

    def _connection(self, conn: socket.socket) -> None:
        """Answer one client's requests, a line of JSON each, in order; its worker process goes back to the pool."""
        worker = None
        conn.settimeout(None)
        try:
            with conn, conn.makefile("rb") as requests:
                for line in requests:
                    request = json.loads(line)
                    if "job" in request:
                        worker = worker or self._take()
                        result = worker.grade(Job(**request["job"]), float(request["limit"]), bool(request["fresh"]))
                        answer = {"result": asdict(result)}
                    else:
                        answer = self._answer(request)
                    conn.sendall(json.dumps(answer).encode() + b"\n")
        except (OSError, ValueError, TypeError, KeyError) as exc:  # a client gone, or one of another version
            print(f"connection ended: {type(exc).__name__}: {exc}", flush=True)
        finally:
            if worker:
                self._give_back(worker)
            with self.lock:
                self.active -= 1
                self.last = time.monotonic()

    def _answer(self, request: dict) -> dict:
        if request.get("stop"):
            self.stopping = True
            return {"stopping": os.getpid()}
        if request.get("kernels"):
            return {"kernels": self.machine.kernels()}
        machine = self.machine
        return {"protocol": PROTOCOL, "key": self.key, "pid": os.getpid(), "mode": machine.mode,
                "isolate": machine.isolate, "expose": machine.expose, "zygote": machine.zygote,
                "sockets": machine.sockets}

    def _take(self):
        with self.lock:
            if self.pool:
                return self.pool.pop()
        return self.new()

    def _give_back(self, worker) -> None:
        alive = worker.proc is not None and worker.proc.poll() is None
        with self.lock:
            if alive and len(self.pool) < self.size and not self.stopping:
                self.pool.append(worker)
                return
        worker.stop()


# ----------------------------------------------------------------------------------------------------- a run's side
class Remote:
    """A run's connections to one service (one per grading thread); its machine as the service describes it."""

    def __init__(self, address: Path, info: dict) -> None:
        self.address = address
        self.info = info
        self.mode: str = info["mode"]
        self.isolate: bool = info["isolate"]
        self.expose: list[str] = info["expose"]
        self.zygote: str = info["zygote"]
        self.sockets: str = info["sockets"]
        self.local = threading.local()
        self.lock = threading.Lock()
        self.connections: list = []  # (socket, its reader): the socket closes only once both are closed

    def _connection(self):
        if getattr(self.local, "conn", None) is None:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(str(self.address))
            answers = conn.makefile("rb")
            with self.lock:
                self.connections.append((conn, answers))
            self.local.conn, self.local.answers = conn, answers
        return self.local.conn, self.local.answers

    def ask(self, request: dict, timeout: float | None = 30.0) -> dict:
        """Send one request on this thread's connection; its answer (ServiceGone when there is none)."""
        try:
            conn, answers = self._connection()
            conn.settimeout(timeout)
            conn.sendall(json.dumps(request).encode() + b"\n")
            line = answers.readline()
        except OSError as exc:
            self.local.conn = None
            raise ServiceGone(f"{type(exc).__name__}: {exc}") from exc
        if not line:
            self.local.conn = None
            raise ServiceGone("it closed the connection")
        return json.loads(line)

    def grade(self, job: Job, limit: float, fresh: bool) -> Result:
        # The service's worker enforces `limit` itself; the margin covers starting a worker process afresh.
        answer = self.ask({"job": asdict(job), "limit": limit, "fresh": fresh}, timeout=limit + 120)
        return Result(**answer["result"])

    def close(self) -> None:
        """Close every connection: the service then takes back their worker processes for the next run."""
        with self.lock:
            connections, self.connections = self.connections, []
        for conn, answers in connections:
            answers.close()
            conn.close()


def _hello(address: Path) -> Remote | None:
    """The service answering at `address`, or None."""
    remote = Remote(address, NO_INFO)
    try:
        info = remote.ask({"hello": PROTOCOL}, timeout=30)
    except (ServiceGone, ValueError):
        return None
    finally:
        remote.close()
    return Remote(address, info) if info.get("protocol") == PROTOCOL else None


def connect(code: Path, isolate: bool, fork_server: bool, one_thread: bool) -> Remote | None:
    """The running service for this setup, or None."""
    try:
        address = home() / f"{key(code, isolate, fork_server, one_thread)}.sock"
    except OSError:
        return None
    return _hello(address)


def start(code: Path, isolate: bool, fork_server: bool, one_thread: bool,
          idle: float = settings.WARM_IDLE) -> tuple[Remote | None, str]:
    """The service for this setup, started if none runs (detached: it outlives this run, for the next);
    (None, why) when it cannot be used."""
    try:
        folder = home()
    except OSError as exc:
        return None, one_line(f"{type(exc).__name__}: {exc}")
    name = key(code, isolate, fork_server, one_thread)  # hashes the course code: once, not at every poll
    address, log = folder / f"{name}.sock", folder / f"{name}.log"
    remote = _hello(address)
    if remote:
        return remote, "warm"
    flags = [] if isolate else ["--no-sandbox"]
    flags += [] if fork_server else ["--fresh-kernels"]
    flags += ["--one-thread"] if one_thread else []
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "course_grader.service", "--code", str(code), "--idle",
                                 str(idle), *flags], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                cwd=folder, start_new_session=True)
    deadline = time.monotonic() + START_LIMIT
    while time.monotonic() < deadline:
        remote = _hello(address)
        if remote:
            return remote, "started"
        if proc.poll():  # it failed (exit 0: another service of this key won the race, and will answer)
            break
        time.sleep(0.05)
    return None, f"the warm grading service did not start (its log: {log})"


def graders(code: Path, setup: dict, own: Callable[[], object], say: Callable[[str], None] = lambda why: None):
    """This setup's graders through the warm service (started if none runs): a Warm, which falls back to `own()` if
    the service dies; `own()` at once, after saying why, when no service can be used. The pipeline's local run and
    each Dask worker choose here."""
    remote, how = start(code, **setup)
    if remote is None:
        say(f"grading without the warm service: {how}")
        return own()
    return Warm(remote, own)


def stop_all() -> list[int]:
    """Ask every service of this user to end (after the jobs they are grading); the pids that said they would."""
    stopped = []
    for address in sorted(home().glob("*.sock")):
        remote = Remote(address, NO_INFO)
        try:
            stopped.append(remote.ask({"stop": True}, timeout=10)["stopping"])
        except (ServiceGone, ValueError, KeyError):
            pass
        finally:
            remote.close()
    return stopped


class Warm:
    """A run's graders through the service (workers.Graders' three methods); once the service is gone, through a
    machine and worker processes of this run's own (`fallback()` makes them, once)."""

    def __init__(self, remote: Remote, fallback: Callable[[], object]) -> None:
        self.remote = remote
        self.fallback = fallback
        self.own = None
        self.lock = threading.Lock()

    @property
    def mode(self) -> str:
        return self.own.mode if self.own else self.remote.mode

    def _own(self):
        with self.lock:
            if self.own is None:
                self.own = self.fallback()
            return self.own

    def grade(self, build: Callable[[object], Job], limit: float, fresh: bool = False) -> Result:
        if self.own is None:
            job = build(self.remote)
            try:
                return self.remote.grade(job, limit, fresh)
            except ServiceGone as exc:
                self._own()  # every later job is graded here
                return Result(job.student, ok=False, error=one_line(f"the warm grading service stopped: {exc}"))
        return self.own.grade(build, limit, fresh)

    def describe(self) -> tuple[str, str]:
        if self.own:
            mode, kernels = self.own.describe()
            return mode, f"{kernels} (the warm grading service stopped during the run)"
        try:
            kernels = self.remote.ask({"kernels": True})["kernels"]
        except (ServiceGone, KeyError) as exc:
            kernels = f"unknown ({exc})"
        return self.remote.mode, f"{kernels}, kept warm between runs by the grading service"

    def stop(self) -> None:
        self.remote.close()
        if self.own:
            self.own.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m course_grader.service", description=__doc__.splitlines()[0])
    p.add_argument("--code", type=Path, required=True, help="the folder holding the course packages")
    p.add_argument("--no-sandbox", dest="isolate", action="store_false")
    p.add_argument("--fresh-kernels", dest="fork_server", action="store_false")
    p.add_argument("--one-thread", action="store_true", help="one thread per kernel (several jobs at once)")
    p.add_argument("--idle", type=float, default=settings.WARM_IDLE, help="seconds without a run before it ends")
    a = p.parse_args(argv)
    from course_grader.autograde import skip_slow_imports

    skip_slow_imports()
    return Service(a.code, a.isolate, a.fork_server, a.one_thread, a.idle).run()


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.exit(main())
