"""lm-eval on a submission, without a model: record its requests, replay responses.

The plan stage runs the submission's task through lm-eval's own evaluator with a
`RecordingLM` that answers every request with a placeholder and remembers it; the
score stage runs it again with the responses the trusted engine computed, so the
task's own `process_results`, filters and aggregations produce the metric exactly as
lm-eval would with a real model. Both stages execute submission code (templates,
`!function` helpers), so they run in a separate process that never sees a model.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from lm_eval.api.model import LM

from .errors import UserError
from .submission import Submission

# (request type, arguments as canonical JSON): the identity of one request.
RequestKey = tuple[str, str]
PLACEHOLDERS: dict[str, Any] = {"loglikelihood": (0.0, False), "loglikelihood_rolling": 0.0, "generate_until": ""}


def request_key(kind: str, arguments: tuple) -> RequestKey:
    return kind, json.dumps(list(arguments), sort_keys=True, ensure_ascii=False, default=str)


class RecordingLM(LM):
    """An lm-eval model that records distinct requests and answers from `responses`
    (or with placeholders while planning)."""

    def __init__(self, responses: dict[RequestKey, Any] | None = None) -> None:
        super().__init__()
        self.responses = responses
        self.requests: dict[RequestKey, tuple] = {}  # insertion-ordered, distinct

    def _answer(self, kind: str, requests: list) -> list:
        answers = []
        for request in requests:
            key = request_key(kind, request.args)
            self.requests.setdefault(key, request.args)
            answers.append(PLACEHOLDERS[kind] if self.responses is None else self.responses[key])
        return answers

    def loglikelihood(self, requests: list) -> list:
        return self._answer("loglikelihood", requests)

    def loglikelihood_rolling(self, requests: list) -> list:
        return self._answer("loglikelihood_rolling", requests)

    def generate_until(self, requests: list) -> list:
        return self._answer("generate_until", requests)


def sandbox_templates() -> None:
    """Render prompt templates in Jinja's sandbox: lm-eval's own environment lets a
    template reach Python internals (`cycler.__init__.__globals__.os`)."""
    import lm_eval.utils
    from jinja2 import BaseLoader, StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    if not isinstance(lm_eval.utils.env, ImmutableSandboxedEnvironment):
        env = ImmutableSandboxedEnvironment(loader=BaseLoader, undefined=StrictUndefined, keep_trailing_newline=True)
        env.filters["regex_replace"] = lm_eval.utils.regex_replace
        lm_eval.utils.env = env


def load_task(submission: Submission) -> dict:
    """The submission's task (or group) as lm-eval builds it, from its files only."""
    from lm_eval.tasks import TaskManager

    sandbox_templates()
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    # lm-eval resolves relative data_files against the working directory.
    with contextlib.chdir(submission.root):
        manager = TaskManager(include_path=str(submission.root), include_defaults=False)
        if submission.task_name not in manager.all_tasks:
            found = ", ".join(sorted(manager.all_tasks)) or "none"
            raise UserError(f"metadata.yaml names task '{submission.task_name}', not defined in the submission "
                            f"(tasks found: {found})")
        return manager.load([submission.task_name])


def run_task(submission: Submission, task_dict: dict, lm: LM) -> dict[str, float]:
    """Run lm-eval's evaluator on `lm`; the numeric results of the submitted task."""
    from lm_eval.evaluator import evaluate

    with contextlib.chdir(submission.root):
        out = evaluate(lm, task_dict, bootstrap_iters=0, log_samples=False, verbosity="ERROR")
    results = out["results"].get(submission.task_name, {})
    return {k: float(v) for k, v in results.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def record_requests(submission: Submission, task_dict: dict) -> tuple[list[RequestKey], dict[str, float]]:
    """Every distinct request the task makes, and the result keys it produces."""
    lm = RecordingLM()
    keys = run_task(submission, task_dict, lm)
    if submission.task_metric not in keys:
        produced = ", ".join(sorted(k for k in keys if "," in k and "_stderr" not in k)) or "none"
        raise UserError(f"metadata.yaml: task_metric '{submission.task_metric}' is not produced by task "
                        f"'{submission.task_name}' (it produces: {produced})")
    return list(lm.requests), keys


def replay(submission: Submission, task_dict: dict, responses: dict[RequestKey, Any]) -> float:
    """The submitted metric computed by the task itself from recorded responses."""
    return run_task(submission, task_dict, RecordingLM(responses))[submission.task_metric]
