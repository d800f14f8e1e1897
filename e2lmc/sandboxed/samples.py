"""What the plan child learns about each sample of a task, besides its requests.

Runs in the plan child (it renders the submission's templates): which requests each
sample makes, in lm-eval's order (a multiple-choice sample's choices first), its gold
answer(s), and whether the gold answer shows in its own prompt (leakage). All of it goes
into plan.json, from which the trusted parent derives the rest without running the task's
code again (`ingestion/derived.py`, `participant/diagnose.py`).
"""

from __future__ import annotations

import re
from typing import Any

from ..formats.plan import LeakageExample, PlannedSample
from ..formats.requests import RequestKey
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
            if multiple_choice:
                choices = list(task.doc_to_choice(doc))
                samples.append(PlannedSample(name, doc_id, requests, len(choices), _gold(task.doc_to_target(doc),
                                                                                          choices)))
            else:
                samples.append(PlannedSample(name, doc_id, requests))
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


def leaked_samples(task_dict: dict) -> list[LeakageExample]:
    """Samples whose gold answer appears (as a whole word, ignoring case) in their own
    prompt (few-shot examples not counted)."""
    leaks = []
    for name, task in task_dict["tasks"].items():
        for doc_id, doc in enumerate(task.eval_docs):
            prompt, answer = str(task.doc_to_text(doc)), _gold_text(task, doc)
            match = re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", prompt, re.IGNORECASE) if answer else None
            if match:
                excerpt = prompt[max(0, match.start() - 40): match.end() + 40]
                leaks.append(LeakageExample(doc_id, answer, excerpt, name))
    return leaks


def _gold_text(task: Any, doc: dict) -> str:
    target = task.doc_to_target(doc)
    if isinstance(target, list):
        target = target[0] if target else ""
    if task.OUTPUT_TYPE == "multiple_choice" and isinstance(target, int):
        choices = task.doc_to_choice(doc)
        target = choices[target] if 0 <= target < len(choices) else ""
    return str(target).strip()
