//! A RayCluster call's input as the host builds it, shared by the golden test and the native
//! benchmark (which includes this file by path).

use wasmray_plugin_sdk::bindings::types::ServicePort;
use wasmray_plugin_sdk::reconciler::{RayObservations, ReconcileInput};
use wasmray_plugin_sdk::record::Pod;
use wasmray_plugin_sdk::{HostFacts, ObservedPods, ObservedService, Timestamp};

/// The head Service of `cluster` as the host observes it once it exists.
pub fn head_service(cluster: &str) -> ObservedService {
    ObservedService {
        name: format!("{cluster}-head-svc"),
        uid: "svc".into(),
        labels: vec![
            ("ray.io/cluster".into(), cluster.into()),
            ("ray.io/node-type".into(), "head".into()),
        ],
        annotations: vec![],
        creation_timestamp: None,
        deletion_timestamp: None,
        service_type: Some("ClusterIP".into()),
        cluster_ip: Some("None".into()),
        selector: vec![],
        ports: vec![ServicePort {
            name: Some("dashboard".into()),
            port: 8265,
            protocol: None,
        }],
    }
}

/// A reconcile call for `parent` with these observations and operator settings.
pub fn reconcile_input(
    parent: &serde_json::Value,
    pods: &[Pod],
    services: Vec<ObservedService>,
    settings: &[(&str, &str)],
) -> ReconcileInput {
    ReconcileInput {
        kind: "RayCluster".into(),
        parent: parent.to_string(),
        pods: ObservedPods::from_records(pods),
        services,
        children: vec![],
        related: vec![],
        ray: RayObservations::default(),
        failed_writes: Vec::new(),
        now: Timestamp {
            seconds: 1_800_000_000,
            nanos: 0,
        },
        config: String::new(),
        host: HostFacts {
            operator_version: "test".into(),
            feature_gates: vec![],
            settings: settings
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
        },
    }
}
