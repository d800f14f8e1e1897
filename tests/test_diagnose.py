"""`e2lmc diagnose`: per-sample signal on the released checkpoints, and what it refuses."""

import json
import shutil

import numpy as np
import pytest

from e2lmc.cli.main import main
from e2lmc.embedded.world import SCIENCE_TASK
from e2lmc.errors import UserError
from e2lmc.formats.plan import Plan, PlannedRequest, PlannedSample
from e2lmc.formats.reference import read_reference
from e2lmc.limits import Limits
from e2lmc.participant.diagnose import Released, analyse, diagnose_submission, samples_csv


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
    rows = samples_csv(diagnosis).splitlines()
    assert len(rows) == n + 1 and rows[1].split(",")[4:6] == ["0.000", "1.000"]  # right first / last, rising half


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


def test_diagnose_on_the_tiny_set_finds_the_planted_half_on_released_checkpoints_only(tiny_zoo, tmp_path,
                                                                                         monkeypatch):
    import e2lmc.engine.engine

    evaluated = []
    run = e2lmc.engine.engine.Engine.run

    def recording(self, checkpoints):
        evaluated.extend(cid for cid, _ in checkpoints)
        return run(self, checkpoints)

    monkeypatch.setattr(e2lmc.engine.engine.Engine, "run", recording)
    plan, diagnosis, n_checkpoints = diagnose_submission(_planted(tiny_zoo, tmp_path / "s"), tiny_zoo[0], Limits())
    roles = {m.checkpoint_id(c): c.role for m in read_reference(tiny_zoo[0] / "reference").models
             for c in m.checkpoints}
    assert len(evaluated) == n_checkpoints > 0 and {roles[c] for c in evaluated} == {"released"}
    assert diagnosis.noisy[:60].sum() == 0 and diagnosis.noisy[60:].all()
    assert diagnosis.sq_kept is not None and diagnosis.sq_kept >= diagnosis.sq_all


def test_diagnose_command_writes_the_table_and_the_page(tiny_zoo, tmp_path, capsys):
    folder = _planted(tiny_zoo, tmp_path / "s")
    out = tmp_path / "out"
    assert main(["diagnose", str(folder), "--preset", "tiny", "--zoo", str(tiny_zoo[0]), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "signal: 60 samples rise on most models; noise: 60 do not" in printed
    rows = (out / "samples.csv").read_text().splitlines()
    assert rows[0].startswith("task,doc_id,models_learning,mean_slope,right_first,right_last,noisy,slope_")
    assert len(rows) == 121 and sum(r.split(",")[6] == "True" for r in rows[1:]) == 60
    page = (out / "diagnosis.html").read_text()
    assert "Per-sample signal" in page and "<script" not in page and "http" not in page
    assert 'alt="Histogram of the 120 samples' in page


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
