"""Scratch folders that outlive nothing: each is held by its owner process, and whoever starts next sweeps those
whose owner is gone.

A grading run (pipeline.run) and each Dask worker (distributed.GradingPlugin) grade in a private folder in the
temporary folder, holding a private gradebook (with the hidden tests), the students' work and the kernels' socket
folders. They remove it on every exit they live to see; a process killed with SIGKILL (or by the OOM killer, or a
Dask worker killed by its nanny) cannot, so the next run or worker to start sweeps it.

Sweeping must never touch a concurrent run's folder, nor anything the project did not create. A folder is swept
only when all of these hold: its name has the project's prefix, it is a real folder owned by this user, it holds
the owner's lock file, and that lock is free. The owner holds an exclusive `flock` on the lock file for as long as
it lives: the kernel drops it when the process ends however it ends, and a recycled pid cannot fake it (a pid
file alone could not tell a dead owner from a new process with its number). The lock file is locked before it
takes its name, so a folder whose lock file exists is never seen unlocked while its owner lives; a folder without
one (its owner between mkdtemp and the lock, or a grader of an older version) is left alone.

Hand-written because the two pieces it needs are in the standard library (fcntl.flock, tempfile) and no
well-kept package offers "a temporary folder that survives its owner's SIGKILL only until the next start".
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import tempfile
from pathlib import Path

from course_grader import sandbox

PREFIX = "course-grade-"  # every scratch folder of the grader: course-grade-XXXX (a run), course-grade-dask-XXXX
LOCK = ".owner.lock"


class Scratch:
    """A private folder in the temporary folder, held by this process until `remove()` (or its death)."""

    def __init__(self, prefix: str = PREFIX, base: str | Path | None = None) -> None:
        if not prefix.startswith(PREFIX):
            raise ValueError(f"a scratch folder's prefix starts with {PREFIX!r} (the sweep finds them by it)")
        self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
        os.chmod(self.path, 0o700)
        partial = self.path / f"{LOCK}.{os.getpid()}"
        self.fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new: nobody else can hold it
        os.write(self.fd, f"{os.getpid()}\n".encode())  # for a person looking; the lock is what counts
        os.rename(partial, self.path / LOCK)  # seen under its name only once locked

    def remove(self) -> None:
        """Remove the folder (the socket filesystems of kernels under it unmounted first), then let go of it."""
        sandbox.unmount_under(self.path)
        shutil.rmtree(self.path, ignore_errors=True)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _owner_gone(folder: Path) -> int:
    """An fd holding `folder`'s lock when its owner is gone (the caller removes the folder, then closes it), else -1."""
    try:
        fd = os.open(folder / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # no lock file: not ours to judge
        return -1
    try:
        if os.fstat(fd).st_uid != os.geteuid():
            raise OSError("another user's lock")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held: the owner lives (or another sweep is removing it)
        os.close(fd)
        return -1
    return fd


def sweep(base: str | Path | None = None, prefix: str = PREFIX) -> list[Path]:
    """Remove the scratch folders under `base` (the temporary folder) whose owner is gone, after killing any kernel
    still running from them; the folders removed."""
    base = Path(base or tempfile.gettempdir())
    removed = []
    try:
        entries = list(base.iterdir())
    except OSError:
        return removed
    for folder in entries:
        try:
            info = folder.lstat()
        except OSError:
            continue
        if not folder.name.startswith(prefix) or not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            continue
        fd = _owner_gone(folder)
        if fd < 0:
            continue
        try:
            sandbox.kill_kernels_under(folder)  # its kernels' supervisors (they die with their parents anyway)
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            os.close(fd)
    if removed:
        sandbox.sweep_cgroups()
    return removed
