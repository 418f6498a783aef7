//! Native timing of one reconcile call (parent JSON parse included), for the two cases of
//! the goal: a settled cluster of 3 worker groups with 100 observed pods, and a new
//! cluster. Prints median and p99; run with
//! `cargo bench -p wasmray-plugin-raycluster --bench reconcile`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use wasmray_plugin_raycluster::reconcile::RayClusterReconciler;
use wasmray_plugin_sdk::reconciler::{ReconcileInput, run};
use wasmray_plugin_sdk::record::{self, Pod, PodCondition};

#[path = "../tests/support/mod.rs"]
mod support;
use support::{head_service, reconcile_input};

const GROUPS: [&str; 3] = ["cpu", "gpu", "mem"];
const WORKERS_PER_GROUP: usize = 33;

fn parent() -> serde_json::Value {
    let worker = |name: &str| {
        serde_json::json!({
            "groupName": name, "replicas": WORKERS_PER_GROUP, "minReplicas": 0, "maxReplicas": 100,
            "rayStartParams": {},
            "template": {"spec": {"containers": [{
                "name": "ray-worker", "image": "rayproject/ray:2.46.0",
                "resources": {"limits": {"cpu": "4", "memory": "16Gi"}, "requests": {"cpu": "4", "memory": "16Gi"}}
            }]}}
        })
    };
    serde_json::json!({
        "apiVersion": "ray.io/v1", "kind": "RayCluster",
        "metadata": {"name": "bench", "namespace": "default", "uid": "0000-1111", "generation": 1},
        "spec": {
            "headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [{
                "name": "ray-head", "image": "rayproject/ray:2.46.0",
                "ports": [{"name": "gcs-server", "containerPort": 6379}, {"name": "dashboard", "containerPort": 8265}, {"name": "client", "containerPort": 10001}],
                "resources": {"limits": {"cpu": "2", "memory": "8Gi"}}
            }]}}},
            "workerGroupSpecs": GROUPS.iter().map(|g| worker(g)).collect::<Vec<_>>()
        }
    })
}

fn pod(name: String, node_type: &str, group: &str) -> Pod {
    let labels = [
        ("ray.io/cluster", "bench"),
        ("ray.io/node-type", node_type),
        ("ray.io/group", group),
        ("ray.io/is-ray-node", "yes"),
    ];
    Pod {
        uid: format!("uid-{name}"),
        pod_ip: Some("10.0.0.1".into()),
        name,
        resource_version: "1".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations: vec![],
        creation_timestamp: Some(record::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        deletion_timestamp: None,
        node_name: Some("kwok-node-0".into()),
        restart_policy: Some("Always".into()),
        scheduler_name: None,
        phase: Some("Running".into()),
        reason: None,
        message: None,
        host_ip: None,
        start_time: None,
        conditions: vec![PodCondition {
            condition_type: "Ready".into(),
            status: "True".into(),
            reason: None,
            message: None,
            last_transition_time: None,
        }],
        init_container_statuses: vec![],
        container_statuses: vec![],
    }
}

const ITERATIONS: usize = 2000;

/// The whole call as the export runs it: parse, decide, serialise, drop the input. The
/// input is copied just before each call (untimed), as the host hands over a fresh one.
fn measure(label: &str, input: &ReconcileInput) {
    let samples = (0..ITERATIONS)
        .map(|_| {
            let input = input.clone();
            let start = Instant::now();
            black_box(run::<RayClusterReconciler>(black_box(input))).expect("reconcile succeeds");
            start.elapsed()
        })
        .collect();
    report(label, samples);
}

/// Median and p99 of `ITERATIONS` runs of `call`.
fn time(label: &str, mut call: impl FnMut()) {
    let samples = (0..ITERATIONS)
        .map(|_| {
            let start = Instant::now();
            call();
            start.elapsed()
        })
        .collect();
    report(label, samples);
}

fn report(label: &str, mut samples: Vec<Duration>) {
    let iterations = samples.len();
    samples.sort();
    let median = samples[iterations / 2];
    let p99 = samples[iterations * 99 / 100];
    println!(
        "{label:<52} median {:>8.1} us   p99 {:>8.1} us",
        median.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
}

fn main() {
    let mut parent = parent();
    let mut pods = vec![pod("bench-head-x".into(), "head", "headgroup")];
    for group in GROUPS {
        pods.extend(
            (0..WORKERS_PER_GROUP)
                .map(|i| pod(format!("bench-{group}-worker-{i:05}"), "worker", group)),
        );
    }
    let service = head_service("bench");

    let new_cluster = reconcile_input(&parent, &[], vec![], &[]);
    measure("new cluster (1 head + 3 groups to create)", &new_cluster);

    // Settle: store the status the plugin computes, so the measured call is a no-op.
    let first =
        run::<RayClusterReconciler>(reconcile_input(&parent, &pods, vec![service.clone()], &[]))
            .expect("reconcile");
    parent["status"] =
        serde_json::from_str(first.status.as_deref().expect("status")).expect("status JSON");
    let settled = reconcile_input(&parent, &pods, vec![service], &[]);
    let check = run::<RayClusterReconciler>(settled.clone()).expect("reconcile");
    assert!(check.status.is_none() && check.create_pods.is_empty() && check.delete.is_empty());
    measure("settled (3 groups, 100 observed pods, no-op)", &settled);

    // Where the time goes: the parent's JSON parse and validation are fixed costs.
    time("  of which: parse the parent JSON", || {
        black_box(
            serde_json::from_str::<wasmray_crds::RayCluster>(black_box(&settled.parent))
                .expect("parses"),
        );
    });
    let request = wasmray_plugin_sdk::reconciler::Request::<wasmray_crds::RayCluster>::from_input(
        settled.clone(),
    )
    .expect("parses");
    time("  of which: the decision (input kept, not dropped)", || {
        black_box(wasmray_plugin_raycluster::reconcile::decide(black_box(
            &request,
        )))
        .expect("decides");
    });
    let cluster = request.parent.clone();
    time("  of which: validation", || {
        black_box(wasmray_crds::validate_ray_cluster(
            black_box(&cluster),
            &Default::default(),
        ))
        .expect("valid");
    });
}
