"""Nothing outlives a run (issue 18, item 6): scratch folders are swept only when their owner is gone, and the
checks of the machine's state count only what the grader and its kernels created (a shared CI machine's other
processes cannot fail them, a real leak still does)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from course_grader import leftovers, sandbox
from process_tools import KernelWatch, shared_leftovers

ROOT = Path(__file__).resolve().parent.parent
OWNER = """
import sys
sys.path.insert(0, sys.argv[1])
from course_grader import leftovers
held = leftovers.Scratch(base=sys.argv[2])
(held.path / "gradebook.db").write_text("the hidden tests")
print(held.path, flush=True)
sys.stdin.read()  # lives until the test kills it or closes its stdin
"""


def _owner(base: Path) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen([sys.executable, "-c", OWNER, str(ROOT), str(base)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    return proc, Path(proc.stdout.readline().strip())


def test_a_killed_owners_scratch_is_swept_and_a_live_ones_never(tmp_path):
    live, live_folder = _owner(tmp_path)
    killed, killed_folder = _owner(tmp_path)
    try:
        assert leftovers.sweep(tmp_path) == []  # both owners live: a concurrent run's folder is never touched
        killed.kill()  # SIGKILL: it removes nothing
        killed.wait()
        assert (killed_folder / "gradebook.db").exists()
        assert leftovers.sweep(tmp_path) == [killed_folder]
        assert not killed_folder.exists() and (live_folder / "gradebook.db").exists()
    finally:
        for proc in (live, killed):
            proc.kill()
            proc.wait()


def test_only_the_projects_own_folders_are_swept(tmp_path):
    """Another program's folder, a folder with the prefix but no lock (its owner between mkdtemp and the lock, or
    an older grader), another user's folder, and a symlink with the prefix all stay."""
    other = tmp_path / "pytest-of-someone"
    other.mkdir()
    unlocked = tmp_path / f"{leftovers.PREFIX}nolock"
    unlocked.mkdir()
    theirs, foreign = _owner(tmp_path)
    theirs.kill()
    theirs.wait()  # a dead owner's folder, given to another user
    os.chown(foreign, 65534, 65534)
    os.chown(foreign / leftovers.LOCK, 65534, 65534)
    link = tmp_path / f"{leftovers.PREFIX}link"
    link.symlink_to(other)
    assert leftovers.sweep(tmp_path) == []
    assert other.exists() and unlocked.exists() and foreign.exists() and link.is_symlink()


def test_the_shared_folders_check_ignores_other_processes_and_sees_a_kernels_file(tmp_path):
    """An unrelated process writes the temporary folders while the check runs: no change is counted. A file a
    kernel's user made there (a kernel that got out), or a grader folder left behind, is counted."""
    folders = (tmp_path / "tmp", tmp_path / "var-tmp", tmp_path / "shm")
    for folder in folders:
        folder.mkdir()
    naive = [sorted(os.listdir(folder)) for folder in folders]  # what the check listed before (issue 18)
    concurrent, _ = _owner(folders[0])  # another grading run's live scratch folder (same user, same prefix)
    before = shared_leftovers(folders)
    writer = subprocess.run([sys.executable, "-c", "import sys, tempfile\nfor d in sys.argv[1:]:\n"
                             "    tempfile.mkstemp(dir=d); tempfile.mkdtemp(dir=d)\n", *map(str, folders)], check=True)
    assert writer.returncode == 0 and len(list(folders[0].iterdir())) == 3
    assert [sorted(os.listdir(folder)) for folder in folders] != naive  # the old check failed here
    assert shared_leftovers(folders) == before, "another process's files were counted"
    planted = folders[0] / "exfiltrated.txt"
    planted.write_text("a kernel's file")
    os.chown(planted, sandbox.UID_BASE + 4242, sandbox.UID_BASE + 4242)
    (folders[2] / f"{leftovers.PREFIX}abcd").mkdir()
    after = shared_leftovers(folders)
    concurrent.kill()
    concurrent.wait()
    assert after - before == {(str(folders[0]), "exfiltrated.txt"), (str(folders[2]), f"{leftovers.PREFIX}abcd")}
    assert before == set(), before  # the concurrent run's folder was never counted


def test_the_leftover_kernel_check_counts_this_runs_kernels_only(tmp_path):
    """A process of a kernel's uid that this process did not start (another run's kernel on a shared machine) is
    never counted; a kernel this process started, still running, is."""
    from kernel_tools import fork_server, kernel_owner

    # Not this process's child: started by a shell that exits at once (as another run's kernel would be).
    stranger = int(subprocess.run(["sh", "-c", f"setpriv --reuid={sandbox.UID_BASE + 4243} --regid="
                                   f"{sandbox.UID_BASE + 4243} --clear-groups sleep 300 >/dev/null 2>&1 & echo $!"],
                                  capture_output=True, text=True, check=True).stdout)
    try:
        with fork_server() as (sock, scratch, _), KernelWatch() as watch:
            with kernel_owner(sock, scratch) as (owner, uid):
                while uid not in watch.uids:  # sampled: seen within a few samples (the owner waits in its cell)
                    time.sleep(0.05)
                left = watch.left()
                assert list(left) == [uid] and left[uid], left  # ours, still running; nothing else counted
        assert not watch.left(), watch.left()  # gone with its kernel manager; the stranger is not counted
        assert os.path.exists(f"/proc/{stranger}") and (sandbox.UID_BASE + 4243) not in watch.uids
    finally:
        os.kill(stranger, 9)
