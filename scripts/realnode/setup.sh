#!/usr/bin/env bash
# Host prerequisites of the real-node tier (tests/realnode.py): root and Debian's container packages, installed
# here when missing (apt-get, as the README's machine notes describe). No daemon is started: the tier starts and
# stops containerd, the kubelet and the rest itself.
set -euo pipefail
pkgs=(containerd runc containernetworking-plugins iptables podman buildah debootstrap gcc)
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
if ((${#missing[@]})); then
  if [[ $(id -u) != 0 ]]; then
    echo "the real-node tier needs root and: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
