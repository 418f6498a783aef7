//! Builders shared by the unit tests.

use wasmray_crds::raycluster::RayCluster;

// The call inputs the golden test and the native benchmark build, too.
#[path = "../tests/support/mod.rs"]
mod call_input;
pub use call_input::{head_service, reconcile_input};

/// A RayCluster from YAML without `apiVersion`/`kind`.
pub fn cluster_from_yaml(yaml: &str) -> RayCluster {
    let mut value: serde_json::Value = serde_yaml::from_str(yaml).expect("test YAML parses");
    value["apiVersion"] = "ray.io/v1".into();
    value["kind"] = "RayCluster".into();
    serde_json::from_value(value).expect("test YAML is a RayCluster")
}

use wasmray_plugin_sdk::record::{Pod, PodCondition};

/// An observed Ray pod of the cluster `rc`; `ready` sets its Ready condition.
pub fn pod(name: &str, node_type: &str, group: &str, phase: &str, ready: bool) -> Pod {
    let labels = [
        ("ray.io/cluster", "rc"),
        ("ray.io/node-type", node_type),
        ("ray.io/group", group),
    ];
    Pod {
        name: name.to_owned(),
        uid: format!("uid-{name}"),
        resource_version: "1".to_owned(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations: Vec::new(),
        creation_timestamp: None,
        deletion_timestamp: None,
        node_name: None,
        restart_policy: Some("Always".to_owned()),
        scheduler_name: None,
        phase: Some(phase.to_owned()),
        reason: None,
        message: None,
        pod_ip: Some(format!("10.0.0.{}", name.len())),
        host_ip: None,
        start_time: None,
        conditions: vec![PodCondition {
            condition_type: "Ready".to_owned(),
            status: if ready { "True" } else { "False" }.to_owned(),
            reason: None,
            message: None,
            last_transition_time: None,
        }],
        init_container_statuses: Vec::new(),
        container_statuses: Vec::new(),
    }
}

/// Views of `pods` as a plugin reads them, through a pod table as the host passes it. The
/// table is leaked so that the views (and plans that borrow them) live for the whole test.
pub fn views(pods: &[Pod]) -> Vec<crate::scale::RayPod<'static>> {
    let table: &'static wasmray_plugin_sdk::ObservedPods = Box::leak(Box::new(
        wasmray_plugin_sdk::ObservedPods::from_records(pods),
    ));
    crate::scale::RayPod::all(Box::leak(table.views().into_boxed_slice()))
}
