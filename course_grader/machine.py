"""What a grading machine prepares once per run: the workers' environment, the data, the sandbox, the fork server.

The local pipeline prepares one (pipeline.py); with Dask every worker prepares its own on its own machine
(distributed.py), so nothing but data travels between the instructor's machine and the workers.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from course_grader import sandbox, zygote

from course_grader.settings import ENGINE_PACKAGES, KERNEL_PACKAGES  # a grading kernel's: never the judge
# The grader's own copy of the MNIST cache, world-readable: kernels (users of their own) read it. Beside it, private
# to the grader: the judge's reference results and the cached gradebooks (a gradebook holds the hidden tests).
DATA_DIR = Path.home().resolve() / ".cache" / "normalization-course-grading"
JUDGE_CACHE = DATA_DIR.with_name(DATA_DIR.name + "-judge")
GRADEBOOKS = DATA_DIR.with_name(DATA_DIR.name + "-gradebooks")
MATPLOTLIB = DATA_DIR.with_name(DATA_DIR.name + "-matplotlib")


def code_root() -> Path:
    """The folder holding the course packages this process imports."""
    return Path(__file__).resolve().parents[1]


def code_version(root: Path | None = None) -> str:
    """A hash of the course packages' Python files: what a worker's judge and probes are."""
    root = root or code_root()
    digest = hashlib.sha256()
    for package in (*KERNEL_PACKAGES, *ENGINE_PACKAGES):
        for path in sorted((root / package).rglob("*.py")):
            digest.update(f"{path.relative_to(root)}\n".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def worker_env(code_root: Path, one_thread: bool) -> dict[str, str]:
    """The environment of workers and (through them) of kernels; `code_root` holds the course packages."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code_root), env.get("PYTHONPATH", "")) if p)
    # NBGRADER_EXECUTION as nbgrader sets it for autograde: the visible checks (course_lib.checks) stand aside
    env.update(MPLBACKEND="Agg", COURSE_GRADING_MODE="1", COURSE_DATA_DIR=str(DATA_DIR), PYTHONHASHSEED="0",
               NBGRADER_EXECUTION="autograde", COURSE_JUDGE_CACHE=str(JUDGE_CACHE))
    if one_thread:  # one thread per kernel: N kernels share N cores without oversubscription
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return env


def prepare_data(env: dict[str, str]) -> None:
    """Build the shared MNIST cache once, before the kernels read it (read-only) in parallel.

    Skipped when the cache files are there (a kernel that finds them unusable rebuilds them atomically).
    """
    if all((Path(env["COURSE_DATA_DIR"]) / f"{name}.npy").is_file()
           for name in ("x_train", "y_train", "x_valid", "y_valid")):
        return
    code = "from course_lib.data import get_data; get_data()"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"could not prepare the MNIST data cache:\n{done.stderr[-2000:]}")


@dataclass
class Machine:
    """One machine's grading setup; `stop()` ends its fork server and any kernel left under its scratch."""

    scratch: Path
    env: dict[str, str]
    mode: str  # "isolated", or why kernels are not
    expose: list[str] = field(default_factory=list)  # what an isolated kernel may read
    socket: Path | None = None
    starting: Future | None = None
    pool: ThreadPoolExecutor | None = None

    @property
    def isolate(self) -> bool:
        return self.mode == "isolated"

    @classmethod
    def prepare(cls, scratch: Path, code_root: Path, one_thread: bool, isolate: bool = True,
                fork_server: bool = True) -> Machine:
        """The environment, the sandbox mode and the data; the fork server starts in the background (about 3 s)
        while the caller goes on: a worker's first kernel waits for it (zygote.starting_marker)."""
        env = worker_env(code_root, one_thread)
        mode = sandbox.probe() if isolate else "NOT ISOLATED (--no-sandbox: kernels run with limits only)"
        # An isolated kernel sees an allowlist only (sandbox.py): the Python installation, the environment, the
        # packages a kernel imports (course_lib, the recorder) and the data, read-only. Not the course root
        # (source/, the gradebook, the judge), not the class, not the grader's scratch. Found, not imported
        # (course_lib imports torch).
        packages = {Path(importlib.util.find_spec(m).origin).resolve().parent for m in KERNEL_PACKAGES}
        expose = [os.path.realpath(p) for p in (sys.base_prefix, sys.prefix)] + sorted(map(str, packages)) + \
            [str(DATA_DIR)]
        machine = cls(scratch, env, mode, expose)
        if fork_server:
            machine.socket = scratch / "zygote.sock"
            machine.pool = ThreadPoolExecutor(1)
            machine.starting = machine.pool.submit(zygote.start, machine.socket, env, scratch / "zygote.log", MATPLOTLIB)
        prepare_data(env)
        return machine

    @property
    def sockets(self) -> str:
        """Where each isolated kernel's socket folder is made: short and one per machine, so that a socket path fits a
        unix socket address (107 bytes) however deep a task's folder is."""
        return str(self.scratch / "s")

    @property
    def zygote(self) -> str:
        """The fork server's socket for a job ("" for fresh kernels)."""
        return str(self.socket) if self.starting else ""

    def kernels(self) -> str:
        """How kernels started: forked from the warm server, or fresh processes and why (waits for the server)."""
        server, why = self.starting.result() if self.starting else (None, "--fresh-kernels")
        return "forked from a warm fork server" if server else f"fresh processes ({why})"

    def stop(self) -> None:
        if self.starting:
            zygote.stop(self.starting.result()[0])
        if self.pool:
            self.pool.shutdown()
        sandbox.kill_kernels_under(self.scratch)
        sandbox.sweep_cgroups()
