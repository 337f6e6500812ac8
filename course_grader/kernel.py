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

import asyncio
import copy
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from queue import Empty
from typing import Any

import nbformat
import zmq
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import CellExecutionComplete, CellTimeoutError, DeadKernelError
from nbclient.util import ensure_async, run_sync
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import Execute
from traitlets import Bool, Enum, Float, Integer, List, Type, Unicode

from course_grader import settings, speed
from course_grader.failures import GraderFailure, meaningful_lines, one_line

NOT_RUN = "NotRunError"
TRUNCATED = "OutputTruncated"
# course_recorder.MIME, the test cells' record bundles (not imported from there: course_recorder imports torch)
RECORD_MIME = "application/vnd.normalization-course.record+json"
MIB = 1 << 20
# What one output costs besides its payload (its keys in the notebook's JSON): many tiny outputs add up too.
OUTPUT_OVERHEAD = 64
_OUTPUT_MESSAGES = frozenset({"stream", "display_data", "execute_result", "error", "update_display_data"})
# The outputs a cell that is not run keeps from the submission (RobustExecute._keep_submitted), and what it says first.
_KEPT_OUTPUTS = frozenset({"stream", "display_data", "execute_result", "error"})
KEPT_NOTE = "[not run while grading: the output below is the one you submitted]\n"
# Said to the instructor when a notebook ran again with every cell (RobustExecute.preprocess).
RERUN_NOTE = ("a name the code looked for was missing with the demo and experiment cells not run (NameError): "
              "graded from a second run of every cell")


def _name_missing(cells: list) -> bool:
    """Whether a cell raised NameError, in its outputs or (a hidden test's probe records what it caught) its records."""
    for cell in cells:
        for out in cell.get("outputs") or []:
            if out.get("ename") == "NameError":
                return True
            record = (out.get("data") or {}).get(RECORD_MIME)
            if record is not None and "NameError" in json.dumps(record):
                return True
    return False


def _submitted_outputs(cell: NotebookNode, submitted: list) -> list:
    """The outputs of the submitted cell that `cell` came from: the one with its id and source, else the first unused
    one with its source (nbgrader may renumber a duplicated id). A matched cell is used up (its outputs emptied)."""
    source = cell.source.strip()
    same = [c for c in submitted if c.get("source", "").strip() == source and c.get("outputs") is not None]
    match = next((c for c in same if c.get("id") == cell.get("id")), same[0] if same else None)
    if match is None:
        return []
    outputs, match["outputs"] = list(match.get("outputs") or []), None
    return outputs


async def _first(channel: Any, limit: float, wanted: Callable[[dict], bool]) -> dict | None:
    """The first message on `channel` within `limit` seconds that is `wanted` (others are dropped), else None."""
    end = time.monotonic() + limit
    while (left := end - time.monotonic()) > 0:
        try:
            msg = await ensure_async(channel.get_msg(timeout=left))
        except Empty:
            return None
        if wanted(msg):
            return msg
    return None


class PromptClient(AsyncKernelClient):
    """jupyter_client's client, ready as soon as the kernel is: no fixed wait.

    jupyter_client's wait_for_ready, once the kernel_info reply is in, reads IOPub until it has been silent for
    0.2 s (every kernel start pays it: 0.2 s of 0.4). Here the same request's idle status on IOPub is the event
    that says IOPub is connected and the kernel is done with it; a status lost to a late subscription (zmq's slow
    joiner) makes it ask again, as jupyter_client does. Messages left on IOPub are harmless: the executor reads
    only those whose parent is the request it sent.
    """

    # Seconds to wait for a request's idle status before asking again: it comes within a few ms of the reply, or
    # not at all (published before IOPub's subscription reached the kernel: about one start in three when grading).
    IDLE_WAIT = 0.05

    async def _async_wait_for_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
        while True:
            msg_id = self.kernel_info()
            reply = await self._reply_to(msg_id, 1.0)
            if reply is not None and await self._idle_after(msg_id, self.IDLE_WAIT):
                self._handle_kernel_info_reply(reply)
                return
            if not await self._async_is_alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kernel didn't respond in {timeout:.0f} seconds")

    async def _reply_to(self, msg_id: str, limit: float) -> dict | None:
        """The shell reply to `msg_id` within `limit` seconds (other replies are dropped), else None."""
        return await _first(self.shell_channel, limit, lambda msg: msg.get("parent_header", {}).get("msg_id") == msg_id)

    async def _idle_after(self, msg_id: str, limit: float) -> bool:
        """Whether IOPub says `msg_id`'s request is done (status idle) within `limit` seconds."""
        return await _first(self.iopub_channel, limit, lambda msg: (
            msg.get("msg_type") == "status" and msg.get("content", {}).get("execution_state") == "idle"
            and msg.get("parent_header", {}).get("msg_id") == msg_id)) is not None

    wait_for_ready = _async_wait_for_ready


class SandboxKernelManager(AsyncKernelManager):
    """A kernel manager that starts every kernel through course_grader.sandbox.

    With `zygote` set (a fork server's socket, zygote.py) the kernel is forked from a process that has
    already imported torch and course_lib, inside the same sandbox; otherwise it is exec'd afresh. An isolated
    kernel has no network of its own to reach the manager over TCP: it talks over unix sockets (the ipc
    transport) in a folder made for it, the only folder it may write besides its own scratch.
    """

    memory_mb = Integer(settings.MEMORY_MB, help="memory limit of the kernel, in MiB").tag(config=True)
    isolate = Bool(False, help="namespaces, an allowlist view and a user of its own (needs root)").tag(config=True)
    expose = List(Unicode(), help="paths the kernel may read (besides the system's)").tag(config=True)
    zygote = Unicode("", help="socket of a fork server (zygote.py); empty: a fresh kernel process").tag(config=True)
    socket_root = Unicode("", help="where each isolated kernel's socket folder is made").tag(config=True)
    uid_base = Integer(0, help="first uid of the isolated kernels' range (0: sandbox.UID_BASE)").tag(config=True)
    client_factory = Type(PromptClient, klass=AsyncKernelClient, help="its clients: PromptClient").tag(config=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A socket left unclosed with messages queued for a kernel that never came (one that could not start) made
        # the context's teardown (zmq_ctx_term, run by the garbage collector) wait forever: every socket made
        # from this manager's context, its clients' included, lets go of unsent messages after a second.
        self.context.setsockopt(zmq.LINGER, 1000)
        self.socket_dir = ""
        if self.isolate:
            if self.socket_root:
                os.makedirs(self.socket_root, mode=0o700, exist_ok=True)
            # A fixed-length name: the longest socket path, <folder>/k-<port>, must fit a unix socket address
            # (107 bytes), whatever the student is called (the worker's scratch is named by a digest).
            self.socket_dir = tempfile.mkdtemp(prefix="kernel-", dir=self.socket_root or None)
            self.transport = "ipc"
            self.ip = os.path.join(self.socket_dir, "k")
            longest = len(os.fsencode(f"{self.ip}-65535"))
            if longest > zmq.IPC_PATH_MAX_LEN:
                os.rmdir(self.socket_dir)
                raise ValueError(f"the kernel's socket path would be {longest} bytes, over the {zmq.IPC_PATH_MAX_LEN} "
                                 f"of a unix socket address: socket_root {self.socket_root!r} is too long")

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        """jupyter's cleanup, then the socket folder: the tiny filesystem the sandbox mounted on it for the kernel
        is let go (the supervisor does so when the kernel ends by itself; a killed supervisor cannot) and removed."""
        await super()._async_cleanup_resources(restart=restart)
        if self.socket_dir and not restart:
            from course_grader import sandbox

            sandbox.release_socket_dir(self.socket_dir)

    cleanup_resources = _async_cleanup_resources

    async def _async_wait(self, pollinterval: float = 0.1) -> None:
        """Until the kernel's process has ended. jupyter's checks every `pollinterval` (0.1 s), so every kernel's stop
        cost a tenth of a second for nothing; this waits on the process itself (a thread blocked in waitpid, which
        ends with the process: the callers kill it when their wait times out)."""
        process = getattr(self.provisioner, "process", None)
        if process is None:
            return await super()._async_wait(pollinterval)
        await asyncio.get_running_loop().run_in_executor(None, process.wait)

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        """The kernel's own command, behind the sandbox launcher."""
        cmd = super().format_kernel_cmd(extra_arguments)
        launcher = ["course_grader.zygote", "client", "--socket", self.zygote] if self.zygote else \
            ["course_grader.sandbox"]
        prefix = [sys.executable, "-m", *launcher, f"--memory-mb={self.memory_mb}"]
        if self.isolate:
            prefix += ["--isolate", f"--writable={self.socket_dir}", *(f"--expose={p}" for p in self.expose)]
            if self.uid_base:
                prefix.append(f"--uid-base={self.uid_base}")
        return prefix + ["--"] + cmd


def _error(cell: NotebookNode, ename: str, message: str) -> None:
    """Append an error output: nbgrader gives a test cell with an error no points."""
    cell.outputs.append(NotebookNode(output_type="error", ename=ename, evalue=message,
                                     traceback=[f"{ename}: {message}"]))


def _is_test(cell: NotebookNode) -> bool:
    """A graded test cell (course_judge.is_test, without importing the judge into every kernel test)."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.get("cell_type") == "code" and bool(meta.get("grade")) and not meta.get("solution")


def nbytes(value: Any) -> int:
    """About how many bytes `value` (a message's decoded JSON content) takes in a notebook file: UTF-8 text,
    numbers as a few bytes. Iterative, so a deeply nested value cannot exhaust the stack."""
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item) if item.isascii() else len(item.encode("utf-8", "replace"))
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
            total += 2 * len(item)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
            total += len(item)
        else:
            total += 8
    return total


def _kept_bytes(content: dict) -> int:
    """What an output message's content costs in the notebook: its data (a display) or its fields, and its keys."""
    return OUTPUT_OVERHEAD + nbytes(content.get("data") if "data" in content else content)


def _mib(n: int) -> str:
    return f"{n / MIB:.3g} MiB" if n >= MIB // 10 else f"{n} bytes"


def _prefix(text: str, room: int) -> str:
    """The start of `text` that takes at most `room` bytes (a UTF-8 character takes at most 4)."""
    return text[:room] if text.isascii() else text[:room // 4]


@dataclass
class OutputBudget:
    """Caps on a notebook's outputs, applied to each output message as it arrives from the kernel.

    nbgrader's LimitOutput counts lines, after the whole notebook has run: one line of 300 MiB passes it, and the
    grading worker holds all of it first. Here every output (a stream message, a display, an error) is sized when
    it arrives and kept whole, cut to the room left, or dropped: at most `per_output` bytes each, `per_cell` for a
    cell's outputs (a cleared cell starts again: what it had is gone), `per_notebook` for the notebook's. The
    record bundles of a test cell (RECORD_MIME, what the judge decides from) are counted apart, up to
    `per_test_records` a cell, and are kept whole or not at all: a cut record would be read as a wrong one.
    What was cut is said once per cell (`cut`), in the cell and to the instructor.
    """

    per_output: int = settings.MAX_OUTPUT_BYTES
    per_cell: int = settings.MAX_CELL_OUTPUT_BYTES
    per_notebook: int = settings.MAX_NOTEBOOK_OUTPUT_BYTES
    per_test_records: int = settings.MAX_RECORD_BYTES
    notebook: int = 0  # bytes kept by the cells before this one
    cell: int = 0  # bytes kept by this cell
    records: int = 0  # record bytes kept by this cell
    cut: list[str] = field(default_factory=list)  # what was cut in this cell

    def next_cell(self) -> None:
        self.notebook += self.cell
        self.cell = self.records = 0
        self.cut = []

    def cleared(self) -> None:
        """The cell's outputs were cleared (clear_output): their bytes are no longer held."""
        self.cell = 0

    def say(self, what: str) -> None:
        if what not in self.cut:
            self.cut.append(what)

    def admit(self, kind: str, content: dict, test_cell: bool) -> dict | None:
        """The content of an output message to keep (maybe cut), or None to drop it."""
        size = _kept_bytes(content)
        if test_cell and kind in ("display_data", "execute_result") and RECORD_MIME in (content.get("data") or {}):
            if self.records + size > self.per_test_records:
                self.say(f"this test's records passed the {_mib(self.per_test_records)} limit and were not kept")
                return None
            self.records += size
            return content
        limits = [(self.per_output, f"an output passed the {_mib(self.per_output)} limit"),
                  (self.per_cell - self.cell, f"the cell's output passed the {_mib(self.per_cell)} limit"),
                  (self.per_notebook - self.notebook - self.cell,
                   f"the notebook's output passed the {_mib(self.per_notebook)} limit")]
        room, why = min(limits, key=lambda limit: limit[0])
        if size <= room:
            self.cell += size
            return content
        self.say(why)
        room -= OUTPUT_OVERHEAD + 100  # the note that replaces what was cut
        if room <= 0:
            return None
        cut = self._cut(kind, content, room)
        self.cell += _kept_bytes(cut)
        return cut

    @staticmethod
    def _cut(kind: str, content: dict, room: int) -> dict:
        note = "\n... output truncated ...\n"
        if kind == "stream":
            return {**content, "text": _prefix(str(content.get("text", "")), room) + note}
        if kind == "error":
            lines, left = [], room // 2 - 100
            for line in content.get("traceback") or []:
                line = str(line)
                if nbytes(line) + 1 > left:
                    break
                lines.append(line)
                left -= nbytes(line) + 1
            return {**content, "ename": _prefix(str(content.get("ename", "Error")), 100),
                    "evalue": _prefix(str(content.get("evalue", "")), max(0, room // 2 - 150)),
                    "traceback": lines + [note.strip()]}
        # a display: its data replaced by a line of text (half an image or half a page of HTML shows nothing)
        return {**content, "data": {"text/plain": f"[output truncated: {_mib(nbytes(content.get('data')))}]"},
                "metadata": {}}


class RobustExecute(Execute):
    """nbgrader's Execute with a whole-notebook limit, output caps, and no exception when a kernel dies or hangs."""

    notebook_timeout = Float(settings.NOTEBOOK_TIMEOUT, help="wall-clock seconds for the whole notebook").tag(config=True)
    # nbclient's: once the last cell has run, nothing the kernel does matters, so it is killed (its sandbox takes its
    # processes with it) instead of asked to shut down and waited for (0.1-0.2 s a notebook, more for a kernel whose
    # student code holds up its exit).
    shutdown_kernel = Enum(["graceful", "immediate"], default_value="immediate").tag(config=True)
    report_file = Unicode("", help="JSON lines: one record per notebook with its problem, if any").tag(config=True)
    skip_tags = List(Unicode(), help="the release's cells with one of these tags are not run when the student left them "
                     "as given (tests never depend on them): see _not_run").tag(config=True)
    release_dir = Unicode("", help="the release assignment folder (which cells skip_tags names)").tag(config=True)
    submitted_dir = Unicode("", help="the student's submitted notebooks (the outputs kept of cells not run)"
                            ).tag(config=True)
    kernel_log = Unicode("", help="file for the kernel process's own stderr (its start-up errors)").tag(config=True)
    max_output_bytes = Integer(OutputBudget.per_output, help="bytes kept of one output (OutputBudget)").tag(config=True)
    max_cell_output_bytes = Integer(OutputBudget.per_cell, help="bytes kept of one cell's outputs").tag(config=True)
    max_notebook_output_bytes = Integer(OutputBudget.per_notebook, help="bytes kept of the notebook's outputs"
                                        ).tag(config=True)
    max_record_bytes = Integer(OutputBudget.per_test_records,
                               help="bytes kept of one test cell's record bundles (counted apart)").tag(config=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("kernel_manager_class", SandboxKernelManager)
        super().__init__(*args, **kwargs)
        self._interrupted, self._cell_msg_id = False, ""
        self._budget = self._new_budget()
        self._truncated: list[str] = []
        self._receiving: asyncio.Future | None = None  # the IOPub receive in progress (_next_output)

    def _new_budget(self) -> OutputBudget:
        return OutputBudget(self.max_output_bytes, self.max_cell_output_bytes, self.max_notebook_output_bytes,
                            self.max_record_bytes)

    def preprocess(self, nb: NotebookNode, resources: Any = None, km: Any = None) -> tuple[NotebookNode, Any]:
        """Run every code cell; stop at the first death, cell timeout or notebook timeout.

        Raises GraderFailure when the notebook cannot be graded for a reason that is not the student's.
        """
        from nbclient import NotebookClient

        NotebookClient.__init__(self, nb, km)
        self.reset_execution_trackers()
        self._check_assign_resources(resources)
        self._budget, self._truncated, self._receiving = self._new_budget(), [], None
        cell_timeout = self.timeout
        factor = speed.recent_slowness()
        self.iopub_timeout, self.startup_timeout = speed.iopub_timeout(factor), speed.startup_timeout(factor)
        deadline = time.monotonic() + self.notebook_timeout
        started = time.monotonic()
        not_run = self._not_run(resources)
        given = copy.deepcopy(self.nb.cells) if not_run else None
        phases: dict[str, float] = {}
        try:
            problem = self._run_cells(resources, not_run, deadline, cell_timeout, factor, phases, started)
            ran = [cell for i, cell in enumerate(self.nb.cells) if i not in not_run]
            if given is not None and problem is None and _name_missing(ran) and \
                    time.monotonic() - started < self.notebook_timeout / 2:
                # A name the student's code looked for was missing: a cell not run may have defined it (a global an
                # honest solution reads). Everything again, every cell, in a new kernel, within the notebook's limit.
                if self._receiving is not None:  # a receive from the first kernel's closed channel
                    self._receiving.cancel()
                    self._receiving = None
                self.nb.cells = given
                self.reset_execution_trackers()
                self._budget = self._new_budget()
                self._truncated.append(RERUN_NOTE)
                problem = self._run_cells(resources, {}, deadline, cell_timeout, factor, phases, time.monotonic())
        except GraderFailure as failure:
            self._report(resources, None, time.monotonic() - started, failure=str(failure))
            raise
        finally:
            self.timeout = cell_timeout
            if self._receiving is not None:  # its channel is closed with the kernel
                self._receiving.cancel()
                self._receiving = None
        self.set_widgets_metadata()
        self._report(resources, problem, time.monotonic() - started, phases=phases)
        return self.nb, self.resources

    def _run_cells(self, resources: Any, not_run: dict[int, list], deadline: float, cell_timeout: int | None,
                   factor: float, phases: dict[str, float], started: float) -> str | None:
        """Start a kernel, run the code cells (those in `not_run` keep their submitted outputs), stop it; the problem
        that stopped the notebook early, if any. Adds the seconds of each phase to `phases`."""
        problem = None
        with ExitStack() as stack:
            self._start(stack)
            ran = time.monotonic()
            phases["kernel start"] = phases.get("kernel start", 0.0) + ran - started
            for index, cell in enumerate(self.nb.cells):
                if cell.cell_type != "code":
                    continue
                if index in not_run:
                    self._keep_submitted(cell, index, not_run[index])
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
                problem = self.run_cell(cell, resources, index, cell_timeout, factor)
            stopping = time.monotonic()
            phases["cells"] = phases.get("cells", 0.0) + stopping - ran
        phases["kernel stop"] = phases.get("kernel stop", 0.0) + time.monotonic() - stopping
        return problem

    def _not_run(self, resources: Any) -> dict[int, list]:
        """{index: the outputs the student submitted} of the cells not to run: the release's demo and experiment cells
        (`skip_tags`) that the student left exactly as given.

        What is skipped is decided by the release, never by the submission's own tags: a student who tags a test cell
        "experiment" does not stop it from running, and one who edited an experiment cell (a helper of their own
        written there, an import) has it run as written, so that nothing their solutions may use goes missing.
        Not cells nbgrader grades or locks, whatever their source."""
        if not self.skip_tags or not self.release_dir:
            return {}
        name = (resources or {}).get("unique_key", "")
        try:
            release = nbformat.read(os.path.join(self.release_dir, f"{name}.ipynb"), as_version=4)
        except (OSError, ValueError):
            return {}
        given = {c.source.strip() for c in release.cells if c.cell_type == "code" and not c.metadata.get("nbgrader")
                 and set(c.metadata.get("tags", [])) & set(self.skip_tags)}
        chosen = [i for i, c in enumerate(self.nb.cells) if c.cell_type == "code" and not
                  c.metadata.get("nbgrader", {}).get("grade_id") and c.source.strip() in given]
        submitted = self._submitted_cells(name)
        return {i: _submitted_outputs(self.nb.cells[i], submitted) for i in chosen}

    def _submitted_cells(self, name: str) -> list:
        """The code cells of the student's submitted notebook (repaired and size-capped: repair.py), or []."""
        try:
            nb = nbformat.read(os.path.join(self.submitted_dir, f"{name}.ipynb"), as_version=4)
        except (OSError, ValueError, TypeError):
            return []
        return [c for c in nb.cells if c.get("cell_type") == "code"]

    def _keep_submitted(self, cell: NotebookNode, index: int, outputs: list) -> None:
        """A cell not run shows the outputs the student submitted (their own plot, for the written question after it),
        under the same caps as a run's outputs, without record bundles, and said to be the submitted ones."""
        self._budget.next_cell()
        cell.outputs = []
        cell.execution_count = None
        if not outputs:
            return
        cell.outputs.append(nbformat.v4.new_output("stream", name="stdout", text=KEPT_NOTE))
        for out in outputs:
            kind = out.get("output_type")
            if kind not in _KEPT_OUTPUTS:
                continue
            content = {k: v for k, v in out.items() if k != "output_type"}
            if "data" in content:
                data = content.get("data")
                if not isinstance(data, dict):
                    continue
                content["data"] = {k: v for k, v in data.items() if k != RECORD_MIME}
            content = self._budget.admit(kind, content, False)
            if content is not None:
                cell.outputs.append(NotebookNode(output_type=kind, **content))
        self._say_truncated(cell, index)

    def run_cell(self, cell: NotebookNode, resources: Any, index: int, cell_timeout: int | None,
                 factor: float = 1.0) -> str | None:
        """Run one code cell: the problem that stops the notebook here (the student's doing), or None.

        Raises GraderFailure for what is not the student's doing. A cell that outlives its limit is the student's
        whether or not it stops when interrupted: nbclient interrupts the kernel when the cell's execute_reply has
        not come within the limit (`_interrupted`, a fact, not a guess from the clock). When the interrupt does
        not stop it either (a long call in C, SIGINT ignored), nbclient then waits in vain for the cell's last
        output: the kernel is killed, and the cell is scored like any cell past its limit. Only a cell that did
        reply and whose last output is then late (a message lost or slow on a busy machine) is the grader's.
        """
        self._interrupted, self._cell_msg_id = False, ""
        self._budget.next_cell()
        try:
            self.preprocess_cell(cell, resources, index)
        except DeadKernelError:
            if self._fork_server_gone():
                raise GraderFailure(f"the fork server died under the kernel in cell {index}") from None
            problem = f"the kernel died in cell {index} (crash, os._exit or out of memory)"
            _error(cell, "DeadKernelError", problem)
            return problem
        except CellTimeoutError:
            if not self._interrupted and self._read_on(cell, index):
                return None
            if not self._interrupted:
                raise GraderFailure(f"cell {index}'s last output did not arrive within {self.iopub_timeout} s "
                                    f"of its reply (machine {factor:.1f}x slower than quiet)") from None
            self._kill_kernel()
            problem = (f"cell {index} ran past the {self._limit(cell_timeout)} time limit ({self.timeout} s) and did "
                       f"not stop when interrupted: its kernel was killed")
            _error(cell, "CellTimeoutError", problem)
            return problem
        finally:
            self._say_truncated(cell, index)
        if any(o.get("ename") == "CellTimeoutError" for o in cell.outputs):
            # The cell hung and stopped when interrupted; its kernel's state is unknown, so stop here.
            return f"cell {index} ran past the {self._limit(cell_timeout)} time limit ({self.timeout} s)"
        return None

    def _read_on(self, cell: NotebookNode, index: int) -> bool:
        """After nbclient stopped waiting for a replied cell's last output: read on while the cell's output still
        arrives (each message under the caps), up to its idle status, or up to the kernel's status for a request
        sent now (True). False when nothing of either comes within a further `iopub_timeout` (the kernel or the
        channel is lost: the grader's failure).

        A cell can reply while its output is still on its way: a flood printed during the cell takes the worker
        about as long to decode as it took the kernel to send, and nbclient's wait for the last output is fixed.
        A student must not turn that into "not graded": output that keeps arriving is the kernel at work. And
        IOPub is a zmq PUB socket, which drops what its reader cannot take in time (its high-water mark): a flood on
        a busy machine loses messages, the cell's idle status among them (12,000 displays beside CPU burners: 500
        lost). So a kernel_info request goes to the kernel, which answers it after the cell and says so on IOPub
        (busy, then idle, with the request as parent): once that idle arrives, all the cell sent before it has
        arrived or was dropped, and the cell is done, its loss said in the cell as a cut is.
        Hand-written because nbclient ends the cell's IOPub poll when its wait ends; this is that poll, resumed.
        """
        msg_id = self._cell_msg_id

        async def read() -> bool:
            request = self.kc.kernel_info()
            quiet_until = time.monotonic() + self.iopub_timeout
            while time.monotonic() < quiet_until:
                try:
                    msg = await self._next_output(quiet_until - time.monotonic())
                except Empty:
                    return False
                parent = msg.get("parent_header", {}).get("msg_id")
                if parent == request and msg.get("msg_type") == "status" and \
                        (msg.get("content") or {}).get("execution_state") == "idle":
                    self._budget.say("the cell sent output faster than the grader could take it: some of it was lost")
                    return True
                if not msg_id or parent != msg_id:
                    continue  # another cell's late output (a thread it left running) does not count as this one's
                quiet_until = time.monotonic() + self.iopub_timeout
                try:
                    self.process_message(msg, cell, index)
                except CellExecutionComplete:
                    return True
            return False

        return run_sync(read)()

    async def _next_output(self, timeout: float | None = None) -> dict[str, Any]:
        """The next IOPub message (Empty after `timeout` seconds), from a receive that a cancellation cannot lose.

        nbclient cancels its IOPub poll (below) when its wait for a replied cell's last output ends. A cancellation
        landing after the receive has taken a message off the socket, before the poll resumes with it (on a busy
        machine, any time), threw that message away: the cell's idle status (an honest cell "not graded") or an
        output (a test's records). So the receive is a task of its own, which the cancellation does not reach
        (asyncio.shield), and whoever reads next (_read_on, the next cell's poll) takes its message first."""
        if self._receiving is None or self._receiving.cancelled():
            self._receiving = asyncio.ensure_future(ensure_async(self.kc.iopub_channel.get_msg(timeout=None)))
        receiving = self._receiving
        try:
            msg = await asyncio.wait_for(asyncio.shield(receiving), timeout)
        except asyncio.TimeoutError:
            raise Empty from None  # the receive goes on, for the next reader
        except asyncio.CancelledError:
            raise  # the receive goes on, for the next reader
        except BaseException:
            self._receiving = None  # the receive itself failed (a closed channel)
            raise
        self._receiving = None
        return msg

    async def _async_poll_output_msg(self, parent_msg_id: str, cell: NotebookNode, cell_index: int) -> None:
        """nbclient's IOPub poll for a cell (nbclient 0.11), receiving through _next_output; the cell's request id is
        kept for _read_on."""
        self._cell_msg_id = parent_msg_id
        while True:
            msg = await self._next_output()
            if msg["parent_header"].get("msg_id") == parent_msg_id:
                try:
                    self.process_message(msg, cell, cell_index)
                except CellExecutionComplete:
                    return

    def _limit(self, cell_timeout: int | None) -> str:
        return "cell" if self.timeout == cell_timeout else "notebook"

    async def _async_handle_timeout(self, timeout: int, cell: NotebookNode | None = None) -> None | dict[str, Any]:
        """nbclient's: no execute_reply within the limit; it interrupts the kernel (interrupt_on_timeout)."""
        self._interrupted = True
        return await super()._async_handle_timeout(timeout, cell)

    def _kill_kernel(self) -> None:
        """Kill the kernel (its manager's forced shutdown: SIGKILL to the kernel's process, whose sandbox takes its
        processes with it); the notebook's later cells are not run."""
        async def kill() -> None:
            await ensure_async(self.km.shutdown_kernel(now=True))

        try:
            run_sync(kill)()
        except Exception as exc:  # noqa: BLE001 - already gone is as good as killed; the cleanup tries again
            self.log.warning("could not kill the kernel: %s", exc)

    def process_message(self, msg: dict[str, Any], cell: NotebookNode, cell_index: int) -> NotebookNode | None:
        """nbclient's, with every output sized against the caps as it arrives (OutputBudget), so that the worker
        never holds more of a flood than one message."""
        kind = msg.get("msg_type")
        if kind == "clear_output":
            self._budget.cleared()
        elif kind in _OUTPUT_MESSAGES:
            content = self._budget.admit(kind, msg.get("content") or {}, _is_test(cell))
            if content is None:
                return None
            msg = {**msg, "content": content}
        return super().process_message(msg, cell, cell_index)

    def on_cell_executed(self, **kwargs: Any) -> None:
        """nbgrader's (the reply's error goes into the cell when no output carried it), with that error cut to one
        output's cap: the reply bypasses process_message, and its error can be as large as the student makes it."""
        reply = kwargs.get("execute_reply") or {}
        content = reply.get("content") or {}
        if content.get("status") == "error" and nbytes(content) > self.max_output_bytes:
            kwargs["execute_reply"] = {**reply, "content": OutputBudget._cut("error", content,
                                                                            self.max_output_bytes // 2)}
        super().on_cell_executed(**kwargs)

    def _say_truncated(self, cell: NotebookNode, index: int) -> None:
        """What the caps cut in this cell: an error output the student's feedback shows (a test cell's outputs are
        replaced by its verdict), and a line for the instructor's report."""
        if not self._budget.cut:
            return
        said = f"output truncated: {'; '.join(self._budget.cut)}"
        _error(cell, TRUNCATED, said)
        self._truncated.append(f"cell {index}: {said}")

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

    def _report(self, resources: Any, problem: str | None, seconds: float, failure: str = "",
                phases: dict[str, float] | None = None) -> None:
        if not self.report_file:
            return
        name = (resources or {}).get("unique_key", "?")
        record = {"notebook": name, "problem": problem, "seconds": round(seconds, 2),
                  "phases": {k: round(v, 3) for k, v in (phases or {}).items()}}
        if self._truncated:
            record["truncated"] = self._truncated
        if failure:
            record = {"notebook": name, "grader_failure": failure}
        with open(self.report_file, "a") as f:
            f.write(json.dumps(record) + "\n")
