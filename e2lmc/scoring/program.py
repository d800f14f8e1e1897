"""The scoring program: ingestion results + a phase's reference data -> leaderboard scores.

Reads `/app/input/res` (what ingestion wrote) and `/app/input/ref` (the phase's
reference data), writes `scores.json` and `detailed_results.html` to `/app/output`.
Only aggregate numbers leave this module for participants; per-checkpoint values of
hidden checkpoints stay inside unless the reference data allows showing them.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from ..scoring import formulas as scoring
from ..scoring.judge import AlignmentResult, judge_samples
from ..errors import InvalidSubmission, UserError, output_folder
from ..formats.files import (
    RESULTS_FILE,
    Checkpoint,
    IngestionResults,
    Model,
    ReferenceData,
    read_reference,
    read_results,
)

CODABENCH_METADATA = "metadata"  # written by the Codabench worker next to our results
SCORES_FILE = "scores.json"
REPORT_FILE = "detailed_results.html"
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
    signal_quality: dict[str, scoring.SignalQuality]
    ranking_consistency: scoring.RankingConsistency
    scientific_compliance: scoring.ScientificCompliance
    verdict: scoring.ValidationVerdict
    curves: dict[str, list[Point]]  # model id -> points in training order (oriented)
    n_missing: int  # checkpoints of the reference without a value (only with allow_partial)
    results: IngestionResults
    reference: ReferenceData
    alignment: AlignmentResult | None = None  # None: not asked (evaluate's callers that need no judge)


# ----------------------------------------------------------------------- reading


def check_ingestion_status(res_dir: Path) -> None:
    """Fail if the Codabench worker recorded a non-zero exit for the ingestion program, or
    any exit at all for the submission as a program of its own."""
    path = res_dir / CODABENCH_METADATA
    if not path.is_file():
        return  # local runs have no worker metadata
    try:
        status = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        return
    status = status if isinstance(status, dict) else {}
    code = status.get("ingestionExitCode")
    if isinstance(code, int) and code != 0:
        raise UserError(f"The ingestion step failed (exit code {code}, see its log), so there are no complete "
                        "results to score.")
    if isinstance(status.get("exitCode"), int):
        # Codabench runs a submission's own metadata.yaml `command` beside the ingestion program, with the
        # same output folder: whatever the ingestion step wrote may have been replaced (docs/security.md).
        raise InvalidSubmission("The submission ran a program of its own (a 'command' in its metadata.yaml) "
                                "beside the ingestion step, so its results cannot be trusted; a submission is "
                                "task files only: remove the command.")


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
) -> scoring.RankingConsistency:
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
    return scoring.ranking_consistency(np.array(rows).reshape(len(steps), len(finals)), finals)


def _scientific_compliance(
    reference: ReferenceData, curves: dict[str, list[Point]]
) -> scoring.ScientificCompliance:
    selection = reference.scores.scientific_compliance

    def picked(model_id: str) -> dict[int, float]:
        return {p.checkpoint.iteration: p.value for p in curves[model_id] if p.checkpoint.role in selection.roles}

    science, web = picked(selection.science_model), picked(selection.web_model)
    shared = sorted(set(science) & set(web))
    return scoring.scientific_compliance([science[i] for i in shared], [web[i] for i in shared])


def evaluate(results: IngestionResults, reference: ReferenceData, allow_partial: bool = False,
             alignment: AlignmentResult | None = None) -> Evaluation:
    """Compute every score of DESIGN §5 for one submission (with the judge's result, when asked)."""
    values = checkpoint_values(results, reference, allow_partial)
    curves = _curves(reference, values)
    sq_selection = reference.scores.signal_quality
    sq = {
        m: scoring.signal_quality([p.value for p in curves[m] if sq_selection.picks(p.checkpoint)])
        for m in sq_selection.models
    }
    rc = _ranking_consistency(reference, curves)
    cs = _scientific_compliance(reference, curves)
    verdict = scoring.validate(
        results.n_samples,
        results.validation.rule_prompt_tokens,
        results.validation.leakage_count,
        reference.validation,
        alignment.rate if alignment else None,
        reference.alignment.threshold,
    )

    def mean(xs: list[float]) -> float:
        return float(np.mean(xs)) if xs else 0.0

    components = {
        "signal_quality": mean([s.score for s in sq.values()]),
        "ranking_consistency": rc.score,
        "scientific_compliance": cs.score,
    }
    leaderboard = Leaderboard(
        score=scoring.global_score(components, reference.weights) if verdict.valid else 0.0,
        **components,
        monotonicity=mean([s.monotonicity for s in sq.values()]),
        autocorrelation=mean([s.autocorrelation for s in sq.values()]),
        valid=1.0 if verdict.valid else 0.0,
        leakage=verdict.leakage_fraction,
        n_samples=float(results.n_samples),
        alignment=-1.0 if alignment is None or alignment.rate is None else alignment.rate,
    )
    n_missing = reference.n_checkpoints - len(values)
    return Evaluation(leaderboard, sq, rc, cs, verdict, curves, n_missing, results, reference, alignment)


# ----------------------------------------------------------------------- writing


def write_scores(leaderboard: Leaderboard, out_dir: Path, sq_only: bool = False) -> Path:
    """`scores.json`: a flat object of finite numbers keyed by leaderboard column."""
    row = leaderboard.as_dict(sq_only)
    bad = [k for k, v in row.items() if not math.isfinite(v)]
    if bad:  # never expected: every score function is defined everywhere
        raise RuntimeError(f"non-finite scores: {bad}")
    path = out_dir / SCORES_FILE
    path.write_text(json.dumps({k: round(v, 6) for k, v in row.items()}, indent=1) + "\n")
    return path


def format_row(leaderboard: Leaderboard, sq_only: bool = False) -> str:
    """The leaderboard row as a small two-line table for the terminal and logs."""
    row = leaderboard.as_dict(sq_only)
    widths = {k: max(len(k), 8) for k in row}
    head = "  ".join(k.rjust(widths[k]) for k in row)
    body = "  ".join(
        (f"{v:.0f}" if k in ("valid", "n_samples") or (k == "alignment" and v < 0) else f"{v:.4f}").rjust(widths[k])
        for k, v in row.items()
    )
    return f"{head}\n{body}"


def run_scoring(res_dir: Path, ref_dir: Path, out_dir: Path, allow_partial: bool = False) -> Evaluation:
    """The scoring step, as Codabench runs it, up to scores.json (the report, a view of
    the evaluation, is written by `report.write_report`)."""
    check_ingestion_status(res_dir)
    if not (res_dir / RESULTS_FILE).is_file():
        raise UserError(
            f"{res_dir} holds no {RESULTS_FILE}: the ingestion step produced no results to score."
        )
    results = read_results(res_dir)
    reference = read_reference(ref_dir)
    if not results.complete and not allow_partial:
        done = len(results.done_ids())
        raise UserError(
            f"Ingestion results are incomplete: the ingestion step stopped after {done} checkpoint(s)."
        )
    alignment = judge_samples(results.alignment_samples, reference.alignment)  # never raises for the judge's sake
    evaluation = evaluate(results, reference, allow_partial, alignment)
    output_folder(out_dir, "--output")
    write_scores(evaluation.leaderboard, out_dir, reference.sq_only)
    return evaluation
