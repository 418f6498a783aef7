//! `yunikorn`: Apache YuniKorn's applications, queues and gang scheduling. No objects of
//! its own: every pod carries the application id and queue labels, and with gang
//! scheduling on (`ray.io/gang-scheduling-enabled`), the task groups of the whole cluster
//! and the name of its own group, as KubeRay writes them.

use serde_json::{Value, json};
use wasmray_plugin_sdk::crds::RayCluster;
use wasmray_plugin_sdk::crds::ray_resources::pod_resources;
use wasmray_plugin_sdk::k8s_openapi::api::core::v1::PodTemplateSpec;
use wasmray_plugin_sdk::scheduler::{Request, ScheduleOutput, Scheduler};
use wasmray_plugin_sdk::{PluginError, to_json};

use crate::{Cluster, HEAD_GROUP, cluster_of, group_of, pairs, patch};

pub const SCHEDULER_NAME: &str = "yunikorn";
/// The RayCluster label read for the application id, and the pod label it becomes.
pub const APP_ID_LABEL: &str = "yunikorn.apache.org/app-id";
pub const POD_APP_ID_LABEL: &str = "applicationId";
/// The RayCluster label read for the queue, and the pod label it becomes.
pub const QUEUE_LABEL: &str = "yunikorn.apache.org/queue";
pub const POD_QUEUE_LABEL: &str = "queue";
pub const TASK_GROUPS_ANNOTATION: &str = "yunikorn.apache.org/task-groups";
pub const TASK_GROUP_NAME_ANNOTATION: &str = "yunikorn.apache.org/task-group-name";

pub struct YuniKorn;

fn task_group(name: &str, members: i32, template: &PodTemplateSpec) -> Value {
    let resources: serde_json::Map<String, Value> = pod_resources(template)
        .into_iter()
        .map(|(resource, quantity)| (resource.to_owned(), json!(quantity.to_string())))
        .collect();
    let mut group = json!({
        "name": name,
        "minMember": members,
        "minResource": resources,
    });
    if let Some(spec) = &template.spec {
        if let Some(selector) = &spec.node_selector {
            group["nodeSelector"] = json!(selector);
        }
        if let Some(tolerations) = &spec.tolerations {
            group["tolerations"] = json!(tolerations);
        }
        if let Some(affinity) = &spec.affinity {
            group["affinity"] = json!(affinity);
        }
    }
    group
}

/// The task groups of the cluster: the head (one member), then each worker group
/// (`minReplicas` times its hosts).
pub fn task_groups(cluster: &Cluster<'_>) -> Value {
    let spec = &cluster.cluster.spec;
    let mut groups = vec![task_group(HEAD_GROUP, 1, &spec.head_group_spec.template)];
    for group in spec.worker_groups() {
        groups.push(task_group(
            &group.group_name,
            group.min_replicas().saturating_mul(group.num_of_hosts()),
            &group.template,
        ));
    }
    Value::Array(groups)
}

impl Scheduler for YuniKorn {
    type Parent = RayCluster;

    fn schedule(request: Request<RayCluster>) -> Result<ScheduleOutput, PluginError> {
        let cluster = cluster_of(&request)?;
        let labels = pairs([
            (POD_APP_ID_LABEL, cluster.label(APP_ID_LABEL)),
            (POD_QUEUE_LABEL, cluster.label(QUEUE_LABEL)),
        ]);
        let task_groups = if cluster.gang_requested() {
            Some(match cluster.annotation(TASK_GROUPS_ANNOTATION) {
                Some(own) => own.to_owned(),
                None => to_json("task groups", &task_groups(&cluster))?,
            })
        } else {
            None
        };
        let mut output = ScheduleOutput::default();
        for (index, pod_set) in request.pod_sets.iter().enumerate() {
            let mut change = patch(index);
            change.scheduler_name = Some(SCHEDULER_NAME.to_owned());
            change.labels = labels.clone();
            if let Some(task_groups) = &task_groups {
                change.annotations = vec![
                    (TASK_GROUPS_ANNOTATION.to_owned(), task_groups.clone()),
                    (TASK_GROUP_NAME_ANNOTATION.to_owned(), group_of(pod_set)),
                ];
            }
            output.patches.push(change);
        }
        Ok(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{cluster, request, with_annotations, with_labels};

    #[test]
    fn labels_without_gang_scheduling() {
        let parent = with_labels(
            cluster(),
            &[(APP_ID_LABEL, "app-1"), (QUEUE_LABEL, "root.ray")],
        );
        let output = YuniKorn::schedule(request(parent)).expect("scheduled");
        assert!(output.extra_objects.is_empty());
        for change in &output.patches {
            assert_eq!(change.scheduler_name.as_deref(), Some("yunikorn"));
            assert_eq!(
                change.labels,
                [
                    ("applicationId".to_owned(), "app-1".to_owned()),
                    ("queue".to_owned(), "root.ray".to_owned())
                ]
            );
            assert!(change.annotations.is_empty());
        }
    }

    #[test]
    fn gang_scheduling_writes_task_groups_as_kuberay() {
        let parent = with_labels(cluster(), &[("ray.io/gang-scheduling-enabled", "true")]);
        let output = YuniKorn::schedule(request(parent)).expect("scheduled");
        let (key, groups) = &output.patches[0].annotations[0];
        assert_eq!(key, TASK_GROUPS_ANNOTATION);
        let groups: Value = serde_json::from_str(groups).unwrap();
        assert_eq!(
            groups,
            json!([
                {"name": "headgroup", "minMember": 1,
                 "minResource": {"cpu": "1", "memory": "2Gi"},
                 "nodeSelector": {"pool": "head"}},
                {"name": "workers", "minMember": 1,
                 "minResource": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"},
                 "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]},
            ])
        );
        assert_eq!(
            output.patches[1].annotations[1],
            (TASK_GROUP_NAME_ANNOTATION.to_owned(), "workers".to_owned())
        );
    }

    #[test]
    fn the_clusters_own_task_groups_win() {
        let parent = with_annotations(
            with_labels(cluster(), &[("ray.io/gang-scheduling-enabled", "")]),
            &[(TASK_GROUPS_ANNOTATION, "[{\"name\":\"mine\"}]")],
        );
        let output = YuniKorn::schedule(request(parent)).expect("scheduled");
        assert_eq!(output.patches[0].annotations[0].1, "[{\"name\":\"mine\"}]");
    }
}
