//! `scheduler-plugins`: the coscheduling plugin of kubernetes-sigs/scheduler-plugins. Pods
//! go to its scheduler (`scheduler-plugins-scheduler`); with gang scheduling on
//! (`ray.io/gang-scheduling-enabled`), a `scheduling.x-k8s.io/v1alpha1` PodGroup named
//! after the cluster holds the head and the desired workers, and every pod carries its
//! label. As in KubeRay the PodGroup is created once and not updated. Unlike KubeRay, a
//! RayJob's cluster is scheduled too (KubeRay refuses RayJobs with this scheduler).

use serde_json::{Value, json};
use wasmray_plugin_sdk::crds::RayCluster;
use wasmray_plugin_sdk::scheduler::{Request, ScheduleOutput, Scheduler};
use wasmray_plugin_sdk::{DesiredObject, PluginError, WriteMode, to_json};

use crate::{Cluster, cluster_of, patch};

pub const SCHEDULER_NAME: &str = "scheduler-plugins-scheduler";
pub const POD_GROUP_LABEL: &str = "scheduling.x-k8s.io/pod-group";

pub struct Coscheduling;

/// The PodGroup for `cluster`.
pub fn pod_group(cluster: &Cluster<'_>) -> Value {
    json!({
        "apiVersion": "scheduling.x-k8s.io/v1alpha1",
        "kind": "PodGroup",
        "metadata": {"name": cluster.name},
        "spec": {
            "minMember": cluster.desired_workers().saturating_add(1),
            "minResources": cluster.desired_resources(),
        },
    })
}

impl Scheduler for Coscheduling {
    type Parent = RayCluster;

    fn schedule(request: Request<RayCluster>) -> Result<ScheduleOutput, PluginError> {
        let cluster = cluster_of(&request)?;
        let gang = cluster.gang_requested();
        let mut output = ScheduleOutput::default();
        if gang {
            output.extra_objects.push(DesiredObject {
                object: to_json("PodGroup", &pod_group(&cluster))?,
                mode: WriteMode::CreateOnly,
            });
        }
        for index in 0..request.pod_sets.len() {
            let mut change = patch(index);
            change.scheduler_name = Some(SCHEDULER_NAME.to_owned());
            if gang {
                change.labels = vec![(POD_GROUP_LABEL.to_owned(), cluster.name.to_owned())];
            }
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
    fn without_gang_scheduling_only_the_scheduler_name() {
        let output = Coscheduling::schedule(request(cluster())).expect("scheduled");
        assert!(output.extra_objects.is_empty());
        assert_eq!(output.patches.len(), 2);
        assert_eq!(
            output.patches[0].scheduler_name.as_deref(),
            Some("scheduler-plugins-scheduler")
        );
        assert!(output.patches[0].labels.is_empty());
    }

    #[test]
    fn gang_scheduling_creates_the_pod_group_once() {
        let parent = with_labels(cluster(), &[("ray.io/gang-scheduling-enabled", "true")]);
        let output = Coscheduling::schedule(request(parent)).expect("scheduled");
        let group: Value = serde_json::from_str(&output.extra_objects[0].object).unwrap();
        assert_eq!(
            group,
            json!({
                "apiVersion": "scheduling.x-k8s.io/v1alpha1",
                "kind": "PodGroup",
                "metadata": {"name": "sample"},
                "spec": {
                    "minMember": 4,
                    "minResources": {"cpu": "7", "memory": "14Gi", "nvidia.com/gpu": "3"},
                },
            })
        );
        assert_eq!(output.extra_objects[0].mode, WriteMode::CreateOnly);
        assert_eq!(
            output.patches[1].labels,
            [(POD_GROUP_LABEL.to_owned(), "sample".to_owned())]
        );
    }
}
