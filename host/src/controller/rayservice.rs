//! What the host needs to know about RayService: its children (the active and pending
//! RayClusters, the head and serve Services) and the serving pods of the namespace.
//! Everything it decides (which cluster serves, when to switch, the Serve config each
//! cluster gets) is the plugin's.

use wasmray_crds::RayService;
use wasmray_crds::constants::RAY_CLUSTER_SERVING_SERVICE_LABEL_KEY;

use super::parent::{ChildWatches, OtherChildWatch, ParentKind};

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

    /// The pods whose Serve proxy serves (`ray.io/serve=true`), of its clusters among
    /// others: the plugin counts the ready ones the serve Service selects
    /// (`numServeEndpoints`), and moves traffic to a new cluster only once it has one.
    fn unowned_pods_selector(&self) -> Option<String> {
        Some(format!("{RAY_CLUSTER_SERVING_SERVICE_LABEL_KEY}=true"))
    }
}

/// KubeRay's RayService operator environment variables and the plugin setting each becomes.
pub const SETTINGS_FROM_ENV: &[(&str, &str)] = &[("ENABLE_ZERO_DOWNTIME", "enable-zero-downtime")];
