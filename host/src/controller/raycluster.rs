//! What the host needs to know about RayCluster: which children to watch, and which
//! operator environment variables (KubeRay's) become plugin settings.

use std::collections::BTreeMap;

use wasmray_crds::constants::RAY_AUTH_TOKEN_SECRET_KEY;
use wasmray_crds::constants::{
    GCS_FT_REDIS_CLEANUP_FINALIZER, RAY_CLUSTER_HEADLESS_SERVICE_LABEL_KEY, RAY_CLUSTER_LABEL_KEY,
    RAY_CLUSTER_SERVING_SERVICE_LABEL_KEY, RAY_FT_ENABLED_ANNOTATION_KEY,
};
use wasmray_crds::names::{auth_secret_name, check_label};
use wasmray_crds::{RayCluster, validate_ray_cluster};

use super::ControllerConfig;
use super::parent::{ChildWatches, OtherChildWatch, ParentKind};
use super::secrets::GeneratedSecret;
use super::wit::ObservedObject;

/// Plugin setting that turns the Redis cleanup (and so the finalizer) off.
const GCS_FT_REDIS_CLEANUP_SETTING: &str = "gcs-ft-redis-cleanup";

/// Name of the built-in RayCluster reconciler plugin in the registry.
pub const BUILTIN_PLUGIN: &str = "raycluster";

impl ParentKind for RayCluster {
    const EVENT_REPORTER: &'static str = "raycluster-controller";

    /// The only Job a RayCluster owns is its GCS FT Redis cleanup Job.
    fn child_event_noun(kind: &str) -> &str {
        if kind == "Job" {
            "RedisCleanupJob"
        } else {
            kind
        }
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

    /// GCS fault tolerance keeps state in Redis; KubeRay's finalizer holds the RayCluster
    /// until the plugin's cleanup Job has run. As KubeRay, only valid objects get it: an
    /// invalid one is never reconciled, so nothing would ever release it.
    fn finalizer(&self, config: &ControllerConfig) -> Option<&'static str> {
        let settings = &config.settings;
        let gcs_ft = self.spec.gcs_fault_tolerance_options.is_some()
            || self
                .metadata
                .annotations
                .as_ref()
                .and_then(|annotations| annotations.get(RAY_FT_ENABLED_ANNOTATION_KEY))
                .is_some_and(|value| value.eq_ignore_ascii_case("true"));
        let cleanup_on = settings
            .get(GCS_FT_REDIS_CLEANUP_SETTING)
            .and_then(|value| value.trim().to_ascii_lowercase().parse::<bool>().ok())
            .unwrap_or(true);
        if !(gcs_ft && cleanup_on) {
            return None;
        }
        validate_ray_cluster(self, &config.crd_feature_gates())
            .is_ok()
            .then_some(GCS_FT_REDIS_CLEANUP_FINALIZER)
    }

    /// Token auth: the Ray token lives in Secret `<cluster>`, which the cluster's pods and
    /// the host's dashboard calls read. Like everything else, only for valid clusters.
    fn generated_secrets(&self, config: &ControllerConfig) -> Vec<GeneratedSecret> {
        if !self.spec.token_auth_enabled()
            || validate_ray_cluster(self, &config.crd_feature_gates()).is_err()
        {
            return Vec::new();
        }
        let name = self.metadata.name.as_deref().unwrap_or_default();
        vec![GeneratedSecret {
            name: auth_secret_name(name),
            key: RAY_AUTH_TOKEN_SECRET_KEY,
            labels: BTreeMap::from([(RAY_CLUSTER_LABEL_KEY.to_owned(), check_label(name))]),
        }]
    }

    /// The cleanup Job (the only Job child: the watch selects `node-type=redis-cleanup`)
    /// is Complete or Failed; a failed cleanup must not keep the cluster forever.
    fn cleanup_done(children: &[ObservedObject], _asks_nothing_more: bool) -> bool {
        children
            .iter()
            .filter(|child| child.kind == "Job")
            .any(|job| {
                serde_json::from_str::<serde_json::Value>(&job.object)
                    .ok()
                    .and_then(|job| job["status"]["conditions"].as_array().cloned())
                    .into_iter()
                    .flatten()
                    .any(|c| {
                        (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True"
                    })
            })
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
    fn gcs_ft_clusters_carry_the_cleanup_finalizer_until_the_job_ends() {
        let mut cluster: RayCluster = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "rc", "annotations": {"ray.io/ft-enabled": "TRUE"}},
            "spec": {"headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [
                {"name": "ray-head", "image": "rayproject/ray:2.46.0"}]}}}}
        }))
        .unwrap();
        let on = ControllerConfig::default();
        assert_eq!(cluster.finalizer(&on), Some(GCS_FT_REDIS_CLEANUP_FINALIZER));
        let mut off = ControllerConfig::default();
        off.settings
            .insert(GCS_FT_REDIS_CLEANUP_SETTING.to_owned(), "false".to_owned());
        assert_eq!(cluster.finalizer(&off), None);
        // Invalid objects never get it.
        let mut invalid = cluster.clone();
        invalid
            .spec
            .head_group_spec
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers
            .clear();
        assert_eq!(invalid.finalizer(&on), None);
        cluster.metadata.annotations = None;
        assert_eq!(cluster.finalizer(&on), None);

        let job = |conditions: serde_json::Value| ObservedObject {
            api_version: "batch/v1".into(),
            kind: "Job".into(),
            name: "rc-redis-cleanup".into(),
            uid: "j".into(),
            object: serde_json::json!({"status": {"conditions": conditions}}).to_string(),
        };
        assert!(!RayCluster::cleanup_done(&[], true));
        assert!(!RayCluster::cleanup_done(
            &[job(serde_json::json!([]))],
            true
        ));
        assert!(RayCluster::cleanup_done(
            &[job(
                serde_json::json!([{"type": "Failed", "status": "True"}])
            )],
            false
        ));
    }

    #[test]
    fn selectors_cover_every_service_kind() {
        let watches = RayCluster::child_watches();
        assert_eq!(watches.pods, Some("ray.io/cluster"));
        assert_eq!(watches.services.len(), 3);
    }
}
