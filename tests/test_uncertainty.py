"""The score's spread across builds of the embedded set: printed with the row and in the
report where it was measured, and the advice on two runs that differ by less."""

import json
import sys
from dataclasses import astuple, replace

import pytest

from e2lmc.formats.reference import read_reference
from e2lmc.formats.results import read_results, write_results
from e2lmc.formats.series import EMBEDDED_PHASE, embedded_description
from e2lmc.scoring.advice import advise
from e2lmc.scoring.evaluation import evaluate
from e2lmc.scoring.program import SCORES_FILE, summary, write_scores
from e2lmc.scoring.report import render
from e2lmc.scoring.uncertainty import DEFAULT_SET_SPREAD, PreviousRun, build_spread, previous_run

from .conftest import REPO, SAMPLE_REFERENCE, SAMPLE_RESULTS

sys.path.insert(0, str(REPO / "scripts"))
from noise_table import COLUMNS, spreads  # noqa: E402

# zoo_sweep.py's reports of the builds DEFAULT_SET_SPREAD was measured on (docs/zoo.md, *The noise floor*)
DEFAULT_SET_BUILDS = REPO / "benchmarks" / "results" / "noise_floor"


def _evaluation(lead: float, description: str = embedded_description("default"), phase: str = EMBEDDED_PHASE,
                digest: str = "this-task"):
    """The sample results, rising curves with the science models `lead` ahead, scored as a
    run on the set `description` names."""
    reference, results = read_reference(SAMPLE_REFERENCE), read_results(SAMPLE_RESULTS)
    reference.phase, reference.description = phase, description
    model_of = {m.checkpoint_id(c): (m, c) for m in reference.models for c in m.checkpoints}
    for result in results.checkpoints:
        model, checkpoint = model_of[result.id]
        result.metrics["acc,none"] = 0.3 + 0.4 * checkpoint.iteration / 240_000 + (
            lead if model.mixture == "science" else 0.0)
    results.chance_level, results.n_samples, results.plan_digest = 0.25, 1200, digest
    return evaluate(results, reference)


def _previous(score: float, digest: str = "an-earlier-version", valid: float = 1.0, on=None) -> PreviousRun:
    """An earlier run, by default on the checkpoints of `_evaluation`'s."""
    checkpoints = on if on is not None else frozenset(c.id for c in read_results(SAMPLE_RESULTS).checkpoints)
    return PreviousRun({"score": score, "valid": valid}, digest, checkpoints)


def test_the_spread_is_known_only_for_the_set_it_was_measured_on():
    assert build_spread(_evaluation(0.05).reference) == DEFAULT_SET_SPREAD
    assert build_spread(_evaluation(0.05, description=embedded_description("tiny")).reference) is None
    assert build_spread(_evaluation(0.05, phase="final").reference) is None  # a phase of the real competition


def test_the_printed_spread_is_the_one_measured_on_the_kept_builds():
    runs = [json.loads(path.read_text()) for path in sorted(DEFAULT_SET_BUILDS.glob("seed*.json"))]
    _, pooled = spreads(runs)
    assert astuple(DEFAULT_SET_SPREAD) == (*(round(pooled[column], 3) for column in COLUMNS), len(runs))


def test_the_printed_row_and_the_report_carry_the_spread(tmp_path):
    ev = _evaluation(0.05)
    lines = summary(ev, tmp_path)
    spread = DEFAULT_SET_SPREAD
    assert (f"on this set: score {ev.leaderboard.score:.2f} ± {spread.score:.2f} across builds of this set (SQ ± "
            f"{spread.signal_quality:.2f}, RC ± {spread.ranking_consistency:.2f}, CS ± "
            f"{spread.scientific_compliance:.2f}; zoo.md, The noise floor)") in lines
    html = render(ev)
    assert f"± {spread.score:.3f} across builds of this set" in html and "one standard deviation across builds" in html
    other = _evaluation(0.05, phase="final")
    assert not any("across builds" in line for line in summary(other, tmp_path))
    assert "across builds" not in render(other)


def test_two_runs_closer_than_the_spread_are_called_noise_and_farther_ones_not(tmp_path):
    ev = _evaluation(0.05)
    now = ev.leaderboard.score
    close, far = _previous(now - DEFAULT_SET_SPREAD.score / 2), _previous(now - 2 * DEFAULT_SET_SPREAD.score)
    [said] = [a.sentence for a in advise(ev, close) if a.kind == "compared"]
    before = close.scores["score"]
    assert said.startswith(f"This version of the task scores {now:.3f} and the previous run {before:.3f}: "
                           f"the change (+{now - before:.3f}) is smaller than the spread of scores "
                           f"across builds of this set (± {DEFAULT_SET_SPREAD.score:.3f}), so on the embedded set it "
                           "may be noise rather than an improvement")
    assert said in summary(ev, tmp_path, close) and said in render(ev, close)
    [said] = [a.sentence for a in advise(ev, far) if a.kind == "compared"]
    assert "is larger than the spread of scores across builds of this set" in said
    # nothing to compare: the same task again, an invalid run, another set, or a set whose spread is unknown
    assert "compared" not in [a.kind for a in advise(ev, _previous(now - 0.01, on=frozenset({"tiny/iter_0000060"})))]
    assert "compared" not in [a.kind for a in advise(ev, _previous(now - 0.01, digest="this-task"))]
    assert "compared" not in [a.kind for a in advise(ev, _previous(0.0, valid=0.0))]
    rebuilt = replace(_previous(now - 2 * DEFAULT_SET_SPREAD.score), weights_digest="another-build")
    assert "compared" not in [a.kind for a in advise(ev, rebuilt)]  # the same checkpoint ids, other weights
    assert "compared" not in [a.kind for a in advise(_evaluation(0.05, phase="final"), close)]


def test_the_previous_run_is_read_from_the_output_folder(tmp_path):
    ev = _evaluation(0.05)
    assert previous_run(tmp_path, SCORES_FILE) is None  # a first run
    write_scores(ev.leaderboard, tmp_path)
    write_results(ev.results, tmp_path / "res")
    previous = previous_run(tmp_path, SCORES_FILE)
    assert previous is not None and previous.plan_digest == "this-task"
    assert previous.scores["score"] == pytest.approx(ev.leaderboard.score, abs=1e-6)
    (tmp_path / SCORES_FILE).write_text(json.dumps(["not", "a", "row"]))
    assert previous_run(tmp_path, SCORES_FILE) is None
    # whatever a stale or hostile folder holds, it is no previous run, and nothing fails
    for hostile in ("{broken", "[" * 100_000 + "]" * 100_000, '{"score": 0.5, "x": 1' + "0" * 400 + "}",
                    '{"score": NaN, "valid": 1}'):
        (tmp_path / SCORES_FILE).write_text(hostile)
        assert previous_run(tmp_path, SCORES_FILE) is None
    write_scores(ev.leaderboard, tmp_path)
    (tmp_path / "res" / "ingestion_results.json").write_text(json.dumps({"version": 0}))
    assert previous_run(tmp_path, SCORES_FILE) is None
