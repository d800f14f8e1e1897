#!/usr/bin/env bash
# Build the worker image from the repository root (any bash, no Python needed):
#   docker/build.sh [--cpu] [--base IMAGE] [--torch-index URL] [TAG] [-- DOCKER-BUILD-OPTIONS…]
# GPU variant (default): a CUDA runtime base, torch from PyPI, tag e2lmc/worker:VERSION.
# --cpu: an Ubuntu base and PyTorch's CPU wheel index, tag e2lmc/worker:VERSION-cpu.
# --base and --torch-index replace the variant's base image and torch index (a Debian base made
# without a registry, a mirror of the wheels); what follows -- goes to `docker build` as is.
set -euo pipefail
cd "$(dirname "$0")/.."
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)"
[[ -n "$version" ]] || { echo "docker/build.sh: no 'version = \"…\"' line in pyproject.toml" >&2; exit 1; }
base="" index="" suffix="" tag="" extra=()
while (($#)); do
    case "$1" in
        --cpu) base="${base:-ubuntu:24.04}" index="${index:-https://download.pytorch.org/whl/cpu}" suffix="-cpu" ;;
        --base) base="$2"; shift ;;
        --torch-index) index="$2"; shift ;;
        --) shift; extra=("$@"); break ;;
        -*) echo "docker/build.sh: unknown option $1 (see the comment at the top of the script)" >&2; exit 1 ;;
        *) tag="$1" ;;
    esac
    shift
done
args=()
[[ -n "$base" ]] && args+=(--build-arg "BASE=$base")
[[ -n "$index" ]] && args+=(--build-arg "TORCH_INDEX=$index")
tag="${tag:-e2lmc/worker:${version}${suffix}}"
docker build -f docker/Dockerfile "${args[@]}" "${extra[@]}" -t "$tag" .
docker run --rm "$tag" e2lmc --version
echo "built $tag: push it where the workers can pull it (docs/organizers.md), then: e2lmc bundle --docker-image $tag"
