#!/usr/bin/env bash
# Builds the real servers the tests run against, from source, at pinned versions, into a cache shared by
# every clone (~/.cache/ssrl-tools/<tool>-<version>/). A second run finds them and returns in milliseconds.
#
#   scripts/tools.sh            build everything, print the bin folders
#   scripts/tools.sh minio      build one tool (minio, weed, helm, kubectl, etcd, kube, training-operator, kwok)
#   scripts/tools.sh cluster    build the cluster tier's servers (etcd, kube-*, training operator, KWOK)
#   scripts/tools.sh realnode   the opt-in real-node tier (kubelet, kube-proxy, CoreDNS); not part of "all"
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
# The cluster tier (tests/cluster): a real control plane on loopback. Kubernetes publishes its servers only
# inside the k8s.io/kubernetes module, whose go.mod points its staging modules (k8s.io/api, ...) at
# ./staging; a small build module of ours replaces them with the published tags of the same release.
KUBE_VERSION=v1.34.2
ETCD_VERSION=v3.6.16
# The operator whose PyTorchJob CRD is in ../shared/crds (v1.9.0); KWOK stands in for GPU nodes' kubelets.
TRAINING_OPERATOR_MODULE=github.com/kubeflow/training-operator/cmd/training-operator.v1
TRAINING_OPERATOR_VERSION=v1.9.0
KWOK_MODULE=sigs.k8s.io/kwok/cmd/kwok
KWOK_VERSION=v0.7.0
# The real-node tier (tests/realnode.py, opt-in): kubelet and kube-proxy from the same build module as the other
# kube servers (they build with CGO off), and CoreDNS so Service names resolve inside pods.
COREDNS_MODULE=github.com/coredns/coredns
COREDNS_VERSION=v1.12.1

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

# Builds main packages of modules that cannot be `go install`ed as they are (replace directives, no main at
# the module root) from a generated build module under the cache: $1 name, $2 version, $3 go.mod body,
# $4 main.go body or "", then the packages to build.
build_module() {
  local name=$1 version=$2 gomod=$3 main=$4 dir tmp pkg
  shift 4
  dir=$(bin_dir "$name" "$version")
  if [ -f "$dir/.complete" ]; then
    echo "$dir"
    return
  fi
  command -v go >/dev/null || { echo "go is needed to build $name (apt-get install golang-go)" >&2; exit 1; }
  echo "building $name $version from source (first time only; several minutes)..." >&2
  tmp="$dir.tmp.$$"
  rm -rf "$tmp" && mkdir -p "$tmp/src" "$tmp/bin"
  printf '%s\n' "$gomod" >"$tmp/src/go.mod"
  [ -n "$main" ] && printf '%s\n' "$main" >"$tmp/src/main.go"
  # With a main.go, tidy resolves its imports; otherwise `go get` resolves each package's dependencies.
  if ! (cd "$tmp/src" && export GOFLAGS= CGO_ENABLED=0 &&
        if [ -n "$main" ]; then go mod tidy >&2; else go get "${@/%/@$version}" >&2; fi &&
        go build -trimpath -ldflags "${LDFLAGS:-}" -o "$tmp/bin/" "$@" >&2); then
    rm -rf "$tmp"
    echo "building $name failed" >&2
    exit 1
  fi
  rm -rf "$dir" && mkdir -p "$(dirname "$dir")" && mv "$tmp/bin" "$dir" && rm -rf "$tmp"
  touch "$dir/.complete"
  echo "$dir"
}

# The build module's go.mod: k8s.io/kubernetes at the pin, its staging modules at their published tags.
kube_gomod() {
  local minor=${KUBE_VERSION#v1.} staging gomod
  gomod="module ssrl.local/kubebuild
go 1.24
require k8s.io/kubernetes $KUBE_VERSION
replace ("
  for staging in api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider \
      cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api cri-client \
      csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms kube-aggregator \
      kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics mount-utils \
      pod-security-admission sample-apiserver sample-cli-plugin sample-controller; do
    gomod+="
  k8s.io/$staging => k8s.io/$staging v0.$minor"
  done
  gomod+="
)"
  printf '%s' "$gomod"
}

# Stamp the version the binaries report (helm checks charts' kubeVersion against it).
kube_ldflags() {
  local v=k8s.io/component-base/version minor=${KUBE_VERSION#v1.}
  echo "-X $v.gitVersion=$KUBE_VERSION -X $v.gitMajor=1 -X $v.gitMinor=${minor%%.*} -X $v.gitTreeState=clean"
}

kube() {
  LDFLAGS=$(kube_ldflags) build_module kubernetes "$KUBE_VERSION" "$(kube_gomod)" "" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler
}

# kubectl from the same release and build module (kustomize overlays in tests/test_deploy.py, the cluster tier):
# the tests use this one, never whatever kubectl is on PATH.
kubectl() {
  LDFLAGS=$(kube_ldflags) build_module kubectl "$KUBE_VERSION" "$(kube_gomod)" "" k8s.io/kubernetes/cmd/kubectl
}

etcd() {
  build_module etcd "$ETCD_VERSION" "module ssrl.local/etcd
go 1.24
require go.etcd.io/etcd/server/v3 $ETCD_VERSION" 'package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }' .
}

minio() { build minio "$MINIO_MODULE" "$MINIO_VERSION" minio; }
weed() { build seaweedfs "$WEED_MODULE" "$WEED_VERSION" weed ./weed; }
helm() { build helm "$HELM_MODULE" "$HELM_VERSION" helm; }
training_operator() {
  build training-operator "$TRAINING_OPERATOR_MODULE" "$TRAINING_OPERATOR_VERSION" training-operator.v1
}
kwok() { build kwok "$KWOK_MODULE" "$KWOK_VERSION" kwok; }
cluster() { etcd; kube; training_operator; kwok; }
# A separate bin folder (own .complete stamp), so the control plane's cached build is not redone.
kubelet() {
  LDFLAGS="$(kube_ldflags) -s -w" build_module kubelet "$KUBE_VERSION" "$(kube_gomod)" "" \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
}
coredns() { build coredns "$COREDNS_MODULE" "$COREDNS_VERSION" coredns; }
realnode() { kubelet; coredns; }

case "${1:-all}" in
  minio) minio ;;
  weed|seaweedfs) weed ;;
  helm) helm ;;
  kubectl) kubectl ;;
  etcd) etcd ;;
  kube|kubernetes) kube ;;
  training-operator) training_operator ;;
  kwok) kwok ;;
  cluster) cluster ;;
  kubelet|kube-proxy) kubelet ;;
  coredns) coredns ;;
  realnode) realnode ;;
  all) minio; weed; helm; kubectl; cluster ;;
  --path)
    echo "$(bin_dir minio "$MINIO_VERSION"):$(bin_dir seaweedfs "$WEED_VERSION"):$(bin_dir helm "$HELM_VERSION"):$(
      bin_dir kubectl "$KUBE_VERSION"):$(
      bin_dir etcd "$ETCD_VERSION"):$(bin_dir kubernetes "$KUBE_VERSION"):$(
      bin_dir training-operator "$TRAINING_OPERATOR_VERSION"):$(bin_dir kwok "$KWOK_VERSION"):$(
      bin_dir kubelet "$KUBE_VERSION"):$(bin_dir coredns "$COREDNS_VERSION")" ;;
  *) echo "usage: $0 [minio|weed|helm|kubectl|etcd|kube|training-operator|kwok|cluster|realnode|kubelet|coredns|all|--path]" >&2; exit 2 ;;
esac
