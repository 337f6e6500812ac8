"""What the kernel tests share: a fork server, the pipeline's kernel manager, running code in a kernel, looking
at a kernel's processes from the host, and a listener on the host's loopback for payloads to reach."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from course_grader import sandbox, zygote
from course_grader.kernel import SandboxKernelManager
from process_tools import processes_of

ROOT = Path(__file__).resolve().parent.parent
SECRET = "postgresql://grader:s3cret@db/gradebook"


@contextmanager
def fork_server() -> Iterator[tuple[Path, Path, Path]]:
    """(socket path, private scratch folder, an answer-key folder) of a running server, as the pipeline starts it."""
    scratch = Path(tempfile.mkdtemp(prefix="test-kernels-"))
    os.chmod(scratch, 0o700)
    answer_key = Path(tempfile.mkdtemp(prefix="test-kernels-key-", dir="/var/tmp"))
    (answer_key / "solution.py").write_text("SECRET = 1\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), COURSE_GRADING_MODE="1", COURSE_DB_URL=SECRET)
    proc, why = zygote.start(scratch / "zygote.sock", env, scratch / "zygote.log")
    assert proc is not None, why
    try:
        yield scratch / "zygote.sock", scratch, answer_key
    finally:
        zygote.stop(proc)
        sandbox.kill_kernels_under(scratch)  # and the socket folders' filesystems a killed supervisor left mounted
        subprocess.run(["rm", "-rf", str(scratch), str(answer_key)], check=False)


def manager(sock: Path | str, scratch: Path, isolate: bool = True, **kwargs) -> SandboxKernelManager:
    """The pipeline's kernel manager: only the Python installation, the environment and the kernel packages exposed."""
    expose = [os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), str(ROOT / "course_lib"),
              str(ROOT / "course_recorder")]
    return SandboxKernelManager(zygote=str(sock), isolate=isolate, expose=expose,
                                socket_root=str(scratch / "sockets"), **kwargs)


def run(km: SandboxKernelManager, *sources: str, timeout: int = 60) -> list[nbformat.NotebookNode]:
    """Run code cells in a fresh kernel from `km`, then shut it down; the executed cells."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    # The kernel starts in a folder of its own: a kernel with limits only keeps its home (.ipython) there.
    with tempfile.TemporaryDirectory(prefix="test-kernel-cwd-") as cwd:
        client = NotebookClient(nb, km=km, timeout=timeout, allow_errors=True, interrupt_on_timeout=True,
                                resources={"metadata": {"path": cwd}})
        client.execute(cleanup_kc=True)  # cleanup_kc: nbclient shuts down only kernels of managers it made itself
    return nb.cells


def stdout(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def answer(cell: nbformat.NotebookNode) -> dict:
    """The JSON a cell printed last."""
    lines = [line for line in stdout(cell).splitlines() if line.startswith("{")]
    assert lines, f"the cell printed no JSON: {stdout(cell)!r} {[o.get('evalue') for o in cell.outputs]}"
    return json.loads(lines[-1])


def status(pid: int) -> dict[str, str]:
    """The fields of a host process's /proc status (Uid, State...); empty when it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {key: value.strip() for key, value in (line.split(":", 1) for line in text.splitlines() if ":" in line)}


def state_of(pid: int) -> str:
    """A host process's state letter (R, S, T for stopped...), or '' when it is gone."""
    return (status(pid).get("State", "").split() or [""])[0]


class Listener:
    """A TCP listener on the host's 127.0.0.1 that records what whoever connects sends."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.received.append(conn.recv(100) or b"(connected)")
            conn.close()

    def stop(self) -> None:
        self.stopping = True
        self.thread.join()
        self.sock.close()


# A kernel manager's process (as a grading worker is one): starts one kernel, runs a cell that says it is inside
# and then sleeps, prints the kernel's uid once the kernel has said so, and waits to be killed.
OWNER = r'''
import asyncio, sys
from pathlib import Path
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from kernel_tools import manager

async def main():
    km = manager(sys.argv[3], Path(sys.argv[4]))
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=120)
    kc.execute("import os, time\nprint('inside', os.getuid(), flush=True)\ntime.sleep(600)")
    while True:
        msg = await kc.get_iopub_msg(timeout=120)
        text = msg["content"].get("text", "") if msg["msg_type"] == "stream" else ""
        if text.startswith("inside"):
            print(text.strip(), flush=True)
            break
    await asyncio.sleep(600)

asyncio.run(main())
'''


@contextmanager
def kernel_owner(sock: Path | str, scratch: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    """(the owner process, its kernel's uid) once the kernel is inside a cell (it said so); the owner is killed
    afterwards if the test did not kill it. `sock` "" starts the kernel exec'd afresh, a missing socket through the
    fork server's client falling back to exec."""
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(ROOT), str(ROOT / "tests"), str(sock), str(scratch)],
                             stdout=subprocess.PIPE, text=True)
    uid = None
    try:
        line = owner.stdout.readline().split()  # blocks until the kernel is inside its cell (or the owner died)
        assert line[:1] == ["inside"], f"the kernel never said it was inside its cell: {line}"
        uid = int(line[1])
        yield owner, uid
    finally:
        owner.kill()
        owner.wait()
        for pid in processes_of(uid) if uid is not None else []:  # a failed test leaves no orphan to later ones
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
