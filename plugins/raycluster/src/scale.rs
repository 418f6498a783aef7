//! Which pods to create and delete: the head rule, per-group desired counts with min/max
//! clamping, unhealthy pods, `workersToDelete`, multi-host replica groups and suspension.
//!
//! The host guarantees the plugin sees its own writes (a pod it asked for is in the next
//! call's observations, a deleted one is terminating or gone), which replaces KubeRay's
//! scale expectations.

use std::collections::{BTreeMap, BTreeSet};

use wasmray_crds::constants::{
    RAY_HOST_INDEX_LABEL_KEY, RAY_NODE_GROUP_LABEL_KEY, RAY_NODE_TYPE_LABEL_KEY,
    RAY_WORKER_REPLICA_INDEX_LABEL_KEY, RAY_WORKER_REPLICA_NAME_LABEL_KEY,
};
use wasmray_crds::raycluster::WorkerGroupSpec;
use wasmray_plugin_sdk::names::{fnv1a, suffix};
use wasmray_plugin_sdk::{ContainerState, Pod};

use crate::cluster::{ClusterContext, GroupView, NodeType};

/// What to do with the cluster's pods this pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodMode {
    /// Bring head and workers to the spec.
    Reconcile,
    /// Delete every pod (suspension, or deletion of a cluster with GCS FT cleanup).
    DeleteAll,
    /// Touch no pod (suspended).
    Leave,
}

/// Pods to create for one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupCreate {
    /// `None` for the head, else the index of the worker group in the spec.
    pub worker_group: Option<usize>,
    /// Labels of each new pod on top of the group's template (empty without indexing).
    pub replicas: Vec<Vec<(String, String)>>,
}

/// A pod to delete and why.
#[derive(Clone, Debug, PartialEq)]
pub struct PodDelete<'p> {
    pub pod: &'p Pod<'p>,
    pub reason: String,
}

/// The decision about pods.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodPlan<'p> {
    pub creates: Vec<GroupCreate>,
    pub deletes: Vec<PodDelete<'p>>,
    /// Conditions that keep the cluster from being ready this pass (KubeRay's reconcile
    /// errors), in the words of the status reason.
    pub problems: Vec<String>,
}

impl PodPlan<'_> {
    pub fn changes_pods(&self) -> bool {
        !self.creates.is_empty() || !self.deletes.is_empty()
    }
}

/// An observed pod with what the rules ask of it on every pass, read from its labels and
/// conditions once per call rather than once per rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RayPod<'p> {
    pub pod: &'p Pod<'p>,
    /// `ray.io/node-type`, when it is `head` or `worker`.
    pub node_type: Option<NodeType>,
    /// `ray.io/group`.
    pub group: Option<&'p str>,
    /// The status of the pod's Ready condition ("True", "False", "Unknown").
    pub ready: Option<&'p str>,
}

impl<'p> RayPod<'p> {
    pub fn new(pod: &'p Pod<'p>) -> Self {
        let node_type = match pod.labels.get(RAY_NODE_TYPE_LABEL_KEY) {
            Some(label) if label == NodeType::Head.label() => Some(NodeType::Head),
            Some(label) if label == NodeType::Worker.label() => Some(NodeType::Worker),
            _ => None,
        };
        let ready = pod
            .conditions
            .iter()
            .find(|condition| condition.condition_type == "Ready")
            .map(|condition| condition.status);
        RayPod {
            pod,
            node_type,
            group: pod.labels.get(RAY_NODE_GROUP_LABEL_KEY),
            ready,
        }
    }

    /// Every pod of the call, read once.
    pub fn all(pods: &'p [Pod<'p>]) -> Vec<RayPod<'p>> {
        pods.iter().map(RayPod::new).collect()
    }
}

impl<'p> std::ops::Deref for RayPod<'p> {
    type Target = Pod<'p>;

    fn deref(&self) -> &Pod<'p> {
        self.pod
    }
}

pub fn is_terminating(pod: &RayPod<'_>) -> bool {
    pod.deletion_timestamp.is_some()
}

pub fn is_head(pod: &RayPod<'_>) -> bool {
    pod.node_type == Some(NodeType::Head)
}

pub fn is_worker(pod: &RayPod<'_>) -> bool {
    pod.node_type == Some(NodeType::Worker)
}

/// KubeRay's `shouldDeletePod`: a pod that ended (Failed/Succeeded), or a running pod whose
/// Ray container ended under `restartPolicy: Never`, is never coming back; anything else
/// is left to the kubelet. Returns why.
pub fn unhealthy_reason(pod: &Pod<'_>, ray_container: Option<&str>) -> Option<String> {
    let phase = pod.phase.unwrap_or_default();
    let restart_policy = pod.restart_policy.unwrap_or("Always");
    let ended = matches!(phase, "Failed" | "Succeeded");
    let may_have_lost_ray = phase == "Running" && restart_policy == "Never";
    // Most pods are neither: skip reading their container statuses.
    if !(ended || may_have_lost_ray) {
        return None;
    }
    let ray_status = pod
        .container_statuses
        .iter()
        .find(|status| Some(status.name) == ray_container)
        .or_else(|| pod.container_statuses.first());
    let terminated = ray_status.and_then(|status| match status.state {
        ContainerState::Terminated(terminated) => Some(terminated),
        _ => None,
    });
    let ray_gone = may_have_lost_ray && terminated.is_some();
    if !(ended || ray_gone) {
        return None;
    }
    let ray_state = terminated.map_or_else(
        || "not terminated".to_owned(),
        |t| {
            format!(
                "exit code {} ({})",
                t.exit_code,
                t.reason.unwrap_or("no reason")
            )
        },
    );
    Some(format!(
        "Pod {} is unhealthy; Pod status: {phase}; Pod restart policy: {restart_policy}; Ray container terminated status: {ray_state}",
        pod.name
    ))
}

/// Decides the pods of the cluster.
pub fn plan_pods<'p>(
    ctx: &ClusterContext,
    pods: &'p [RayPod<'p>],
    mode: PodMode,
    head_recreation_forbidden: bool,
    replica_name_seed: u64,
) -> PodPlan<'p> {
    let mut plan = PodPlan::default();
    match mode {
        PodMode::Leave => {}
        PodMode::DeleteAll => {
            plan.deletes = pods
                .iter()
                .filter(|pod| !is_terminating(pod))
                .map(|pod| PodDelete {
                    pod: pod.pod,
                    reason: format!("deleting all Pods of RayCluster {}", ctx.name),
                })
                .collect();
        }
        PodMode::Reconcile => {
            plan_head(ctx, pods, head_recreation_forbidden, &mut plan);
            // Workers by group in one pass over the pods, not one pass per group.
            let mut workers: BTreeMap<&str, Vec<&'p RayPod<'p>>> = BTreeMap::new();
            for pod in pods.iter().filter(|pod| is_worker(pod)) {
                if let Some(group) = pod.group {
                    workers.entry(group).or_default().push(pod);
                }
            }
            for (index, group) in ctx.cluster.spec.worker_groups().iter().enumerate() {
                let group_pods = workers
                    .remove(group.group_name.as_str())
                    .unwrap_or_default();
                plan_worker_group(ctx, index, group, group_pods, replica_name_seed, &mut plan);
            }
        }
    }
    plan
}

fn plan_head<'p>(
    ctx: &ClusterContext,
    pods: &'p [RayPod<'p>],
    recreation_forbidden: bool,
    plan: &mut PodPlan<'p>,
) {
    let heads: Vec<&'p RayPod<'p>> = pods.iter().filter(|pod| is_head(pod)).collect();
    let ray_container = GroupView::head(ctx.cluster)
        .ray_container()
        .map(|c| c.name.as_str());
    match heads.as_slice() {
        [] if recreation_forbidden => plan.problems.push(
            "the head Pod is gone and the RayJob that created this RayCluster does not allow recreating it"
                .to_owned(),
        ),
        [] => plan.creates.push(GroupCreate {
            worker_group: None,
            replicas: vec![Vec::new()],
        }),
        [head] if is_terminating(head) => {
            plan.problems.push(format!("head Pod {} is terminating", head.name));
        }
        [head] => {
            if let Some(reason) = unhealthy_reason(head, ray_container) {
                plan.problems.push(reason.clone());
                plan.deletes.push(PodDelete {
                    pod: head.pod,
                    reason,
                });
            }
        }
        many => plan.problems.push(format!(
            "{} head pods found for RayCluster {}/{}; expected at most 1",
            many.len(),
            ctx.namespace,
            ctx.name
        )),
    }
}

/// The pods that come and go together: one multi-host replica, or a single pod.
struct Unit<'a, 'p> {
    pods: &'a [&'p RayPod<'p>],
    replica_index: Option<u32>,
}

impl<'p> Unit<'_, 'p> {
    fn alive(&self) -> impl Iterator<Item = &'p RayPod<'p>> + '_ {
        self.pods.iter().copied().filter(|pod| !is_terminating(pod))
    }

    fn is_alive(&self) -> bool {
        self.alive().next().is_some()
    }

    /// Sort key for scale-down: not-yet-running units go first, then the newest.
    fn scale_down_key(
        &self,
    ) -> (
        bool,
        std::cmp::Reverse<(i64, u32)>,
        std::cmp::Reverse<&'p str>,
    ) {
        let running_ready = self.pods.iter().all(|pod| is_running_and_ready(pod));
        let newest = self
            .pods
            .iter()
            .filter_map(|pod| pod.creation_timestamp.map(|t| (t.seconds, t.nanos)))
            .max()
            .unwrap_or_default();
        let name = self.pods.first().map(|pod| pod.name).unwrap_or_default();
        (
            running_ready,
            std::cmp::Reverse(newest),
            std::cmp::Reverse(name),
        )
    }
}

pub fn is_running_and_ready(pod: &RayPod<'_>) -> bool {
    pod.phase == Some("Running") && pod.ready == Some("True")
}

/// Splits a group's pods into units; a replica's hosts are sorted next to each other so
/// that a unit is a slice and needs no allocation of its own.
fn group_units<'a, 'p>(
    group_pods: &'a mut [&'p RayPod<'p>],
    multi_host: bool,
) -> Vec<Unit<'a, 'p>> {
    let index_of = |pod: &RayPod<'_>| {
        pod.labels
            .get(RAY_WORKER_REPLICA_INDEX_LABEL_KEY)
            .and_then(|v| v.parse().ok())
    };
    // A pod outside any replica (no name label) is a unit of its own, and cannot be complete.
    let replica_of = |pod: &'p RayPod<'p>| {
        if multi_host {
            pod.labels.get(RAY_WORKER_REPLICA_NAME_LABEL_KEY)
        } else {
            None
        }
    };
    if multi_host {
        group_pods.sort_by(|a, b| replica_of(a).cmp(&replica_of(b)));
    }
    let group_pods: &'a [&'p RayPod<'p>] = group_pods;
    let mut units = Vec::with_capacity(group_pods.len());
    let mut start = 0;
    while let Some(first) = group_pods.get(start) {
        let len = match replica_of(first) {
            None => 1,
            Some(name) => group_pods[start..]
                .iter()
                .take_while(|pod| replica_of(pod) == Some(name))
                .count(),
        };
        units.push(Unit {
            pods: &group_pods[start..start + len],
            replica_index: index_of(first),
        });
        start += len;
    }
    units
}

fn plan_worker_group<'p>(
    ctx: &ClusterContext,
    group_index: usize,
    group: &WorkerGroupSpec,
    mut group_pods: Vec<&'p RayPod<'p>>,
    replica_name_seed: u64,
    plan: &mut PodPlan<'p>,
) {
    let hosts = u32::try_from(group.num_of_hosts()).unwrap_or(1).max(1);
    let indexing = ctx.settings.multi_host_indexing;
    let multi_host = indexing && hosts > 1;
    let pods_per_unit = if multi_host { hosts } else { 1 };
    let desired_replicas = u32::try_from(group.desired_replicas()).unwrap_or(0);
    let desired_units = if multi_host {
        desired_replicas
    } else {
        desired_replicas.saturating_mul(hosts)
    };
    let units = group_units(&mut group_pods, multi_host);
    let mut doomed = vec![false; units.len()];
    let delete_unit =
        |plan: &mut PodPlan<'p>, doomed: &mut Vec<bool>, index: usize, reason: &str| {
            if doomed[index] {
                return;
            }
            doomed[index] = true;
            for pod in units[index].alive() {
                plan.deletes.push(PodDelete {
                    pod: pod.pod,
                    reason: reason.to_owned(),
                });
            }
        };

    if group.is_suspended() {
        for index in 0..units.len() {
            let reason = format!("worker group {} is suspended", group.group_name);
            delete_unit(plan, &mut doomed, index, &reason);
        }
        return;
    }

    let ray_container = GroupView::worker(group)
        .ray_container()
        .map(|c| c.name.as_str());
    let mut unhealthy = 0;
    for (index, unit) in units.iter().enumerate() {
        let reason = unit
            .alive()
            .find_map(|pod| unhealthy_reason(pod, ray_container));
        if let Some(reason) = reason {
            unhealthy += 1;
            delete_unit(plan, &mut doomed, index, &reason);
        } else if multi_host && unit.is_alive() && unit.alive().count() < pods_per_unit as usize {
            let reason = format!(
                "replica {:?} of worker group {} has {} of {} hosts",
                unit.pods
                    .first()
                    .and_then(|p| p.labels.get(RAY_WORKER_REPLICA_NAME_LABEL_KEY)),
                group.group_name,
                unit.alive().count(),
                pods_per_unit
            );
            delete_unit(plan, &mut doomed, index, &reason);
        }
    }

    let workers_to_delete: BTreeSet<&str> = group
        .scale_strategy
        .as_ref()
        .and_then(|strategy| strategy.workers_to_delete.as_ref())
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    for (index, unit) in units.iter().enumerate() {
        if unit.alive().any(|pod| workers_to_delete.contains(pod.name)) {
            let reason = format!(
                "listed in spec.workerGroupSpecs[{group_index}].scaleStrategy.workersToDelete"
            );
            delete_unit(plan, &mut doomed, index, &reason);
        }
    }

    if unhealthy > 0 {
        // As KubeRay: replacements wait for the next pass, once the deletions are seen.
        plan.problems.push(format!(
            "deleted {unhealthy} unhealthy worker replicas of group {}",
            group.group_name
        ));
        return;
    }

    let remaining: Vec<usize> = (0..units.len())
        .filter(|&index| !doomed[index] && units[index].is_alive())
        .collect();
    let terminating = units
        .iter()
        .enumerate()
        .filter(|(index, unit)| !doomed[*index] && !unit.is_alive())
        .count();
    let present = remaining.len() as u32;
    if desired_units > present + terminating as u32 {
        let missing = desired_units - present - terminating as u32;
        let used: BTreeSet<u32> = remaining
            .iter()
            .filter_map(|&index| units[index].replica_index)
            .collect();
        let free_indexes = (0u32..).filter(|index| !used.contains(index));
        let replicas = free_indexes
            .take(missing as usize)
            .flat_map(|replica_index| {
                let replica_name = multi_host
                    .then(|| replica_name(&group.group_name, replica_index, replica_name_seed));
                (0..pods_per_unit).map(move |host| {
                    let mut labels = Vec::new();
                    if indexing {
                        labels.push((
                            RAY_WORKER_REPLICA_INDEX_LABEL_KEY.to_owned(),
                            replica_index.to_string(),
                        ));
                    }
                    if let Some(name) = &replica_name {
                        labels.push((RAY_WORKER_REPLICA_NAME_LABEL_KEY.to_owned(), name.clone()));
                        labels.push((RAY_HOST_INDEX_LABEL_KEY.to_owned(), host.to_string()));
                    }
                    labels
                })
            })
            .collect();
        plan.creates.push(GroupCreate {
            worker_group: Some(group_index),
            replicas,
        });
    } else if present > desired_units && (!ctx.autoscaling || ctx.settings.random_pod_delete) {
        let mut surplus = remaining;
        surplus.sort_by_key(|&index| units[index].scale_down_key());
        for index in surplus.into_iter().take((present - desired_units) as usize) {
            let reason = format!(
                "worker group {} has {present} replicas, wants {desired_units}",
                group.group_name
            );
            delete_unit(plan, &mut doomed, index, &reason);
        }
    }
}

/// `<group>-<5 chars>`: a replica's name, derived from the seed (the cluster uid and the
/// time of the call) because a plugin has no randomness of its own.
fn replica_name(group: &str, replica_index: u32, seed: u64) -> String {
    let hash = fnv1a(fnv1a(seed, group.as_bytes()), &replica_index.to_le_bytes());
    format!("{group}-{}", suffix(hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use crate::test_support::{cluster_from_yaml, pod, views};
    use std::collections::BTreeMap;
    use wasmray_plugin_sdk::names::FNV_OFFSET;
    use wasmray_plugin_sdk::record::Pod as PodRecord;

    const CLUSTER: &str = r#"
metadata: {name: rc, namespace: ns, uid: u}
spec:
  headGroupSpec:
    template: {spec: {containers: [{name: ray-head, image: i}]}}
  workerGroupSpecs:
  - groupName: g
    replicas: REPLICAS
    minReplicas: MIN
    maxReplicas: MAX
    scaleStrategy: {workersToDelete: [DELETE]}
    template: {spec: {containers: [{name: ray-worker, image: i}]}}
"#;

    fn cluster(
        replicas: &str,
        min: &str,
        max: &str,
        delete: &str,
        autoscale: bool,
    ) -> wasmray_crds::RayCluster {
        let mut yaml = CLUSTER
            .replace("REPLICAS", replicas)
            .replace("MIN", min)
            .replace("MAX", max)
            .replace("DELETE", delete);
        if autoscale {
            yaml = yaml.replace(
                "spec:\n  headGroupSpec",
                "spec:\n  enableInTreeAutoscaling: true\n  headGroupSpec",
            );
        }
        cluster_from_yaml(&yaml)
    }

    fn worker(name: &str, created: i64) -> PodRecord {
        let mut p = pod(name, "worker", "g", "Running", true);
        p.creation_timestamp = Some(wasmray_plugin_sdk::record::Timestamp {
            seconds: created,
            nanos: 0,
        });
        p
    }

    fn head() -> PodRecord {
        pod("rc-head-x", "head", "headgroup", "Running", true)
    }

    struct Outcome {
        created: usize,
        deleted: Vec<String>,
        problems: usize,
    }

    fn run(cluster: &wasmray_crds::RayCluster, settings: &Settings, pods: &[PodRecord]) -> Outcome {
        let ctx = ClusterContext::new(cluster, settings);
        let pods = views(pods);
        let plan = plan_pods(&ctx, &pods, PodMode::Reconcile, false, FNV_OFFSET);
        Outcome {
            created: plan
                .creates
                .iter()
                .filter(|c| c.worker_group.is_some())
                .map(|c| c.replicas.len())
                .sum(),
            deleted: plan.deletes.iter().map(|d| d.pod.name.to_owned()).collect(),
            problems: plan.problems.len(),
        }
    }

    #[test]
    fn scaling_table() {
        let three = || vec![head(), worker("w-a", 1), worker("w-b", 3), worker("w-c", 2)];
        // (replicas, min, max, workersToDelete, autoscaling, pods, created, deleted)
        type Case = (
            &'static str,
            &'static str,
            &'static str,
            &'static str,
            bool,
            Vec<PodRecord>,
            usize,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            ("3", "0", "5", "none", false, three(), 0, vec![]),
            ("5", "0", "10", "none", false, three(), 2, vec![]),
            ("5", "0", "4", "none", false, three(), 1, vec![]), // clamped to max
            ("1", "2", "5", "none", false, three(), 0, vec!["w-b"]), // clamped to min, newest goes
            ("3", "5", "4", "none", false, three(), 1, vec![]), // min > max: max wins
            ("null", "2", "5", "none", false, vec![head()], 2, vec![]), // unset: min
            ("1", "0", "5", "none", false, three(), 0, vec!["w-b", "w-c"]),
            ("2", "0", "5", "w-a", false, three(), 0, vec!["w-a"]),
            ("3", "0", "5", "w-a", false, three(), 1, vec!["w-a"]), // replaced, as KubeRay
            ("1", "0", "5", "none", true, three(), 0, vec![]),      // autoscaler decides
            ("1", "0", "5", "w-c", true, three(), 0, vec!["w-c"]),
        ];
        for (replicas, min, max, delete, autoscale, pods, created, deleted) in cases {
            let cluster = cluster(replicas, min, max, delete, autoscale);
            let outcome = run(&cluster, &Settings::default(), &pods);
            let label = format!(
                "replicas={replicas} min={min} max={max} delete={delete} autoscale={autoscale}"
            );
            assert_eq!(outcome.created, created, "{label}");
            assert_eq!(outcome.deleted, deleted, "{label}");
            assert_eq!(outcome.problems, 0, "{label}");
        }
    }

    #[test]
    fn pending_workers_go_first_on_scale_down() {
        let cluster = cluster("2", "0", "5", "none", false);
        let mut pending = worker("w-old-pending", 0);
        pending.phase = Some("Pending".into());
        pending.conditions.clear();
        let pods = vec![head(), worker("w-a", 5), pending, worker("w-b", 6)];
        assert_eq!(
            run(&cluster, &Settings::default(), &pods).deleted,
            ["w-old-pending"]
        );
    }

    #[test]
    fn random_pod_delete_setting_scales_down_with_autoscaling() {
        let cluster = cluster("1", "0", "5", "none", true);
        let settings = Settings {
            random_pod_delete: true,
            ..Settings::default()
        };
        let pods = vec![head(), worker("w-a", 1), worker("w-b", 2)];
        assert_eq!(run(&cluster, &settings, &pods).deleted, ["w-b"]);
    }

    #[test]
    fn terminating_pods_block_recreation_but_not_counted_for_scale_down() {
        let cluster = cluster("2", "0", "5", "none", false);
        let mut gone = worker("w-gone", 1);
        gone.deletion_timestamp = Some(wasmray_plugin_sdk::record::Timestamp {
            seconds: 9,
            nanos: 0,
        });
        let pods = vec![head(), worker("w-a", 1), gone.clone()];
        let outcome = run(&cluster, &Settings::default(), &pods);
        assert_eq!((outcome.created, outcome.deleted.len()), (0, 0));
        let pods = vec![head(), worker("w-a", 1), worker("w-b", 2), gone];
        let outcome = run(&cluster, &Settings::default(), &pods);
        assert_eq!((outcome.created, outcome.deleted.len()), (0, 0));
        // Once it is gone, it is replaced.
        let outcome = run(&cluster, &Settings::default(), &[head(), worker("w-a", 1)]);
        assert_eq!(outcome.created, 1);
    }

    #[test]
    fn unhealthy_workers_are_deleted_and_replaced_next_pass() {
        let cluster = cluster("2", "0", "5", "none", false);
        let failed = pod("w-failed", "worker", "g", "Failed", false);
        let mut exited = worker("w-exited", 1);
        exited.restart_policy = Some("Never".into());
        exited.container_statuses = vec![wasmray_plugin_sdk::record::ContainerStatus::terminated(
            "ray-worker",
            1,
        )];
        let mut restarting = worker("w-restarting", 1);
        restarting.container_statuses =
            vec![wasmray_plugin_sdk::record::ContainerStatus::terminated(
                "ray-worker",
                1,
            )];
        let pods = vec![head(), failed, exited, restarting];
        let outcome = run(&cluster, &Settings::default(), &pods);
        assert_eq!(outcome.deleted, ["w-failed", "w-exited"]);
        assert_eq!(outcome.created, 0);
        assert_eq!(outcome.problems, 1);
    }

    #[test]
    fn head_rules() {
        let cluster = cluster("0", "0", "5", "none", false);
        let settings = Settings::default();
        let ctx = ClusterContext::new(&cluster, &settings);
        let plan = plan_pods(&ctx, &[], PodMode::Reconcile, false, 0);
        assert_eq!(
            plan.creates,
            [GroupCreate {
                worker_group: None,
                replicas: vec![vec![]]
            }]
        );
        let plan = plan_pods(&ctx, &[], PodMode::Reconcile, true, 0);
        assert!(plan.creates.is_empty() && plan.problems.len() == 1);
        let failed = views(&[pod("h", "head", "headgroup", "Failed", false)]);
        let plan = plan_pods(&ctx, &failed, PodMode::Reconcile, false, 0);
        assert_eq!(plan.deletes.len(), 1);
        assert!(plan.creates.is_empty());
        let two = views(&[head(), pod("h2", "head", "headgroup", "Running", true)]);
        let plan = plan_pods(&ctx, &two, PodMode::Reconcile, false, 0);
        assert!(!plan.changes_pods());
        assert_eq!(plan.problems.len(), 1);
    }

    #[test]
    fn suspend_modes() {
        let cluster = cluster("2", "0", "5", "none", false);
        let settings = Settings::default();
        let ctx = ClusterContext::new(&cluster, &settings);
        let pods = views(&[head(), worker("w-a", 1)]);
        let plan = plan_pods(&ctx, &pods, PodMode::DeleteAll, false, 0);
        assert_eq!(plan.deletes.len(), 2);
        assert!(plan.creates.is_empty());
        assert!(!plan_pods(&ctx, &pods, PodMode::Leave, false, 0).changes_pods());

        let suspended_group = cluster_from_yaml(
            &CLUSTER
                .replace("REPLICAS", "2")
                .replace("MIN", "0")
                .replace("MAX", "5")
                .replace("DELETE", "x")
                .replace("  - groupName: g", "  - groupName: g\n    suspend: true"),
        );
        let ctx = ClusterContext::new(&suspended_group, &settings);
        let plan = plan_pods(&ctx, &pods, PodMode::Reconcile, false, 0);
        assert_eq!(
            plan.deletes.iter().map(|d| d.pod.name).collect::<Vec<_>>(),
            ["w-a"]
        );
        assert!(plan.creates.is_empty());
    }

    fn multi_host_pod(name: &str, replica: &str, index: u32) -> PodRecord {
        let mut p = worker(name, 1);
        p.labels
            .push((RAY_WORKER_REPLICA_NAME_LABEL_KEY.into(), replica.into()));
        p.labels
            .push((RAY_WORKER_REPLICA_INDEX_LABEL_KEY.into(), index.to_string()));
        p
    }

    #[test]
    fn multi_host_replicas_are_atomic_with_indexing() {
        let yaml = CLUSTER
            .replace("REPLICAS", "2")
            .replace("MIN", "0")
            .replace("MAX", "5")
            .replace("DELETE", "b-1")
            .replace("  - groupName: g", "  - groupName: g\n    numOfHosts: 2");
        let cluster = cluster_from_yaml(&yaml);
        let settings = Settings {
            multi_host_indexing: true,
            ..Settings::default()
        };
        let ctx = ClusterContext::new(&cluster, &settings);
        let pods = views(&[
            head(),
            multi_host_pod("a-0", "g-aaaaa", 0),
            multi_host_pod("a-1", "g-aaaaa", 0),
            multi_host_pod("b-0", "g-bbbbb", 1),
            multi_host_pod("b-1", "g-bbbbb", 1),
            multi_host_pod("c-0", "g-ccccc", 2), // incomplete
        ]);
        let plan = plan_pods(&ctx, &pods, PodMode::Reconcile, false, FNV_OFFSET);
        let mut deleted: Vec<_> = plan.deletes.iter().map(|d| d.pod.name).collect();
        deleted.sort();
        assert_eq!(deleted, ["b-0", "b-1", "c-0"]);
        let create = plan
            .creates
            .iter()
            .find(|c| c.worker_group == Some(0))
            .unwrap();
        assert_eq!(create.replicas.len(), 2, "one replica of two hosts");
        let labels: BTreeMap<_, _> = create.replicas[1].iter().cloned().collect();
        assert_eq!(labels[RAY_WORKER_REPLICA_INDEX_LABEL_KEY], "1");
        assert_eq!(labels[RAY_HOST_INDEX_LABEL_KEY], "1");
        assert!(labels[RAY_WORKER_REPLICA_NAME_LABEL_KEY].starts_with("g-"));
        assert_eq!(labels[RAY_WORKER_REPLICA_NAME_LABEL_KEY].len(), 7);
        let first: BTreeMap<_, _> = create.replicas[0].iter().cloned().collect();
        assert_eq!(
            first[RAY_WORKER_REPLICA_NAME_LABEL_KEY],
            labels[RAY_WORKER_REPLICA_NAME_LABEL_KEY]
        );
    }

    #[test]
    fn multi_host_without_indexing_counts_pods() {
        let yaml = CLUSTER
            .replace("REPLICAS", "2")
            .replace("MIN", "0")
            .replace("MAX", "5")
            .replace("DELETE", "x")
            .replace("  - groupName: g", "  - groupName: g\n    numOfHosts: 3");
        let cluster = cluster_from_yaml(&yaml);
        let outcome = run(&cluster, &Settings::default(), &[head(), worker("w", 1)]);
        assert_eq!(outcome.created, 5);
    }
}
