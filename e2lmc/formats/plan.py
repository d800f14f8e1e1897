"""`plan.json`: ingestion's private hand-over from the plan stage to the others.

The plan stage (a sandboxed child running the submission's code) writes it; the trusted
parent reads it (bounded, every key checked) for the evaluate stage's requests and the
gates, and the score children read it back for the requests' order. What is derived from
the task's samples — the chance level, the alignment judge's samples
(`sandboxed/samples.py`), the per-sample signal (`participant/diagnose.py`) — comes from
it too. It never reaches the output; docs/formats.md documents it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from .files import read_format, write_format
from .requests import LOGLIKELIHOOD, RequestKey, RequestKind, arguments_fit

PLAN_FILE = "plan.json"
PLAN_KIND = "e2lmc.plan"
# What the engine can evaluate bounds plan.json, which the trusted parent reads: 15,000 samples of
# 32 requests each; 256 MiB of prompts is some 64 million tokens a checkpoint, hours of a GPU each.
MAX_PLAN_OBJECTS = 15_000 * 32
MAX_PLAN_BYTES = 256 << 20
UNTRUSTED_METRICS = frozenset({"bypass"})  # lm-eval's, but it needs logged samples: no number for the leaderboard
# lm-eval's, but `custom` runs a function the task passes in, and `multi_choice_regex` reads a field of the raw
# document that the plan does not record
UNTRUSTED_FILTERS = frozenset({"custom", "multi_choice_regex"})
RESERVED_METRIC_KEYS = frozenset({"metric", "aggregation", "higher_is_better", "hf_evaluate"})  # never a metric's kwarg
RESERVED_FILTER_KEYS = frozenset({"function"})  # never a filter's kwarg


@dataclass
class LeakageExample:
    """A sample whose gold answer text appears in its own prompt."""

    sample: int  # the document's index in its task
    answer: str
    excerpt: str
    task: str | None = None  # the (sub)task, for groups


@dataclass
class PlannedRequest:
    """One distinct request to a model, in lm-eval's terms, and the first sample asking it."""

    kind: RequestKind
    arguments: str  # lm-eval's request arguments as canonical JSON
    task: str
    doc_id: int


@dataclass
class PlannedSample:
    """One sample: its requests (indices into `Plan.requests`) in lm-eval's order — a
    multiple-choice sample's choices first — and, for multiple choice, how many choices
    it has and which are right. `target`, `choice_texts` and `input_index` are what
    lm-eval's own `process_results` reads of the document (`doc_to_target` as JSON,
    `doc_to_choice`, and `doc_to_text` where it is the gold index of a multiple-input task):
    with them, trusted code computes the metric without the task's code (`metrics/`)."""

    task: str
    doc_id: int
    requests: list[int]
    choices: int | None = None
    gold: list[int] | None = None
    target: str | None = None
    choice_texts: list[str] | None = None
    input_index: int | None = None


@dataclass
class MetricRecipe:
    """One entry of a task's `metric_list`, as data: lm-eval's own metric and aggregation names."""

    metric: str
    aggregation: str | None = None
    higher_is_better: bool | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class FilterStep:
    function: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class FilterRecipe:
    """One entry of a task's `filter_list`: a named pipeline of lm-eval's own filters."""

    name: str
    steps: list[FilterStep]


@dataclass
class TaskRecipe:
    """How lm-eval turns one task's responses into its metrics, when only data says it
    (`custom` empty): the output type, the metrics (None: lm-eval's defaults for the type)
    and the filters (None: lm-eval's default). `custom` names each function of the
    submission's own on that path (a `process_results`, a metric, an aggregation, a
    filter, a task class): then the submission's code computes the metric."""

    task: str
    output_type: str
    metrics: list[MetricRecipe] | None = None
    filters: list[FilterRecipe] | None = None
    repeats: int = 1
    has_choices: bool = False
    custom: list[str] = field(default_factory=list)


@dataclass
class GroupMetricRecipe:
    metric: str
    filter_list: list[str] | None = None
    weight_by_size: bool = True


@dataclass
class GroupRecipe:
    """A group of tasks and how lm-eval averages its children's metrics (`mean` only)."""

    group: str
    children: list[str]
    metrics: list[GroupMetricRecipe] | None = None
    custom: list[str] = field(default_factory=list)


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
    recipes: list[TaskRecipe] = field(default_factory=list)
    groups: list[GroupRecipe] = field(default_factory=list)

    def check(self, where: str) -> None:
        """The plan is written by the child that ran the submission's code: each request's
        arguments must have the shape of its kind, and its sample records must point at its
        own requests."""
        for i, request in enumerate(self.requests):
            try:
                arguments = json.loads(request.arguments)
            except (ValueError, RecursionError):
                arguments = None
            if not arguments_fit(request.kind, arguments):
                raise UserError(f"{where}: requests[{i}] has arguments that are not those of a {request.kind} request")
        for recipe in self.recipes:
            if any(set(m.kwargs) & RESERVED_METRIC_KEYS for m in recipe.metrics or []) or \
                    any(set(s.kwargs) & RESERVED_FILTER_KEYS for f in recipe.filters or [] for s in f.steps):
                raise UserError(f"{where}: the recipe of task {recipe.task} names a metric or filter in its arguments")
        for i, sample in enumerate(self.samples):
            bad = [r for r in sample.requests if not 0 <= r < len(self.requests)]
            if bad or (sample.gold is not None and any(not 0 <= g < (sample.choices or 0) for g in sample.gold)):
                raise UserError(f"{where}: samples[{i}] points outside the plan")
            if sample.choices is not None and not (
                    1 <= sample.choices <= len(sample.requests)
                    and all(self.requests[r].kind == LOGLIKELIHOOD for r in sample.requests)
                    and (sample.choice_texts is None or len(sample.choice_texts) == sample.choices)):
                raise UserError(f"{where}: samples[{i}] claims {sample.choices} choices that its requests do not make")

    def custom_functions(self) -> list[str]:
        """The submission's own functions between responses and the metric (empty: lm-eval's
        own metrics, computed by trusted code). A plan without recipes counts as custom."""
        if not self.recipes:
            return ["the task's metric (no recipe was recorded)"]
        untyped = [f"{s.task}: doc_to_target of sample {s.doc_id} (not plain data)" for s in self.samples
                   if s.target is None][:1]
        return [name for recipe in [*self.recipes, *self.groups] for name in recipe.custom] + untyped

    def scored_tasks(self) -> set[str]:
        """The tasks whose samples the submitted metric reads: `task_name` itself, or every
        task under it through the groups."""
        children = {g.group: g.children for g in self.groups}
        found, todo = set(), [self.task_name]
        while todo:
            name = todo.pop()
            if name not in found:
                found.add(name)
                todo += children.get(name, [])
        return found - set(children)

    def request_keys(self) -> list[RequestKey]:
        """Every request's identity, in plan order: what the engine computes and the score
        child replays."""
        return [(r.kind, r.arguments) for r in self.requests]

    def digest(self) -> str:
        """A fingerprint of the task's requests and metric (what results depend on)."""
        text = json.dumps([self.task_name, self.task_metric, [(r.kind, r.arguments) for r in self.requests]])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_plan(plan: Plan, directory: str | Path) -> Path:
    return write_format(Path(directory) / PLAN_FILE, PLAN_KIND, plan)


def read_plan(directory: str | Path) -> Plan:
    return read_format(Plan, Path(directory) / PLAN_FILE, PLAN_KIND, max_objects=MAX_PLAN_OBJECTS)
