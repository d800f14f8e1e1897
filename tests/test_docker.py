"""The worker image's recipe, checked without a Docker engine (this machine has none)."""

import re
import tomllib

from .conftest import REPO

DOCKER = REPO / "docker"


def test_every_dependency_is_pinned_in_the_lock():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=\[ ]", d)[0].lower().replace("-", "_") for d in project["dependencies"]}
    locked = {}
    for line in (DOCKER / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"requirements.lock: '{line}' is not pinned with =="
            locked[name.lower().replace("-", "_")] = version
    assert names - {"torch"} <= set(locked), names - {"torch"} - set(locked)
    assert "torch" not in locked  # installed first, from PyPI with CUDA


def test_dockerfile_installs_the_package_and_runs_as_codabench_needs():
    text = (DOCKER / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM nvidia/cuda:" in text
    torch_pin = re.search(r"torch==([\d.]+)", (REPO / "README.md").read_text()).group(1)
    assert f"pip install torch=={torch_pin}" in text
    assert "pip install -r /tmp/requirements.lock" in text and "pip install --no-deps /opt/e2lmc" in text
    user = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert not user or user[-1] == "root"  # Codabench's step folders are root-owned 0700; no uid switch is allowed
    assert "WORKDIR /app/program" in text
    assert re.search(r"apt-get install [^&]*bubblewrap libseccomp2", text)  # the sandbox's tools (docs/security.md)
