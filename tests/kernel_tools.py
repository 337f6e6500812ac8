"""What the kernel tests share: a fork server, the pipeline's kernel manager, running code in a kernel, and
looking at a kernel's processes from the host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from course_grader import zygote
from course_grader.kernel import SandboxKernelManager

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
    # cleanup_kc: nbclient shuts down only kernels of managers it made itself.
    NotebookClient(nb, km=km, timeout=timeout, allow_errors=True, interrupt_on_timeout=True).execute(cleanup_kc=True)
    return nb.cells


def stdout(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def answer(cell: nbformat.NotebookNode) -> dict:
    """The JSON a cell printed last."""
    lines = [line for line in stdout(cell).splitlines() if line.startswith("{")]
    assert lines, f"the cell printed no JSON: {stdout(cell)!r} {[o.get('evalue') for o in cell.outputs]}"
    return json.loads(lines[-1])


def processes_of(uid: int) -> list[int]:
    """Host pids of the live processes running as `uid` (a kernel's own user)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if fields.get("Uid", "").split()[:1] == [str(uid)] and not fields.get("State", "").strip().startswith("Z"):
                found.append(int(entry))
    return found


def state_of(pid: int) -> str:
    """A host process's state letter (R, S, T for stopped...), or '' when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.split()[1]
    except OSError:
        pass
    return ""
