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
- its own IPC and UTS namespaces; a user id of its own (UID_BASE + the supervisor's host pid: unique among
  running kernels, in a range no account or /etc/subuid range uses), no supplementary groups, no_new_privs;
  resource limits; and, where the host lets root create cgroups, a memory and pids cgroup per kernel (which
  counts the tmpfs too);
- everything it can read is read-only down to every submount (mount_setattr(AT_RECURSIVE), or each submount
  remounted where the kernel is older than 5.12), and its socket folder is a tiny tmpfs of its own, mounted on
  the host by the supervisor and gone with the kernel, so nothing it writes lands on the host's disk;
- a seccomp filter (libseccomp, through pyseccomp) that answers EPERM to what a sandboxed process never needs
  and what widens the kernel's attack surface: new namespaces (unshare, setns, clone with a namespace flag),
  mounts, bpf, io_uring, the key ring, ptrace, userfaultfd, perf events, modules, kexec... (DENIED).

Three processes: the supervisor (the caller: the process the kernel manager started, or the fork server's
child) stays on the host, forwards signals and exits with the kernel's status; the init (PID 1 in the new
namespaces) builds the view, reaps orphans and forwards signals; the kernel runs as its own user.
Without root, `launch` applies the limits only and the pipeline says loudly that kernels are not isolated.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
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

from course_grader.settings import MEMORY_MB, SCRATCH_MB  # the kernel's limits

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
# mount_setattr(2) (Linux 5.12): the same number on every architecture (syscalls added since 5.1 share numbers).
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE = 442, -100, 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
# The kernel's socket folder: a few unix sockets (ipykernel binds five), nothing more.
SOCKET_FS = "size=1m,nr_inodes=64,mode=0700"
# The system calls an isolated kernel is refused (EPERM), as Docker's and Flatpak's default profiles refuse them:
# nothing a notebook needs, and each widens what student code can reach of the host's kernel (new namespaces make
# it root of a user namespace; bpf, io_uring, keyctl, userfaultfd and perf events are where local privilege
# escalations are found; ptrace and process_vm_* read other processes). Names unknown on this architecture are
# skipped. clone3 answers ENOSYS, not EPERM: glibc then falls back to clone for threads, whose flags can be checked.
DENIED = ("unshare", "setns", "mount", "umount", "umount2", "pivot_root", "chroot", "mount_setattr", "open_tree",
          "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "bpf", "io_uring_setup", "io_uring_enter",
          "io_uring_register", "keyctl", "add_key", "request_key", "ptrace", "process_vm_readv",
          "process_vm_writev", "userfaultfd", "perf_event_open", "kexec_load", "kexec_file_load", "init_module",
          "finit_module", "delete_module", "open_by_handle_at", "name_to_handle_at", "swapon", "swapoff", "reboot",
          "syslog", "acct", "quotactl", "quotactl_fd", "lookup_dcookie", "iopl", "ioperm", "vm86", "vm86old",
          "uselib", "nfsservctl", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "stime",
          "sethostname", "setdomainname", "fanotify_init", "pidfd_getfd")
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
# personality(2): plain Linux (0, or 8: PER_LINUX32) only; every flag above turns off address-space randomisation
# (ADDR_NO_RANDOMIZE), makes data executable (READ_IMPLIES_EXEC) or maps page zero. A filter compares one argument
# once per rule, so the query (0xffffffff), which nothing a notebook runs makes, is refused too.
PERSONALITY_MAX = 0x8
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(platform.machine())
# Kernel uids: UID_BASE + the supervisor's pid (pids are unique among live processes, and below UID_RANGE: the
# largest pid_max Linux allows). Far above the accounts and the /etc/subuid ranges a system hands out (100000 up):
# a kernel's uid must be nobody else's, or it could signal or read their processes and files.
UID_BASE = 2_000_000_000
UID_RANGE = 1 << 22
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


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


def _mount_points(under: str) -> list[tuple[str, list[str]]]:
    """(mount point, its per-mount options) of `under` and every mount below it, from /proc/self/mountinfo."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        # octal escapes (a space is \040) in the mount point
        point = fields[4].encode().decode("unicode_escape").encode("latin-1").decode(errors="surrogateescape")
        if point == under or point.startswith(under.rstrip("/") + "/"):
            found.append((point, fields[5].split(",")))
    return found


def readonly_tree(path: str, writable: bool = False) -> None:
    """Make the mount at `path` and every mount below it nosuid, nodev and (unless `writable`) read-only.

    A bind's MS_RDONLY remount changes the top mount only: what is mounted below it (a tmpfs in /usr, /sys's
    submounts) would stay writable. mount_setattr with AT_RECURSIVE changes the whole tree at once; on a kernel
    without it (before 5.12), each submount found in /proc/self/mountinfo is remounted."""
    attr = _MountAttr(MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (0 if writable else MOUNT_ATTR_RDONLY), 0, 0, 0)
    if _libc.syscall(SYS_MOUNT_SETATTR, ctypes.c_long(AT_FDCWD), path.encode(), ctypes.c_uint(AT_RECURSIVE),
                     ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))) == 0:
        return
    err = ctypes.get_errno()
    if err not in (errno.ENOSYS, errno.EINVAL):
        raise OSError(err, f"mount_setattr {path}: {os.strerror(err)}")
    _remount_each(path, writable)


def _remount_each(path: str, writable: bool = False) -> None:
    """readonly_tree without mount_setattr: every mount of the tree remounted, keeping its noexec."""
    for point, options in _mount_points(path):
        flags = MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV | (0 if writable else MS_RDONLY)
        flags |= MS_NOEXEC if "noexec" in options else 0
        _mount(None, point, None, flags)


def unmount_under(folder: str | Path) -> int:
    """Let go of every mount below `folder` (socket folders whose supervisor was killed); how many."""
    points = [point for point, _ in _mount_points(str(folder)) if point != str(folder)]
    for point in sorted(points, key=len, reverse=True):
        try:
            _umount(point)
        except OSError:
            pass
    return len(points)


def release_socket_dir(path: str) -> None:
    """Unmount a kernel's socket folder (the tmpfs its supervisor mounted; stacked ones too) and remove it."""
    for _ in range(8):
        if not os.path.ismount(path) or _libc.umount2(path.encode(), MNT_DETACH) != 0:
            break
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- seccomp
def deny_syscalls() -> None:
    """Load the seccomp filter of DENIED into this process (inherited by everything it starts, exec included).

    libseccomp (through pyseccomp, a ctypes binding) compiles the rules into a BPF program for this architecture
    and refuses system calls of any other ABI (32-bit int 0x80, x32), as bwrap and Docker do. Needs no_new_privs
    (or root): the kernel process sets it first."""
    import pyseccomp as seccomp

    rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in DENIED:
        try:
            rules.add_rule(seccomp.ERRNO(errno.EPERM), name)
        except (OSError, ValueError):
            pass  # not a system call on this architecture
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")  # its flags sit in memory a filter cannot read
    for flag in NAMESPACE_FLAGS:
        rules.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    rules.add_rule(seccomp.ERRNO(errno.EPERM), "personality", seccomp.Arg(0, seccomp.GT, PERSONALITY_MAX))
    rules.load()


def _namespaced(pid: str) -> bool:
    """True when process `pid` is in another pid namespace than this one (a sandboxed kernel's)."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    except OSError:
        return True  # gone


def uid_conflicts(base: int = UID_BASE, size: int = UID_RANGE,
                  subid_files: tuple[str, ...] = ("/etc/subuid", "/etc/subgid")) -> list[str]:
    """Who else uses a uid of [base, base + size): accounts, /etc/subuid and /etc/subgid ranges, processes that
    are not a kernel of ours (a kernel's uid is base + its supervisor's pid, and that supervisor is ours)."""
    import grp
    import pwd

    found = [f"account {e.pw_name} ({e.pw_uid})" for e in pwd.getpwall() if base <= e.pw_uid < base + size]
    found += [f"group {e.gr_name} ({e.gr_gid})" for e in grp.getgrall() if base <= e.gr_gid < base + size]
    for path in subid_files:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.strip().split(":")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                start, count = int(parts[1]), int(parts[2])
                if start < base + size and base < start + count:
                    found.append(f"{path}: {line.strip()}")
    for entry in os.listdir("/proc"):
        try:
            uids = [int(u) for u in Path(f"/proc/{entry}/status").read_text().split("\nUid:", 1)[1].split()[:4]]
        except (OSError, IndexError, ValueError):
            continue
        for uid in {u for u in uids if base <= u < base + size}:
            try:
                supervisor = Path(f"/proc/{uid - base}/cmdline").read_bytes()
            except OSError:
                supervisor = b""
            # A kernel whose supervisor has just gone (it dies with it, a moment later) is in a pid namespace
            # of its own; a stranger running as that uid is not.
            if b"course_grader" not in supervisor and not _namespaced(entry):
                found.append(f"process {entry} (uid {uid})")
    return found


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
    unmount_under(folder)  # the socket folders' tmpfs of the supervisors killed (or killed earlier)
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
            _mount(f"/proc/self/fd/{fd}", dest, None, MS_BIND | MS_REC)
            readonly_tree(dest, writable=writable)  # the whole tree: its submounts too
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
    if not 0 < args.uid_base <= 0xFFFFFFFE - UID_RANGE:
        raise SystemExit(f"--uid-base {args.uid_base}: the range [base, base + {UID_RANGE}) must fit below 2**32 - 1")
    uid = gid = args.uid_base + os.getpid()
    for path in args.writable:  # its socket folder: a tiny tmpfs of its own, on the host (the manager connects there)
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"{SOCKET_FS},uid={uid},gid={gid}")
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
    for path in args.writable:  # the sockets' tmpfs goes with the kernel (the manager removes the folder)
        try:
            _umount(path)
        except OSError:
            pass
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
        deny_syscalls()  # last: nothing after it needs what it refuses
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
    p.add_argument("--memory-mb", type=int, default=MEMORY_MB)
    p.add_argument("--scratch-mb", type=int, default=SCRATCH_MB)
    p.add_argument("--isolate", action="store_true", help="namespaces, an allowlist view, a user of its own (root)")
    p.add_argument("--expose", action="append", default=[], help="a folder or file the kernel may read")
    p.add_argument("--writable", action="append", default=[], help="a folder the kernel may write (its sockets)")
    p.add_argument("--uid-base", type=int, default=UID_BASE, help="kernel uids: this + the supervisor's pid")
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
    import tempfile

    exposed = [os.path.realpath(p) for p in (sys.base_prefix, sys.prefix)] + list(expose or [])
    # Every layer of a kernel's sandbox: its user, its network, its processes, the seccomp filter, and a socket
    # folder (the tmpfs its supervisor mounts on the host).
    code = ("import os, socket; print('sandboxed', os.getuid(), len(socket.if_nameindex()), "
            "sum(p.isdigit() for p in os.listdir('/proc')) <= 3, "
            "[l.split()[1] for l in open('/proc/self/status') if l.startswith('Seccomp:')] == ['2'])")
    sockets = tempfile.mkdtemp(prefix="course-sandbox-probe-")
    cmd = [sys.executable, "-m", "course_grader.sandbox", "--isolate", *(f"--expose={p}" for p in exposed),
           f"--writable={sockets}", "--", sys.executable, "-c", code]
    package_root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, cwd="/", env=env, timeout=60)
    except subprocess.TimeoutExpired:
        return "NOT ISOLATED (the sandbox probe did not finish)"
    finally:
        release_socket_dir(sockets)
    words = done.stdout.split()
    if done.returncode == 0 and words[:1] == ["sandboxed"] and int(words[1]) >= UID_BASE and words[3:5] == ["True",
                                                                                                        "True"]:
        return "isolated"
    why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
    return f"NOT ISOLATED (the sandbox could not start: {why})"


if __name__ == "__main__":
    main()
