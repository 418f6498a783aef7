#!/usr/bin/env bash
# Builds Kueue (sigs.k8s.io/kueue, the version pinned below) with `go install` into
#   ${WASMRAY_CACHE:-$HOME/.cache/wasmray}/kueue/<key>/
# with its CRDs (config/components/crd/bases) and webhook manifests
# (config/components/webhook/manifests.yaml) copied beside the binary, where <key> names the
# version plus a hash of this script and the Go version. When that directory is complete
# nothing is built, so a warm call costs milliseconds. Prints the directory on stdout;
# progress goes to stderr. The module declares no replace directives, so `go install
# module@version` builds it as released, checked against the Go checksum database.
set -euo pipefail

version=v0.17.0
module=sigs.k8s.io/kueue

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${WASMRAY_CACHE:-$HOME/.cache/wasmray}/kueue
inputs_hash=$({ go env GOVERSION; sha256sum "$here/build.sh"; } | sha256sum | cut -c1-16)
dir="$cache_root/kueue-${version}-${inputs_hash}"

complete() { [[ -x $dir/bin/kueue && -f $dir/webhook/manifests.yaml && -d $dir/crds ]]; }
if complete; then
    echo "$dir"
    exit 0
fi

mkdir -p "$cache_root"
# One build at a time; a second caller waits, then finds the result.
exec 9>"$cache_root/.build.lock"
flock 9
if complete; then
    echo "$dir"
    exit 0
fi

start=$(date +%s)
echo "build.sh: building Kueue $version into $dir; a cold build takes several minutes" >&2
staging=$(mktemp -d "$cache_root/.build-XXXXXX")
trap 'rm -rf "$staging"' EXIT
mkdir -p "$staging/bin" "$staging/crds" "$staging/webhook"
CGO_ENABLED=0 GOBIN="$staging/bin" GOFLAGS=-mod=mod \
    go install -trimpath -ldflags "-s -w" "$module/cmd/kueue@$version"
source=$(go env GOMODCACHE)/$module@$version/config/components
cp "$source"/crd/bases/*.yaml "$staging/crds/"
cp "$source/webhook/manifests.yaml" "$staging/webhook/"
chmod -R u+w "$staging"
rm -rf "$dir"
mv "$staging" "$dir"
trap - EXIT
echo "build.sh: built in $(($(date +%s) - start))s" >&2
echo "$dir"
