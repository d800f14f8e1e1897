"""The operating-system sandbox every piece of submission code runs in: the parent's side.

A submission is written by an adversary who reads this source. Its templates, helpers
and metrics run in child processes (`isolation.py`); this module decides what such a
child can see and do and starts it, and the child confines itself (`confine.py`) before
it imports anything of the submission. docs/security.md has the threat model and the
test that attacks each wall. Levels, strongest first:

- `namespaces` — bubblewrap (`bwrap`): new user, PID, IPC, UTS, cgroup and network
  namespaces (no network at all), dies with its parent, and a private filesystem view in
  which only the Python environment and this package (read-only), the submission
  (read-only), the child's own scratch folder and a private /tmp exist.
- `landlock` — where namespaces are refused (a default Docker container, as Codabench
  starts it: no CAP_SYS_ADMIN, and CAP_SETUID is dropped, so no second uid either): the
  kernel's Landlock module limits the child to the same files, unprivileged.
- `none` — neither is available: only the limits and filters below apply.

At `namespaces` and `landlock` the child also loads a seccomp filter (libseccomp): no new
process, no program executed, no socket of any family, no io_uring, no ptrace, no signal
to another process, no undoing of the parent-death signal; a second Landlock layer keeps
TCP, abstract unix sockets and signals (SIGIO included) from leaving it where the kernel
can; it drops every capability, and resource limits bound its address space, CPU time,
file sizes and open files. At every level the parent bounds what it writes in all
(`quota.py`). The child's environment holds only what it needs (no variable of the parent's).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import json
import os
import platform
import re
import shutil
import site
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from ..errors import UserError
from ..limits import SandboxSettings
from .confine import SYSTEM_DIRS, SYSTEM_FILES, Confinement, landlock_abi

LEVELS = ("none", "landlock", "namespaces")  # weakest first
ALIASES = {"uid": "landlock"}  # the fallback's earlier name, still accepted (docs/security.md)
CHOICES = ("namespaces", "landlock", "uid", "none")  # what the command line accepts, strongest first
PACKAGE_DIR = Path(__file__).resolve().parents[1]
SANDBOX_UID = 65534  # "nobody" inside the user namespace
PRIVATE_TMP_BYTES = 64 << 20  # the namespaces' /tmp lives in memory
UNREAD_UNTIL = 2**31 - 1  # an access time in the future (2038): no read updates it


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
def namespaces_problem() -> str | None:
    """Why bubblewrap cannot build a sandbox here (None: it can). In a container as Codabench
    starts it, it cannot: no CAP_SETFCAP, and the engine masks /proc; `landlock` is the level there."""
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (Debian and Ubuntu: apt-get install bubblewrap)"
    argv = _bwrap_view(python_roots(), [], Path("/")) + [sys.executable, "-c", "pass"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bubblewrap could not start ({type(exc).__name__})"
    if done.returncode == 0:
        return None
    said = (done.stderr.decode(errors="replace").strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    where = ("in a container, as Codabench starts it, this is expected (level 'landlock', the bundle's default, is "
             "the one for containers)" if container_engine() else "allow unprivileged user namespaces (sysctl "
             "kernel.unprivileged_userns_clone=1, or kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu 24.04)")
    return f"bubblewrap cannot create namespaces ({said.split('. ')[0][:200]}); {where}"


def container_engine() -> str | None:
    """The engine whose container this process runs in, by its marker file (None: none found)."""
    markers = {"/.dockerenv": "Docker", "/run/.containerenv": "Podman"}
    return next((engine for marker, engine in markers.items() if Path(marker).exists()), None)


def seccomp_filtered() -> bool:
    """Whether a seccomp filter (a container engine's profile, say) constrains this process."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    return any(line.split() == ["Seccomp:", "2"] for line in status.splitlines())


def landlock_refusal(error: int) -> str:
    """The sentence for a kernel call `landlock_create_ruleset` refused with `error`: which of
    the kernel, its boot settings or a container engine's seccomp profile is the cause, and the fix."""
    release = platform.release()
    name = errno.errorcode.get(error, str(error))
    kernel = tuple(int(n) for n in re.findall(r"\d+", release)[:2]) if re.match(r"\d+\.\d+", release) else (0, 0)
    if error in (errno.ENOSYS, errno.EPERM) and kernel >= (5, 13) and seccomp_filtered():
        return (f"Landlock's system calls are refused ({name}) by the seccomp filter this process runs under, on "
                f"kernel {release}, which is new enough: the container engine's seccomp profile does not allow them"
                f"{f' (this is a {container_engine()} container)' if container_engine() else ''}. "
                f"{ENGINES_WITH_LANDLOCK}; check the worker host with `e2lmc doctor`")
    if error == errno.EOPNOTSUPP:
        return (f"the kernel ({release}) has Landlock but it is off: add 'landlock' to the lsm= boot parameter "
                "(or to CONFIG_LSM) and reboot")
    if error == errno.ENOSYS:
        return (f"the kernel ({release}) has no Landlock: it needs Linux 5.13 or later built with "
                "CONFIG_SECURITY_LANDLOCK=y (Ubuntu 22.04 and Debian 12 kernels have it)")
    return f"the kernel ({release}) refused landlock_create_ruleset ({name})"


ENGINES_WITH_LANDLOCK = ("Docker's default profile allows them from 20.10.18 on (23.0 and later included): use a "
                         "Docker that recent with its default profile, or, with an older one, another engine or a "
                         "custom profile (the daemon's seccomp-profile setting), allow landlock_create_ruleset, "
                         "landlock_add_rule and landlock_restrict_self")


@functools.cache
def filters_problem() -> str | None:
    """Why Landlock and seccomp cannot confine a process here (None: they can)."""
    try:
        import landlock  # noqa: F401 - the file rules of level landlock
    except ImportError:
        return "the Python package 'landlock' is missing (pip install landlock)"
    try:
        import pyseccomp  # noqa: F401 - loads libseccomp
    except (ImportError, OSError, AttributeError):
        return "libseccomp is missing (Debian and Ubuntu: apt-get install libseccomp2; and pip install pyseccomp)"
    abi, error = landlock_abi(ctypes.CDLL(None, use_errno=True))
    return None if abi >= 1 else landlock_refusal(error)


def strongest_level() -> str:
    if namespaces_problem() is None and filters_problem() is None:
        return "namespaces"
    return "landlock" if filters_problem() is None else "none"


def choose_level(settings: SandboxSettings) -> str:
    """The level children run at: the one asked for, or the strongest available; one
    sentence naming what the host lacks when that is below `settings.required`."""
    available = strongest_level()
    wanted = available if settings.level == "auto" else ALIASES.get(settings.level, settings.level)
    if rank(wanted) > rank(available):
        raise UserError(f"sandbox level '{wanted}' is not available here: {_missing(wanted)}")
    if rank(wanted) < rank(settings.required) <= rank(available):
        raise UserError(f"--sandbox {wanted} is below the level '{settings.required}' the submission must run at, "
                        f"and this host has '{available}': leave --sandbox at auto")
    if rank(wanted) < rank(settings.required):
        raise UserError(f"the submission must run in a sandbox of level '{settings.required}' or stronger, but this "
                        f"host allows only '{wanted}': {_missing(settings.required)}; see docs/security.md")
    return wanted


def _missing(level: str) -> str:
    """Why `level` is out of reach here: the first thing it needs that is missing."""
    problems = [filters_problem()] + ([namespaces_problem()] if rank(level) >= rank("namespaces") else [])
    return next(p for p in problems if p)


def undated(folder: Path, keep_modified: bool = False) -> None:
    """Every file's times fixed: modified at the epoch (nothing tells when a child starts),
    read in the future, so that reading it changes nothing a later child could see (under
    the `relatime` rule, a file read after its last change gets a new access time). With
    `keep_modified`, the times of what is inside stay: a copy that keeps its source's tells
    nothing of this run (and its compiled modules, checked against them, stay valid: some
    0.08 s a child start)."""
    for path in [folder, *folder.rglob("*")]:
        modified = path.lstat().st_mtime if keep_modified and path != folder else 0
        os.utime(path, (UNREAD_UNTIL, modified), follow_symlinks=False)


class Sandbox:
    """Starts children at one level; owns a read-only copy of this package in `workdir`
    (so that a child sees the package, not the folder it is installed in)."""

    def __init__(self, workdir: Path, settings: SandboxSettings) -> None:
        self.settings = settings
        self.level = choose_level(settings)
        self.package = Path(workdir) / "package"
        shutil.copytree(PACKAGE_DIR, self.package / PACKAGE_DIR.name, dirs_exist_ok=True)
        undated(self.package, keep_modified=True)

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
        argv = [sys.executable, "-s", "-m", "e2lmc.sandboxed.confine", json.dumps(asdict(confinement)), module, *args]
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
