"""The grading kernel's sandbox (course_grader/sandbox.py), one property at a time, each as the attack it stops.

Every attack runs twice: in an isolated kernel, where it must fail, and in a kernel with limits only (what a
grader that is not root gets), where it must succeed, which shows that the test can tell the difference.
Kernels are forked from one warm server for the module, as in grading; the tests run as root, like CI.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from course_grader import sandbox
from kernel_tools import ROOT, Listener, answer, fork_server, manager, run, state_of, stdout
from process_tools import processes_of

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="isolation needs root (CI runs as root)")
MODES = [pytest.param(True, id="isolated"), pytest.param(False, id="limits-only")]


@pytest.fixture(scope="module")
def server():
    _libseccomp()
    with fork_server() as found:
        yield found


def _libseccomp() -> None:
    """The system's libseccomp (pyseccomp's library: the isolated kernels' filter), installed where it is missing."""
    import ctypes.util

    if os.geteuid() == 0 and not ctypes.util.find_library("seccomp"):
        subprocess.run(["apt-get", "install", "-y", "-q", "libseccomp2"], check=False, capture_output=True)


def _kernel(server, isolate: bool, *sources: str, timeout: int = 60):
    sock, scratch, _ = server
    return run(manager(sock, scratch, isolate=isolate), *sources, timeout=timeout)


@pytest.mark.parametrize("isolate", MODES)
def test_a_kernel_cannot_stop_or_kill_a_classmate(server, isolate):
    """Attack: SIGSTOP every process the kernel can see, a classmate's kernel among them (its host pid is known:
    /proc of an unisolated kernel shows it). Unisolated, only the classmate is attacked (not the test itself)."""
    victim = subprocess.Popen(["sleep", "120"], preexec_fn=lambda: os.setuid(sandbox.UID_BASE - 1))
    try:
        others = "[int(p) for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()]" if isolate else "[]"
        code = f"""
import json, os, signal
hit = []
for pid in [{victim.pid}] + {others}:
    try:
        os.kill(pid, signal.SIGSTOP)
        hit.append(pid)
    except OSError:
        pass
print(json.dumps({{"hit": hit, "victim": {victim.pid} in hit}}))
"""
        found = answer(_kernel(server, isolate, code)[0])
        assert state_of(victim.pid) == ("S" if isolate else "T"), found
        if isolate:
            assert not found["victim"], found
    finally:
        victim.kill()
        victim.wait()


@pytest.mark.parametrize("isolate", MODES)
def test_a_kernel_sees_only_its_own_processes(server, isolate):
    """Attack: read the grader's command line (database URL, class paths) from /proc."""
    marker = f"--db-url=postgresql://grader:hunter2-{os.getpid()}@db/x"
    grader = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    try:
        code = """
import json, os
lines = []
for p in os.listdir('/proc'):
    if p.isdigit():
        try:
            lines.append(open(f'/proc/{p}/cmdline', 'rb').read().decode(errors='replace'))
        except OSError:
            pass
print(json.dumps({"count": len(lines), "cmdlines": lines}))
"""
        found = answer(_kernel(server, isolate, code)[0])
        leaked = any("hunter2" in line for line in found["cmdlines"])
        assert leaked != isolate, found["count"]
        if isolate:
            assert found["count"] <= 3, found  # the init, the kernel (and the process listing)
    finally:
        grader.kill()
        grader.wait()


@pytest.mark.parametrize("isolate", MODES)
def test_a_kernels_daemons_die_with_it(server, isolate):
    """Attack: a double-forked daemon that outlives the kernel (and could act on a later student's grading).

    The daemon is `sleep 300.<nonce>` (GNU sleep takes a fraction), so that only this test's daemon is looked for and
    killed: without a sandbox the kernel runs as root, beside whatever else root runs on a shared machine."""
    nonce = f"300.{secrets.randbelow(10**9):09d}"
    code = f"""
import json, os, subprocess
subprocess.Popen(['sleep', '{nonce}'], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(json.dumps({{"uid": os.getuid()}}))
"""
    uid = answer(_kernel(server, isolate, code)[0])["uid"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_is_sleep(p, nonce) for p in _processes(uid)):
        time.sleep(0.1)
    survivors = [p for p in _processes(uid) if _is_sleep(p, nonce)]
    try:
        assert bool(survivors) != isolate, survivors
    finally:
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)


def _processes(uid: int) -> list[int]:
    return processes_of(uid) if uid != 0 else [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _is_sleep(pid: int, seconds: str) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() == f"sleep\x00{seconds}\x00".encode()
    except OSError:
        return False


@pytest.mark.parametrize("isolate", MODES)
def test_a_kernel_has_no_network(server, isolate):
    """Attack: send what the kernel read to a listener on the host's 127.0.0.1."""
    listener = Listener()
    code = f"""
import json, socket
try:
    s = socket.create_connection(('127.0.0.1', {listener.port}), timeout=3)
    s.sendall(b'the answer key')
    s.close()
    sent = True
except OSError as err:
    sent = False
print(json.dumps({{"sent": sent, "interfaces": [name for _, name in socket.if_nameindex()]}}))
"""
    found = answer(_kernel(server, isolate, code)[0])
    listener.stop()
    assert bool(listener.received) != isolate and found["sent"] != isolate, found
    if isolate:
        assert found["interfaces"] == ["lo"], found


@pytest.mark.parametrize("isolate", MODES)
def test_files_in_tmp_shm_and_var_tmp_do_not_survive(server, isolate):
    """Attack: leave files in /tmp, /dev/shm and /var/tmp for a later kernel (another student's) to find."""
    tag = f"left-by-a-kernel-{os.getpid()}-{isolate}"
    code = f"""
import json
for folder in ('/tmp', '/dev/shm', '/var/tmp'):
    open(f'{{folder}}/{tag}', 'w').write('x')
print(json.dumps({{"ok": True}}))
"""
    assert answer(_kernel(server, isolate, code)[0])["ok"]
    left = [folder for folder in ("/tmp", "/dev/shm", "/var/tmp") if os.path.exists(f"{folder}/{tag}")]
    for folder in left:
        os.remove(f"{folder}/{tag}")
    assert bool(left) != isolate, left


def test_the_kernels_scratch_space_is_limited(server):
    """Attack: fill the disk (or the memory, for a tmpfs) through /tmp."""
    code = """
import json
written = 0
try:
    with open('/tmp/big', 'wb') as f:
        for _ in range(4096):
            f.write(b'0' * (1 << 20))
            written += 1
except OSError as err:
    error = type(err).__name__
print(json.dumps({"written_mb": written, "error": error}))
"""
    found = answer(_kernel(server, True, code)[0])
    assert found["written_mb"] <= sandbox.SCRATCH_MB and found["error"] == "OSError", found


@pytest.mark.parametrize("isolate", MODES)
def test_a_kernel_sees_only_what_is_exposed(server, isolate):
    """Attack: read the answer key: the judge, the course's source/, another checkout of the course elsewhere."""
    other = Path(tempfile.mkdtemp(prefix="other-checkout-", dir="/var/tmp"))
    (other / "source").mkdir()
    (other / "source" / "Q3_batchnorm.ipynb").write_text("the hidden tests")
    os.chmod(other, 0o755)
    try:
        code = f"""
import json, os
def readable(path):
    try:
        open(path).read(10)
        return True
    except OSError:
        return False
try:
    import course_judge
    judge = True
except ImportError:
    judge = False
print(json.dumps({{"other": readable({str(other / 'source' / 'Q3_batchnorm.ipynb')!r}),
                   "source": os.path.exists({str(ROOT / 'source')!r}),
                   "judge_file": readable({str(ROOT / 'course_judge' / '__init__.py')!r}),
                   "judge": judge, "root": sorted(os.listdir('/')),
                   "course_lib": readable({str(ROOT / 'course_lib' / '__init__.py')!r})}}))
"""
        found = answer(_kernel(server, isolate, code)[0])
        assert found["course_lib"], found  # what a kernel needs is there
        for key in ("other", "source", "judge_file", "judge"):
            assert found[key] != isolate, (key, found)
    finally:
        subprocess.run(["rm", "-rf", str(other)], check=False)


def test_a_kernel_cannot_write_what_it_can_read(server):
    """Attack: change course_lib (or the environment) for the students graded after this one."""
    code = f"""
import json
try:
    open({str(ROOT / 'course_lib' / 'planted.py')!r}, 'w').write('x')
    wrote = True
except OSError as err:
    wrote = str(err)
print(json.dumps({{"wrote": wrote}}))
"""
    found = answer(_kernel(server, True, code)[0])
    assert found["wrote"] is not True and not (ROOT / "course_lib" / "planted.py").exists(), found


def test_kernels_at_the_same_time_have_users_of_their_own(server):
    """Two kernels running at once: different uids, neither root nor the grader's, no way back to root."""
    code = """
import json, os, time
try:
    os.setuid(0)
    root = True
except PermissionError:
    root = False
time.sleep(1)
print(json.dumps({"uid": os.getuid(), "groups": os.getgroups(), "root": root}))
"""
    results: list[dict] = []
    threads = [threading.Thread(target=lambda: results.append(answer(_kernel(server, True, code)[0]))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2
    uids = {r["uid"] for r in results}
    assert len(uids) == 2 and all(u >= sandbox.UID_BASE for u in uids), results
    assert not any(r["root"] or r["groups"] for r in results), results


def test_without_root_grading_says_kernels_are_not_isolated():
    """A grader that is not root cannot isolate kernels: the probe says so (and --require-isolation refuses).

    The unprivileged user runs the system's interpreter on a copy of the sandbox module (it needs only the settings) in a
    folder it can read, so the test holds wherever the checkout lives (`mktemp -d` makes one only root can read)."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as readable:
        shutil.copytree(ROOT / "course_grader", Path(readable) / "course_grader",
                        ignore=lambda folder, names: [n for n in names if n not in ("__init__.py", "sandbox.py", "settings.py")])
        for folder in (Path(readable), Path(readable) / "course_grader"):
            folder.chmod(0o755)
        code = f"import sys; sys.path.insert(0, {readable!r}); from course_grader.sandbox import probe; print(probe())"
        done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               os.path.realpath(sys.executable), "-I", "-c", code],
                              capture_output=True, text=True, cwd="/")
    assert done.stdout.startswith("NOT ISOLATED"), done.stdout + done.stderr
    assert sandbox.probe() == "isolated"


def test_an_isolated_kernel_still_computes(server):
    """What a notebook needs works in the sandbox: torch, course_lib and the data, a plot, the kernel's home."""
    code = """
import json, os
import matplotlib.pyplot as plt
import torch
from course_lib import get_data
x_train, y_train, _, _ = get_data()
plt.plot([1, 2, 3]); plt.savefig(os.path.expanduser('~/plot.png'))
print(json.dumps({"n": len(x_train), "sum": float(torch.ones(3).sum()), "home": os.getcwd()}))
"""
    found = answer(_kernel(server, True, code, timeout=120)[0])
    assert found == {"n": 4096, "sum": 3.0, "home": sandbox.HOME}, found


def test_an_interrupt_still_reaches_the_kernel_and_the_kernel_survives(server):
    cells = _kernel(server, True, "import time\ntime.sleep(60)", "print('after')", timeout=3)
    assert [o.get("ename") for o in cells[0].outputs if o.output_type == "error"] == ["KeyboardInterrupt"]
    assert stdout(cells[1]) == "after\n"


# ------------------------------------------------------------------------------------- issue 18, item 5 (and 3, 4)
SYSCALLS = r"""
import ctypes, errno, json, os, threading
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {"unshare": 272, "keyctl": 250, "add_key": 248, "io_uring_setup": 425, "ptrace": 101, "userfaultfd": 323,
      "perf_event_open": 298, "personality": 135, "bpf": 321, "clone3": 435, "setns": 308, "mount": 165}
def call(name, *args):
    ret = libc.syscall(NR[name], *args)
    return "ok" if ret >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
found = {}
# a user namespace: root inside it, and the door to every namespaced part of the host's kernel
pid = os.fork()
if pid == 0:
    os._exit(0 if call("unshare", 0x10000000) == "ok" else 1)
found["unshare(CLONE_NEWUSER)"] = "ok" if os.waitpid(pid, 0)[1] == 0 else "EPERM"
pid = os.fork()
if pid == 0:  # PTRACE_TRACEME: the first step of a debugger's attach
    os._exit(0 if call("ptrace", 0, 0, 0, 0) == "ok" else 1)
found["ptrace"] = "ok" if os.waitpid(pid, 0)[1] == 0 else "EPERM"
found["add_key"] = call("add_key", b"user", b"course-test", b"payload", 7, ctypes.c_long(-2))
found["keyctl"] = call("keyctl", 0, ctypes.c_long(-3), 1)  # KEYCTL_GET_KEYRING_ID of the session keyring
params = ctypes.create_string_buffer(120)
found["io_uring_setup"] = call("io_uring_setup", 1, params)
found["userfaultfd"] = call("userfaultfd", 1 | 0o2000000)  # UFFD_USER_MODE_ONLY | O_CLOEXEC
attr = ctypes.create_string_buffer(128)
ctypes.memmove(attr, (1).to_bytes(4, "little") + (128).to_bytes(4, "little") + (0).to_bytes(8, "little"), 16)
attr[40] = 0x60  # exclude_kernel | exclude_hv: what an unprivileged process may count
found["perf_event_open"] = call("perf_event_open", attr, 0, -1, -1, 0)
found["bpf"] = call("bpf", 0, ctypes.create_string_buffer(72), 72)  # BPF_MAP_CREATE
found["setns"] = call("setns", -1, 0)
found["personality(ADDR_NO_RANDOMIZE)"] = call("personality", 0x0040000)
call("personality", 0)
found["clone3"] = call("clone3", None, 0)
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({"found": found, "seccomp": status["Seccomp"].strip()}))
"""
# What each attack gets where nothing filters it: root (the limits-only kernel) may do all of it. EBADF (setns on
# no descriptor), EINVAL (clone3 with no arguments) and bpf's answer show the call reached the kernel's code.
UNFILTERED = {"unshare(CLONE_NEWUSER)": "ok", "ptrace": "ok", "add_key": "ok", "keyctl": "ok", "io_uring_setup": "ok",
              "userfaultfd": "ok", "perf_event_open": "ok", "setns": "EBADF", "personality(ADDR_NO_RANDOMIZE)": "ok",
              "clone3": "EINVAL"}


@pytest.mark.parametrize("isolate", MODES)
def test_a_kernel_cannot_make_the_system_calls_a_sandbox_refuses(server, isolate):
    """Attack: a user namespace of its own (root inside it), the key ring, io_uring, bpf, ptrace, userfaultfd, perf
    events, no address-space randomisation: where privilege escalations of the host's kernel start."""
    found = answer(_kernel(server, isolate, SYSCALLS)[0])
    if isolate:
        assert found["seccomp"] == "2", str(found)
        refused = {name: ("ENOSYS" if name == "clone3" else "EPERM") for name in found["found"]}
        assert found["found"] == refused, str(found)
    else:
        assert {k: found["found"][k] for k in UNFILTERED} == UNFILTERED, str(found)


def test_threads_and_the_course_libraries_work_under_the_filter(server):
    """glibc makes threads with clone3 first and falls back to clone on ENOSYS (never on EPERM): torch's and numpy's
    thread pools, Python threads, a subprocess, zmq (the kernel itself) and matplotlib all still work."""
    code = """
import json, os, subprocess, threading
import matplotlib.pyplot as plt
import numpy as np
import torch
torch.set_num_threads(2)
x = torch.randn(256, 256)
ran = []
t = threading.Thread(target=lambda: ran.append(float((x @ x).sum()) == float((x @ x).sum())))
t.start(); t.join()
plt.plot([1, 2]); plt.savefig('/tmp/p.png')
echo = subprocess.run(['echo', 'hi'], capture_output=True, text=True).stdout
print(json.dumps({"thread": ran, "threads": torch.get_num_threads(), "numpy": round(float(np.linalg.norm(np.eye(3)) ** 2), 6),
                  "echo": echo, "tasks": len(os.listdir('/proc/self/task')) > 1}))
"""
    found = answer(_kernel(server, True, code, timeout=120)[0])
    assert found == {"thread": [True], "threads": 2, "numpy": 3.0, "echo": "hi\n", "tasks": True}, found


@pytest.fixture
def submounted():
    """An exposed folder with a writable filesystem mounted inside it (as /sys has submounts, /usr may have)."""
    top = Path(tempfile.mkdtemp(prefix="test-submount-", dir="/var/tmp"))
    os.chmod(top, 0o755)
    (top / "inner").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=1777", "tmpfs", str(top / "inner")], check=True)
    try:
        yield top
    finally:
        subprocess.run(["umount", "-l", str(top / "inner")], check=False)
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.parametrize("isolate", MODES)
def test_a_kernel_cannot_write_below_a_read_only_mount(server, submounted, isolate):
    """Attack: write into a filesystem mounted below an exposed (read-only) folder: only the top mount was made
    read-only, what is mounted below it stayed writable."""
    sock, scratch, _ = server
    km = manager(sock, scratch, isolate=isolate)
    km.expose = [*km.expose, str(submounted)]
    code = f"""
import json
try:
    open({str(submounted / 'inner' / 'planted')!r}, 'w').write('x')
    wrote = True
except OSError as err:
    wrote = err.strerror
print(json.dumps({{"wrote": wrote}}))
"""
    found = answer(run(km, code)[0])
    planted = (submounted / "inner" / "planted").exists()
    assert planted != isolate and (found["wrote"] is True) != isolate, found
    if isolate:
        assert found["wrote"] == "Read-only file system", found


def test_the_socket_folder_is_a_small_filesystem_of_its_own(server):
    """Attack: fill the host's disk through the one host folder a kernel may write, its socket folder (its 256 MiB
    scratch limit does not cover it). It is a tiny tmpfs, mounted for the kernel and gone with it."""
    sock, scratch, _ = server
    km = manager(sock, scratch)
    code = """
import json, os
folder = os.path.dirname(json.load(open(os.path.expanduser('~/kernel.json')))['ip'])
written, error = 0, None
try:
    with open(os.path.join(folder, 'fill'), 'wb') as f:
        for _ in range(64):
            f.write(b'0' * (1 << 20))
            f.flush()
            written += 1
except OSError as err:
    error = err.strerror
os.remove(os.path.join(folder, 'fill'))
print(json.dumps({"written_mb": written, "error": error}))
"""
    found = answer(run(km, code)[0])
    assert found["written_mb"] <= 1 and found["error"] == "No space left on device", found
    assert not os.path.exists(km.socket_dir), "the socket folder outlived its kernel"
    assert not [p for p, _ in sandbox._mount_points(str(scratch)) if p != str(scratch)], "a mount outlived its kernel"


def test_a_killed_supervisors_socket_filesystem_is_swept(tmp_path):
    """A supervisor killed before it could unmount its kernel's socket tmpfs: the run's sweep lets go of it."""
    folder = tmp_path / "sockets" / "kernel-abc"
    folder.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", sandbox.SOCKET_FS, "tmpfs", str(folder)], check=True)
    assert os.path.ismount(folder)
    sandbox.kill_kernels_under(tmp_path)
    assert not os.path.ismount(folder)


def test_kernel_uids_come_from_a_range_nobody_else_uses(server):
    """The kernels' uids (UID_BASE + a pid) are no account's, in no /etc/subuid or /etc/subgid range (100000 up for
    the first user: a uid of 100000 + pid was a container's root there), and no process of anyone else runs as one;
    a configured range is honoured."""
    assert sandbox.UID_BASE + sandbox.UID_RANGE < 2**32 - 1
    assert not sandbox.uid_conflicts(), sandbox.uid_conflicts()
    code = "import json, os; print(json.dumps({'uid': os.getuid()}))"
    uid = answer(_kernel(server, True, code)[0])["uid"]
    assert sandbox.UID_BASE <= uid < sandbox.UID_BASE + sandbox.UID_RANGE, uid
    sock, scratch, _ = server
    base = 3_000_000_000
    uid = answer(run(manager(sock, scratch, uid_base=base), code)[0])["uid"]
    assert base <= uid < base + sandbox.UID_RANGE, uid


def test_uid_conflicts_finds_a_subuid_range_and_a_process(tmp_path):
    """The check itself can fail: a process running as a uid of the range (not a kernel of ours) and the usual
    /etc/subuid range are found."""
    subuid = tmp_path / "subuid"
    subuid.write_text("alice:100000:65536\n")  # what useradd gives the first user
    assert [c for c in sandbox.uid_conflicts(100000 + 1000, 4096, (str(subuid),)) if "subuid" in c], "not found"
    assert not sandbox.uid_conflicts(subid_files=(str(subuid),))
    stranger = subprocess.Popen(["sleep", "60"], preexec_fn=lambda: os.setuid(sandbox.UID_BASE + 7))
    try:
        found = sandbox.uid_conflicts()
        assert any(f"process {stranger.pid}" in c for c in found), found
    finally:
        stranger.kill()
        stranger.wait()


def test_a_socket_root_too_long_for_a_unix_socket_fails_at_once(tmp_path):
    """A socket path past 107 bytes: said when the manager is made, not a kernel that cannot start."""
    from course_grader.kernel import SandboxKernelManager

    with pytest.raises(ValueError, match="unix socket address"):
        SandboxKernelManager(isolate=True, socket_root=str(tmp_path / ("x" * 120)))


def test_a_kernel_that_cannot_start_does_not_hang_the_worker(server, tmp_path):
    """A kernel that cannot bind its sockets (as with the old, too long socket path): the start fails and the
    worker's garbage collection (zmq's context teardown) comes back instead of waiting forever."""
    sock, scratch, _ = server
    long_folder = tmp_path / ("y" * 100)
    long_folder.mkdir()
    code = f"""
import gc, sys
sys.path.insert(0, {str(ROOT / 'tests')!r})
from pathlib import Path
from kernel_tools import manager, run
km = manager({str(sock)!r}, Path({str(scratch)!r}))
km.ip = {str(long_folder / 'k')!r}
try:
    run(km, "print(1)", timeout=20)
    print("started")
except Exception as exc:
    print("failed:", type(exc).__name__)
del km
gc.collect()
print("collected")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=str(ROOT),
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert "failed:" in done.stdout and "collected" in done.stdout, done.stdout + done.stderr[-3000:]


def test_without_mount_setattr_every_submount_is_remounted_read_only(submounted):
    """The fallback for kernels older than 5.12 (no mount_setattr): each mount of the tree, found in mountinfo, is
    remounted read-only. In a mount namespace of its own, a recursive bind of the folder is writable below its top
    until then (the attack), and read-only after."""
    code = f"""
import ctypes, os, sys, tempfile
sys.path.insert(0, {str(ROOT)!r})
from course_grader import sandbox
dest = tempfile.mkdtemp(dir="/var/tmp")
sandbox._mount(None, "/", None, sandbox.MS_REC | sandbox.MS_PRIVATE)
sandbox._mount({str(submounted)!r}, dest, None, sandbox.MS_BIND | sandbox.MS_REC)
def writable():
    try:
        open(os.path.join(dest, "inner", "planted"), "w").write("x")
        os.remove(os.path.join(dest, "inner", "planted"))
        return True
    except OSError:
        return False
before = writable()
sandbox._remount_each(dest)
after = writable()
sandbox._umount(dest)
os.rmdir(dest)
print(before, after)
"""
    done = subprocess.run(["unshare", "--mount", sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.split() == ["True", "False"], done.stdout + done.stderr
