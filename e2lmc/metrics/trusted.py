"""lm-eval's own evaluator on a task rebuilt from plan.json: no template, no helper of the submission.

Each task is an lm-eval `ConfigurableTask` whose documents are the plan's samples and
whose `doc_to_target`, `doc_to_choice` and `doc_to_text` read the fields the plan child
recorded (`PlannedSample.target`, `.choice_texts`, `.input_index`); its metrics,
aggregations and filters are the recipe's names, looked up in lm-eval's own registries of
this process, where no submission's module was ever imported. Its requests are the
plan's, in the plan's order, so lm-eval's evaluator — filters, `process_results`,
aggregation, group averages — gives exactly the value the task's own run would.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from lm_eval.api.model import LM

from ..formats.plan import (
    UNTRUSTED_FILTERS,
    UNTRUSTED_METRICS,
    GroupRecipe,
    Plan,
    PlannedSample,
    TaskRecipe,
)
from ..formats.results import is_metric_key

TEST_SPLIT = "test"


class UntrustedRecipe(ValueError):
    """A recipe names something outside lm-eval's own registries."""


class PlanLM(LM):
    """Answers each request of the rebuilt tasks with the response at its plan index."""

    def __init__(self, index: dict[tuple[str, int, int], int]) -> None:
        super().__init__()
        self.index: dict[tuple[str, int, int], int] = index
        self.responses: list[Any] = []

    def _answer(self, requests: list) -> list:
        return [self.responses[self.index[r.task_name, r.doc_id, r.idx]] for r in requests]

    def loglikelihood(self, requests: list) -> list:
        return self._answer(requests)

    def loglikelihood_rolling(self, requests: list) -> list:
        return self._answer(requests)

    def generate_until(self, requests: list) -> list:
        return self._answer(requests)


def check_recipe(recipe: TaskRecipe) -> None:
    """Every name is in lm-eval's own registries of this process, where no submission's
    module registered anything (the plan's reader has refused names in keyword arguments)."""
    import lm_eval.api.metrics
    import lm_eval.filters  # noqa: F401 - both fill the registries as they are imported
    from lm_eval.api.registry import AGGREGATION_REGISTRY, FILTER_REGISTRY, METRIC_REGISTRY

    for m in recipe.metrics or []:
        if m.metric not in METRIC_REGISTRY or m.metric in UNTRUSTED_METRICS or \
                (m.aggregation is not None and m.aggregation not in AGGREGATION_REGISTRY):
            raise UntrustedRecipe(f"{recipe.task}: metric {m.metric} with aggregation {m.aggregation}")
    for f in recipe.filters or []:
        if any(step.function not in FILTER_REGISTRY or step.function in UNTRUSTED_FILTERS for step in f.steps):
            raise UntrustedRecipe(f"{recipe.task}: filter {f.name}")


def _task(recipe: TaskRecipe, samples: list[PlannedSample]) -> Any:
    """The task as lm-eval builds it from a YAML of data only, over the recorded documents."""
    from datasets import Dataset, DatasetDict
    from lm_eval.api.task import ConfigurableTask

    docs = [{"target": s.target or "null", "choices": json.dumps(s.choice_texts), "text": json.dumps(s.input_index)}
            for s in samples]
    multiple_input = bool(samples) and samples[0].input_index is not None
    config: dict[str, Any] = {
        "task": recipe.task, "output_type": recipe.output_type, "test_split": TEST_SPLIT, "repeats": recipe.repeats,
        "custom_dataset": lambda **_: DatasetDict({TEST_SPLIT: Dataset.from_list(docs)}),
        "doc_to_text": (lambda doc: json.loads(doc["text"])) if multiple_input else (lambda doc: ""),
        "doc_to_target": lambda doc: json.loads(doc["target"]),
        "doc_to_choice": (lambda doc: json.loads(doc["choices"])) if recipe.has_choices else None,
    }
    if recipe.metrics is not None:
        config["metric_list"] = [  # the names last: a keyword argument never replaces one (check_recipe refuses)
            {**m.kwargs, "metric": m.metric, **({"aggregation": m.aggregation} if m.aggregation else {}),
             **({"higher_is_better": m.higher_is_better} if m.higher_is_better is not None else {})}
            for m in recipe.metrics]
    if recipe.filters is not None:
        config["filter_list"] = [{"name": f.name, "filter": [{**s.kwargs, "function": s.function} for s in f.steps]}
                                 for f in recipe.filters]
    return ConfigurableTask(config=config)


def _groups(recipes: list[GroupRecipe], tasks: dict[str, Any]) -> dict[str, Any]:
    from lm_eval.api.group import Group
    from lm_eval.config.group import AggMetricConfig

    groups = {r.group: Group(r.group, aggregate_metric_list=None if r.metrics is None else [
        AggMetricConfig(m.metric, m.filter_list, "mean", m.weight_by_size) for m in r.metrics]) for r in recipes}
    for recipe in recipes:
        for child in recipe.children:
            item = groups[child] if child in groups else tasks.get(child)  # an empty group is falsy
            if item is None:
                raise UntrustedRecipe(f"group {recipe.group}: child {child} is not in the plan")
            groups[recipe.group].add(item)
    return groups


class TrustedMetric:
    """The plan's metric, computed by lm-eval from each checkpoint's responses (in plan order)."""

    def __init__(self, plan: Plan) -> None:
        from lm_eval.api.instance import Instance

        if custom := plan.custom_functions():
            raise UntrustedRecipe(custom[0])
        for recipe in plan.recipes:
            check_recipe(recipe)
        logging.getLogger("lm_eval").setLevel(logging.ERROR)
        self.plan, self.tasks, index = plan, {}, {}
        for recipe in plan.recipes:
            samples = [s for s in plan.samples if s.task == recipe.task]
            if not samples:
                raise UntrustedRecipe(f"{recipe.task}: no sample")
            task = _task(recipe, samples)
            self.tasks[recipe.task] = task
            instances = []
            for position, sample in enumerate(samples):
                for idx, r in enumerate(sample.requests):
                    request = plan.requests[r]
                    instances.append(Instance(request.kind, task.eval_docs[position],
                                              tuple(json.loads(request.arguments)), idx,
                                              (recipe.task, position, recipe.repeats)))
                    index[recipe.task, position, idx] = r
            task._instances = instances
            task.build_all_requests = lambda *_a, _instances=instances, **_k: _reset(_instances)
        self.groups = _groups(plan.groups, self.tasks)
        self.lm = PlanLM(index)

    def values(self, responses: list[Any]) -> dict[str, float]:
        """Every metric of the scored task on one checkpoint's responses (in plan order),
        the submitted one among them (`value`)."""
        from lm_eval.evaluator import evaluate

        self.lm.responses = responses
        task_dict = {"tasks": self.tasks, "groups": self.groups,
                     "group_map": {name: group.child_names for name, group in self.groups.items()}}
        out = evaluate(self.lm, task_dict, bootstrap_iters=0, log_samples=False, verbosity="ERROR")
        return metric_values(out["results"][self.plan.task_name])

    def value(self, responses: list[Any]) -> float:
        """The submitted metric on one checkpoint's responses."""
        return self.values(responses)[self.plan.task_metric]


def metric_values(results: dict[str, Any]) -> dict[str, float]:
    """lm-eval's results of one task: its metric keys ('acc,none') and their numbers,
    without the standard errors and the bookkeeping ('alias', 'samples')."""
    return {key: float(value) for key, value in results.items()
            if is_metric_key(key) and isinstance(value, (int, float)) and not isinstance(value, bool)}


def _reset(instances: list) -> None:
    for instance in instances:
        instance.resps.clear()
        instance.filtered_resps.clear()
