#!/usr/bin/env bash
# The quickstart demo: a real local Kubernetes control plane (tests/controlplane, kwok nodes),
# the ray.io CRDs, the WasmRay host, a sample RayCluster that it brings to ready and a sample
# RayJob whose RayCluster it brings to ready.
# Stops everything it started on Ctrl-C. With --once it exits after showing the result (CI uses
# this to prove the quickstart works).
set -euo pipefail
source "$(dirname "$0")/../../tests/scripts/common.sh"
cd "$repo_root"

once=false
[ "${1:-}" = "--once" ] && once=true
sample=${DEMO_SAMPLE:-crds/samples/ray-cluster.sample.yaml}
job_sample=${DEMO_JOB_SAMPLE:-crds/samples/ray-job.k8s-job-mode.yaml}

ensure_toolchain
log "building the control plane (first run: several minutes, then cached)"
cp_bin=$(tests/controlplane/build.sh)
log "building the wasmray host and its built-in plugins"
cargo build --locked -p wasmray
wasmray_bin="${CARGO_TARGET_DIR:-$repo_root/target}/debug/wasmray"

run_dir=$(mktemp -d "${TMPDIR:-/tmp}/wasmray-demo.XXXXXX")
pids=()
cleanup() {
  trap - EXIT INT TERM
  log "stopping the demo"
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  rm -rf "$run_dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "starting the control plane (logs in $run_dir/logs)"
"$cp_bin/testcp" up --dir "$run_dir" >"$run_dir/testcp.out" 2>"$run_dir/testcp.err" &
pids+=($!)
for _ in $(seq 1 360); do
  [ -f "$run_dir/ready.json" ] && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$run_dir/testcp.err" >&2; exit 1; }
  sleep 0.5
done
[ -f "$run_dir/ready.json" ] || { cat "$run_dir/testcp.err" >&2; echo "control plane not ready" >&2; exit 1; }
export KUBECONFIG="$run_dir/kubeconfig"
kubectl=("$cp_bin/kubectl")

log "installing the ray.io CRDs (server-side apply: they exceed client-side apply's annotation limit)"
"${kubectl[@]}" apply --server-side -f crds/generated/ >/dev/null
"${kubectl[@]}" wait --for condition=Established --timeout=60s \
  crd/rayclusters.ray.io crd/rayjobs.ray.io crd/rayservices.ray.io >/dev/null

log "starting the wasmray host (log in $run_dir/wasmray.log)"
# One replica: no leader election. /metrics, /healthz and /readyz on loopback only.
endpoints=127.0.0.1:${DEMO_METRICS_PORT:-8080}
"$wasmray_bin" --plugin-cache-dir "$WASMRAY_CACHE/plugins" --enable-leader-election=false \
  --metrics-addr "$endpoints" --health-probe-bind-address "$endpoints" >"$run_dir/wasmray.log" 2>&1 &
pids+=($!)

log "applying $sample"
"${kubectl[@]}" apply -f "$sample"
name=$("${kubectl[@]}" get -f "$sample" -o jsonpath='{.metadata.name}')
log "waiting for RayCluster $name to be ready"
if ! "${kubectl[@]}" wait --for=jsonpath='{.status.state}'=ready --timeout=180s "raycluster/$name"; then
  tail -n 40 "$run_dir/wasmray.log" >&2
  exit 1
fi

log "applying $job_sample"
"${kubectl[@]}" apply -f "$job_sample"
job=$("${kubectl[@]}" get -f "$job_sample" -o jsonpath='{.metadata.name}')
log "waiting for RayJob $job's RayCluster to be ready"
if ! "${kubectl[@]}" wait --for=jsonpath='{.status.rayClusterName}' --timeout=60s "rayjob/$job" ||
  ! "${kubectl[@]}" wait --for=jsonpath='{.status.state}'=ready --timeout=180s \
    "raycluster/$("${kubectl[@]}" get "rayjob/$job" -o jsonpath='{.status.rayClusterName}')"; then
  tail -n 40 "$run_dir/wasmray.log" >&2
  exit 1
fi

echo
"${kubectl[@]}" get rayclusters,rayjobs
echo
"${kubectl[@]}" get pods,services,jobs -o wide
echo
# kwok pods run no containers, so no Ray dashboard answers and the RayJob stays Initializing;
# tests/e2e/tests/rayjob.rs runs RayJobs to completion against a real Ray head.
echo "(kwok pods run no Ray processes: the RayJob waits for a dashboard that never answers.)"
echo
cat <<MSG
WasmRay is running. In another terminal:
  export KUBECONFIG=$KUBECONFIG
  alias kubectl=$cp_bin/kubectl
  kubectl get pods -l ray.io/node-type=head
  kubectl describe raycluster $name
  kubectl describe rayjob $job
  kubectl patch raycluster $name --type json -p '[{"op":"replace","path":"/spec/workerGroupSpecs/0/replicas","value":3}]'
  kubectl apply -f crds/samples/ray-cluster.gpu-heterogeneous.yaml   # more RayCluster samples in crds/samples/
  curl -s http://$endpoints/metrics | grep ^kuberay_   # KubeRay's metrics; also /healthz, /readyz
Host log: $run_dir/wasmray.log    Control plane logs: $run_dir/logs/
MSG
if $once; then exit 0; fi
echo "Press Ctrl-C to stop and clean up."
wait "${pids[1]}"
