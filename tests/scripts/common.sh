# Shared settings for the project's scripts. Source it; it sets no options of the caller's shell.

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# Build outputs live outside the clone so that a fresh clone (CI) starts warm.
export WASMRAY_CACHE="${WASMRAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wasmray}"
# CI clones afresh each run: keep cargo's outputs in the cache, keyed by toolchain, so warm runs
# rebuild only the workspace's own crates. Developers keep ./target unless they set it.
if [ "${CI:-}" = "true" ] && [ -z "${CARGO_TARGET_DIR:-}" ]; then
  export CARGO_TARGET_DIR="$WASMRAY_CACHE/target/$(rustc --version | tr -cs 'A-Za-z0-9.' '-')"
  # Incremental state helps edit-compile loops, not clean clones: it costs gigabytes of cache
  # and makes a cold build slower.
  export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
fi

log() { printf '==> %s\n' "$*" >&2; }

# Installs what the build needs that a fresh machine may lack. Idempotent and quick when warm.
ensure_toolchain() {
  command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup" >&2; return 1; }
  command -v go >/dev/null || { echo "go not found: install Go 1.26 or newer" >&2; return 1; }
  if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    log "adding the wasm32-wasip2 Rust target (plugins compile to it)"
    rustup target add wasm32-wasip2
  fi
}
