#!/usr/bin/env bash
# The whole test suite, as CI runs it: lint, unit tests, and end-to-end tests against one real
# control plane (tests/controlplane) shared by every test binary of the run.
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$repo_root"
ensure_toolchain

log "building the test control plane"
cp_bin=$(tests/controlplane/build.sh)
export WASMRAY_CONTROLPLANE_BIN="$cp_bin/testcp"

log "preparing the Ray virtualenv (real Ray head for the Ray e2e tests; cached after the first run)"
WASMRAY_RAY_VENV=$(tests/scripts/ray-venv.sh)
export WASMRAY_RAY_VENV

log "building Kueue (the Kueue tests run the real one; cached after the first run)"
WASMRAY_KUEUE_DIR=$(tests/tools/kueue/build.sh)
export WASMRAY_KUEUE_DIR

log "building helm and checking the Helm chart (lint, templates, CRD drift)"
helm_bin=$(tests/tools/helm/build.sh)
export WASMRAY_HELM_BIN="$helm_bin"
deploy/helm/check.sh "$helm_bin"

log "checking format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Same flags as build.sh, so vet reuses the compiled export data of the Kubernetes packages.
(cd tests/controlplane && CGO_ENABLED=0 go vet -trimpath ./...)

run_dir=$(mktemp -d "${TMPDIR:-/tmp}/wasmray-test.XXXXXX")
cp_pid=""
stop_controlplane() {
  if [ -n "$cp_pid" ] && kill -0 "$cp_pid" 2>/dev/null; then
    kill -TERM "$cp_pid" 2>/dev/null || true
    wait "$cp_pid" 2>/dev/null || true
  fi
}
trap stop_controlplane EXIT

log "building the pod runner (runs the Ray tests' pods as real Ray processes)"
cargo build --locked -p wasmray-e2e --bin pod-runner
runner_bin="${CARGO_TARGET_DIR:-$repo_root/target}/debug/pod-runner"

log "starting the control plane in $run_dir"
"$cp_bin/testcp" up --dir "$run_dir" --pod-runner "$runner_bin" \
  --pod-runner-arg="--ray-venv=$WASMRAY_RAY_VENV" >"$run_dir.log" 2>&1 &
cp_pid=$!
for _ in $(seq 1 240); do
  [ -f "$run_dir/ready.json" ] && break
  kill -0 "$cp_pid" 2>/dev/null || { cat "$run_dir.log" >&2; echo "control plane failed to start" >&2; exit 1; }
  sleep 0.5
done
[ -f "$run_dir/ready.json" ] || { cat "$run_dir.log" >&2; echo "control plane not ready in 120 s" >&2; exit 1; }
export WASMRAY_TEST_CONTROLPLANE="$run_dir"

log "running the tests, in two lanes: the real-Ray end-to-end tests, and the rest"
python3 tests/scripts/test-lanes.py autoscaling kueue ray_client ray_pods rayjob rayservice
