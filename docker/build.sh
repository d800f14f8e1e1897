#!/usr/bin/env bash
# Build the worker image from the repository root: docker/build.sh [TAG]
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-e2lmc/worker:$(python3 -c 'import tomllib;print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')}"
docker build -f docker/Dockerfile -t "$tag" .
docker run --rm "$tag" e2lmc --version
echo "built $tag: name it as docker_image in competition.yaml"
