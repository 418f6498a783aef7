#!/usr/bin/env bash
# Checks the Helm chart as CI does: the chart's CRDs are the generated ones, `helm lint` passes
# and `helm template` renders what each install mode promises, for the default values and for
# singleNamespaceInstall with watchNamespace.
# Usage: deploy/helm/check.sh [helm binary]   (default: built by tests/tools/helm/build.sh)
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
chart="$repo_root/deploy/helm/wasmray"
helm=${1:-$("$repo_root/tests/tools/helm/build.sh")}
fail() { echo "deploy/helm/check.sh: $*" >&2; exit 1; }

# The chart ships the same CRD files as crds/generated (Helm installs crds/ verbatim).
for generated in "$repo_root"/crds/generated/*.yaml; do
  name=$(basename "$generated")
  cmp -s "$generated" "$chart/crds/$name" ||
    fail "deploy/helm/wasmray/crds/$name differs from crds/generated/$name: run cp crds/generated/*.yaml deploy/helm/wasmray/crds/"
done
for shipped in "$chart"/crds/*.yaml; do
  [ -f "$repo_root/crds/generated/$(basename "$shipped")" ] ||
    fail "deploy/helm/wasmray/crds/$(basename "$shipped") is not in crds/generated"
done

single=(--set singleNamespaceInstall=true --set 'watchNamespace={team-a,team-b}')
"$helm" lint --strict "$chart" >/dev/null
"$helm" lint --strict "$chart" "${single[@]}" >/dev/null

kinds() { grep -E '^kind: ' | sort | uniq -c | tr -s ' ' | sed 's/^ //'; }
cluster=$("$helm" template wasmray "$chart" --namespace ray-system)
namespaced=$("$helm" template wasmray "$chart" --namespace ray-system "${single[@]}")

# Default: one ClusterRole and binding, the lease Role, the operator and its Service.
for expected in "1 kind: ClusterRole" "1 kind: ClusterRoleBinding" "1 kind: Role" "1 kind: RoleBinding" \
  "1 kind: Deployment" "1 kind: Service" "1 kind: ServiceAccount"; do
  kinds <<<"$cluster" | grep -qx "$expected" || fail "default values: expected $expected; got: $(kinds <<<"$cluster" | tr '\n' ';')"
done
grep -q -- '--watch-namespace' <<<"$cluster" && fail "default values must watch all namespaces"

# singleNamespaceInstall: no cluster-wide grant; a Role per watched namespace plus the lease Role.
kinds <<<"$namespaced" | grep -q "ClusterRole" && fail "singleNamespaceInstall rendered a ClusterRole"
kinds <<<"$namespaced" | grep -qx "3 kind: Role" || fail "singleNamespaceInstall: expected 3 Roles (team-a, team-b, lease)"
grep -q -- '--watch-namespace=team-a,team-b' <<<"$namespaced" || fail "singleNamespaceInstall: --watch-namespace not passed"
for namespace in team-a team-b; do
  grep -q "namespace: $namespace" <<<"$namespaced" || fail "singleNamespaceInstall: nothing in $namespace"
done
# Without watchNamespace it watches the release namespace.
alone=$("$helm" template wasmray "$chart" --namespace ray-system --set singleNamespaceInstall=true)
grep -q -- '--watch-namespace=ray-system' <<<"$alone" || fail "singleNamespaceInstall alone must watch the release namespace"

# Plugin settings become the --config file.
plugins=$("$helm" template wasmray "$chart" --set plugins.bindings.RayCluster=raycluster \
  --set 'plugins.load[0].name=policy' --set 'plugins.load[0].configMap=policy' --set 'plugins.load[0].key=p.wasm')
grep -q -- '--config=/etc/wasmray/config/config.yaml' <<<"$plugins" || fail "plugin bindings must pass --config"
grep -q -- '--plugin=policy=/etc/wasmray/plugins/policy/p.wasm' <<<"$plugins" || fail "plugins.load must pass --plugin"

# Values the chart refuses.
"$helm" template wasmray "$chart" --set reconcileConcurrency=0 >/dev/null 2>&1 && fail "reconcileConcurrency=0 must fail"
"$helm" template wasmray "$chart" --set replicas=2 --set leaderElectionEnabled=false >/dev/null 2>&1 &&
  fail "replicas=2 without leader election must fail"
echo "deploy/helm/check.sh: chart OK (lint, templates, CRDs match crds/generated)" >&2
