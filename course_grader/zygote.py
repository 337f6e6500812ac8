"""A fork server for grading kernels: import torch and course_lib once per run, not once per notebook.

A fresh grading kernel spends about 3 s of CPU starting Python, IPython and importing torch, matplotlib and
course_lib before the notebook's first line runs: more than most notebooks' own work in grading mode. The
fork server (`serve`) imports all of that once, single-threaded, and then forks one child per kernel. The
child becomes the kernel's supervisor in the same sandbox as an exec'd kernel (sandbox.launch: its own
namespaces, an allowlist view, a user of its own, limits, a whitelisted environment); the kernel process
resets what a fresh process would have fresh (signal handlers, random seeds, thread count) and runs ipykernel
in-process on the kernel manager's connection file.

The kernel manager must see an ordinary process it can interrupt and kill, so its kernel command is the
thin `client` here (stdlib only, ~50 ms): it hands its argv, environment, working directory and standard
streams to the server over a unix socket, forwards every signal it gets to the forked supervisor, and exits
with the kernel's status. When the client dies (even by SIGKILL) the server kills its kernel; when the
server dies its kernels die too (parent-death signal). When the server cannot be reached the client falls
back to the exec path (sandbox.main), so a kernel always starts.

The server must not start threads or touch CUDA before forking (a forked child inherits neither); it checks
that it is single-threaded after its imports and refuses to serve otherwise. numpy's OpenBLAS starts its
thread pool when it loads, so the server runs with OPENBLAS_NUM_THREADS=1: numpy's own BLAS (not torch's
math, whose threads are set per kernel) is single-threaded in forked kernels.

    COURSE_ZYGOTE_SOCKET=SOCKET python -m course_grader.zygote serve   (the pipeline starts one per run)
    python -m course_grader.zygote client --socket SOCKET [sandbox options] -- KERNEL ARGV
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
from pathlib import Path

from course_grader import sandbox, settings

# What a grading kernel imports anyway: the kernel itself (with its debugger and history), what the notebooks'
# setup and test cells import, and torch._dynamo (with torch._inductor.config: about 900 modules, 1-1.3 s), which
# every kernel imports at its first probe (torch wraps a TorchDispatchMode's __torch_dispatch__, the guard's, in a
# function that imports it at its first call), in torch.optim's optimizers and in set_seed
# (torch.use_deterministic_algorithms). The hidden tests' probes are added by _preload().
PRELOAD = ("ipykernel.kernelapp", "ipykernel.ipkernel", "ipykernel.debugger", "IPython", "sqlite3", "pdb",
           "matplotlib_inline.backend_inline", "numpy", "numpy.random", "torch", "torch.nn", "torch.nn.functional",
           "torch._dynamo", "matplotlib", "matplotlib.pyplot", "matplotlib.backends.backend_agg",
           "PIL.PngImagePlugin", "fastprogress", *settings.KERNEL_PACKAGES,
           "pyseccomp")  # the sandbox's seccomp binding: loaded once here, each kernel only compiles its filter (~1 ms)
HEADER = struct.Struct("!Q")


def _read_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the client went away mid-request")
        data += chunk
    return data


# ----------------------------------------------------------------------------------------------- server
class Server:
    """Accept kernel requests, fork a kernel for each, report each kernel's exit to its client."""

    def __init__(self, path: str) -> None:
        import selectors

        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Bound and listening before it appears under its name: a client that sees the socket can connect.
        partial = f"{path}.{os.getpid()}"
        self.listener.bind(partial)
        os.chmod(partial, 0o600)  # only the grader (and root) may ask for a kernel
        self.listener.listen(64)
        os.rename(partial, path)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.children: dict[int, socket.socket] = {}  # kernel pid -> its client's connection
        self.stopping = False

    def serve(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        print("ready", flush=True)  # the pipeline waits for this line
        # When the pipeline goes away, stop (and kill the kernels). Not PR_SET_PDEATHSIG: that fires when the
        # parent's *thread* that started us ends, and the pipeline starts the server from a worker thread.
        parent = os.getppid()
        while not self.stopping and os.getppid() == parent:
            for key, _ in self.selector.select(timeout=0.05):
                if key.fileobj is self.listener:
                    self._accept()
                else:
                    self._client_event(key.fileobj)
            self._reap()
        for pid in list(self.children):
            self._kill(pid)
        self._reap()

    def _stop(self, *_: object) -> None:
        self.stopping = True

    def _accept(self) -> None:
        import selectors

        conn, _ = self.listener.accept()
        fds: list[int] = []
        try:
            conn.settimeout(10)
            msg, fds, _, _ = socket.recv_fds(conn, HEADER.size, 3)
            msg += _read_exact(conn, HEADER.size - len(msg))
            request = json.loads(_read_exact(conn, HEADER.unpack(msg)[0]))
            if len(fds) != 3:
                raise ValueError(f"expected the client's 3 standard streams, got {len(fds)} descriptors")
        except (OSError, ValueError) as exc:
            self._answer(conn, f"error {type(exc).__name__}: {exc}")
            conn.close()
            for fd in fds:
                os.close(fd)
            return
        try:
            pid = os.fork()
        except OSError as exc:  # out of processes or memory: this client starts a fresh kernel instead
            pid = -1
            self._answer(conn, f"error fork: {exc}")
        if pid == 0:  # the kernel: never returns
            self._child(conn, fds, request)
        for fd in fds:
            os.close(fd)
        if pid < 0:
            conn.close()
            return
        self.children[pid] = conn
        self.selector.register(conn, selectors.EVENT_READ, pid)
        self._answer(conn, f"pid {pid}")

    def _child(self, conn: socket.socket, fds: list[int], request: dict) -> None:
        code = 1
        try:
            # Nothing of the server may reach student code: no socket to ask for more root kernels.
            self.selector.close()
            for other in [self.listener, conn, *self.children.values()]:
                other.close()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            os.setsid()
            code = run_kernel(request)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # noqa: BLE001 - reported on the kernel's stderr, then the kernel is gone
            import traceback

            traceback.print_exc()
        finally:
            try:
                import atexit

                atexit._run_exitfuncs()
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    def _client_event(self, conn: socket.socket) -> None:
        """A client wrote or hung up: it died (killed by its kernel manager), so its kernel must die too."""
        pid = self.selector.get_key(conn).data
        try:
            if conn.recv(64):
                return
        except OSError:
            pass
        self._kill(pid)

    def _kill(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            self.selector.unregister(conn)
            self._answer(conn, f"exit {os.waitstatus_to_exitcode(status)}")
            conn.close()

    @staticmethod
    def _answer(conn: socket.socket, line: str) -> None:
        try:
            conn.sendall(line.encode() + b"\n")
        except OSError:
            pass


def run_kernel(request: dict) -> int:
    """In the forked child: the sandbox's supervisor (sandbox.launch), whose kernel runs ipykernel in-process."""
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sandbox.die_with_parent()  # the server gone: this supervisor, then its kernel, go too
    os.chdir(request["cwd"])
    args = sandbox.parser().parse_args(request["args"])
    sandbox.launch(args, request["env"], _ipykernel)
    return 1  # not reached: launch exits


def _ipykernel(cmd: list[str], env: dict[str, str]) -> None:
    """In the sandboxed kernel process: look like a fresh process, then run ipykernel on the connection file."""
    import numpy as np
    import torch

    os.environ.clear()
    os.environ.update(env)
    # A fresh process has fresh random seeds: numpy and torch seed themselves from the OS (CPython already
    # reseeds `random` in a forked child).
    np.random.seed()
    torch.seed()
    threads = env.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))
    if cmd[1:3] != ["-m", "ipykernel_launcher"]:
        raise SystemExit(f"the fork server only starts ipykernel, not {cmd}")
    # parent_handle=1: no parent poller (its parent is the namespace's init); it dies with its namespace.
    sys.argv = ["ipykernel_launcher", *cmd[3:], "--IPKernelApp.parent_handle=1"]
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


def _preload() -> list[str]:
    """PRELOAD and every course_recorder.qN probe module (the hidden tests import them)."""
    import pkgutil
    import re

    import course_recorder

    probes = sorted(m.name for m in pkgutil.iter_modules(course_recorder.__path__) if re.fullmatch(r"q\d+", m.name))
    return [*PRELOAD, *(f"course_recorder.{name}" for name in probes)]


def serve(path: str) -> None:
    """Import what every kernel needs, check that nothing started a thread, then serve until SIGTERM."""
    import importlib

    if sys.path and (sys.path[0] in ("", os.getcwd())):
        del sys.path[0]  # as ipykernel_launcher does; IPython puts the kernel's own directory back
    for name in _preload():
        importlib.import_module(name)
    import torch

    if torch.cuda.is_initialized():
        raise SystemExit("CUDA was initialised before forking; a forked kernel could not use it")
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        raise SystemExit(f"the fork server has {threads} threads after its imports; forking is unsafe")
    Server(path).serve()
    sys.stdout.flush()
    os._exit(0)  # skip tearing down torch and friends (about 1 s): nothing here needs cleaning up


# ----------------------------------------------------------------------------------------------- client
def starting_marker(path: str | Path) -> Path:
    """Exists while the server on `path` is starting (the pipeline grades meanwhile; kernels wait for it)."""
    return Path(f"{path}.starting")


def _wait_for(path: str, limit: float = 180.0) -> None:
    """Wait while the server is still starting; return at once when it is up or has failed."""
    import time

    deadline = time.monotonic() + limit
    while not os.path.exists(path) and starting_marker(path).exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def _die_with_kernel_manager() -> None:
    """SIGKILL this client when the process that started it (the kernel manager: a grading worker) dies.

    A killed worker never shuts its kernels down; its client, orphaned, would wait on the server for good and the
    kernel idle behind it. The client dying closes its connection, and the server then kills the kernel (an
    exec'd kernel's supervisor dies the same way: sandbox.main). The kernel manager starts kernels from the thread
    that lives as long as it does (nbclient runs its loop in the worker's main thread), so the parent-death signal,
    which follows the starting thread, fits. jupyter_client says who started us (JPY_PARENT_PID): a manager that
    died before the signal was set is caught too.
    """
    sandbox.die_with_parent()
    parent = os.environ.get("JPY_PARENT_PID", "")
    if parent.isdigit() and int(parent) > 1 and os.getppid() != int(parent):
        os._exit(1)


def client(argv: list[str]) -> None:
    """The kernel manager's kernel process: a forked kernel behind it, or an exec'd one if no server."""
    if len(argv) < 2 or argv[0] != "--socket":
        raise SystemExit("usage: zygote client --socket SOCKET [sandbox options] -- KERNEL ARGV")
    path, rest = argv[1], argv[2:]
    _die_with_kernel_manager()
    # Only what the kernel may see: the request stays in the kernel's memory.
    request = {"args": rest, "env": sandbox.whitelisted(dict(os.environ)), "cwd": os.getcwd()}
    _wait_for(path)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        payload = json.dumps(request).encode()
        socket.send_fds(conn, [HEADER.pack(len(payload))], [0, 1, 2])
        conn.sendall(payload)
        answer = conn.makefile("rb")
        first = answer.readline().decode().split()
    except OSError:
        first = []
    if len(first) != 2 or first[0] != "pid":
        conn.close()
        print(f"fork server unavailable ({' '.join(first) or 'no answer'}); starting a fresh kernel",
              file=sys.stderr, flush=True)
        sandbox.main(rest)  # exec: never returns
        return
    sandbox.forward_signals([int(first[1])])
    last = answer.readline().decode().split()
    code = int(last[1]) if len(last) == 2 and last[0] == "exit" else 1
    os._exit(code if code >= 0 else 128 - code)


def start(path: Path, env: dict[str, str], log: Path, mpl_dir: Path | None = None, timeout: float = 120.0):
    """Start a server on `path` (a unix socket in a private folder); the Popen, or None and why it failed.

    Blocks until the server is up; clients started meanwhile wait for it (see starting_marker).
    """
    import selectors
    import subprocess
    import time

    marker = starting_marker(path)
    marker.touch()
    try:
        # The server's environment stays readable by every kernel (/proc/self/environ): only what a kernel may see.
        home = path.parent / "zygote-home"
        home.mkdir(exist_ok=True)
        env = dict(sandbox.kernel_env(str(home), env), OPENBLAS_NUM_THREADS="1")  # OpenBLAS: see the module's docstring
        if mpl_dir:
            env["MPLCONFIGDIR"] = str(mpl_dir)  # matplotlib's font cache, built once and kept
        with open(log, "w") as out:
            # The socket's path goes in the environment, not on the command line: every kernel is forked from
            # this process, and a kernel can read its own (and its init's) command line, never its environment.
            proc = subprocess.Popen([sys.executable, "-m", "course_grader.zygote", "serve"],
                                    env=dict(env, COURSE_ZYGOTE_SOCKET=str(path)), stdout=subprocess.PIPE, stderr=out, cwd="/", start_new_session=True,
                                    text=True)
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if sel.select(timeout=0.5) and proc.stdout.readline().strip() == "ready":
                    return proc, ""
                if proc.poll() is not None:
                    break
        stop(proc)
        return None, (log.read_text().strip().splitlines() or ["no reason given"])[-1]
    finally:
        marker.unlink(missing_ok=True)


def stop(proc) -> None:
    """Stop a server and its kernels."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"] and len(argv) <= 2:
        serve(argv[1] if len(argv) == 2 else os.environ["COURSE_ZYGOTE_SOCKET"])
    elif argv[:1] == ["client"]:
        client(argv[1:])
    else:
        raise SystemExit(__doc__.rsplit("\n\n", 1)[-1])


if __name__ == "__main__":
    main()
