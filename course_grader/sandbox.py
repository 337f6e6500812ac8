"""Run one grading kernel in a world of its own: its own processes, network, filesystem view and user.

Used as a prefix of the kernel command (`python -m course_grader.sandbox [options] -- KERNEL ARGV`), and by the
fork server (zygote.py) for kernels forked from a warm process. When the grader runs as root, `launch` gives
the kernel the properties Bubblewrap gives a sandboxed process, set up in-process because a forked kernel must
keep the warm interpreter it was forked from (bwrap can only exec a new program):

- its own PID namespace: it sees and can signal only its own processes, and all of them die with it (the
  kernel's init, below, is PID 1 of the namespace; when it exits the kernel's daemons go too);
- its own network namespace with only a loopback interface (nothing on the host, 127.0.0.1 included, is
  reachable); the kernel talks to its kernel manager over unix sockets (the `ipc` transport) in a folder of
  its own, bound into its view;
- its own mount namespace with a fresh root built from an allowlist: the system's /usr (and /bin, /lib...
  as the host has them), a few files of /etc, /sys read-only, the Python installation, the environment, the
  packages a kernel may import, the data (all read-only), its socket folder, and a private, size-limited
  tmpfs for its home, /tmp, /var/tmp and /dev/shm; a minimal /dev and its own /proc. Nothing else of the
  host's filesystem (the course root, source/, the judge, other checkouts, other students) exists there;
- its own IPC and UTS namespaces; a user id of its own (100000 + the supervisor's host pid, unique among
  running kernels), no supplementary groups, no_new_privs; resource limits; and, where the host lets root
  create cgroups, a memory and pids cgroup per kernel (which counts the tmpfs too).

Three processes: the supervisor (the caller: the process the kernel manager started, or the fork server's
child) stays on the host, forwards signals and exits with the kernel's status; the init (PID 1 in the new
namespaces) builds the view, reaps orphans and forwards signals; the kernel runs as its own user.
Without root, `launch` applies the limits only and the pipeline says loudly that kernels are not isolated.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import resource
import shutil
import signal
import socket
import struct
import sys
from collections.abc import Callable
from pathlib import Path

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(platform.machine())
UID_BASE = 100000  # kernel uids: UID_BASE + the supervisor's pid (pids are unique among live processes)
SCRATCH_MB = 256  # the kernel's home, /tmp, /var/tmp and /dev/shm together
HOME = "/home/kernel"
CONNECTION = f"{HOME}/kernel.json"
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
# The system's own files a Python kernel needs, read-only (a symlink, as /bin -> usr/bin, is recreated as one).
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "nsswitch.conf", "localtime", "timezone", "alternatives",
       "hosts", "ssl", "fonts", "mime.types")
DEVICES = ("null", "zero", "full", "random", "urandom")
# The kernel's environment is rebuilt from these names only: the grader's own (a database URL with a
# password, tokens) must not leak into student code.
ENV_KEEP = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "NBGRADER_EXECUTION", "COURSE_GRADING_MODE",
            "COURSE_DATA_DIR", "MPLBACKEND", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
            "TORCH_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "PYTHONHASHSEED", "JPY_SESSION_NAME")

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(source.encode() if source else None, target.encode(), fstype.encode() if fstype else None,
                       flags, data.encode() if data else None), f"mount {target}")


def _umount(target: str) -> None:
    _check(_libc.umount2(target.encode(), MNT_DETACH), f"umount {target}")


def _prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, value, 0, 0, 0), "prctl")


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies (a uid change clears this: set it after one)."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------- limits
def set_limits(memory_mb: int) -> None:
    """Memory (RLIMIT_DATA, not RLIMIT_AS: the CUDA build of torch maps GiBs of address space at import), written
    file size, processes (per user: per kernel, since each has its own uid) and no core dumps."""
    mem = memory_mb << 20
    resource.setrlimit(resource.RLIMIT_DATA, (mem, mem))
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 20, 256 << 20))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (256, 256))


def whitelisted(environ: dict[str, str]) -> dict[str, str]:
    """Only the variables a kernel may see (ENV_KEEP and the locale)."""
    return {k: v for k, v in environ.items() if k in ENV_KEEP or k.startswith("LC_")}


def kernel_env(home: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The kernel's environment: a whitelist of the grader's (or of `environ`), and a private home."""
    env = whitelisted(os.environ if environ is None else environ)
    # JPY_PARENT_PID=1: no parent poller (in its own PID namespace the kernel's parent is PID 1, which the poller
    # would read as 'the parent died'); the kernel dies with its namespace instead.
    env.update(HOME=home, IPYTHONDIR=f"{home}/.ipython", MPLCONFIGDIR=f"{home}/.matplotlib", USER="kernel",
               LOGNAME="kernel", PYTHONDONTWRITEBYTECODE="1", JPY_PARENT_PID="1")
    return env


# ---------------------------------------------------------------------------------------------- cgroups
class Cgroup:
    """A memory and pids cgroup for one kernel (cgroup v1 or v2), where root may create one; else nothing."""

    def __init__(self, name: str, memory_mb: int, pids: int = 512) -> None:
        self.dirs: list[Path] = []
        for controller, settings in (("memory", {"memory.limit_in_bytes": memory_mb << 20, "memory.max": memory_mb << 20,
                                                 "memory.swappiness": 0, "memory.memsw.limit_in_bytes": memory_mb << 20}),
                                     ("pids", {"pids.max": pids})):
            base = _cgroup_dir(controller)
            if base is None:
                continue
            path = base / name
            try:
                path.mkdir()
            except OSError:
                continue
            wrote = False
            for key, value in settings.items():
                try:
                    (path / key).write_text(str(value))
                    wrote = True
                except OSError:
                    pass
            if wrote and path not in self.dirs:
                self.dirs.append(path)
            elif not wrote:
                path.rmdir()

    def enter(self, pid: int) -> None:
        for path in self.dirs:
            try:
                (path / "cgroup.procs").write_text(str(pid))
            except OSError:
                pass

    def remove(self) -> None:
        """Leave the cgroup and remove it (its last processes may take a moment to go: the sweep gets stragglers)."""
        import time

        for path in self.dirs:
            try:
                (path.parent / "cgroup.procs").write_text(str(os.getpid()))
            except OSError:
                pass
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except OSError:
                    time.sleep(0.01)


def kill_kernels_under(folder: Path) -> int:
    """SIGKILL every kernel supervisor whose socket folder is under `folder` (a run's scratch): a kernel whose
    manager died without shutting it down must not outlive its run. Its init and processes die with it."""
    killed = 0
    flag = f"--writable={folder}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if any(arg.startswith(flag) for arg in cmdline.split(b"\0")):
            try:
                os.kill(int(entry), signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


def sweep_cgroups() -> int:
    """Remove the empty kernel cgroups whose supervisor has gone (killed before it could clean up); how many."""
    removed = 0
    for controller in ("memory", "pids"):
        base = _cgroup_dir(controller)
        for path in base.glob("course-kernel-*") if base else []:
            pid = path.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                try:
                    path.rmdir()
                    removed += 1
                except OSError:
                    pass
    return removed


def _cgroup_dir(controller: str) -> Path | None:
    """Where this process's cgroup for `controller` lives (v1 hierarchy, or the unified v2 one)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            candidate = Path("/sys/fs/cgroup") / controller / path.lstrip("/")
            return candidate if candidate.is_dir() else None
    for line in lines:
        if line.startswith("0::"):
            for root in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")):
                candidate = root / line[3:].lstrip("/")
                if (root / "cgroup.controllers").exists() and controller in (root / "cgroup.controllers").read_text():
                    return candidate if candidate.is_dir() else None
    return None


# ---------------------------------------------------------------------------------------------- the view
class View:
    """The kernel's root filesystem, built in the init process from an allowlist and then pivoted into."""

    def __init__(self, readonly: list[Path], writable: list[Path], uid: int, gid: int, scratch_mb: int) -> None:
        self.uid, self.gid, self.scratch_mb = uid, gid, scratch_mb
        self.readonly, self.writable = readonly, writable
        self.binds: list[tuple[str, int, bool]] = []
        self.links: list[tuple[str, str]] = []
        self.devices: list[tuple[str, int]] = []

    def _open(self) -> None:
        """Open everything to bind, in the new mount namespace (a bind's source must be in it) and before the
        fresh /tmp covers what may live under /tmp."""
        gpus = sorted(Path("/dev").glob("nvidia*"))
        system = [Path(p) for p in SYSTEM] + [Path("/etc") / name for name in ETC] + ([Path("/sys")] if gpus else [])
        for path in system + self.readonly:  # /sys only for CUDA (its driver reads it); it shows the host's hardware
            self._add(path, writable=False)
        for path in self.writable:
            self._add(path, writable=True)
        self.devices = [(f"/dev/{name}", os.open(f"/dev/{name}", os.O_PATH)) for name in DEVICES
                        if os.path.exists(f"/dev/{name}")]
        self.devices += [(str(p), os.open(p, os.O_PATH)) for p in gpus]

    def _add(self, path: Path, writable: bool) -> None:
        if os.path.islink(path):
            self.links.append((str(path), os.readlink(path)))
        elif path.exists():
            self.binds.append((str(path), os.open(path, os.O_PATH), writable))

    def build(self, connection: bytes | None) -> None:
        """Mount the view on a fresh tmpfs, then make it this process's root (pivot_root)."""
        _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing mounted here propagates to the host
        self._open()
        _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
        root = "/tmp/root"
        os.mkdir(root)
        _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=8m")
        self._scratch(root)  # first: a bound path under /tmp (its socket folder) then lands on the kernel's /tmp
        for target, fd, writable in sorted(self.binds, key=lambda b: b[0].count("/")):
            dest = root + target
            if os.path.isdir(f"/proc/self/fd/{fd}"):
                os.makedirs(dest, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                Path(dest).touch()
            flags = MS_BIND | MS_REC | MS_NOSUID | MS_NODEV
            _mount(f"/proc/self/fd/{fd}", dest, None, flags)
            if not writable:
                _mount(None, dest, None, flags | MS_REMOUNT | MS_RDONLY)
            os.close(fd)
        for target, link in self.links:
            os.makedirs(os.path.dirname(root + target), exist_ok=True)
            if not os.path.lexists(root + target):
                os.symlink(link, root + target)
        self._dev(root)
        self._etc(root)
        os.makedirs(f"{root}/proc", exist_ok=True)
        _mount("proc", f"{root}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        if connection is not None:
            Path(root + CONNECTION).write_bytes(connection)
            os.chown(root + CONNECTION, self.uid, self.gid)
            os.chmod(root + CONNECTION, 0o600)
        _pivot(root)

    def _scratch(self, root: str) -> None:
        """One size-limited tmpfs, owned by the kernel, for its home, /tmp, /var/tmp and /dev/shm."""
        scratch = f"{root}/.scratch"
        os.mkdir(scratch)
        _mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=0700,size={self.scratch_mb}m,"
                                                                 f"uid={self.uid},gid={self.gid}")
        for name, target, mode in (("home", HOME, 0o700), ("tmp", "/tmp", 0o1777), ("var-tmp", "/var/tmp", 0o1777),
                                   ("shm", "/dev/shm", 0o1777)):
            os.mkdir(f"{scratch}/{name}", mode)
            os.chmod(f"{scratch}/{name}", mode)
            os.chown(f"{scratch}/{name}", self.uid, self.gid)
            os.makedirs(root + target, exist_ok=True)
            _mount(f"{scratch}/{name}", root + target, None, MS_BIND | MS_NOSUID | MS_NODEV)
        _umount(scratch)  # the binds keep it alive
        os.rmdir(scratch)

    def _dev(self, root: str) -> None:
        os.makedirs(f"{root}/dev", exist_ok=True)
        for target, fd in self.devices:
            Path(root + target).touch()
            _mount(f"/proc/self/fd/{fd}", root + target, None, MS_BIND | MS_NOSUID)
            os.close(fd)
        for name, link in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                           ("stderr", "/proc/self/fd/2")):
            os.symlink(link, f"{root}/dev/{name}")

    def _etc(self, root: str) -> None:
        """Who is who inside: root (the init) and the kernel's own user (no host accounts)."""
        os.makedirs(f"{root}/etc", exist_ok=True)
        Path(f"{root}/etc/passwd").write_text(f"root:x:0:0:root:/:/usr/sbin/nologin\n"
                                              f"kernel:x:{self.uid}:{self.gid}:kernel:{HOME}:/usr/sbin/nologin\n")
        Path(f"{root}/etc/group").write_text(f"root:x:0:\nkernel:x:{self.gid}:\n")
        Path(f"{root}/etc/hostname").write_text("grading-kernel\n")


def _pivot(root: str) -> None:
    """Make `root` the root of this mount namespace and let go of the old one."""
    old = f"{root}/.old"
    os.mkdir(old)
    if SYS_PIVOT_ROOT is None:
        raise OSError(f"pivot_root: no syscall number for {platform.machine()}")
    _check(_libc.syscall(SYS_PIVOT_ROOT, root.encode(), old.encode()), "pivot_root")
    os.chdir("/")
    _umount("/.old")
    os.rmdir("/.old")


def _loopback_up() -> None:
    """Bring up `lo` in the new network namespace (ioctl SIOCGIFFLAGS / SIOCSIFFLAGS)."""
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, 0x8913, ifreq))[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 0x1))  # IFF_UP


# ---------------------------------------------------------------------------------------------- processes
def forward_signals(pid_box: list[int]) -> None:
    """Pass every FORWARDED signal this process gets on to the process in pid_box (once it is there)."""

    def forward(sig: int, _frame: object) -> None:
        if pid_box:
            try:
                os.kill(pid_box[0], sig)
            except ProcessLookupError:
                pass

    for sig in FORWARDED:
        signal.signal(sig, forward)


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def _wait_for(child: int, reap_all: bool) -> int:
    """Wait until `child` exits (reaping any orphan when this process is an init); its exit code."""
    while True:
        try:
            pid, status = os.waitpid(-1 if reap_all else child, 0)
        except ChildProcessError:
            return 1
        if pid == child:
            return _exit_code(status)


def launch(args: argparse.Namespace, environ: dict[str, str] | None,
           start: Callable[[list[str], dict[str, str]], None]) -> None:
    """Run start(kernel argv, kernel env) as the sandboxed kernel; this process supervises it. Never returns."""
    cmd = list(args.kernel[1:] if args.kernel and args.kernel[0] == "--" else args.kernel)
    if not args.isolate:
        home = os.getcwd()
        set_limits(args.memory_mb)
        start(cmd, kernel_env(home, environ))
        os._exit(0)
    connection = None
    if "-f" in cmd:  # the kernel's connection file moves into its home
        index = cmd.index("-f") + 1
        connection = Path(cmd[index]).read_bytes()
        cmd[index] = CONNECTION
    uid = gid = UID_BASE + os.getpid()
    for path in args.writable:  # its socket folder
        os.chown(path, uid, gid)
    view = View([Path(p) for p in args.expose], [Path(p) for p in args.writable], uid, gid, args.scratch_mb)
    cgroup = Cgroup(f"course-kernel-{os.getpid()}", args.memory_mb + args.scratch_mb)
    cgroup.enter(os.getpid())
    _check(_libc.unshare(CLONE_NEWPID), "unshare")  # for the children: the next one is PID 1 of a new namespace
    box: list[int] = []
    forward_signals(box)
    init = os.fork()
    if init == 0:
        _init(args, view, connection, cmd, environ, start, uid, gid)
    box.append(init)
    code = _wait_for(init, reap_all=False)
    cgroup.remove()
    os._exit(code)


def _init(args, view: View, connection: bytes | None, cmd: list[str], environ, start, uid: int, gid: int) -> None:
    """PID 1 of the kernel's namespaces: build its world, start it, reap, exit with its status."""
    code = 1
    try:
        die_with_parent()  # the supervisor killed: everything here goes
        _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS), "unshare")
        _check(_libc.sethostname(b"grading-kernel", 14), "sethostname")
        _loopback_up()
        view.build(connection)
        box: list[int] = []
        forward_signals(box)
        kernel = os.fork()
        if kernel == 0:
            _kernel(args, cmd, environ, start, uid, gid)
        box.append(kernel)
        code = _wait_for(kernel, reap_all=True)
    except BaseException:  # noqa: BLE001 - said on stderr (the kernel manager's log), then the kernel is gone
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _kernel(args, cmd: list[str], environ, start, uid: int, gid: int) -> None:
    """The kernel itself: drop root for good, apply the limits, run."""
    code = 1
    try:
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)  # from root to a user of its own: every capability goes with it
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        die_with_parent()
        set_limits(args.memory_mb)
        os.chdir(HOME)
        start(cmd, kernel_env(HOME, environ))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def parser() -> argparse.ArgumentParser:
    """The launcher's options (shared with the fork server's client, zygote.py)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--memory-mb", type=int, default=4096)
    p.add_argument("--scratch-mb", type=int, default=SCRATCH_MB)
    p.add_argument("--isolate", action="store_true", help="namespaces, an allowlist view, a user of its own (root)")
    p.add_argument("--expose", action="append", default=[], help="a folder or file the kernel may read")
    p.add_argument("--writable", action="append", default=[], help="a folder the kernel may write (its sockets)")
    p.add_argument("kernel", nargs=argparse.REMAINDER)
    return p


def _exec(cmd: list[str], env: dict[str, str]) -> None:
    os.execve(shutil.which(cmd[0], path=env.get("PATH")) or cmd[0], cmd, env)


def main(argv: list[str] | None = None) -> None:
    die_with_parent()  # its kernel manager killed (a grading worker): this supervisor, then its init and kernel go
    launch(parser().parse_args(argv), None, _exec)


def probe(expose: list[str] | None = None) -> str:
    """'isolated' when a kernel can run sandboxed here (checked by running one tiny program so), else why not."""
    import subprocess

    if os.geteuid() != 0:
        return "NOT ISOLATED (the grader is not root: kernels run as the grader's user and can read what it can)"
    exposed = [os.path.realpath(p) for p in (sys.base_prefix, sys.prefix)] + list(expose or [])
    code = ("import os, socket; print('sandboxed', os.getuid(), len(socket.if_nameindex()), "
            "sum(p.isdigit() for p in os.listdir('/proc')) <= 3)")
    cmd = [sys.executable, "-m", "course_grader.sandbox", "--isolate", *(f"--expose={p}" for p in exposed), "--",
           sys.executable, "-c", code]
    package_root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, cwd="/", env=env, timeout=60)
    except subprocess.TimeoutExpired:
        return "NOT ISOLATED (the sandbox probe did not finish)"
    words = done.stdout.split()
    if done.returncode == 0 and words[:1] == ["sandboxed"] and int(words[1]) >= UID_BASE and words[3] == "True":
        return "isolated"
    why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
    return f"NOT ISOLATED (the sandbox could not start: {why})"


if __name__ == "__main__":
    main()
