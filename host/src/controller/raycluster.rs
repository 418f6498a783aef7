//! What the host needs to know about RayCluster: which children to watch, which operator
//! environment variables (KubeRay's) become plugin settings, and that its autoscaler runs
//! beside the controller. Everything it decides
//! (finalizers, the token Secret, cleanup) is the plugin's.

use std::sync::Arc;

use futures::future::BoxFuture;
use kube::ResourceExt as _;
use wasmray_crds::RayCluster;
use wasmray_crds::constants::{
    RAY_CLUSTER_HEADLESS_SERVICE_LABEL_KEY, RAY_CLUSTER_LABEL_KEY,
    RAY_CLUSTER_SERVING_SERVICE_LABEL_KEY,
};

use super::autoscaler::Autoscaler;
use super::parent::{ChildWatches, Companions, OtherChildWatch, ParentKind, RelatedObject};
use super::write_policy::Grant;

/// Name of the built-in RayCluster reconciler plugin in the registry.
pub const BUILTIN_PLUGIN: &str = "raycluster";

impl ParentKind for RayCluster {
    const EVENT_REPORTER: &'static str = "raycluster-controller";
    const SCHEDULED: bool = true;

    /// The host's autoscaler, on the scope's RayCluster and pod caches.
    fn companions(scope: Companions<Self>) -> Vec<BoxFuture<'static, ()>> {
        let autoscaler = Arc::new(Autoscaler::new(scope.shared, scope.parents, scope.pods));
        vec![Box::pin(autoscaler.run())]
    }

    /// The LocalQueue a suspended, queued RayCluster waits in, and the RayService that
    /// controls it (whose `excludeHeadPodFromServeSvc` decides the head's serve label).
    fn related(&self) -> Vec<RelatedObject> {
        let queue = super::scheduling::awaited_local_queue(self.labels(), self.spec.is_suspended());
        let service = self
            .owner_references()
            .iter()
            .find(|owner| {
                owner.controller == Some(true)
                    && owner.kind == "RayService"
                    && owner.api_version == "ray.io/v1"
            })
            .map(|owner| RelatedObject::named("ray.io/v1", "RayService", owner.name.clone()));
        queue.into_iter().chain(service).collect()
    }

    /// The only Job a RayCluster owns is its GCS FT Redis cleanup Job.
    fn child_event_noun(kind: &str) -> &str {
        if kind == "Job" {
            "RedisCleanupJob"
        } else {
            kind
        }
    }

    /// KubeRay's children of a RayCluster: pods, the head, serve and headless Services, the
    /// autoscaler's ServiceAccount, Role and RoleBinding, the dashboard Ingress or Route,
    /// the GCS FT Redis cleanup Job, and the PodGroups of the batch schedulers.
    const CHILD_KINDS: &'static [(&'static str, &'static str)] = &[
        ("v1", "Pod"),
        ("v1", "Service"),
        ("v1", "ServiceAccount"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ("networking.k8s.io/v1", "Ingress"),
        ("route.openshift.io/v1", "Route"),
        ("batch/v1", "Job"),
        ("scheduling.volcano.sh/v1beta1", "PodGroup"),
        ("scheduling.x-k8s.io/v1alpha1", "PodGroup"),
    ];

    /// What KubeRay's autoscaler Role grants.
    const ROLE_GRANTS: &'static [Grant] = &[
        Grant {
            api_group: "",
            resource: "pods",
            verbs: &["get", "list", "watch", "patch"],
        },
        Grant {
            api_group: "",
            resource: "pods/resize",
            verbs: &["patch"],
        },
        Grant {
            api_group: "ray.io",
            resource: "rayclusters",
            verbs: &["get", "patch"],
        },
    ];

    /// The head plus each worker group's `maxReplicas` times `numOfHosts` (KubeRay clamps
    /// replicas to `maxReplicas`).
    fn pod_ceiling(&self) -> Option<usize> {
        let workers = self.spec.worker_groups().iter().map(|group| {
            let max = usize::try_from(group.max_replicas()).unwrap_or(0);
            let hosts = usize::try_from(group.num_of_hosts()).unwrap_or(1);
            max.saturating_mul(hosts)
        });
        Some(workers.fold(1usize, usize::saturating_add))
    }

    fn child_watches() -> ChildWatches {
        ChildWatches {
            // Every Ray pod carries `ray.io/cluster`: memory follows Ray pods only.
            pods: Some(RAY_CLUSTER_LABEL_KEY),
            // Head services carry `ray.io/cluster`, the multi-host headless service
            // `ray.io/headless-worker-svc`, the serve service `ray.io/serve`.
            services: vec![
                RAY_CLUSTER_LABEL_KEY,
                RAY_CLUSTER_HEADLESS_SERVICE_LABEL_KEY,
                RAY_CLUSTER_SERVING_SERVICE_LABEL_KEY,
            ],
            // The GCS fault-tolerance Redis cleanup Job.
            others: vec![OtherChildWatch {
                api_version: "batch/v1",
                kind: "Job",
                plural: "jobs",
                selector: "ray.io/node-type=redis-cleanup",
            }],
        }
    }
}

/// KubeRay's operator environment variables and the plugin setting each becomes (keys as
/// `plugins/raycluster/src/settings.rs` documents them). A KubeRay deployment's env thus
/// keeps its meaning.
pub const SETTINGS_FROM_ENV: &[(&str, &str)] = &[
    (
        "ENABLE_DETERMINISTIC_HEAD_POD_NAME",
        "deterministic-head-pod-name",
    ),
    (
        "ENABLE_INIT_CONTAINER_INJECTION",
        "init-container-injection",
    ),
    ("ENABLE_PROBES_INJECTION", "probes-injection"),
    ("CLUSTER_DOMAIN", "cluster-domain"),
    ("ENABLE_LOGIN_SHELL", "login-shell"),
    ("ENABLE_RANDOM_POD_DELETE", "random-pod-delete"),
    ("ENABLE_GCS_FT_REDIS_CLEANUP", "gcs-ft-redis-cleanup"),
    (
        "ENABLE_RAY_HEAD_CLUSTER_IP_SERVICE",
        "head-cluster-ip-service",
    ),
    (
        "RAYCLUSTER_DEFAULT_REQUEUE_SECONDS_ENV",
        "default-requeue-seconds",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_cover_every_service_kind() {
        let watches = RayCluster::child_watches();
        assert_eq!(watches.pods, Some("ray.io/cluster"));
        assert_eq!(watches.services.len(), 3);
    }
}
