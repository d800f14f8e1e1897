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
        -h|--help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "docker/build.sh: unknown option $1 (docker/build.sh --help)" >&2; exit 1 ;;
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
kind=$([[ "$suffix" == -cpu ]] && echo zoo || echo e2lm)
echo "built $tag. Workers pull the bundle's image: tag and push it where they can (docker tag $tag" \
     "REGISTRY/e2lmc/worker:TAG && docker push REGISTRY/e2lmc/worker:TAG; docs/organizers.md), then" \
     "e2lmc bundle --checkpoints $kind --docker-image REGISTRY/e2lmc/worker:TAG; for a rehearsal on a worker" \
     "that has $tag: e2lmc bundle --checkpoints $kind --allow-local-image"
