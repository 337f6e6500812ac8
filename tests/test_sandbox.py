"""The grading kernel's sandbox (course_grader/sandbox.py), one property at a time, each as the attack it stops.

Every attack runs twice: in an isolated kernel, where it must fail, and in a kernel with limits only (what a
grader that is not root gets), where it must succeed, which shows that the test can tell the difference.
Kernels are forked from one warm server for the module, as in grading; the tests run as root, like CI.
"""

from __future__ import annotations

import os
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
from kernel_tools import ROOT, Listener, answer, fork_server, manager, processes_of, run, state_of, stdout

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="isolation needs root (CI runs as root)")
MODES = [pytest.param(True, id="isolated"), pytest.param(False, id="limits-only")]


@pytest.fixture(scope="module")
def server():
    with fork_server() as found:
        yield found


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
    """Attack: a double-forked daemon that outlives the kernel (and could act on a later student's grading)."""
    code = """
import json, os, subprocess
subprocess.Popen(['sleep', '300'], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(json.dumps({"uid": os.getuid()}))
"""
    uid = answer(_kernel(server, isolate, code)[0])["uid"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_is_sleep_300(p) for p in _processes(uid)):
        time.sleep(0.1)
    survivors = [p for p in _processes(uid) if _is_sleep_300(p)]
    try:
        assert bool(survivors) != isolate, survivors
    finally:
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)


def _processes(uid: int) -> list[int]:
    return processes_of(uid) if uid != 0 else [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _is_sleep_300(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x00300\x00"
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

    The unprivileged user runs the system's interpreter on a copy of the sandbox module (it needs nothing else) in a
    folder it can read, so the test holds wherever the checkout lives (`mktemp -d` makes one only root can read)."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as readable:
        shutil.copytree(ROOT / "course_grader", Path(readable) / "course_grader",
                        ignore=lambda folder, names: [n for n in names if n not in ("__init__.py", "sandbox.py")])
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
