#!/usr/bin/env bash
# Builds the real servers the tests run against, from source, at pinned versions, into a cache shared by
# every clone (~/.cache/ssrl-tools/<tool>-<version>/). A second run finds them and returns in milliseconds.
#
#   scripts/tools.sh            build everything, print the bin folders
#   scripts/tools.sh minio      build one tool (minio, weed, helm)
#   scripts/tools.sh --path     print a PATH fragment with every tool's bin folder
set -euo pipefail

# MinIO's community edition is source-only and archived. The RELEASE.2025-10-15T17-29-55Z tag is not served
# by the Go module proxy reachable here (403), so we pin the archive's final commit (2026-02-12), which
# contains that release and its security fix.
MINIO_MODULE=github.com/minio/minio
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
# A second, independent S3 implementation, so compatibility is tested, not assumed. Its go.mod has a
# replace directive, which `go install module@version` refuses; so the pinned module is downloaded and its
# ./weed package built in place (same sources, same go.sum).
WEED_MODULE=github.com/seaweedfs/seaweedfs
WEED_VERSION=v0.0.0-20261109003541-7506e5f91cd6
# Helm renders and lints the chart in helm/ssrl (tests/test_deploy.py).
HELM_MODULE=helm.sh/helm/v3/cmd/helm
HELM_VERSION=v3.19.0

CACHE=${SSRL_TOOLS_CACHE:-$HOME/.cache/ssrl-tools}

bin_dir() { echo "$CACHE/$1-$2/bin"; }

build() { # name module version binary [package-in-module]
  local name=$1 module=$2 version=$3 binary=$4 package=${5:-} dir
  dir=$(bin_dir "$name" "$version")
  if [ -x "$dir/$binary" ]; then
    echo "$dir"
    return
  fi
  command -v go >/dev/null || { echo "go is needed to build $name (apt-get install golang-go)" >&2; exit 1; }
  mkdir -p "$dir"
  echo "building $name $version from source (first time only; several minutes)..." >&2
  local tmp="$dir.tmp.$$"
  rm -rf "$tmp" && mkdir -p "$tmp"
  # CGO off: static binaries; -trimpath: reproducible. GOFLAGS cleared so a user's flags do not interfere.
  local ok=1
  if [ -z "$package" ]; then
    GOFLAGS= CGO_ENABLED=0 GOBIN="$tmp" go install -trimpath "$module@$version" >&2 || ok=0
  else
    local src
    src=$(GOFLAGS= go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [ -n "$src" ] && (cd "$src" && GOFLAGS= CGO_ENABLED=0 go build -trimpath -o "$tmp/$binary" "$package" >&2) || ok=0
  fi
  if [ "$ok" != 1 ]; then
    rm -rf "$tmp"
    echo "building $name failed" >&2
    exit 1
  fi
  mv "$tmp/$binary" "$dir/$binary" && rm -rf "$tmp"
  echo "$dir"
}

minio() { build minio "$MINIO_MODULE" "$MINIO_VERSION" minio; }
weed() { build seaweedfs "$WEED_MODULE" "$WEED_VERSION" weed ./weed; }
helm() { build helm "$HELM_MODULE" "$HELM_VERSION" helm; }

case "${1:-all}" in
  minio) minio ;;
  weed|seaweedfs) weed ;;
  helm) helm ;;
  all) minio; weed; helm ;;
  --path) echo "$(bin_dir minio "$MINIO_VERSION"):$(bin_dir seaweedfs "$WEED_VERSION"):$(bin_dir helm "$HELM_VERSION")" ;;
  *) echo "usage: $0 [minio|weed|helm|all|--path]" >&2; exit 2 ;;
esac
