"""The child's side of the sandbox: a process confines itself, then runs the submission's task.

`python -m e2lmc.sandboxed.confine CONFINEMENT MODULE ARGS…` is how every child starts
(`sandbox.Sandbox.start` writes the command): before it imports anything of the
submission, it applies `CONFINEMENT` to itself — resource limits, and at the `landlock`
and `namespaces` levels Landlock's file rules (`landlock` only: bubblewrap's view does
that job at `namespaces`), Landlock's scopes (both levels, where the kernel has them), no
capability and a seccomp filter — and then runs MODULE (`sandboxed.child`). What each
level allows is described in `sandbox.py`.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import signal
import sys
from dataclasses import dataclass

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64")
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime")
PROC_FILES = ("/proc/cpuinfo", "/proc/meminfo")  # what numeric libraries read to size themselves
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4  # a child that made itself undumpable would hide its open files from the parent's quota
PR_SET_NO_NEW_PRIVS = 38
LANDLOCK_CREATE_RULESET, LANDLOCK_RESTRICT_SELF = 444, 446  # the same number on every architecture
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_NET_ABI, LANDLOCK_SCOPE_ABI = 4, 6  # the first ABIs with TCP rules, with scopes
LANDLOCK_ACCESS_NET_BIND_TCP, LANDLOCK_ACCESS_NET_CONNECT_TCP = 1, 2
LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET, LANDLOCK_SCOPE_SIGNAL = 1, 2
FORBIDDEN = "the sandbox allows no new processes, no network and no files outside the submission"
ACTIVE: Confinement | None = None  # in a child: what it was confined to (for its error sentences)


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
    landlock_scopes(libc)
    _drop_capabilities(libc)
    _seccomp(pyseccomp)


def _landlock(c: Confinement) -> None:
    import landlock

    ctypes.set_errno(0)  # the package reads ctypes' saved errno, not the return value: it must start clean
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


class _ScopedRulesetAttr(ctypes.Structure):
    """`struct landlock_ruleset_attr` of Landlock ABI 6 (older kernels read its first fields)."""

    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


def landlock_abi(libc: ctypes.CDLL) -> tuple[int, int]:
    """The kernel's Landlock ABI version and, where there is none (0), the error number of
    `landlock_create_ruleset`. Read from the return value: ctypes' saved errno is stale
    after a success (one failed ctypes call earlier would make any later one look failed)."""
    libc.syscall.restype = ctypes.c_long
    ctypes.set_errno(0)
    abi = libc.syscall(LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                       ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    return (abi, 0) if abi > 0 else (0, ctypes.get_errno() or errno.ENOSYS)


def landlock_scopes(libc: ctypes.CDLL) -> int:
    """A second Landlock layer, of what the `landlock` package cannot express: no TCP bind or
    connect whatever made the socket (ABI >= 4), and neither a connection to an abstract unix
    socket nor a signal (`kill`, or the SIGIO of `fcntl(F_SETOWN)`) reaching a process outside
    this child (ABI >= 6). Applied at `namespaces` too: it is cheap. Returns the kernel's ABI;
    below 4 there is nothing to add. Results are read from the return values only."""
    abi, _ = landlock_abi(libc)
    if abi < LANDLOCK_NET_ABI:
        return abi
    scoped = abi >= LANDLOCK_SCOPE_ABI
    attr = _ScopedRulesetAttr(0, LANDLOCK_ACCESS_NET_BIND_TCP | LANDLOCK_ACCESS_NET_CONNECT_TCP,
                              LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | LANDLOCK_SCOPE_SIGNAL if scoped else 0)
    size = ctypes.sizeof(attr) if scoped else _ScopedRulesetAttr.scoped.offset
    ruleset = libc.syscall(LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), f"landlock_create_ruleset (ABI {abi}) failed")
    try:
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 \
                or libc.syscall(LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_restrict_self (ABI {abi}) failed")
    finally:
        os.close(ruleset)
    return abi


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
                 "syslog", "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "capset",
                 # no socket of any family: a child needs only the pipes it inherits
                 "socket", "socketpair",
                 # io_uring performs socket(), connect() and more without those system calls
                 "io_uring_setup", "io_uring_enter", "io_uring_register"):
        rules.add_rule(deny, name)
    # blocks allocated at once would outrun the parent's watch on the scratch folder's size;
    # glibc's posix_fallocate then writes them, which the watch sees
    rules.add_rule(pyseccomp.ERRNO(errno.EOPNOTSUPP), "fallocate")
    rules.add_rule(deny, "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, clone_thread, 0))  # a process, not a thread
    rules.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")  # its flags are out of reach: libc falls back to clone
    for name in ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
        rules.add_rule(deny, name, pyseccomp.Arg(0, pyseccomp.NE, pid))
    for option in (PR_SET_PDEATHSIG, PR_SET_DUMPABLE):
        rules.add_rule(deny, "prctl", pyseccomp.Arg(0, pyseccomp.EQ, option))
    rules.load()


def main(argv: list[str]) -> None:
    """`python -m e2lmc.sandboxed.confine CONFINEMENT MODULE ARGS…`: confine, then run MODULE."""
    import runpy

    from e2lmc.sandboxed import confine as module  # this file runs as __main__: the importable module is another

    confinement = Confinement(**json.loads(argv[0]))
    confine(confinement)
    module.ACTIVE = confinement
    sys.argv = [argv[1], *argv[2:]]
    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
