//! `kai-scheduler`: NVIDIA's KAI scheduler. Pods carry its scheduler name and the
//! cluster's `kai.scheduler/queue` label. KAI schedules no pod without a queue; KubeRay
//! creates the pods anyway and they stay Pending with no word on the RayCluster. Here the
//! pods are held back instead, and the RayCluster says why (`SchedulingHeld`).

use wasmray_plugin_sdk::PluginError;
use wasmray_plugin_sdk::crds::RayCluster;
use wasmray_plugin_sdk::scheduler::{Admission, Request, ScheduleOutput, Scheduler};

use crate::{cluster_of, patch};

pub const SCHEDULER_NAME: &str = "kai-scheduler";
pub const QUEUE_LABEL: &str = "kai.scheduler/queue";

pub struct Kai;

impl Scheduler for Kai {
    type Parent = RayCluster;

    fn schedule(request: Request<RayCluster>) -> Result<ScheduleOutput, PluginError> {
        let cluster = cluster_of(&request)?;
        let mut output = ScheduleOutput::default();
        let Some(queue) = cluster.label(QUEUE_LABEL).filter(|queue| !queue.is_empty()) else {
            output.admission = Admission::Hold(format!(
                "the RayCluster has no {QUEUE_LABEL} label, and KAI schedules no pod without a queue"
            ));
            return Ok(output);
        };
        for index in 0..request.pod_sets.len() {
            let mut change = patch(index);
            change.scheduler_name = Some(SCHEDULER_NAME.to_owned());
            change.labels = vec![(QUEUE_LABEL.to_owned(), queue.to_owned())];
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
    fn pods_join_the_queue() {
        let parent = with_labels(cluster(), &[(QUEUE_LABEL, "team-a")]);
        let output = Kai::schedule(request(parent)).expect("scheduled");
        assert_eq!(output.admission, Admission::Admit);
        assert_eq!(output.patches.len(), 2);
        for change in &output.patches {
            assert_eq!(change.scheduler_name.as_deref(), Some("kai-scheduler"));
            assert_eq!(
                change.labels,
                [(QUEUE_LABEL.to_owned(), "team-a".to_owned())]
            );
        }
    }

    #[test]
    fn no_queue_holds_the_pods_with_the_reason() {
        let output = Kai::schedule(request(cluster())).expect("scheduled");
        assert!(output.patches.is_empty());
        let Admission::Hold(why) = output.admission else {
            panic!("expected a hold");
        };
        assert!(why.contains("kai.scheduler/queue"), "{why}");
    }
}
