//! RayCluster status as KubeRay v1.5.1 computes it (conditions, counters, desired
//! resources, state, endpoints, head info) and suspension, which is driven by conditions.
//!
//! The plugin returns a status only when something in it changed: `lastUpdateTime` moves
//! only with another change, so a settled cluster costs the API server no write.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use wasmray_crds::constants::*;
use wasmray_crds::raycluster::{ClusterState, HeadInfo, RayClusterStatus};
use wasmray_plugin_sdk::{ContainerState, ObservedService, Pod, Timestamp, lookup};

use crate::cluster::ClusterContext;
use crate::ray_start::is_gpu_resource;
use crate::scale::{
    PodMode, PodPlan, RayPod, is_head, is_running_and_ready, is_terminating, is_worker,
};
use wasmray_crds::quantity::Quantity;
use wasmray_crds::ray_resources::cluster_resources;

const TPU_RESOURCE: &str = "google.com/tpu";

/// A condition of KubeRay's status for invalid objects has no equivalent; WasmRay adds
/// this one (True while the object breaks a validation rule) next to the Warning event.
pub const RAY_CLUSTER_INVALID: &str = "RayClusterInvalid";

/// Where the cluster is in a suspension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuspendStep {
    /// Not suspending; nothing to change.
    None,
    /// `spec.suspend` was just set: mark Suspending and start deleting pods.
    Begin,
    /// Suspending: keep deleting until no pod is left.
    Continue,
    /// Suspending and no pod left: mark Suspended.
    Complete,
    /// Suspended and still wanted so: leave the pods alone.
    Stay,
    /// Suspended but `spec.suspend` is false: resume.
    Resume,
}

impl SuspendStep {
    pub fn pod_mode(self) -> PodMode {
        match self {
            SuspendStep::Begin | SuspendStep::Continue => PodMode::DeleteAll,
            SuspendStep::Complete | SuspendStep::Stay => PodMode::Leave,
            SuspendStep::None | SuspendStep::Resume => PodMode::Reconcile,
        }
    }
}

fn condition_is_true(status: Option<&RayClusterStatus>, condition_type: &str) -> bool {
    status
        .and_then(|status| status.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == condition_type && c.status == "True")
}

/// The next suspension step from `spec.suspend`, the current conditions and the pods.
/// Without the status-conditions gate, KubeRay simply deletes pods while `suspend` is true.
pub fn suspend_step(ctx: &ClusterContext, pods: &[RayPod<'_>]) -> SuspendStep {
    let wanted = ctx.cluster.spec.is_suspended();
    let status = ctx.cluster.status.as_ref();
    if !ctx.settings.status_conditions {
        return match (wanted, pods.is_empty()) {
            (false, _) => SuspendStep::None,
            (true, false) => SuspendStep::Continue,
            (true, true) => SuspendStep::Stay,
        };
    }
    if condition_is_true(status, RAY_CLUSTER_SUSPENDING) {
        // Atomic: finishes even if `suspend` flipped back meanwhile.
        return if pods.is_empty() {
            SuspendStep::Complete
        } else {
            SuspendStep::Continue
        };
    }
    match (condition_is_true(status, RAY_CLUSTER_SUSPENDED), wanted) {
        (true, true) => SuspendStep::Stay,
        (true, false) => SuspendStep::Resume,
        (false, true) => SuspendStep::Begin,
        (false, false) => SuspendStep::None,
    }
}

/// What the reconcile pass found besides the pods: needed to judge state and conditions.
pub struct PassOutcome<'a, 'p> {
    pub plan: &'a PodPlan<'p>,
    pub suspend: SuspendStep,
    /// A failed pod write reported by the host: (KubeRay reason, message).
    pub replica_failure: Option<(String, String)>,
    /// Validation errors: (event reason, message).
    pub invalid: Option<(&'a str, String)>,
}

/// The new status, or `None` when it would equal the current one.
pub fn compute_status(
    ctx: &ClusterContext,
    pods: &[RayPod<'_>],
    services: &[ObservedService],
    outcome: &PassOutcome,
    now: Timestamp,
) -> Option<RayClusterStatus> {
    let old = ctx.cluster.status.as_ref();
    let mut status = old.cloned().unwrap_or_default();
    let now = now.to_kube_time();
    let head_pod = pods
        .iter()
        .filter(|pod| is_head(pod))
        .min_by_key(|pod| is_terminating(pod));
    let conditions = status.conditions.get_or_insert_with(Vec::new);

    match &outcome.invalid {
        Some((reason, message)) => {
            set_condition(conditions, RAY_CLUSTER_INVALID, true, reason, message, &now);
            status.observed_generation = ctx.cluster.metadata.generation;
            return finish(status, old, now);
        }
        None => conditions.retain(|c| c.type_ != RAY_CLUSTER_INVALID),
    }

    if ctx.settings.status_conditions {
        update_conditions(conditions, pods, head_pod, outcome, &now);
    }
    if status.conditions.as_ref().is_some_and(Vec::is_empty) {
        status.conditions = None;
    }

    update_counters(ctx, &mut status, pods);
    update_desired_resources(ctx, &mut status);
    update_head_and_endpoints(ctx, &mut status, head_pod.map(|pod| pod.pod), services);
    update_state(ctx, &mut status, pods, outcome, &now);
    status.observed_generation = ctx.cluster.metadata.generation;
    finish(status, old, now)
}

fn finish(
    mut status: RayClusterStatus,
    old: Option<&RayClusterStatus>,
    now: Time,
) -> Option<RayClusterStatus> {
    let unchanged = match old {
        Some(old) => *old == status,
        None => status == RayClusterStatus::default(),
    };
    if unchanged {
        return None;
    }
    status.last_update_time = Some(now);
    Some(status)
}

/// `meta.SetStatusCondition`: the transition time moves only when the status does.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    condition_type: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: &Time,
) {
    let status = if status { "True" } else { "False" };
    match conditions.iter_mut().find(|c| c.type_ == condition_type) {
        Some(existing) => {
            if existing.status != status {
                existing.status = status.to_owned();
                existing.last_transition_time = now.clone();
            }
            existing.reason = reason.to_owned();
            existing.message = message.to_owned();
        }
        None => conditions.push(Condition {
            type_: condition_type.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            last_transition_time: now.clone(),
            observed_generation: None,
        }),
    }
}

fn update_conditions(
    conditions: &mut Vec<Condition>,
    pods: &[RayPod<'_>],
    head_pod: Option<&RayPod<'_>>,
    outcome: &PassOutcome,
    now: &Time,
) {
    match &outcome.replica_failure {
        Some((reason, message)) => set_condition(
            conditions,
            RAY_CLUSTER_REPLICA_FAILURE,
            true,
            reason,
            message,
            now,
        ),
        None => conditions.retain(|c| c.type_ != RAY_CLUSTER_REPLICA_FAILURE),
    }

    let (ready, reason, message) = head_pod_ready(head_pod.map(|pod| pod.pod));
    set_condition(conditions, HEAD_POD_READY, ready, &reason, &message, now);

    // Before the suspend conditions, so that a new cluster lists its conditions in
    // KubeRay's order.
    let provisioned = conditions
        .iter()
        .any(|c| c.type_ == RAY_CLUSTER_PROVISIONED && c.status == "True");
    let suspended = !matches!(outcome.suspend, SuspendStep::None | SuspendStep::Resume);
    if !provisioned && !suspended {
        let all_ready = !pods.is_empty()
            && !outcome.plan.changes_pods()
            && pods
                .iter()
                .all(|pod| pod.phase == Some("Running") && pod.ready != Some("False"));
        if all_ready {
            set_condition(
                conditions,
                RAY_CLUSTER_PROVISIONED,
                true,
                ALL_POD_RUNNING_AND_READY_FIRST_TIME,
                "All Ray Pods are ready for the first time",
                now,
            );
        } else {
            set_condition(
                conditions,
                RAY_CLUSTER_PROVISIONED,
                false,
                RAY_CLUSTER_PODS_PROVISIONING,
                "RayCluster Pods are being provisioned for first time",
                now,
            );
        }
    }

    // KubeRay states both suspend conditions on every cluster that is neither suspending
    // nor suspended, False unless a suspension begins.
    let suspend_condition = |conditions: &mut Vec<Condition>, condition_type: &str, status| {
        set_condition(conditions, condition_type, status, condition_type, "", now);
    };
    match outcome.suspend {
        SuspendStep::None => {
            suspend_condition(conditions, RAY_CLUSTER_SUSPENDED, false);
            suspend_condition(conditions, RAY_CLUSTER_SUSPENDING, false);
        }
        SuspendStep::Begin => {
            suspend_condition(conditions, RAY_CLUSTER_SUSPENDED, false);
            suspend_condition(conditions, RAY_CLUSTER_SUSPENDING, true);
        }
        SuspendStep::Complete => {
            set_condition(
                conditions,
                RAY_CLUSTER_PROVISIONED,
                false,
                RAY_CLUSTER_PODS_PROVISIONING,
                "RayCluster has been suspended",
                now,
            );
            suspend_condition(conditions, RAY_CLUSTER_SUSPENDING, false);
            suspend_condition(conditions, RAY_CLUSTER_SUSPENDED, true);
        }
        SuspendStep::Resume => suspend_condition(conditions, RAY_CLUSTER_SUSPENDED, false),
        SuspendStep::Continue | SuspendStep::Stay => {}
    }
}

/// `HeadPodReady` mirrors the head pod's Ready condition, with the failing container's
/// reason in place of the generic `ContainersNotReady`.
fn head_pod_ready(head: Option<&Pod<'_>>) -> (bool, String, String) {
    let Some(head) = head else {
        return (
            false,
            HEAD_POD_NOT_FOUND.to_owned(),
            "Head Pod not found".to_owned(),
        );
    };
    let Some(ready) = head.conditions.iter().find(|c| c.condition_type == "Ready") else {
        return (false, "Unknown".to_owned(), String::new());
    };
    let is_true = ready.status == "True";
    let mut reason = ready.reason.unwrap_or_default().to_owned();
    let mut message = ready.message.unwrap_or_default().to_owned();
    if reason.is_empty() && is_true {
        reason = HEAD_POD_RUNNING_AND_READY.to_owned();
    }
    if reason == "ContainersNotReady"
        && let Some(status) = head.container_statuses.first()
    {
        let detail = match status.state {
            ContainerState::Waiting(waiting) => waiting.reason.zip(Some(waiting.message)),
            ContainerState::Terminated(terminated) => {
                terminated.reason.zip(Some(terminated.message))
            }
            _ => None,
        };
        if let Some((container_reason, container_message)) = detail {
            reason = container_reason.to_owned();
            message = format!(
                "{message}; {}: {}",
                status.name,
                container_message.unwrap_or_default()
            );
        }
    }
    if reason.is_empty() {
        reason = "Unknown".to_owned();
    }
    (is_true, reason, message)
}

fn update_counters(ctx: &ClusterContext, status: &mut RayClusterStatus, pods: &[RayPod<'_>]) {
    let workers = || {
        pods.iter()
            .filter(|pod| is_worker(pod) && !is_terminating(pod))
    };
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    status.ready_worker_replicas = Some(count(
        workers().filter(|pod| is_running_and_ready(pod)).count(),
    ));
    status.available_worker_replicas = Some(count(
        workers().filter(|pod| pod.phase == Some("Running")).count(),
    ));
    let (mut desired, mut min, mut max) = (0i32, 0i32, 0i32);
    for group in ctx.cluster.spec.worker_groups() {
        let hosts = group.num_of_hosts();
        desired = desired.saturating_add(group.desired_replicas().saturating_mul(hosts));
        if !group.is_suspended() {
            min = min.saturating_add(group.min_replicas().saturating_mul(hosts));
            max = max.saturating_add(group.max_replicas().saturating_mul(hosts));
        }
    }
    status.desired_worker_replicas = Some(desired);
    status.min_worker_replicas = Some(min);
    status.max_worker_replicas = Some(max);
}

fn update_desired_resources(ctx: &ClusterContext, status: &mut RayClusterStatus) {
    // KubeRay counts the raw replicas here, not clamped to the group's bounds.
    let total = cluster_resources(&ctx.cluster.spec, |group| {
        i64::from(group.replicas.unwrap_or(0)) * i64::from(group.num_of_hosts())
    });
    let sum = |matches: &dyn Fn(&str) -> bool| {
        let quantity = total
            .iter()
            .filter(|(name, _)| matches(name))
            .fold(Quantity::ZERO, |acc, (_, q)| acc + *q);
        Some(K8sQuantity(quantity.to_string()))
    };
    status.desired_cpu = sum(&|name| name == "cpu");
    status.desired_memory = sum(&|name| name == "memory");
    status.desired_gpu = sum(&is_gpu_resource);
    status.desired_tpu = sum(&|name| name == TPU_RESOURCE);
}

fn update_head_and_endpoints(
    ctx: &ClusterContext,
    status: &mut RayClusterStatus,
    head_pod: Option<&Pod<'_>>,
    services: &[ObservedService],
) {
    let head_service = services.iter().find(|service| {
        lookup(&service.labels, RAY_CLUSTER_LABEL_KEY) == Some(ctx.name)
            && lookup(&service.labels, RAY_NODE_TYPE_LABEL_KEY) == Some(HEAD_NODE_TYPE)
    });
    let pod_ip = head_pod
        .and_then(|pod| pod.pod_ip)
        .filter(|ip| !ip.is_empty())
        .map(str::to_owned);
    let service_ip = head_service.and_then(|service| match service.cluster_ip.as_deref() {
        Some("None") => pod_ip.clone(),
        Some("") | None => None,
        Some(ip) => Some(ip.to_owned()),
    });
    let head = HeadInfo {
        pod_ip,
        service_ip,
        pod_name: head_pod.map(|pod| pod.name.to_owned()),
        service_name: head_service.map(|service| service.name.clone()),
    };
    status.head = (head != HeadInfo::default()).then_some(head);
    let endpoints: BTreeMap<String, String> = head_service
        .into_iter()
        .flat_map(|service| {
            service.ports.iter().filter_map(move |port| {
                let name = port.name.as_deref()?;
                Some((name.to_owned(), endpoint(ctx, service, name, port.port)))
            })
        })
        .collect();
    status.endpoints = (!endpoints.is_empty()).then_some(endpoints);
}

/// KubeRay reports a head Service port's node port if it has one, else its target port.
/// The observed record carries only the Service port (the contract's `service-port` has
/// no node or target port), so both come from the user's `headService` where it sets
/// them for this port; otherwise the Service port is the API server's default target
/// port. A node port the API server allocated cannot be seen here.
fn endpoint(ctx: &ClusterContext, service: &ObservedService, name: &str, port: i32) -> String {
    let declared = ctx
        .cluster
        .spec
        .head_group_spec
        .head_service
        .as_ref()
        .filter(|_| service.name == ctx.head_service_name)
        .and_then(|custom| custom.spec.as_ref()?.ports.as_ref())
        .into_iter()
        .flatten()
        .find(|declared| declared.name.as_deref() == Some(name) && declared.port == port);
    let Some(declared) = declared else {
        return port.to_string();
    };
    if let Some(node_port) = declared.node_port.filter(|&node_port| node_port != 0) {
        return node_port.to_string();
    }
    match &declared.target_port {
        Some(IntOrString::Int(target)) if *target != 0 => target.to_string(),
        Some(IntOrString::String(target)) if !target.is_empty() => target.clone(),
        _ => port.to_string(),
    }
}

fn update_state(
    ctx: &ClusterContext,
    status: &mut RayClusterStatus,
    pods: &[RayPod<'_>],
    outcome: &PassOutcome,
    now: &Time,
) {
    let suspended_now = if ctx.settings.status_conditions {
        outcome.suspend == SuspendStep::Complete
    } else {
        outcome.suspend == SuspendStep::Stay
    };
    let desired_pods = status
        .desired_worker_replicas
        .unwrap_or(0)
        .saturating_add(1);
    let all_ready = outcome.plan.problems.is_empty()
        && outcome.replica_failure.is_none()
        && !outcome.plan.changes_pods()
        && outcome.suspend.pod_mode() == PodMode::Reconcile
        && usize::try_from(desired_pods).is_ok_and(|n| n == pods.len())
        && pods.iter().all(is_running_and_ready);
    let new_state = if suspended_now {
        Some(ClusterState::Suspended)
    } else if all_ready {
        status.reason = None;
        Some(ClusterState::Ready)
    } else {
        if !outcome.plan.problems.is_empty() {
            status.reason = Some(outcome.plan.problems.join("; "));
        }
        status.state
    };
    if new_state != status.state
        && let Some(state) = new_state
    {
        let key = serde_json::to_value(state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        status
            .state_transition_times
            .get_or_insert_with(BTreeMap::new)
            .insert(key, now.clone());
        status.state = Some(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use crate::test_support::{self, cluster_from_yaml, pod, views};
    use wasmray_plugin_sdk::bindings::types::ServicePort;
    use wasmray_plugin_sdk::record::{
        ContainerState, ContainerStatus, ContainerWaiting, Pod as PodRecord, PodCondition,
    };

    const CLUSTER: &str = r#"
metadata: {name: rc, namespace: ns, uid: u, generation: 3}
spec:
  headGroupSpec:
    template:
      spec:
        containers:
        - name: ray-head
          resources: {requests: {cpu: "1", memory: 2Gi}}
  workerGroupSpecs:
  - groupName: g
    replicas: 2
    minReplicas: 1
    maxReplicas: 5
    template:
      spec:
        containers:
        - name: ray-worker
          resources: {limits: {cpu: "2", memory: 4Gi, nvidia.com/gpu: "1"}, requests: {cpu: 500m}}
        - name: sidecar
          resources: {requests: {cpu: 100m, google.com/tpu: "4"}}
  - groupName: off
    suspend: true
    replicas: 3
    maxReplicas: 3
    template: {spec: {containers: [{name: w, resources: {requests: {cpu: "8"}}}]}}
"#;

    const NOW: Timestamp = Timestamp {
        seconds: 1_800_000_000,
        nanos: 5,
    };

    /// The shared head Service of `rc`, which also serves the GCS port.
    fn head_service() -> ObservedService {
        let mut service = test_support::head_service("rc");
        service.ports.push(ServicePort {
            name: Some("gcs-server".into()),
            port: 6379,
            protocol: None,
        });
        service
    }

    fn ready_pods() -> Vec<PodRecord> {
        vec![
            pod("rc-head-a", "head", "headgroup", "Running", true),
            pod("rc-g-worker-a", "worker", "g", "Running", true),
            pod("rc-g-worker-b", "worker", "g", "Running", true),
        ]
    }

    fn compute(
        cluster: &wasmray_crds::RayCluster,
        pods: &[PodRecord],
        plan: &PodPlan,
    ) -> Option<RayClusterStatus> {
        let settings = Settings::default();
        let ctx = ClusterContext::new(cluster, &settings);
        let pods = &views(pods);
        let outcome = PassOutcome {
            plan,
            suspend: suspend_step(&ctx, pods),
            replica_failure: None,
            invalid: None,
        };
        compute_status(&ctx, pods, &[head_service()], &outcome, NOW)
    }

    fn condition<'a>(status: &'a RayClusterStatus, kind: &str) -> Option<&'a Condition> {
        status.conditions.as_ref()?.iter().find(|c| c.type_ == kind)
    }

    #[test]
    fn ready_cluster_status() {
        let cluster = cluster_from_yaml(CLUSTER);
        let status = compute(&cluster, &ready_pods(), &PodPlan::default()).unwrap();
        assert_eq!(status.state, Some(ClusterState::Ready));
        assert_eq!(status.ready_worker_replicas, Some(2));
        assert_eq!(status.available_worker_replicas, Some(2));
        assert_eq!(status.desired_worker_replicas, Some(2));
        assert_eq!(status.min_worker_replicas, Some(1));
        assert_eq!(status.max_worker_replicas, Some(5));
        assert_eq!(status.desired_cpu.as_ref().unwrap().0, "2200m");
        assert_eq!(status.desired_memory.as_ref().unwrap().0, "10Gi");
        assert_eq!(status.desired_gpu.as_ref().unwrap().0, "2");
        assert_eq!(status.desired_tpu.as_ref().unwrap().0, "8");
        assert_eq!(status.observed_generation, Some(3));
        let head = status.head.as_ref().unwrap();
        assert_eq!(head.pod_name.as_deref(), Some("rc-head-a"));
        assert_eq!(head.service_name.as_deref(), Some("rc-head-svc"));
        assert_eq!(
            head.service_ip, head.pod_ip,
            "headless service: the head pod's IP"
        );
        let endpoints = status.endpoints.as_ref().unwrap();
        assert_eq!(endpoints["dashboard"], "8265");
        assert_eq!(
            condition(&status, HEAD_POD_READY).unwrap().reason,
            HEAD_POD_RUNNING_AND_READY
        );
        let provisioned = condition(&status, RAY_CLUSTER_PROVISIONED).unwrap();
        assert_eq!(
            (provisioned.status.as_str(), provisioned.reason.as_str()),
            ("True", ALL_POD_RUNNING_AND_READY_FIRST_TIME)
        );
        assert!(
            status
                .state_transition_times
                .as_ref()
                .unwrap()
                .contains_key("ready")
        );
        assert_eq!(
            status.last_update_time.as_ref().unwrap().0.as_second(),
            NOW.seconds
        );

        // Same inputs with the new status stored: nothing to write.
        let mut settled = cluster.clone();
        settled.status = Some(status.clone());
        assert_eq!(compute(&settled, &ready_pods(), &PodPlan::default()), None);
        // Round trip through JSON, as the API server stores it: still nothing.
        let json = serde_json::to_value(&settled).unwrap();
        let reread: wasmray_crds::RayCluster = serde_json::from_value(json).unwrap();
        assert_eq!(compute(&reread, &ready_pods(), &PodPlan::default()), None);
    }

    #[test]
    fn provisioning_and_never_reset_ready() {
        let cluster = cluster_from_yaml(CLUSTER);
        let status = compute(&cluster, &[], &PodPlan::default()).unwrap();
        assert_eq!(status.state, None);
        let head = condition(&status, HEAD_POD_READY).unwrap();
        assert_eq!(
            (head.status.as_str(), head.reason.as_str()),
            ("False", HEAD_POD_NOT_FOUND)
        );
        assert_eq!(
            condition(&status, RAY_CLUSTER_PROVISIONED).unwrap().status,
            "False"
        );
        assert_eq!(status.head.as_ref().and_then(|h| h.pod_name.clone()), None);

        let mut ready = cluster.clone();
        ready.status = compute(&cluster, &ready_pods(), &PodPlan::default());
        let mut pods = ready_pods();
        pods[1].conditions[0].status = "False".into();
        let status = compute(&ready, &pods, &PodPlan::default()).unwrap();
        assert_eq!(
            status.state,
            Some(ClusterState::Ready),
            "state is never reset"
        );
        assert_eq!(status.ready_worker_replicas, Some(1));
        assert_eq!(
            condition(&status, RAY_CLUSTER_PROVISIONED).unwrap().status,
            "True"
        );
    }

    #[test]
    fn head_pod_ready_uses_container_reason() {
        let cluster = cluster_from_yaml(CLUSTER);
        let mut pods = ready_pods();
        pods[0].conditions = vec![PodCondition {
            condition_type: "Ready".into(),
            status: "False".into(),
            reason: Some("ContainersNotReady".into()),
            message: Some("containers with unready status: [ray-head]".into()),
            last_transition_time: None,
        }];
        pods[0].container_statuses = vec![ContainerStatus {
            name: "ray-head".into(),
            ready: false,
            started: None,
            restart_count: 3,
            state: ContainerState::Waiting(ContainerWaiting {
                reason: Some("CrashLoopBackOff".into()),
                message: Some("back-off 40s".into()),
            }),
            last_state: ContainerState::Unknown,
        }];
        let status = compute(&cluster, &pods, &PodPlan::default()).unwrap();
        let head = condition(&status, HEAD_POD_READY).unwrap();
        assert_eq!(head.reason, "CrashLoopBackOff");
        assert_eq!(
            head.message,
            "containers with unready status: [ray-head]; ray-head: back-off 40s"
        );
        assert_eq!(status.state, None);
    }

    #[test]
    fn suspend_sequence() {
        let mut cluster = cluster_from_yaml(CLUSTER);
        cluster.spec.suspend = Some(true);
        let settings = Settings::default();
        let ctx = ClusterContext::new(&cluster, &settings);
        assert_eq!(
            suspend_step(&ctx, &views(&ready_pods())),
            SuspendStep::Begin
        );
        let status = compute(&cluster, &ready_pods(), &PodPlan::default()).unwrap();
        assert_eq!(
            condition(&status, RAY_CLUSTER_SUSPENDING).unwrap().status,
            "True"
        );
        assert_eq!(
            condition(&status, RAY_CLUSTER_SUSPENDED).unwrap().status,
            "False"
        );

        cluster.status = Some(status);
        cluster.spec.suspend = Some(false); // atomic: flipping back does not stop it
        let ctx = ClusterContext::new(&cluster, &settings);
        assert_eq!(
            suspend_step(&ctx, &views(&ready_pods())),
            SuspendStep::Continue
        );
        assert_eq!(suspend_step(&ctx, &[]), SuspendStep::Complete);
        let status = compute(&cluster, &[], &PodPlan::default()).unwrap();
        assert_eq!(
            condition(&status, RAY_CLUSTER_SUSPENDING).unwrap().status,
            "False"
        );
        assert_eq!(
            condition(&status, RAY_CLUSTER_SUSPENDED).unwrap().status,
            "True"
        );
        let provisioned = condition(&status, RAY_CLUSTER_PROVISIONED).unwrap();
        assert_eq!(provisioned.message, "RayCluster has been suspended");
        assert_eq!(status.state, Some(ClusterState::Suspended));

        cluster.status = Some(status);
        let ctx = ClusterContext::new(&cluster, &settings);
        assert_eq!(suspend_step(&ctx, &[]), SuspendStep::Resume);
        cluster.spec.suspend = Some(true);
        let ctx = ClusterContext::new(&cluster, &settings);
        assert_eq!(suspend_step(&ctx, &[]), SuspendStep::Stay);
        cluster.spec.suspend = Some(false);
        let status = compute(&cluster, &[], &PodPlan::default()).unwrap();
        assert_eq!(
            condition(&status, RAY_CLUSTER_SUSPENDED).unwrap().status,
            "False"
        );
        assert_eq!(
            condition(&status, RAY_CLUSTER_PROVISIONED).unwrap().status,
            "False"
        );
    }

    /// `status.endpoints` as KubeRay fills it: per named port of the head Service, the node
    /// port if non-zero, else the target port. Each row: the user's `headService` port
    /// (name, port, nodePort, targetPort) or none, then the value for the observed
    /// `dashboard: 8265`.
    #[test]
    fn endpoints_report_node_and_target_ports() {
        type DeclaredPort = (&'static str, i32, Option<i32>, Option<IntOrString>);
        let rows: [(Option<DeclaredPort>, &str); 7] = [
            (None, "8265"),
            (Some(("dashboard", 8265, Some(30265), None)), "30265"),
            (
                Some(("dashboard", 8265, Some(30265), Some(IntOrString::Int(8266)))),
                "30265",
            ),
            (
                Some(("dashboard", 8265, Some(0), Some(IntOrString::Int(8266)))),
                "8266",
            ),
            (
                Some((
                    "dashboard",
                    8265,
                    None,
                    Some(IntOrString::String("web".into())),
                )),
                "web",
            ),
            (Some(("dashboard", 8265, None, None)), "8265"),
            // Another port of that name in the spec than the one observed: not this port.
            (Some(("dashboard", 9000, Some(30265), None)), "8265"),
        ];
        for (declared, expected) in rows {
            let mut cluster = cluster_from_yaml(CLUSTER);
            if let Some((name, port, node_port, target_port)) = declared.clone() {
                cluster.spec.head_group_spec.head_service = Some(
                    serde_json::from_value(
                        serde_json::json!({"spec": {"type": "NodePort", "ports": [{
                            "name": name, "port": port, "nodePort": node_port,
                            "targetPort": target_port,
                        }]}}),
                    )
                    .unwrap(),
                );
            }
            let mut service = head_service();
            service.ports.push(ServicePort {
                name: None,
                port: 7000,
                protocol: None,
            });
            let settings = Settings::default();
            let ctx = ClusterContext::new(&cluster, &settings);
            let plan = PodPlan::default();
            let outcome = PassOutcome {
                plan: &plan,
                suspend: SuspendStep::None,
                replica_failure: None,
                invalid: None,
            };
            let pods = views(&ready_pods());
            let status = compute_status(&ctx, &pods, &[service.clone()], &outcome, NOW).unwrap();
            let endpoints = status.endpoints.unwrap();
            assert_eq!(endpoints["dashboard"], expected, "{declared:?}");
            assert_eq!(endpoints["gcs-server"], "6379", "{declared:?}");
            assert_eq!(endpoints.len(), 2, "an unnamed port is left out");

            // The same labels on a Service of another name: not the one the spec built.
            service.name = "other".into();
            let status = compute_status(&ctx, &pods, &[service], &outcome, NOW).unwrap();
            assert_eq!(
                status.endpoints.unwrap()["dashboard"],
                "8265",
                "{declared:?}"
            );
        }
    }

    /// KubeRay (gate on) states `RayClusterSuspended` and `RayClusterSuspending` on every
    /// cluster, reason = type, no message; each row: `spec.suspend`, the stored
    /// (Suspended, Suspending), whether pods are left, then the (Suspended, Suspending)
    /// written.
    #[test]
    fn suspend_conditions_on_every_cluster() {
        type Pair = (Option<&'static str>, Option<&'static str>);
        let rows: [(Option<bool>, Pair, bool, Pair); 9] = [
            (None, (None, None), true, (Some("False"), Some("False"))),
            (
                Some(false),
                (None, None),
                false,
                (Some("False"), Some("False")),
            ),
            (
                Some(true),
                (None, None),
                true,
                (Some("False"), Some("True")),
            ),
            // A status written before these conditions existed, or by another operator.
            (
                None,
                (Some("False"), None),
                true,
                (Some("False"), Some("False")),
            ),
            (
                Some(true),
                (Some("False"), Some("True")),
                true,
                (Some("False"), Some("True")),
            ),
            (
                Some(true),
                (Some("False"), Some("True")),
                false,
                (Some("True"), Some("False")),
            ),
            (
                Some(true),
                (Some("True"), Some("False")),
                false,
                (Some("True"), Some("False")),
            ),
            (
                Some(false),
                (Some("True"), Some("False")),
                false,
                (Some("False"), Some("False")),
            ),
            (
                None,
                (Some("False"), Some("False")),
                true,
                (Some("False"), Some("False")),
            ),
        ];
        let settings = Settings::default();
        let plan = PodPlan::default();
        for (suspend, (stored_suspended, stored_suspending), with_pods, expected) in rows {
            let mut cluster = cluster_from_yaml(CLUSTER);
            cluster.spec.suspend = suspend;
            let stored: Vec<Condition> = [
                (RAY_CLUSTER_SUSPENDED, stored_suspended),
                (RAY_CLUSTER_SUSPENDING, stored_suspending),
            ]
            .into_iter()
            .filter_map(|(kind, status)| {
                Some(Condition {
                    type_: kind.into(),
                    status: status?.into(),
                    reason: kind.into(),
                    message: String::new(),
                    last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                    observed_generation: None,
                })
            })
            .collect();
            if !stored.is_empty() {
                cluster.status = Some(RayClusterStatus {
                    conditions: Some(stored),
                    ..RayClusterStatus::default()
                });
            }
            let pods = if with_pods { ready_pods() } else { Vec::new() };
            let pods = views(&pods);
            let ctx = ClusterContext::new(&cluster, &settings);
            let outcome = PassOutcome {
                plan: &plan,
                suspend: suspend_step(&ctx, &pods),
                replica_failure: None,
                invalid: None,
            };
            let status = compute_status(&ctx, &pods, &[head_service()], &outcome, NOW)
                .or(cluster.status.clone())
                .unwrap();
            let row = format!(
                "suspend {suspend:?}, stored ({stored_suspended:?}, {stored_suspending:?}), pods {with_pods}"
            );
            let written = |kind| {
                let found = condition(&status, kind)?;
                assert_eq!(found.reason, kind, "{row}");
                assert_eq!(found.message, "", "{row}");
                Some(found.status.as_str())
            };
            assert_eq!(
                (
                    written(RAY_CLUSTER_SUSPENDED),
                    written(RAY_CLUSTER_SUSPENDING)
                ),
                expected,
                "{row}"
            );
        }

        // A new cluster lists them after HeadPodReady and RayClusterProvisioned, as
        // KubeRay appends them.
        let cluster = cluster_from_yaml(CLUSTER);
        let status = compute(&cluster, &[], &plan).unwrap();
        let types: Vec<&str> = status
            .conditions
            .iter()
            .flatten()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(
            types,
            [
                HEAD_POD_READY,
                RAY_CLUSTER_PROVISIONED,
                RAY_CLUSTER_SUSPENDED,
                RAY_CLUSTER_SUSPENDING
            ]
        );

        // Without the gate KubeRay writes no condition at all.
        let settings = Settings {
            status_conditions: false,
            ..Settings::default()
        };
        let ctx = ClusterContext::new(&cluster, &settings);
        let outcome = PassOutcome {
            plan: &plan,
            suspend: suspend_step(&ctx, &[]),
            replica_failure: None,
            invalid: None,
        };
        let status = compute_status(&ctx, &[], &[head_service()], &outcome, NOW).unwrap();
        assert_eq!(status.conditions, None);
    }

    #[test]
    fn replica_failure_and_invalid_conditions() {
        let cluster = cluster_from_yaml(CLUSTER);
        let settings = Settings::default();
        let ctx = ClusterContext::new(&cluster, &settings);
        let plan = PodPlan::default();
        let outcome = PassOutcome {
            plan: &plan,
            suspend: SuspendStep::None,
            replica_failure: Some((
                FAILED_CREATE_WORKER_POD.into(),
                "forbidden: exceeded quota".into(),
            )),
            invalid: None,
        };
        let status = compute_status(
            &ctx,
            &views(&ready_pods()),
            &[head_service()],
            &outcome,
            NOW,
        )
        .unwrap();
        assert_eq!(
            condition(&status, RAY_CLUSTER_REPLICA_FAILURE)
                .unwrap()
                .reason,
            FAILED_CREATE_WORKER_POD
        );
        assert_eq!(status.state, None);

        let outcome = PassOutcome {
            replica_failure: None,
            invalid: Some(("InvalidRayClusterSpec", "bad".into())),
            ..outcome
        };
        let status = compute_status(&ctx, &views(&ready_pods()), &[], &outcome, NOW).unwrap();
        let invalid = condition(&status, RAY_CLUSTER_INVALID).unwrap();
        assert_eq!(
            (invalid.reason.as_str(), invalid.message.as_str()),
            ("InvalidRayClusterSpec", "bad")
        );
        assert_eq!(
            status.desired_worker_replicas, None,
            "nothing else is computed"
        );
    }
}
