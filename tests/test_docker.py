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
    assert text.startswith("#") and "ARG BASE=nvidia/cuda:" in text and "FROM ${BASE}" in text
    torch_pin = re.search(r"torch==([\d.]+)", (REPO / "README.md").read_text()).group(1)
    assert f"pip install --index-url ${{TORCH_INDEX}} torch=={torch_pin}" in text
    hf_home = re.search(r"HF_HOME=(\S+)", text).group(1)
    assert not hf_home.startswith("/app/data") and "HF_HUB_OFFLINE=1" in text  # /app/data is read-only
    assert "pip install -r /tmp/requirements.lock" in text and "pip install --no-deps /opt/e2lmc" in text
    user = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert not user or user[-1] == "root"  # Codabench's step folders are root-owned 0700; no uid switch is allowed
    assert "WORKDIR /app/program" in text
    assert re.search(r"apt-get install [^&]*bubblewrap libseccomp2", text)  # the sandbox's tools (docs/security.md)


def test_the_cpu_variant_builds_from_the_same_recipe_without_cuda():
    script = (DOCKER / "build.sh").read_text()
    assert "--build-arg BASE=ubuntu:" in script and "TORCH_INDEX=https://download.pytorch.org/whl/cpu" in script
    assert script.count("docker build -f docker/Dockerfile") == 1  # one recipe, two variants


def test_the_build_context_leaves_out_what_the_image_does_not_need():
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", "zoo", "tests", "dist"} <= set(ignored)
    for needed in ("pyproject.toml", "README.md", "e2lmc", "docker"):
        assert needed not in ignored
