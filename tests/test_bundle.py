"""The Codabench bundle: phases, competition.yaml, the builder's rule checks, the e2lm
manifests, and every phase end to end through the no-container worker."""

import json
import math
import re
import shutil
import zipfile
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from e2lmc.cli.main import main
from e2lmc.embedded.sets import first_checkpoint
from e2lmc.embedded.zoo import PRESETS, series_for
from e2lmc.errors import UserError
from e2lmc.formats.manifest import read_manifest
from e2lmc.formats.results import read_results
from e2lmc.formats.series import E2LM_SERIES, read_series, series_reference
from e2lmc.ingestion.preflight import preflight
from e2lmc.limits import Limits
from e2lmc.organizer.bundle import COLUMNS, zip_folder
from e2lmc.organizer.codabench import bundle_problems
from e2lmc.organizer.phases import PHASE_NAMES, PHASES, phase_reference, shifted
from e2lmc.organizer.worker import WorkerOptions, run_submission
from e2lmc.scoring.evaluation import Leaderboard

from .conftest import SAMPLES, competition_of


def _ids(reference) -> set[str]:
    return {m.checkpoint_id(c) for m in reference.models for c in m.checkpoints}


@pytest.mark.parametrize("full", [series_reference(series_for(PRESETS["default"])),
                                  series_reference(read_series(E2LM_SERIES, "org/web"))],
                         ids=["zoo", "e2lm"])
def test_phases_reduce_then_grow_and_final_adds_never_used_hidden_checkpoints(full):
    warm_up, development, final = (phase_reference(full, name) for name in PHASE_NAMES)
    assert _ids(warm_up) < _ids(development) < _ids(final) == _ids(full)
    largest = full.models[-2].size  # the last science model is the largest
    assert largest not in {m.size for m in warm_up.models} and len(warm_up.models) == len(full.models) - 2
    never_used = _ids(final) - _ids(development)
    roles = {m.checkpoint_id(c): c.role for m in final.models for c in m.checkpoints}
    assert never_used and {roles[i] for i in never_used} == {"hidden"}
    for phase in (warm_up, development, final):
        kept = {m.id for m in phase.models}
        assert set(phase.scores.ranking_consistency.models) <= kept and set(phase.scores.signal_quality.models) <= kept
        assert {phase.scores.scientific_compliance.science_model, phase.scores.scientific_compliance.web_model} <= kept


def test_the_schedule_is_the_sites_and_can_be_shifted():
    assert [(p.start.date().isoformat(), p.end.date().isoformat()) for p in PHASES] == [
        ("2025-07-07", "2025-08-11"), ("2025-08-11", "2025-10-20"), ("2025-10-20", "2025-11-03")]
    moved = shifted(PHASES, datetime(2026, 3, 2, 9))
    assert moved[0].start == datetime(2026, 3, 2, 9)
    assert [p.end - p.start for p in moved] == [p.end - p.start for p in PHASES]
    assert all(a.end < b.start for a, b in zip(moved, moved[1:]))


def test_zoo_bundle_is_self_contained_and_follows_codabench(zoo_bundle, tiny_zoo):
    assert bundle_problems(zoo_bundle) == []
    data = competition_of(zoo_bundle)
    assert data["version"] == 2 and data["enable_detailed_results"] is True and data["docker_image"]
    phases = data["phases"]
    assert [p["name"] for p in phases] == ["Warm-up", "Development", "Final"]
    assert all(isinstance(p["start"], str) and isinstance(p["end"], str) for p in phases)  # quoted
    assert all(p["max_submissions_per_day"] <= 10 and p["hide_prediction_output"] for p in phases)
    assert not any(p["hide_output"] for p in phases)  # the embedded set is no secret: logs help
    assert phases[-1]["max_submissions"] <= 3 and all(p["execution_time_limit"] == 600 for p in phases)
    # explicit (Codabench's silent default is 100): the daily limit over the phase's days
    assert [p["max_submissions"] for p in phases] == [10 * 35, 10 * 70, 3]
    board = data["leaderboards"][0]
    assert [c["key"] for c in board["columns"]] == list(COLUMNS) and board["columns"][0]["key"] == "score"
    assert set(COLUMNS) == set(Leaderboard.__dataclass_fields__)
    with zipfile.ZipFile(zoo_bundle) as archive:
        names = set(archive.namelist())
        for phase in PHASE_NAMES:
            manifest = yaml.safe_load(archive.read(f"input_data/manifest-{phase}.yaml"))
            reference = yaml.safe_load(archive.read(f"{phase}/reference_data/reference.yaml"))
            ids = [f"{m['id']}/{c['name']}" for m in reference["models"] for c in m["checkpoints"]]
            assert [e["id"] for e in manifest["checkpoints"]] == ids
            built = read_manifest(tiny_zoo[0])  # the set's prompt-rule scale and digest, as `e2lmc run` reads them
            assert (manifest["tokens_per_rule_token"], manifest["weights_digest"]) == (built.tokens_per_rule_token,
                                                                                       built.weights_digest)
            assert all(f"input_data/{e['path']}/model.safetensors" in names for e in manifest["checkpoints"])
            command = archive.read(f"{phase}/ingestion_program/metadata.yaml").decode()
            assert f"--manifest manifest-{phase}.yaml" in command
        assert "starting_kit/e2lmc/cli/main.py" in names and "starting_kit/pyproject.toml" in names
        assert "starting_kit/zoo.md" in names  # the report's "what the embedded models know" points there
        assert {f"starting_kit/sample_submissions/{s.name}/metadata.yaml" for s in SAMPLES.iterdir()} <= names
    zoo, _ = tiny_zoo
    total = len(read_manifest(zoo).checkpoints)
    assert sum(1 for n in names if n.endswith("model.safetensors")) == total  # the checkpoints once, shared


def _rebundle(bundle: Path, tmp_path: Path, edit) -> Path:
    """The bundle with competition.yaml (a dict) or its files changed by `edit`."""
    folder = tmp_path / "unpacked"
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(folder)
    data = yaml.safe_load((folder / "competition.yaml").read_text())
    edit(data, folder)
    (folder / "competition.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp_path / "edited.zip"
    with zipfile.ZipFile(out, "w") as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            archive.write(path, path.relative_to(folder).as_posix())
    return out


def _unquoted_dates(data, _):
    data["phases"][0]["start"] = datetime(2025, 7, 7, 12)


def _touching(data, _):
    data["phases"][1]["start"] = data["phases"][0]["end"]


def _long_title(data, _):
    data["leaderboards"][0]["columns"][1]["title"] = "x" * 37


def _not_png(_, folder):
    (folder / "logo.png").write_bytes(b"GIF89a")


def _empty_terms(_, folder):
    (folder / "terms.md").write_text("")


def _program_without_package(_, folder):
    shutil.rmtree(folder / "scoring_program" / "e2lmc")


def _unknown_rule(data, _):
    data["leaderboards"][0]["submission_rule"] = "Best_Of"


def _missing_key(data, _):
    del data["leaderboards"][0]["columns"][2]


@pytest.mark.parametrize(("edit", "rule"), [
    (_unquoted_dates, "quoted date"), (_touching, "neither overlap nor touch"), (_long_title, "1 to 36 characters"),
    (_not_png, "PNG"), (_empty_terms, "non-empty"), (_program_without_package, "e2lmc package"),
    (_unknown_rule, "submission_rule"), (_missing_key, "keys scores.json holds"),
])
def test_each_codabench_rule_is_checked(zoo_bundle, tmp_path, edit, rule):
    problems = bundle_problems(_rebundle(zoo_bundle, tmp_path, edit))
    assert any(rule in p for p in problems), problems


def test_an_invalid_bundle_is_never_written(tmp_path):
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "competition.yaml").write_text("version: 2\ntitle: t\n")
    with pytest.raises(UserError, match="Codabench rule: competition.yaml needs the key 'image'"):
        zip_folder(folder, tmp_path / "out.zip")
    assert not list(tmp_path.glob("out.zip*"))


@pytest.mark.parametrize("phase", PHASE_NAMES)
def test_every_phase_runs_end_to_end_in_the_no_container_worker(zoo_bundle, short_science, phase, tmp_path, capfd,
                                                                tiny_zoo):
    assert main(["worker", str(short_science), "--bundle", str(zoo_bundle), "--phase", phase, "--no-container",
                 "--workdir", str(tmp_path / "w")]) == 0
    printed = capfd.readouterr()
    prediction, scoring = (tmp_path / "w" / step / "app" / "output" for step in ("prediction", "scoring"))
    scores = json.loads((scoring / "scores.json").read_text())
    assert set(scores) == set(COLUMNS) and all(math.isfinite(v) for v in scores.values())
    assert scores["valid"] == 1.0 and scores["n_samples"] == 100
    html = (scoring / "detailed_results.html").read_text()
    assert "<img" in html and not re.search(r"""(src|href)=["']?(https?:|//|file:)""", html)  # self-contained
    for output, keys in ((prediction, {"ingestionExitCode", "ingestionElapsedTime"}), (scoring, {"exitCode"})):
        metadata = yaml.safe_load((output / "metadata").read_text())
        assert keys <= set(metadata) and metadata.get("ingestionExitCode", metadata.get("exitCode")) == 0
    results = read_results(prediction)
    with zipfile.ZipFile(zoo_bundle) as archive:
        reference = yaml.safe_load(archive.read(f"{phase}/reference_data/reference.yaml"))
    assert len(results.checkpoints) == sum(len(m["checkpoints"]) for m in reference["models"])
    # the prompt rule as validate and run count it on the same set: the same figures
    checkpoint, scale = first_checkpoint(tiny_zoo[0])
    local = preflight(short_science, tmp_path / "validate", Limits(), checkpoint, scale).findings
    assert results.validation.tokens_per_rule_token == scale != 1
    assert (results.validation.max_prompt_tokens, results.validation.rule_prompt_tokens,
            results.validation.context_tokens, results.validation.leakage_count) == (
        local.max_prompt_tokens, local.rule_prompt_tokens, local.context_tokens, local.leakage_count)
    # hidden values stay in the hidden prediction output: not in anything printed
    values = {f"{v:.4f}" for c in results.checkpoints for v in c.metrics.values()}
    values -= {f"{v:.4f}" for v in scores.values()}
    assert not any(v in printed.out + printed.err for v in values if v not in ("0.0000", "1.0000"))
    # the participant's `run --phase` on the same set: the same checkpoints, values and scores, exactly
    assert main(["run", str(short_science), "--zoo", str(tiny_zoo[0]), "--preset", "tiny", "--phase", phase,
                 "--output", str(tmp_path / "local")]) == 0
    assert f"the ones phase {phase} evaluates on Codabench" in capfd.readouterr().out
    local_results = read_results(tmp_path / "local" / "res")
    assert {c.id: c.metrics for c in local_results.checkpoints} == {c.id: c.metrics for c in results.checkpoints}
    assert json.loads((tmp_path / "local" / "scores.json").read_text()) == scores


def test_worker_reports_a_failed_ingestion_through_the_scoring_step(zoo_bundle, tmp_path, capfd):
    broken = Path(shutil.copytree(SAMPLES / "e2lmc_science_cloze", tmp_path / "broken"))
    (broken / "metadata.yaml").write_text("task_name: e2lmc_science_cloze\n")
    assert main(["worker", str(broken), "--bundle", str(zoo_bundle), "--phase", "warm-up", "--no-container",
                 "--workdir", str(tmp_path / "w")]) == 1
    printed = capfd.readouterr()
    assert "metadata.yaml needs task_metric" in printed.err
    assert "The ingestion step failed (exit code 1" in printed.err and "marked Failed" in printed.out
    assert yaml.safe_load((tmp_path / "w" / "prediction" / "app" / "output" / "metadata").read_text())[
        "ingestionExitCode"] == 1  # 1: the submission is invalid


def test_worker_stops_a_step_at_the_phase_time_limit(zoo_bundle, short_science, tmp_path):
    def one_second(data, _):
        for phase in data["phases"]:
            phase["execution_time_limit"] = 1

    bundle = _rebundle(zoo_bundle, tmp_path, one_second)
    with pytest.raises(UserError, match="Execution Time Limit exceeded.*limit of 1 s"):
        run_submission(short_science, bundle, "warm-up", tmp_path / "w", WorkerOptions(container=False))


def test_worker_refuses_unknown_phases_and_missing_docker(zoo_bundle, short_science, tmp_path, monkeypatch):
    with pytest.raises(UserError, match="no phase 'test'.*Warm-up, Development, Final"):
        run_submission(short_science, zoo_bundle, "test", tmp_path / "a", WorkerOptions(container=False))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(UserError, match="no Docker engine answers here.*--no-container"):
        run_submission(short_science, zoo_bundle, "final", tmp_path / "b", WorkerOptions(container=True))


@pytest.mark.slow
def test_sample_submissions_in_every_format_plan(tmp_path):
    plans = {s.name: preflight(s, tmp_path / s.name, Limits()).plan for s in sorted(SAMPLES.iterdir())}
    assert set(plans) == {"e2lmc_science_cloze", "e2lmc_everyday_endings", "e2lmc_mmluvar_template",
                          "e2lmc_science_patch"}
    assert all(100 <= p.n_samples <= 15_000 and not p.leakage for p in plans.values())
    # the patch-format sample is the science task: the same requests, so the same scores
    requests = {name: {(r.kind, r.arguments) for r in plan.requests} for name, plan in plans.items()}
    assert requests["e2lmc_science_patch"] == requests["e2lmc_science_cloze"]
    template = plans["e2lmc_mmluvar_template"]
    assert template.task_metric == "acc_norm,none"
    assert all(json.loads(r.arguments)[0].count("\nAnswer:") == 6 for r in template.requests)  # five-shot
