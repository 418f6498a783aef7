//! Example RayCluster reconciler.
//!
//! It does the work a real reconciler does on every call, so that benchmarks measure a
//! realistic decision: it reads every observed pod, groups pods by node type and worker
//! group, diffs each group against its desired size, creates missing pods from the
//! group's template (one template per group, per-pod labels), deletes surplus, failed and
//! `workersToDelete` pods, ensures the head service, and computes the full status.
//! It is not KubeRay-complete (no `ray start` command, no autoscaler sidecar, no GCS fault
//! tolerance): the built-in RayCluster plugin is.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use wasmray_plugin_sdk::k8s_openapi::api::core::v1::{
    Pod, PodTemplateSpec, Service, ServicePort, ServiceSpec,
};
use wasmray_plugin_sdk::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use wasmray_plugin_sdk::reconciler::{Decision, Reconciler, Request};
use wasmray_plugin_sdk::serde_json::{Value, json};
use wasmray_plugin_sdk::{
    Duration, Event, PluginError, Pod as ObservedPod, PodReplica, WriteMode, export_reconciler,
};

const LABEL_CLUSTER: &str = "ray.io/cluster";
const LABEL_NODE_TYPE: &str = "ray.io/node-type";
const LABEL_GROUP: &str = "ray.io/group";
const LABEL_IS_RAY_NODE: &str = "ray.io/is-ray-node";
const LABEL_IDENTIFIER: &str = "ray.io/identifier";
const LABEL_REPLICA_INDEX: &str = "ray.io/worker-group-replica-index";
const HEAD_GROUP: &str = "headgroup";
/// KubeRay truncates name prefixes to 50 characters.
const NAME_PREFIX_MAX: usize = 50;

/// The fields of a RayCluster this plugin reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RayCluster {
    pub metadata: ObjectMeta,
    pub spec: RayClusterSpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RayClusterSpec {
    pub head_group_spec: HeadGroupSpec,
    #[serde(default)]
    pub worker_group_specs: Vec<WorkerGroupSpec>,
    pub suspend: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeadGroupSpec {
    pub template: PodTemplateSpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerGroupSpec {
    pub group_name: String,
    pub replicas: Option<i32>,
    pub min_replicas: Option<i32>,
    pub max_replicas: Option<i32>,
    pub num_of_hosts: Option<i32>,
    pub suspend: Option<bool>,
    pub template: PodTemplateSpec,
    pub scale_strategy: Option<ScaleStrategy>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleStrategy {
    #[serde(default)]
    pub workers_to_delete: Vec<String>,
}

impl WorkerGroupSpec {
    /// Pods the group should have: replicas clamped to [min, max], times hosts.
    fn desired_pods(&self, cluster_suspended: bool) -> usize {
        if cluster_suspended || self.suspend == Some(true) {
            return 0;
        }
        let min = self.min_replicas.unwrap_or(0).max(0);
        let max = self.max_replicas.unwrap_or(i32::MAX).max(min);
        let replicas = self.replicas.unwrap_or(min).clamp(min, max);
        let hosts = self.num_of_hosts.unwrap_or(1).max(1);
        usize::try_from(replicas.saturating_mul(hosts)).unwrap_or(0)
    }
}

pub struct ExampleReconciler;

impl Reconciler for ExampleReconciler {
    type Parent = RayCluster;
    const KINDS: &'static [&'static str] = &["RayCluster"];

    fn reconcile(request: Request<RayCluster>) -> Result<Decision, PluginError> {
        let cluster = &request.parent;
        let name = cluster
            .metadata
            .name
            .as_deref()
            .ok_or_else(|| PluginError::new("InvalidSpec", "metadata.name: required"))?;
        let suspended = cluster.spec.suspend == Some(true);
        let pods = request.pods.views();
        let observed = PodsByRole::group(&pods);
        let mut decision = Decision::default();

        // Pods that can never become ready again are replaced.
        for pod in observed.failed.iter() {
            decision.delete_pod(pod, "pod failed and does not restart");
        }

        reconcile_head(&request, name, suspended, &observed, &mut decision)?;
        let mut worker_status = WorkerCounts::default();
        let mut known_groups = BTreeSet::new();
        for group in &cluster.spec.worker_group_specs {
            known_groups.insert(group.group_name.as_str());
            let live = observed
                .workers
                .get(group.group_name.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            reconcile_group(name, group, suspended, live, &mut decision)?;
            worker_status.add(group, suspended, live);
        }
        for (group, pods) in &observed.workers {
            if !known_groups.contains(group) {
                for pod in pods {
                    decision.delete_pod(pod, "worker group no longer in spec");
                }
            }
        }
        ensure_head_service(&request, name, &mut decision)?;

        let status = status(&request, &observed, &worker_status);
        decision.set_status(&status)?;
        if !decision.output.create_pods.is_empty() || !decision.output.delete.is_empty() {
            // Look again soon: new pods get scheduled, deleted ones go away.
            decision.requeue_after(Duration::from_secs(2));
        }
        Ok(decision)
    }
}

export_reconciler!(ExampleReconciler);

/// The observed pods, sorted by role.
#[derive(Default)]
struct PodsByRole<'a> {
    heads: Vec<&'a ObservedPod<'a>>,
    workers: BTreeMap<&'a str, Vec<&'a ObservedPod<'a>>>,
    failed: Vec<&'a ObservedPod<'a>>,
    terminating: usize,
}

impl<'a> PodsByRole<'a> {
    fn group(pods: &'a [ObservedPod<'a>]) -> Self {
        let mut observed = PodsByRole::default();
        for pod in pods {
            if pod.deletion_timestamp.is_some() {
                observed.terminating += 1;
                continue;
            }
            if is_failed(pod) {
                observed.failed.push(pod);
                continue;
            }
            match pod.labels.get(LABEL_NODE_TYPE) {
                Some("head") => observed.heads.push(pod),
                Some("worker") => {
                    let group = pod.labels.get(LABEL_GROUP).unwrap_or_default();
                    observed.workers.entry(group).or_default().push(pod);
                }
                _ => {}
            }
        }
        observed
    }
}

fn is_failed(pod: &ObservedPod<'_>) -> bool {
    let ended = matches!(pod.phase, Some("Failed") | Some("Succeeded"));
    ended && pod.restart_policy != Some("Always")
}

fn is_ready(pod: &ObservedPod<'_>) -> bool {
    pod.phase == Some("Running")
        && pod
            .conditions
            .iter()
            .any(|condition| condition.condition_type == "Ready" && condition.status == "True")
}

fn name_prefix(text: &str) -> String {
    let mut prefix: String = text.chars().take(NAME_PREFIX_MAX).collect();
    prefix.make_ascii_lowercase();
    prefix
}

/// A pod built from a template with the cluster's labels; `generate_name` names it.
fn pod_from_template(
    template: &PodTemplateSpec,
    cluster: &str,
    node_type: &str,
    group: &str,
    generate_name: String,
) -> Pod {
    let mut metadata = template.metadata.clone().unwrap_or_default();
    let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(LABEL_CLUSTER.to_owned(), cluster.to_owned());
    labels.insert(LABEL_NODE_TYPE.to_owned(), node_type.to_owned());
    labels.insert(LABEL_GROUP.to_owned(), group.to_owned());
    labels.insert(LABEL_IS_RAY_NODE.to_owned(), "yes".to_owned());
    labels.insert(
        LABEL_IDENTIFIER.to_owned(),
        format!("{cluster}-{node_type}"),
    );
    metadata.generate_name = Some(generate_name);
    metadata.name = None;
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.restart_policy
        .get_or_insert_with(|| "Never".to_owned());
    Pod {
        metadata,
        spec: Some(spec),
        status: None,
    }
}

fn reconcile_head(
    request: &Request<RayCluster>,
    name: &str,
    suspended: bool,
    observed: &PodsByRole<'_>,
    decision: &mut Decision,
) -> Result<(), PluginError> {
    if suspended {
        for pod in &observed.heads {
            decision.delete_pod(pod, "cluster suspended");
        }
        return Ok(());
    }
    // More than one head: keep the oldest.
    let mut heads = observed.heads.clone();
    heads.sort_by(|a, b| {
        let key = |pod: &ObservedPod<'_>| pod.creation_timestamp.map(|t| (t.seconds, t.nanos));
        key(a).cmp(&key(b)).then_with(|| a.name.cmp(b.name))
    });
    for extra in heads.iter().skip(1) {
        decision.delete_pod(extra, "more than one head pod");
    }
    if heads.is_empty() && observed.terminating == 0 {
        let head_template = &request.parent.spec.head_group_spec.template;
        let prefix = format!("{}-head", name_prefix(name));
        let pod = pod_from_template(
            head_template,
            name,
            "head",
            HEAD_GROUP,
            format!("{prefix}-"),
        );
        let fixed_name = (request.host.setting("deterministic-head-pod-name") == Some("true"))
            .then(|| prefix.clone());
        decision.create_pods(
            HEAD_GROUP,
            &pod,
            vec![PodReplica {
                name: fixed_name,
                labels: Vec::new(),
                annotations: Vec::new(),
            }],
        )?;
        decision.event(Event::normal(
            "CreatedHeadPod",
            format!("Creating head pod for RayCluster {name}"),
        ));
    }
    Ok(())
}

fn reconcile_group(
    cluster: &str,
    group: &WorkerGroupSpec,
    suspended: bool,
    live: &[&ObservedPod<'_>],
    decision: &mut Decision,
) -> Result<(), PluginError> {
    let to_delete: BTreeSet<&str> = group
        .scale_strategy
        .as_ref()
        .map(|strategy| {
            strategy
                .workers_to_delete
                .iter()
                .map(String::as_str)
                .collect()
        })
        .unwrap_or_default();
    let mut kept: Vec<&ObservedPod<'_>> = Vec::with_capacity(live.len());
    for pod in live {
        if to_delete.contains(pod.name) {
            decision.delete_pod(pod, "listed in workersToDelete");
        } else {
            kept.push(pod);
        }
    }
    let desired = group.desired_pods(suspended);
    if kept.len() > desired {
        // Remove pods that are not running first, then the highest replica indexes.
        kept.sort_by_key(|pod| {
            let index = pod
                .labels
                .get(LABEL_REPLICA_INDEX)
                .and_then(|index| index.parse::<u32>().ok())
                .unwrap_or(u32::MAX);
            (is_ready(pod), std::cmp::Reverse(index), pod.name)
        });
        let surplus = kept.len() - desired;
        for pod in kept.drain(..surplus) {
            decision.delete_pod(pod, "worker group scaled down");
        }
        decision.event(Event::normal(
            "DeletedWorkerPod",
            format!(
                "Deleting {surplus} pods of worker group {}",
                group.group_name
            ),
        ));
    } else if kept.len() < desired {
        let used: BTreeSet<u32> = kept
            .iter()
            .filter_map(|pod| pod.labels.get(LABEL_REPLICA_INDEX)?.parse().ok())
            .collect();
        let missing = desired - kept.len();
        let free_indexes = (0u32..).filter(|index| !used.contains(index)).take(missing);
        let replicas = free_indexes
            .map(|index| PodReplica {
                name: None,
                labels: vec![(LABEL_REPLICA_INDEX.to_owned(), index.to_string())],
                annotations: Vec::new(),
            })
            .collect();
        let generate_name = format!(
            "{}-worker-",
            name_prefix(&format!("{cluster}-{}", group.group_name))
        );
        let pod = pod_from_template(
            &group.template,
            cluster,
            "worker",
            &group.group_name,
            generate_name,
        );
        decision.create_pods(&group.group_name, &pod, replicas)?;
        decision.event(Event::normal(
            "CreatedWorkerPod",
            format!(
                "Creating {missing} pods of worker group {}",
                group.group_name
            ),
        ));
    }
    Ok(())
}

fn head_service_name(cluster: &str) -> String {
    format!("{cluster}-head-svc")
}

fn ensure_head_service(
    request: &Request<RayCluster>,
    name: &str,
    decision: &mut Decision,
) -> Result<(), PluginError> {
    let service_name = head_service_name(name);
    if request
        .services
        .iter()
        .any(|service| service.name == service_name)
    {
        return Ok(());
    }
    let selector: BTreeMap<String, String> = [
        (LABEL_CLUSTER, name.to_owned()),
        (LABEL_NODE_TYPE, "head".to_owned()),
        (LABEL_IDENTIFIER, format!("{name}-head")),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect();
    let port = |port_name: &str, port: i32| ServicePort {
        name: Some(port_name.to_owned()),
        port,
        ..ServicePort::default()
    };
    let service = Service {
        metadata: ObjectMeta {
            name: Some(service_name),
            labels: Some(selector.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![
                port("gcs-server", 6379),
                port("dashboard", 8265),
                port("client", 10001),
                port("metrics", 8080),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    // k8s-openapi leaves apiVersion/kind to its own serializer, which writes them.
    decision.apply(&service, WriteMode::CreateOnly)
}

/// Worker counts over all groups, for the status.
#[derive(Default)]
struct WorkerCounts {
    desired: usize,
    min: i64,
    max: i64,
    ready: usize,
    available: usize,
}

impl WorkerCounts {
    fn add(&mut self, group: &WorkerGroupSpec, suspended: bool, live: &[&ObservedPod<'_>]) {
        let hosts = i64::from(group.num_of_hosts.unwrap_or(1).max(1));
        self.desired += group.desired_pods(suspended);
        self.min += i64::from(group.min_replicas.unwrap_or(0)) * hosts;
        self.max += i64::from(group.max_replicas.unwrap_or(0)) * hosts;
        self.ready += live.iter().filter(|pod| is_ready(pod)).count();
        self.available += live
            .iter()
            .filter(|pod| pod.phase == Some("Running"))
            .count();
    }
}

fn status(
    request: &Request<RayCluster>,
    observed: &PodsByRole<'_>,
    workers: &WorkerCounts,
) -> Value {
    let head = observed.heads.first();
    let head_ready = head.is_some_and(|pod| is_ready(pod));
    let all_ready = head_ready && workers.ready >= workers.desired;
    let now = request.now.to_rfc3339();
    let condition = |condition_type: &str, ok: bool, reason: &str| {
        json!({
            "type": condition_type,
            "status": if ok { "True" } else { "False" },
            "reason": reason,
            "lastTransitionTime": now,
        })
    };
    let mut status = json!({
        "readyWorkerReplicas": workers.ready,
        "availableWorkerReplicas": workers.available,
        "desiredWorkerReplicas": workers.desired,
        "minWorkerReplicas": workers.min,
        "maxWorkerReplicas": workers.max,
        "observedGeneration": request.parent.metadata.generation,
        "head": {
            "podName": head.map(|pod| pod.name),
            "podIP": head.and_then(|pod| pod.pod_ip),
            "serviceName": head_service_name(request.parent.metadata.name.as_deref().unwrap_or_default()),
        },
        "conditions": [
            condition("HeadPodReady", head_ready, if head_ready { "HeadPodRunningAndReady" } else { "HeadPodNotFound" }),
            condition("RayClusterProvisioned", all_ready, if all_ready { "AllPodRunningAndReadyFirstTime" } else { "RayClusterPodsProvisioning" }),
        ],
    });
    if all_ready {
        status["state"] = json!("ready");
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmray_plugin_sdk::reconciler::{RayObservations, ReconcileInput, run};
    use wasmray_plugin_sdk::record::Pod as PodRecord;
    use wasmray_plugin_sdk::{HostFacts, ObservedPods, Timestamp};

    fn input(pods: Vec<PodRecord>) -> ReconcileInput {
        let parent = json!({
            "apiVersion": "ray.io/v1", "kind": "RayCluster",
            "metadata": {"name": "demo", "namespace": "default", "generation": 3},
            "spec": {
                "headGroupSpec": {"template": {"spec": {"containers": [{"name": "ray-head", "image": "rayproject/ray:2.46.0"}]}}},
                "workerGroupSpecs": [{
                    "groupName": "cpu", "replicas": 2, "minReplicas": 0, "maxReplicas": 5,
                    "template": {"spec": {"containers": [{"name": "ray-worker", "image": "rayproject/ray:2.46.0"}]}}
                }]
            }
        });
        ReconcileInput {
            kind: "RayCluster".into(),
            parent: parent.to_string(),
            pods: ObservedPods::from_records(&pods),
            services: Vec::new(),
            children: Vec::new(),
            related: Vec::new(),
            ray: RayObservations::default(),
            failed_writes: Vec::new(),
            now: Timestamp {
                seconds: 1_795_405_982,
                nanos: 0,
            },
            config: String::new(),
            host: HostFacts {
                operator_version: "0.1.0".into(),
                feature_gates: Vec::new(),
                settings: Vec::new(),
            },
        }
    }

    fn worker(name: &str, index: u32) -> PodRecord {
        PodRecord {
            name: name.into(),
            uid: format!("uid-{name}"),
            resource_version: "1".into(),
            labels: vec![
                (LABEL_NODE_TYPE.into(), "worker".into()),
                (LABEL_GROUP.into(), "cpu".into()),
                (LABEL_REPLICA_INDEX.into(), index.to_string()),
            ],
            annotations: Vec::new(),
            creation_timestamp: None,
            deletion_timestamp: None,
            node_name: None,
            restart_policy: Some("Never".into()),
            scheduler_name: None,
            phase: Some("Running".into()),
            reason: None,
            message: None,
            pod_ip: None,
            host_ip: None,
            start_time: None,
            conditions: Vec::new(),
            init_container_statuses: Vec::new(),
            container_statuses: Vec::new(),
        }
    }

    #[test]
    fn new_cluster_gets_head_workers_and_service() {
        let output = run::<ExampleReconciler>(input(Vec::new())).unwrap();
        let groups: Vec<(&str, usize)> = output
            .create_pods
            .iter()
            .map(|set| (set.group.as_str(), set.replicas.len()))
            .collect();
        assert_eq!(groups, vec![("headgroup", 1), ("cpu", 2)]);
        assert_eq!(output.apply.len(), 1);
        assert!(output.apply[0].object.contains("\"demo-head-svc\""));
        let indexes: Vec<&str> = output.create_pods[1]
            .replicas
            .iter()
            .map(|replica| replica.labels[0].1.as_str())
            .collect();
        assert_eq!(indexes, vec!["0", "1"]);
    }

    #[test]
    fn surplus_workers_are_deleted_highest_index_first() {
        let pods = vec![worker("w0", 0), worker("w1", 1), worker("w2", 2)];
        let output = run::<ExampleReconciler>(input(pods)).unwrap();
        let deleted: Vec<&str> = output.delete.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(deleted, vec!["w2"]);
    }
}
