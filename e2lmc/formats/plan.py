"""`plan.json`: ingestion's private hand-over from the plan stage (a child process running
the submission's code) to the evaluate and score stages, and to what is derived from the
task's samples (`samples.py`: the chance level, the alignment judge's samples; `diagnose.py`).
It never reaches the output; docs/formats.md documents it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import UserError
from ..formats.files import LeakageExample, read_format, write_format

PLAN_FILE = "plan.json"
PLAN_KIND = "e2lmc.plan"


@dataclass
class PlannedRequest:
    """One distinct request to a model, in lm-eval's terms, and the first sample asking it."""

    kind: Literal["loglikelihood", "loglikelihood_rolling", "generate_until"]
    arguments: str  # lm-eval's request arguments as canonical JSON
    task: str
    doc_id: int


@dataclass
class PlannedSample:
    """One sample: its requests (indices into `Plan.requests`) in lm-eval's order — a
    multiple-choice sample's choices first — and, for multiple choice, how many choices
    it has and which are right."""

    task: str
    doc_id: int
    requests: list[int]
    choices: int | None = None
    gold: list[int] | None = None


@dataclass
class Plan:
    """What the plan stage learned from the submission without any model."""

    task_name: str
    task_metric: str
    higher_is_better: bool
    n_samples: int
    requests: list[PlannedRequest]
    leakage: list[LeakageExample] = field(default_factory=list)
    samples: list[PlannedSample] = field(default_factory=list)

    def check(self, where: str) -> None:
        """The plan is written by the child that ran the submission's code: its sample
        records must point at its own requests."""
        for i, sample in enumerate(self.samples):
            bad = [r for r in sample.requests if not 0 <= r < len(self.requests)]
            if bad or (sample.gold is not None and any(not 0 <= g < (sample.choices or 0) for g in sample.gold)):
                raise UserError(f"{where}: samples[{i}] points outside the plan")

    def digest(self) -> str:
        """A fingerprint of the task's requests and metric (what results depend on)."""
        text = json.dumps([self.task_name, self.task_metric, [(r.kind, r.arguments) for r in self.requests]])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_plan(plan: Plan, directory: str | Path) -> Path:
    return write_format(Path(directory) / PLAN_FILE, PLAN_KIND, plan)


def read_plan(directory: str | Path) -> Plan:
    return read_format(Plan, Path(directory) / PLAN_FILE, PLAN_KIND)
