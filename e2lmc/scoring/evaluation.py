"""Ingestion results + a phase's reference data -> every score, and what the report shows.

`evaluate` turns each checkpoint's metric value into curves (one per model, in training
order, oriented higher-is-better), applies the selections of the reference data and the
formulas (`formulas.py`), and the submission rules; the result, an `Evaluation`, is what
the scoring program writes (`program.py`) and the report and its advice read. Only
aggregate numbers leave for participants; per-checkpoint values of hidden checkpoints stay
inside unless the reference data allows showing them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import UserError
from ..formats.reference import Checkpoint, Model, ReferenceData
from ..formats.results import IngestionResults
from . import formulas
from .judge import AlignmentResult

SQ_ONLY_DROPPED = ("score", "ranking_consistency", "scientific_compliance")  # they need hidden checkpoints


@dataclass(frozen=True)
class Leaderboard:
    """One leaderboard row: the keys are the competition's leaderboard column keys."""

    score: float
    signal_quality: float
    ranking_consistency: float
    scientific_compliance: float
    monotonicity: float
    autocorrelation: float
    valid: float
    leakage: float
    n_samples: float
    alignment: float  # the judge's acceptance rate; -1: not checked (disabled, or the judge unreachable)
    custom_code: float  # 1: the submission's own code computed the metric (docs/security.md); 0: lm-eval's own

    def as_dict(self, sq_only: bool = False) -> dict[str, float]:
        """Every column; with `sq_only`, those that do not need hidden checkpoints."""
        row = asdict(self)
        return {k: v for k, v in row.items() if k not in SQ_ONLY_DROPPED} if sq_only else row


@dataclass(frozen=True)
class Point:
    """One model's oriented metric value at one checkpoint."""

    checkpoint: Checkpoint
    value: float


@dataclass(frozen=True)
class Evaluation:
    """Everything the scores and the report are made of."""

    leaderboard: Leaderboard
    signal_quality: dict[str, formulas.SignalQuality]
    ranking_consistency: formulas.RankingConsistency
    scientific_compliance: formulas.ScientificCompliance
    verdict: formulas.RulesVerdict
    curves: dict[str, list[Point]]  # model id -> points in training order (oriented)
    n_missing: int  # checkpoints of the reference without a value (only with allow_partial)
    results: IngestionResults
    reference: ReferenceData
    alignment: AlignmentResult | None = None  # None: not asked (evaluate's callers that need no judge)


def checkpoint_values(
    results: IngestionResults, reference: ReferenceData, allow_partial: bool = False
) -> dict[str, float]:
    """Metric value per checkpoint id, oriented so that higher is better.

    Checkpoints of the reference that ingestion did not finish make this fail with
    one sentence, unless `allow_partial` (they are then simply left out).
    """
    metric = results.task_metric
    sign = 1.0 if results.higher_is_better else -1.0
    by_id = {c.id: c for c in results.checkpoints}
    values: dict[str, float] = {}
    missing: list[str] = []
    for model in reference.models:
        for ckpt in model.checkpoints:
            cid = model.checkpoint_id(ckpt)
            result = by_id.get(cid)
            if result is not None and result.error is None and metric not in result.metrics:
                raise UserError(
                    f"Ingestion results for {cid} have no metric '{metric}' "
                    f"(they have: {', '.join(sorted(result.metrics)) or 'none'})."
                )
            value = None if result is None or result.error else result.metrics[metric]
            if value is None or not math.isfinite(value):
                missing.append(cid)
            else:
                values[cid] = sign * value
    if missing and not allow_partial:
        raise UserError(
            f"Ingestion results are incomplete: {len(missing)} of {reference.n_checkpoints} checkpoints have no value "
            f"(first: {missing[0]}); the ingestion step did not finish."
        )
    return values


# --------------------------------------------------------------------- computing


def _curves(reference: ReferenceData, values: dict[str, float]) -> dict[str, list[Point]]:
    """Every model's points in training order; a checkpoint without a value is NaN,
    which each score ignores and reports."""
    return {
        model.id: [
            Point(c, values.get(model.checkpoint_id(c), math.nan))
            for c in sorted(model.checkpoints, key=lambda c: c.iteration)
        ]
        for model in reference.models
    }


def _final(model: Model) -> Checkpoint | None:
    finals = [c for c in model.checkpoints if c.role == "final"]
    return max(finals, key=lambda c: c.iteration) if finals else None


def _ranking_consistency(
    reference: ReferenceData, curves: dict[str, list[Point]]
) -> formulas.RankingConsistency:
    """Steps are the iterations picked by the selection; each model is compared at
    the same iteration with its own final checkpoint."""
    selection = reference.scores.ranking_consistency
    lookup = {m: {p.checkpoint.iteration: p.value for p in curves[m]} for m in selection.models}
    finals = []
    for model_id in selection.models:
        final = _final(reference.model(model_id))
        finals.append(lookup[model_id].get(final.iteration, math.nan) if final else math.nan)
    steps = sorted(
        {
            c.iteration
            for m in selection.models
            for c in reference.model(m).checkpoints
            if selection.picks(c) and c.role != "final"
        }
    )
    rows = [[lookup[m].get(it, math.nan) for m in selection.models] for it in steps]
    return formulas.ranking_consistency(np.array(rows).reshape(len(steps), len(finals)), finals)


def _scientific_compliance(
    reference: ReferenceData, curves: dict[str, list[Point]], chance: float | None, spread: float | None
) -> formulas.ScientificCompliance:
    """`chance` and `spread`: the task's chance level and a guessing model's standard
    deviation around it, by which CS leaves out a checkpoint where both models guess."""
    selection = reference.scores.scientific_compliance

    def picked(model_id: str) -> dict[int, float]:
        return {p.checkpoint.iteration: p.value for p in curves[model_id] if p.checkpoint.role in selection.roles}

    science, web = picked(selection.science_model), picked(selection.web_model)
    shared = sorted(set(science) & set(web))
    return formulas.scientific_compliance([science[i] for i in shared], [web[i] for i in shared], chance, spread)


def evaluate(results: IngestionResults, reference: ReferenceData, allow_partial: bool = False,
             alignment: AlignmentResult | None = None) -> Evaluation:
    """Every score of one submission (docs/scoring.md), with the judge's result when it was asked."""
    values = checkpoint_values(results, reference, allow_partial)
    curves = _curves(reference, values)
    sq_selection = reference.scores.signal_quality
    sq = {
        m: formulas.signal_quality([p.value for p in curves[m] if sq_selection.picks(p.checkpoint)])
        for m in sq_selection.models
    }
    rc = _ranking_consistency(reference, curves)
    cs = _scientific_compliance(reference, curves, results.chance_level, results.guessing_spread)
    verdict = formulas.check_rules(
        results.n_samples,
        results.validation.rule_prompt_tokens,
        results.validation.leakage_count,
        reference.validation,
        alignment.rate if alignment else None,
        reference.alignment.threshold,
        results.custom_code if reference.custom_metric_code == "refuse" else (),
    )

    def mean(xs: list[float]) -> float:
        return float(np.mean(xs)) if xs else 0.0

    components = {
        "signal_quality": mean([s.score for s in sq.values()]),
        "ranking_consistency": rc.score,
        "scientific_compliance": cs.score,
    }
    leaderboard = Leaderboard(
        score=formulas.global_score(components, reference.weights) if verdict.valid else 0.0,
        **components,
        monotonicity=mean([s.monotonicity for s in sq.values()]),
        autocorrelation=mean([s.autocorrelation for s in sq.values()]),
        valid=1.0 if verdict.valid else 0.0,
        leakage=verdict.leakage_fraction,
        n_samples=float(results.n_samples),
        alignment=-1.0 if alignment is None or alignment.rate is None else alignment.rate,
        custom_code=1.0 if results.custom_code else 0.0,
    )
    n_missing = reference.n_checkpoints - len(values)
    return Evaluation(leaderboard, sq, rc, cs, verdict, curves, n_missing, results, reference, alignment)
