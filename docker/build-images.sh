#!/usr/bin/env bash
# Build the three images from docker/ with docker or podman, tagged for REGISTRY; PUSH=1 pushes them and prints
# the digests to pin (images.<name>.tag=<tag>@sha256:… in the chart, image@sha256:… in ssrl submit).
#   make images REGISTRY=registry.example.com/ssrl [PUSH=1] [TAG=0.1.0] [ENGINE=podman]
#               [TRAINER_BUILD_ARGS="--build-arg CUDA_IMAGE=… --build-arg TORCH_INDEX_URL=…"]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
: "${REGISTRY:?set REGISTRY to the registry/namespace you push to, e.g. make images REGISTRY=registry.example.com/ssrl}"
REGISTRY=${REGISTRY%/}
if [[ $REGISTRY == ghcr.io/ssrl ]]; then
  echo "REGISTRY=ghcr.io/ssrl is the chart's placeholder, which nothing publishes: use a registry you can push to" >&2
  exit 2
fi
if [[ -z ${ENGINE:-} ]]; then
  if command -v docker >/dev/null; then ENGINE=docker
  elif command -v podman >/dev/null; then ENGINE=podman
  else echo "neither docker nor podman is installed (or set ENGINE)" >&2; exit 1
  fi
fi
TAG=${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/pyproject.toml")}
# MinIO's tag names the source commit it is built from (docker/minio.Dockerfile's MINIO_VERSION).
MINIO_TAG=${MINIO_TAG:-$(sed -n 's/^    tag: "\(2[0-9]\{7\}-[0-9a-f]\{7\}\)"/\1/p' "$root/helm/ssrl/values.yaml")}
refs=("$REGISTRY/ssrl-generator:$TAG" "$REGISTRY/ssrl-trainer:$TAG" "$REGISTRY/ssrl-minio:$MINIO_TAG")
files=(generator.Dockerfile trainer.Dockerfile minio.Dockerfile)
for i in 0 1 2; do
  extra=()
  if [[ ${files[$i]} == trainer.Dockerfile && -n ${TRAINER_BUILD_ARGS:-} ]]; then read -r -a extra <<<"$TRAINER_BUILD_ARGS"; fi
  "$ENGINE" build -f "$root/docker/${files[$i]}" -t "${refs[$i]}" "${extra[@]}" "$root"
done
if [[ ${PUSH:-0} != 1 ]]; then
  printf 'built %s\n' "${refs[@]}"
  echo "push with: make images REGISTRY=$REGISTRY PUSH=1"
  exit 0
fi
digests=()
for ref in "${refs[@]}"; do
  if [[ $ENGINE == podman ]]; then
    file=$(mktemp)
    podman push --digestfile "$file" "$ref"
    digest=$(cat "$file"); rm -f "$file"
  else
    "$ENGINE" push "$ref"
    digest=$("$ENGINE" inspect --format '{{index .RepoDigests 0}}' "$ref"); digest=${digest#*@}
  fi
  digests+=("$digest")
  echo "pushed $ref@$digest"
done
echo "Pin them in the chart's values:"
echo "  --set images.registry=$REGISTRY"
for i in 0 1 2; do
  name=${refs[$i]##*/}; name=${name%%:*}; key=${name#ssrl-}
  echo "  --set images.$key.tag=${refs[$i]##*:}@${digests[$i]}"
done
