//! GCS fault tolerance cleanup: when a cluster that kept GCS state in Redis is deleted, a
//! Job removes that state before the finalizer lets the RayCluster go.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{EnvVar, Pod, PodTemplateSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use wasmray_crds::constants::{
    GCS_FT_REDIS_CLEANUP_FINALIZER, RAY_NODE_TYPE_LABEL_KEY, REDIS_CLEANUP_NODE_TYPE,
};
use wasmray_plugin_sdk::ObservedObject;

use crate::cluster::{ClusterContext, GroupView};
use crate::pod::build_pod;

const JOB_SUFFIX: &str = "-redis-cleanup";
const MAX_JOB_NAME_LENGTH: usize = 63;

/// Whether the cluster must carry the Redis cleanup finalizer.
pub fn finalizer_required(ctx: &ClusterContext) -> bool {
    ctx.gcs_ft_enabled && ctx.settings.gcs_ft_redis_cleanup
}

pub fn has_finalizer(ctx: &ClusterContext) -> bool {
    ctx.cluster
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|finalizer| finalizer == GCS_FT_REDIS_CLEANUP_FINALIZER)
}

/// `<cluster>-redis-cleanup`, shortened from the front to fit 63 characters.
pub fn cleanup_job_name(cluster: &str) -> String {
    let room = MAX_JOB_NAME_LENGTH - JOB_SUFFIX.len();
    let prefix = cluster
        .char_indices()
        .nth(room)
        .map_or(cluster, |(index, _)| &cluster[..index]);
    format!("{prefix}{JOB_SUFFIX}")
}

/// Where the cleanup Job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleanupJobState {
    Missing,
    Running,
    /// Complete or Failed: either way the finalizer may go (as KubeRay, a failed cleanup
    /// must not keep the RayCluster forever).
    Finished,
}

pub fn cleanup_job_state(ctx: &ClusterContext, children: &[ObservedObject]) -> CleanupJobState {
    let name = cleanup_job_name(ctx.name);
    let Some(job) = children
        .iter()
        .find(|child| child.kind == "Job" && child.name == name)
    else {
        return CleanupJobState::Missing;
    };
    let finished = serde_json::from_str::<Job>(&job.object)
        .ok()
        .and_then(|job| job.status?.conditions)
        .into_iter()
        .flatten()
        .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True");
    if finished {
        CleanupJobState::Finished
    } else {
        CleanupJobState::Running
    }
}

/// The Job that deletes the cluster's GCS state from Redis: the head pod's Ray container
/// (same image, env and volumes, so it reaches Redis the same way), without probes.
pub fn cleanup_job(ctx: &ClusterContext) -> Job {
    let head = build_pod(ctx, &GroupView::head(ctx.cluster));
    let Pod { metadata, spec, .. } = head;
    let mut spec = spec.unwrap_or_default();
    spec.containers.truncate(1);
    spec.init_containers = None;
    spec.restart_policy = Some("Never".to_owned());
    let fixed = BTreeMap::from([
        ("cpu".to_owned(), K8sQuantity("200m".to_owned())),
        ("memory".to_owned(), K8sQuantity("256Mi".to_owned())),
    ]);
    if let Some(container) = spec.containers.first_mut() {
        container.liveness_probe = None;
        container.readiness_probe = None;
        container.startup_probe = None;
        container.command = Some(vec![
            "/bin/bash".to_owned(),
            "-c".to_owned(),
            "--".to_owned(),
        ]);
        container.args = Some(vec![format!("python -c '{CLEANUP_SCRIPT}'")]);
        let env = container.env.get_or_insert_with(Vec::new);
        for (name, value) in [
            ("RAY_redis_db_connect_retries", "120"),
            ("RAY_redis_db_connect_wait_milliseconds", "500"),
        ] {
            env.push(EnvVar {
                name: name.to_owned(),
                value: Some(value.to_owned()),
                value_from: None,
            });
        }
        container.resources = Some(ResourceRequirements {
            limits: Some(fixed.clone()),
            requests: Some(fixed),
            ..ResourceRequirements::default()
        });
    }
    let mut labels = metadata.labels.unwrap_or_default();
    labels.insert(
        RAY_NODE_TYPE_LABEL_KEY.to_owned(),
        REDIS_CLEANUP_NODE_TYPE.to_owned(),
    );
    let pod_meta = ObjectMeta {
        labels: Some(labels.clone()),
        annotations: metadata.annotations.clone(),
        ..ObjectMeta::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(cleanup_job_name(ctx.name)),
            namespace: Some(ctx.namespace.to_owned()),
            labels: Some(labels),
            annotations: metadata.annotations,
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(300),
            template: PodTemplateSpec {
                metadata: Some(pod_meta),
                spec: Some(spec),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// Deletes this cluster's keys from Redis with Ray's own helper; the first address of
/// `RAY_REDIS_ADDRESS` is used, `rediss://` means TLS. Exits 1 when Ray reports failure.
const CLEANUP_SCRIPT: &str = r#"import os, sys
from urllib.parse import urlparse
from ray._private import gcs_utils
address = os.environ["RAY_REDIS_ADDRESS"].split(",")[0].strip()
if "://" not in address:
    address = "redis://" + address
url = urlparse(address)
username = os.environ.get("REDIS_USERNAME") or url.username
password = os.environ.get("REDIS_PASSWORD") or url.password or ""
cleaned = gcs_utils.cleanup_redis_storage(host=url.hostname, port=url.port or 6379, username=username, password=password, use_ssl=url.scheme == "rediss", storage_namespace=os.environ["RAY_external_storage_namespace"])
sys.exit(0 if cleaned else 1)"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use crate::test_support::cluster_from_yaml;

    const CLUSTER: &str = r#"
metadata: {name: rc, namespace: ns, uid: u, finalizers: [ray.io/gcs-ft-redis-cleanup-finalizer]}
spec:
  gcsFaultToleranceOptions: {redisAddress: "redis:6379"}
  headGroupSpec:
    template:
      spec:
        containers:
        - {name: ray-head, image: ray, resources: {limits: {cpu: "2"}}}
        - {name: sidecar, image: x}
"#;

    #[test]
    fn finalizer_and_job() {
        let cluster = cluster_from_yaml(CLUSTER);
        let settings = Settings::default();
        let ctx = ClusterContext::new(&cluster, &settings);
        assert!(finalizer_required(&ctx));
        assert!(has_finalizer(&ctx));
        let off = Settings {
            gcs_ft_redis_cleanup: false,
            ..Settings::default()
        };
        assert!(!finalizer_required(&ClusterContext::new(&cluster, &off)));

        let job = cleanup_job(&ctx);
        assert_eq!(job.metadata.name.as_deref(), Some("rc-redis-cleanup"));
        assert_eq!(
            job.metadata.labels.as_ref().unwrap()[RAY_NODE_TYPE_LABEL_KEY],
            "redis-cleanup"
        );
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(
            (spec.backoff_limit, spec.active_deadline_seconds),
            (Some(0), Some(300))
        );
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.containers.len(), 1);
        let ray = &pod.containers[0];
        assert!(ray.liveness_probe.is_none() && ray.readiness_probe.is_none());
        assert!(ray.args.as_ref().unwrap()[0].contains("cleanup_redis_storage"));
        let env: Vec<_> = ray.env.iter().flatten().map(|e| e.name.as_str()).collect();
        assert!(env.contains(&"RAY_REDIS_ADDRESS"));
        assert!(env.contains(&"RAY_external_storage_namespace"));
        assert!(env.contains(&"RAY_redis_db_connect_retries"));
        assert_eq!(
            ray.resources.as_ref().unwrap().limits.as_ref().unwrap()["cpu"].0,
            "200m"
        );
    }

    #[test]
    fn job_name_keeps_suffix() {
        let long = "a".repeat(60);
        let name = cleanup_job_name(&long);
        assert_eq!(name.len(), 63);
        assert!(name.ends_with("-redis-cleanup"));
    }

    #[test]
    fn job_state_from_children() {
        let cluster = cluster_from_yaml(CLUSTER);
        let settings = Settings::default();
        let ctx = ClusterContext::new(&cluster, &settings);
        assert_eq!(cleanup_job_state(&ctx, &[]), CleanupJobState::Missing);
        let child = |status: &str| ObservedObject {
            api_version: "batch/v1".into(),
            kind: "Job".into(),
            name: "rc-redis-cleanup".into(),
            uid: "j".into(),
            object: format!(
                r#"{{"apiVersion":"batch/v1","kind":"Job","metadata":{{"name":"rc-redis-cleanup"}},"status":{status}}}"#
            ),
        };
        assert_eq!(
            cleanup_job_state(&ctx, &[child("{}")]),
            CleanupJobState::Running
        );
        let failed = child(r#"{"conditions":[{"type":"Failed","status":"True"}]}"#);
        assert_eq!(
            cleanup_job_state(&ctx, &[failed]),
            CleanupJobState::Finished
        );
    }
}
