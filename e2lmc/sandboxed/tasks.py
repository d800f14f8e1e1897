"""lm-eval on a submission, without a model: record its requests, replay responses.

The plan stage runs the submission's task through lm-eval's own evaluator with a
`RecordingLM` that answers every request with a placeholder and remembers it; the
score stage runs it again with the responses the trusted engine computed, so the
task's own `process_results`, filters and aggregations produce the metric exactly as
lm-eval would with a real model. Both stages execute submission code (templates,
`!function` helpers), so they run in the sandboxed child (`child.py`), which never sees a
model, with lm-eval's open doors closed (`guards.py`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
import sys
from typing import Any

from lm_eval.api.model import LM

from ..errors import UserError
from ..formats.requests import GENERATE, LOGLIKELIHOOD, ROLLING, RequestKey, request_key, unknown_kind
from ..formats.results import is_metric_key
from .guards import confined, named_documents, sandbox_templates
from .submission import Submission, load_task_yaml


def placeholder(kind: str) -> Any:
    """The answer to a request while planning, before any model has computed it."""
    if kind == LOGLIKELIHOOD:
        return 0.0, False
    if kind == ROLLING:
        return 0.0
    if kind == GENERATE:
        return ""
    raise unknown_kind(kind)


class RecordingLM(LM):
    """An lm-eval model that records distinct requests and answers from `responses`
    (or with placeholders while planning)."""

    def __init__(self, responses: dict[RequestKey, Any] | None = None) -> None:
        super().__init__()
        self.responses = responses
        # insertion-ordered, distinct; the value names the first sample that asked: (task, doc id)
        self.requests: dict[RequestKey, tuple[str, int]] = {}
        # while planning, every sample's requests: (task, doc id) -> [(lm-eval's idx, request)]
        self.asked: dict[tuple[str, int], list[tuple[int, RequestKey]]] = {}

    def _answer(self, kind: str, requests: list) -> list:
        answers = []
        for request in requests:
            key = request_key(kind, request.args)
            self.requests.setdefault(key, (request.task_name, request.doc_id))
            if self.responses is None:
                self.asked.setdefault((request.task_name, request.doc_id), []).append((request.idx, key))
            answers.append(placeholder(kind) if self.responses is None else self.responses[key])
        return answers

    def loglikelihood(self, requests: list) -> list:
        return self._answer(LOGLIKELIHOOD, requests)

    def loglikelihood_rolling(self, requests: list) -> list:
        return self._answer(ROLLING, requests)

    def generate_until(self, requests: list) -> list:
        return self._answer(GENERATE, requests)


def check_keys(submission: Submission) -> None:
    """Every key of every task YAML is an lm-eval task or group key (lm-eval would fail
    with a bare TypeError that names neither the file nor a fix)."""
    from lm_eval.config.group import GroupConfig
    from lm_eval.config.task import TaskConfig

    allowed = {f.name for f in dataclasses.fields(TaskConfig)} | {f.name for f in dataclasses.fields(GroupConfig)}
    allowed |= {"include", "class"}
    for path in submission.task_files:
        unknown = sorted(set(load_task_yaml(path)) - allowed)
        if unknown:
            close = difflib.get_close_matches(unknown[0], allowed, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "it is not an lm-eval task or group key"
            raise UserError(f"{path.relative_to(submission.root)}: unknown key '{unknown[0]}' ({hint})")


def load_task(submission: Submission) -> dict:
    """The submission's task (or group) as lm-eval builds it, from its files only."""
    from lm_eval.tasks import TaskManager

    check_keys(submission)
    sandbox_templates()
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    # lm-eval resolves relative data_files against the working directory.
    with contextlib.chdir(submission.root), confined(submission):
        manager = TaskManager(include_path=str(submission.root), include_defaults=False)
        if submission.task_name not in manager.all_tasks:
            found = ", ".join(sorted(manager.all_tasks)) or "none"
            raise UserError(f"metadata.yaml names task '{submission.task_name}', not defined in the submission "
                            f"(tasks found: {found})")
        task_dict = manager.load([submission.task_name])
    _seed(task_dict)
    return task_dict


def _seed(task_dict: dict) -> None:
    """The seeds lm-eval's `simple_evaluate` sets (its evaluator does not): the few-shot
    examples drawn for each sample, and anything a task draws from Python's, NumPy's or
    torch's generators, are the same in every child that builds the task (the plan, the
    score children) and the same as `lm_eval --tasks ...` gives a participant."""
    import random

    import numpy as np
    from lm_eval.defaults import DEFAULT_OTHER_SEED, DEFAULT_RANDOM_SEED

    random.seed(DEFAULT_RANDOM_SEED)
    np.random.seed(DEFAULT_OTHER_SEED)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(DEFAULT_OTHER_SEED)
    for task in task_dict["tasks"].values():
        task.set_fewshot_seed(seed=DEFAULT_OTHER_SEED)


def run_task(submission: Submission, task_dict: dict, lm: LM) -> dict[str, float]:
    """Run lm-eval's evaluator on `lm`; the numeric results of the submitted task."""
    from lm_eval.evaluator import evaluate

    with contextlib.chdir(submission.root):
        out = evaluate(lm, task_dict, bootstrap_iters=0, log_samples=False, verbosity="ERROR")
    results = out["results"].get(submission.task_name, {})
    return {k: float(v) for k, v in results.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def record_requests(submission: Submission, task_dict: dict) -> tuple[RecordingLM, dict[str, float]]:
    """The recording of every request the task makes (`.requests`: distinct, with the
    sample that first asked; `.asked`: each sample's), and the result keys it produces."""
    lm = RecordingLM()
    with named_documents():
        keys = run_task(submission, task_dict, lm)
    if submission.task_metric not in keys:
        produced = sorted(filter(is_metric_key, keys))
        by_metric = {key.split(",")[0]: key for key in reversed(produced)}  # the metric's name, before its filter
        close = difflib.get_close_matches(submission.task_metric.split(",")[0], list(by_metric), 1)
        raise UserError(f"metadata.yaml: task_metric '{submission.task_metric}' is not produced by task "
                        f"'{submission.task_name}'" + (f" (did you mean '{by_metric[close[0]]}'?)" if close else "")
                        + f"; it produces: {', '.join(produced) or 'none'}")
    return lm, keys


def replay(submission: Submission, task_dict: dict, responses: dict[RequestKey, Any]) -> dict[str, float]:
    """Every metric of the task, computed by the task itself from recorded responses (the
    submitted one among them)."""
    return run_task(submission, task_dict, RecordingLM(responses))


def keep_built_requests(task_dict: dict) -> None:
    """Make later runs of lm-eval's evaluator on `task_dict` reuse the requests the last
    run built, with their responses emptied: rendering every (few-shot) prompt again for
    each checkpoint cost far more than computing them (3 s a checkpoint for the
    five-shot sample). The prompts cannot differ between runs: the plan is their digest."""
    for task in task_dict["tasks"].values():
        instances = list(task.instances)

        def rebuilt(*_args: Any, _instances: list = instances, **_kwargs: Any) -> None:
            for instance in _instances:
                instance.resps.clear()
                instance.filtered_resps.clear()

        task.build_all_requests = rebuilt


def higher_is_better(task_dict: dict, metric_key: str) -> bool:
    """Whether the submitted metric improves upward (lm-eval's own flag; True if unknown)."""
    metric = metric_key.split(",")[0]
    for task in task_dict["tasks"].values():
        flag = task.higher_is_better().get(metric)
        if flag is not None:
            return bool(flag)
    return True
