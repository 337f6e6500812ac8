"""The grading kernel and executor: limits on every kernel, and no lost grades when one dies or hangs.

nbgrader's own Execute raises when a kernel dies, and the autograde step then deletes the student's
autograded folder and leaves the grades empty. `RobustExecute` runs the cells itself: when a cell kills
the kernel, runs past its timeout, or the notebook runs past its wall-clock limit, that cell and every
later code cell get an error output saying why. The notebook is then graded as usual, so the tests that
ran before keep their points and the later ones score zero, with the reason recorded.

What is not the student's doing raises GraderFailure instead (failures.py), and the worker retries the
notebook: a kernel that did not start or did not answer its first request, a kernel whose fork server died
under it, a cell's last output that did not arrive in time after its reply. The waits that only tell a lost
kernel from a slow one scale with the machine's measured slowness (speed.py).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from contextlib import ExitStack
from typing import Any

from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import Execute
from traitlets import Bool, Float, Integer, List, Unicode

from course_grader import speed
from course_grader.failures import GraderFailure, meaningful_lines, one_line

NOT_RUN = "NotRunError"


class SandboxKernelManager(AsyncKernelManager):
    """A kernel manager that starts every kernel through course_grader.sandbox.

    With `zygote` set (a fork server's socket, zygote.py) the kernel is forked from a process that has
    already imported torch and course_lib, inside the same sandbox; otherwise it is exec'd afresh. An isolated
    kernel has no network of its own to reach the manager over TCP: it talks over unix sockets (the ipc
    transport) in a folder made for it, the only folder it may write besides its own scratch.
    """

    memory_mb = Integer(4096, help="memory limit of the kernel, in MiB").tag(config=True)
    isolate = Bool(False, help="namespaces, an allowlist view and a user of its own (needs root)").tag(config=True)
    expose = List(Unicode(), help="paths the kernel may read (besides the system's)").tag(config=True)
    zygote = Unicode("", help="socket of a fork server (zygote.py); empty: a fresh kernel process").tag(config=True)
    socket_root = Unicode("", help="where each isolated kernel's socket folder is made").tag(config=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.socket_dir = ""
        if self.isolate:
            if self.socket_root:
                os.makedirs(self.socket_root, mode=0o700, exist_ok=True)
            self.socket_dir = tempfile.mkdtemp(prefix="kernel-", dir=self.socket_root or None)
            self.transport = "ipc"
            self.ip = os.path.join(self.socket_dir, "k")

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        """The kernel's own command, behind the sandbox launcher."""
        cmd = super().format_kernel_cmd(extra_arguments)
        launcher = ["course_grader.zygote", "client", "--socket", self.zygote] if self.zygote else \
            ["course_grader.sandbox"]
        prefix = [sys.executable, "-m", *launcher, f"--memory-mb={self.memory_mb}"]
        if self.isolate:
            prefix += ["--isolate", f"--writable={self.socket_dir}", *(f"--expose={p}" for p in self.expose)]
        return prefix + ["--"] + cmd


def _error(cell: NotebookNode, ename: str, message: str) -> None:
    """Append an error output: nbgrader gives a test cell with an error no points."""
    cell.outputs.append(NotebookNode(output_type="error", ename=ename, evalue=message,
                                     traceback=[f"{ename}: {message}"]))


class RobustExecute(Execute):
    """nbgrader's Execute with a whole-notebook limit, and no exception when a kernel dies or hangs."""

    notebook_timeout = Float(600.0, help="wall-clock seconds for the whole notebook").tag(config=True)
    report_file = Unicode("", help="JSON lines: one record per notebook with its problem, if any").tag(config=True)
    skip_tags = List(Unicode(), help="cells with one of these tags are not run (tests never depend on them)"
                     ).tag(config=True)
    kernel_log = Unicode("", help="file for the kernel process's own stderr (its start-up errors)").tag(config=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("kernel_manager_class", SandboxKernelManager)
        super().__init__(*args, **kwargs)

    def preprocess(self, nb: NotebookNode, resources: Any = None, km: Any = None) -> tuple[NotebookNode, Any]:
        """Run every code cell; stop at the first death, cell timeout or notebook timeout.

        Raises GraderFailure when the notebook cannot be graded for a reason that is not the student's.
        """
        from nbclient import NotebookClient

        NotebookClient.__init__(self, nb, km)
        self.reset_execution_trackers()
        self._check_assign_resources(resources)
        cell_timeout = self.timeout
        factor = speed.slowness()
        self.iopub_timeout, self.startup_timeout = speed.iopub_timeout(factor), speed.startup_timeout(factor)
        deadline = time.monotonic() + self.notebook_timeout
        problem, started = None, time.monotonic()
        try:
            with ExitStack() as stack:
                self._start(stack)
                for index, cell in enumerate(self.nb.cells):
                    if cell.cell_type != "code" or set(cell.metadata.get("tags", [])) & set(self.skip_tags):
                        continue
                    if problem:
                        _error(cell, NOT_RUN, f"not run: {problem}")
                        continue
                    left = deadline - time.monotonic()
                    if left <= 0:
                        problem = f"the notebook ran past its {self.notebook_timeout:.0f} s limit"
                        _error(cell, NOT_RUN, f"not run: {problem}")
                        continue
                    self.timeout = max(1, int(min(cell_timeout or left, left)))
                    try:
                        self.preprocess_cell(cell, resources, index)
                    except DeadKernelError:
                        if self._fork_server_gone():
                            raise GraderFailure(f"the fork server died under the kernel in cell {index}") from None
                        problem = f"the kernel died in cell {index} (crash, os._exit or out of memory)"
                        _error(cell, "DeadKernelError", problem)
                        continue
                    except CellTimeoutError:
                        # A cell that runs too long is interrupted and recorded (error_on_timeout), not raised:
                        # what raises is nbclient's wait for the cell's last output after its reply.
                        raise GraderFailure(f"cell {index}'s last output did not arrive within {self.iopub_timeout} s "
                                            f"of its reply (machine {factor:.1f}x slower than quiet)") from None
                    if any(o.get("ename") == "CellTimeoutError" for o in cell.outputs):
                        # The cell hung; after an interrupt the kernel's state is unknown, so stop here.
                        limit = "cell" if self.timeout == cell_timeout else "notebook"
                        problem = f"cell {index} ran past the {limit} time limit ({self.timeout} s)"
        except GraderFailure as failure:
            self._report(resources, None, time.monotonic() - started, failure=str(failure))
            raise
        finally:
            self.timeout = cell_timeout
        self.set_widgets_metadata()
        self._report(resources, problem, time.monotonic() - started)
        return self.nb, self.resources

    def _start(self, stack: ExitStack) -> None:
        """Start the kernel and get its first answer, or raise GraderFailure saying why not."""
        log = stack.enter_context(open(self.kernel_log, "w")) if self.kernel_log else None
        try:
            stack.enter_context(self.setup_kernel(**({"stderr": log} if log else {})))
            reply = self.wait_for_reply(self.kc.kernel_info())
            if reply is None:
                raise TimeoutError(f"no answer to kernel_info within {self.timeout} s")
        except Exception as exc:  # noqa: BLE001 - no student code has run yet: whatever stops here is the grader's
            raise GraderFailure(self._start_failure(exc)) from exc
        self.nb.metadata["language_info"] = reply["content"]["language_info"]

    def _start_failure(self, exc: Exception) -> str:
        """`the kernel did not start: <the exception>`, and the last meaningful line the kernel wrote, if any."""
        lines = meaningful_lines(self._kernel_words()[-20000:])
        words = f" (the kernel's last words: {lines[-1]})" if lines else ""
        return one_line(f"the kernel did not start: {type(exc).__name__}: {exc}"[:120] + words)

    def _kernel_words(self) -> str:
        """What the kernel process wrote on its stderr (its log), or "" when there is none."""
        try:
            with open(self.kernel_log, errors="replace") as f:
                return f.read()
        except (OSError, TypeError, ValueError):
            return ""

    def _fork_server_gone(self) -> bool:
        """True when the kernel was forked from the fork server and the server no longer answers."""
        path = getattr(self.km, "zygote", "")
        if not path:
            return False
        if "fork server unavailable" in self._kernel_words():
            return False  # the kernel was exec'd afresh: the server's fate was not its own
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(path)
            except OSError:
                return True
        return False

    def _report(self, resources: Any, problem: str | None, seconds: float, failure: str = "") -> None:
        if not self.report_file:
            return
        name = (resources or {}).get("unique_key", "?")
        record = {"notebook": name, "problem": problem, "seconds": round(seconds, 2)}
        if failure:
            record = {"notebook": name, "grader_failure": failure}
        with open(self.report_file, "a") as f:
            f.write(json.dumps(record) + "\n")
