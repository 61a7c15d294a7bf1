#!/usr/bin/env bash
# Images for the real-node tier (tests/realnode.py), built without any registry, as OCI archives that the tier
# imports into its containerd (`ctr images import`). Cached under ~/.cache/ssrl-realnode; a rerun rebuilds only
# what is missing (the generator image is rebuilt when the sources it copies change).
#
#   scripts/realnode/images.sh pause       localhost/ssrl-pause:1 (static C binary FROM scratch)
#   scripts/realnode/images.sh base        localhost/ssrl-base:bookworm (debootstrap minbase + python3, venv)
#   scripts/realnode/images.sh generator   localhost/ssrl-generator:realnode (docker/generator.Dockerfile
#                                          with BASE_IMAGE=the base above; everything after FROM unchanged)
#   scripts/realnode/images.sh init        localhost/ssrl-init:1 (the base + an nslookup over getent: the
#                                          training operator's init container for Worker pods, not alpine:3.10)
#   scripts/realnode/images.sh trainer     localhost/ssrl-trainer:realnode (docker/trainer.Dockerfile with
#                                          CUDA_IMAGE=the base above and CPU_BASE=1; multi-GB, so it stays in
#                                          podman's storage, no archive: prints podman:<ref> instead of a path)
#   scripts/realnode/images.sh minio       localhost/ssrl-minio:realnode (docker/minio.Dockerfile with GO_IMAGE=
#                                          the base + this host's Go toolchain, RUNTIME_IMAGE=the base; MinIO
#                                          compiled in the build from the Go module proxy, as for users)
#   scripts/realnode/images.sh save REF    writes REF from podman's storage to stdout (a Docker archive:
#                                          podman cannot stream an OCI one), for `ctr images import -`
#   scripts/realnode/images.sh all
# Prints each archive's path (podman:<ref> for the trainer). Needs root, podman, debootstrap, gcc (apt-get install podman buildah debootstrap gcc).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${SSRL_REALNODE_CACHE:-$HOME/.cache/ssrl-realnode}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: \(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
mkdir -p "$CACHE"

# podman with its own storage (never the user's), and the ulimits this machine allows: root here has no
# CAP_SYS_RESOURCE, so runc cannot raise RLIMIT_NOFILE above the hard limit ("error setting rlimit type 7").
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
# nproc: runc fails to set the hard limit itself here ("rlimit type 6"); 32768 (below it) works.
nproc=$(ulimit -Hu)
{ [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; } && nproc=32768
cat >"$CACHE/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
CONF
export CONTAINERS_CONF="$CACHE/containers.conf"
pm() { podman --root "$CACHE/podman/root" --runroot "$CACHE/podman/run" --storage-driver overlay "$@"; }

# REF from podman's storage as an OCI archive at OUT, written whole or not at all.
archive() { pm save --format oci-archive -o "$2.tmp" "$1" >&2 && mv "$2.tmp" "$2"; }

pause() {
  local out=$CACHE/pause.oci.tar
  if [ ! -s "$out" ]; then
    local tmp; tmp=$(mktemp -d)
    gcc -static -Os -o "$tmp/pause" "$root/scripts/realnode/pause.c" && strip "$tmp/pause"
    tar -C "$tmp" -c pause | pm import --change 'ENTRYPOINT ["/pause"]' - localhost/ssrl-pause:1 >&2
    archive localhost/ssrl-pause:1 "$out"
    rm -rf "$tmp"
  fi
  echo "$out"
}

# The tier's stand-in for python:3.11-slim-bookworm: Debian's python3 (3.11) with venv, `python` on PATH, and
# this host's CA bundle plus an /etc/pip.conf naming it, so `pip install` in an image build trusts what the host
# trusts (a test-only base; the Dockerfile itself is unchanged).
base() {
  local out=$CACHE/base-$SUITE.oci.tar rootfs=$CACHE/rootfs-$SUITE
  if [ ! -s "$out" ]; then
    if [ ! -f "$rootfs/.complete" ]; then
      rm -rf "$rootfs"
      debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$SUITE" "$rootfs" "$MIRROR" >&2
      rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
      touch "$rootfs/.complete"
    fi
    ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$rootfs/etc/pip.conf"
    tar -C "$rootfs" --exclude=./.complete -c . | pm import --change 'CMD ["python3"]' - "localhost/ssrl-base:$SUITE" >&2
    archive "localhost/ssrl-base:$SUITE" "$out"
  fi
  echo "$out"
}

# The base in podman's storage, for a FROM (built and archived once; loaded again after a prune).
base_in_podman() {
  base >/dev/null
  pm image exists "localhost/ssrl-base:$SUITE" || pm load -i "$CACHE/base-$SUITE.oci.tar" >&2
}

generator() {
  base_in_podman
  local sum out
  sum=$(cd "$root" && cat docker/generator.Dockerfile pyproject.toml README.md $(find ssrl -type f -name '*.py' | sort) \
        | sha256sum | cut -c1-12)
  out=$CACHE/generator-$sum.oci.tar
  if [ ! -s "$out" ]; then
    # Host network for the build's pip (no CNI bridge or NAT rules made for it).
    pm build --network host --build-arg "BASE_IMAGE=localhost/ssrl-base:$SUITE" -f "$root/docker/generator.Dockerfile" \
      -t localhost/ssrl-generator:realnode "$root" >&2
    rm -f "$CACHE"/generator-*.oci.tar
    pm image prune -f >/dev/null  # the previous build's now untagged layers
    archive localhost/ssrl-generator:realnode "$out"
  fi
  echo "$out"
}

# The operator's `init-pytorch` container (Workers wait for the Master's DNS name) runs sh, seq and nslookup; its
# default image, alpine:3.10, comes from Docker Hub. Air-gapped clusters set the operator's
# --pytorch-init-container-image to a mirror; the tier gives it the base with an `nslookup` that asks the libc
# resolver (getent), as the pods' own processes resolve (Debian's busybox nslookup reported NXDOMAIN for a
# headless Service name that getent, Python and CoreDNS itself resolved).
init() {
  base_in_podman
  local out=$CACHE/init-getent.oci.tar
  if [ ! -s "$out" ]; then
    local ctx; ctx=$(mktemp -d)
    printf '#!/bin/sh\n# nslookup NAME: exit 0 when the libc resolver finds NAME (search domains included)\nexec getent hosts "$1"\n' \
      >"$ctx/nslookup"
    chmod 755 "$ctx/nslookup"
    printf 'FROM localhost/ssrl-base:%s\nCOPY nslookup /usr/local/bin/nslookup\n' "$SUITE" \
      | pm build -t localhost/ssrl-init:1 -f - "$ctx" >&2
    rm -rf "$ctx"
    archive localhost/ssrl-init:1 "$out"
  fi
  echo "$out"
}

# The tier's stand-in for golang:<version>-bookworm: the base with this host's Go toolchain (the version
# scripts/tools.sh builds with) at the official image's paths.
golang() {
  base_in_podman
  local version; version=$(go env GOVERSION)
  if ! pm image exists "localhost/ssrl-golang:$version"; then
    printf 'FROM localhost/ssrl-base:%s\nCOPY . /usr/local/go\nENV GOPATH=/go GOTOOLCHAIN=local PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n' \
      "$SUITE" | pm build -t "localhost/ssrl-golang:$version" -f - "$(go env GOROOT)" >&2
  fi
  echo "localhost/ssrl-golang:$version"
}

# MinIO: the chart's bundled store. The Dockerfile compiles it (go install at the pinned commit); the host's Go
# module and build caches are lent to the build, so only the first build downloads and compiles everything.
minio() {
  local go_image sum out
  go_image=$(golang)
  sum=$(sha256sum <"$root/docker/minio.Dockerfile" | cut -c1-12)
  out=$CACHE/minio-$sum.oci.tar
  if [ ! -s "$out" ]; then
    mkdir -p "$CACHE/go-build" "$(go env GOMODCACHE)"
    pm build --network host --build-arg "GO_IMAGE=$go_image" --build-arg "RUNTIME_IMAGE=localhost/ssrl-base:$SUITE" \
      -v "$(go env GOMODCACHE):/go/pkg/mod" -v "$CACHE/go-build:/root/.cache/go-build" \
      -f "$root/docker/minio.Dockerfile" -t localhost/ssrl-minio:realnode "$root" >&2
    rm -f "$CACHE"/minio-*.oci.tar
    pm image prune -f >/dev/null
    archive localhost/ssrl-minio:realnode "$out"
  fi
  echo "$out"
}

# The trainer: torch's CUDA wheels make it ~7 GB, so it is not written out as an archive (the tier streams it into
# containerd with `save`). podman's layer cache keeps the dependency stage: a source edit rebuilds the wheel layer.
trainer() {
  base_in_podman
  local sum stamp=$CACHE/trainer.sum
  sum=$(cd "$root" && cat docker/trainer.Dockerfile docker/trainer-constraints.txt pyproject.toml README.md \
        $(find ssrl -type f -name '*.py' | sort) | sha256sum | cut -c1-12)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ] || ! pm image exists localhost/ssrl-trainer:realnode; then
    local args=(--network host --build-arg "CUDA_IMAGE=localhost/ssrl-base:$SUITE" --build-arg CPU_BASE=1
                -f "$root/docker/trainer.Dockerfile")
    # The dependency stage tagged on its own, so pruning the previous build's leftovers never drops it.
    pm build "${args[@]}" --target deps -t localhost/ssrl-trainer-deps:realnode "$root" >&2
    pm build "${args[@]}" -t localhost/ssrl-trainer:realnode "$root" >&2
    pm image prune -f >/dev/null  # the previous build's now untagged layers
    echo "$sum" >"$stamp"
  fi
  echo podman:localhost/ssrl-trainer:realnode
}

case "${1:-all}" in
  pause) pause ;;
  base) base ;;
  generator) generator ;;
  trainer) trainer ;;
  init) init ;;
  minio) minio ;;
  save) pm save --format docker-archive "$2" ;;
  all) pause; base; generator; init; minio; trainer ;;
  *) echo "usage: $0 [pause|base|generator|init|minio|trainer|all|save REF]" >&2; exit 2 ;;
esac
