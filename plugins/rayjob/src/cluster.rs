//! The RayCluster of a RayJob: the one it creates (a copy of `rayClusterSpec` with the
//! RayJob's labels and annotations, and the submitter sidecar in SidecarMode), its dashboard
//! address, and what it still lacks before the job can start.

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use wasmray_crds::constants::{
    DASHBOARD_PORT_NAME, DEFAULT_DASHBOARD_PORT, HEAD_POD_NOT_FOUND, HEAD_POD_READY,
    RAY_CLUSTER_PROVISIONED, RAY_CLUSTER_REPLICA_FAILURE, RAY_ORIGINATED_FROM_CR_NAME_LABEL_KEY,
    RAY_ORIGINATED_FROM_CRD_LABEL_KEY,
};
use wasmray_crds::raycluster::{AuthMode, ClusterState};
use wasmray_crds::{RayCluster, RayClusterSpec, RayJob};

/// The RayCluster a RayJob creates, named `name`. `sidecar` is SidecarMode's submitter,
/// appended to the head pod, whose restart policy becomes `Never` (the job runs once).
pub fn desired_cluster(
    job: &RayJob,
    spec: &RayClusterSpec,
    name: &str,
    sidecar: Option<Container>,
) -> RayCluster {
    let mut labels = job.metadata.labels.clone().unwrap_or_default();
    labels.insert(
        RAY_ORIGINATED_FROM_CR_NAME_LABEL_KEY.to_owned(),
        job.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(
        RAY_ORIGINATED_FROM_CRD_LABEL_KEY.to_owned(),
        "RayJob".to_owned(),
    );
    let mut spec = spec.clone();
    if let Some(sidecar) = sidecar
        && let Some(pod) = spec.head_group_spec.template.spec.as_mut()
    {
        pod.containers.push(sidecar);
        pod.restart_policy = Some("Never".to_owned());
    }
    let mut cluster = RayCluster::new(name, spec);
    cluster.metadata = ObjectMeta {
        name: Some(name.to_owned()),
        namespace: job.metadata.namespace.clone(),
        labels: Some(labels),
        annotations: job.metadata.annotations.clone(),
        ..ObjectMeta::default()
    };
    cluster
}

/// The head container's dashboard port (`dashboard`, else Ray's default).
pub fn dashboard_port(spec: &RayClusterSpec) -> i32 {
    spec.head_container_port(DASHBOARD_PORT_NAME)
        .unwrap_or(DEFAULT_DASHBOARD_PORT)
}

/// The head container's image.
pub fn head_image(spec: &RayClusterSpec) -> Option<&str> {
    spec.head_group_spec
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .image
        .as_deref()
}

/// The Secret with the cluster's auth token, when the cluster uses token auth.
pub fn auth_secret<'a>(spec: &RayClusterSpec, cluster_name: &'a str) -> Option<&'a str> {
    spec.auth_options
        .as_ref()
        .and_then(|options| options.mode)
        .filter(|mode| *mode == AuthMode::Token)
        .map(|_| cluster_name)
}

/// `status.dashboardURL`: `<head service>.<namespace>.svc.<domain>:<dashboard port>`, the
/// head service as the cluster reports it.
pub fn dashboard_url(cluster: &RayCluster, name: &str, namespace: &str, domain: &str) -> String {
    let service = cluster
        .status
        .as_ref()
        .and_then(|status| status.head.as_ref())
        .and_then(|head| head.service_name.clone())
        .filter(|service| !service.is_empty())
        .unwrap_or_else(|| format!("{name}-head-svc"));
    format!(
        "{service}.{namespace}.svc.{domain}:{}",
        dashboard_port(&cluster.spec)
    )
}

/// None once the cluster is ready (KubeRay's `state: ready`); otherwise what it is waiting
/// for, from its conditions and counts, so a stuck job says why.
pub fn not_ready_reason(cluster: &RayCluster, name: &str) -> Option<String> {
    let Some(status) = &cluster.status else {
        return Some(format!(
            "RayCluster {name} has no status yet: the RayCluster controller has not reconciled it"
        ));
    };
    match status.state {
        Some(ClusterState::Ready) => return None,
        Some(ClusterState::Suspended) => {
            return Some(format!("RayCluster {name} is suspended"));
        }
        _ => {}
    }
    let mut details = Vec::new();
    for condition in status.conditions.iter().flatten() {
        let bad = match condition.type_.as_str() {
            HEAD_POD_READY | RAY_CLUSTER_PROVISIONED => condition.status != "True",
            RAY_CLUSTER_REPLICA_FAILURE => condition.status == "True",
            _ => false,
        };
        if bad {
            let mut detail = format!("{} is {}", condition.type_, condition.status);
            let explanation = [condition.reason.as_str(), condition.message.as_str()]
                .into_iter()
                .filter(|text| !text.is_empty())
                .collect::<Vec<_>>()
                .join(": ");
            if !explanation.is_empty() {
                detail.push_str(&format!(" ({explanation})"));
            }
            details.push(detail);
        }
    }
    if let (Some(ready), Some(desired)) =
        (status.ready_worker_replicas, status.desired_worker_replicas)
        && ready < desired
    {
        details.push(format!("{ready} of {desired} worker replicas ready"));
    }
    if let Some(reason) = status.reason.as_deref().filter(|reason| !reason.is_empty()) {
        details.push(reason.to_owned());
    }
    if details.is_empty() {
        details.push("its pods are not all running and ready".to_owned());
    }
    Some(format!(
        "Waiting for RayCluster {name} to be ready: {}",
        details.join("; ")
    ))
}

/// Some(why) when the cluster lost its head pod after it was provisioned. The RayCluster
/// plugin never gives a RayJob's cluster a new head (its GCS state is gone), so the job can
/// no longer finish there.
pub fn head_lost(cluster: &RayCluster, name: &str) -> Option<String> {
    let conditions = cluster.status.as_ref()?.conditions.as_ref()?;
    let holds = |kind: &str, status: &str| {
        conditions
            .iter()
            .find(|condition| condition.type_ == kind)
            .filter(|condition| condition.status == status)
    };
    holds(RAY_CLUSTER_PROVISIONED, "True")?;
    let head = holds(HEAD_POD_READY, "False")?;
    (head.reason == HEAD_POD_NOT_FOUND).then(|| {
        format!("The Ray head pod of RayCluster {name} is gone after the cluster was provisioned; the job cannot finish on this cluster")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{cluster_from_yaml, job_from_yaml};

    const JOB: &str = r#"
metadata:
  name: rayjob-sample
  namespace: ns
  uid: uid-1
  labels: {kueue.x-k8s.io/queue-name: q}
  annotations: {wasmray.io/dashboard-address: "http://127.0.0.1:8265"}
spec:
  entrypoint: python x.py
  rayClusterSpec:
    rayVersion: "2.46.0"
    headGroupSpec:
      template:
        spec:
          containers:
          - name: ray-head
            image: rayproject/ray:2.46.0
            ports: [{name: dashboard, containerPort: 9999}]
"#;

    #[test]
    fn created_cluster_carries_the_jobs_labels_and_annotations() {
        let job = job_from_yaml(JOB);
        let spec = job.spec.ray_cluster_spec.as_ref().unwrap();
        let cluster = desired_cluster(&job, spec, "rayjob-sample-bcdfg", None);
        let value = serde_json::to_value(&cluster).unwrap();
        assert_eq!(value["apiVersion"], "ray.io/v1");
        assert_eq!(value["kind"], "RayCluster");
        assert_eq!(value["metadata"]["name"], "rayjob-sample-bcdfg");
        let labels = &value["metadata"]["labels"];
        assert_eq!(labels["kueue.x-k8s.io/queue-name"], "q");
        assert_eq!(labels["ray.io/originated-from-cr-name"], "rayjob-sample");
        assert_eq!(labels["ray.io/originated-from-crd"], "RayJob");
        assert_eq!(
            value["metadata"]["annotations"]["wasmray.io/dashboard-address"],
            "http://127.0.0.1:8265"
        );
        assert_eq!(&cluster.spec, spec);
    }

    #[test]
    fn sidecar_is_appended_to_the_head_and_restarts_never() {
        let job = job_from_yaml(JOB);
        let spec = job.spec.ray_cluster_spec.as_ref().unwrap();
        let sidecar = Container {
            name: "ray-job-submitter".into(),
            ..Container::default()
        };
        let cluster = desired_cluster(&job, spec, "c", Some(sidecar));
        let pod = cluster.spec.head_group_spec.template.spec.unwrap();
        assert_eq!(pod.containers.len(), 2);
        assert_eq!(pod.containers[1].name, "ray-job-submitter");
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    }

    #[test]
    fn dashboard_url_uses_the_reported_service_and_the_dashboard_port() {
        let job = job_from_yaml(JOB);
        let spec = job.spec.ray_cluster_spec.clone().unwrap();
        let mut cluster = RayCluster::new("c", spec);
        assert_eq!(
            dashboard_url(&cluster, "c", "ns", "cluster.local"),
            "c-head-svc.ns.svc.cluster.local:9999"
        );
        cluster.status =
            serde_json::from_value(serde_json::json!({"head": {"serviceName": "custom"}})).unwrap();
        assert_eq!(
            dashboard_url(&cluster, "c", "ns", "example.org"),
            "custom.ns.svc.example.org:9999"
        );
        cluster
            .spec
            .head_group_spec
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .ports = None;
        assert_eq!(dashboard_port(&cluster.spec), 8265);
    }

    #[test]
    fn not_ready_reason_names_conditions_and_counts() {
        let mut cluster = cluster_from_yaml("c", None);
        assert_eq!(
            not_ready_reason(&cluster, "c").unwrap(),
            "RayCluster c has no status yet: the RayCluster controller has not reconciled it"
        );
        cluster.status = serde_json::from_value(serde_json::json!({
            "readyWorkerReplicas": 0, "desiredWorkerReplicas": 2,
            "conditions": [
                {"type": "HeadPodReady", "status": "False", "reason": "HeadPodNotFound", "message": "", "lastTransitionTime": "2026-11-23T03:53:02Z"},
                {"type": "RayClusterProvisioned", "status": "False", "reason": "RayClusterPodsProvisioning", "message": "RayCluster Pods are being provisioned for first time", "lastTransitionTime": "2026-11-23T03:53:02Z"}
            ]
        }))
        .unwrap();
        assert_eq!(
            not_ready_reason(&cluster, "c").unwrap(),
            "Waiting for RayCluster c to be ready: HeadPodReady is False (HeadPodNotFound); RayClusterProvisioned is False (RayClusterPodsProvisioning: RayCluster Pods are being provisioned for first time); 0 of 2 worker replicas ready"
        );
        cluster.status.as_mut().unwrap().state = Some(ClusterState::Ready);
        assert_eq!(not_ready_reason(&cluster, "c"), None);
    }

    #[test]
    fn a_lost_head_is_noticed_only_after_provisioning() {
        let condition = |kind: &str, status: &str, reason: &str| {
            serde_json::json!({"type": kind, "status": status, "reason": reason, "message": "",
                               "lastTransitionTime": "2026-11-23T03:53:02Z"})
        };
        let mut cluster = cluster_from_yaml(
            "c",
            Some(serde_json::json!({"conditions": [
                condition("HeadPodReady", "False", "HeadPodNotFound"),
                condition("RayClusterProvisioned", "False", "RayClusterPodsProvisioning"),
            ]})),
        );
        assert_eq!(
            head_lost(&cluster, "c"),
            None,
            "not yet created is not lost"
        );
        cluster.status = serde_json::from_value(serde_json::json!({"conditions": [
            condition("HeadPodReady", "False", "HeadPodNotFound"),
            condition("RayClusterProvisioned", "True", "AllPodRunningAndReadyFirstTime"),
        ]}))
        .unwrap();
        assert!(
            head_lost(&cluster, "c")
                .unwrap()
                .contains("RayCluster c is gone")
        );
    }
}
