"""What one run may use: time per child, the sandbox's limits, tokens per pass, devices, CPU threads.

The command line builds a `Limits` from its options and hands it down: the ingestion
program, the sandbox (`SandboxSettings`) and the engine (`EngineSettings`) each read their
part. Kept apart from all of them so that the command line shows these defaults without
importing torch or lm-eval (`e2lmc --help` in a fraction of a second).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

GiB = 1 << 30


def size_text(n: int) -> str:
    """A limit in bytes as people write it: 8 GiB, 512 MiB."""
    return f"{n / GiB:g} GiB" if n >= GiB else f"{n / (1 << 20):g} MiB"


@dataclass(frozen=True)
class SandboxSettings:
    """What the organizer or participant asks for (command-line options)."""

    level: str = "auto"  # auto: the strongest this host allows; or one of LEVELS
    required: str = "none"  # refuse to run below this level
    memory_bytes: int = 8 * GiB  # address space of a child
    cpu_seconds: int = 3600  # CPU time of a child (its wall time has its own limit)
    # the largest file a child may write; the parent bounds plan.json, an honest child's largest, by MAX_PLAN_BYTES
    file_bytes: int = 2 * GiB
    open_files: int = 512
    # what a child may add to its scratch folder in all (`sandboxed/quota.py`): the samples' plan children
    # write under 1 MiB, their score children 0.1 MiB; 15,000 samples of 2,048-token prompts with 10
    # choices each would make a plan.json of about 1.3 GB
    scratch_bytes: int = 2 * GiB


@dataclass(frozen=True)
class EngineSettings:
    """The evaluate stage's settings (`engine.engine.Engine`)."""

    token_budget: int | None = None  # tokens per forward pass (None: 4,096 on CPU, 32,768 on GPU)
    devices: tuple[str, ...] | None = None  # None: every visible GPU, else the CPU
    threads: int | None = None  # torch's CPU threads (None: `cpu_threads()`)
    dtype: str | None = None  # the passes' precision (None: bfloat16 on a GPU, float32 on the CPU)

    def device_list(self) -> list[str]:
        if self.devices:
            return list(self.devices)
        import torch

        return [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cpu"]

    def budget(self, device: str) -> int:
        return self.token_budget or (32_768 if device.startswith("cuda") else 4_096)

    def precision(self, device: str) -> str:
        return self.dtype or ("bfloat16" if device.startswith("cuda") else "float32")


@dataclass(frozen=True)
class Limits:
    plan_seconds: float = 600.0  # building the task and recording its requests
    score_seconds: float = 60.0  # scoring one checkpoint's responses: what a child's delays can time (docs/security.md)
    engine: EngineSettings = field(default_factory=EngineSettings)  # token budget and devices of the evaluate stage
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)  # isolation and resource limits of the children


def cpu_threads(cgroup: Path = Path("/sys/fs/cgroup/cpu.max"), loadavg: Path = Path("/proc/loadavg")) -> int:
    """Threads for the engine's CPU passes: the cores this process may run on (its
    affinity, a container's CPU quota), less those other processes are running on now.
    Passes of small models wait on every thread at each operation: one thread that a
    competing process deschedules stalls them all (measured: a busy process beside the
    engine on 2 cores made 2 threads 3 times slower than 1), so a shared machine gets fewer."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:  # macOS
        cores = os.cpu_count() or 1
    try:
        quota, period = cgroup.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores - _running_elsewhere(loadavg))


def _running_elsewhere(loadavg: Path, reads: int = 5) -> int:
    """Tasks running or ready to run now besides this one (the kernel's count in
    /proc/loadavg, which includes the reader): the median of a few reads 10 ms apart."""
    counts = []
    for _ in range(reads):
        try:
            counts.append(max(0, int(loadavg.read_text().split()[3].split("/")[0]) - 1))
        except (OSError, ValueError, IndexError):
            return 0
        time.sleep(0.01)
    return sorted(counts)[len(counts) // 2]
