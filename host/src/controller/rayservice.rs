//! What the host needs to know about RayService: its children (the active and pending
//! RayClusters, the head and serve Services) and the serve Service's EndpointSlices, read
//! for `numServeEndpoints`. Everything it decides (which cluster serves, when to switch,
//! the Serve config each cluster gets) is the plugin's.

use wasmray_crds::RayService;
use wasmray_crds::constants::{
    HEAD_NODE_TYPE, RAY_CLUSTER_SERVING_SERVICE_LABEL_KEY, RAY_NODE_TYPE_LABEL_KEY,
};

use super::parent::{ChildWatches, OtherChildWatch, ParentKind, RelatedObject, Which};

/// Name of the built-in RayService reconciler plugin in the registry.
pub const BUILTIN_PLUGIN: &str = "rayservice";
/// Every object a RayService creates carries `ray.io/originated-from-crd=RayService`.
const RAYSERVICE_CHILDREN: &str = "ray.io/originated-from-crd=RayService";

impl ParentKind for RayService {
    const EVENT_REPORTER: &'static str = "rayservice-controller";

    /// KubeRay's children of a RayService: its RayClusters and its head and serve
    /// Services. It owns no pods: its clusters do.
    const CHILD_KINDS: &'static [(&'static str, &'static str)] =
        &[("ray.io/v1", "RayCluster"), ("v1", "Service")];

    fn pod_ceiling(&self) -> Option<usize> {
        Some(0)
    }

    fn child_watches() -> ChildWatches {
        ChildWatches {
            pods: None,
            services: vec![RAYSERVICE_CHILDREN],
            others: vec![OtherChildWatch {
                api_version: "ray.io/v1",
                kind: "RayCluster",
                plural: "rayclusters",
                selector: RAYSERVICE_CHILDREN,
            }],
        }
    }

    /// Head pods whose Serve proxy serves (`ray.io/serve=true`): traffic moves to a new
    /// cluster only once its head is among them, so the serve Service never selects an
    /// empty set.
    fn unowned_pods_selector(&self) -> Option<String> {
        Some(format!(
            "{RAY_NODE_TYPE_LABEL_KEY}={HEAD_NODE_TYPE},{RAY_CLUSTER_SERVING_SERVICE_LABEL_KEY}=true"
        ))
    }

    /// The EndpointSlices of the serve Service: their ready addresses are
    /// `numServeEndpoints` (KubeRay 1.6 counts them there).
    fn related(&self) -> Vec<RelatedObject> {
        vec![RelatedObject {
            api_version: "discovery.k8s.io/v1",
            kind: "EndpointSlice",
            which: Which::Labels(format!(
                "kubernetes.io/service-name={}",
                self.serve_service_name()
            )),
        }]
    }
}

/// KubeRay's RayService operator environment variables and the plugin setting each becomes.
pub const SETTINGS_FROM_ENV: &[(&str, &str)] = &[("ENABLE_ZERO_DOWNTIME", "enable-zero-downtime")];

#[cfg(test)]
mod tests {
    use super::*;

    fn service(spec: serde_json::Value) -> RayService {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ray.io/v1", "kind": "RayService",
            "metadata": {"name": "rs", "namespace": "ns"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn endpoint_slices_of_the_serve_service_are_related() {
        let cluster =
            serde_json::json!({"headGroupSpec": {"template": {"spec": {"containers": []}}}});
        let default = service(serde_json::json!({"rayClusterConfig": cluster}));
        assert_eq!(
            default.related()[0].which,
            Which::Labels("kubernetes.io/service-name=rs-serve-svc".into())
        );
        let custom = service(serde_json::json!({
            "rayClusterConfig": cluster,
            "serveService": {"metadata": {"name": "frontend"}},
        }));
        assert_eq!(
            custom.related()[0].which,
            Which::Labels("kubernetes.io/service-name=frontend".into())
        );
    }
}
