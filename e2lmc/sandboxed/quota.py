"""The disk a child may fill: its scratch folder's total, watched from the trusted parent.

The kernel bounds each file a child writes (RLIMIT_FSIZE), not their sum, and no quota
mechanism of the file system is open to an unprivileged parent at every level (`none`
included). So a thread of the parent measures what the child holds a few times a
second and kills the child's process group once it passes the quota: the scratch
folder's blocks (each inode once, however many links it has) and its entries, plus the
files the child keeps open without a name in it (deleted, `O_TMPFILE`, `memfd`), found
through `/proc/<pid>/fd`. What one interval lets through is bounded by the write speed:
seccomp refuses `fallocate` (blocks allocated at once; glibc's `posix_fallocate` then
writes them) and `PR_SET_DUMPABLE` (a child that hid its open files) at the two sandbox
levels. Only growth counts: the datasets the parent copies in before the start do not.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

from ..limits import size_text

POLL_SECONDS = 0.1  # between two measures (more when a measure is slow: see `_watch`)
MAX_ENTRIES = 10_000  # files and folders a child may add to its scratch folder; an honest one adds about 15


class ScratchQuota:
    """Watches one child: `exceeded` holds the sentence naming the limit once it was killed for it."""

    def __init__(self, process: subprocess.Popen, scratch: Path, limit_bytes: int) -> None:
        self.process, self.scratch, self.limit_bytes = process, Path(scratch), limit_bytes
        self.exceeded: str | None = None
        self._base_bytes, self._base_entries = measure(self.scratch, [], MAX_ENTRIES * 10)
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        interval = POLL_SECONDS
        while self.process.poll() is None:
            time.sleep(interval)
            start = time.monotonic()
            used, entries = measure(self.scratch, _process_tree(self.process.pid),
                                    self._base_entries + MAX_ENTRIES)
            if used - self._base_bytes > self.limit_bytes:
                self.exceeded = f"it wrote more into its scratch folder than the {size_text(self.limit_bytes)} quota"
            elif entries - self._base_entries > MAX_ENTRIES:
                self.exceeded = f"it created more than the {MAX_ENTRIES:,} files its scratch folder may hold"
            if self.exceeded:
                if self.process.poll() is None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(self.process.pid, signal.SIGKILL)
                return
            interval = max(POLL_SECONDS, 4 * (time.monotonic() - start))  # the watch takes at most a fifth


def measure(folder: Path, pids: list[int], max_entries: int) -> tuple[int, int]:
    """Bytes on disk under `folder` plus those of the nameless files `pids` hold open, and
    the entries under `folder`; the walk stops past `max_entries` (a child that made
    millions of files must not make each measure slow)."""
    seen: set[tuple[int, int]] = set()
    used = entries = 0
    folders = [folder]
    while folders and entries <= max_entries:
        with contextlib.suppress(OSError), os.scandir(folders.pop()) as listing:
            for entry in listing:
                entries += 1
                if entries > max_entries:
                    break
                with contextlib.suppress(OSError):
                    info = entry.stat(follow_symlinks=False)
                    if (info.st_dev, info.st_ino) not in seen:
                        seen.add((info.st_dev, info.st_ino))
                        used += info.st_blocks * 512
                    if stat.S_ISDIR(info.st_mode):
                        folders.append(Path(entry.path))
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    info = os.stat(f"/proc/{pid}/fd/{fd}")
                    if stat.S_ISREG(info.st_mode) and info.st_nlink == 0 and (info.st_dev, info.st_ino) not in seen:
                        seen.add((info.st_dev, info.st_ino))
                        used += info.st_blocks * 512
    return used, entries


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (bubblewrap starts the child two levels down); `pid` alone
    where /proc does not list children."""
    tree, queue = [], [pid]
    while queue:
        current = queue.pop()
        tree.append(current)
        with contextlib.suppress(OSError, ValueError):
            for task in os.listdir(f"/proc/{current}/task"):
                queue += [int(p) for p in Path(f"/proc/{current}/task/{task}/children").read_text().split()]
    return tree
