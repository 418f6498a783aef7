#!/usr/bin/env bash
# Builds the helm CLI pinned in go.mod into
#   ${WASMRAY_CACHE:-$HOME/.cache/wasmray}/helm/<key>/helm
# where <key> names the helm version plus a hash of the inputs (go.mod, go.sum, this script,
# the Go version). When that file already exists nothing is built, so a warm call costs
# milliseconds. Prints the path of the helm binary on stdout; progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${WASMRAY_CACHE:-$HOME/.cache/wasmray}/helm

helm_version=$(awk '$1 == "helm.sh/helm/v3" && $2 ~ /^v[0-9]/ { print $2; exit }' "$here/go.mod")
if [[ -z $helm_version ]]; then
    echo "build.sh: cannot read the pinned helm.sh/helm/v3 version from go.mod" >&2
    exit 1
fi
inputs_hash=$(
    cd "$here"
    { go env GOVERSION; sha256sum go.mod go.sum build.sh; } | sha256sum | cut -c1-16
)
bin="$cache_root/helm-${helm_version}-${inputs_hash}/helm"

if [[ -x $bin ]]; then
    echo "$bin"
    exit 0
fi

mkdir -p "$cache_root"
# One build at a time; a second caller waits, then finds the binary.
exec 9>"$cache_root/.build.lock"
flock 9
if [[ -x $bin ]]; then
    echo "$bin"
    exit 0
fi

start=$(date +%s)
echo "build.sh: building helm $helm_version into $bin; a cold build takes a few minutes" >&2
staging=$(mktemp -d "$cache_root/.build-XXXXXX")
trap 'rm -rf "$staging"' EXIT
# helm's own release flags (its Makefile): the version it reports, and the Kubernetes version
# `helm template` and `helm lint` assume, derived from the client-go it builds with
# (v0.X.Y means Kubernetes 1.X).
client_go=$(awk '$1 == "k8s.io/client-go" && $2 ~ /^v0\.[0-9]+\./ { print $2; exit }' "$here/go.mod")
k8s_minor=$(cut -d. -f2 <<<"$client_go")
[[ -n $k8s_minor ]] || { echo "build.sh: cannot read the k8s.io/client-go version from go.mod" >&2; exit 1; }
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done
(cd "$here" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$staging/helm" helm.sh/helm/v3/cmd/helm)
mkdir -p "$(dirname "$bin")"
mv "$staging/helm" "$bin"
echo "build.sh: built in $(($(date +%s) - start))s" >&2
echo "$bin"
