#!/usr/bin/env bash
# Images for the real-node tier (tests/realnode.py), built without any registry, as OCI archives that the tier
# imports into its containerd (`ctr images import`). Cached under ~/.cache/ssrl-realnode; a rerun rebuilds only
# what is missing (the generator image is rebuilt when the sources it copies change).
#
#   scripts/realnode/images.sh pause       localhost/ssrl-pause:1 (static C binary FROM scratch)
#   scripts/realnode/images.sh base        localhost/ssrl-base:bookworm (debootstrap minbase + python3, venv)
#   scripts/realnode/images.sh generator   localhost/ssrl-generator:realnode (docker/generator.Dockerfile
#                                          with BASE_IMAGE=the base above; everything after FROM unchanged)
#   scripts/realnode/images.sh all
# Prints each archive's path. Needs root, podman, debootstrap, gcc (apt-get install podman buildah debootstrap gcc).
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

pause() {
  local out=$CACHE/pause.oci.tar
  if [ ! -s "$out" ]; then
    local tmp; tmp=$(mktemp -d)
    gcc -static -Os -o "$tmp/pause" "$root/scripts/realnode/pause.c" && strip "$tmp/pause"
    tar -C "$tmp" -c pause | pm import --change 'ENTRYPOINT ["/pause"]' - localhost/ssrl-pause:1 >&2
    pm save --format oci-archive -o "$out.tmp" localhost/ssrl-pause:1 >&2 && mv "$out.tmp" "$out"
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
    pm save --format oci-archive -o "$out.tmp" "localhost/ssrl-base:$SUITE" >&2 && mv "$out.tmp" "$out"
  fi
  echo "$out"
}

generator() {
  base >/dev/null
  pm image exists "localhost/ssrl-base:$SUITE" || pm load -i "$CACHE/base-$SUITE.oci.tar" >&2
  local sum out
  sum=$(cd "$root" && cat docker/generator.Dockerfile pyproject.toml README.md $(find ssrl -type f -name '*.py' | sort) \
        | sha256sum | cut -c1-12)
  out=$CACHE/generator-$sum.oci.tar
  if [ ! -s "$out" ]; then
    # Host network for the build's pip (no CNI bridge or NAT rules made for it).
    pm build --network host --build-arg "BASE_IMAGE=localhost/ssrl-base:$SUITE" -f "$root/docker/generator.Dockerfile" \
      -t localhost/ssrl-generator:realnode "$root" >&2
    rm -f "$CACHE"/generator-*.oci.tar
    pm save --format oci-archive -o "$out.tmp" localhost/ssrl-generator:realnode >&2 && mv "$out.tmp" "$out"
  fi
  echo "$out"
}

case "${1:-all}" in
  pause) pause ;;
  base) base ;;
  generator) generator ;;
  all) pause; base; generator ;;
  *) echo "usage: $0 [pause|base|generator|all]" >&2; exit 2 ;;
esac
