#!/usr/bin/env bash
# Builds the four daprs images from docker/Dockerfile (BuildKit reuses the one build stage):
#   docker/build-images.sh [registry] [tag]     # default: ghcr.io/daprs and the crate version
# Push them with `docker push <registry>/<name>:<tag>`; the Helm chart's global.registry and
# global.tag name the same images.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
registry="${1:-ghcr.io/daprs}"
tag="${2:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)}"
command -v docker >/dev/null || { echo "build-images: docker is not installed" >&2; exit 1; }
for image in sentry operator injector daprd; do
	DOCKER_BUILDKIT=1 docker build -f docker/Dockerfile --target "$image" -t "$registry/$image:$tag" .
done
