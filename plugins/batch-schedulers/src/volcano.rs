//! `volcano`: Volcano's gang scheduling and queues. One `scheduling.volcano.sh/v1beta1`
//! PodGroup per cluster, named `ray-<name>-pg` after the cluster, or after the RayJob that
//! created it; every pod joins it and names its task (the Ray group).
//!
//! As KubeRay: `minMember` is the head plus the desired workers (the minimum workers when
//! autoscaling), `minResources` what those pods request; `queue` from the cluster's
//! `volcano.sh/queue-name` label, `priorityClassName` from `ray.io/priority-class-name`, the
//! network topology from `volcano.sh/network-topology-*`; the PodGroup carries the
//! cluster's annotations and is updated when they change. Unlike KubeRay, a RayJob's
//! PodGroup is written by its cluster's scheduling (owned by the cluster, which the RayJob
//! owns), so it does not count the K8sJobMode submitter's resources.

use serde_json::{Value, json};
use wasmray_plugin_sdk::crds::RayCluster;
use wasmray_plugin_sdk::scheduler::{Request, ScheduleOutput, Scheduler};
use wasmray_plugin_sdk::{DesiredObject, PluginError, WriteMode, to_json};

use crate::{Cluster, cluster_of, group_of, pairs, patch};

pub const SCHEDULER_NAME: &str = "volcano";
pub const QUEUE_LABEL: &str = "volcano.sh/queue-name";
pub const PRIORITY_CLASS_LABEL: &str = "ray.io/priority-class-name";
pub const NETWORK_TOPOLOGY_MODE_LABEL: &str = "volcano.sh/network-topology-mode";
pub const NETWORK_TOPOLOGY_TIER_LABEL: &str = "volcano.sh/network-topology-highest-tier-allowed";
pub const GROUP_NAME_ANNOTATION: &str = "scheduling.k8s.io/group-name";
pub const TASK_SPEC_ANNOTATION: &str = "volcano.sh/task-spec";

pub struct Volcano;

/// The PodGroup's name: after the RayJob that created the cluster, else the cluster.
pub fn pod_group_name(cluster: &Cluster<'_>) -> String {
    format!("ray-{}-pg", cluster.rayjob().unwrap_or(cluster.name))
}

/// The PodGroup for `cluster`.
pub fn pod_group(cluster: &Cluster<'_>) -> Result<Value, PluginError> {
    let (members, resources) = if cluster.autoscaling() {
        (cluster.min_workers(), cluster.min_resources())
    } else {
        (cluster.desired_workers(), cluster.desired_resources())
    };
    let mut spec = json!({
        "minMember": members.saturating_add(1),
        "minResources": resources,
    });
    if let Some(queue) = cluster.label(QUEUE_LABEL) {
        spec["queue"] = json!(queue);
    }
    if let Some(class) = cluster.label(PRIORITY_CLASS_LABEL) {
        spec["priorityClassName"] = json!(class);
    }
    if let Some(mode) = cluster.label(NETWORK_TOPOLOGY_MODE_LABEL) {
        let mut topology = json!({"mode": mode});
        if let Some(tier) = cluster.label(NETWORK_TOPOLOGY_TIER_LABEL) {
            let tier: i64 = tier.trim().parse().map_err(|_| {
                PluginError::new(
                    "InvalidLabel",
                    format!("label {NETWORK_TOPOLOGY_TIER_LABEL} must be an integer, not {tier:?}"),
                )
            })?;
            topology["highestTierAllowed"] = json!(tier);
        }
        spec["networkTopology"] = topology;
    }
    let mut metadata = json!({"name": pod_group_name(cluster)});
    if !cluster.annotations().is_empty() {
        metadata["annotations"] = json!(cluster.annotations());
    }
    Ok(json!({
        "apiVersion": "scheduling.volcano.sh/v1beta1",
        "kind": "PodGroup",
        "metadata": metadata,
        "spec": spec,
    }))
}

impl Scheduler for Volcano {
    type Parent = RayCluster;

    fn schedule(request: Request<RayCluster>) -> Result<ScheduleOutput, PluginError> {
        let cluster = cluster_of(&request)?;
        let group_name = pod_group_name(&cluster);
        let mut output = ScheduleOutput::default();
        output.extra_objects.push(DesiredObject {
            object: to_json("PodGroup", &pod_group(&cluster)?)?,
            mode: WriteMode::Apply,
        });
        let labels = pairs([
            (QUEUE_LABEL, cluster.label(QUEUE_LABEL)),
            (PRIORITY_CLASS_LABEL, cluster.label(PRIORITY_CLASS_LABEL)),
        ]);
        for (index, pod_set) in request.pod_sets.iter().enumerate() {
            let mut change = patch(index);
            change.scheduler_name = Some(SCHEDULER_NAME.to_owned());
            change.labels = labels.clone();
            change.annotations = vec![
                (GROUP_NAME_ANNOTATION.to_owned(), group_name.clone()),
                (TASK_SPEC_ANNOTATION.to_owned(), group_of(pod_set)),
            ];
            output.patches.push(change);
        }
        Ok(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{cluster, request, with_labels};
    use serde_json::json;

    #[test]
    fn pod_group_and_pods_match_kuberay() {
        let parent = with_labels(
            cluster(),
            &[
                (QUEUE_LABEL, "research"),
                (PRIORITY_CLASS_LABEL, "high"),
                (NETWORK_TOPOLOGY_MODE_LABEL, "hard"),
                (NETWORK_TOPOLOGY_TIER_LABEL, "2"),
            ],
        );
        let output = Volcano::schedule(request(parent)).expect("scheduled");
        let group: Value = serde_json::from_str(&output.extra_objects[0].object).unwrap();
        // Head 1 CPU/2Gi plus 3 workers of 2 CPU/4Gi/1 GPU (replicas 3 within [1, 5]).
        assert_eq!(
            group,
            json!({
                "apiVersion": "scheduling.volcano.sh/v1beta1",
                "kind": "PodGroup",
                "metadata": {"name": "ray-sample-pg"},
                "spec": {
                    "minMember": 4,
                    "minResources": {"cpu": "7", "memory": "14Gi", "nvidia.com/gpu": "3"},
                    "queue": "research",
                    "priorityClassName": "high",
                    "networkTopology": {"mode": "hard", "highestTierAllowed": 2},
                },
            })
        );
        assert_eq!(output.extra_objects[0].mode, WriteMode::Apply);
        assert_eq!(output.patches.len(), 2);
        let head = &output.patches[0];
        assert_eq!(head.scheduler_name.as_deref(), Some("volcano"));
        assert_eq!(
            head.labels,
            [
                (QUEUE_LABEL.to_owned(), "research".to_owned()),
                (PRIORITY_CLASS_LABEL.to_owned(), "high".to_owned())
            ]
        );
        assert_eq!(
            head.annotations,
            [
                (GROUP_NAME_ANNOTATION.to_owned(), "ray-sample-pg".to_owned()),
                (TASK_SPEC_ANNOTATION.to_owned(), "headgroup".to_owned())
            ]
        );
        assert_eq!(output.patches[1].annotations[1].1, "workers");
    }

    #[test]
    fn autoscaling_counts_the_minimum_and_a_rayjob_names_the_group() {
        let mut parent = with_labels(
            cluster(),
            &[
                ("ray.io/originated-from-crd", "RayJob"),
                ("ray.io/originated-from-cr-name", "train"),
            ],
        );
        parent.spec.enable_in_tree_autoscaling = Some(true);
        let output = Volcano::schedule(request(parent)).expect("scheduled");
        let group: Value = serde_json::from_str(&output.extra_objects[0].object).unwrap();
        assert_eq!(group["metadata"]["name"], "ray-train-pg");
        assert_eq!(group["spec"]["minMember"], 2);
        assert_eq!(
            group["spec"]["minResources"],
            json!({"cpu": "3", "memory": "6Gi", "nvidia.com/gpu": "1"})
        );
        assert!(group["spec"].get("queue").is_none());
    }

    #[test]
    fn a_bad_topology_tier_is_named() {
        let parent = with_labels(
            cluster(),
            &[
                (NETWORK_TOPOLOGY_MODE_LABEL, "soft"),
                (NETWORK_TOPOLOGY_TIER_LABEL, "two"),
            ],
        );
        let error = Volcano::schedule(request(parent)).expect_err("refused");
        assert_eq!(error.reason, "InvalidLabel");
        assert!(
            error
                .message
                .contains("volcano.sh/network-topology-highest-tier-allowed")
        );
    }
}
