"""`ingestion_results.json`: what the ingestion program hands the scoring program.

Written by ingestion after every checkpoint (so nothing computed is lost, and a rerun of
the same task resumes), read by scoring from Codabench's `/app/input/res`. It holds the
task's metric per checkpoint id, what the preflight found, the sandbox level the
submission's code ran at, and the samples drawn for the alignment judge.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .alignment import AlignmentSample
from .files import read_format, write_format
from .plan import LeakageExample

RESULTS_FILE = "ingestion_results.json"
RESULTS_KIND = "e2lmc.ingestion_results"


@dataclass
class PreflightFindings:
    """What the preflight found about the task before any model ran (`ingestion.preflight`):
    the longest prompt, the requests that exceed the checkpoints' context, the leakage."""

    max_prompt_tokens: int | None = None  # counted with the checkpoints' tokenizer
    longest_prompt_sample: int | None = None
    longest_prompt_task: str | None = None  # the subtask of that sample, in a group (None: the task itself)
    tokens_per_rule_token: float = 1.0  # the manifest's: what the prompt-length rule divides the count by
    context_tokens: int | None = None  # the checkpoints' context length
    truncated_requests: int = 0  # requests whose prompt exceeds it: cut from the left, never in silence
    max_truncated_tokens: int = 0  # tokens cut from the worst one
    leakage_count: int = 0
    leakage_examples: list[LeakageExample] = field(default_factory=list)

    @property
    def rule_prompt_tokens(self) -> int | None:
        """The longest prompt in the prompt-length rule's tokens (those of the real models)."""
        if self.max_prompt_tokens is None:
            return None
        return math.ceil(self.max_prompt_tokens / self.tokens_per_rule_token)

    def longest_prompt_where(self) -> str:
        """Which sample has the longest prompt: 'sample 106', or 'subtask X sample 106' in a group."""
        if self.longest_prompt_sample is None:
            return ""
        task = f"subtask {self.longest_prompt_task} " if self.longest_prompt_task else ""
        return f"{task}sample {self.longest_prompt_sample}"

    def how_counted(self) -> str:
        """How the rule's count was made, where it is not the checkpoints' own count."""
        if self.tokens_per_rule_token == 1 or self.max_prompt_tokens is None:
            return ""
        return (f" (counted as {self.max_prompt_tokens:,} tokens of the checkpoints' tokenizer / "
                f"{self.tokens_per_rule_token:g}: the embedded set's small tokenizer makes up to that many tokens "
                "of a real model's on English)")


@dataclass
class CheckpointResult:
    """One evaluated checkpoint: `id` is '<model id>/<checkpoint name>'."""

    id: str
    metrics: dict[str, float]
    seconds: float
    error: str | None = None


@dataclass
class IngestionResults:
    task_name: str
    task_metric: str
    higher_is_better: bool
    n_samples: int
    validation: PreflightFindings = field(default_factory=PreflightFindings)
    checkpoints: list[CheckpointResult] = field(default_factory=list)
    complete: bool = False  # set when every checkpoint of the manifest is done
    plan_digest: str | None = None  # identifies the task's requests: a rerun resumes only the same task
    weights_digest: str = ""  # the manifest's digest of the weights: a rerun resumes only on the same set
    sandbox: str | None = None  # the isolation level the submission's code ran at (sandboxed.sandbox.LEVELS)
    chance_level: float | None = None  # the metric of uniform guessing (ingestion/derived.py)
    guessing_spread: float | None = None  # its standard deviation over the samples (ingestion/derived.py)
    alignment_samples: list[AlignmentSample] = field(default_factory=list)  # every sample, for the judge to draw from
    custom_code: list[str] = field(default_factory=list)  # the submission's functions that computed the metric
    # (empty: lm-eval's own metrics, computed by trusted code from the responses and the plan)
    lettered: bool = False  # lettered multiple choice: answered by a label its prompt lists (ingestion/derived.py)
    # The task's other metrics (in `checkpoints[].metrics` beside the submitted one, for comparison, never
    # scored) that improve downward, by lm-eval's registry of metrics
    lower_is_better: list[str] = field(default_factory=list)

    def oriented(self, metric: str) -> float:
        """+1 where `metric` improves upward, -1 where downward."""
        return metric_sign(metric, self.task_metric, self.higher_is_better, self.lower_is_better)

    def done_ids(self) -> set[str]:
        """Checkpoints already evaluated without error (a rerun skips them)."""
        return {c.id for c in self.checkpoints if c.error is None}


def metric_sign(metric: str, task_metric: str, higher_is_better: bool, lower_is_better: Iterable[str]) -> float:
    """+1 where `metric` improves upward, -1 where downward: the submitted metric as the
    task says (`higher_is_better`), the others as lm-eval's registry said (`lower_is_better`)."""
    if metric == task_metric:
        return 1.0 if higher_is_better else -1.0
    return -1.0 if metric in lower_is_better else 1.0


def is_metric_key(key: str) -> bool:
    """An lm-eval result key of a metric ('acc,none'), not a standard error or bookkeeping."""
    return "," in key and "_stderr" not in key


def compared_metrics(task_metric: str, keys: Iterable[str]) -> list[str]:
    """The metrics of a checkpoint's `metrics` worth comparing: the submitted one first, then
    the others in order, without standard errors (older files and the sample kept them)."""
    return list(dict.fromkeys([task_metric, *(k for k in keys if "_stderr" not in k)]))


def write_results(results: IngestionResults, directory: str | Path) -> Path:
    """Write (or rewrite, after each checkpoint) `ingestion_results.json` atomically."""
    return write_format(Path(directory) / RESULTS_FILE, RESULTS_KIND, results)


def read_results(directory: str | Path) -> IngestionResults:
    return read_format(IngestionResults, Path(directory) / RESULTS_FILE, RESULTS_KIND)
