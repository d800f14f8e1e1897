"""Shared paths and fixtures: tests work on copies, never on the committed samples.

A test that trains the tiny checkpoint set, evaluates checkpoints or runs a task in
sandboxed child processes (seconds each) is marked `slow`: every test using the
`tiny_zoo` fixture (directly or through another fixture) is marked here, the others carry
`@pytest.mark.slow` (or their module's `pytestmark`). `python -m pytest -m "not slow"` is
the quick loop; the README's command runs everything.
"""

import shutil
import time
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SAMPLE_RESULTS = REPO / "starting_kit" / "sample_results"
SAMPLE_REFERENCE = REPO / "reference_data" / "sample"
PUBLISHED_CURVES = REPO / "starting_kit" / "data" / "e2lm_published_curves.json"
SAMPLES = REPO / "starting_kit" / "sample_submissions"


SLOW_FIXTURES = {"tiny_zoo"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def res_dir(tmp_path: Path) -> Path:
    """A writable copy of the sample ingestion output (Codabench's /app/input/res)."""
    return Path(shutil.copytree(SAMPLE_RESULTS, tmp_path / "res"))


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory) -> tuple[Path, float]:
    """The tiny checkpoint set, built once per test run: (folder, build seconds)."""
    from e2lmc.embedded.zoo import build

    out = tmp_path_factory.mktemp("zoo") / "tiny"
    start = time.perf_counter()
    build("tiny", out, seed=0)
    return out, time.perf_counter() - start


def hflm_responses(checkpoint: Path, requests: list, batch_size: int = 64) -> list:
    """lm-eval's own Hugging Face backend on `requests` ((kind, arguments JSON) pairs):
    the reference every engine response is compared with."""
    import json

    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(checkpoint), device="cpu", dtype="float32", batch_size=batch_size)
    responses: list = [None] * len(requests)
    for kind in ("loglikelihood", "loglikelihood_rolling", "generate_until"):
        indices = [i for i, (k, _) in enumerate(requests) if k == kind]
        if indices:
            instances = [Instance(kind, {}, tuple(json.loads(requests[i][1])), i) for i in indices]
            for i, response in zip(indices, getattr(lm, kind)(instances, disable_tqdm=True), strict=True):
                responses[i] = response
    return responses


def engine_responses(checkpoint: Path, requests: list, **settings) -> list:
    """The engine's responses on one checkpoint."""
    from e2lmc.engine.engine import Engine
    from e2lmc.limits import EngineSettings

    [(_, responses)] = list(Engine(requests, EngineSettings(**settings)).run([("checkpoint", checkpoint)]))
    return responses


@pytest.fixture(scope="session")
def zoo_bundle(tiny_zoo, tmp_path_factory) -> Path:
    """The embedded-set bundle of the tiny set, built with every default and the local CPU image."""
    from e2lmc.cli.main import main

    zoo, _ = tiny_zoo
    out = tmp_path_factory.mktemp("bundle") / "bundle.zip"
    assert main(["bundle", "--checkpoints", "zoo", "--preset", "tiny", "--zoo", str(zoo), "--out", str(out),
                 "--allow-local-image"]) == 0
    return out


@pytest.fixture(scope="session")
def short_science(tmp_path_factory) -> Path:
    """The science sample cut to the rules' minimum of 100 questions: the same task,
    a third of the evaluation time (three phases must fit the test suite's budget)."""
    folder = Path(shutil.copytree(SAMPLES / "e2lmc_science_cloze", tmp_path_factory.mktemp("s") / "science"))
    data = folder / "e2lmc_science_cloze.jsonl"
    data.write_text("".join(data.read_text().splitlines(keepends=True)[:100]))
    return folder


def competition_of(bundle: Path) -> dict:
    """A bundle zip's competition.yaml."""
    with zipfile.ZipFile(bundle) as archive:
        return yaml.safe_load(archive.read("competition.yaml"))
