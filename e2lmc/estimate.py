"""How long one submission's prediction step takes on a GPU worker: the time limit.

Codabench stops a step at its phase's `execution_time_limit`: too short fails every
submission, too long lets a stuck one hold a GPU for hours. A submission costs reading
every checkpoint of the phase plus the forward passes over its tokens (DESIGN §8), so the
estimate is, summed over the phase's checkpoints,

    seconds_per_gigabyte x weight bytes  +  seconds_per_token_parameter x tokens x parameters

plus a fixed start-up (planning the task, the sandbox, CUDA, scoring), times a safety margin.
The defaults come from `benchmarks/real_shapes.py` on one NVIDIA H200 (bf16, random weights,
2026-11-27; two checkpoints each, 1,000 five-shot samples = 861,303 tokens computed per
checkpoint; disk read 1.1-1.6 GB/s with the page cache emptied):

    shape          parameters  weights   engine seconds for 2 checkpoints  MFU
    500m-like      0.50e9      1.0 GB    15.7                              9%
    dense-1b-arch1 1.05e9      2.1 GB    19.6                              18%
    3b-like        3.36e9      6.7 GB    42.2                              30%

A line through them: 11 s once (CUDA start, tokenizing) plus 4.6 s per billion parameters
per checkpoint at that token count, i.e. 5.4e-15 s per token and parameter for the forward
passes; reading a checkpoint (0.6-0.9 s/GB from disk, then onto the GPU) overlaps them but
is counted in full here, at 2.5 s/GB, so that a task with few tokens (reading-bound) is
not under-estimated. On the 3b-like shape the estimate is 1.5 times what was measured.
The workload is the largest task the rules allow: 15,000 samples of about 600 tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .placement import CheckpointSize


@dataclass(frozen=True)
class Throughput:
    seconds_per_gigabyte: float = 2.5
    seconds_per_token_parameter: float = 5.4e-15
    startup_seconds: float = 300.0


@dataclass(frozen=True)
class Workload:
    tokens_per_checkpoint: int = 9_000_000  # 15,000 samples x ~600 tokens


def phase_seconds(sizes: list[CheckpointSize], workload: Workload = Workload(),
                  throughput: Throughput = Throughput()) -> float:
    """Expected seconds of one submission's prediction step over these checkpoints."""
    per_checkpoint = sum(throughput.seconds_per_gigabyte * s.bytes / 1e9
                         + throughput.seconds_per_token_parameter * workload.tokens_per_checkpoint * s.parameters
                         for s in sizes)
    return throughput.startup_seconds + per_checkpoint


def time_limit(seconds: float, margin: float = 1.5, step: int = 900) -> int:
    """The execution_time_limit for an expected duration: the margin, rounded up to `step`."""
    return int(math.ceil(seconds * margin / step) * step)
