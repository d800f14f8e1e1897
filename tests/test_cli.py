"""The `e2lmc` command: help everywhere, the demo, score-curves, the sample generator."""

import csv
import io
import json
import re
import runpy
import shutil
import subprocess
import sys
import time

import pytest

from e2lmc.cli.main import build_parser, main
from e2lmc.formats.reference import REFERENCE_FILE
from e2lmc.formats.results import RESULTS_FILE
from e2lmc.progress import progress_bar

from .conftest import PUBLISHED_CURVES, REPO, SAMPLE_REFERENCE, SAMPLE_RESULTS

SUBCOMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)


@pytest.mark.parametrize("argv", [[]] + [[name] for name in SUBCOMMANDS])
def test_every_subcommand_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: e2lmc" in out
    if argv not in (["checkpoints"], ["zoo"]):  # their own commands have examples (below)
        assert "\nexamples:\n  e2lmc " in out


@pytest.mark.parametrize("argv", [["checkpoints", "fetch"], ["checkpoints", "verify"], ["zoo", "build"]])
def test_nested_commands_have_examples(argv, capsys):
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    assert f"\nexamples:\n  e2lmc {' '.join(argv)}" in capsys.readouterr().out


def test_validate_offers_no_model_options(capsys):
    """validate loads no model: the engine's options would only mislead."""
    with pytest.raises(SystemExit):
        main(["validate", "--help"])
    out = capsys.readouterr().out
    assert "--sandbox" in out and "--plan-timeout" in out
    assert not [o for o in ("--token-budget", "--devices", "--threads", "--score-timeout") if o in out]


def test_help_loads_no_model_library():
    """`e2lmc --help` and every subcommand's help load neither torch nor lm-eval (seconds each)."""
    code = ("import sys; from e2lmc.cli.main import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'lm_eval', 'transformers', 'scipy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_console_script_is_installed():
    proc = subprocess.run(["e2lmc", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("e2lmc ")


def test_demo_runs_the_sample_submission_through_ingestion_and_scoring(tiny_zoo, tmp_path):
    """As a participant runs it: the leaderboard row, the report, and no library noise
    (transformers' per-model loading bars, deprecation warnings) among our own progress bars."""
    zoo, _ = tiny_zoo
    proc = subprocess.run(["e2lmc", "demo", "--preset", "tiny", "--zoo", str(zoo), "--output", str(tmp_path / "demo")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "score  signal_quality" in out and "detailed_results.html" in out and "time: ingestion" in out
    assert "checkpoints: all 84 checkpoints of 7 models of the set; the phases use: warm-up 55 checkpoints" in out
    assert "checkpoints: 100%" in proc.stderr
    # a log, not a terminal: the bar of 84 checkpoints is drawn at its start and end, not once per checkpoint
    assert len(re.findall(r"checkpoints: +\d+%", proc.stderr)) <= 3, proc.stderr
    noise = [line for line in proc.stderr.splitlines() if re.search(r"Loading weights|Warning|deprecated", line)]
    assert not noise, noise
    assert (tmp_path / "demo" / "detailed_results.html").stat().st_size > 10_000
    # every metric of the task is kept per checkpoint (the submitted one is scored): compared without a rerun
    results = json.loads((tmp_path / "demo" / "res" / RESULTS_FILE).read_text())
    assert all(set(c["metrics"]) == {"acc,none", "acc_norm,none"} for c in results["checkpoints"])
    assert "<code>acc_norm,none</code>" in (tmp_path / "demo" / "detailed_results.html").read_text()
    scores = json.loads((tmp_path / "demo" / "scores.json").read_text())
    assert scores["valid"] == 1.0 and scores["n_samples"] >= 200


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [False, True])
def test_progress_bars_redraw_sparingly_where_not_a_terminal(terminal):
    stream = _Terminal() if terminal else io.StringIO()
    with progress_bar(total=1000, file=stream, desc="work", miniters=1) as bar:
        for _ in range(1000):
            bar.update()
            time.sleep(0.0002)  # 0.2 s in all: above tqdm's own 0.1 s interval, far below a log's
    draws = stream.getvalue().count("work:")
    assert "100%" in stream.getvalue()
    assert draws > 2 if terminal else draws <= 3, stream.getvalue()


def test_a_phase_reuses_what_the_whole_sets_run_evaluated(tiny_zoo, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)  # run_output/ is relative to the working directory
    science = str(tiny_zoo[0] / "tasks" / "e2lmc_science_cloze")
    assert main(["run", science, "--preset", "tiny", "--zoo", str(tiny_zoo[0])]) == 0
    capfd.readouterr()
    assert main(["run", science, "--preset", "tiny", "--zoo", str(tiny_zoo[0]), "--phase", "warm-up"]) == 0
    printed = capfd.readouterr()
    assert "reusing the 55 checkpoints of this phase that run_output/e2lmc_science_cloze evaluated" in printed.out
    assert "0 of 55 checkpoints to evaluate" in printed.err


def test_run_refuses_a_phase_of_the_released_checkpoints(tmp_path, capsys):
    assert main(["run", str(tmp_path), "--phase", "warm-up", "--checkpoints", "e2lm-released"]) == 2
    assert "the released checkpoints have no phases" in capsys.readouterr().err


def test_run_builds_a_missing_checkpoint_set_first(tmp_path, monkeypatch, capsys):
    import e2lmc.embedded.zoo

    built = []
    monkeypatch.setattr(e2lmc.embedded.zoo, "build", lambda preset, out: built.append((preset, out)))
    # the fake build writes nothing, so ingestion then stops with one sentence
    assert main(["run", str(tmp_path / "nothing"), "--zoo", str(tmp_path / "zoo"), "--preset", "tiny"]) == 2
    assert built == [("tiny", tmp_path / "zoo")]
    printed = capsys.readouterr()
    assert "Building the embedded 'tiny' checkpoint set" in printed.out
    assert printed.err.startswith("error: ") and "manifest.yaml does not exist" in printed.err


def _score_curves_json(*argv):
    proc = subprocess.run(["e2lmc", "score-curves", *map(str, argv), "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return {r["model"]: r for r in json.loads(proc.stdout)}


def test_score_curves_cli_reproduces_the_published_table():
    rows = _score_curves_json(PUBLISHED_CURVES, "--metric", "mmluvar")
    assert [round(rows[f"dense-{s}-arch1"]["signal_quality"], 4) for s in ("500m", "1b", "3b")] == \
        [0.9354, 0.9814, 0.9601]


def test_score_curves_reads_csv_records_with_tokens_only(tmp_path):
    """A participant's CSV with billions of tokens and no iteration column (this model's
    published checkpoints are all multiples of 4000, so --every 0 selects the same 14)."""
    data = json.loads(PUBLISHED_CURVES.read_text())["data"]["dense-500m-arch1"]
    path = tmp_path / "mine.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "gtokens", "my_bench", "notes"])
        for g, v in zip(data["gtokens"], data["mmluvar"]):
            writer.writerow(["500m", g, v, "text"])
    refused = subprocess.run(["e2lmc", "score-curves", str(path)], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "pass --every 0" in refused.stderr
    rows = _score_curves_json(path, "--every", "0")
    assert rows["500m"]["points"] == 14 and round(rows["500m"]["signal_quality"], 4) == 0.9354


def test_score_curves_reads_ingestion_results_as_the_scorer_selects(tmp_path):
    """With the reference data, score-curves gives the scorer's per-model SQ; without it,
    every evaluated checkpoint of each model (hidden roles included) is one curve."""
    from e2lmc.formats.reference import read_reference
    from e2lmc.formats.results import read_results
    from e2lmc.scoring.evaluation import evaluate

    evaluation = evaluate(read_results(SAMPLE_RESULTS), read_reference(SAMPLE_REFERENCE))
    rows = _score_curves_json(SAMPLE_RESULTS / RESULTS_FILE, "--reference", SAMPLE_REFERENCE)
    assert {m: r["signal_quality"] for m, r in rows.items()} == \
        pytest.approx({m: sq.score for m, sq in evaluation.signal_quality.items()}, abs=1e-12)
    every = _score_curves_json(SAMPLE_RESULTS / RESULTS_FILE)
    n_evaluated = len(read_results(SAMPLE_RESULTS).checkpoints)
    assert sum(r["points"] for r in every.values()) == n_evaluated > sum(r["points"] for r in rows.values())


def test_score_curves_compares_every_metric_a_run_kept_and_finds_the_sets_reference(tmp_path):
    """Results that keep the task's other metrics: --metric scores each, oriented as lm-eval
    says (a perplexity that falls as acc rises has acc's SQ); and where a built set in zoo/
    carries the results' weights digest, its reference selects without --reference."""
    from e2lmc.formats.manifest import CheckpointManifest, write_manifest

    data = json.loads((SAMPLE_RESULTS / RESULTS_FILE).read_text())
    for result in data["checkpoints"]:
        acc = result["metrics"]["acc,none"]
        result["metrics"].update({"acc_norm,none": acc + 0.01, "word_perplexity,none": 10 - acc})
    data.update(lower_is_better=["word_perplexity,none"], weights_digest="d1g35t")
    path = tmp_path / RESULTS_FILE
    path.write_text(json.dumps(data))
    scored = {metric: _score_curves_json(path, "--reference", SAMPLE_REFERENCE, "--metric", metric)
              for metric in ("acc,none", "acc_norm,none", "word_perplexity,none")}
    sq = {metric: {m: r["signal_quality"] for m, r in rows.items()} for metric, rows in scored.items()}
    assert sq["acc_norm,none"] == sq["acc,none"] == pytest.approx(sq["word_perplexity,none"], abs=1e-12)

    write_manifest(CheckpointManifest([], weights_digest="d1g35t"), tmp_path / "zoo" / "mine")
    shutil.copytree(SAMPLE_REFERENCE, tmp_path / "zoo" / "mine" / "reference")
    proc = subprocess.run(["e2lmc", "score-curves", str(path), "--metric", "acc,none", "--json"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "reference: zoo/mine/reference (the built set" in proc.stderr, proc.stderr
    assert {r["model"]: r["signal_quality"] for r in json.loads(proc.stdout)} == sq["acc,none"]
    elsewhere = subprocess.run(["e2lmc", "score-curves", str(path), "--metric", "acc,none"], cwd=tmp_path / "zoo",
                               capture_output=True, text=True, timeout=60)
    assert "hidden ones and the web-only model's included, so the mean is not the leaderboard's SQ" in \
        elsewhere.stderr


def test_score_curves_warns_on_a_flat_curve(tmp_path):
    path = tmp_path / "flat.csv"
    path.write_text("model,iteration,acc\n" + "".join(f"m,{i * 4000},0.25\n" for i in range(1, 14)))
    proc = subprocess.run(["e2lmc", "score-curves", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "0.5000" in proc.stdout
    assert "note: acc, m: flat curve" in proc.stdout and "carries no signal" in proc.stdout


def test_score_curves_bad_input(tmp_path, capsys):
    assert main(["score-curves", str(tmp_path / "none.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["score-curves", str(PUBLISHED_CURVES), "--metric", "nope"]) == 2
    assert "no benchmark 'nope'" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"iteration": 4000, "acc": 0.3}]))
    assert main(["score-curves", str(bad)]) == 2
    assert "record 0 has no 'model'" in capsys.readouterr().err
    unnamed = json.loads((SAMPLE_RESULTS / RESULTS_FILE).read_text())
    unnamed["checkpoints"][0]["id"] = "step-7"
    bad.write_text(json.dumps(unnamed))
    assert main(["score-curves", str(bad)]) == 2
    assert "checkpoint 0 ('step-7') is not named MODEL/iter_N: pass --reference" in capsys.readouterr().err


def test_committed_samples_match_their_generator(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["make_sample_results.py", "--out-results", str(tmp_path / "res"),
                                      "--out-reference", str(tmp_path / "ref")])
    runpy.run_path(str(REPO / "scripts" / "make_sample_results.py"), run_name="__main__")
    assert (tmp_path / "res" / RESULTS_FILE).read_text() == (SAMPLE_RESULTS / RESULTS_FILE).read_text()
    assert (tmp_path / "ref" / REFERENCE_FILE).read_text() == (SAMPLE_REFERENCE / REFERENCE_FILE).read_text()


def _numbers_task(folder, data: bytes):
    from .test_ingestion import make_task

    make_task(folder, 120)
    (folder / "numbers.jsonl").write_bytes(data)
    return folder


@pytest.mark.parametrize(("case", "code", "message"), [
    ("non-UTF-8 data", 1, r"invalid submission: task 'numbers': data file 'numbers.jsonl' line 3 is not UTF-8 text "
                          r"\(byte 18 of the line\); save the file as UTF-8"),
    ("empty data", 1, r"invalid submission: task 'numbers': data file 'numbers.jsonl' is empty"),
    ("missing submission", 2, r"error: .*nowhere: no such file or folder"),
    ("output is a file", 2, r"error: --output .*taken is a file; give a folder"),
    ("internal error", 3, r"internal error in e2lmc .*: this is a bug, please report it with the traceback above"),
])
def test_exit_codes_and_one_sentence_errors(tiny_zoo, tmp_path, capsys, monkeypatch, case, code, message):
    """0 ok, 1 the submission is invalid, 2 bad input or refused, 3 an internal error."""
    row = b'{"question": "q", "choices": ["a", "b"], "label": 0}\n'
    data = {"non-UTF-8 data": row * 2 + b'{"question": "caf\xe9", "choices": ["a", "b"], "label": 0}\n' + row * 200,
            "empty data": b""}.get(case, row * 200)
    submission = _numbers_task(tmp_path / "s", data) if case != "missing submission" else tmp_path / "nowhere"
    output = tmp_path / "out"
    if case == "output is a file":
        output = tmp_path / "taken"
        output.write_text("x")
    if case == "internal error":
        import e2lmc.ingestion.program

        monkeypatch.setattr(e2lmc.ingestion.program, "read_manifest", lambda *a: 1 / 0)
    argv = ["ingest", "--submission", str(submission), "--input-data", str(tiny_zoo[0]), "--output", str(output)]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert re.search(message, err), err
    if code != 3:
        assert "Traceback" not in err and len(err.strip().splitlines()[-1]) < 400


@pytest.mark.parametrize("argv", [["score", "--res", str(SAMPLE_RESULTS), "--ref", str(SAMPLE_REFERENCE), "--output"],
                                  ["worker", "x", "--bundle", "y", "--phase", "final", "--workdir"]])
def test_an_output_folder_that_is_a_file_is_one_sentence(tmp_path, capsys, argv):
    taken = tmp_path / "taken"
    taken.write_text("x")
    (tmp_path / "x").mkdir()
    argv = [a if a not in ("x", "y") else str(tmp_path / a) for a in argv]
    assert main([*argv, str(taken)]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"error: --(output|workdir) \S+taken is a file; give a folder \(it is created if missing\)\n",
                        err), err


def test_engine_options_reach_the_engine(monkeypatch):
    """--threads, --token-budget and --devices become the engine's settings; the engine
    sets torch's thread count from them."""
    import torch

    from e2lmc.cli.options import run_limits
    from e2lmc.engine.engine import Engine

    args = build_parser().parse_args(["ingest", "--threads", "1", "--token-budget", "512", "--devices", "cpu"])
    settings = run_limits(args).engine
    assert (settings.threads, settings.token_budget, settings.devices) == (1, 512, ("cpu",))
    before = torch.get_num_threads()
    try:
        Engine([], settings)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
