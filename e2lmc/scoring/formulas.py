"""The E2LM score formulas, pure numpy/scipy: SQ, RC, CS, the global score and the rules' verdict.

docs/scoring.md gives each formula and where it comes from (SQ is the organizers'
published one, reproduced to their table; RC and CS are ours, since theirs are private).
Every function here returns finite numbers in [0, 1] for any input: degenerate
cases (constant curves, too few checkpoints, missing values) give a defined value
and a human-readable reason, never NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np

from ..formats.rules import SubmissionRules

# --------------------------------------------------------------------------- SQ


@dataclass(frozen=True)
class SignalQuality:
    """Signal quality of one curve: the mean of monotonicity and autocorrelation."""

    monotonicity: float
    autocorrelation: float
    n_points: int
    reasons: tuple[str, ...] = ()

    @property
    def score(self) -> float:
        return (self.monotonicity + self.autocorrelation) / 2


def _finite(values: Sequence[float] | np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Drop missing (non-finite) values, saying how many were dropped."""
    a = np.asarray(values, dtype=float).ravel()
    keep = np.isfinite(a)
    reasons = []
    if not keep.all():
        reasons.append(f"{int((~keep).sum())} missing value(s) ignored")
    return a[keep], reasons


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation, 0 when either side is constant (no correlation)."""
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt(np.sum(xc * xc) * np.sum(yc * yc))
    if not np.isfinite(denom) or denom == 0:
        return 0.0
    r = float(np.sum(xc * yc) / denom)
    return float(np.clip(r, -1.0, 1.0)) if np.isfinite(r) else 0.0


FLAT_CURVE = ("flat curve: autocorrelation 0, monotonicity 1 by the published formula (ties broken by order), "
              "so SQ 0.5 although the curve carries no signal")


def signal_quality(values: Sequence[float] | np.ndarray) -> SignalQuality:
    """The organizers' signal quality of a curve given in training order.

    monotonicity = max(0, 1 - 6·Σd²/(n(n²-1))) with d = position rank minus the
    ordinal rank argsort(argsort(a)); autocorrelation = mean |Pearson| over lags
    1 … n//4 - 1. Values must already be oriented higher-is-better.
    """
    a, reasons = _finite(values)
    n = len(a)

    if n < 2:
        reasons.append(f"{n} checkpoint(s): monotonicity needs at least 2, counted as 0")
        monotonicity = 0.0
    else:
        d = np.arange(n) - np.argsort(np.argsort(a, kind="stable"), kind="stable")
        monotonicity = max(0.0, 1.0 - 6.0 * float(np.sum(d * d)) / (n * (n * n - 1)))

    lags = range(1, n // 4)
    if len(lags) == 0:
        reasons.append(
            f"{n} checkpoint(s): autocorrelation needs at least 8 (lags 1 … n//4-1), counted as 0"
        )
        autocorrelation = 0.0
    else:
        # Pearson is scale-invariant; scaling keeps huge values from overflowing.
        scaled = a / np.max(np.abs(a)) if np.any(a) else a
        autocorrelation = float(
            np.mean([abs(_pearson(scaled[lag:], scaled[: n - lag])) for lag in lags])
        )
        if np.all(a == a[0]):
            reasons.append(FLAT_CURVE)
    return SignalQuality(monotonicity, autocorrelation, n, tuple(reasons))


# --------------------------------------------------------------------------- RC


@dataclass(frozen=True)
class RankingConsistency:
    """Mean Kendall τ_b between each step's model ranking and the final one."""

    score: float
    n_steps: int
    n_models: int
    reasons: tuple[str, ...] = ()


def _kendall_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's τ_b; 0 where it is undefined (all ties on one side)."""
    from scipy import stats  # half a second to import: only where a ranking is scored

    if len(x) < 2:
        return 0.0
    tau = stats.kendalltau(x, y, variant="b").statistic
    return float(tau) if np.isfinite(tau) else 0.0


def ranking_consistency(
    steps: Sequence[Sequence[float]] | np.ndarray, final: Sequence[float] | np.ndarray
) -> RankingConsistency:
    """RC = max(0, mean over steps t of τ_b(models' scores at t, at the final checkpoint)).

    `steps` has one row per checkpoint step and one column per model, in the same
    model order as `final`. Models missing at a step (non-finite) are left out of that
    step; a step with fewer than two models left is skipped.
    """
    final_arr = np.asarray(final, dtype=float).ravel()
    if len(final_arr) == 0:
        return RankingConsistency(0.0, 0, 0, ("no model to rank: counted as 0",))
    rows = np.asarray(steps, dtype=float).reshape(-1, len(final_arr))
    reasons: list[str] = []
    taus: list[float] = []
    skipped = 0
    tied = 0
    for row in rows:
        ok = np.isfinite(row) & np.isfinite(final_arr)
        if ok.sum() < 2:
            skipped += 1
            continue
        tau = _kendall_tau_b(row[ok], final_arr[ok])
        if np.all(row[ok] == row[ok][0]) or np.all(final_arr[ok] == final_arr[ok][0]):
            tied += 1
        taus.append(tau)
    if skipped:
        reasons.append(f"{skipped} step(s) with fewer than 2 models skipped")
    if tied:
        reasons.append(f"{tied} step(s) where all models tie: τ counted as 0")
    if not taus:
        reasons.append("no step to compare with the final checkpoint: counted as 0")
        return RankingConsistency(0.0, 0, len(final_arr), tuple(reasons))
    mean_tau = float(np.mean(taus))
    if mean_tau < 0:
        reasons.append("rankings anti-correlate with the final ranking: clipped to 0")
    return RankingConsistency(max(0.0, mean_tau), len(taus), len(final_arr), tuple(reasons))


# --------------------------------------------------------------------------- CS


NOISE_SIGMAS = 2.0  # an accuracy within this many standard errors of chance is indistinguishable from it
MIN_COUNTED_SHARE = 0.25  # CS's denominator is at least this share of the shared checkpoints


@dataclass(frozen=True)
class ScientificCompliance:
    """How consistently the science model beats the same-size web-only model, at the
    checkpoints where they are not both indistinguishable from chance (`at_chance`)."""

    score: float
    wins: int
    ties: int
    losses: int
    reasons: tuple[str, ...] = ()
    at_chance: int = 0  # shared checkpoints left out: both models within the chance band


def scientific_compliance(
    science: Sequence[float] | np.ndarray, web: Sequence[float] | np.ndarray,
    chance: float | None = None, guessing_spread: float | None = None,
) -> ScientificCompliance:
    """CS = max(0, (W − L) / max(W + T + L, ¼·N)) over the N checkpoints both models share
    (aligned arrays): W, T and L count the comparisons the science model wins, ties and
    loses. With the task's `chance` level and the standard deviation of a guessing model's
    accuracy (`guessing_spread`, ingestion/derived.py), a checkpoint where both models lie
    within NOISE_SIGMAS of it of chance, and within NOISE_SIGMAS·√2 of it of each other, is
    left out: early in training both often guess, and each such comparison was a coin flip
    that moved CS (docs/scoring.md). The floor of the denominator keeps a few comparisons
    left among many from deciding CS alone. Without them it is the former rule, 2P − 1 with
    ties counting ½."""
    s = np.asarray(science, dtype=float).ravel()
    w = np.asarray(web, dtype=float).ravel()
    if len(s) != len(w):
        raise ValueError(f"science and web curves differ in length ({len(s)} vs {len(w)})")
    ok = np.isfinite(s) & np.isfinite(w)
    reasons = []
    if not ok.all():
        reasons.append(f"{int((~ok).sum())} checkpoint(s) missing on one side ignored")
    s, w = s[ok], w[ok]
    guessing = np.zeros(len(s), dtype=bool)
    if chance is not None and guessing_spread is not None and guessing_spread > 0:
        band = NOISE_SIGMAS * guessing_spread
        guessing = (np.abs(s - chance) <= band) & (np.abs(w - chance) <= band) & (np.abs(s - w) <= band * math.sqrt(2))
    counted_s, counted_w = s[~guessing], w[~guessing]
    counts = ScientificCompliance(0.0, int(np.sum(counted_s > counted_w)), int(np.sum(counted_s == counted_w)),
                                  int(np.sum(counted_s < counted_w)), at_chance=int(guessing.sum()))
    if len(s) == 0:
        reasons.append("no shared checkpoint: counted as 0")
    elif counts.wins <= counts.losses:
        reasons.append("the science model does not beat the web-only model more often than the reverse")
    denominator = max(len(counted_s), MIN_COUNTED_SHARE * len(s), 1)
    return replace(counts, score=max(0.0, (counts.wins - counts.losses) / denominator), reasons=tuple(reasons))


# ------------------------------------------------------------------- global score


def global_score(components: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """Weighted sum of the components named in `weights` (the competition's: 0.5·SQ + 0.1·RC + 0.4·CS)."""
    return float(sum(w * components[name] for name, w in weights.items()))


# ------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class RulesVerdict:
    """Whether the submission keeps the rules; each broken rule is one sentence in `problems`."""

    valid: bool
    leakage_fraction: float
    problems: tuple[str, ...] = field(default_factory=tuple)


def check_rules(
    n_samples: int, max_prompt_tokens: int | None, leakage_count: int, rules: SubmissionRules,
    alignment_rate: float | None = None, alignment_threshold: float | None = None,
    refused_code: Sequence[str] = (),
) -> RulesVerdict:
    """Apply the submission rules; each broken rule is one sentence in `problems`. The
    alignment rule applies only where the judge was asked and the phase sets a threshold;
    `refused_code` names the submission's functions that computed the metric where the
    phase refuses them (`custom_metric_code: refuse`)."""
    problems = []
    if refused_code:
        problems.append(f"the task's metric is computed by the submission's own code ({', '.join(refused_code[:3])}), "
                        "which this phase refuses: use lm-eval's own metrics, aggregations and filters, named in the "
                        "task's YAML")
    if alignment_rate is not None and alignment_threshold is not None and alignment_rate < alignment_threshold:
        problems.append(f"the alignment judge accepted {alignment_rate:.0%} of the judged samples as scientific; "
                        f"at least {alignment_threshold:.0%} is required")
    if problem := rules.sample_count_problem(n_samples):
        problems.append(f"the task {problem}")
    if max_prompt_tokens is not None and (problem := rules.prompt_length_problem(max_prompt_tokens)):
        problems.append(f"the longest prompt {problem}")
    leakage_fraction = leakage_count / n_samples if n_samples > 0 else 0.0
    if leakage_fraction > rules.max_leakage_fraction:
        problems.append(
            f"{leakage_count} of {n_samples} samples ({leakage_fraction:.1%}) contain their gold "
            f"answer in the prompt; at most {rules.max_leakage_fraction:.1%} is allowed"
        )
    return RulesVerdict(not problems, leakage_fraction, tuple(problems))
