"""The operating-system sandbox every piece of submission code runs in (DESIGN §9).

A submission is written by an adversary who reads this source. Its templates, helpers
and metrics run in child processes (`isolation.py`); this module decides what such a
child can see and do, and the child confines itself before it imports anything of the
submission. Levels, strongest first:

- `namespaces` — bubblewrap (`bwrap`): new user, PID, IPC, UTS, cgroup and network
  namespaces (no network at all), dies with its parent, and a private filesystem view in
  which only the Python environment and this package (read-only), the submission
  (read-only), the child's own scratch folder and a private /tmp exist.
- `landlock` — where namespaces are refused (a default Docker container, as Codabench
  starts it: no CAP_SYS_ADMIN, and CAP_SETUID is dropped, so no second uid either): the
  kernel's Landlock module limits the child to the same files, unprivileged.
- `none` — neither is available: only the limits and filters below apply.

At `namespaces` and `landlock` the child also loads a seccomp filter (libseccomp): no new
process, no program executed, no socket but a local one, no ptrace, no signal to
another process, no undoing of the parent-death signal; it drops every capability, and
resource limits bound its address space, CPU time, file sizes and open files. The
child's environment holds only what it needs (no variable of the parent's).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import json
import os
import resource
import shutil
import signal
import site
import socket
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UserError

LEVELS = ("none", "landlock", "namespaces")  # weakest first
ALIASES = {"uid": "landlock"}  # the fallback's name in issue 13; see docs/security.md
CHOICES = ("namespaces", "landlock", "uid", "none")  # what the command line accepts, strongest first
PACKAGE_DIR = Path(__file__).resolve().parents[1]
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64")
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime")
PROC_FILES = ("/proc/cpuinfo", "/proc/meminfo")  # what numeric libraries read to size themselves
SANDBOX_UID = 65534  # "nobody" inside the user namespace
PRIVATE_TMP_BYTES = 64 << 20  # the namespaces' /tmp lives in memory
PR_SET_PDEATHSIG = 1
GiB = 1 << 30


@dataclass(frozen=True)
class SandboxSettings:
    """What the organizer or participant asks for (command-line options)."""

    level: str = "auto"  # auto: the strongest this host allows; or one of LEVELS
    required: str = "none"  # refuse to run below this level
    memory_bytes: int = 8 * GiB  # address space of a child
    cpu_seconds: int = 3600  # CPU time of a child (its wall time has its own limit)
    file_bytes: int = 4 * GiB  # largest file a child may write
    open_files: int = 512


@dataclass(frozen=True)
class Confinement:
    """What one child may do: written by the parent, applied by the child to itself."""

    level: str
    read: list[str]  # readable (and executable) paths
    write: list[str]  # writable paths
    memory_bytes: int
    cpu_seconds: int
    file_bytes: int
    open_files: int
    parent_pid: int | None  # outside namespaces: the child exits if this parent is gone


def size_text(n: int) -> str:
    """A limit in bytes as people write it: 8 GiB, 512 MiB."""
    return f"{n / GiB:g} GiB" if n >= GiB else f"{n / (1 << 20):g} MiB"


def rank(level: str) -> int:
    return LEVELS.index(ALIASES.get(level, level))


def python_roots() -> list[Path]:
    """Folders the interpreter and its installed packages live in."""
    roots = {Path(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    roots |= {Path(p) for p in site.getsitepackages()}
    roots.add(Path(sys.executable).resolve().parent.parent)
    user_site = Path(site.getusersitepackages())
    if user_site.is_dir():
        roots.add(user_site)
    roots = {r.resolve() for r in roots if r.exists()}
    return sorted(r for r in roots if not any(r != o and r.is_relative_to(o) for o in roots))


def _bwrap_view(read: list[Path], write: list[Path], cwd: Path) -> list[str]:
    """bubblewrap's arguments for a view holding the system libraries, `read`
    (read-only), `write` and a private /tmp; nothing else of the host."""
    args = ["bwrap", "--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
            "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--hostname", "sandbox",
            "--proc", "/proc", "--dev", "/dev", "--size", str(PRIVATE_TMP_BYTES), "--tmpfs", "/tmp"]
    for name in SYSTEM_DIRS:
        path = Path(name)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), name]
        elif path.is_dir():
            args += ["--ro-bind", name, name]
    for name in SYSTEM_FILES:
        args += ["--ro-bind-try", name, name]
    for path in read:
        args += ["--ro-bind", str(path), str(path)]
    for path in write:
        args += ["--bind", str(path), str(path)]
    # the root and /dev are tmpfs (memory): read-only, so that only the bounded /tmp and `write` take files
    return [*args, "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", str(cwd), "--"]


@functools.cache
def namespaces_work() -> bool:
    """Whether bubblewrap can build a sandbox here (it cannot in a default Docker container)."""
    if shutil.which("bwrap") is None:
        return False
    argv = _bwrap_view(python_roots(), [], Path("/")) + [sys.executable, "-c", "pass"]
    try:
        return subprocess.run(argv, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@functools.cache
def filters_work() -> bool:
    """Whether Landlock and seccomp can confine a process here (Linux >= 5.13 with the
    Landlock module, libseccomp)."""
    try:
        import landlock
        import pyseccomp  # noqa: F401 - loads libseccomp
    except (ImportError, OSError, AttributeError):
        return False
    try:
        return landlock.landlock_abi_version() >= 1
    except OSError:
        return False


def strongest_level() -> str:
    if namespaces_work() and filters_work():
        return "namespaces"
    return "landlock" if filters_work() else "none"


def choose_level(settings: SandboxSettings) -> str:
    """The level children run at: the one asked for, or the strongest available; one
    sentence naming what the host lacks when that is below `settings.required`."""
    available = strongest_level()
    wanted = available if settings.level == "auto" else ALIASES.get(settings.level, settings.level)
    if rank(wanted) > rank(available):
        raise UserError(f"sandbox level '{wanted}' is not available here ({_missing(wanted)})")
    if rank(wanted) < rank(settings.required):
        raise UserError(f"the submission must run in a sandbox of level '{settings.required}' or stronger, but this "
                        f"host allows only '{wanted}' ({_missing(settings.required)}); see docs/security.md")
    return wanted


def _missing(level: str) -> str:
    if rank(level) >= rank("namespaces") and not namespaces_work():
        return ("bubblewrap cannot create namespaces: install the 'bubblewrap' package, or allow user namespaces "
                "in the container (a default Docker seccomp profile refuses them)")
    return "the kernel has no Landlock module enabled (Linux >= 5.13, lsm=landlock) or libseccomp is missing"


class Sandbox:
    """Starts children at one level; owns a read-only copy of this package in `workdir`
    (so that a child sees the package, not the folder it is installed in)."""

    def __init__(self, workdir: Path, settings: SandboxSettings) -> None:
        self.settings = settings
        self.level = choose_level(settings)
        self.package = Path(workdir) / "package"
        shutil.copytree(PACKAGE_DIR, self.package / PACKAGE_DIR.name, dirs_exist_ok=True)

    def start(self, module: str, args: list[str], read: list[Path], scratch: Path) -> subprocess.Popen:
        """`python -m module args` confined, with pipes on stdin, stdout and stderr. It starts
        in `scratch`, a folder only it writes to (Python puts the start folder first on its
        import path: it must hold nothing of the submission's)."""
        scratch.mkdir(parents=True, exist_ok=True)
        (scratch / "tmp").mkdir(exist_ok=True)
        read = [self.package, *python_roots(), *read]
        s = self.settings
        confinement = Confinement(
            self.level, [str(p) for p in read], [str(scratch)], s.memory_bytes, s.cpu_seconds, s.file_bytes,
            s.open_files,
            None if self.level == "namespaces" else os.getpid(),
        )
        argv = [sys.executable, "-s", "-m", "e2lmc.sandboxed.sandbox", json.dumps(asdict(confinement)), module, *args]
        if self.level == "namespaces":
            argv = _bwrap_view(read, [scratch], scratch) + argv
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(scratch), "TMPDIR": str(scratch / "tmp"),
               "PYTHONPATH": str(self.package), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
               "HF_DATASETS_CACHE": str(scratch / "datasets"), "HF_HOME": str(scratch / "hf"),
               "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=scratch, env=env, start_new_session=True)


# ------------------------------------------------------------- stale work folders


_HELD_LOCKS: list = []  # open lock files of this process's work folders


def private_workdir(kind: str) -> tempfile.TemporaryDirectory:
    """A new `e2lmc-<kind>-*` temporary folder, locked while this process lives; folders
    of earlier runs that were killed (their lock is free) are removed first."""
    base = Path(tempfile.gettempdir())
    for stale in base.glob("e2lmc-*-*"):
        lock = stale / ".lock"
        if not lock.is_file() or stale.stat().st_uid != os.getuid():
            continue  # not a folder of ours
        with open(lock) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live run holds it
            shutil.rmtree(stale, ignore_errors=True)
    workdir = tempfile.TemporaryDirectory(prefix=f"e2lmc-{kind}-")
    lock = open(Path(workdir.name) / ".lock", "w")  # noqa: SIM115 - held until the process ends
    fcntl.flock(lock, fcntl.LOCK_EX)
    _HELD_LOCKS.append(lock)
    return workdir


# ------------------------------------------------------------------ the child side


def confine(c: Confinement) -> None:
    """Applied by the child to itself before it imports anything of the submission."""
    libc = ctypes.CDLL(None, use_errno=True)
    if c.parent_pid is not None and hasattr(libc, "prctl"):  # Linux: die with the parent
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != c.parent_pid:  # the parent died before the line above
            os._exit(1)
    for limit, value in ((resource.RLIMIT_AS, c.memory_bytes), (resource.RLIMIT_CPU, c.cpu_seconds),
                         (resource.RLIMIT_FSIZE, c.file_bytes), (resource.RLIMIT_NOFILE, c.open_files),
                         (resource.RLIMIT_CORE, 0)):
        hard = resource.getrlimit(limit)[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        try:
            resource.setrlimit(limit, (value, value + 5 if limit == resource.RLIMIT_CPU else value))
        except (ValueError, OSError):  # macOS refuses some (level none only: Landlock needs Linux)
            if c.level != "none":
                raise
    if c.level == "none":
        return
    import pyseccomp  # before Landlock: finding libseccomp reads the loader cache

    if c.level == "landlock":
        _landlock(c)
    _drop_capabilities(libc)
    _seccomp(pyseccomp)


def _landlock(c: Confinement) -> None:
    import landlock

    ruleset = landlock.Ruleset()
    readable = landlock.FSAccess.READ_FILE | landlock.FSAccess.READ_DIR | landlock.FSAccess.EXECUTE
    for path in [*c.read, *SYSTEM_DIRS, "/sys/devices/system/cpu"]:
        if os.path.isdir(path):
            ruleset.allow(path, rules=readable)
    for path in [*SYSTEM_FILES, *PROC_FILES, *(p for p in c.read if os.path.isfile(p))]:
        if os.path.isfile(path):
            ruleset.allow(path, rules=landlock.FSAccess.READ_FILE)
    for path in ("/dev/null", "/dev/zero", "/dev/urandom"):
        if os.path.exists(path):
            ruleset.allow(path, rules=landlock.FSAccess.READ_FILE | landlock.FSAccess.WRITE_FILE)
    ruleset.allow(*c.write, rules=landlock.FSAccess.all())
    ruleset.apply()


def _drop_capabilities(libc: ctypes.CDLL) -> None:
    """Give up every capability (a root child in a container keeps some otherwise)."""

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)())


def _seccomp(pyseccomp) -> None:  # noqa: ANN001 - the module
    rules = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    deny, pid = pyseccomp.ERRNO(errno.EPERM), os.getpid()
    clone_thread = 0x00010000
    for name in ("fork", "vfork", "execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev",
                 "tkill", "pidfd_open", "pidfd_send_signal", "pidfd_getfd", "setns", "unshare", "mount", "umount2",
                 "pivot_root", "chroot", "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key",
                 "request_key", "open_by_handle_at", "name_to_handle_at", "init_module", "finit_module",
                 "delete_module", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "iopl", "ioperm",
                 "syslog", "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "capset"):
        rules.add_rule(deny, name)
    rules.add_rule(deny, "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, clone_thread, 0))  # a process, not a thread
    rules.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")  # its flags are out of reach: libc falls back to clone
    rules.add_rule(deny, "socket", pyseccomp.Arg(0, pyseccomp.NE, socket.AF_UNIX))
    for name in ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
        rules.add_rule(deny, name, pyseccomp.Arg(0, pyseccomp.NE, pid))
    rules.add_rule(deny, "prctl", pyseccomp.Arg(0, pyseccomp.EQ, PR_SET_PDEATHSIG))
    rules.load()


def main(argv: list[str]) -> None:
    """`python -m e2lmc.sandboxed.sandbox CONFINEMENT MODULE ARGS…`: confine, then run MODULE."""
    import runpy

    from e2lmc.sandboxed import sandbox  # this file runs as __main__: the importable module is another object

    confinement = Confinement(**json.loads(argv[0]))
    confine(confinement)
    sandbox.ACTIVE = confinement
    sys.argv = [argv[1], *argv[2:]]
    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)


ACTIVE: Confinement | None = None  # in a child: what it was confined to (for its error sentences)

if __name__ == "__main__":
    main(sys.argv[1:])
