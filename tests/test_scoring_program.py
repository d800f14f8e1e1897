"""The scoring program end to end, as Codabench runs it and through the CLI."""

import json
import math
import subprocess
import sys

import pytest

from e2lmc.cli.main import main
from e2lmc.formats.reference import read_reference
from e2lmc.formats.results import read_results, write_results
from e2lmc.scoring.evaluation import evaluate
from e2lmc.scoring.formulas import global_score, signal_quality

from .conftest import REPO, SAMPLE_REFERENCE

COLUMNS = {"score", "signal_quality", "ranking_consistency", "scientific_compliance", "monotonicity",
           "autocorrelation", "valid", "leakage", "n_samples", "alignment", "custom_code"}


def _score(res_dir, out_dir, *extra):
    return main(["score", "--res", str(res_dir), "--ref", str(SAMPLE_REFERENCE), "--output", str(out_dir), *extra])


def test_valid_submission_end_to_end(res_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert _score(res_dir, out) == 0
    scores = json.loads((out / "scores.json").read_text())
    assert set(scores) == COLUMNS
    assert all(isinstance(v, float) and math.isfinite(v) for v in scores.values())
    assert scores["valid"] == 1.0 and scores["n_samples"] == 1200

    # The columns follow from the results: recompute SQ from the raw values.
    reference, results = read_reference(SAMPLE_REFERENCE), read_results(res_dir)
    values = {c.id: c.metrics["acc,none"] for c in results.checkpoints}
    sel = reference.scores.signal_quality
    per_model = [
        signal_quality([values[m.checkpoint_id(c)] for c in sorted(m.checkpoints, key=lambda c: c.iteration)
                        if sel.picks(c)]).score
        for m in reference.models if m.id in sel.models
    ]
    assert scores["signal_quality"] == pytest.approx(sum(per_model) / len(per_model), abs=1e-6)
    assert scores["score"] == pytest.approx(global_score(scores, reference.weights), abs=1e-5)
    assert scores["leakage"] == pytest.approx(2 / 1200, abs=1e-6)

    row = capsys.readouterr().out
    assert "signal_quality" in row and f"{scores['score']:.4f}" in row


def test_report_is_self_contained_and_hides_hidden_values(res_dir, tmp_path):
    out = tmp_path / "out"
    _score(res_dir, out)
    html = (out / "detailed_results.html").read_text()
    assert html.count('src="data:image/png;base64,') == 1
    assert "<script" not in html and "http://" not in html and "https://" not in html
    for section in ("Global score", "Validation", "Signal quality", "Ranking consistency", "Scientific compliance"):
        assert section in html
    reference, results = read_reference(SAMPLE_REFERENCE), read_results(res_dir)
    roles = {m.checkpoint_id(c): c.role for m in reference.models for c in m.checkpoints}
    hidden = [c.metrics["acc,none"] for c in results.checkpoints if roles[c.id] != "released"]
    assert hidden and not any(f"{v:.4f}" in html or f"{v:.3f}" in html for v in hidden)


def test_report_shows_released_curves_only(res_dir, tmp_path):
    from e2lmc.scoring.advice import visible_points

    ev = evaluate(read_results(res_dir), read_reference(SAMPLE_REFERENCE))
    shown = [p for model in ev.curves for p in visible_points(ev, model)]
    assert shown and all(p.checkpoint.role == "released" for p in shown)
    assert not visible_points(ev, "dense-500m-arch1-web")  # the web-only model is hidden

    # the CSV beside the report (and inside it, as a download) holds exactly those values
    out = tmp_path / "out"
    _score(res_dir, out)
    rows = (out / "released_values.csv").read_text().splitlines()
    assert rows[0] == 'model,checkpoint,iteration,tokens,role,"acc,none"' and len(rows) == 1 + len(shown)
    assert {r.split(",")[4] for r in rows[1:]} == {"released"}
    html = (out / "detailed_results.html").read_text()
    import base64
    import re

    link = re.search(r'download="released_values.csv" href="data:text/csv;base64,([^"]+)"', html)
    assert base64.b64decode(link.group(1)).decode() == (out / "released_values.csv").read_text()


def test_leaky_submission_is_invalid_with_score_zero(res_dir, tmp_path, capsys):
    results = read_results(res_dir)
    results.validation.leakage_count = 300
    write_results(results, res_dir)
    out = tmp_path / "out"
    assert _score(res_dir, out) == 0
    scores = json.loads((out / "scores.json").read_text())
    assert scores["valid"] == 0.0 and scores["score"] == 0.0 and scores["leakage"] == 0.25
    assert scores["signal_quality"] > 0  # the components are still reported
    assert "300 of 1200 samples" in capsys.readouterr().out
    html = (out / "detailed_results.html").read_text()
    assert "invalid" in html and "300 of 1200 samples (25.0%)" in html and "Which gas, like oxygen" in html


def test_failed_ingestion_exit_code_fails_scoring(res_dir, tmp_path, capsys):
    (res_dir / "metadata").write_text("exitCode: null\ningestionExitCode: 1\ningestionElapsedTime: 12.5\n")
    assert _score(res_dir, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: The ingestion step failed (exit code 1") and "\n" not in err
    assert not (tmp_path / "out" / "scores.json").exists()


@pytest.mark.parametrize("code", [0, 1])
def test_a_submission_that_ran_its_own_program_is_refused(res_dir, tmp_path, capsys, code):
    """Codabench runs a submission's metadata.yaml command beside the ingestion program, with the
    same /app/output: it could have replaced the results. Its exit code, even 0, refuses them."""
    (res_dir / "metadata").write_text(f"exitCode: {code}\ningestionExitCode: 0\n")
    assert _score(res_dir, tmp_path / "out") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("invalid submission: The submission ran a program of its own") and "\n" not in err
    assert str(code) not in err.replace("metadata.yaml", "")
    assert not (tmp_path / "out" / "scores.json").exists()


def test_successful_worker_metadata_is_accepted(res_dir, tmp_path):
    (res_dir / "metadata").write_text("exitCode: null\ningestionExitCode: 0\n")
    assert _score(res_dir, tmp_path / "out") == 0


def test_missing_results_fail_with_one_sentence(tmp_path, capsys):
    (tmp_path / "res").mkdir()
    assert _score(tmp_path / "res", tmp_path / "out") == 2
    assert "produced no results to score" in capsys.readouterr().err


def test_partial_results_fail_unless_allowed(res_dir, tmp_path, capsys):
    results = read_results(res_dir)
    del results.checkpoints[-5:]
    results.checkpoints[0].error = "could not load"
    results.complete = False
    write_results(results, res_dir)
    assert _score(res_dir, tmp_path / "a") == 2
    assert "incomplete" in capsys.readouterr().err

    results.complete = True  # claims completeness but lacks checkpoints: still refused
    write_results(results, res_dir)
    assert _score(res_dir, tmp_path / "b") == 2
    err = capsys.readouterr().err
    assert "6 of 280 checkpoints have no value" in err

    assert _score(res_dir, tmp_path / "c", "--allow-partial") == 0
    scores = json.loads((tmp_path / "c" / "scores.json").read_text())
    assert all(math.isfinite(v) for v in scores.values())


def test_missing_metric_lists_the_produced_keys(res_dir, tmp_path, capsys):
    results = read_results(res_dir)
    results.task_metric = "acc_norm,none"
    write_results(results, res_dir)
    assert _score(res_dir, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "no metric 'acc_norm,none'" in err and "acc,none, acc_stderr,none" in err


def test_lower_is_better_metric_gives_the_same_scores(res_dir):
    reference = read_reference(SAMPLE_REFERENCE)
    results = read_results(res_dir)
    flipped = read_results(res_dir)
    flipped.higher_is_better = False
    for c in flipped.checkpoints:
        c.metrics["acc,none"] = -c.metrics["acc,none"]
    assert evaluate(flipped, reference).leaderboard == evaluate(results, reference).leaderboard


def test_scores_are_deterministic(res_dir, tmp_path):
    _score(res_dir, tmp_path / "a")
    _score(res_dir, tmp_path / "b")
    for name in ("scores.json", "detailed_results.html"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


@pytest.mark.slow
def test_codabench_entry_point_runs_the_scoring_step(res_dir, tmp_path):
    """scoring_program/score.py, the file Codabench's metadata.yaml runs."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scoring_program" / "score.py"),
         "--res", str(res_dir), "--ref", str(SAMPLE_REFERENCE), "--output", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "scores.json").read_text())["valid"] == 1.0


def test_degenerate_inputs_give_defined_scores_and_reasons(res_dir, tmp_path):
    results = read_results(res_dir)
    for c in results.checkpoints:
        if c.id.startswith("dense-1b-arch1/"):
            c.metrics["acc,none"] = 0.25  # a constant curve
    del results.checkpoints[:3]  # and three missing released checkpoints of dense-500m-arch1
    write_results(results, res_dir)
    out = tmp_path / "out"
    assert _score(res_dir, out, "--allow-partial") == 0
    scores = json.loads((out / "scores.json").read_text())
    assert all(math.isfinite(v) and 0 <= v <= 1 for k, v in scores.items() if k not in ("n_samples", "alignment"))
    assert scores["alignment"] == -1.0  # the judge is disabled in the sample reference: not checked
    html = (out / "detailed_results.html").read_text()
    assert "Partial results: 3 of 280 checkpoints" in html
    assert "flat curve: autocorrelation 0" in html
    assert "1 missing value(s) ignored" in html  # iter 4000 of dense-500m-arch1 is in the SQ selection
    assert "3 checkpoint(s) missing on one side ignored" in html  # CS compares all shared iterations


def test_the_prompt_rule_counts_real_tokens_where_the_checkpoints_tokenizer_is_small(res_dir, tmp_path):
    """3,000 tokens of the embedded set's tokenizer are 924 of a real model's at its scale
    of 3.25: valid there, invalid where the checkpoints' own tokenizer counted them."""
    results = read_results(res_dir)
    results.validation.max_prompt_tokens = 3000
    results.validation.tokens_per_rule_token = 3.25
    write_results(results, res_dir)
    assert _score(res_dir, tmp_path / "small") == 0
    assert json.loads((tmp_path / "small" / "scores.json").read_text())["valid"] == 1.0
    html = (tmp_path / "small" / "detailed_results.html").read_text()
    assert "924" in html and "counted as 3,000 tokens of the checkpoints' tokenizer / 3.25" in html
    results.validation.tokens_per_rule_token = 1.0
    write_results(results, res_dir)
    assert _score(res_dir, tmp_path / "real") == 0
    assert json.loads((tmp_path / "real" / "scores.json").read_text())["valid"] == 0.0


def test_the_report_loads_nothing_from_outside_even_with_a_hostile_task_name(res_dir, tmp_path):
    """The check scripts/render_report.py applies before rendering in Chromium: every src
    and href is a data: URI or an anchor; a task name carrying markup stays text."""
    from e2lmc.scoring.html import outside_resources

    results = read_results(res_dir)
    results.task_name = '<img src="https://evil.example/x.png"><script>alert(1)</script>'
    write_results(results, res_dir)
    assert _score(res_dir, tmp_path / "out") == 0
    html = (tmp_path / "out" / "detailed_results.html").read_text()
    assert outside_resources(html) == []
    assert outside_resources('<p><img src="https://evil.example/x.png"></p>') == ["https://evil.example/x.png"]
