"""What diagnose prints and writes: the terminal's account, samples.csv and diagnosis.html.

The page is built like the evaluation report (`scoring/report.py`): a title, the scores
first, then the figure and the tables, each sample with its question so that a reader
can see what to drop or rewrite without looking the doc id up.
"""

from __future__ import annotations

import re
from html import escape
from pathlib import Path

import numpy as np

from ..formats.plan import Plan
from ..ingestion.derived import qa_text
from ..scoring.html import csv_text, html_table, page, png_image
from .diagnose import Diagnosis, SampleSignal
from .subset import SubsetScores, changes

SAMPLES_FILE = "samples.csv"
PAGE_FILE = "diagnosis.html"
LISTED = 10  # samples per list on the terminal (the page lists 25; samples.csv all)
QUESTION_CHARACTERS = 90


def question(plan: Plan, index: int) -> str:
    """A sample's question on one line, as the judge would read it, shortened."""
    text = qa_text(plan, plan.samples[index]).split("\n")[0]
    text = re.sub(r"^(Question|Text):\s*", "", text)
    text = " ".join(text.split())
    return text if len(text) <= QUESTION_CHARACTERS else text[:QUESTION_CHARACTERS - 1] + "…"


def noisiest(signal: SampleSignal) -> np.ndarray:
    """The noisy samples, the most falling first."""
    order = np.argsort(signal.slopes.mean(axis=0), kind="stable")
    return order[signal.noisy[order]]


def clearest(signal: SampleSignal) -> np.ndarray:
    """The samples that rise on most models, the steepest first; for multiple choice only
    those some model answers right at the end of the window (a margin that rises but stays
    below zero never turns into a right answer)."""
    order = np.argsort(-signal.slopes.mean(axis=0), kind="stable")
    keep = ~signal.noisy[order]
    if signal.right is not None:
        keep &= signal.right[1][:, order].any(axis=0)
    return order[keep]


def samples_csv(signal: SampleSignal, plan: Plan) -> str:
    """One row per sample: where it is, its question, how many models learn it, its mean
    slope, the fraction of models right at the first and last released checkpoint, noisy
    or not, then its slope on each model."""
    header = ["task", "doc_id", "question", "models_learning", "mean_slope", "right_first", "right_last", "noisy"]
    rows: list[list[object]] = [header + [f"slope_{m}" for m in signal.models]]
    for j, sample in enumerate(signal.samples):
        first = last = ""
        if signal.right is not None:
            first, last = (f"{signal.right[k, :, j].mean():.3f}" for k in (0, 1))
        rows.append([sample.task, sample.doc_id, question(plan, j), int(signal.learners[j]),
                     f"{signal.slopes[:, j].mean():.4g}", first, last, bool(signal.noisy[j])]
                    + [f"{v:.4g}" for v in signal.slopes[:, j]])
    return csv_text(rows)


def _scores_row(name: str, scores: SubsetScores, kept: bool) -> str:
    evaluation = scores.kept if kept else scores.whole
    if evaluation is None:
        return f"  {name:<24} —"
    board = evaluation.leaderboard
    return (f"  {name:<24} {board.score:7.4f} {board.signal_quality:7.4f} {board.ranking_consistency:7.4f} "
            f"{board.scientific_compliance:7.4f} {'yes' if board.valid else 'no':>6} {int(board.n_samples):>8}")


def comparability(scores: SubsetScores) -> str:
    if scores.comparable:
        return (f"values: the task's metric {scores.metric}, computed by lm-eval from the responses as ingestion "
                "does: the first row is what `e2lmc run` gives on this set")
    return (f"values: {scores.metric}, a stand-in — the task's metric is computed by its own code, which runs only "
            "inside ingestion's sandbox: these scores are not comparable with the leaderboard's (e2lmc run gives "
            "those)")


def summary(diagnosis: Diagnosis) -> str:
    """The terminal's account: counts, the scores with and without the noisy samples, what
    dropping them costs, the answer-length check, the noisiest and the clearest samples."""
    signal, scores, plan = diagnosis.signal, diagnosis.scores, diagnosis.plan
    n, noisy = len(signal.samples), int(signal.noisy.sum())
    lines = [f"{n:,} samples; per-sample signal on {diagnosis.n_released} released checkpoints of "
             f"{len(signal.models)} models (score per sample: "
             f"{'margin of the right answer' if signal.right is not None else 'log-likelihood'})",
             f"signal: {n - noisy:,} samples rise on most models; noise: {noisy:,} do not",
             f"scores on all {diagnosis.n_checkpoints} checkpoints ({comparability(scores)}):",
             f"  {'':<24} {'score':>7} {'SQ':>7} {'RC':>7} {'CS':>7} {'valid':>6} {'samples':>8}",
             _scores_row("every sample", scores, kept=False),
             _scores_row(f"without the {noisy:,} noisy", scores, kept=True),
             "  (the noisy samples are chosen on the released checkpoints: expect less on others)"]
    lines += [f"  note: {sentence}" for sentence in changes(scores)]
    if diagnosis.position_prior:
        lines.append("answer positions: " + diagnosis.position_prior)
    if diagnosis.length_prior is not None and diagnosis.length_prior.decides:
        lines.append("answer lengths: " + diagnosis.length_prior.sentence())
    for title, picked in (("noisiest", noisiest(signal)), ("clearest", clearest(signal))):
        lines.append(f"{title} samples (task, doc id: models learning of {len(signal.models)}, mean slope, question):")
        lines += [f"  {signal.samples[j].task}, {signal.samples[j].doc_id}: {int(signal.learners[j])}, "
                  f"{signal.slopes[:, j].mean():+.3g}, {question(plan, j)}" for j in picked[:LISTED]] or ["  none"]
    return "\n".join(lines)


def _histogram(signal: SampleSignal) -> str:
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
    return png_image(fig, alt)


def _scores_table(scores: SubsetScores, noisy: int) -> str:
    rows = []
    for name, evaluation in (("every sample", scores.whole), (f"without the {noisy} noisy samples", scores.kept)):
        if evaluation is None:
            rows.append([escape(name)] + ["—"] * 6)
            continue
        board = evaluation.leaderboard
        rows.append([escape(name), f"{board.score:.4f}", f"{board.signal_quality:.4f}",
                     f"{board.ranking_consistency:.4f}", f"{board.scientific_compliance:.4f}",
                     '<span class="ok">yes</span>' if board.valid else '<span class="bad">no</span>',
                     str(int(board.n_samples))])
    return html_table(["", "score", "SQ", "RC", "CS", "valid", "samples"], rows)


def _samples_table(diagnosis: Diagnosis, picked: np.ndarray) -> str:
    signal = diagnosis.signal
    rows = [[escape(signal.samples[j].task), str(signal.samples[j].doc_id), escape(question(diagnosis.plan, j)),
             f"{int(signal.learners[j])} of {len(signal.models)}", f"{signal.slopes[:, j].mean():+.3g}"]
            for j in picked[:25]]
    if not rows:
        return "<p>none</p>"
    return html_table(["task", "doc id", "question", "models learning it", "mean slope"], rows, left=3)


def render(diagnosis: Diagnosis) -> str:
    """diagnosis.html: the scores with and without the noisy samples, the answer-length
    check, the slopes' histogram, the noisiest and the clearest samples."""
    signal, scores, plan = diagnosis.signal, diagnosis.scores, diagnosis.plan
    noisy = int(signal.noisy.sum())
    parts = [f"<h1>E2LM diagnosis — {escape(plan.task_name)}</h1>",
             f'<p class="note">metric <code>{escape(plan.task_metric)}</code> · {len(signal.samples)} samples · '
             f"per-sample signal on {diagnosis.n_released} released checkpoints of {len(signal.models)} models · "
             f"scores on all {diagnosis.n_checkpoints} checkpoints of the embedded set</p>",
             "<h2>What dropping the noisy samples would do</h2>",
             _scores_table(scores, noisy),
             f'<p class="note">{escape(comparability(scores))}. The noisy samples are chosen on the released '
             "checkpoints: expect less on others.</p>"]
    parts += [f'<p class="bad">{escape(sentence[0].upper() + sentence[1:])}.</p>' for sentence in changes(scores)
              + ([diagnosis.position_prior] if diagnosis.position_prior else [])]
    if diagnosis.length_prior is not None:
        prior = diagnosis.length_prior
        parts += ["<h2>Answer lengths</h2>",
                  f'<p class="bad">{escape(prior.sentence()[0].upper() + prior.sentence()[1:])}</p>' if prior.decides
                  else '<p class="ok">The answers\' lengths do not decide the web-only model\'s margins ('
                       + escape(", ".join(f"{m}: r = {r:+.2f}" for m, r in prior.correlations.items())) + ").</p>"]
    parts += ["<h2>Per-sample signal (released checkpoints)</h2>", _histogram(signal),
              f"<p>{len(signal.samples) - noisy} samples rise on most models; {noisy} do not (noise).</p>",
              "<h2>The samples that add the most noise</h2>", _samples_table(diagnosis, noisiest(signal)),
              "<h2>The clearest samples</h2>", _samples_table(diagnosis, clearest(signal)),
              "<h2>How this is computed</h2>",
              "<p>Per sample, the score is the margin of the right answer over the best wrong one (as the task's "
              "metric compares them), or its log-likelihood; its slope over each model's released checkpoints says "
              "whether the model learns it. A sample is noise when it does not rise on most models. Every sample is "
              "in samples.csv beside this page.</p>"]
    return page(f"E2LM diagnosis — {plan.task_name}", "\n".join(parts))


def write_outputs(diagnosis: Diagnosis, output: Path) -> list[Path]:
    """samples.csv and diagnosis.html in `output`."""
    output.mkdir(parents=True, exist_ok=True)
    csv_path, page_path = output / SAMPLES_FILE, output / PAGE_FILE
    csv_path.write_text(samples_csv(diagnosis.signal, diagnosis.plan), encoding="utf-8")
    page_path.write_text(render(diagnosis), encoding="utf-8")
    return [csv_path, page_path]
