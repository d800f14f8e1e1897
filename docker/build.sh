#!/usr/bin/env bash
# Build the worker image from the repository root: docker/build.sh [--cpu] [TAG]
#   GPU variant (default), tag e2lmc/worker:VERSION; --cpu: tag e2lmc/worker:VERSION-cpu.
set -euo pipefail
cd "$(dirname "$0")/.."
version="$(python3 -c 'import tomllib;print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')"
args=()
suffix=""
if [[ "${1:-}" == "--cpu" ]]; then
    shift
    args=(--build-arg BASE=ubuntu:24.04 --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu)
    suffix="-cpu"
fi
tag="${1:-e2lmc/worker:${version}${suffix}}"
docker build -f docker/Dockerfile "${args[@]}" -t "$tag" .
docker run --rm "$tag" e2lmc --version
echo "built $tag: push it where the workers can pull it, then: e2lmc bundle --docker-image $tag"
