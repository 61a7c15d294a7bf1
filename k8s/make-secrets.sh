#!/usr/bin/env bash
# Store credentials for k8s/ (kustomize's secretGenerator reads base/secrets/*.env, which git ignores): MinIO's root
# user and one scoped user per workload (the bucket-init Job creates them with policies limited to their prefixes,
# see ssrl/cluster/store_users.py). Existing files are kept, so re-running never changes a deployed password.
# Without these files `kubectl kustomize` / `kubectl apply -k` refuse to render: there is no default password.
#   k8s/make-secrets.sh [folder]      (default: the base/secrets folder beside this script)
set -euo pipefail
dir=${1:-$(cd "$(dirname "$0")" && pwd)/base/secrets}
mkdir -p "$dir"
random() { LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 40; }
for role in root generator trainer eval reader; do
  file="$dir/$role.env"
  [[ -s $file ]] && continue
  user=$([[ $role == root ]] && echo ssrl-admin || echo "ssrl-$role")
  (umask 077; printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n' "$user" "$(random)" >"$file.tmp")
  mv "$file.tmp" "$file"
  echo "wrote $file"
done
