"""What the plan child learns about each sample of a task, besides its requests.

Runs in the plan child (it renders the submission's templates): which requests each
sample makes, in lm-eval's order (a multiple-choice sample's choices first), and what
lm-eval's own metrics read of its document (`recipe.sample_fields`): the target and the
choices, from which the parent derives the gold answers as they are scored.
All of it goes into plan.json, from which the trusted parent derives the rest — the sample
count, leakage, the metric itself — without running the task's code again
(`ingestion/derived.py`, `metrics/`, `participant/diagnose.py`).
"""

from __future__ import annotations

from ..formats.plan import PlannedSample
from ..formats.requests import RequestKey
from .recipe import sample_fields
from .tasks import RecordingLM


def planned_samples(task_dict: dict, lm: RecordingLM, index: dict[RequestKey, int]) -> list[PlannedSample]:
    """Every sample that made a request: its requests (indices into the plan's) in lm-eval's
    order, what lm-eval's metrics read of its document, and for a multiple-choice task its
    number of choices."""
    samples = []
    for name, task in task_dict["tasks"].items():
        multiple_choice = task.OUTPUT_TYPE == "multiple_choice" and not task.multiple_input
        for doc_id, doc in enumerate(task.eval_docs):
            asked = lm.asked.get((name, doc_id))
            if not asked:
                continue
            requests = [index[key] for _, key in sorted(asked, key=lambda a: a[0])]
            fields = sample_fields(task, doc)
            choices = len(fields["choice_texts"]) if multiple_choice else None  # the parent derives the gold
            samples.append(PlannedSample(name, doc_id, requests, choices, **fields))
    return samples
