"""How long a submission's prediction step takes on a GPU worker: estimates and time limits.

Codabench stops a step at its phase's `execution_time_limit`: too short fails every
submission, too long lets a stuck one hold a GPU for hours. A submission costs reading
every checkpoint of the phase plus the forward passes over its tokens (docs/engine.md), so the
estimate is, summed over the phase's checkpoints,

    seconds_per_gigabyte x weight bytes  +  seconds_per_token_parameter x tokens x parameters

plus a fixed start-up (planning the task, the sandbox, CUDA, scoring). The bundle builder
sizes each phase's limit for the largest task the rules allow (15,000 samples of about 600
tokens: `Workload`), times a margin; `e2lmc estimate` predicts one submission's time from
the tokens its plan computes after sharing (`task_tokens`, `estimate_submission`).

Throughput measured with `benchmarks/real_shapes.py` on one NVIDIA H200 (bf16, random
weights, docs/engine.md): the real 1B arch1 shape, 1,000 five-shot samples of 2,046 tokens,
1.81M tokens computed per checkpoint, 91,484 tokens/s in the forward passes (MFU 21.5%):
1.04e-14 s per token and parameter; reading a checkpoint (1.2-1.7 GB/s from disk, then onto
the GPU) overlaps the passes but is counted in full, at 2.5 s/GB, so that a task with few
tokens (reading-bound) is not under-estimated. The H100 has the same bf16 peak and slower
memory; it was not measured: its figures are the H200's.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..embedded.sets import first_checkpoint
from ..errors import UserError
from ..formats.manifest import read_manifest
from ..formats.series import Series, read_series, series_reference
from ..ingestion.preflight import preflight
from ..limits import Limits
from ..sandboxed.sandbox import private_workdir
from .phases import PHASES, phase_reference
from .placement import CheckpointSize, verify_placed

if TYPE_CHECKING:  # packing loads lm-eval: only where tokens are counted
    from ..engine.packing import Encoder, Tokenized

BYTES_PER_PARAMETER = 2  # bf16 safetensors, as the real checkpoints


@dataclass(frozen=True)
class Throughput:
    seconds_per_gigabyte: float = 2.5
    seconds_per_token_parameter: float = 1.04e-14
    startup_seconds: float = 300.0


DEVICES = {"h200": Throughput(), "h100": Throughput()}  # the H100's: not measured, assumed the H200's


@dataclass(frozen=True)
class Workload:
    tokens_per_checkpoint: int = 9_000_000  # 15,000 samples x ~600 tokens


@dataclass(frozen=True)
class TaskTokens:
    """What one checkpoint computes for a task (counted with the series' tokenizer)."""

    requests: int
    one_by_one: int  # tokens lm-eval's HF backend feeds the model, request by request
    needed: int  # distinct prefixes: what any engine must compute
    computed: int  # what the engine's plan computes, after sharing
    generated: int  # new tokens generation requests may ask for (decoded one at a time)


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


def phase_checkpoints(series: Series) -> dict[str, list[str]]:
    """The checkpoint ids each phase's prediction step evaluates."""
    full = series_reference(series)
    return {spec.name: [m.checkpoint_id(c) for m in phase_reference(full, spec.name).models for c in m.checkpoints]
            for spec in PHASES}


def nominal_sizes(series: Series) -> dict[str, CheckpointSize]:
    """Each checkpoint's size from its model's size label ("500m", "1b", "3b") where the
    checkpoints are not at hand to be counted."""
    sizes = {}
    for model in series_reference(series).models:
        match = re.fullmatch(r"(\d+(?:\.\d+)?)([mb])", model.size.lower())
        if not match:
            raise UserError(f"model {model.id}: its size '{model.size}' is not a count such as 500m or 1b; pass "
                            "--data (the placed checkpoints) to count their parameters")
        parameters = int(float(match[1]) * (1e6 if match[2] == "m" else 1e9))
        for c in model.checkpoints:
            sizes[model.checkpoint_id(c)] = CheckpointSize(BYTES_PER_PARAMETER * parameters, parameters)
    return sizes


def task_tokens(encoder: Encoder, tokenized: Tokenized, max_length: int, token_budget: int = 32_768,
                scale: float = 1.0) -> TaskTokens:
    """The tokens a task's requests (tokenized by the prompt checks, `ingestion.preflight.check_prompts`)
    cost per checkpoint of context `max_length`, planned as the engine plans them; counts
    divided by `scale` (the embedded set's tokens per real-tokenizer token, 1 for the
    series' own tokenizer)."""
    from ..engine.packing import build_work

    work = build_work(tokenized, encoder, max_length, token_budget)
    requests = len(tokenized.pairs) + len(tokenized.rolling) + len(tokenized.contexts)
    generated = sum(len(batch.requests) * batch.max_gen_toks for batch in work.generation)
    context = sum(len(c) for batch in work.generation for c in batch.contexts)
    return TaskTokens(requests, round(work.tokens_one_by_one / scale), round(work.tokens_needed / scale),
                      round((work.tokens_computed + context) / scale), round(generated / scale))


def format_estimate(tokens: TaskTokens, phases: dict[str, list[CheckpointSize]], throughput: Throughput,
                    child_seconds: float = 0.0) -> str:
    """The per-checkpoint work, then each phase's predicted time and the limit that covers it.
    `child_seconds`: a fresh score child's time per checkpoint, where the task's own code
    computes its metric (on the CPU, one at a time, beside the engine: a phase takes the
    longer of the two)."""
    lines = [f"per checkpoint: {tokens.computed:,} tokens computed after sharing (needed: {tokens.needed:,}; lm-eval's "
             f"HF backend, request by request: {tokens.one_by_one:,}) for {tokens.requests:,} requests"]
    if child_seconds:
        lines.append(f"  and the task's own metric code in a fresh sandboxed child: about {child_seconds:.1f} s each "
                     "(measured by planning it here), one at a time beside the engine")
    if tokens.generated:
        lines.append(f"  and up to {tokens.generated:,} generated tokens, decoded one at a time: slower per token than "
                     "this estimate counts")
    lines.append(f"{'phase':<12} {'checkpoints':>11} {'weights':>9} {'TFLOP':>10} {'predicted':>10} {'limit x1.5':>10}")
    for phase, sizes in phases.items():
        seconds = max(phase_seconds(sizes, Workload(tokens.computed + tokens.generated), throughput),
                      len(sizes) * child_seconds)
        flops = sum(2 * s.parameters * (tokens.computed + tokens.generated) for s in sizes)
        weights = sum(s.bytes for s in sizes) / 1e12
        lines.append(f"{phase:<12} {len(sizes):>11,} {weights:>7.2f}TB {flops / 1e12:>10,.0f} "
                     f"{_duration(seconds):>10} {_duration(time_limit(seconds)):>10}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def estimate_submission(submission: Path, series_file: Path, web_model: str | None = None, data: Path | None = None,
                        tokenizer: Path | None = None, device: str = "h100") -> None:
    """Print a submission's tokens per checkpoint and each phase's predicted time: the
    tokens counted with `tokenizer` (a checkpoint folder of the series), else with the
    first checkpoint placed in `data`, else with the embedded set's, scaled to real tokens;
    the checkpoints' sizes from `data`, else from the series' size labels."""
    try:
        series = read_series(series_file, web_model)
    except UserError:
        if web_model:
            raise
        series = read_series(series_file, "organizers/web-only")  # only its size counts here
    sizes = verify_placed(data) if data else nominal_sizes(series)
    checkpoint, scale, counted = tokenizer, 1.0, "the tokenizer of --tokenizer"
    if checkpoint is None and data:
        checkpoint = data / read_manifest(data).checkpoints[0].path
        counted = "the placed checkpoints' tokenizer"
    if checkpoint is None:
        embedded = first_checkpoint()
        if embedded is None:
            raise UserError("give --data (the placed checkpoints) or --tokenizer DIR (a checkpoint of the series) to "
                            "count the task's tokens, or build the embedded set (e2lmc demo) to approximate them")
        checkpoint, scale = embedded
        counted = f"the embedded set's tokenizer, its counts / {scale:g} (an approximation of the series' tokenizer)"
    with private_workdir("estimate") as tmp:
        start = time.perf_counter()
        planned = preflight(submission, Path(tmp), Limits())
        plan_seconds = time.perf_counter() - start
    planned.check_prompts(checkpoint, scale)  # the prompt rule, as ingestion applies it
    if not planned.tokenized:
        raise UserError(f"{checkpoint} holds a tokenizer but no config.json: the estimate needs a checkpoint folder, "
                        "whose context decides how requests are cut")
    [(encoder, requests)] = planned.tokenized.values()
    assert planned.findings is not None and planned.findings.context_tokens is not None
    tokens = task_tokens(encoder, requests, planned.findings.context_tokens, scale=scale)
    phases = phase_checkpoints(series)
    missing = [c for ids in phases.values() for c in ids if c not in sizes]
    if missing:
        raise UserError(f"{data} lacks {len(missing)} checkpoints of the series (first: {missing[0]})")
    plan = planned.plan
    print(f"task '{plan.task_name}': {plan.n_samples:,} samples; tokens counted with {counted}; "
          f"{device.upper()} throughput (e2lmc/organizer/estimate.py)")
    print(format_estimate(tokens, {phase: [sizes[c] for c in ids] for phase, ids in phases.items()}, DEVICES[device],
                          plan_seconds if plan.custom_functions() else 0.0))
