"""What a task would score without some of its samples, under the competition's rules.

diagnose proposes dropping the samples that add noise; dropping them changes more than
SQ: the sample count may fall below the rules' minimum, the science model's lead (CS)
may go with them, the ranking (RC) may move. This scores both versions of the task the
way the scoring program does (`scoring.evaluation.evaluate`, the same formulas and
rules) on every checkpoint of the embedded set, from the responses diagnose computed.

The values per checkpoint are the task's own metric, computed by lm-eval's evaluator on
the task rebuilt from its plan (`metrics.trusted`), on all samples and on the kept ones.
That is exact for every metric lm-eval names. A task whose metric is the submission's own
code cannot be recomputed here (that code runs only inside ingestion's sandbox): it is
scored on a stand-in, the accuracy from the answer margins (multiple choice) or the mean
log-likelihood, and `comparable` says that these numbers are not the leaderboard's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..formats.plan import Plan
from ..formats.reference import ReferenceData
from ..formats.results import CheckpointResult, IngestionResults, PreflightFindings
from ..ingestion.derived import chance_level, distinct_samples, guessing_spread
from ..scoring.evaluation import Evaluation, evaluate

MARGIN_ACCURACY = "accuracy from the margins"
MEAN_LOGLIKELIHOOD = "mean log-likelihood"


@dataclass(frozen=True)
class SubsetScores:
    """The task scored as it is and without the dropped samples (`kept` None: nothing to
    score, `why_not` says why)."""

    metric: str  # what the values are: the task's metric, or the stand-in
    comparable: bool  # the task's own metric: the same numbers as the leaderboard's
    whole: Evaluation
    kept: Evaluation | None
    why_not: str = ""


def sub_plan(plan: Plan, keep: np.ndarray) -> Plan:
    """The plan with only the samples `keep` marks: the same requests, so every checkpoint's
    responses (in plan order) still fit it."""
    part = dataclasses.replace(plan, samples=[s for s, k in zip(plan.samples, keep, strict=True) if k])
    part.n_samples = distinct_samples(part)
    return part


def _values(part: Plan, responses: dict[str, list[Any]], stand_in: dict[str, np.ndarray], keep: np.ndarray,
            own_metric: bool) -> dict[str, float]:
    """Each checkpoint's value on the samples `keep` marks (`part`: the plan of just those)."""
    if own_metric:
        from ..metrics.trusted import TrustedMetric

        metric = TrustedMetric(part)
        return {checkpoint: metric.value(answers) for checkpoint, answers in responses.items()}
    return {checkpoint: float(scores[keep].mean()) for checkpoint, scores in stand_in.items()}


def _results(plan: Plan, part: Plan, findings: PreflightFindings, metric: str, values: dict[str, float],
             own_metric: bool) -> IngestionResults:
    """The ingestion results the subset `part` of `plan` would have had."""
    leaked = {(leak.task or plan.task_name, leak.sample) for leak in plan.leakage}  # found on the whole task
    guessed = part if own_metric else dataclasses.replace(part, task_metric="acc,none")  # the stand-in: an accuracy
    kept_leaks = sum(1 for s in part.samples if (s.task, s.doc_id) in leaked)
    validation = dataclasses.replace(findings, leakage_count=kept_leaks, leakage_examples=[])
    return IngestionResults(
        plan.task_name, metric, plan.higher_is_better if own_metric else True, part.n_samples, validation,
        [CheckpointResult(checkpoint, {metric: value}, 0.0) for checkpoint, value in values.items()], complete=True,
        chance_level=chance_level(guessed) if own_metric or metric == MARGIN_ACCURACY else None,
        guessing_spread=guessing_spread(guessed) if own_metric or metric == MARGIN_ACCURACY else None,
        custom_code=plan.custom_functions(),
    )


def empty_subtask(plan: Plan, keep: np.ndarray) -> str | None:
    """A scored subtask that would keep no sample (lm-eval cannot average an empty task)."""
    left = {s.task for s, k in zip(plan.samples, keep, strict=True) if k}
    return next((task for task in sorted(plan.scored_tasks()) if task not in left), None)


def subset_scores(plan: Plan, findings: PreflightFindings, reference: ReferenceData,
                  responses: dict[str, list[Any]], margins: dict[str, np.ndarray], keep: np.ndarray,
                  multiple_choice: bool) -> SubsetScores:
    """Score the task on every checkpoint of `reference` with all samples and with those
    `keep` marks. `responses`: each checkpoint's responses in plan order; `margins`: each
    checkpoint's per-sample scores (`diagnose.sample_scores`), the stand-in's material."""
    own_metric = not plan.custom_functions()
    metric = plan.task_metric if own_metric else MARGIN_ACCURACY if multiple_choice else MEAN_LOGLIKELIHOOD
    stand_in = {c: (m > 0).astype(float) if multiple_choice else m for c, m in margins.items()}

    def scored(subset: np.ndarray) -> Evaluation:
        part = sub_plan(plan, subset)
        values = _values(part, responses, stand_in, subset, own_metric)
        return evaluate(_results(plan, part, findings, metric, values, own_metric), reference)

    whole = scored(np.ones(len(plan.samples), dtype=bool))
    if not keep.any():
        return SubsetScores(metric, own_metric, whole, None, "every sample would be dropped")
    if own_metric and (task := empty_subtask(plan, keep)):
        return SubsetScores(metric, own_metric, whole, None, f"subtask {task} would keep no sample")
    return SubsetScores(metric, own_metric, whole, scored(keep))


def changes(scores: SubsetScores) -> list[str]:
    """What dropping the samples costs beyond SQ, in sentences: a rule it breaks, a score it lowers."""
    if scores.kept is None:
        return [f"nothing is left to score: {scores.why_not}"]
    said = [f"without them the task would be invalid: {problem}" for problem in scores.kept.verdict.problems
            if problem not in scores.whole.verdict.problems]
    before, after = scores.whole.leaderboard, scores.kept.leaderboard
    for name, field in (("RC", "ranking_consistency"), ("CS", "scientific_compliance"), ("the score", "score")):
        old, new = getattr(before, field), getattr(after, field)
        if new < old - 0.01:
            said.append(f"{name} would fall from {old:.3f} to {new:.3f}")
    return said
