"""`e2lmc diagnose SUBMISSION`: which samples carry signal, and what the task scores without the rest.

A low SQ says the task's curves are noisy, not which questions make them so. The
1st-place E2LM team found out by hand: per question, the slope of its confidence margin
(log p(right answer) − the best log p(wrong answer)) over the released checkpoints,
keeping the questions whose margin rises. This does it for every sample: the margin's
slope on each model, how many models learn the sample, which samples add noise (the
margin does not rise on most models).

The noisy samples are chosen on the released checkpoints alone, as a participant of the
real competition could; the task is then scored with and without them on every
checkpoint of the embedded set (`subset.py`: SQ, RC, CS and the rules, as the scoring
program computes them), and the web-only model's margins are checked against the
answers' lengths (`priors.py`). Multiple-choice tasks get margins; log-likelihood tasks
get each sample's log-likelihood (whose slope says whether the models come to expect the
target); generation tasks cannot be analysed per sample without the task's own metric,
and say so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..formats.manifest import MANIFEST_FILE, read_manifest
from ..formats.plan import Plan, PlannedSample
from ..formats.reference import ReferenceData, read_reference
from ..formats.requests import GENERATE, LOGLIKELIHOOD, ROLLING, unknown_kind
from ..ingestion.derived import option_labels
from ..ingestion.preflight import preflight
from ..limits import Limits
from ..progress import progress_bar
from ..sandboxed.sandbox import private_workdir
from ..scoring.formulas import signal_quality
from .priors import LengthPrior, length_prior, position_prior
from .subset import SubsetScores, subset_scores


@dataclass(frozen=True)
class Released:
    """The checkpoints analysed: each model's released checkpoints in training order, and
    which of them the SQ selection uses."""

    models: list[str]
    checkpoints: dict[str, list[str]]  # model -> checkpoint ids
    picked: dict[str, list[bool]]  # model -> whether SQ uses each


def released(reference: ReferenceData) -> Released:
    selection = reference.scores.signal_quality
    models = [m for m in reference.models if m.id in selection.models]
    ordered = {m.id: sorted((c for c in m.checkpoints if c.role == "released"), key=lambda c: c.iteration)
               for m in models}
    usable = [m for m in models if len(ordered[m.id]) >= 2]
    if not usable:
        raise UserError("the checkpoint set has no model with two released checkpoints: nothing to diagnose")
    return Released([m.id for m in usable], {m.id: [m.checkpoint_id(c) for c in ordered[m.id]] for m in usable},
                    {m.id: [selection.picks(c) for c in ordered[m.id]] for m in usable})


def analysable(plan: Plan) -> str | None:
    """Why the task's samples cannot be analysed one by one, or None."""
    kinds = {r.kind for r in plan.requests}
    for kind in kinds - {LOGLIKELIHOOD, ROLLING, GENERATE}:
        raise unknown_kind(kind)
    if GENERATE in kinds:
        return (f"task '{plan.task_name}' generates text (generate_until): whether a generated answer is right only "
                "the task's own metric knows, so its samples are not analysed one by one (diagnose covers "
                "multiple-choice and log-likelihood tasks)")
    if not plan.samples:
        return f"task '{plan.task_name}' recorded no sample's requests"
    return None


def sample_scores(plan: Plan, responses: list[Any], lengths: dict[int, float]) -> np.ndarray:
    """One number per sample on one checkpoint, higher when the model is more right: the
    margin of the best gold choice over the best other choice (as the metric compares
    them: acc_norm per character of `choice_lengths`, acc_mutual_info less the
    unconditional log-likelihood), else the sample's summed log-likelihood."""
    metric = plan.task_metric.split(",")[0]
    scores = np.empty(len(plan.samples))
    for i, sample in enumerate(plan.samples):
        lls = np.array([_loglikelihood(responses[r]) for r in sample.requests])
        if sample.choices is None or not sample.gold or len(sample.gold) >= sample.choices:
            scores[i] = lls.sum()
            continue
        choice_lls = lls[:sample.choices]
        if metric == "acc_norm":
            choice_lls = choice_lls / [lengths[r] for r in sample.requests[:sample.choices]]
        elif metric == "acc_mutual_info" and len(lls) >= 2 * sample.choices:
            choice_lls = choice_lls - lls[sample.choices:2 * sample.choices]
        gold = np.zeros(sample.choices, dtype=bool)
        gold[sample.gold] = True
        scores[i] = choice_lls[gold].max() - choice_lls[~gold].max()
    return scores


def _loglikelihood(response: Any) -> float:
    return float(response[0] if isinstance(response, (tuple, list)) else response)


def choice_lengths(plan: Plan) -> dict[int, float]:
    """Each choice request's length as lm-eval's acc_norm divides by it: characters of the
    choice without the target delimiter (here taken to be the usual leading space). The
    same for every checkpoint: computed once."""
    lengths = {}
    for sample in plan.samples:
        for r in sample.requests[:sample.choices or 0]:
            continuation = str(json.loads(plan.requests[r].arguments)[1])
            lengths[r] = float(max(1, len(continuation) - continuation.startswith(" ")))
    return lengths


@dataclass(frozen=True)
class SampleSignal:
    """Per-sample signal over the released checkpoints of each model."""

    samples: list[PlannedSample]
    models: list[str]
    slopes: np.ndarray  # (models, samples): the score's least-squares change over the released window
    right: np.ndarray | None  # (2, models, samples): right at the first and the last released checkpoint (MC only)
    noisy: np.ndarray  # (samples,) the score does not rise on most models
    sq_all: float  # SQ (mean over models) of the accuracy, or mean score, of every sample
    sq_kept: float | None  # the same without the noisy samples; None if none would be left

    @property
    def learners(self) -> np.ndarray:
        return (self.slopes > 0).sum(axis=0)


def analyse(plan: Plan, scores: dict[str, np.ndarray], checkpoints: Released) -> SampleSignal:
    """`scores`: checkpoint id -> sample_scores on it."""
    multiple_choice = all(s.choices is not None and s.gold for s in plan.samples)
    slopes, right, per_model = [], [], []
    for model in checkpoints.models:
        matrix = np.stack([scores[c] for c in checkpoints.checkpoints[model]])  # (checkpoints, samples)
        x = np.linspace(0.0, 1.0, len(matrix))
        slopes.append(np.polyfit(x, matrix, 1)[0])
        right.append(matrix[[0, -1]] > 0)
        per_model.append((matrix, np.array(checkpoints.picked[model])))
    slopes_array = np.array(slopes)
    noisy = (slopes_array > 0).sum(axis=0) * 2 <= len(checkpoints.models)

    def sq(keep: np.ndarray) -> float:
        values = [(m[:, keep] > 0).mean(axis=1) if multiple_choice else m[:, keep].mean(axis=1)
                  for m, _ in per_model]
        return float(np.mean([signal_quality(v[picked]).score for v, (_, picked) in zip(values, per_model)]))

    everything = np.ones(len(plan.samples), dtype=bool)
    return SampleSignal(plan.samples, checkpoints.models, slopes_array,
                     np.stack(right, axis=1) if multiple_choice else None, noisy, sq(everything),
                     sq(~noisy) if (~noisy).any() else None)


@dataclass(frozen=True)
class Diagnosis:
    """Everything diagnose found: the per-sample signal on the released window, the task
    scored with and without its noisy samples, and whether answer lengths decide."""

    plan: Plan
    signal: SampleSignal
    n_released: int  # checkpoints the per-sample signal was measured on
    n_checkpoints: int  # checkpoints the scores were computed on
    scores: SubsetScores
    length_prior: LengthPrior | None
    position_prior: str | None  # the kept samples share a gold letter: a drifting preference, not knowledge


def diagnose_submission(source: Path, zoo: Path, limits: Limits) -> Diagnosis:
    """Plan the submission as ingestion does, evaluate it on every checkpoint of the set in
    `zoo`, find its noisy samples on the released ones and score it without them."""
    from ..engine.checkpoints import resolve
    from ..engine.engine import Engine

    manifest, reference = read_manifest(zoo), read_reference(zoo / "reference")
    window = released(reference)
    entries = {e.id: e for e in manifest.checkpoints}
    ids = [m.checkpoint_id(c) for m in reference.models for c in m.checkpoints]
    missing = [c for c in ids if c not in entries]
    if missing:
        raise UserError(f"{zoo / MANIFEST_FILE} lists no checkpoint {missing[0]} of the reference data")
    with private_workdir("diagnose") as tmp:
        planned = preflight(source, Path(tmp), limits)
    plan = planned.plan
    if reason := analysable(plan):
        raise UserError(reason)
    paths = [(c, resolve(entries[c], zoo)) for c in ids]
    findings = planned.check_prompts(paths[0][1], manifest.tokens_per_rule_token)
    engine = Engine(plan.request_keys(), limits.engine, planned.tokenized)
    responses, margins, lengths = {}, {}, choice_lengths(plan)
    for position, answers in progress_bar(engine.run(paths), total=len(paths), desc="checkpoints", unit="ckpt"):
        responses[paths[position][0]] = answers
        margins[paths[position][0]] = sample_scores(plan, answers, lengths)
    signal = analyse(plan, margins, window)
    scores = subset_scores(plan, findings, reference, responses, margins, ~signal.noisy, signal.right is not None)
    compared = reference.scores.scientific_compliance
    by_model = {m.id: [m.checkpoint_id(c) for c in m.checkpoints] for m in reference.models
                if m.id in (compared.science_model, compared.web_model)}
    prior = length_prior(plan, lengths, margins, by_model, compared.web_model)
    n_released = sum(len(window.checkpoints[m]) for m in window.models)
    return Diagnosis(plan, signal, n_released, len(ids), scores, prior,
                     position_prior(plan, ~signal.noisy, option_labels(plan)))
