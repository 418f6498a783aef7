//! The whole answer for a new cluster (its head Service observed, no pods yet), for every
//! RayCluster sample and the runtime benchmark's cluster, under several operator settings,
//! compared with the answers recorded in `tests/golden/`: a rewrite of the pod builder (for
//! speed, say) must build the same pods, services and status. After a deliberate change of
//! output: `WASMRAY_UPDATE_GOLDEN=1 cargo test -p wasmray-plugin-raycluster --test golden`,
//! then review the diff of `tests/golden/`.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use wasmray_plugin_raycluster::reconcile::RayClusterReconciler;
use wasmray_plugin_sdk::reconciler::{ReconcileOutput, run};

mod support;
use support::{head_service, reconcile_input};

/// Operator settings the answers are recorded under: KubeRay's defaults, and the switches
/// that change how pods are built.
const SETTINGS: [(&str, &[(&str, &str)]); 3] = [
    ("defaults", &[]),
    (
        "switches",
        &[
            ("deterministic-head-pod-name", "true"),
            ("init-container-injection", "false"),
            ("probes-injection", "false"),
            ("login-shell", "true"),
            ("cluster-domain", "corp.example"),
        ],
    ),
    ("ray-service-owned", &[]),
];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The runtime benchmark's cluster in miniature: templates as users write them, with env,
/// probes, volumes, a node selector, template labels and annotations, a GPU group.
fn benchmark_cluster() -> Value {
    let template = |container: &str, cpu: &str, gpu: bool| {
        let mut limits = json!({"cpu": cpu, "memory": "32Gi"});
        if gpu {
            limits["nvidia.com/gpu"] = json!("1");
        }
        let probe = json!({"httpGet": {"path": "/api/local_raylet_healthz", "port": 52365},
            "initialDelaySeconds": 10, "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 120});
        json!({
            "metadata": {"labels": {"team": "ml-platform"}, "annotations": {"prometheus.io/scrape": "true"}},
            "spec": {
                "containers": [{
                    "name": container, "image": "rayproject/ray-ml:2.46.0-py311-gpu",
                    "imagePullPolicy": "IfNotPresent",
                    "resources": {"limits": limits, "requests": limits},
                    "env": [{"name": "AWS_DEFAULT_REGION", "value": "us-west-2"},
                            {"name": "RAY_ADDRESS", "value": "mine:1"},
                            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                    "ports": [{"containerPort": 8080, "name": "metrics"}, {"containerPort": 8000, "name": "serve"}],
                    "volumeMounts": [{"name": "ray-logs", "mountPath": "/tmp/ray"}],
                    "livenessProbe": probe,
                    "securityContext": {"runAsUser": 1000},
                }, {"name": "sidecar", "image": "busybox", "resources": {"requests": {"cpu": "100m"}}}],
                "initContainers": [{"name": "setup", "image": "busybox", "env": [{"name": "A", "value": "b"}]}],
                "volumes": [{"name": "ray-logs", "emptyDir": {}},
                            {"name": "cache", "emptyDir": {"sizeLimit": "50Gi"}}],
                "serviceAccountName": "ray-workers",
                "nodeSelector": {"node.kubernetes.io/instance-type": "m6i.8xlarge"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            }
        })
    };
    let groups: Vec<Value> = [("cpu", 40, "8"), ("gpu", 20, "16"), ("mem", 39, "4")]
        .iter()
        .map(|(name, replicas, cpu)| {
            json!({"groupName": name, "replicas": replicas, "minReplicas": 1, "maxReplicas": 100,
                   "rayStartParams": {"metrics-export-port": "8080"},
                   "template": template("ray-worker", cpu, *name == "gpu")})
        })
        .collect();
    json!({
        "apiVersion": "ray.io/v1", "kind": "RayCluster",
        "metadata": {"name": "bench", "namespace": "ml", "uid": "6c1f3b0e", "generation": 7},
        "spec": {
            "rayVersion": "2.46.0",
            "headGroupSpec": {"serviceType": "ClusterIP",
                              "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
                              "template": template("ray-head", "4", false)},
            "workerGroupSpecs": groups,
        }
    })
}

fn clusters() -> Vec<(String, Value)> {
    let mut clusters = vec![("benchmark".to_owned(), benchmark_cluster())];
    let samples = wasmray_crds::samples::sample_files().expect("samples directory");
    for path in samples {
        let name = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .expect("sample file name")
            .to_owned();
        if !name.starts_with("ray-cluster.") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("sample readable");
        let cluster: Value = serde_yaml::from_str(&text).expect("sample YAML");
        clusters.push((name, cluster));
    }
    clusters
}

/// The answer as JSON, with every embedded JSON text (templates, objects, status) parsed, so
/// the comparison is of values, not of key order or spacing.
fn answer(output: &ReconcileOutput) -> Value {
    let parse = |text: &str| serde_json::from_str::<Value>(text).expect("plugin wrote JSON");
    json!({
        "createPods": output.create_pods.iter().map(|set| json!({
            "group": set.group,
            "template": parse(&set.template),
            "replicas": set.replicas.len(),
            "firstReplica": set.replicas.first().map(|replica| json!({
                "name": replica.name, "labels": replica.labels, "annotations": replica.annotations,
            })),
        })).collect::<Vec<_>>(),
        "apply": output.apply.iter().map(|object| parse(&object.object)).collect::<Vec<_>>(),
        "status": output.status.as_deref().map(parse),
        "events": output.events.iter().map(|event| format!("{event:?}")).collect::<Vec<_>>(),
    })
}

#[test]
fn new_cluster_answers_match_the_recorded_ones() {
    let update = std::env::var_os("WASMRAY_UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for (name, cluster) in clusters() {
        for (label, settings) in SETTINGS {
            let mut cluster = cluster.clone();
            if label == "ray-service-owned" {
                cluster["metadata"]["labels"]["ray.io/originated-from-crd"] = json!("RayService");
            }
            let cluster_name = cluster["metadata"]["name"].as_str().expect("cluster name");
            let service = head_service(cluster_name);
            let input = reconcile_input(&cluster, &[], vec![service], settings);
            let output = run::<RayClusterReconciler>(input)
                .unwrap_or_else(|error| panic!("{name} ({label}): {error:?}"));
            let answer = answer(&output);
            let path = golden_dir().join(format!("{name}.{label}.json"));
            if update {
                let text = serde_json::to_string_pretty(&answer).expect("serialises") + "\n";
                std::fs::write(&path, text).expect("golden file written");
                continue;
            }
            let recorded: Value = std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| serde_json::from_str(&text).ok())
                .unwrap_or(Value::Null);
            if recorded != answer {
                mismatches.push(format!(
                    "{}: differs; got\n{}",
                    path.display(),
                    serde_json::to_string_pretty(&answer).unwrap_or_default()
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}
