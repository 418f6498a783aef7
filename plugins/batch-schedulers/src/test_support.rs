//! A sample RayCluster and the pod sets the raycluster plugin makes for it.

use serde_json::json;
use wasmray_plugin_sdk::crds::RayCluster;
use wasmray_plugin_sdk::scheduler::Request;
use wasmray_plugin_sdk::{HostFacts, ObservedPods, PodReplica, PodSet, Timestamp};

/// `sample`: a head of 1 CPU and 2Gi; group `workers` of 3 replicas (1 to 5), each 2 CPU,
/// 4Gi and one GPU.
pub fn cluster() -> RayCluster {
    serde_json::from_value(json!({
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "sample", "namespace": "default", "uid": "uid-1"},
        "spec": {
            "headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [{
                "name": "ray-head", "image": "rayproject/ray:2.46.0",
                "resources": {"requests": {"cpu": "1", "memory": "2Gi"}},
                "nodeSelector": {"ignored": "in containers"},
            }], "nodeSelector": {"pool": "head"}}}},
            "workerGroupSpecs": [{
                "groupName": "workers", "replicas": 3, "minReplicas": 1, "maxReplicas": 5,
                "rayStartParams": {},
                "template": {"spec": {"containers": [{
                    "name": "ray-worker", "image": "rayproject/ray:2.46.0",
                    "resources": {
                        "requests": {"cpu": "2", "memory": "4Gi"},
                        "limits": {"nvidia.com/gpu": "1"},
                    },
                }], "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}},
            }],
        },
    }))
    .expect("a valid RayCluster")
}

pub fn with_labels(mut cluster: RayCluster, labels: &[(&str, &str)]) -> RayCluster {
    let map = cluster.metadata.labels.get_or_insert_with(Default::default);
    for (key, value) in labels {
        map.insert((*key).to_owned(), (*value).to_owned());
    }
    cluster
}

pub fn with_annotations(mut cluster: RayCluster, annotations: &[(&str, &str)]) -> RayCluster {
    let map = cluster
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    for (key, value) in annotations {
        map.insert((*key).to_owned(), (*value).to_owned());
    }
    cluster
}

fn pod_set(group: &str, replicas: usize) -> PodSet {
    PodSet {
        group: group.to_owned(),
        template: json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"labels": {"ray.io/group": group, "ray.io/cluster": "sample"}},
            "spec": {"containers": [{"name": "ray", "image": "rayproject/ray:2.46.0"}]},
        })
        .to_string(),
        replicas: (0..replicas)
            .map(|_| PodReplica {
                name: None,
                labels: Vec::new(),
                annotations: Vec::new(),
            })
            .collect(),
    }
}

/// A schedule request for `cluster` with the head's and the workers' pod sets.
pub fn request(cluster: RayCluster) -> Request<RayCluster> {
    Request {
        kind: "RayCluster".to_owned(),
        parent: cluster,
        pod_sets: vec![pod_set("headgroup", 1), pod_set("workers", 3)],
        existing_pods: ObservedPods::empty(),
        now: Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        },
        config: String::new(),
        host: HostFacts {
            operator_version: "test".to_owned(),
            feature_gates: Vec::new(),
            settings: Vec::new(),
        },
    }
}
