//! The head pod's `ray.io/serve` label in a RayService's cluster: "true" while the Serve
//! proxy on the head is healthy, so the RayService's serve Service (which selects
//! `ray.io/serve=true`) sends traffic to the head only when it can answer; always "false"
//! with the RayService's `excludeHeadPodFromServeSvc`. Workers get "true" when created and
//! their readiness probe checks their proxy.
//!
//! KubeRay's RayService controller probes `/-/healthz` on the head; here the cluster's own
//! plugin decides from Serve's status of the cluster (the proxy of the Serve controller's
//! node, which is the head), so the label is set by the owner of the pod.

use serde_json::Value;
use wasmray_crds::RayCluster;
use wasmray_crds::constants::{
    HEAD_NODE_TYPE, RAY_CLUSTER_SERVING_SERVICE_LABEL_KEY, RAY_NODE_TYPE_LABEL_KEY,
};
use wasmray_crds::serve_api::ServeState;
use wasmray_plugin_sdk::reconciler::{Decision, RayQuery, Request};
use wasmray_plugin_sdk::{Duration, PluginError, Pod, WriteMode};

/// How often the head proxy's health is looked at (KubeRay's RayService requeue).
pub const SERVE_LABEL_REQUEUE: Duration = Duration::from_secs(2);

/// Asks for the cluster's Serve status while its head runs, and labels the head from the
/// previous answer. `name` is the cluster's name.
pub fn plan_head_serve_label(
    request: &Request<RayCluster>,
    name: &str,
    pods: &[Pod<'_>],
    decision: &mut Decision,
) -> Result<(), PluginError> {
    let Some(head) = pods.iter().find(|pod| {
        pod.labels.get(RAY_NODE_TYPE_LABEL_KEY) == Some(HEAD_NODE_TYPE)
            && pod.deletion_timestamp.is_none()
            && pod.phase == Some("Running")
    }) else {
        return Ok(());
    };
    decision.ray_query(RayQuery::ServeStatus(name.to_owned()));
    decision.requeue_after(SERVE_LABEL_REQUEUE);
    let wanted = if excluded(request) {
        Some(false)
    } else {
        // No answer (the dashboard did not answer, or Serve runs no proxy yet): the label
        // stays as it is until one comes.
        request
            .ray
            .serve_status
            .as_deref()
            .and_then(|answer| ServeState::parse(answer).ok())
            .map(|state| state.head_proxy_healthy == Some(true))
    };
    let Some(wanted) = wanted else {
        return Ok(());
    };
    let value = if wanted { "true" } else { "false" };
    if head.labels.get(RAY_CLUSTER_SERVING_SERVICE_LABEL_KEY) == Some(value) {
        return Ok(());
    }
    let patch = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": head.name,
            "labels": {RAY_CLUSTER_SERVING_SERVICE_LABEL_KEY: value},
        },
    });
    decision.apply(&patch, WriteMode::Apply)
}

/// The controlling RayService's `excludeHeadPodFromServeSvc` (the host passes it as related).
fn excluded(request: &Request<RayCluster>) -> bool {
    request
        .related
        .iter()
        .filter(|object| object.kind == "RayService")
        .filter_map(|object| serde_json::from_str::<Value>(&object.object).ok())
        .any(|service| {
            service
                .pointer("/spec/excludeHeadPodFromServeSvc")
                .and_then(Value::as_bool)
                == Some(true)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmray_plugin_sdk::reconciler::RayObservations;
    use wasmray_plugin_sdk::record;
    use wasmray_plugin_sdk::{HostFacts, ObservedObject, ObservedPods, Timestamp};

    fn head(serve: &str) -> record::Pod {
        record::Pod {
            name: "rs-abcde-head".into(),
            uid: "u".into(),
            resource_version: "1".into(),
            labels: vec![
                ("ray.io/node-type".into(), "head".into()),
                ("ray.io/serve".into(), serve.into()),
            ],
            annotations: vec![],
            creation_timestamp: None,
            deletion_timestamp: None,
            node_name: None,
            restart_policy: None,
            scheduler_name: None,
            phase: Some("Running".into()),
            reason: None,
            message: None,
            pod_ip: None,
            host_ip: None,
            start_time: None,
            conditions: vec![],
            init_container_statuses: vec![],
            container_statuses: vec![],
        }
    }

    fn request(serve: Option<&str>, exclude: bool, pod: record::Pod) -> Request<RayCluster> {
        let parent: RayCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "ray.io/v1", "kind": "RayCluster",
            "metadata": {"name": "rs-abcde"},
            "spec": {"headGroupSpec": {"template": {"spec": {"containers": []}}}},
        }))
        .unwrap();
        let owner = serde_json::json!({"spec": {"excludeHeadPodFromServeSvc": exclude}});
        Request {
            kind: "RayCluster".into(),
            parent,
            pods: ObservedPods::from_records(&[pod]),
            services: vec![],
            children: vec![],
            related: vec![ObservedObject {
                api_version: "ray.io/v1".into(),
                kind: "RayService".into(),
                name: "rs".into(),
                uid: "rs-uid".into(),
                object: owner.to_string(),
            }],
            ray: RayObservations {
                serve_status: serve.map(str::to_owned),
                ..RayObservations::default()
            },
            failed_writes: vec![],
            now: Timestamp {
                seconds: 0,
                nanos: 0,
            },
            config: String::new(),
            host: HostFacts {
                operator_version: "0".into(),
                feature_gates: vec![],
                settings: vec![],
            },
        }
    }

    fn label_written(request: &Request<RayCluster>) -> Option<String> {
        let mut decision = Decision::default();
        let views = request.pods.views();
        plan_head_serve_label(request, "rs-abcde", &views, &mut decision).unwrap();
        assert!(
            decision
                .output
                .ray_queries
                .contains(&RayQuery::ServeStatus("rs-abcde".into()))
        );
        decision.output.apply.first().map(|desired| {
            let patch: Value = serde_json::from_str(&desired.object).unwrap();
            patch["metadata"]["labels"]["ray.io/serve"]
                .as_str()
                .unwrap()
                .to_owned()
        })
    }

    const HEALTHY: &str = r#"{"controller_info": {"node_id": "n1"}, "proxies": {"n1": {"status": "HEALTHY"}, "n2": {"status": "UNHEALTHY"}}, "applications": {}}"#;
    const DRAINING: &str = r#"{"controller_info": {"node_id": "n1"}, "proxies": {"n1": {"status": "DRAINING"}}, "applications": {}}"#;

    #[test]
    fn the_head_serves_while_its_proxy_is_healthy() {
        let table = [
            // (Serve's answer, excluded, current label, label written)
            (Some(HEALTHY), false, "false", Some("true")),
            (Some(HEALTHY), false, "true", None),
            (Some(DRAINING), false, "true", Some("false")),
            (None, false, "false", None),
            (Some(HEALTHY), true, "true", Some("false")),
            (None, true, "false", None),
        ];
        for (answer, exclude, current, written) in table {
            let request = request(answer, exclude, head(current));
            assert_eq!(
                label_written(&request).as_deref(),
                written,
                "{answer:?} exclude={exclude} label={current}"
            );
        }
    }
}
