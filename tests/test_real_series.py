"""The real competition's path: the series file, placing checkpoints from the Hugging Face
cache, the real-series bundle's guard rails and pages, Codabench's container description,
and all three phases end to end on checkpoints placed under the real repo names."""

import json
import math
import os
import zipfile
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from e2lmc.cli.main import main
from e2lmc.errors import UserError
from e2lmc.formats.manifest import read_manifest
from e2lmc.formats.results import read_results
from e2lmc.formats.series import E2LM_SERIES, read_series, series_reference
from e2lmc.organizer.bundle import DEFAULT_IMAGE, HEADER, default_competition_text, schedule_warnings
from e2lmc.organizer.codabench import bundle_problems
from e2lmc.organizer.container import Mount, StepSpec
from e2lmc.organizer.pages import PAGES
from e2lmc.organizer.phases import PHASE_NAMES, PHASES
from e2lmc.organizer.placement import verify_checkpoint

from . import hub_cache
from .conftest import REPO, competition_of

QUEUE = "8c2b4f0e-1d3a-4e5f-9a7b-0c1d2e3f4a5b"
REAL_NAMES = {"small": "500m", "medium": "1b", "large": "3b"}
WEB_REPO = "e2lm-organizers/dense-500m-arch1-web"  # private in the real competition


def _real_id(tiny_id: str) -> str:
    size = tiny_id.split("-")[1]
    return tiny_id.replace(f"-{size}-", f"-{REAL_NAMES[size]}-")


@pytest.fixture(scope="module")
def real_series(tiny_zoo, tmp_path_factory) -> tuple[Path, Path]:
    """The tiny set as a Hugging Face cache under the real repo names and subfolders, and
    a series file naming those repos: (series file, cache)."""
    zoo, _ = tiny_zoo
    root = tmp_path_factory.mktemp("real")
    data = yaml.safe_load((zoo / "series.yaml").read_text())
    for model in data["models"]:
        tiny_id = model.pop("path")
        model["id"] = _real_id(tiny_id)
        model["size"] = REAL_NAMES[model["size"]]
        model["repo"] = WEB_REPO if model["mixture"] == "web" else f"tiiuae/{model['id']}"
        hub_cache.lay_out(root / "cache", model["repo"], zoo / tiny_id)
    data["description"] = "The tiny set under the real repo names."
    (root / "series.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root / "series.yaml", root / "cache"


@pytest.fixture(scope="module")
def placed(real_series, tmp_path_factory) -> Path:
    series, cache = real_series
    data = tmp_path_factory.mktemp("placed") / "data"
    assert main(["checkpoints", "fetch", "--series", str(series), "--to", str(data), "--offline",
                 "--cache-dir", str(cache)]) == 0
    return data


# ------------------------------------------------------------------ the series


def test_the_shipped_series_is_the_public_repos_and_the_organizers_choice_of_hidden():
    with pytest.raises(UserError, match="dense-500m-arch1-web.*private.*--web-model"):
        read_series(E2LM_SERIES)
    series = read_series(E2LM_SERIES, "org/web")
    assert series.iterations.released == list(range(2000, 54001, 2000))  # iter_0002000 … iter_0054000
    assert series.iterations.hidden == list(range(64000, 224001, 16000)) and series.iterations.final == 240000
    reference = series_reference(series)
    checkpoints = reference.models[0].checkpoints
    picked = [c.iteration for c in checkpoints if reference.scores.signal_quality.picks(c)]
    assert picked == list(range(4000, 52001, 4000))  # multiples of 4000 up to 206B tokens
    assert 4.1e9 < checkpoints[1].tokens < 4.3e9 and 0.95e12 < checkpoints[-1].tokens < 1.05e12
    assert {c.role for c in reference.models[-1].checkpoints} == {"hidden", "final"}  # the web model: all hidden


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["iterations"].update(hidden=[100]), "released < hidden < final"),
    (lambda d: d["iterations"].update(released=[40, 20]), "iterations.released must be positive"),
    (lambda d: d["models"][1].update(id=d["models"][0]["id"]), r"models\[1\].*unique"),
    (lambda d: d["models"][0].update(repo="not a repo"), "is not a hub repo name"),
    (lambda d: d["models"][0].update(path="x"), "both 'repo' and 'path'"),
    (lambda d: d["tokens"].update(global_batch=1024), "tokens needs either per_iteration"),
    (lambda d: d["models"][0].update(colour="red"), "unknown key 'colour'"),
    (lambda d: d["models"][0].update(mixture="web"), "exactly one with mixture: web"),
])
def test_a_broken_series_file_is_refused_with_one_sentence(real_series, tmp_path, edit, message):
    data = yaml.safe_load(real_series[0].read_text())
    edit(data)
    path = tmp_path / "series.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match=message):
        read_series(path)


# ------------------------------------------------------------------ placement


def test_fetch_places_every_checkpoint_from_the_cache_and_verify_rechecks(placed, real_series, tiny_zoo, capsys):
    manifest = read_manifest(placed)
    series = read_series(real_series[0])
    assert len(manifest.checkpoints) == len(series.models) * len(series.steps)
    assert all(e.path == e.id and not Path(e.path).is_absolute() for e in manifest.checkpoints)
    first = placed / manifest.checkpoints[0].path
    assert (first / "tokenizer.json").is_file()  # the repo's root tokenizer, copied into every checkpoint
    cache_blobs = {f.stat().st_ino for f in real_series[1].rglob("blobs/*")}
    assert (first / "model.safetensors").stat().st_ino in cache_blobs  # hard-linked, not a second copy
    assert main(["checkpoints", "verify", str(placed)]) == 0
    assert f"{len(manifest.checkpoints)} checkpoints" in capsys.readouterr().out


def test_a_damaged_checkpoint_is_named_and_a_rerun_of_fetch_repairs_it(real_series, tmp_path, capsys):
    series, cache = real_series
    data = tmp_path / "data"
    assert main(["checkpoints", "fetch", "--series", str(series), "--to", str(data), "--offline",
                 "--cache-dir", str(cache)]) == 0
    weights = data / "dense-1b-arch2" / "iter_0000060" / "model.safetensors"
    content = weights.read_bytes()
    weights.unlink()  # a hard link: truncate a copy, never the cache's blob
    weights.write_bytes(content[:-100])
    assert main(["checkpoints", "verify", str(data)]) == 2
    assert f"{weights} is truncated or damaged" in capsys.readouterr().err
    assert main(["checkpoints", "fetch", "--series", str(series), "--to", str(data), "--offline",
                 "--cache-dir", str(cache)]) == 0
    assert verify_checkpoint(weights.parent).bytes == len(content)


def test_fetch_online_asks_the_hub_for_exactly_the_series_subfolders(real_series, tmp_path, monkeypatch):
    import huggingface_hub

    from e2lmc.organizer.placement import fetch

    asked = []
    snapshots = {p.parent.parent.name: p for p in real_series[1].glob("models--*/snapshots/*")}

    def snapshot_download(repo_id, **kwargs):
        asked.append((repo_id, kwargs))
        return str(snapshots[f"models--{repo_id.replace('/', '--')}"])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    series = read_series(real_series[0])
    fetch(series, real_series[0].parent, tmp_path / "data", offline=False, workers=4)
    assert [repo for repo, _ in asked] == [m.repo for m in series.models]
    subfolders = [f"iter_{i:07d}/*" for i, _ in series.steps]
    for _, kwargs in asked:
        assert kwargs["local_files_only"] is False and kwargs["max_workers"] == 4
        assert kwargs["allow_patterns"][:len(subfolders)] == subfolders  # and the root tokenizer files only
        assert all(p.startswith(("tokenizer", "special_tokens", "vocab", "merges")) for p in
                   kwargs["allow_patterns"][len(subfolders):])


def test_fetch_offline_of_a_repo_not_in_the_cache_says_so(real_series, tmp_path, capsys):
    series, _ = real_series
    assert main(["checkpoints", "fetch", "--series", str(series), "--to", str(tmp_path / "d"), "--offline",
                 "--cache-dir", str(tmp_path / "empty-cache")]) == 2
    err = capsys.readouterr().err
    assert "tiiuae/dense-500m-arch1@main is not in the Hugging Face cache (offline)" in err
    assert "Traceback" not in err


# ------------------------------------------------------------- guard rails


def _real_bundle(series, out, *extra) -> list[str]:
    return ["bundle", "--checkpoints", "e2lm", "--series", str(series), "--out", str(out), *extra]


@pytest.mark.parametrize(("extra", "message"), [
    ([], "needs --queue: the vhost"),
    (["--queue", "gpu-queue"], "not by its name"),
    (["--queue", QUEUE], f"--docker-image is needed: the default {DEFAULT_IMAGE} is a local tag"),
    (["--queue", QUEUE, "--docker-image", DEFAULT_IMAGE], f"--docker-image {DEFAULT_IMAGE} is a local tag "
                                                          "(docker/build.sh's) that your GPU workers cannot pull"),
    (["--queue", QUEUE, "--allow-local-image"], "give --data"),
])
def test_a_real_bundle_that_would_fail_every_submission_is_refused(real_series, tmp_path, capsys, extra, message):
    assert main(_real_bundle(real_series[0], tmp_path / "x.zip", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.zip").exists()


def test_real_series_options_on_the_zoo_bundle_are_refused(real_series, tmp_path, capsys):
    assert main(["bundle", "--checkpoints", "zoo", "--series", str(real_series[0]), "--out", str(tmp_path / "z.zip")]) == 2
    assert "--series: only for --checkpoints e2lm" in capsys.readouterr().err


def test_a_real_bundle_needs_every_checkpoint_placed(real_series, placed, tmp_path, capsys):
    data = yaml.safe_load(real_series[0].read_text())
    data["iterations"]["hidden"].append(data["iterations"]["final"] - 1)
    longer = tmp_path / "series.yaml"
    longer.write_text(yaml.safe_dump(data))
    assert main(_real_bundle(longer, tmp_path / "x.zip", "--queue", QUEUE, "--docker-image", "reg/e2lmc:1",
                             "--data", str(placed))) == 2
    assert "lacks 7 checkpoints of the series (first: dense-500m-arch1/iter_0000059)" in capsys.readouterr().err


def test_a_cpu_image_for_the_real_checkpoints_is_warned_about(real_series, tmp_path, capsys):
    assert main(_real_bundle(real_series[0], tmp_path / "x.zip", "--queue", QUEUE, "--docker-image",
                             "reg/e2lmc-worker:1-cpu", "--time-limit", "3600", "--start", "2099-01-01")) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: --docker-image reg/e2lmc-worker:1-cpu: a CPU image (its tag ends in -cpu), for a "
                        "bundle of the real checkpoints, whose steps need the GPU image (docker/build.sh without --cpu)"]


def test_past_phases_warn_and_a_future_schedule_does_not():
    now = datetime(2026, 11, 27)
    assert len(schedule_warnings(PHASES, now)) == 3
    assert "phase warm-up closed on 2025-08-11 11:59:00" in schedule_warnings(PHASES, now)[0]
    future = tuple(p.__class__(**{**p.__dict__, "start": p.start + timedelta(days=600),
                                  "end": p.end + timedelta(days=600)}) for p in PHASES)
    assert schedule_warnings(future, now) == []


# ------------------------------------------------- the acceptance run, end to end


@pytest.fixture(scope="module")
def real_bundle(real_series, placed, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("real-bundle") / "e2lm.zip"
    start = (datetime.now() + timedelta(days=30)).strftime("%Y-%m-%d")
    assert main(_real_bundle(real_series[0], out, "--queue", QUEUE, "--docker-image", "registry.example/e2lmc:0.1",
                             "--data", str(placed), "--start", start)) == 0
    return out


def test_the_real_bundle_reads_placed_checkpoints_with_estimated_limits(real_bundle, placed):
    assert bundle_problems(real_bundle) == []
    data = competition_of(real_bundle)
    assert data["queue"] == QUEUE and data["docker_image"] == "registry.example/e2lmc:0.1"
    assert all(p["hide_output"] and p["max_submissions"] for p in data["phases"])
    limits = [p["execution_time_limit"] for p in data["phases"]]
    assert all(limit % 900 == 0 and limit >= 900 for limit in limits)  # estimate.py, rounded up
    with zipfile.ZipFile(real_bundle) as archive:
        names = archive.namelist()
        command = yaml.safe_load(archive.read("final/ingestion_program/metadata.yaml"))["command"]
        entries = yaml.safe_load(archive.read("input_data/manifest-final.yaml"))["checkpoints"]
    assert not any(n.endswith(".safetensors") for n in names)  # the checkpoints stay on the workers
    assert "--checkpoint-root /app/data" in command
    assert all((placed / e["path"] / "config.json").is_file() for e in entries)


def test_an_ingestion_whose_checkpoints_are_not_placed_says_so(real_bundle, short_science, tmp_path, capfd):
    with zipfile.ZipFile(real_bundle) as archive:
        archive.extractall(tmp_path / "bundle")
    assert main(["ingest", "--submission", str(short_science), "--input-data", str(tmp_path / "bundle" / "input_data"),
                 "--manifest", "manifest-warm-up.yaml", "--checkpoint-root", str(tmp_path / "nowhere"),
                 "--output", str(tmp_path / "out")]) == 2
    assert f"the checkpoint folder {tmp_path / 'nowhere'} does not exist" in capfd.readouterr().err
    # the worker without --data: Codabench's /app/data is then an empty folder
    assert main(["worker", str(short_science), "--bundle", str(real_bundle), "--phase", "warm-up", "--no-container",
                 "--workdir", str(tmp_path / "w")]) == 1
    assert "is empty: the checkpoints are not placed on this worker" in capfd.readouterr().err


def test_all_three_phases_run_on_the_placed_checkpoints(real_bundle, placed, short_science, tmp_path, monkeypatch):
    submission = short_science
    monkeypatch.chdir(tmp_path)  # work folders given relative to it, as a user would
    evaluated = {}
    for phase in PHASE_NAMES:
        workdir = tmp_path / phase
        assert main(["worker", str(submission), "--bundle", str(real_bundle), "--phase", phase, "--no-container",
                     "--data", str(placed), "--workdir", phase]) == 0
        scores = json.loads((workdir / "scoring" / "app" / "output" / "scores.json").read_text())
        assert scores["valid"] == 1.0 and all(math.isfinite(v) for v in scores.values())
        evaluated[phase] = {c.id for c in read_results(workdir / "prediction" / "app" / "output").checkpoints}
    fresh = evaluated["final"] - evaluated["warm-up"] - evaluated["development"]
    assert fresh and all("-3b-" not in i for i in evaluated["warm-up"])
    assert evaluated["warm-up"] < evaluated["development"] < evaluated["final"]


# ------------------------------------------------------------------- pages


def _pages(bundle: Path) -> dict[str, str]:
    with zipfile.ZipFile(bundle) as archive:
        return {file: archive.read(f"pages/{file}").decode() for _, file in PAGES}


def test_pages_differ_per_kind_and_carry_the_bundles_dates(real_bundle, tiny_zoo, tmp_path, capsys):
    zoo_out = tmp_path / "zoo.zip"
    zoo_bundle = ["bundle", "--checkpoints", "zoo", "--preset", "tiny", "--zoo", str(tiny_zoo[0]), "--out",
                  str(zoo_out), "--start", "2099-02-01"]
    assert main(zoo_bundle) == 2  # the local default image: refused, as for e2lm
    assert (f"--docker-image is needed: the default {DEFAULT_IMAGE}-cpu is a local tag (docker/build.sh's) that "
            f"Codabench's workers cannot pull; push the image where they can (for Codabench's shared free queue: a public repository "
            f"they pull without a login") in capsys.readouterr().err
    assert main([*zoo_bundle, "--docker-image", "ghcr.io/org/e2lmc-worker:0.1.0-cpu"]) == 0
    assert "warning:" not in capsys.readouterr().err  # no past phase
    assert competition_of(zoo_out)["docker_image"] == "ghcr.io/org/e2lmc-worker:0.1.0-cpu"
    zoo, real = _pages(zoo_out), _pages(real_bundle)
    assert "embedded checkpoint set" in zoo["overview.md"] and "0.5B, 1B and 3B" in real["overview.md"]
    assert "miniature" not in real["overview.md"] + real["tasks_and_data.md"]
    assert "`dense-1b-arch1`" in real["tasks_and_data.md"] and "`dense-medium-arch1`" in zoo["tasks_and_data.md"]
    assert WEB_REPO not in "".join(real.values()) and "-web" not in real["tasks_and_data.md"]  # never named
    assert "01 February 2099, 00:00" in zoo["timeline.md"] and "2025-07-07" not in zoo["timeline.md"]
    real_start = competition_of(real_bundle)["phases"][0]["start"]
    assert datetime.fromisoformat(real_start).strftime("%d %B %Y, %H:%M") in real["timeline.md"]
    for pages in (zoo, real):
        assert pages["timeline.md"].count("| phase |") == 1 and "<!-- e2lmc:" not in "".join(pages.values())


# ------------------------------------------------ Codabench's container, the twin


def test_the_container_is_described_as_codabenchs_compute_worker_creates_it(tmp_path):
    """Values from codalab/codabench compute_worker/compute_worker.py (c7dbc756),
    `_run_program_directory`: create_host_config(...) and create_container(...)."""
    program, data = tmp_path / "program", tmp_path / "data"
    spec = StepSpec("reg/e2lmc:1", "python3 /app/program/score.py --data /app/data/x",
                    (Mount(program, "/app/program", "z"), Mount(data, "/app/data", "ro")), gpus=True)
    host = spec.host_config()
    assert host["cap_drop"] == ["AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                                "NET_BIND_SERVICE", "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID",
                                "SYS_CHROOT"]
    assert host["security_opt"] == ["no-new-privileges"] and host["userns_mode"] == "host"
    assert host["auto_remove"] is False
    assert host["device_requests"] == [{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=all"]}]
    assert host["binds"] == {str(program): {"bind": "/app/program", "mode": "z"},
                             str(data): {"bind": "/app/data", "mode": "ro"}}
    create = spec.create_container()
    assert create["working_dir"] == "/app/program" and create["detach"] is False
    assert create["command"] == "python3 /app/program/score.py --data /app/data/x"  # one string, as Codabench
    assert create["environment"] == ["PYTHONUNBUFFERED=1", "http_proxy=", "https_proxy="]
    assert create["network_disabled"] is True and "user" not in create  # the image's default user: root
    assert "device_requests" not in StepSpec("i", "c", ()).host_config()  # USE_GPU unset: no GPU request
    one = StepSpec("i", "c", (), gpus=True, gpu_device="nvidia.com/gpu=1").host_config()  # the .env's GPU_DEVICE
    assert one["device_requests"] == [{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=1"]}]
    # the docker SDK accepts exactly this description
    import docker

    config = docker.APIClient(base_url="unix:///nonexistent", version="1.44").create_host_config(**host)
    assert config["CapDrop"] == host["cap_drop"] and config["DeviceRequests"][0]["Driver"] == "cdi"
    assert config["Binds"] == [f"{program}:/app/program:z", f"{data}:/app/data:ro"]
    # the no-container twin runs the same command over the mounts' host folders
    argv = spec.local_argv()
    assert argv[1:] == [f"{program}/score.py", "--data", f"{data}/x"] and os.path.isabs(argv[0])


# --------------------------------------------------------- the top-level files


def test_top_level_competition_yaml_and_logo_are_the_embedded_bundles(zoo_bundle):
    with zipfile.ZipFile(zoo_bundle) as archive:
        built, logo = archive.read("competition.yaml").decode(), archive.read("logo.png")
    top = (REPO / "competition.yaml").read_text()
    assert top == built == default_competition_text(), "regenerate it: python scripts/write_competition_yaml.py"
    assert top.startswith(HEADER) and (REPO / "logo.png").read_bytes() == logo


# ------------------------------------------------------------- the estimate


def test_the_estimate_sizes_the_real_phases_as_docs_organizers_says():
    from e2lmc.organizer.bundle import estimated_limits
    from e2lmc.organizer.placement import CheckpointSize

    series = read_series(E2LM_SERIES, "org/web")
    parameters = {"500m": 0.5e9, "1b": 1.0487e9, "3b": 3.1e9}  # the table's assumption
    sizes = {m.checkpoint_id(c): CheckpointSize(int(2 * parameters[m.size]), int(parameters[m.size]))
             for m in series_reference(series).models for c in m.checkpoints}
    assert estimated_limits(series, sizes) == {"warm-up": 5 * 3600 + 900, "development": 14 * 3600,
                                               "final": 16 * 3600}


def test_estimate_predicts_each_phase_from_the_tokens_the_engine_computes(real_series, placed, short_science,
                                                                          capsys):
    from e2lmc.engine.engine import Engine
    from e2lmc.ingestion.preflight import check_prompts, preflight
    from e2lmc.limits import Limits
    from e2lmc.organizer.estimate import (
        DEVICES,
        TaskTokens,
        Workload,
        phase_checkpoints,
        phase_seconds,
        task_tokens,
        time_limit,
    )
    from e2lmc.organizer.placement import verify_placed

    series_file, _ = real_series
    assert main(["estimate", str(short_science), "--series", str(series_file), "--data", str(placed),
                 "--device", "h200"]) == 0
    out = capsys.readouterr().out
    plan = preflight(short_science, placed.parent / "plan", Limits()).plan
    requests = [(r.kind, r.arguments) for r in plan.requests]
    first = placed / read_manifest(placed).checkpoints[0].path
    validation, tokenized = check_prompts(plan, first)
    [(encoder, tokenized_requests)] = tokenized.values()
    tokens = task_tokens(encoder, tokenized_requests, validation.context_tokens)
    engine = Engine(requests)
    list(engine.run([("c", first)]))
    work = next(iter(engine.runner.works.values()))
    assert (tokens.computed, tokens.needed, tokens.one_by_one) == (work.tokens_computed, work.tokens_needed,
                                                                   work.tokens_one_by_one)
    assert f"per checkpoint: {tokens.computed:,} tokens computed after sharing" in out
    sizes, series = verify_placed(placed), read_series(series_file)
    for phase, ids in phase_checkpoints(series).items():
        seconds = phase_seconds([sizes[c] for c in ids], Workload(tokens.computed), DEVICES["h200"])
        row = next(line.split() for line in out.splitlines() if line.startswith(phase))
        assert int(row[1].replace(",", "")) == len(ids)
        assert row[-2:] == [f"{time_limit(seconds) / 60:.0f}", "min"]
    assert isinstance(tokens, TaskTokens) and tokens.computed < tokens.one_by_one


def test_estimate_without_checkpoints_reads_sizes_from_the_series_labels(capsys):
    from e2lmc.organizer.estimate import nominal_sizes

    sizes = nominal_sizes(read_series(E2LM_SERIES, "org/web"))
    assert sizes["dense-1b-arch2/iter_0054000"].parameters == 1_000_000_000
    assert sizes["dense-500m-arch1-web/iter_0240000"].bytes == 1_000_000_000
    series = read_series(E2LM_SERIES, "org/web")
    for model in series.models:
        model.size = "large" if model.size == "500m" else model.size
    with pytest.raises(UserError, match="size 'large' is not a count such as 500m or 1b"):
        nominal_sizes(series)


# ---------------------------------------------------- the docker SDK runner


class FakeAPIClient:
    """docker.APIClient's calls that run_container makes, recorded."""

    def __init__(self, wait=None):
        self.calls, self._wait = [], wait

    def ping(self):
        return True

    def inspect_image(self, image):
        return {"Id": image}

    def create_host_config(self, **kwargs):
        self.calls.append(("host_config", kwargs))
        return {"host": kwargs}

    def create_container(self, **kwargs):
        self.calls.append(("create", kwargs))
        return {"Id": "c1"}

    def start(self, container):
        self.calls.append(("start", container["Id"]))

    def logs(self, container, stream, follow):
        return iter([b"step log line\n"])

    def wait(self, container, timeout):
        self.calls.append(("wait", timeout))
        return self._wait() if self._wait else {"StatusCode": 3}

    def kill(self, container):
        self.calls.append(("kill", container["Id"]))

    def remove_container(self, container, force):
        self.calls.append(("remove", container["Id"]))


def _fake_docker(monkeypatch, client):
    import docker

    monkeypatch.setattr(docker, "from_env", lambda: type("Client", (), {"api": client})())


def test_the_docker_runner_creates_codabenchs_container_and_removes_it(monkeypatch, tmp_path, capfd):
    from e2lmc.organizer.container import run_container

    client = FakeAPIClient()
    _fake_docker(monkeypatch, client)
    spec = StepSpec("reg/e2lmc:1", "python3 /app/program/score.py", (Mount(tmp_path, "/app/program", "z"),),
                    gpus=True)
    assert run_container(spec, time_limit=60) == 3
    calls = dict(client.calls)
    assert calls["host_config"] == spec.host_config() and calls["wait"] == 60
    created = calls["create"]
    assert created["host_config"] == {"host": spec.host_config()}
    assert {k: v for k, v in created.items() if k != "host_config"} == spec.create_container()
    assert [c[0] for c in client.calls][-1] == "remove" and "step log line" in capfd.readouterr().err


@pytest.mark.parametrize("flags, gpus, device", [
    ([], False, "nvidia.com/gpu=all"),
    (["--gpus"], True, "nvidia.com/gpu=all"),
    (["--gpu-device", "nvidia.com/gpu=1"], True, "nvidia.com/gpu=1"),  # names a device: asks for it
])
def test_the_workers_gpu_flags_reach_its_steps(monkeypatch, tmp_path, flags, gpus, device):
    import e2lmc.organizer.worker as worker
    from e2lmc.cli.main import main

    seen, failed = [], worker.StepResult(tmp_path, 1, 0.0)
    monkeypatch.setattr(worker, "run_submission", lambda *args: seen.append(args[-1]) or (failed, failed))
    assert main(["worker", str(tmp_path), "--bundle", str(tmp_path), "--phase", "final", *flags]) == 1
    assert (seen[0].gpus, seen[0].gpu_device) == (gpus, device)


def test_the_docker_runner_stops_a_container_at_the_time_limit(monkeypatch, tmp_path):
    from e2lmc.organizer.container import run_container

    def too_long():
        raise TimeoutError("read timed out")

    client = FakeAPIClient(wait=too_long)
    _fake_docker(monkeypatch, client)
    with pytest.raises(UserError, match="Execution Time Limit exceeded.*limit of 0 s"):
        run_container(StepSpec("i", "c", (Mount(tmp_path, "/app/program"),)), time_limit=0)
    assert ("kill", "c1") in client.calls and client.calls[-1] == ("remove", "c1")


def test_run_on_the_released_checkpoints_from_an_offline_cache_gives_sq_only(real_series, tiny_zoo, short_science,
                                                                            tmp_path, capsys, monkeypatch):
    """A participant's one command on the real released checkpoints: placed from a pre-filled
    Hugging Face cache with the network off, only those SQ uses; SQ equals the embedded run's
    on the same checkpoints; RC and CS are said to need hidden checkpoints."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    series, cache = real_series
    folder, out = tmp_path / "released", tmp_path / "out"
    assert main(["run", str(short_science), "--checkpoints", "e2lm-released", "--series", str(series),
                 "--cache-dir", str(cache), "--zoo", str(folder), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "signal quality only: ranking consistency, scientific compliance and the global score need" in printed
    scores = json.loads((out / "scores.json").read_text())
    assert set(scores) == {"signal_quality", "monotonicity", "autocorrelation", "valid", "leakage", "n_samples",
                           "alignment", "custom_code"}
    placed = {e.id for e in read_manifest(folder).checkpoints}
    reference = series_reference(read_series(series))
    sq = reference.scores.signal_quality
    assert placed == {m.checkpoint_id(c) for m in reference.models for c in m.checkpoints
                      if m.id in sq.models and sq.picks(c)}  # no hidden checkpoint, no web-only model
    html = (out / "detailed_results.html").read_text()
    assert "Signal quality only" in html and "Ranking consistency (RC)" not in html

    capsys.readouterr()
    assert main(["run", str(short_science), "--preset", "tiny", "--zoo", str(tiny_zoo[0]),
                 "--output", str(tmp_path / "embedded")]) == 0
    assert "The embedded set's weights are the organizers' (digest " in capsys.readouterr().out
    embedded = json.loads((tmp_path / "embedded" / "scores.json").read_text())
    assert scores["signal_quality"] == pytest.approx(embedded["signal_quality"], abs=1e-9)
