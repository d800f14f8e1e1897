"""What lies between a task's responses and its metric, written down as data by the plan child.

A metric computed by the submission's own code can keep state across checkpoints or
recognise public checkpoints by their responses, and so forge its score; a metric named
in YAML from lm-eval's own registries cannot. This module, run in the plan child, reads
the built task and records for each task its output type, metrics, aggregations and
filters (`TaskRecipe`), for each group its averaging (`GroupRecipe`), and what each
sample's document gives `process_results` (`sample_fields`). Anything of the
submission's own on that path — a `process_results`, a metric, aggregation or filter
given as `!function`, a task `class` — is named in `custom`. The child's word is not
trusted: the trusted side (`metrics/`) computes only what its own lm-eval registries
hold from these recipes, and a lie can only replace the task's metric by lm-eval's own.
"""

from __future__ import annotations

import json
from typing import Any

from ..formats.plan import (
    RESERVED_FILTER_KEYS,
    RESERVED_METRIC_KEYS,
    UNTRUSTED_FILTERS,
    UNTRUSTED_METRICS,
    FilterRecipe,
    FilterStep,
    GroupMetricRecipe,
    GroupRecipe,
    MetricRecipe,
    TaskRecipe,
)


def _name(function: Any) -> str:
    return getattr(function, "__qualname__", None) or getattr(function, "__name__", None) or type(function).__name__


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):  # NumPy scalars and arrays, as datasets gives them
        return value.tolist()
    raise TypeError(type(value).__name__)


def _data(value: Any) -> Any:
    """`value` as plain JSON data (None: it holds a function or another object)."""
    try:
        return json.loads(json.dumps(value, default=_plain))
    except (TypeError, ValueError):
        return None


def task_recipe(name: str, task: Any) -> TaskRecipe:
    from lm_eval.api.registry import AGGREGATION_REGISTRY, FILTER_REGISTRY, METRIC_REGISTRY
    from lm_eval.api.task import ConfigurableTask

    config, custom = task.config, []
    if type(task) is not ConfigurableTask:
        custom.append(f"{name}: task class {_name(type(task))}")
    if callable(config.process_results):
        custom.append(f"{name}: process_results {_name(config.process_results)}")
    metrics = None
    if config.metric_list is not None:
        metrics = []
        for entry in config.metric_list:
            metric, aggregation = entry.get("metric"), entry.get("aggregation")
            kwargs = _data({k: v for k, v in entry.items() if k not in RESERVED_METRIC_KEYS})
            if not isinstance(metric, str) or metric not in METRIC_REGISTRY or metric in UNTRUSTED_METRICS \
                    or entry.get("hf_evaluate"):
                custom.append(f"{name}: metric {metric if isinstance(metric, str) else _name(metric)}")
            if aggregation is not None and not (isinstance(aggregation, str) and aggregation in AGGREGATION_REGISTRY):
                custom.append(f"{name}: aggregation {_name(aggregation)}")
            if kwargs is None:
                custom.append(f"{name}: arguments of metric {metric} that are not plain data")
            higher = entry.get("higher_is_better")
            metrics.append(MetricRecipe(str(metric) if isinstance(metric, str) else _name(metric),
                                        aggregation if isinstance(aggregation, str) else None,
                                        higher if isinstance(higher, bool) else None, kwargs or {}))
    filters = None
    if config.filter_list is not None:
        filters = []
        for entry in config.filter_list:
            steps = []
            for step in entry.get("filter") or []:
                function = step.get("function")
                kwargs = _data({k: v for k, v in step.items() if k not in RESERVED_FILTER_KEYS})
                if not isinstance(function, str) or function not in FILTER_REGISTRY or function in UNTRUSTED_FILTERS \
                        or kwargs is None:
                    custom.append(f"{name}: filter {function if isinstance(function, str) else _name(function)}")
                steps.append(FilterStep(function if isinstance(function, str) else _name(function), kwargs or {}))
            filters.append(FilterRecipe(str(entry.get("name")), steps))
    return TaskRecipe(name, str(task.OUTPUT_TYPE), metrics, filters, int(config.repeats or 1),
                      config.doc_to_choice is not None, custom)


def group_recipe(group: Any) -> GroupRecipe:
    metrics, custom = None, []
    if group.aggregate_metric_list:
        metrics = []
        for entry in group.aggregate_metric_list:
            if entry.aggregation != "mean":
                custom.append(f"{group.name}: group aggregation {_name(entry.aggregation)}")
            metrics.append(GroupMetricRecipe(str(entry.metric), list(entry.filter_list) if entry.filter_list else None,
                                             bool(entry.weight_by_size)))
    return GroupRecipe(group.name, list(group.child_names), metrics, custom)


def recipes(task_dict: dict) -> tuple[list[TaskRecipe], list[GroupRecipe]]:
    """Every task's and group's recipe."""
    return ([task_recipe(name, task) for name, task in task_dict["tasks"].items()],
            [group_recipe(group) for group in task_dict.get("groups", {}).values()])


def sample_fields(task: Any, doc: dict) -> dict[str, Any]:
    """What lm-eval's `process_results` reads of one document: the target (as JSON), the
    choices' texts, and the gold index that a multiple-input task's `doc_to_text` gives."""
    target = task.doc_to_target(doc)
    fields: dict[str, Any] = {"target": None if target is not None and _data(target) is None
                              else json.dumps(_data(target))}
    if task.config.doc_to_choice is not None:
        fields["choice_texts"] = [str(c) for c in task.doc_to_choice(doc)]
    if task.multiple_input:
        fields["input_index"] = int(task.doc_to_text(doc))
    return fields
