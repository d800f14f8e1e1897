"""Shared paths and fixtures: tests work on copies, never on the committed samples."""

import shutil
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE_RESULTS = REPO / "starting_kit" / "sample_results"
SAMPLE_REFERENCE = REPO / "reference_data" / "sample"
PUBLISHED_CURVES = REPO / "starting_kit" / "data" / "e2lm_published_curves.json"


@pytest.fixture
def res_dir(tmp_path: Path) -> Path:
    """A writable copy of the sample ingestion output (Codabench's /app/input/res)."""
    return Path(shutil.copytree(SAMPLE_RESULTS, tmp_path / "res"))


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory) -> tuple[Path, float]:
    """The tiny checkpoint set, built once per test run: (folder, build seconds)."""
    from e2lmc.zoo import build

    out = tmp_path_factory.mktemp("zoo") / "tiny"
    start = time.perf_counter()
    build("tiny", out, seed=0)
    return out, time.perf_counter() - start
