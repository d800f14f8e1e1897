"""`e2lmc diagnose SUBMISSION`: which samples carry signal, on released checkpoints only.

A low SQ says the task's curves are noisy, not which questions make them so. The
1st-place E2LM team found out by hand: per question, the slope of its confidence margin
(log p(right answer) − the best log p(wrong answer)) over the released checkpoints,
keeping the questions whose margin rises. This does it for every sample: the margin's
slope on each model, how many models learn the sample, which samples add noise (the
margin does not rise on most models) and the SQ the task would get without them.

Only released checkpoints are evaluated, so nothing here says anything about hidden ones.
Multiple-choice tasks get margins; log-likelihood tasks get each sample's log-likelihood
(whose slope says whether the models come to expect the target); generation tasks cannot
be analysed per sample without the task's own metric, and say so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..formats.manifest import MANIFEST_FILE, read_manifest
from ..formats.plan import Plan, PlannedSample
from ..formats.reference import ReferenceData, read_reference
from ..formats.requests import GENERATE, LOGLIKELIHOOD, ROLLING, unknown_kind
from ..ingestion.preflight import preflight
from ..limits import Limits
from ..progress import progress_bar
from ..sandboxed.sandbox import private_workdir
from ..scoring.formulas import signal_quality
from ..scoring.html import csv_text, html_table, page, png_image

SAMPLES_FILE = "samples.csv"
PAGE_FILE = "diagnosis.html"


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


def samples_csv(signal: SampleSignal) -> str:
    """One row per sample: where it is, how many models learn it, its mean slope, the
    fraction of models right at the first and last released checkpoint, noisy or not,
    then its slope on each model."""
    header = ["task", "doc_id", "models_learning", "mean_slope", "right_first", "right_last", "noisy"]
    rows: list[list[object]] = [header + [f"slope_{m}" for m in signal.models]]
    for j, sample in enumerate(signal.samples):
        first = last = ""
        if signal.right is not None:
            first, last = (f"{signal.right[k, :, j].mean():.3f}" for k in (0, 1))
        rows.append([sample.task, sample.doc_id, int(signal.learners[j]), f"{signal.slopes[:, j].mean():.4g}",
                     first, last, bool(signal.noisy[j])] + [f"{v:.4g}" for v in signal.slopes[:, j]])
    return csv_text(rows)


def summary(signal: SampleSignal, task_metric: str, n_checkpoints: int) -> str:
    """The terminal's account: counts, the SQ with and without the noisy samples, the
    noisiest and the best samples."""
    n, noisy = len(signal.samples), int(signal.noisy.sum())
    what = ("accuracy from the margins" if signal.right is not None
            else "mean log-likelihood per sample, a stand-in for the task's metric")
    lines = [f"{n:,} samples on {n_checkpoints} released checkpoints of {len(signal.models)} models "
             f"(score per sample: {'margin of the right answer' if signal.right is not None else 'log-likelihood'})",
             f"signal: {n - noisy:,} samples rise on most models; noise: {noisy:,} do not",
             f"SQ ({what}, {task_metric}'s selection of checkpoints): every sample {signal.sq_all:.4f}"
             + (f", without the noisy ones {signal.sq_kept:.4f} (chosen on these same checkpoints: expect less "
                "on others)" if signal.sq_kept is not None else " (every sample is noisy)")]
    order = np.argsort(signal.slopes.mean(axis=0), kind="stable")
    for title, picked in (("noisiest", order[:10]), ("clearest", order[::-1][:10])):
        lines.append(f"{title} samples (task, doc id: models learning of {len(signal.models)}, mean slope):")
        lines += [f"  {signal.samples[j].task}, {signal.samples[j].doc_id}: {int(signal.learners[j])}, "
                  f"{signal.slopes[:, j].mean():+.3g}" for j in picked]
    return "\n".join(lines)


def section(signal: SampleSignal, text: str) -> str:
    """The report's section on per-sample signal: the slopes' histogram, the summary, the
    samples that add noise."""
    import matplotlib.pyplot as plt

    mean_slopes = signal.slopes.mean(axis=0)
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.hist([mean_slopes[~signal.noisy], mean_slopes[signal.noisy]], bins=40, stacked=True,
            color=["tab:green", "tab:red"], label=["signal (rises on most models)", "noise"])
    ax.axvline(0, color="0.3", linewidth=1)
    ax.set_xlabel("mean slope of the sample's score over the released window")
    ax.set_ylabel("samples")
    ax.legend(fontsize=8, frameon=False)
    alt = (f"Histogram of the {len(mean_slopes)} samples' mean slopes: {int((~signal.noisy).sum())} signal "
           f"samples in green, {int(signal.noisy.sum())} noisy ones in red.")
    order = np.argsort(mean_slopes, kind="stable")[:25]
    rows = [[escape(signal.samples[j].task), str(signal.samples[j].doc_id),
             f"{int(signal.learners[j])} of {len(signal.models)}", f"{mean_slopes[j]:+.3g}"]
            for j in order if signal.noisy[j]]
    return "\n".join([
        "<h2>Per-sample signal (released checkpoints)</h2>",
        f"<pre>{escape(text)}</pre>",
        png_image(fig, alt),
        "<p>The samples that add the most noise (all of them are in samples.csv):</p>",
        html_table(["task", "doc id", "models learning it", "mean slope"], rows, left=2) if rows else "<p>none</p>",
    ])


def write_outputs(signal: SampleSignal, plan: Plan, n_checkpoints: int, output: Path) -> list[Path]:
    """samples.csv and diagnosis.html (a page with the per-sample section)."""
    output.mkdir(parents=True, exist_ok=True)
    csv_path, page_path = output / SAMPLES_FILE, output / PAGE_FILE
    csv_path.write_text(samples_csv(signal), encoding="utf-8")
    text = summary(signal, plan.task_metric, n_checkpoints)
    page_path.write_text(page(f"Per-sample signal — {plan.task_name}", section(signal, text)), encoding="utf-8")
    return [csv_path, page_path]


def diagnose_submission(source: Path, zoo: Path, limits: Limits) -> tuple[Plan, SampleSignal, int]:
    """Plan the submission as ingestion does, evaluate it on the released checkpoints of
    the set in `zoo` (never a hidden one) and analyse every sample."""
    from ..engine.checkpoints import resolve
    from ..engine.engine import Engine

    manifest, reference = read_manifest(zoo), read_reference(zoo / "reference")
    checkpoints = released(reference)
    entries = {e.id: e for e in manifest.checkpoints}
    ids = [c for m in checkpoints.models for c in checkpoints.checkpoints[m]]
    missing = [c for c in ids if c not in entries]
    if missing:
        raise UserError(f"{zoo / MANIFEST_FILE} lists no checkpoint {missing[0]} of the reference data")
    with private_workdir("diagnose") as tmp:
        planned = preflight(source, Path(tmp), limits)
    plan = planned.plan
    if reason := analysable(plan):
        raise UserError(reason)
    paths = [(c, resolve(entries[c], zoo)) for c in ids]
    planned.check_prompts(paths[0][1], manifest.tokens_per_rule_token)
    engine = Engine(plan.request_keys(), limits.engine, planned.tokenized)
    scores, lengths = {}, choice_lengths(plan)
    bar = progress_bar(engine.run(paths), total=len(paths), desc="released checkpoints", unit="ckpt")
    for position, responses in bar:
        scores[paths[position][0]] = sample_scores(plan, responses, lengths)
    return plan, analyse(plan, scores, checkpoints), len(paths)
