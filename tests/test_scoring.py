"""The score formulas (docs/scoring.md): published values, hand-computed cases, properties."""

import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2lmc.formats.plan import GroupRecipe, Plan, PlannedRequest, PlannedSample
from e2lmc.formats.rules import SubmissionRules
from e2lmc.formats.series import iterations_to_tokens
from e2lmc.ingestion.derived import chance_level, guessing_spread
from e2lmc.scoring.curves import read_curves, score_curves
from e2lmc.scoring.formulas import (
    FLAT_CURVE,
    check_rules,
    global_score,
    ranking_consistency,
    scientific_compliance,
    signal_quality,
)

from .conftest import PUBLISHED_CURVES

# ------------------------------------------------------------ published values

def test_published_mmluvar_signal_quality_table():
    """The organizers' table: MMLU-var SQ of the arch1 models over 14 checkpoints."""
    scores = {s.model: s.sq for s in score_curves(read_curves(PUBLISHED_CURVES), ["mmluvar"])}
    assert round(scores["dense-500m-arch1"].score, 4) == 0.9354
    assert round(scores["dense-1b-arch1"].score, 4) == 0.9814
    assert round(scores["dense-3b-arch1"].score, 4) == 0.9601
    assert all(s.n_points == 14 for s in scores.values())


def test_iterations_to_tokens_matches_published_gtokens():
    data = json.loads(PUBLISHED_CURVES.read_text())["data"]
    for model in data.values():
        tokens = iterations_to_tokens(model["iteration"]) / 1e9
        np.testing.assert_allclose(tokens, model["gtokens"], rtol=1e-12)


def test_iterations_to_tokens_landmarks():
    # 4000 iterations all at batch 256; the ramp ends at 4,882,812 samples; ~240k ≈ 1T.
    assert iterations_to_tokens(4000) == 4000 * 256 * 4096
    assert iterations_to_tokens(0) == 0
    ramp_end = 1_627_604 * (1 / 256 + 1 / 512 + 1 / 768)
    assert iterations_to_tokens(ramp_end) == pytest.approx(4_882_812 * 4096)
    assert 0.97e12 < iterations_to_tokens(240_000) < 1.0e12


# ------------------------------------------------------------ signal quality

def test_signal_quality_increasing_and_decreasing_lines():
    up = signal_quality(np.arange(8.0))
    assert (up.monotonicity, up.autocorrelation, up.score) == (1.0, pytest.approx(1.0), pytest.approx(1.0))
    down = signal_quality(-np.arange(8.0))  # ranks reversed: 1 - 6Σd²/(n(n²-1)) = -1 -> 0
    assert down.monotonicity == 0.0 and down.score == pytest.approx(0.5)


def test_signal_quality_breaks_ties_by_order():
    # [0, 1, 0, 1]: ordinal ranks [0, 2, 1, 3], Σd² = 2, 1 - 6·2/(4·15) = 0.8
    assert signal_quality([0, 1, 0, 1]).monotonicity == pytest.approx(0.8)


def test_signal_quality_lag_range_is_one_to_n_over_4_minus_1():
    a = np.array([0.1, 0.5, 0.2, 0.6, 0.3, 0.9, 0.4, 0.8, 0.7, 1.0, 0.95, 1.1])  # n=12 -> lags 1, 2
    expected = np.mean([abs(np.corrcoef(a[k:], a[:-k])[0, 1]) for k in (1, 2)])
    assert signal_quality(a).autocorrelation == pytest.approx(expected)


def test_signal_quality_degenerate_curves_are_defined():
    constant = signal_quality([0.3] * 12)
    assert constant.autocorrelation == 0.0 and constant.monotonicity == 1.0 and constant.reasons == (FLAT_CURVE,)
    assert signal_quality([]).score == 0.0
    single = signal_quality([0.4])
    assert single.score == 0.0 and single.reasons
    short = signal_quality([1, 2, 3])  # too short for any lag
    assert short.autocorrelation == 0.0 and short.monotonicity == 1.0
    with_gap = signal_quality([1, 2, math.nan, 4, 5, 6, 7, 8, 9])
    assert with_gap.n_points == 8 and "missing" in " ".join(with_gap.reasons)


finite = st.floats(allow_nan=False, allow_infinity=False)
curves = st.lists(st.one_of(finite, st.sampled_from([0.0, 0.25, 0.5])), max_size=40)


@settings(max_examples=300, deadline=None)
@given(curves)
def test_signal_quality_is_finite_and_bounded(values):
    sq = signal_quality(values)
    for x in (sq.monotonicity, sq.autocorrelation, sq.score):
        assert math.isfinite(x) and 0.0 <= x <= 1.0


# ------------------------------------------------------------ ranking consistency

def test_ranking_consistency_hand_computed():
    final = [1, 2, 3]
    assert ranking_consistency([[1, 2, 3]], final).score == 1.0
    # τ([2,1,3], [1,2,3]) = (2 concordant - 1 discordant) / 3 = 1/3; mean with 1 -> 2/3
    assert ranking_consistency([[1, 2, 3], [2, 1, 3]], final).score == pytest.approx(2 / 3)
    # τ_b with one tie in x: 2 / sqrt(2·3)
    assert ranking_consistency([[1, 1, 2]], final).score == pytest.approx(2 / math.sqrt(6))
    assert ranking_consistency([[3, 2, 1]], final).score == 0.0  # τ = -1, clipped


def test_ranking_consistency_ties_missing_and_empty():
    all_tied = ranking_consistency([[5, 5, 5], [1, 2, 3]], [1, 2, 3])
    assert all_tied.score == pytest.approx(0.5) and all_tied.n_steps == 2
    gap = ranking_consistency([[1, math.nan, 3], [math.nan, math.nan, 1]], [1, 2, 3])
    assert gap.score == 1.0 and gap.n_steps == 1 and gap.reasons
    empty = ranking_consistency(np.empty((0, 3)), [1, 2, 3])
    assert empty.score == 0.0 and empty.n_steps == 0 and empty.reasons
    assert ranking_consistency([], []).score == 0.0  # no model at all


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6).flatmap(
    lambda m: st.tuples(
        st.lists(st.lists(st.one_of(finite, st.just(math.nan)), min_size=m, max_size=m), max_size=8),
        st.lists(st.one_of(finite, st.just(math.nan)), min_size=m, max_size=m),
    )
))
def test_ranking_consistency_is_finite_and_bounded(case):
    steps, final = case
    rc = ranking_consistency(np.array(steps, dtype=float).reshape(len(steps), len(final)), final)
    assert math.isfinite(rc.score) and 0.0 <= rc.score <= 1.0


# ------------------------------------------------------------ scientific compliance

def test_scientific_compliance_hand_computed():
    cs = scientific_compliance([3, 2, 2, 1], [1, 2, 3, 0])  # 2 wins, 1 tie, 1 loss: (2 - 1) / 4, as 2P - 1
    assert (cs.wins, cs.ties, cs.losses, cs.at_chance) == (2, 1, 1, 0)
    assert cs.score == pytest.approx(0.25)
    assert scientific_compliance([1, 1], [2, 2]).score == 0.0
    assert scientific_compliance([2, 2, 2], [1, 1, 1]).score == 1.0
    assert scientific_compliance([1, 1], [1, 1]).score == 0.0  # all ties
    gap = scientific_compliance([2, math.nan, 2], [1, 1, math.nan])
    assert gap.wins == 1 and gap.score == 1.0 and gap.reasons
    assert scientific_compliance([], []).score == 0.0


def test_scientific_compliance_leaves_out_checkpoints_where_both_models_guess():
    """Both models at chance early in training made each such comparison a coin flip;
    with the chance level and a guessing model's spread they are left out, and everything
    else counts as before."""
    spread = (0.25 * 0.75 / 250) ** 0.5  # four choices, 250 samples: a guessing model's standard deviation
    early_science, early_web = [0.26, 0.24, 0.27, 0.23], [0.24, 0.26, 0.25, 0.25]  # both guessing
    late_science, late_web = [0.45, 0.60, 0.75, 0.90, 0.95, 0.97], [0.25, 0.24, 0.26, 0.25, 0.25, 0.24]
    cs = scientific_compliance(early_science + late_science, early_web + late_web, 0.25, spread)
    assert (cs.wins, cs.ties, cs.losses, cs.at_chance) == (6, 0, 0, 4) and cs.score == 1.0
    flipped = scientific_compliance(early_web + late_science, early_science + late_web, 0.25, spread)
    assert flipped.score == cs.score  # the guessing checkpoints' flips no longer move CS
    before = scientific_compliance(early_science + late_science, early_web + late_web)  # no chance level: 2P - 1
    assert (before.wins, before.losses) == (8, 2) and before.score == pytest.approx(0.6)
    # a lead of the web-only model above chance counts against the science model
    above = scientific_compliance([0.40] * 4, [0.43] * 4, 0.25, spread)
    assert (above.losses, above.at_chance, above.score) == (4, 0, 0.0)
    # one comparison left among twenty does not decide CS alone: the denominator is at least N/4
    lone = scientific_compliance([0.40] + [0.25] * 19, [0.25] * 20, 0.25, spread)
    assert (lone.wins, lone.at_chance) == (1, 19) and lone.score == pytest.approx(1 / 5)


def test_a_web_only_lead_within_the_chance_band_still_counts():
    """Each model alone inside the band but apart by more than the noise of a difference:
    the web-only model's lead at 15 of 20 checkpoints is not a guess (an attack on the rule)."""
    spread = (0.25 * 0.75 / 100) ** 0.5  # 100 samples: band ±0.087
    cs = scientific_compliance([0.17] * 15 + [0.60] * 5, [0.33] * 15 + [0.30] * 5, 0.25, spread)
    assert (cs.wins, cs.losses, cs.at_chance) == (5, 15, 0) and cs.score == 0.0


def test_samples_a_guess_cannot_miss_add_no_noise_to_the_band():
    """Padding a task with one-choice samples raises its chance level; the guessing spread
    counts only the samples a guess can miss, so the band does not widen with it."""
    def plan(choices: list[int]) -> Plan:
        requests = [PlannedRequest("loglikelihood", json.dumps(["q", f" c{i}"]), "t", 0) for i in range(4)]
        samples = [PlannedSample("t", j, list(range(k)), k, [0]) for j, k in enumerate(choices)]
        return Plan("t", "acc,none", True, len(samples), requests, samples=samples)

    honest, padded = plan([4] * 10), plan([1] * 90 + [4] * 10)
    assert guessing_spread(honest) == pytest.approx((0.1875 * 10) ** 0.5 / 10)
    assert chance_level(padded) == pytest.approx(0.925)
    assert guessing_spread(padded) == pytest.approx((0.1875 * 10) ** 0.5 / 100)  # the 90 sure ones add nothing
    # the science model misses every real question (0.9), the web-only one gets 3 in 4 (0.975): counted
    assert scientific_compliance([0.90] * 20, [0.975] * 20, 0.925, guessing_spread(padded)).losses == 20
    lower = dataclasses.replace(honest, higher_is_better=False)
    grouped = dataclasses.replace(honest, groups=[GroupRecipe("g", ["t"], None)])
    assert guessing_spread(lower) is None and guessing_spread(grouped) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(finite, finite), max_size=30))
def test_scientific_compliance_is_finite_and_bounded(pairs):
    cs = scientific_compliance([p[0] for p in pairs], [p[1] for p in pairs])
    assert math.isfinite(cs.score) and 0.0 <= cs.score <= 1.0


# ------------------------------------------------------------ global score and validation

def test_global_score_uses_the_weights():
    weights = {"signal_quality": 0.5, "ranking_consistency": 0.1, "scientific_compliance": 0.4}
    parts = {"signal_quality": 0.8, "ranking_consistency": 0.5, "scientific_compliance": 0.25}
    assert global_score(parts, weights) == pytest.approx(0.4 + 0.05 + 0.1)


@pytest.mark.parametrize(
    "n, tokens, leaked, valid",
    [(100, 2048, 0, True), (15_000, 10, 0, True), (99, 10, 0, False), (15_001, 10, 0, False),
     (500, 2049, 0, False), (1000, 10, 50, True), (1000, 10, 51, False), (1000, None, 0, True)],
)
def test_validation_gates(n, tokens, leaked, valid):
    verdict = check_rules(n, tokens, leaked, SubmissionRules())
    assert verdict.valid is valid
    assert len(verdict.problems) == (0 if valid else 1)
    assert verdict.leakage_fraction == pytest.approx(leaked / n)
