"""The report's diagnoses: each sentence appears for the curves it describes, and only then."""

import numpy as np
import pytest

from e2lmc.formats.reference import read_reference
from e2lmc.formats.results import read_results
from e2lmc.scoring.advice import advise, metrics_sq
from e2lmc.scoring.evaluation import evaluate
from e2lmc.scoring.report import render, token_unit

from .conftest import SAMPLE_REFERENCE, SAMPLE_RESULTS


def _evaluation(value_of, chance=0.25, n_samples=1200):
    """The sample results with every checkpoint's value replaced by value_of(model, iteration)."""
    reference, results = read_reference(SAMPLE_REFERENCE), read_results(SAMPLE_RESULTS)
    model_of = {m.checkpoint_id(c): (m, c) for m in reference.models for c in m.checkpoints}
    for result in results.checkpoints:
        model, checkpoint = model_of[result.id]
        result.metrics["acc,none"] = value_of(model, checkpoint.iteration)
    results.chance_level, results.n_samples = chance, n_samples
    return evaluate(results, reference)


def _kinds(ev):
    return [d.kind for d in advise(ev)]


def rising(model, iteration):
    return 0.3 + 0.4 * iteration / 240_000 + (0.05 if model.mixture == "science" else 0.0)


def test_rising_curves_with_a_science_lead_are_fine():
    assert _kinds(_evaluation(rising)) == ["fine"]


def test_curves_at_chance_are_said_to_be_at_chance_and_flat():
    noise = np.random.default_rng(0)
    ev = _evaluation(lambda m, it: 0.25 + float(noise.normal(0, 0.004)))
    sentences = {d.kind: d.sentence for d in advise(ev)}
    assert "at_chance" in sentences and "Every model stays at chance level (0.25" in sentences["at_chance"]
    assert "flat" in sentences
    # far above chance but just as flat: flat, not at chance
    ev = _evaluation(lambda m, it: 0.6 + float(noise.normal(0, 0.004)))
    assert "at_chance" not in _kinds(ev) and "flat" in _kinds(ev)


def test_a_curve_that_starts_below_chance_and_rises_is_not_at_chance():
    """Its mean over the window is chance; its trend and its end are not."""
    def below_then_above(model, iteration):  # 0.15 at the first released checkpoint, 0.35 at the last
        return 0.15 + 0.2 * (iteration - 2_000) / 54_000 + (0.02 if model.mixture == "science" else 0.0)

    ev = _evaluation(below_then_above)
    released = [p.value for p in ev.curves["dense-500m-arch2"] if p.checkpoint.role == "released"]
    assert abs(float(np.mean(released)) - 0.25) < 0.025  # what the former rule read as "at chance"
    assert "at_chance" not in _kinds(ev) and "falling" not in _kinds(ev)
    # the same rise, ending at chance: still rising, so not at chance either; only a flat end at chance is
    ev = _evaluation(lambda m, it: below_then_above(m, it) - 0.1)
    assert "at_chance" not in _kinds(ev)


def test_a_fall_within_sampling_noise_is_not_called_falling():
    ev = _evaluation(lambda m, it: rising(m, it) if m.id != "dense-1b-arch2" else 0.6 - it / 20_000_000)
    assert "falling" not in _kinds(ev)  # rho = -1, but 0.003 over the window, with noise +-0.025


def test_a_falling_model_is_named():
    ev = _evaluation(lambda m, it: rising(m, it) if m.id != "dense-1b-arch2" else 0.7 - it / 400_000)
    [falling] = [d for d in advise(ev) if d.kind == "falling"]
    assert "dense-1b-arch2, ρ = -1.00" in falling.sentence and "dense-1b-arch1" not in falling.sentence


def test_a_science_model_behind_the_web_only_one_is_said():
    ev = _evaluation(lambda m, it: rising(m, it) - (0.1 if m.id == "dense-500m-arch1" else 0.0))
    [said] = [d for d in advise(ev) if d.kind == "not_scientific"]
    assert "dense-500m-arch1" in said.sentence and "higher at 0 of 40 shared checkpoints" in said.sentence
    assert "answers' lengths" in said.sentence and "e2lmc diagnose" in said.sentence  # acc: a summed likelihood
    ev.results.task_metric = "acc_norm,none"  # per character: no length prior to suspect
    [said] = [d for d in advise(ev) if d.kind == "not_scientific"]
    assert "ask about scientific knowledge itself" in said.sentence and "lengths" not in said.sentence


def test_no_chance_level_no_chance_sentence():
    ev = _evaluation(lambda m, it: 0.25, chance=None)
    assert "at_chance" not in _kinds(ev) and "flat" in _kinds(ev)  # constant: flat whatever the metric


def test_the_report_shows_the_diagnoses_and_describes_its_figure():
    html = render(_evaluation(lambda m, it: 0.25))
    assert "<h2>What to improve</h2>" in html and "stays at chance level" in html
    assert 'alt="Line chart of acc,none against training tokens for 6 models over the released checkpoints; ' \
           'a dotted line marks the chance level 0.25.' in html
    assert 'alt="figure"' not in html


@pytest.mark.parametrize(("largest", "unit"), [(977e9, "billions"), (2.5e5, "thousands"), (4e6, "millions"),
                                                (500, "")])
def test_the_x_axis_unit_reads_well(largest, unit):
    scale, name = token_unit(largest)
    assert name == unit and 1 <= largest / scale < 1000


def test_a_metric_of_the_task_with_more_signal_is_suggested():
    """acc wanders at noise level while the task's acc_norm rises: the advice names acc_norm,
    and the report shows every metric's SQ on the released checkpoints."""
    noise = np.random.default_rng(3)
    ev = _evaluation(lambda m, it: 0.3 + float(noise.normal(0, 0.01)))
    for result in ev.results.checkpoints:
        result.metrics["acc_norm,none"] = 0.3 + 1e-6 * int(result.id.rsplit("_", 1)[1])
    [said] = [d for d in advise(ev) if d.kind == "other_metric"]
    assert "The task also computes acc_norm,none" in said.sentence and "task_metric: acc_norm,none" in said.sentence
    assert "<code>acc_norm,none</code>" in render(ev)
    for result in ev.results.checkpoints:  # falling: monotonicity 0, half the SQ of the same curve rising
        result.metrics["acc_norm,none"] = 0.6 - 1e-6 * int(result.id.rsplit("_", 1)[1])
    assert metrics_sq(ev)["acc_norm,none"] == pytest.approx(0.5)
    ev.results.lower_is_better = ["acc_norm,none"]  # a loss that falls: all signal
    assert metrics_sq(ev)["acc_norm,none"] == pytest.approx(1.0)


def test_a_lettered_task_at_chance_is_told_to_score_the_answers_words():
    noise = np.random.default_rng(0)
    ev = _evaluation(lambda m, it: 0.25 + float(noise.normal(0, 0.004)))
    ev.results.lettered = True
    [said] = [d for d in advise(ev) if d.kind == "at_chance"]
    assert "asks for a letter after listed options" in said.sentence and "Questions the models can learn" not in \
        said.sentence
    behind = _evaluation(lambda m, it: rising(m, it) - (0.1 if m.id == "dense-500m-arch1" else 0.0))
    behind.results.lettered = True  # one-letter choices: no length to suspect
    [said] = [d for d in advise(behind) if d.kind == "not_scientific"]
    assert "lengths" not in said.sentence


def test_only_metric_names_every_released_checkpoint_has_reach_the_report():
    """A score child chooses its metrics' names: one seen on hidden checkpoints, or on some
    released ones only, could spell what a hidden checkpoint's responses were."""
    ev = _evaluation(rising)
    roles = {m.checkpoint_id(c): c.role for m in ev.reference.models for c in m.checkpoints}
    for i, result in enumerate(ev.results.checkpoints):
        result.metrics["acc_norm,none"] = result.metrics["acc,none"]
        result.metrics[f"acc,leak_{i}"] = 0.5  # a name of its own on every checkpoint
        if roles[result.id] != "released":
            result.metrics["acc,hidden_only"] = 0.5
    assert list(metrics_sq(ev)) == ["acc,none", "acc_norm,none"]
    assert "leak_" not in render(ev) and "hidden_only" not in render(ev)
