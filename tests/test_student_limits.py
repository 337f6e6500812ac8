"""A student's hang or flood is the student's, and bounded (issue 18, items 3 and 4: the executor).

Small hostile Q1 notebooks graded through the real worker: the reference solutions with one cell of student
code added after the channel_stats tests. Each attack is scored (never "not graded"), in one notebook run (no
retry), with the points the tests before it earned, and the grader says why: a cell that ignores the interrupt
(a long C call, SIGINT ignored) ran past the time limit and its kernel was killed; a flood of output (one huge
print, a huge HTML display, many outputs) was truncated as it arrived, and the autograded notebook stays under
the notebook's cap.

The mechanism that tells a student's hang (no reply to the cell within its limit: the kernel was interrupted)
from a grader's late output (the reply came, its last output did not) is tested with a stub kernel client, so
that no test depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from queue import Empty

import nbformat
import pytest

from course_grader.failures import GraderFailure
from course_grader.kernel import RECORD_MIME, OutputBudget, RobustExecute, nbytes
from submissions import add_cell, graded_class
from hostile import notebook

Q1 = "Q1_bn_learns_and_measures"
AFTER = "test_channel_stats_contract"  # the attack runs after these tests have earned their points
EARNED = ("test_channel_stats_values", "test_channel_stats_contract")
MIB = 1 << 20
# Small caps, so that a flood passes them quickly; the defaults are larger (pipeline.Options).
CAPS = dict(max_output_bytes=MIB // 8, max_cell_output_bytes=MIB // 2, max_notebook_output_bytes=2 * MIB)

ATTACKS = {
    "c-call": ("sum(range(10**14))\n", "time"),
    "sigint-ignored": ("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass\n", "time"),
    "print-flood": ('line = "x" * (1 << 20)\nfor _ in range(300):\n    print(line)\n', "output"),
    "html-flood": ("from IPython.display import HTML, display\n"
                   "display(HTML('<p>' + 'x' * (64 << 20) + '</p>'))\n", "output"),
    # Outputs of 1 kB, so that the cell's cap is passed within the first 600: zmq drops IOPub messages its reader
    # cannot take in time (a flood on a busy machine), and the cap must be passed by messages that arrive.
    "many-outputs": ("from IPython.display import display\nfor i in range(12000):\n    display('x' * 1000)\n",
                     "output"),
}
SAYS = {"time": re.compile(r"ran past the (cell |notebook )?time limit"), "output": re.compile(r"output truncated")}


@pytest.fixture(scope="module")
def limits():
    """The attacks and an honest classmate graded as one class, with a 15 s cell limit and small output caps: the
    outcome, each student's autograded notebooks' size and their feedback pages' HTML."""
    courses = []

    def make(release: Path, source: Path):
        courses.append(release.parent.parent)
        honest = notebook(release, source, Q1, "ref")
        out = {"honest": (Q1, honest)}
        for name, (code, _) in ATTACKS.items():
            nb = notebook(release, source, Q1, "ref")
            add_cell(nb, code, after=AFTER)
            out[name] = (Q1, nb)
        return out

    with graded_class(make, "test-limits-", cell_timeout=15, notebook_timeout=200, **CAPS) as (graded, _, outcome):
        course = courses[0]
        sizes = {student: sum(p.stat().st_size for p in (course / "autograded" / student).rglob("*.ipynb"))
                 for student in graded if (course / "autograded" / student).exists()}
        feedback = {student: "".join(p.read_text(errors="replace") for p in (course / "feedback" / student)
                                     .rglob("*.html")) for student in graded}
        yield graded, outcome, sizes, feedback


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_the_attack_is_scored_in_one_run_and_said(limits, attack):
    graded, outcome, _, _ = limits
    result = outcome.results[attack]
    assert result.ok and not result.not_graded, result.not_graded
    assert not result.retried, result.retried  # one notebook run: the student's doing is never retried
    honest, mine = graded["honest"].points, graded[attack].points
    assert honest and all(honest[t] > 0 for t in EARNED), honest
    assert {t: mine[t] for t in EARNED} == {t: honest[t] for t in EARNED}, mine
    kind = ATTACKS[attack][1]
    if kind == "time":  # the tests after the cell did not run
        assert all(mine[t] == 0 for t in mine if t not in EARNED), mine
    else:  # output is cut, the notebook goes on
        assert mine == honest, (mine, honest)
    said = graded[attack].findings
    assert any(SAYS[kind].search(s) for s in said), said
    assert not any("not graded" in s for s in said), said


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_the_student_is_told_in_the_feedback(limits, attack):
    """The student's feedback page says why: the cell that ran past the limit, or the output that was cut."""
    _, _, _, feedback = limits
    assert SAYS[ATTACKS[attack][1]].search(feedback[attack]), feedback[attack][-2000:]


@pytest.mark.parametrize("attack", [a for a, (_, kind) in ATTACKS.items() if kind == "output"])
def test_the_autograded_notebook_stays_under_the_cap(limits, attack):
    _, _, sizes, _ = limits
    # the notebook's outputs are capped; the cells' source, metadata and the notes take a few KiB more
    assert 0 < sizes[attack] < CAPS["max_notebook_output_bytes"] + 512 * 1024, sizes


def test_the_honest_classmate_is_untouched(limits):
    graded, outcome, _, _ = limits
    assert outcome.results["honest"].ok and not outcome.results["honest"].retried
    assert graded["honest"].total == graded["honest"].max_total, graded["honest"]
    assert not any(SAYS["output"].search(s) or SAYS["time"].search(s) for s in graded["honest"].findings)


# ------------------------------------------------------------------ a hang or a late output: decided by the facts
class _Channel:
    """A stub channel: the messages given (and any added later), then nothing (Empty once the caller's wait is
    over)."""

    def __init__(self, messages: list[dict]) -> None:
        self.messages = messages

    async def get_msg(self, timeout: float | None = None) -> dict:
        await asyncio.sleep(0)  # let nbclient's other task (the IOPub poll) run, as a real wait would
        if self.messages:
            return self.messages.pop(0)
        while timeout is None:  # a receive without a limit: until a message comes (or it is cancelled)
            await asyncio.sleep(0.01)
            if self.messages:
                return self.messages.pop(0)
        raise Empty


class _Backlog(_Channel):
    """A stub IOPub channel whose messages are still on their way when nbclient's wait for them gives up (a student
    flooded the channel during the cell): the cell's first message (busy) comes, then nothing until after nbclient's
    1 s wait (iopub_timeout) has ended, then the rest."""

    def __init__(self, messages: list[dict]) -> None:
        super().__init__(messages)
        self.polls = 0

    async def get_msg(self, timeout: float | None = None) -> dict:
        self.polls += 1
        if self.polls == 2:
            await asyncio.sleep(1.5)
        return await super().get_msg(timeout)


class _TakenLate(_Channel):
    """A stub IOPub channel on a busy machine: the receive takes the cell's last message (its idle status) off the
    socket just before nbclient's wait for it ends, and hands it over only after (asyncio resumes the receiving task
    later): the wait's cancellation lands in between."""

    async def get_msg(self, timeout: float | None = None) -> dict:
        if len(self.messages) == 1:
            taken = self.messages.pop(0)
            await asyncio.sleep(1.5)  # past nbclient's 1 s wait (iopub_timeout), within _read_on's next 1 s
            return taken
        return await super().get_msg(timeout)


class _Client:
    """A stub kernel client: `replies` on the shell channel, `outputs` on IOPub, always alive; with `answers`, a
    kernel_info request puts its status (busy, idle) on IOPub after everything before it, as ipykernel does."""

    def __init__(self, replies: list[dict], outputs: list[dict], answers: bool = False) -> None:
        self.shell_channel, self.iopub_channel = _Channel(replies), _Channel(outputs)
        self.answers = answers

    def execute(self, code: str, **_: object) -> str:
        return "cell-1"

    def kernel_info(self) -> str:
        if self.answers:
            self.iopub_channel.messages += [{"parent_header": {"msg_id": "info-1"}, "msg_type": "status", "header": {},
                                             "content": {"execution_state": state}} for state in ("busy", "idle")]
        return "info-1"

    async def is_alive(self) -> bool:
        return True


class _Manager:
    """A stub kernel manager that remembers what was done to its kernel."""

    def __init__(self) -> None:
        self.done: list[str] = []

    async def interrupt_kernel(self) -> None:
        self.done.append("interrupted")

    async def shutdown_kernel(self, now: bool = False) -> None:
        self.done.append("killed" if now else "shut down")

    async def is_alive(self) -> bool:
        return "killed" not in self.done


def _reply() -> dict:
    return {"parent_header": {"msg_id": "cell-1"}, "msg_type": "execute_reply", "header": {},
            "content": {"status": "ok", "execution_count": 1}}


def _iopub(kind: str, **content) -> dict:
    return {"parent_header": {"msg_id": "cell-1"}, "msg_type": kind, "header": {"msg_type": kind}, "content": content}


def _executor(replies: list[dict], outputs: list[dict]) -> tuple[RobustExecute, _Manager]:
    ex = RobustExecute(timeout=1, iopub_timeout=1)  # the stub answers (or not) at once: no wait is reached
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("while True: pass")])
    ex.nb, ex.km, ex.kc = nb, _Manager(), _Client(replies, outputs)
    ex.reset_execution_trackers()
    ex.resources = {}
    return ex, ex.km


def test_a_cell_that_never_replied_is_the_students_and_its_kernel_is_killed():
    """No execute_reply within the cell's limit: nbclient interrupts the kernel; the interrupt brings no idle
    either (the cell ignores SIGINT): the cell ran past its limit, the kernel is killed, nothing is retried."""
    ex, km = _executor(replies=[], outputs=[])
    cell = ex.nb.cells[0]
    problem = ex.run_cell(cell, {}, 0, cell_timeout=1)
    assert km.done == ["interrupted", "killed"], km.done
    assert problem and "ran past the cell time limit" in problem and "killed" in problem, problem
    assert any(o.get("output_type") == "error" and "time limit" in o.get("evalue", "") for o in cell.outputs)


def test_a_reply_whose_last_output_is_late_is_the_graders():
    """The cell replied in time; then nothing more came from the kernel: not its idle status, not its answer to a
    request (the kernel or the channel is lost), not the student's doing. The kernel was not interrupted; the
    notebook is retried."""
    ex, km = _executor(replies=[_reply()], outputs=[_iopub("status", execution_state="busy")])
    with pytest.raises(GraderFailure, match="last output did not arrive"):
        ex.run_cell(ex.nb.cells[0], {}, 0, cell_timeout=1)
    assert km.done == [], km.done


def test_a_reply_whose_output_is_still_arriving_is_read_to_its_end():
    """The cell replied; its output (a flood the student printed) was still arriving when nbclient's wait for the
    last output ended: the channel is alive, so the rest is read (under the caps) up to the cell's idle status, and
    the notebook goes on. Not a grader failure: a student's flood must not turn into 'not graded'."""
    ex, km = _executor(replies=[_reply()], outputs=[])
    ex.kc.iopub_channel = _Backlog([_iopub("status", execution_state="busy"),
                                    *[_iopub("stream", name="stdout", text="x" * 1000 + "\n") for _ in range(50)],
                                    _iopub("status", execution_state="idle")])
    ex._budget = OutputBudget(per_output=10_000, per_cell=20_000, per_notebook=40_000, per_test_records=1000)
    cell = ex.nb.cells[0]
    assert ex.run_cell(cell, {}, 0, cell_timeout=1) is None
    assert km.done == [] and ex._budget.cell <= 20_000
    assert any(o.get("ename") == "OutputTruncated" for o in cell.outputs), cell.outputs


def test_a_message_taken_as_the_wait_ends_is_not_lost():
    """nbclient cancels its IOPub poll when its wait for the cell's last output ends. A message the poll had already
    received by then (the idle status, or an output with the test's records) must still be read: lost, it would
    make an honest cell "not graded", or cost a test its evidence."""
    ex, km = _executor(replies=[_reply()], outputs=[])
    ex.kc.iopub_channel = _TakenLate([_iopub("status", execution_state="busy"),
                                      _iopub("stream", name="stdout", text="done\n"),
                                      _iopub("status", execution_state="idle")])
    cell = ex.nb.cells[0]
    assert ex.run_cell(cell, {}, 0, cell_timeout=1) is None
    assert km.done == [] and [o.get("text") for o in cell.outputs] == ["done\n"], cell.outputs


def test_a_cells_idle_status_dropped_in_a_flood_ends_the_cell_when_the_kernel_answers():
    """IOPub is a zmq PUB socket: a flood on a busy machine drops messages its reader cannot take in time, the cell's
    idle status among them. The kernel's status for a request sent after the cell comes after all the cell sent:
    the cell is done (the student is told some output was lost), not "not graded"."""
    ex, km = _executor(replies=[_reply()], outputs=[])
    ex.kc = _Client([_reply()], [_iopub("status", execution_state="busy"),
                                 _iopub("stream", name="stdout", text="x\n")], answers=True)
    cell = ex.nb.cells[0]
    assert ex.run_cell(cell, {}, 0, cell_timeout=1) is None
    assert km.done == [] and cell.outputs[0].get("text") == "x\n", cell.outputs
    assert any(o.get("ename") == "OutputTruncated" and "was lost" in o.get("evalue", "") for o in cell.outputs)


def test_a_cell_that_stops_when_interrupted_keeps_its_kernel():
    """The interrupt is enough for an ordinary loop: the kernel goes idle, the cell is recorded as past its limit
    and the kernel is not killed (later cells are not run: its state is unknown)."""
    idle = {"parent_header": {"msg_id": "cell-1"}, "msg_type": "status", "header": {},
            "content": {"execution_state": "idle"}}
    ex, km = _executor(replies=[], outputs=[idle])
    problem = ex.run_cell(ex.nb.cells[0], {}, 0, cell_timeout=1)
    assert km.done == ["interrupted"], km.done
    assert problem and "ran past the cell time limit" in problem and "killed" not in problem, problem


def test_caps_are_settable_from_the_command_line():
    from course_grader.__main__ import parse

    options = parse(["--max-output-bytes", "1000", "--max-cell-output-bytes", "2000", "--max-notebook-output-bytes",
                     "3000", "--max-record-bytes", "4000", "--worker-memory-mb", "5000"])[0]
    assert (options.max_output_bytes, options.max_cell_output_bytes, options.max_notebook_output_bytes,
            options.max_record_bytes, options.worker_memory_mb) == (1000, 2000, 3000, 4000, 5000)


# ------------------------------------------------------------------ the caps, message by message
def _stream(text: str) -> dict:
    return {"name": "stdout", "text": text}


def test_the_budget_cuts_an_output_a_cell_and_a_notebook_and_says_so():
    budget = OutputBudget(per_output=1000, per_cell=3000, per_notebook=5000, per_test_records=10_000)
    kept = budget.admit("stream", _stream("x" * 5000), test_cell=False)
    assert kept is not None and len(kept["text"]) < 1000 and "output truncated" in kept["text"]
    assert budget.cut == ["an output passed the 1000 bytes limit"]
    for _ in range(10):
        budget.admit("stream", _stream("y" * 500), test_cell=False)
    assert budget.cell <= 3000 and any("cell's output" in c for c in budget.cut), budget.cut
    budget.next_cell()
    assert budget.cut == []
    for _ in range(10):
        budget.admit("display_data", {"data": {"text/html": "z" * 800}, "metadata": {}}, test_cell=False)
    assert budget.notebook + budget.cell <= 5000 and any("notebook's output" in c for c in budget.cut), budget.cut
    late = [budget.admit("stream", _stream("late"), test_cell=False) for _ in range(20)]
    assert late[-1] is None and budget.notebook + budget.cell <= 5000  # the notebook is full


def test_a_cleared_cell_makes_room_and_many_tiny_outputs_count():
    budget = OutputBudget(per_output=1000, per_cell=2000, per_notebook=100_000, per_test_records=10_000)
    kept = [budget.admit("display_data", {"data": {"text/plain": str(i)}, "metadata": {}}, test_cell=False)
            for i in range(1000)]
    assert kept.count(None) > 900 and budget.cut  # each output costs its keys too
    budget.cleared()
    assert budget.admit("stream", _stream("after clear_output\n"), test_cell=False) is not None


def test_records_of_a_test_cell_have_their_own_cap_and_are_kept_whole_or_not_at_all():
    budget = OutputBudget(per_output=100, per_cell=200, per_notebook=300, per_test_records=10_000)
    record = {"data": {RECORD_MIME: {"test": "t", "records": {"x": "r" * 3000}}, "text/plain": "3 records"},
              "metadata": {}}
    assert budget.admit("display_data", record, test_cell=True) is record  # past the output caps, under its own
    assert budget.admit("display_data", record, test_cell=True) is record
    assert budget.admit("display_data", record, test_cell=True) is record
    assert budget.admit("display_data", record, test_cell=True) is None  # 4 x 3000 bytes: past 10,000
    assert any("records" in c for c in budget.cut)
    # the same bundle from a cell that is not a test is an ordinary output
    kept = budget.admit("display_data", record, test_cell=False)
    assert kept is None or RECORD_MIME not in kept["data"]


def test_an_error_is_cut_but_keeps_its_name_start():
    budget = OutputBudget(per_output=2000, per_cell=4000, per_notebook=8000, per_test_records=1000)
    error = {"ename": "E" * 5000, "evalue": "v" * 100_000, "traceback": ["line"] * 10_000}
    kept = budget.admit("error", error, test_cell=False)
    assert kept["ename"] == "E" * 100 and len(kept["evalue"]) < 2000 and nbytes(kept) < 2000


def test_nbytes_takes_deep_values_without_recursion():
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert nbytes(deep) == 100_000 and nbytes("é") == 2 and nbytes({"a": "bc"}) == 5


def test_the_record_mime_is_the_recorders():
    from course_recorder import MIME

    assert RECORD_MIME == MIME


def test_the_worker_memory_limit_raises_memory_error_in_the_worker():
    """limit_memory (what each grading worker sets from its job): an allocation past it is a MemoryError, which the
    worker reports as its memory limit reached (and the parent retries), not a machine pushed into swap."""
    code = ("from course_grader.autograde import limit_memory\nlimit_memory(300)\n"
            "try:\n    bytearray(600 << 20)\nexcept MemoryError:\n    print('MemoryError')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.stdout.strip() == "MemoryError", (done.stdout, done.stderr)
