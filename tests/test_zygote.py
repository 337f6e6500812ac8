"""The grading kernels' fork server (course_grader/zygote.py): as safe and as fresh as an exec'd kernel.

One server for the module, started as the pipeline starts it; kernels are started through the same kernel
manager autograde uses, isolated (the tests run as root, like CI), and asked about themselves.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from course_grader import sandbox, zygote
from kernel_tools import SECRET, fork_server, kernel_owner, manager, run, stdout
from process_tools import gone, processes_of


@pytest.fixture(scope="module")
def server():
    """(socket path, private folder, answer-key folder) of a running server; stopped afterwards."""
    with fork_server() as found:
        yield found


ABOUT = """
import json, os, socket, stat, sys
try:  # the process was forked from root's server: after the uid change it is not dumpable, /proc/self is root's
    proc_env = open('/proc/self/environ', 'rb').read()
except PermissionError:
    proc_env = b''
fds = []
for fd in map(int, os.listdir('/proc/self/fd')):
    try:
        s = socket.socket(fileno=os.dup(fd))
    except OSError:
        continue
    if s.family == socket.AF_UNIX:
        fds.append(s.getsockname())
    s.close()
print(json.dumps({"uid": os.getuid(), "pid": os.getpid(), "key": os.access(%(key)r, os.R_OK),
                  "socket": os.path.exists(%(sock)r), "unix": fds,
                  "env": %(secret)r in str(dict(os.environ)),
                  "proc_env": %(secret)r.encode() in proc_env,
                  "torch": 'torch' in sys.modules}))
"""


def test_forked_kernel_is_sandboxed(server):
    sock, scratch, key = server
    cells = run(manager(sock, scratch), ABOUT % {"key": str(key / "solution.py"), "sock": str(sock),
                                                        "secret": SECRET})
    about = json.loads(stdout(cells[0]))
    assert about["uid"] >= sandbox.UID_BASE, about  # a user of its own
    assert not about["key"], "the answer key is readable from a forked kernel"
    assert not about["socket"], "the fork server's socket is reachable from a kernel"
    assert str(sock) not in json.dumps(about["unix"]), "a kernel inherited the server's socket"
    assert not about["env"] and not about["proc_env"], "the grader's secrets reached the kernel's environment"
    assert about["torch"], "the kernel was not forked from the warm server"


def test_forked_kernels_do_not_share_random_state(server):
    """Like fresh processes, which seed python, numpy and torch from the OS: no two kernels draw alike."""
    sock, scratch, key = server
    code = "import random, numpy, torch; print(random.random(), numpy.random.rand(), torch.rand(1).item())"
    first = stdout(run(manager(sock, scratch), code)[0]).split()
    second = stdout(run(manager(sock, scratch), code)[0]).split()
    assert len(first) == len(second) == 3
    assert all(a != b for a, b in zip(first, second)), (first, second)


def test_interrupt_reaches_a_forked_kernel(server):
    sock, scratch, key = server
    # Without the interrupt the cell would sleep its 60 s out and end without an error.
    cells = run(manager(sock, scratch), "import time\ntime.sleep(60)", "print('after')", timeout=3)
    assert [o.get("ename") for o in cells[0].outputs if o.output_type == "error"] == ["KeyboardInterrupt"]
    assert stdout(cells[1]) == "after\n"  # the kernel survived the interrupt


def test_killing_the_client_kills_its_kernel(server):
    """The kernel manager kills the process it started (the client): the forked kernel must go too."""
    sock, scratch, key = server
    km = manager(sock, scratch)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import os; print(os.getuid())")]
    client = NotebookClient(nb, km=km, timeout=60)
    with client.setup_kernel():
        client.execute_cell(nb.cells[0], 0)
        uid = int(stdout(nb.cells[0]))
        assert processes_of(uid), "the kernel's processes are not visible on the host"
        os.kill(km.provisioner.process.pid, signal.SIGKILL)
        assert gone(lambda: processes_of(uid)), "the forked kernel outlived its client"


@pytest.mark.parametrize("how", ["forked", "exec'd", "exec'd by the client"])
def test_a_killed_kernel_manager_takes_its_kernel_with_it(server, how, tmp_path):
    """A grading worker (the kernel manager's process) SIGKILLed while its kernel is inside a cell: the kernel's
    launcher is orphaned, and the kernel must not stay (it would idle on its sockets for good): forked from the
    server, exec'd afresh (a retry's kernel), or exec'd by the client when the server cannot be reached."""
    sock, scratch, _ = server
    where = {"forked": sock, "exec'd": "", "exec'd by the client": tmp_path / "missing.sock"}[how]
    with kernel_owner(where, scratch) as (owner, uid):
        assert processes_of(uid), "the kernel's processes are not visible on the host"
        owner.kill()  # SIGKILL: nothing of the owner runs again
        owner.wait()
        assert gone(lambda: processes_of(uid)), f"the {how} kernel outlived its kernel manager"


def test_a_killed_fork_server_takes_its_kernels_with_it():
    """The server SIGKILLed while one of its kernels is inside a cell (the kernel said so): the kernel goes."""
    with fork_server() as (sock, scratch, _):
        server_pid = int(next(p for p in os.listdir("/proc") if p.isdigit() and _serves(int(p), sock)))
        with kernel_owner(sock, scratch) as (owner, uid):
            assert processes_of(uid)
            os.kill(server_pid, signal.SIGKILL)
            assert gone(lambda: processes_of(uid)), "a forked kernel outlived its fork server"


def _serves(pid: int, sock) -> bool:
    """True for the fork server on `sock` (its socket's path is in its environment)."""
    try:
        return f"COURSE_ZYGOTE_SOCKET={sock}".encode() in open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return False


def test_no_server_means_a_fresh_kernel(server, tmp_path):
    sock, scratch, key = server
    cells = run(manager(tmp_path / "missing.sock", scratch), "import sys; print('torch' in sys.modules)")
    assert stdout(cells[0]) == "False\n"  # exec'd afresh, and it works


def test_a_server_that_cannot_start_says_why(tmp_path):
    broken = tmp_path / "broken" / "course_lib"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('course_lib is broken on purpose')\n")
    env = dict(os.environ, PYTHONPATH=str(broken.parent))  # found before the installed course_lib
    proc, why = zygote.start(tmp_path / "z.sock", env, tmp_path / "z.log", timeout=60)
    assert proc is None and "broken on purpose" in why, why
    assert not zygote.starting_marker(tmp_path / "z.sock").exists()


def test_requests_from_other_users_are_refused(server):
    """The socket is the grader's alone: another user (a kernel has one of its own) cannot ask root for a kernel."""
    sock, _, _ = server
    assert os.stat(sock).st_mode & 0o777 == 0o600 and os.stat(sock).st_uid == os.geteuid()
    code = f"import socket; s = socket.socket(socket.AF_UNIX); s.connect({str(sock)!r})"
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "Permission denied" in done.stderr, done.stderr


GUARDED_CALL = """
import sys, torch
from course_recorder.guard import RefuseKernels, Evidence
before = set(sys.modules)
with RefuseKernels("LayerNorm", Evidence()):
    torch.ones(2).mean()
print(len(set(sys.modules) - before))
"""


def test_a_forked_kernels_first_guarded_call_imports_nothing_more(server):
    """The guard's dispatch mode makes torch import torch._dynamo (about 900 modules, 1 s) at its first call: the
    fork server has imported it, so no kernel pays for it at its first probe (it did, once per notebook)."""
    sock, scratch, _ = server
    cells = run(manager(sock, scratch), GUARDED_CALL)
    assert int(stdout(cells[0])) < 20, stdout(cells[0])
