"""What the plan stage learns about each sample of a task, besides its requests.

`planned_samples` and `leaked_samples` run in the plan child (they render the
submission's templates): which requests each sample makes, in lm-eval's order (a
multiple-choice sample's choices first), its gold answer(s), and whether the gold answer
shows in its own prompt (leakage). The trusted parent derives from the plan alone, without
running the task's code again, the task's chance level (the report's reference line), the
samples the alignment judge reads, and the per-sample signal of `e2lmc diagnose`.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

from ..formats.alignment import ALIGNMENT_DRAWN, AlignmentSample
from ..formats.plan import LeakageExample, Plan, PlannedSample
from ..formats.requests import GENERATE, LOGLIKELIHOOD, ROLLING, RequestKey, unknown_kind
from .tasks import RecordingLM

ACCURACY_METRICS = ("acc", "acc_norm", "acc_mutual_info")  # lm-eval's multiple-choice accuracies
PROMPT_CHARACTERS = 1500  # of a prompt shown to the alignment judge: its end, where the question is
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


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


def chance_level(plan: Plan) -> float | None:
    """The metric a model guessing uniformly would get: the mean over samples of
    (gold answers / choices), for an accuracy of a multiple-choice task; None otherwise
    (lower-is-better metrics, generation, log-likelihoods, a sample without a gold)."""
    if plan.task_metric.split(",")[0] not in ACCURACY_METRICS or not plan.samples:
        return None
    if any(s.choices is None or not s.gold for s in plan.samples):
        return None
    return sum(len(set(s.gold)) / s.choices for s in plan.samples) / len(plan.samples)


def alignment_samples(plan: Plan, n: int = ALIGNMENT_DRAWN) -> list[AlignmentSample]:
    """`n` samples drawn without replacement in an order seeded by the task's plan (the
    same submission draws the same ones, in every run), each formatted as the organizers'
    judge read them: `Question: …`, the choices as `A) …`, `Answer: X`. The text comes
    from the requests the engine evaluates, so the judge sees what the models are asked."""
    order = list(range(len(plan.samples)))
    random.Random(int(plan.digest(), 16)).shuffle(order)
    return [AlignmentSample(plan.samples[i].task, plan.samples[i].doc_id, qa_text(plan, plan.samples[i]))
            for i in order[:n]]


def qa_text(plan: Plan, sample: PlannedSample) -> str:
    """One sample as a question-answer pair (the end of a long prompt: its last question)."""
    requests = [plan.requests[r] for r in sample.requests]
    arguments = [json.loads(r.arguments) for r in requests]
    context = str(arguments[0][0]) if arguments and arguments[0] else ""
    question = re.sub(r"\s*Answer\s*:\s*$", "", context.strip())[-PROMPT_CHARACTERS:]
    if not question.lower().startswith("question"):
        question = f"Question: {question}"
    kind = requests[0].kind if requests else GENERATE
    if sample.choices and sample.gold and sample.choices <= len(LETTERS):
        choices = [str(a[1])[1:] if str(a[1]).startswith(" ") else str(a[1]) for a in arguments[:sample.choices]]
        lines = [question] + [f"{LETTERS[i]}) {c}" for i, c in enumerate(choices)]
        return "\n".join(lines + [f"Answer: {', '.join(LETTERS[g] for g in sorted(set(sample.gold)))}"])
    if kind == LOGLIKELIHOOD:
        return f"{question}\nAnswer: {str(arguments[0][1]).strip()}"
    if kind == ROLLING:
        return f"Text: {context.strip()[-PROMPT_CHARACTERS:]}"
    if kind == GENERATE:
        return question
    raise unknown_kind(kind)


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
