//! What the host needs to know about RayJob: its children (the RayCluster it creates, the
//! submitter Job, the head Service), the cluster it selects and the head pod SidecarMode
//! watches. Everything it decides (the finalizer that stops the Ray job first) is the
//! plugin's.

use kube::ResourceExt as _;
use wasmray_crds::RayJob;
use wasmray_crds::constants::{HEAD_NODE_TYPE, RAY_CLUSTER_LABEL_KEY, RAY_NODE_TYPE_LABEL_KEY};
use wasmray_crds::rayjob::JobSubmissionMode;

use super::parent::{ChildWatches, OtherChildWatch, ParentKind, RelatedObject};

/// Name of the built-in RayJob reconciler plugin in the registry.
pub const BUILTIN_PLUGIN: &str = "rayjob";
/// Every object a RayJob creates carries `ray.io/originated-from-crd=RayJob`.
const RAYJOB_CHILDREN: &str = "ray.io/originated-from-crd=RayJob";

impl ParentKind for RayJob {
    const EVENT_REPORTER: &'static str = "rayjob-controller";

    /// The only Job a RayJob owns is its K8sJobMode submitter.
    fn child_event_noun(kind: &str) -> &str {
        if kind == "Job" {
            "RayJobSubmitter"
        } else {
            kind
        }
    }

    /// KubeRay's children of a RayJob: its RayCluster, the submitter Job, and the head
    /// Service it points at its cluster. It owns no pods: its cluster does.
    const CHILD_KINDS: &'static [(&'static str, &'static str)] = &[
        ("ray.io/v1", "RayCluster"),
        ("batch/v1", "Job"),
        ("v1", "Service"),
    ];

    fn pod_ceiling(&self) -> Option<usize> {
        Some(0)
    }

    fn child_watches() -> ChildWatches {
        ChildWatches {
            // A RayJob owns no pods: its cluster does.
            pods: None,
            services: vec![RAYJOB_CHILDREN],
            others: vec![
                OtherChildWatch {
                    api_version: "ray.io/v1",
                    kind: "RayCluster",
                    plural: "rayclusters",
                    selector: RAYJOB_CHILDREN,
                },
                OtherChildWatch {
                    api_version: "batch/v1",
                    kind: "Job",
                    plural: "jobs",
                    selector: RAYJOB_CHILDREN,
                },
            ],
        }
    }

    /// The cluster `clusterSelector` names (only the `ray.io/cluster` key counts), and the
    /// LocalQueue a suspended, queued RayJob waits in.
    fn related(&self) -> Vec<RelatedObject> {
        let selected = self
            .spec
            .cluster_selector()
            .and_then(|selector| selector.get(RAY_CLUSTER_LABEL_KEY))
            .filter(|name| !name.is_empty())
            .map(|name| RelatedObject::named("ray.io/v1", "RayCluster", name.clone()));
        let queue = super::scheduling::awaited_local_queue(self.labels(), self.spec.is_suspended());
        selected.into_iter().chain(queue).collect()
    }

    /// SidecarMode's submitter runs in the head pod of the RayJob's cluster: the plugin
    /// reads its container status.
    fn unowned_pods_selector(&self) -> Option<String> {
        if self.spec.submission_mode() != JobSubmissionMode::SidecarMode {
            return None;
        }
        let cluster = self.status.as_ref()?.ray_cluster_name.as_deref()?;
        (!cluster.is_empty()).then(|| {
            format!("{RAY_CLUSTER_LABEL_KEY}={cluster},{RAY_NODE_TYPE_LABEL_KEY}={HEAD_NODE_TYPE}")
        })
    }
}

/// KubeRay's RayJob operator environment variables and the plugin setting each becomes.
pub const SETTINGS_FROM_ENV: &[(&str, &str)] = &[
    (
        "RAYJOB_DEPLOYMENT_STATUS_TRANSITION_GRACE_PERIOD_SECONDS",
        "rayjob-deployment-status-transition-grace-period-seconds",
    ),
    (
        "DELETE_RAYJOB_CR_AFTER_JOB_FINISHES",
        "delete-rayjob-cr-after-job-finishes",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn job(spec: serde_json::Value, status: serde_json::Value) -> RayJob {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ray.io/v1", "kind": "RayJob",
            "metadata": {"name": "rj", "namespace": "ns"},
            "spec": spec, "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn cluster_selector_names_the_related_cluster() {
        let selected = job(
            serde_json::json!({"entrypoint": "python x.py", "clusterSelector": {"ray.io/cluster": "shared"}}),
            serde_json::json!({}),
        );
        let related = selected.related();
        assert_eq!(related.len(), 1);
        assert_eq!(
            (related[0].kind, related[0].name.as_str()),
            ("RayCluster", "shared")
        );
        let own = job(
            serde_json::json!({"entrypoint": "python x.py"}),
            serde_json::json!({}),
        );
        assert!(own.related().is_empty());
    }

    #[test]
    fn sidecar_mode_watches_its_clusters_head_pod() {
        let sidecar = job(
            serde_json::json!({"entrypoint": "python x.py", "submissionMode": "SidecarMode"}),
            serde_json::json!({"rayClusterName": "rj-bcdfg"}),
        );
        assert_eq!(
            sidecar.unowned_pods_selector().as_deref(),
            Some("ray.io/cluster=rj-bcdfg,ray.io/node-type=head")
        );
        let http = job(
            serde_json::json!({"entrypoint": "python x.py", "submissionMode": "HTTPMode"}),
            serde_json::json!({"rayClusterName": "rj-bcdfg"}),
        );
        assert_eq!(http.unowned_pods_selector(), None);
        let unnamed = job(
            serde_json::json!({"entrypoint": "python x.py", "submissionMode": "SidecarMode"}),
            serde_json::json!({}),
        );
        assert_eq!(unnamed.unowned_pods_selector(), None);
    }
}
