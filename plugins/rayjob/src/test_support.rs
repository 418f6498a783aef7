//! Builders shared by the unit tests.

use wasmray_crds::{RayCluster, RayJob};
use wasmray_plugin_sdk::record::Pod;

use crate::observed::Seen;

/// A RayJob from YAML without `apiVersion`/`kind`.
pub fn job_from_yaml(yaml: &str) -> RayJob {
    let mut value: serde_json::Value = serde_yaml::from_str(yaml).expect("test YAML parses");
    value["apiVersion"] = "ray.io/v1".into();
    value["kind"] = "RayJob".into();
    serde_json::from_value(value).expect("test YAML is a RayJob")
}

/// A RayCluster named `name` with one head and one worker group, and the given status.
pub fn cluster_from_yaml(name: &str, status: Option<serde_json::Value>) -> RayCluster {
    let mut value = serde_json::json!({
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
        "spec": {
            "headGroupSpec": {"template": {"spec": {"containers": [
                {"name": "ray-head", "image": "rayproject/ray:2.46.0"}
            ]}}},
            "workerGroupSpecs": [{"groupName": "small", "replicas": 1, "minReplicas": 1, "maxReplicas": 2,
                "template": {"spec": {"containers": [{"name": "ray-worker", "image": "rayproject/ray:2.46.0"}]}}}]
        }
    });
    if let Some(status) = status {
        value["status"] = status;
    }
    serde_json::from_value(value).expect("test cluster is a RayCluster")
}

/// An observed (parsed) cluster.
pub fn seen(cluster: RayCluster) -> Seen<RayCluster> {
    let name = cluster.metadata.name.clone().unwrap_or_default();
    Seen {
        uid: format!("uid-{name}"),
        name,
        api_version: "ray.io/v1".into(),
        kind: "RayCluster".into(),
        deleting: cluster.metadata.deletion_timestamp.is_some(),
        object: cluster,
    }
}

/// The head pod of cluster `cluster`, running.
pub fn head_pod(cluster: &str) -> Pod {
    Pod {
        name: format!("{cluster}-head"),
        uid: format!("uid-{cluster}-head"),
        resource_version: "1".to_owned(),
        labels: vec![
            ("ray.io/cluster".to_owned(), cluster.to_owned()),
            ("ray.io/node-type".to_owned(), "head".to_owned()),
        ],
        annotations: Vec::new(),
        creation_timestamp: None,
        deletion_timestamp: None,
        node_name: Some("node".to_owned()),
        restart_policy: Some("Never".to_owned()),
        scheduler_name: None,
        phase: Some("Running".to_owned()),
        reason: None,
        message: None,
        pod_ip: Some("10.0.0.1".to_owned()),
        host_ip: None,
        start_time: None,
        conditions: Vec::new(),
        init_container_statuses: Vec::new(),
        container_statuses: Vec::new(),
    }
}
