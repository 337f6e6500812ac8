"""Processes for the tests, seen from the host: CPU burners beside a run, finding the grader's processes and killing
them (at a known point: a cell that says its kernel is inside it), the processes of a kernel's user, and what a run
leaves behind (in the shared temporary folders; its kernels' users' processes)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from course_grader import leftovers, sandbox


@contextmanager
def cpu_burners(n: int):
    """`n` processes that keep a core busy each, for as long as the block runs."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def processes(*words: str) -> list[int]:
    """Pids of processes whose command line holds every one of `words`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if all(w in cmdline for w in words):
                found.append(int(entry))
    return found


def job_folder(pid: int) -> str:
    """The job folder (<scratch>/students/<digest of the student>.<n>) a grading worker is at work in, or "" (the process gone,
    the folder deleted, or elsewhere). A worker works in its job's folder or below it."""
    try:
        folder = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""
    found = re.match(r"(.*/students/[^/]+)(/|$)", folder)
    return found.group(1) if found and not folder.endswith(" (deleted)") else ""


def children(pid: int) -> list[int]:
    """The child processes of `pid`, whichever of its threads started them."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


@contextmanager
def killer(find, times: int = 1, settle: float = 1.0):
    """A thread that SIGKILLs what `find()` returns (a pid or None), `times` times, `settle` s after it appears."""
    killed: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set() and len(killed) < times:
            pid = find()  # an exception here ends the thread: the test's `killed` then says nothing was killed
            if pid and pid not in killed:
                time.sleep(settle)
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield killed
    finally:
        stop.set()
        thread.join()


# A cell that says, where the host can see it, that the kernel is inside it (a file in the kernel's private /tmp,
# read through /proc/PID/root), then works for `seconds`: a test kills at a known point instead of after a delay.
INSIDE = "inside-a-cell"


def marker_cell(seconds: float) -> str:
    return f"import time\nopen('/tmp/{INSIDE}', 'w').close()\ntime.sleep({seconds})\n"


def with_marker(submitted: Path, dest: Path, students: list[str], notebooks: list[str], seconds: float) -> Path:
    """A class folder (<dest>/<student>/normalization/) with these students' notebooks from `submitted`
    (<student>/normalization/<notebook>.ipynb, or one notebook for every student when `submitted` is a notebook),
    each with marker_cell first."""
    import nbformat

    for student in students:
        folder = dest / student / "normalization"
        folder.mkdir(parents=True, exist_ok=True)
        for name in notebooks:
            source = submitted if submitted.suffix == ".ipynb" else submitted / student / "normalization" / f"{name}.ipynb"
            nb = nbformat.read(source, as_version=4)
            nb.cells.insert(0, nbformat.v4.new_code_cell(marker_cell(seconds)))
            nbformat.write(nb, folder / f"{name}.ipynb")
    return dest


def slow_class(course: Path, dest: Path) -> tuple[str, Path]:
    """(Q1's notebook name, a class folder at `dest`) with one student, "slow": Q1 as released, marker_cell first,
    working 600 s (the run's cell limit ends it)."""
    q1 = next((course / "release" / "normalization").glob("Q1_*.ipynb"))
    return q1.stem, with_marker(q1, dest, ["slow"], [q1.stem], seconds=600)


@contextmanager
def run_tmp() -> Iterator[Path]:
    """A temporary folder of the test's own for a run's TMPDIR (the test sees the run's folders alone), short (the
    kernels' socket paths are under it). Afterwards every kernel under it is killed and their socket filesystems
    let go of (nothing of the run stays mounted), and it is removed."""
    tmp = Path(tempfile.mkdtemp(prefix="cg-"))
    try:
        yield tmp
    finally:
        sandbox.kill_kernels_under(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def ancestors(pid: int) -> list[int]:
    """`pid`'s parent, its parent's parent, ... up to init."""
    found = []
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
        found.append(pid)
    return found


def poll(find, limit: float = 300.0):
    """What `find()` returns once it is truthy, polled; None after `limit` s (a bound on a wait, not a measurement)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        found = find()
        if found:
            return found
        time.sleep(0.05)
    return None


def gone(pids_now, limit: float = 60.0) -> bool:
    """Whether `pids_now()` is empty within `limit` s, polled. A bound on a wait, not a measurement: a process that is
    killed goes within milliseconds, an orphan stays for good."""
    return poll(lambda: not pids_now(), limit) is not None


def kill_inside_a_cell(proc: subprocess.Popen, what: str) -> None:
    """SIGKILL `proc` (a grader, a Dask worker) once a kernel below it says it is inside a cell, then check that every
    kernel it had goes with it (polled, bounded)."""
    kernels = poll(lambda: kernels_inside(proc.pid))
    assert kernels, f"the {what}'s kernel never got inside its first cell"
    uids = {uid_of(pid) for pid in kernels}
    proc.kill()
    proc.wait()
    assert gone(lambda: [pid for uid in uids for pid in processes_of(uid)]), f"a kernel outlived its {what}"


def kernels_inside(root: int) -> list[int]:
    """Kernel processes (a user of their own) below `root` whose kernel is inside marker_cell."""
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and is_kernel_uid(uid_of(int(entry)))
            and os.path.exists(f"/proc/{entry}/root/tmp/{INSIDE}") and root in ancestors(int(entry))]


def uid_of(pid: int) -> int:
    """A process's uid (its /proc folder's owner: the effective uid; a kernel's real one is the same, it drops root
    with setuid and can change neither), or -1 when it is gone."""
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return -1


def processes_of(uid: int) -> list[int]:
    """Pids of the live (not zombie) processes running as `uid` (a kernel's own user)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and uid_of(int(entry)) == uid:
            try:
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state != "Z":
                found.append(int(entry))
    return found


def is_kernel_uid(uid: int) -> bool:
    """A grading kernel's user (sandbox.py gives each kernel one of its own, from its range)."""
    return sandbox.UID_BASE <= uid < sandbox.UID_BASE + sandbox.UID_RANGE


# What the grader itself makes in the shared temporary folders (its scratch folders; kernels' socket folders).
GRADER_PREFIXES = (leftovers.PREFIX, "kernel-")
SHARED = ("/tmp", "/var/tmp", "/dev/shm")


def shared_leftovers(folders=SHARED) -> set[tuple[str, str]]:
    """(folder, name) of what the grader or its kernels made in the machine's shared temporary folders: entries owned
    by a kernel's user, or the grader's own folders (its prefixes, owned by this user). Nothing else counts: on a
    shared machine other processes write there at any time."""
    found = set()
    for folder in map(str, folders):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            try:
                owner = os.lstat(os.path.join(folder, name)).st_uid
            except OSError:
                continue
            if is_kernel_uid(owner) or (owner == os.geteuid() and name.startswith(GRADER_PREFIXES)
                                        and not _held_by_another(os.path.join(folder, name))):
                found.add((folder, name))
    return found


def _held_by_another(path: str) -> bool:
    """True for a grader's scratch folder whose owner (leftovers.LOCK names it) is another live process: a
    concurrent run's, not this one's and not a leftover."""
    try:
        pid = int(Path(path, leftovers.LOCK).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    return pid != os.getpid() and os.path.exists(f"/proc/{pid}")


class KernelWatch:
    """The users of the kernels started below this process while the block runs, sampled (every 0.1 s): afterwards,
    `left()` is every live process of those users (a kernel or a daemon it started that outlived the run). Another
    process's kernels (a shared machine) are never counted, whatever their uid."""

    def __init__(self) -> None:
        self.root = os.getpid()
        self.uids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    uid = uid_of(int(entry))
                    if is_kernel_uid(uid) and uid not in self.uids and self.root in ancestors(int(entry)):
                        self.uids.add(uid)

    def __enter__(self) -> KernelWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def left(self) -> dict[int, list[int]]:
        """{kernel uid: its live processes} for the watched kernels that still have some."""
        return {uid: pids for uid in sorted(self.uids) if (pids := processes_of(uid))}
