"""What the trusted parent derives from plan.json alone, without running the task's code again.

The task's chance level (the report's reference line, the advice's "at chance"), and the
samples the alignment judge reads: drawn in an order seeded by the plan and formatted as
the organizers' judge read them, from the very requests the models are asked.
"""

from __future__ import annotations

import json
import random
import re

from ..formats.alignment import ALIGNMENT_DRAWN, AlignmentSample
from ..formats.plan import Plan, PlannedSample
from ..formats.requests import GENERATE, LOGLIKELIHOOD, ROLLING, unknown_kind

ACCURACY_METRICS = ("acc", "acc_norm", "acc_mutual_info")  # lm-eval's multiple-choice accuracies
PROMPT_CHARACTERS = 1500  # of a prompt shown to the alignment judge: its end, where the question is
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


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
