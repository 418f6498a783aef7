//! Native timing of one reconcile call, as the export runs it (parent JSON parse, decision,
//! output serialisation), for the calls a RayJob makes most: a new RayJob, and a running
//! K8sJobMode job with its cluster, submitter Job and Ray's answer. Prints median and p99;
//! run with `cargo bench -p wasmray-plugin-rayjob --bench reconcile`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::json;
use wasmray_plugin_rayjob::reconcile::RayJobReconciler;
use wasmray_plugin_sdk::reconciler::{
    JobObservation, RayJobInfo, RayObservations, ReconcileInput, run,
};
use wasmray_plugin_sdk::{HostFacts, ObservedObject, Timestamp};

const ITERATIONS: usize = 2000;
const NOW: i64 = 1_800_000_000;

fn parent(status: Option<serde_json::Value>) -> serde_json::Value {
    let container = |name: &str| {
        json!({"name": name, "image": "rayproject/ray:2.46.0",
               "resources": {"limits": {"cpu": "4", "memory": "16Gi"}, "requests": {"cpu": "4", "memory": "16Gi"}}})
    };
    let groups: Vec<serde_json::Value> = ["cpu", "gpu", "mem"]
        .iter()
        .map(|group| {
            json!({"groupName": group, "replicas": 33, "minReplicas": 0, "maxReplicas": 100,
                   "rayStartParams": {}, "template": {"spec": {"containers": [container("ray-worker")]}}})
        })
        .collect();
    let mut job = json!({
        "apiVersion": "ray.io/v1", "kind": "RayJob",
        "metadata": {"name": "bench", "namespace": "default", "uid": "0000-1111", "generation": 1},
        "spec": {
            "entrypoint": "python /home/ray/samples/sample_code.py",
            "runtimeEnvYAML": "pip:\n  - requests==2.26.0\nenv_vars:\n  counter_name: test_counter\n",
            "shutdownAfterJobFinishes": true, "ttlSecondsAfterFinished": 60,
            "activeDeadlineSeconds": 3600, "backoffLimit": 1,
            "rayClusterSpec": {
                "rayVersion": "2.46.0",
                "headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [container("ray-head")]}}},
                "workerGroupSpecs": groups
            }
        }
    });
    if let Some(status) = status {
        job["status"] = status;
    }
    job
}

fn input(
    parent: &serde_json::Value,
    children: Vec<ObservedObject>,
    ray: RayObservations,
) -> ReconcileInput {
    ReconcileInput {
        kind: "RayJob".into(),
        parent: parent.to_string(),
        pods: wasmray_plugin_sdk::ObservedPods::empty(),
        services: vec![],
        children,
        related: vec![],
        ray,
        failed_writes: Vec::new(),
        now: Timestamp {
            seconds: NOW,
            nanos: 0,
        },
        config: String::new(),
        host: HostFacts {
            operator_version: "bench".into(),
            feature_gates: vec![],
            settings: vec![],
        },
    }
}

fn object(api_version: &str, kind: &str, name: &str, value: serde_json::Value) -> ObservedObject {
    ObservedObject {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        object: value.to_string(),
    }
}

/// The whole call; the input is copied just before each call (untimed), as the host hands
/// over a fresh one.
fn measure(label: &str, input: &ReconcileInput) {
    let mut samples: Vec<Duration> = (0..ITERATIONS)
        .map(|_| {
            let input = input.clone();
            let start = Instant::now();
            black_box(run::<RayJobReconciler>(black_box(input))).expect("reconcile succeeds");
            start.elapsed()
        })
        .collect();
    samples.sort();
    println!(
        "{label:<58} median {:>8.1} us   p99 {:>8.1} us",
        samples[ITERATIONS / 2].as_secs_f64() * 1e6,
        samples[ITERATIONS * 99 / 100].as_secs_f64() * 1e6
    );
}

fn main() {
    measure(
        "new RayJob (names, status)",
        &input(&parent(None), vec![], RayObservations::default()),
    );

    let cluster_spec = parent(None)["spec"]["rayClusterSpec"].clone();
    let cluster = object(
        "ray.io/v1",
        "RayCluster",
        "bench-c1",
        json!({"apiVersion": "ray.io/v1", "kind": "RayCluster",
               "metadata": {"name": "bench-c1", "namespace": "default", "uid": "uid-bench-c1"},
               "spec": cluster_spec,
               "status": {"state": "ready", "readyWorkerReplicas": 99, "desiredWorkerReplicas": 99,
                          "endpoints": {"dashboard": "8265", "client": "10001", "gcs-server": "6379", "metrics": "8080"},
                          "head": {"serviceName": "bench-c1-head-svc", "podIP": "10.0.0.1"}}}),
    );
    let submitter = object(
        "batch/v1",
        "Job",
        "bench",
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "bench", "namespace": "default"},
               "status": {"active": 1}}),
    );
    let running = parent(Some(json!({
        "jobDeploymentStatus": "Running", "jobId": "bench-j1", "rayClusterName": "bench-c1",
        "dashboardURL": "bench-c1-head-svc.default.svc.cluster.local:8265",
        "startTime": "2027-01-15T07:59:00Z", "jobStatus": "RUNNING"
    })));
    let ray = RayObservations {
        jobs: vec![(
            "bench-j1".into(),
            JobObservation::Found(RayJobInfo {
                submission_id: "bench-j1".into(),
                status: "RUNNING".into(),
                message: Some("Job is currently running.".into()),
                error_type: None,
                start_time_ms: Some(((NOW - 30) * 1000) as u64),
                end_time_ms: None,
                entrypoint: Some("python /home/ray/samples/sample_code.py".into()),
                metadata: vec![],
            }),
        )],
        ..RayObservations::default()
    };
    measure(
        "running K8sJobMode (cluster of 3 groups, submitter, Ray answer)",
        &input(&running, vec![cluster, submitter], ray),
    );
}
