"""Whether a prior, not knowledge, decides a multiple-choice task's margins.

Answer lengths: a log-likelihood summed over an answer's tokens is lower for a longer
answer, whatever the model knows. When a task's gold answers are systematically shorter
(or longer) than its distractors, every model — the web-only one included — "prefers" the
gold from the start, and scientific compliance compares two models' length priors instead
of their science: CS 0 with a task of only scientific questions. The sign is in the data:
across samples, the web-only model's margin follows the gold-minus-distractor length.

Answer positions: on a lettered task ("Answer: B") a model's preference for one letter
drifts as it trains, and every sample whose gold is that letter "rises" with it. Samples
kept for rising then share a letter far more than the task's samples do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..formats.plan import Plan

PRIOR_CORRELATION = 0.5  # |Pearson r| of margin against length difference from which the lengths decide
POSITION_P = 1e-3  # a chi-square test's p below which kept samples' gold positions differ from the task's


@dataclass(frozen=True)
class LengthPrior:
    """Pearson's r, across samples, between each model's mean margin over its checkpoints
    and the sample's gold answer length minus its distractors' mean length (characters)."""

    correlations: dict[str, float]  # model id -> r
    web_model: str

    @property
    def decides(self) -> bool:
        return abs(self.correlations.get(self.web_model, 0.0)) >= PRIOR_CORRELATION

    def sentence(self) -> str:
        r = self.correlations[self.web_model]
        others = "; ".join(f"{m}: r = {v:+.2f}" for m, v in self.correlations.items() if m != self.web_model)
        shorter = "shorter" if r < 0 else "longer"
        return (f"the answers' lengths decide much of the margins: on the web-only model ({self.web_model}), which "
                f"saw no science text, a sample's margin correlates at r = {r:+.2f} with its gold answer's length "
                f"minus the distractors' mean ({others}). The models prefer {shorter} answers whatever they know: "
                "where that preference picks the gold, the web-only model scores without science and CS says "
                "little about the domain. Make the choices of similar length, or score per character (acc_norm).")


def length_difference(plan: Plan, lengths: dict[int, float]) -> np.ndarray | None:
    """Per sample, the gold choices' mean length minus the other choices' mean; None unless
    every sample is multiple choice with a distractor."""
    differences = []
    for sample in plan.samples:
        if sample.choices is None or not sample.gold or len(set(sample.gold)) >= sample.choices:
            return None
        choice = [lengths[r] for r in sample.requests[:sample.choices]]
        gold = set(sample.gold)
        differences.append(np.mean([choice[i] for i in gold])
                           - np.mean([c for i, c in enumerate(choice) if i not in gold]))
    return np.array(differences)


def length_prior(plan: Plan, lengths: dict[int, float], margins: dict[str, np.ndarray],
                 checkpoints: dict[str, list[str]], web_model: str) -> LengthPrior | None:
    """`margins`: checkpoint id -> per-sample margin; `checkpoints`: model id -> its
    checkpoint ids (the web-only model's among them). None where it cannot be told: not
    multiple choice, answers of one length, or a constant margin."""
    difference = length_difference(plan, lengths)
    if difference is None or np.ptp(difference) == 0 or web_model not in checkpoints:
        return None
    correlations = {}
    for model, ids in checkpoints.items():
        mean_margin = np.mean([margins[c] for c in ids], axis=0)
        if np.ptp(mean_margin) > 0:
            correlations[model] = float(np.corrcoef(difference, mean_margin)[0, 1])
    return LengthPrior(correlations, web_model) if web_model in correlations else None


def position_prior(plan: Plan, keep: np.ndarray, labels: list[str] | None) -> str | None:
    """One sentence when the samples `keep` marks have their (single) gold at some
    positions far more often than the task's samples (χ² test, p < POSITION_P); `labels`:
    the choices' labels of a lettered task (None: not lettered, not checked)."""
    from scipy.stats import chisquare

    single = [(s.gold[0], bool(k)) for s, k in zip(plan.samples, keep, strict=True) if s.gold and len(s.gold) == 1]
    if labels is None or not single or not any(k for _, k in single):
        return None
    width = len(labels)
    everything = np.bincount([g for g, _ in single], minlength=width)[:width].astype(float)
    kept = np.bincount([g for g, k in single if k], minlength=width)[:width].astype(float)
    expected = everything / everything.sum() * kept.sum()
    seen = expected > 0
    if seen.sum() < 2 or chisquare(kept[seen], expected[seen]).pvalue >= POSITION_P:
        return None
    top = int(np.argmax(kept - expected))
    return (f"the kept samples' gold answers lean to {labels[top]} ({int(kept[top])} of {int(kept.sum())}, "
            f"against {everything[top] / everything.sum():.0%} of the task's): much of their rise is the models' "
            f"drifting preference for answering {labels[top]}, not knowledge; always answering {labels[top]} would "
            f"score {kept[top] / kept.sum():.2f} on them")
