#!/usr/bin/env bash
# Builds the test control plane: testcp (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl and the `up` orchestrator, one multi-call binary) and kwok, into
#   ${WASMRAY_CACHE:-$HOME/.cache/wasmray}/controlplane/<key>/bin
# where <key> names the Kubernetes and kwok versions plus a hash of every input (go.mod,
# go.sum, sources, stages, this script, the Go version). When that directory already holds
# the binaries nothing is built, so a warm call costs milliseconds.
# Prints the bin directory on stdout; progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${WASMRAY_CACHE:-$HOME/.cache/wasmray}/controlplane

# Pinned versions, read from the modules that pin them.
pinned() { # pinned <module> <go.mod>: the version a go.mod requires
    awk -v m="$1" '{ for (i = 1; i < NF; i++) if ($i == m && $(i + 1) ~ /^v[0-9]/) { print $(i + 1); exit } }' "$2"
}
k8s_version=$(pinned k8s.io/kubernetes "$here/go.mod")
kwok_version=$(pinned sigs.k8s.io/kwok "$here/kwok/go.mod")
if [[ -z $k8s_version || -z $kwok_version ]]; then
    echo "build.sh: cannot read the pinned k8s.io/kubernetes or sigs.k8s.io/kwok version" >&2
    exit 1
fi

inputs_hash=$(
    cd "$here"
    {
        go env GOVERSION
        find . -type f \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' -o -name '*.yaml' -o -name 'build.sh' \) \
            -not -path './testdata/*' | LC_ALL=C sort | xargs sha256sum
    } | sha256sum | cut -c1-16
)
key="k8s-${k8s_version}-kwok-${kwok_version}-${inputs_hash}"
bin="$cache_root/$key/bin"

if [[ -x $bin/testcp && -x $bin/kwok && -L $bin/kubectl ]]; then
    echo "$bin"
    exit 0
fi

mkdir -p "$cache_root"
# One build per key at a time; a second caller waits, then finds the binaries.
exec 9>"$cache_root/.build.lock"
flock 9
if [[ -x $bin/testcp && -x $bin/kwok && -L $bin/kubectl ]]; then
    echo "$bin"
    exit 0
fi

staging=$(mktemp -d "$cache_root/.build-XXXXXX")
trap 'rm -rf "$staging"' EXIT

minor=${k8s_version#v1.}
minor=${minor%%.*}
# Without these the apiserver reports v0.0.0-master and clients that parse /version fail.
version_vars=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    version_vars+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    version_vars+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit=release-$k8s_version"
    version_vars+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

export CGO_ENABLED=0
start=$(date +%s)
echo "build.sh: building testcp (Kubernetes $k8s_version) into $bin; a cold build takes several minutes" >&2
(cd "$here" && go build -trimpath -ldflags "-s -w$version_vars" -o "$staging/testcp" ./cmd/testcp)
echo "build.sh: building kwok $kwok_version" >&2
(cd "$here/kwok" && go build -trimpath -ldflags "-s -w" -o "$staging/kwok" sigs.k8s.io/kwok/cmd/kwok)
ln -s testcp "$staging/kubectl"
chmod 755 "$staging"

mkdir -p "$cache_root/$key"
rm -rf "$bin"
mv "$staging" "$bin"
trap - EXIT
echo "build.sh: built in $(($(date +%s) - start))s" >&2
echo "$bin"
