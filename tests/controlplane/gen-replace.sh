#!/usr/bin/env bash
# Regenerates go.mod's replace block from the pinned k8s.io/kubernetes go.mod.
#
# k8s.io/kubernetes requires each staging module (k8s.io/api, k8s.io/client-go, ...) at
# v0.0.0 and maps it to ./staging/src/...; those replaces do not apply to a consumer, so
# this module points each staging module at its published release (v0.<minor>.<patch>).
# The list changes between releases (1.36 added k8s.io/streaming and k8s.io/cri-streaming),
# so it is derived from upstream's go.mod instead of maintained by hand. The godebug default
# is copied too, so the binaries run with upstream's GODEBUG settings.
#
# To move to another release: edit the k8s.io/kubernetes version in go.mod, run this script,
# then `go mod tidy`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

version=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v1\./ { print $2; exit }' go.mod)
if [[ -z $version ]]; then
    echo "gen-replace.sh: go.mod does not require k8s.io/kubernetes" >&2
    exit 1
fi
staging_version="v0.${version#v1.}"
upstream_gomod=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's#^[[:space:]]*"GoMod": "\(.*\)",$#\1#p')

modules=$(sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/.*#\1#p' "$upstream_gomod" | LC_ALL=C sort)
if [[ -z $modules ]]; then
    echo "gen-replace.sh: no staging replaces found in $upstream_gomod" >&2
    exit 1
fi

# Drop staging replaces that upstream no longer has, then (re)write the current ones.
# (Staging replaces are the ones that map a k8s.io module to the same path at a version.)
for old in $(awk '$2 == "=>" && $1 == $3 && $1 ~ /^k8s\.io\// { print $1 }' go.mod); do
    if ! grep -qx "$old" <<<"$modules"; then
        go mod edit -dropreplace="$old"
    fi
done
edits=()
for m in $modules; do
    edits+=("-replace=$m=$m@$staging_version")
done
go mod edit "${edits[@]}"

godebug=$(sed -n 's#^godebug \(.*\)$#\1#p' "$upstream_gomod")
if [[ -n $godebug ]]; then
    go mod edit -godebug="$godebug"
fi
echo "gen-replace.sh: $(wc -w <<<"$modules") staging modules replaced at $staging_version (k8s.io/kubernetes $version); now run: go mod tidy" >&2
