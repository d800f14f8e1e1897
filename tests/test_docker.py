"""The worker image's recipe, read, and docker/build.sh's commands, recorded by a stand-in
`docker`: both without an engine. The image itself is built by .ci/worker-image and run in
tests/test_container.py."""

import os
import re
import subprocess

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


def _build_commands(tmp_path, *args: str) -> list[str]:
    """The docker commands `docker/build.sh ARGS` runs, recorded by a stand-in on PATH."""
    (tmp_path / "docker").write_text('#!/bin/sh\necho "$@" >> "$RECORD"\n')
    (tmp_path / "docker").chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin", "RECORD": str(tmp_path / "record")}
    subprocess.run(["bash", str(DOCKER / "build.sh"), *args], env=env, check=True, capture_output=True)
    return (tmp_path / "record").read_text().splitlines()


def test_build_sh_makes_both_variants_from_one_recipe_without_python(tmp_path):
    script = (DOCKER / "build.sh").read_text()
    assert "python" not in script.replace("# Build the worker image from the repository root (any bash, no Python", "")
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    gpu = _build_commands(tmp_path)
    assert gpu[0] == f"build -f docker/Dockerfile -t e2lmc/worker:{version} ." and gpu[1].startswith("run --rm")
    (tmp_path / "record").unlink()
    cpu = _build_commands(tmp_path, "--cpu")[0]
    assert cpu == (f"build -f docker/Dockerfile --build-arg BASE=ubuntu:24.04 --build-arg TORCH_INDEX="
                   f"https://download.pytorch.org/whl/cpu -t e2lmc/worker:{version}-cpu .")
    (tmp_path / "record").unlink()
    local = _build_commands(tmp_path, "--cpu", "--base", "local/bookworm-python", "--torch-index",
                            "http://127.0.0.1:1/simple", "reg/e2lmc:1", "--", "--network", "host")[0]
    assert local == ("build -f docker/Dockerfile --build-arg BASE=local/bookworm-python --build-arg TORCH_INDEX="
                     "http://127.0.0.1:1/simple --network host -t reg/e2lmc:1 .")
    with open(os.devnull, "w") as quiet:
        assert subprocess.run(["bash", str(DOCKER / "build.sh"), "--gpu"], stderr=quiet).returncode == 1


def test_the_build_context_leaves_out_what_the_image_does_not_need():
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", "zoo", "tests", "dist"} <= set(ignored)
    for needed in ("pyproject.toml", "README.md", "e2lmc", "docker"):
        assert needed not in ignored
