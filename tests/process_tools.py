"""Processes for the grader-failure tests: CPU burners beside a run, finding the grader's processes, killing them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path


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
    """The job folder (<scratch>/students/<student>.<n>) a grading worker is at work in, or "" (the process gone,
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


def age(pid: int) -> float:
    """Seconds since `pid` started (0 when it is gone)."""
    try:
        # Field 22 of /proc/PID/stat (counted after the command's closing parenthesis) is the start time in
        # clock ticks since boot.
        start = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return 0.0
    return uptime - start / os.sysconf("SC_CLK_TCK")


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
