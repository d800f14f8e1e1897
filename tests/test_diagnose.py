"""`e2lmc diagnose`: per-sample signal on the released checkpoints, and what it refuses."""

import csv
import dataclasses
import json
import shutil
from html import escape

import numpy as np
import pytest

from e2lmc.cli.main import main
from e2lmc.embedded.world import SCIENCE_TASK
from e2lmc.errors import UserError
from e2lmc.formats.plan import Plan, PlannedRequest, PlannedSample, TaskRecipe
from e2lmc.formats.reference import read_reference
from e2lmc.formats.results import PreflightFindings, read_results
from e2lmc.limits import Limits
from e2lmc.participant.diagnose import Released, analyse, choice_lengths, diagnose_submission
from e2lmc.participant.diagnosis_page import comparability, samples_csv
from e2lmc.participant.priors import length_difference, length_prior, position_prior
from e2lmc.participant.subset import MARGIN_ACCURACY, changes, subset_scores
from e2lmc.scoring.advice import advise
from e2lmc.scoring.evaluation import evaluate


def _plan(n: int, metric: str = "acc,none") -> Plan:
    requests = [PlannedRequest("loglikelihood", json.dumps(["q", f" c{i}"]), "t", i // 4) for i in range(4 * n)]
    samples = [PlannedSample("t", j, [4 * j + k for k in range(4)], 4, [0]) for j in range(n)]
    return Plan("t", metric, True, n, requests, samples=samples)


def test_a_planted_noisy_half_is_found_and_removing_it_raises_sq():
    """Scores of 6 models × 12 checkpoints (one model with 8): half the samples rise on
    every model, the other half wander independently on each model (pure noise)."""
    rng = np.random.default_rng(0)
    n, models = 200, [f"m{i}" for i in range(6)]
    points = {m: 8 if m == "m5" else 12 for m in models}
    checkpoints = Released(models, {m: [f"{m}/{k}" for k in range(points[m])] for m in models},
                           {m: [True] * points[m] for m in models})
    scores = {}
    for m in models:
        rising = np.linspace(-1.0, 1.0, points[m])[:, None] + rng.normal(0, 0.3, (points[m], n // 2))
        wandering = np.cumsum(rng.normal(0, 0.3, (points[m], n // 2)), axis=0)
        for k, row in enumerate(np.hstack([rising, wandering])):
            scores[f"{m}/{k}"] = row
    diagnosis = analyse(_plan(n), scores, checkpoints)
    assert diagnosis.noisy[: n // 2].mean() <= 0.05 and diagnosis.noisy[n // 2:].mean() >= 0.5
    assert diagnosis.sq_kept > diagnosis.sq_all
    rows = list(csv.reader(samples_csv(diagnosis, _plan(n)).splitlines()))
    assert len(rows) == n + 1 and rows[1][2] == "q" and rows[1][5:7] == ["0.000", "1.000"]  # right first / last


def _planted(tiny_zoo, folder):
    """The science sample's first 60 questions twice: once with a gold answer the tiny models
    come to prefer as they train (the question written out, far longer than the wrong
    symbols), once with choices the models cannot tell apart (the same text four times)."""
    shutil.copytree(tiny_zoo[0] / "tasks" / SCIENCE_TASK, folder)
    data = folder / f"{SCIENCE_TASK}.jsonl"
    rows = [json.loads(line) for line in data.read_text().splitlines()[:60]]
    signal = [dict(r, choices=[r["question"] * 2, *r["choices"][1:]], label=0) for r in rows]
    noise = [dict(r, choices=[r["choices"][0]] * 4, label=i % 4) for i, r in enumerate(rows)]
    data.write_text("".join(json.dumps(r) + "\n" for r in signal + noise))
    return folder


def _diagnosed(monkeypatch, argv):
    """`e2lmc diagnose` run as a participant runs it, and the Diagnosis it printed and wrote."""
    import e2lmc.participant.diagnose

    found = []
    diagnose = e2lmc.participant.diagnose.diagnose_submission
    monkeypatch.setattr(e2lmc.participant.diagnose, "diagnose_submission",
                        lambda *args: found.append(diagnose(*args)) or found[-1])
    assert main(["diagnose", *map(str, argv)]) == 0
    return found[0]


def test_diagnose_finds_the_planted_half_writes_its_page_and_scores_the_task_as_run_does(tiny_zoo, tmp_path,
                                                                                         monkeypatch, capsys):
    import e2lmc.participant.diagnose

    analysed = []
    analyse_all = e2lmc.participant.diagnose.analyse

    def recording(plan, scores, checkpoints):
        analysed.extend(c for m in checkpoints.models for c in checkpoints.checkpoints[m])
        return analyse_all(plan, scores, checkpoints)

    monkeypatch.setattr(e2lmc.participant.diagnose, "analyse", recording)
    folder, out = _planted(tiny_zoo, tmp_path / "s"), tmp_path / "out"
    diagnosis = _diagnosed(monkeypatch, [folder, "--preset", "tiny", "--zoo", tiny_zoo[0], "--output", out])
    printed = capsys.readouterr().out
    reference = read_reference(tiny_zoo[0] / "reference")
    roles = {m.checkpoint_id(c): c.role for m in reference.models for c in m.checkpoints}
    # the noisy samples are chosen on the released checkpoints; the scores use every one
    assert len(analysed) == diagnosis.n_released > 0 and {roles[c] for c in analysed} == {"released"}
    assert diagnosis.n_checkpoints == reference.n_checkpoints > diagnosis.n_released
    signal = diagnosis.signal
    assert signal.noisy[:60].sum() == 0 and signal.noisy[60:].all()
    assert signal.sq_kept is not None and signal.sq_kept >= signal.sq_all
    assert "signal: 60 samples rise on most models; noise: 60 do not" in printed

    # every sample: exactly `e2lmc run`'s leaderboard row (the task's own metric, the same formulas)
    assert main(["run", str(folder), "--preset", "tiny", "--zoo", str(tiny_zoo[0]), "--output",
                 str(tmp_path / "run")]) == 0
    capsys.readouterr()
    ran = json.loads((tmp_path / "run" / "scores.json").read_text())
    scores = diagnosis.scores
    assert scores.comparable and scores.metric == "acc,none"
    board = scores.whole.leaderboard
    assert {k: ran[k] for k in ("score", "signal_quality", "ranking_consistency", "scientific_compliance")} == {
        "score": pytest.approx(board.score, abs=5e-7), "signal_quality": pytest.approx(board.signal_quality, abs=5e-7),
        "ranking_consistency": pytest.approx(board.ranking_consistency, abs=5e-7),
        "scientific_compliance": pytest.approx(board.scientific_compliance, abs=5e-7)}  # scores.json: 6 places
    # without the noisy half: 60 samples, below the rules' minimum of 100, and said so
    assert scores.kept is not None and scores.kept.leaderboard.n_samples == 60 and not scores.kept.verdict.valid
    assert any("would be invalid" in s and "60 samples; the rules allow 100" in s for s in changes(scores))

    # samples.csv: every sample with its question; diagnosis.html: a page like the report
    rows = list(csv.reader((out / "samples.csv").read_text().splitlines()))
    assert rows[0][:8] == ["task", "doc_id", "question", "models_learning", "mean_slope", "right_first", "right_last",
                           "noisy"]
    assert len(rows) == 121 and sum(r[7] == "True" for r in rows[1:]) == 60
    questions = [json.loads(line)["question"] for line in (folder / f"{SCIENCE_TASK}.jsonl").read_text().splitlines()]
    assert [r[2] for r in rows[1:]] == questions  # each sample's question beside its doc id
    page = (out / "diagnosis.html").read_text()
    assert page.count("<h1>") == 1 and "<title>E2LM diagnosis — " in page and "<h2>What dropping the noisy" in page
    assert "Per-sample signal" in page and "<script" not in page and "http" not in page
    assert 'alt="Histogram of the 120 samples' in page and escape(questions[0]) in page


def test_generation_tasks_are_said_not_to_be_analysed(tiny_zoo, tmp_path):
    folder = shutil.copytree(tiny_zoo[0] / "tasks" / SCIENCE_TASK, tmp_path / "g")
    yaml_path = folder / f"{SCIENCE_TASK}.yaml"
    text = yaml_path.read_text().replace("output_type: multiple_choice", "output_type: generate_until")
    yaml_path.write_text(text.replace('doc_to_choice: "{{choices}}"\n', "").replace(
        'doc_to_target: "{{label}}"', 'doc_to_target: "{{choices[label]}}"').split("metric_list:")[0]
        + "generation_kwargs:\n  until: ['\\n']\n  max_gen_toks: 4\nmetric_list:\n  - metric: exact_match\n")
    (folder / "metadata.yaml").write_text(f"task_name: {SCIENCE_TASK}\ntask_metric: exact_match,none\n")
    with pytest.raises(UserError, match=r"generates text \(generate_until\).*covers multiple-choice and "
                                         r"log-likelihood tasks"):
        diagnose_submission(folder, tiny_zoo[0], Limits())


def test_a_length_prior_is_told_from_the_web_only_models_margins():
    """Gold answers of varied length: margins that follow the length difference are a prior
    the web-only model has without any science; margins that do not, are not."""
    rng = np.random.default_rng(1)
    n = 150
    requests, samples = [], []
    for j in range(n):
        words = [" x" * int(rng.integers(1, 6)) for _ in range(4)]
        samples.append(PlannedSample("t", j, list(range(len(requests), len(requests) + 4)), 4, [0]))
        requests += [PlannedRequest("loglikelihood", json.dumps(["q", w]), "t", j) for w in words]
    plan = Plan("t", "acc,none", True, n, requests, samples=samples)
    lengths = choice_lengths(plan)
    difference = length_difference(plan, lengths)
    checkpoints = {"web": ["web/1", "web/2"], "science": ["science/1", "science/2"]}
    following = {c: -difference + rng.normal(0, 0.5, n) for ids in checkpoints.values() for c in ids}
    prior = length_prior(plan, lengths, following, checkpoints, "web")
    assert prior is not None and prior.decides and prior.correlations["web"] < -0.8
    assert "prefer shorter answers" in prior.sentence() and "acc_norm" in prior.sentence()
    unrelated = {c: rng.normal(0, 1, n) for ids in checkpoints.values() for c in ids}
    assert not length_prior(plan, lengths, unrelated, checkpoints, "web").decides
    same_length = dataclasses.replace(plan, requests=[dataclasses.replace(r, arguments=json.dumps(["q", " x"]))
                                                      for r in requests])
    assert length_prior(same_length, choice_lengths(same_length), following, checkpoints, "web") is None


def test_a_task_scored_by_its_own_code_gets_a_stand_in_said_not_comparable(tiny_zoo):
    """The submission's own metric runs only in ingestion's sandbox: diagnose scores the
    margins' accuracy instead, and says the numbers are not the leaderboard's."""
    reference = read_reference(tiny_zoo[0] / "reference")
    plan = dataclasses.replace(_plan(120, "likelihood_difference,none"),
                               recipes=[TaskRecipe("t", "multiple_choice", custom=["process_results"])])
    ids = [m.checkpoint_id(c) for m in reference.models for c in m.checkpoints]
    rng = np.random.default_rng(2)
    margins = {c: rng.normal(0, 1, 120) for c in ids}
    keep = np.arange(120) < 110
    scores = subset_scores(plan, PreflightFindings(), reference, {}, margins, keep, multiple_choice=True)
    assert not scores.comparable and scores.metric == MARGIN_ACCURACY
    assert "not comparable with the leaderboard's" in comparability(scores)
    assert scores.kept is not None and scores.kept.leaderboard.n_samples == 110 and scores.kept.verdict.valid
    chance = scores.whole.results.chance_level
    assert chance == pytest.approx(0.25)  # the stand-in is an accuracy: CS still leaves guessing out


def test_the_kept_signal_scores_on_the_run_what_diagnose_predicted(tiny_zoo, tmp_path, capsys, monkeypatch):
    zoo = tiny_zoo[0]
    diagnosis = _diagnosed(monkeypatch, [zoo / "tasks" / SCIENCE_TASK, "--preset", "tiny", "--zoo", zoo, "--output",
                                         tmp_path / "d", "--keep-signal", tmp_path / "kept"])
    kept = diagnosis.scores.kept
    assert kept is not None and 100 <= kept.leaderboard.n_samples < len(diagnosis.plan.samples)
    assert f"planned again, it asks exactly the {int(kept.leaderboard.n_samples)} kept samples" in \
        capsys.readouterr().out
    assert main(["run", str(tmp_path / "kept"), "--preset", "tiny", "--zoo", str(zoo), "--output",
                 str(tmp_path / "run")]) == 0
    ran = json.loads((tmp_path / "run" / "scores.json").read_text())
    board = kept.leaderboard
    assert (ran["score"], ran["signal_quality"], ran["ranking_consistency"], ran["scientific_compliance"],
            ran["n_samples"]) == pytest.approx((board.score, board.signal_quality, board.ranking_consistency,
                                                board.scientific_compliance, board.n_samples), abs=5e-7)  # 6 places


@pytest.mark.parametrize("half", ["never", "noise"])
def test_real_runs_are_diagnosed_from_their_trend(tiny_zoo, tmp_path, capsys, half):
    """The planted task's two kinds of question, 120 of each kind, run on the tiny set:
    choices the models cannot tell apart give chance on every model, at chance and flat; a
    gold answer twice the question long, which a summed likelihood never picks, gives 0:
    flat, but far from chance, so not at chance."""
    folder = shutil.copytree(tiny_zoo[0] / "tasks" / SCIENCE_TASK, tmp_path / "s")
    data = folder / f"{SCIENCE_TASK}.jsonl"
    rows = [json.loads(line) for line in data.read_text().splitlines()[:120]]
    if half == "never":
        rows = [dict(r, choices=[r["question"] * 2, *r["choices"][1:]], label=0) for r in rows]
    else:
        rows = [dict(r, choices=[r["choices"][0]] * 4, label=i % 4) for i, r in enumerate(rows)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["run", str(folder), "--preset", "tiny", "--zoo", str(tiny_zoo[0]), "--output",
                 str(tmp_path / "run")]) == 0
    capsys.readouterr()
    kinds = {d.kind for d in advise(evaluate(read_results(tmp_path / "run" / "res"),
                                             read_reference(tiny_zoo[0] / "reference")))}
    assert kinds >= {"at_chance", "flat"} if half == "noise" else "flat" in kinds and "at_chance" not in kinds, kinds


def test_kept_samples_that_share_a_gold_letter_are_said_to_follow_a_drifting_preference():
    plan = _plan(200)
    for j, sample in enumerate(plan.samples):
        sample.gold = [j % 4]  # the task: 50 of each letter
    skewed = np.array([j % 4 == 3 or j < 20 for j in range(200)])  # every D, and a few others
    said = position_prior(plan, skewed, ["A", "B", "C", "D"])
    assert said is not None and "lean to D (50 of 65, against 25% of the task's)" in said
    assert "always answering D would score 0.77" in said
    balanced = np.arange(200) < 120
    assert position_prior(plan, balanced, ["A", "B", "C", "D"]) is None
    assert position_prior(plan, skewed, None) is None  # not lettered: a text's position means nothing
