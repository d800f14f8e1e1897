"""What the plan child learns about each sample of a task, besides its requests.

Runs in the plan child (it renders the submission's templates): which requests each
sample makes, in lm-eval's order (a multiple-choice sample's choices first), its gold
answer(s) and what lm-eval's own metrics read of its document (`recipe.sample_fields`).
All of it goes into plan.json, from which the trusted parent derives the rest — the sample
count, leakage, the metric itself — without running the task's code again
(`ingestion/derived.py`, `metrics/`, `participant/diagnose.py`).
"""

from __future__ import annotations

from typing import Any

from ..formats.plan import PlannedSample
from ..formats.requests import RequestKey
from .recipe import sample_fields
from .tasks import RecordingLM


def planned_samples(task_dict: dict, lm: RecordingLM, index: dict[RequestKey, int]) -> list[PlannedSample]:
    """Every sample that made a request: its requests (indices into the plan's) in lm-eval's
    order and, for a multiple-choice task, its number of choices and gold indices."""
    samples = []
    for name, task in task_dict["tasks"].items():
        multiple_choice = task.OUTPUT_TYPE == "multiple_choice" and not task.multiple_input
        for doc_id, doc in enumerate(task.eval_docs):
            asked = lm.asked.get((name, doc_id))
            if not asked:
                continue
            requests = [index[key] for _, key in sorted(asked, key=lambda a: a[0])]
            fields = sample_fields(task, doc)
            if multiple_choice:
                choices = list(task.doc_to_choice(doc))
                samples.append(PlannedSample(name, doc_id, requests, len(choices), _gold(task.doc_to_target(doc),
                                                                                          choices), **fields))
            else:
                samples.append(PlannedSample(name, doc_id, requests, **fields))
    return samples


def _gold(target: Any, choices: list) -> list[int]:
    """The gold choice indices as lm-eval's multiple-choice scoring reads the target: an
    index, a choice's text, or a list of either (several right answers)."""
    gold = []
    for t in target if isinstance(target, list) else [target]:
        if isinstance(t, str):
            t = choices.index(t) if t in choices else int(t) if t.strip().isdigit() else -1
        if isinstance(t, int) and 0 <= t < len(choices):
            gold.append(t)
    return gold
