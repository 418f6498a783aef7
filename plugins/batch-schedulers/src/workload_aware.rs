//! `kubernetes-was`: Kubernetes' own workload-aware (gang) scheduling, KubeRay 1.7's
//! `KubernetesWAS` scheduler. For a RayCluster labelled `ray.io/gang-scheduling-enabled:
//! "true"` and not autoscaling: a `scheduling.k8s.io/v1alpha2` Workload named after the
//! cluster with one pod group template `cluster` whose gang needs the head and every
//! desired worker, the PodGroup `<cluster>-cluster` made from it, and every pod in that
//! group, placed by the default scheduler. The API server needs the `GenericWorkload` and
//! `GangScheduling` gates and `scheduling.k8s.io/v1alpha2` served.
//!
//! Both objects are immutable, so they are created once. KubeRay deletes and recreates
//! them when the gang size changes; a scheduler plugin cannot delete yet, so a later size
//! change keeps the first gang size (pods beyond it join the group and schedule freely).

use serde_json::{Value, json};
use wasmray_plugin_sdk::crds::RayCluster;
use wasmray_plugin_sdk::crds::constants::RAY_GANG_SCHEDULING_ENABLED_LABEL_KEY;
use wasmray_plugin_sdk::scheduler::{Request, ScheduleOutput, Scheduler};
use wasmray_plugin_sdk::{DesiredObject, PluginError, WriteMode, to_json};

use crate::{Cluster, cluster_of, patch};

pub const SCHEDULER_NAME: &str = "default-scheduler";
pub const API_VERSION: &str = "scheduling.k8s.io/v1alpha2";
/// The one pod group template of a cluster's Workload.
pub const TEMPLATE: &str = "cluster";

pub struct WorkloadAware;

pub fn pod_group_name(cluster: &Cluster<'_>) -> String {
    format!("{}-{TEMPLATE}", cluster.name)
}

fn gang(cluster: &Cluster<'_>) -> Value {
    json!({"gang": {"minCount": cluster.desired_workers().saturating_add(1)}})
}

/// The Workload and the PodGroup for `cluster`.
pub fn objects(cluster: &Cluster<'_>) -> [Value; 2] {
    [
        json!({
            "apiVersion": API_VERSION,
            "kind": "Workload",
            "metadata": {"name": cluster.name},
            "spec": {"podGroupTemplates": [{"name": TEMPLATE, "schedulingPolicy": gang(cluster)}]},
        }),
        json!({
            "apiVersion": API_VERSION,
            "kind": "PodGroup",
            "metadata": {"name": pod_group_name(cluster)},
            "spec": {
                "podGroupTemplateRef": {"workload": {
                    "workloadName": cluster.name,
                    "podGroupTemplateName": TEMPLATE,
                }},
                "schedulingPolicy": gang(cluster),
            },
        }),
    ]
}

impl Scheduler for WorkloadAware {
    type Parent = RayCluster;

    fn schedule(request: Request<RayCluster>) -> Result<ScheduleOutput, PluginError> {
        let cluster = cluster_of(&request)?;
        let mut output = ScheduleOutput::default();
        let gang_enabled = cluster.label(RAY_GANG_SCHEDULING_ENABLED_LABEL_KEY) == Some("true");
        if !gang_enabled || cluster.autoscaling() {
            return Ok(output);
        }
        for object in objects(&cluster) {
            output.extra_objects.push(DesiredObject {
                object: to_json("workload-aware scheduling object", &object)?,
                mode: WriteMode::CreateOnly,
            });
        }
        let group = pod_group_name(&cluster);
        for index in 0..request.pod_sets.len() {
            let mut change = patch(index);
            change.scheduler_name = Some(SCHEDULER_NAME.to_owned());
            change.scheduling_group = Some(group.clone());
            output.patches.push(change);
        }
        Ok(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{cluster, request, with_labels};

    #[test]
    fn a_gang_of_the_head_and_every_desired_worker() {
        let parent = with_labels(cluster(), &[("ray.io/gang-scheduling-enabled", "true")]);
        let output = WorkloadAware::schedule(request(parent)).expect("scheduled");
        let written: Vec<Value> = output
            .extra_objects
            .iter()
            .map(|object| serde_json::from_str(&object.object).unwrap())
            .collect();
        assert_eq!(
            written,
            [
                json!({
                    "apiVersion": "scheduling.k8s.io/v1alpha2",
                    "kind": "Workload",
                    "metadata": {"name": "sample"},
                    "spec": {"podGroupTemplates": [
                        {"name": "cluster", "schedulingPolicy": {"gang": {"minCount": 4}}}
                    ]},
                }),
                json!({
                    "apiVersion": "scheduling.k8s.io/v1alpha2",
                    "kind": "PodGroup",
                    "metadata": {"name": "sample-cluster"},
                    "spec": {
                        "podGroupTemplateRef": {"workload": {
                            "workloadName": "sample", "podGroupTemplateName": "cluster"
                        }},
                        "schedulingPolicy": {"gang": {"minCount": 4}},
                    },
                }),
            ]
        );
        assert!(
            output
                .extra_objects
                .iter()
                .all(|o| o.mode == WriteMode::CreateOnly)
        );
        for change in &output.patches {
            assert_eq!(change.scheduler_name.as_deref(), Some("default-scheduler"));
            assert_eq!(change.scheduling_group.as_deref(), Some("sample-cluster"));
        }
    }

    #[test]
    fn only_labelled_clusters_without_autoscaling() {
        let unlabelled = WorkloadAware::schedule(request(cluster())).expect("scheduled");
        assert!(unlabelled.patches.is_empty() && unlabelled.extra_objects.is_empty());
        let other_value = with_labels(cluster(), &[("ray.io/gang-scheduling-enabled", "yes")]);
        let output = WorkloadAware::schedule(request(other_value)).expect("scheduled");
        assert!(output.patches.is_empty());
        let mut autoscaling = with_labels(cluster(), &[("ray.io/gang-scheduling-enabled", "true")]);
        autoscaling.spec.enable_in_tree_autoscaling = Some(true);
        let output = WorkloadAware::schedule(request(autoscaling)).expect("scheduled");
        assert!(output.patches.is_empty() && output.extra_objects.is_empty());
    }
}
