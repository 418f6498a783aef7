#!/usr/bin/env bash
# The quickstart demo: a real local Kubernetes control plane (tests/controlplane, kwok nodes, and
# the pod runner, which runs the pods of the `default` namespace as real local Ray processes),
# the ray.io CRDs, the WasmRay host, a sample RayCluster whose head and worker join one Ray
# cluster, and a sample RayJob that runs on it to SUCCEEDED.
# Stops everything it started on Ctrl-C. With --once it exits after showing the result (CI uses
# this to prove the quickstart works).
set -euo pipefail
source "$(dirname "$0")/../../tests/scripts/common.sh"
cd "$repo_root"

once=false
[ "${1:-}" = "--once" ] && once=true
sample=${DEMO_SAMPLE:-crds/samples/ray-cluster.sample.yaml}
job_sample=${DEMO_JOB_SAMPLE:-crds/samples/ray-job.cluster-selector.yaml}

ensure_toolchain
log "building the control plane (first run: several minutes, then cached)"
cp_bin=$(tests/controlplane/build.sh)
log "preparing the Ray virtualenv (first run: about 80 MB from PyPI, then cached)"
ray_venv=$(tests/scripts/ray-venv.sh)
log "building the wasmray host, its built-in plugins and the pod runner"
cargo build --locked -p wasmray -p wasmray-e2e --bin wasmray --bin pod-runner
wasmray_bin="${CARGO_TARGET_DIR:-$repo_root/target}/debug/wasmray"
runner_bin="${CARGO_TARGET_DIR:-$repo_root/target}/debug/pod-runner"

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
"$cp_bin/testcp" up --dir "$run_dir" --pod-runner "$runner_bin" --pod-runner-arg="--ray-venv=$ray_venv" \
  >"$run_dir/testcp.out" 2>"$run_dir/testcp.err" &
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

log "opting the default namespace into the pod runner (its pods run real Ray)"
python3 -c 'import json, sys
for key, value in json.load(open(sys.argv[1]))["podRunner"]["namespaceAnnotations"].items():
    print(f"{key}={value}")' "$run_dir/ready.json" |
  while IFS= read -r annotation; do
    "${kubectl[@]}" annotate --overwrite namespace default "$annotation" >/dev/null
  done

log "starting the wasmray host (log in $run_dir/wasmray.log)"
# One replica: no leader election. /metrics, /healthz and /readyz on loopback only. The host
# runs beside the cluster, not in it: it reaches heads by pod IP (the pod runner relays them).
endpoints=127.0.0.1:${DEMO_METRICS_PORT:-8080}
"$wasmray_bin" --plugin-cache-dir "$WASMRAY_CACHE/plugins" --enable-leader-election=false \
  --ray-head-address pod-ip --metrics-addr "$endpoints" --health-probe-bind-address "$endpoints" \
  >"$run_dir/wasmray.log" 2>&1 &
pids+=($!)

log "applying $sample"
"${kubectl[@]}" apply -f "$sample"
name=$("${kubectl[@]}" get -f "$sample" -o jsonpath='{.metadata.name}')
log "waiting for RayCluster $name to be ready"
if ! "${kubectl[@]}" wait --for=jsonpath='{.status.state}'=ready --timeout=180s "raycluster/$name"; then
  tail -n 40 "$run_dir/wasmray.log" >&2
  exit 1
fi

head_ip=$("${kubectl[@]}" get "raycluster/$name" -o jsonpath='{.status.head.podIP}')
log "Ray's own view of $name: its nodes, as the GCS lists them (instance id = pod name)"
for _ in $(seq 1 60); do
  nodes=$("$ray_venv/bin/python" - "http://$head_ip:8265" <<'PY' 2>/dev/null || true
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/nodes?view=summary", timeout=5) as answer:
    summary = json.load(answer)["data"]["summary"]
for node in summary:
    raylet = node.get("raylet", {})
    if raylet.get("state") == "ALIVE":
        print(f"  {raylet.get('nodeName', '?'):<16} {raylet.get('instanceId', '?'):<40} {raylet.get('nodeTypeName', '?')}")
PY
)
  [ "$(printf '%s\n' "$nodes" | grep -c .)" -ge 2 ] && break
  sleep 2
done
printf '  %-16s %-40s %s\n%s\n' "node IP" "instance id (pod)" "node type (group)" "$nodes"

log "applying $job_sample"
"${kubectl[@]}" apply -f "$job_sample"
job=$("${kubectl[@]}" get -f "$job_sample" -o jsonpath='{.metadata.name}')
log "waiting for RayJob $job to finish on $name"
deployment=""
for _ in $(seq 1 300); do
  deployment=$("${kubectl[@]}" get "rayjob/$job" -o jsonpath='{.status.jobDeploymentStatus}')
  case "$deployment" in Complete | Failed) break ;; esac
  sleep 1
done
if [ "$deployment" != Complete ] && [ "$deployment" != Failed ]; then
  "${kubectl[@]}" get "rayjob/$job" -o yaml | tail -n 30 >&2
  tail -n 40 "$run_dir/wasmray.log" >&2
  exit 1
fi
job_id=$("${kubectl[@]}" get "rayjob/$job" -o jsonpath='{.status.jobId}')
status=$("${kubectl[@]}" get "rayjob/$job" -o jsonpath='{.status.jobStatus}')
echo
"${kubectl[@]}" get rayclusters,rayjobs
echo
"${kubectl[@]}" get pods,services,jobs -o wide
echo
log "the job's logs (Ray's, through the dashboard)"
curl -fsS "http://$head_ip:8265/api/jobs/$job_id/logs" | "$ray_venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["logs"], end="")'
echo
if [ "$status" != SUCCEEDED ]; then
  echo "RayJob $job ended $status" >&2
  exit 1
fi
log "RayJob $job: $status"
cat <<MSG
WasmRay is running. In another terminal:
  export KUBECONFIG=$KUBECONFIG
  alias kubectl=$cp_bin/kubectl
  kubectl get pods -l ray.io/node-type=head
  kubectl describe raycluster $name
  kubectl describe rayjob $job
  kubectl patch raycluster $name --type json -p '[{"op":"replace","path":"/spec/workerGroupSpecs/0/replicas","value":2}]'
  curl -s http://$head_ip:8265/nodes?view=summary   # Ray's dashboard of $name, by its head pod IP
  curl -s http://$endpoints/metrics | grep ^kuberay_   # KubeRay's metrics; also /healthz, /readyz
Host log: $run_dir/wasmray.log    Control plane logs: $run_dir/logs/    Pods' logs: $run_dir/pod-runner/pods/
MSG
if $once; then exit 0; fi
echo "Press Ctrl-C to stop and clean up."
wait "${pids[1]}"
