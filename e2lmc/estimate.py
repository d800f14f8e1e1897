"""How long one submission's prediction step takes on a GPU worker: the time limit.

Codabench stops a step at its phase's `execution_time_limit`: too short fails every
submission, too long lets a stuck one hold a GPU for hours. A submission costs reading
every checkpoint of the phase plus the forward passes over its tokens (DESIGN §8), so the
estimate is, summed over the phase's checkpoints,

    seconds_per_gigabyte x weight bytes  +  seconds_per_token_parameter x tokens x parameters

plus a fixed start-up (planning the task, the sandbox, scoring), times a safety margin.
The defaults were measured with `benchmarks/real_shapes.py` on one NVIDIA H200 (the real
dense-1b-arch1 shape in bf16, random weights, 2026-11-27): 10.9 s per checkpoint for
373,903 tokens and 9.35 s for 93,620, i.e. 8.8 s per 2.1 GB checkpoint (4.2 s/GB: reading,
moving to the GPU, per-checkpoint work) and 5.5 µs per token (5.2e-15 s per token and
parameter, about half the measured matrix-multiply peak). The workload is the largest
task the rules allow: 15,000 samples of about 600 tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .placement import CheckpointSize


@dataclass(frozen=True)
class Throughput:
    seconds_per_gigabyte: float = 4.2
    seconds_per_token_parameter: float = 5.2e-15
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
