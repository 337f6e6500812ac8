"""Launch one grading kernel inside limits: a memory cap, no access to the answer key, no root.

Used as a prefix of the kernel command (`python -m course_grader.sandbox [options] -- KERNEL ARGV`).
It runs as the grader, prepares the kernel's world, then replaces itself with the kernel (same pid, so
interrupts and shutdowns from the kernel manager reach the kernel):

1. memory: RLIMIT_DATA, not RLIMIT_AS (the CUDA build of torch maps several GiB of address space at import
   and fails under any useful RLIMIT_AS; RLIMIT_DATA counts what is really allocated); also file size,
   process count and core dumps;
2. when started as root: a private mount namespace in which the hidden paths (source/, authoring/, .git,
   the gradebook, other students' work, the grader's scratch) are covered by empty mounts, /tmp is a fresh
   private tmpfs, and the Python installation is made reachable; then it drops to `nobody`, with
   no_new_privs, so the kernel can neither read the answer key nor undo the mounts nor kill the grader.
Without root it applies the limits only (the report says so).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import shutil
import stat
import sys
from pathlib import Path

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_BIND, MS_REC, MS_PRIVATE = 1, 4096, 16384, 1 << 18
PR_SET_NO_NEW_PRIVS = 38
KERNEL_HOME = "/tmp/home"
KERNEL_CONNECTION = "/tmp/kernel.json"
# The kernel's environment is rebuilt from these names only: the grader's own (a database URL with a
# password, tokens) must not leak into student code.
ENV_KEEP = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "NBGRADER_EXECUTION", "COURSE_GRADING_MODE",
            "COURSE_DATA_DIR", "MPLBACKEND", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
            "TORCH_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "PYTHONHASHSEED", "JPY_PARENT_PID", "JPY_SESSION_NAME")

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                       data.encode() if data else None), f"mount {target}")


def _umount(target: str) -> None:
    _check(_libc.umount2(target.encode(), 2), f"umount {target}")  # MNT_DETACH


def _first_closed_ancestor(path: Path) -> Path | None:
    """The outermost ancestor of path that others cannot traverse (e.g. /root), if any."""
    for parent in reversed(path.parents):
        if parent != Path("/") and not os.stat(parent).st_mode & stat.S_IXOTH:
            return parent
    return None


def _expose(paths: list[Path]) -> None:
    """Make each path reachable by `nobody` although an ancestor is private, by re-mounting it on a tmpfs."""
    wanted = [(p, _first_closed_ancestor(p)) for p in paths if p.exists()]
    wanted = [(p, closed) for p, closed in wanted if closed is not None]
    stages = []
    for i, (path, _) in enumerate(wanted):  # stage all first: one tmpfs may cover several of them
        stage = Path(f"/tmp/.stage{i}")
        stage.mkdir()
        _mount(str(path), str(stage), None, MS_BIND | MS_REC)
        stages.append(stage)
    covered: list[Path] = []
    for closed in sorted({c for _, c in wanted}, key=lambda c: len(c.parts)):
        if not any(c in closed.parents for c in covered):
            _mount("tmpfs", str(closed), "tmpfs", 0, "mode=0755,size=64k")
            covered.append(closed)
    for (path, _), stage in zip(wanted, stages):
        path.mkdir(parents=True, exist_ok=True)
        _mount(str(stage), str(path), None, MS_BIND | MS_REC)
        _umount(str(stage))
        stage.rmdir()


def _hide(paths: list[Path]) -> None:
    """Cover each existing path with an empty, unreadable mount."""
    for path in paths:
        if path.is_dir():
            _mount("tmpfs", str(path), "tmpfs", 0, "mode=000,size=4k")
        elif path.exists():
            _mount("/dev/null", str(path), None, MS_BIND)


def isolate(hide: list[Path], expose: list[Path], connection: bytes, uid: int, gid: int) -> None:
    """Enter a private mount namespace, hide paths, give the kernel a private /tmp, become uid/gid."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare")
    _mount("none", "/", None, MS_REC | MS_PRIVATE)  # nothing we mount here leaks to the host
    # What the kernel needs under /tmp (a course or virtual environment cloned there) is held open
    # before the fresh /tmp covers it, then bound back at the same path.
    under_tmp = [(p, os.open(p, os.O_PATH)) for p in expose if p.exists() and Path("/tmp") in p.parents]
    _mount("tmpfs", "/tmp", "tmpfs", 0, "mode=1777")  # hides the grader's scratch, a fresh /tmp for the kernel
    for path, fd in under_tmp:
        path.mkdir(parents=True, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", str(path), None, MS_BIND | MS_REC)
        os.close(fd)
    _expose(expose)
    _hide(hide)
    Path(KERNEL_HOME).mkdir(mode=0o700)
    os.chown(KERNEL_HOME, uid, gid)
    Path(KERNEL_CONNECTION).write_bytes(connection)
    os.chown(KERNEL_CONNECTION, uid, gid)
    os.chmod(KERNEL_CONNECTION, 0o600)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)  # from root to non-root: every capability is dropped with it
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl")


def set_limits(memory_mb: int) -> None:
    """Memory (RLIMIT_DATA), written file size, process count and core dumps of the kernel."""
    mem = memory_mb << 20
    resource.setrlimit(resource.RLIMIT_DATA, (mem, mem))
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 20, 256 << 20))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (512, 512))


def whitelisted(environ: dict[str, str]) -> dict[str, str]:
    """Only the variables a kernel may see (ENV_KEEP and the locale)."""
    return {k: v for k, v in environ.items() if k in ENV_KEEP or k.startswith("LC_")}


def kernel_env(home: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The kernel's environment: a whitelist of the grader's (or of `environ`), and a private home."""
    env = whitelisted(os.environ if environ is None else environ)
    env.update(HOME=home, IPYTHONDIR=f"{home}/.ipython", MPLCONFIGDIR=f"{home}/.matplotlib",
               PYTHONDONTWRITEBYTECODE="1")
    return env


def parser() -> argparse.ArgumentParser:
    """The launcher's options (shared with the fork server's client, zygote.py)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--memory-mb", type=int, default=4096)
    p.add_argument("--isolate", action="store_true", help="namespace + nobody (needs root)")
    p.add_argument("--hide", action="append", default=[])
    p.add_argument("--expose", action="append", default=[])
    p.add_argument("--user", default="nobody")
    p.add_argument("kernel", nargs=argparse.REMAINDER)
    return p


def enter(args: argparse.Namespace, environ: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """Put this process in the kernel's world (isolation, limits, working directory).

    Returns the kernel's argv (its connection file moved into the private /tmp when isolated) and its
    environment. Shared by the exec path (main) and the fork server (zygote.py).
    """
    cmd = list(args.kernel[1:] if args.kernel and args.kernel[0] == "--" else args.kernel)
    home = os.getcwd()
    if args.isolate:
        import pwd

        user = pwd.getpwnam(args.user)
        index = cmd.index("-f") + 1
        connection = Path(cmd[index]).read_bytes()
        isolate([Path(p) for p in args.hide], [Path(p) for p in args.expose], connection, user.pw_uid, user.pw_gid)
        cmd[index] = KERNEL_CONNECTION
        home = KERNEL_HOME
    set_limits(args.memory_mb)
    os.chdir(home)
    return cmd, kernel_env(home, environ)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    cmd, env = enter(args)
    os.execve(shutil.which(cmd[0]) or cmd[0], cmd, env)


def probe() -> str:
    """'isolated' when kernels can run hidden and unprivileged here, else 'limits only' (and why)."""
    import subprocess

    if os.geteuid() != 0:
        return "limits only (not root: kernels run as the grader's user)"
    code = ("from course_grader.sandbox import isolate;import os;"
            "isolate([], [], b'{}', 65534, 65534);print(os.getuid())")
    package_root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", env=env)
    if done.returncode == 0 and done.stdout.strip() == "65534":
        return "isolated"
    return f"limits only (no mount namespace: {done.stderr.strip().splitlines()[-1:] or done.returncode})"


if __name__ == "__main__":
    main()
