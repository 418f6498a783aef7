//! The scheduler role in the controller: which scheduler plugin a RayCluster is bound to,
//! and how its answer changes the reconciler's pods. The host only carries the answer out:
//! which scheduler name, labels, PodGroup or gang a pod gets is the plugin's decision.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::parent::RelatedObject;
use super::wit::{PodSet, PodSetPatch};

/// Annotation with which one object picks a scheduler plugin other than the operator's
/// `--batch-scheduler`; `none` turns batch scheduling off for it.
pub const SCHEDULER_ANNOTATION: &str = "wasmray.io/scheduler";
/// The annotation value that turns batch scheduling off for one object.
pub const NO_SCHEDULER: &str = "none";

/// The kinds a scheduler plugin may write (beyond what the platform team allows it):
/// Volcano's and scheduler-plugins' PodGroups, and Kubernetes' own workload-aware
/// scheduling objects.
pub const SCHEDULER_KINDS: &[(&str, &str)] = &[
    ("scheduling.volcano.sh/v1beta1", "PodGroup"),
    ("scheduling.x-k8s.io/v1alpha1", "PodGroup"),
    ("scheduling.k8s.io/v1alpha2", "Workload"),
    ("scheduling.k8s.io/v1alpha2", "PodGroup"),
];

/// The LocalQueue a suspended object labelled `kueue.x-k8s.io/queue-name` waits in: read
/// before each call so that its plugin can say when it does not exist (Kueue says so only on
/// its own Workload). None once the object runs: Kueue admitted it.
pub fn awaited_local_queue(
    labels: &BTreeMap<String, String>,
    suspended: bool,
) -> Option<RelatedObject> {
    let queue = labels.get(wasmray_crds::constants::KUEUE_QUEUE_NAME_LABEL_KEY)?;
    (suspended && !queue.is_empty())
        .then(|| RelatedObject::named("kueue.x-k8s.io/v1beta2", "LocalQueue", queue.clone()))
}

/// The scheduler plugin for an object with `annotations`: its annotation, else the
/// operator's default. None: the object is not batch-scheduled.
pub fn scheduler_for(
    annotations: &BTreeMap<String, String>,
    default: Option<&str>,
) -> Option<String> {
    let chosen = match annotations.get(SCHEDULER_ANNOTATION) {
        Some(name) => name.trim(),
        None => default?.trim(),
    };
    (!chosen.is_empty() && chosen != NO_SCHEDULER).then(|| chosen.to_owned())
}

/// Applies a scheduler's patches to the pod sets' templates. The error names the patch and
/// what is wrong with the template it patches.
pub fn patch_pod_sets(pod_sets: &mut [PodSet], patches: &[PodSetPatch]) -> Result<(), String> {
    for (position, patch) in patches.iter().enumerate() {
        let Some(pod_set) = usize::try_from(patch.index)
            .ok()
            .and_then(|index| pod_sets.get_mut(index))
        else {
            return Err(format!(
                "patches[{position}].index: {} names no pod set",
                patch.index
            ));
        };
        let mut template: Value = serde_json::from_str(&pod_set.template).map_err(|error| {
            format!(
                "patches[{position}]: the template of pod set {:?} is not JSON: {error}",
                pod_set.group
            )
        })?;
        let Some(pod) = template.as_object_mut() else {
            return Err(format!(
                "patches[{position}]: the template of pod set {:?} is not a JSON object",
                pod_set.group
            ));
        };
        let metadata = object_field(pod, "metadata");
        merge_strings(object_field(metadata, "labels"), &patch.labels);
        merge_strings(object_field(metadata, "annotations"), &patch.annotations);
        let spec = object_field(pod, "spec");
        if let Some(name) = &patch.scheduler_name {
            spec.insert("schedulerName".into(), Value::String(name.clone()));
        }
        if let Some(class) = &patch.priority_class_name {
            spec.insert("priorityClassName".into(), Value::String(class.clone()));
        }
        if let Some(group) = &patch.scheduling_group {
            let mut scheduling_group = Map::new();
            scheduling_group.insert("podGroupName".into(), Value::String(group.clone()));
            spec.insert("schedulingGroup".into(), Value::Object(scheduling_group));
        }
        pod_set.template = template.to_string();
    }
    Ok(())
}

/// The object under `key`, made one if it is missing or not an object.
fn object_field<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let field = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !field.is_object() {
        *field = Value::Object(Map::new());
    }
    match field {
        Value::Object(object) => object,
        // Made an object just above.
        _ => unreachable!("field {key} was just made an object"),
    }
}

fn merge_strings(target: &mut Map<String, Value>, entries: &[(String, String)]) {
    for (key, value) in entries {
        target.insert(key.clone(), Value::String(value.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod_set(template: Value) -> PodSet {
        PodSet {
            group: "workers".into(),
            template: template.to_string(),
            replicas: Vec::new(),
        }
    }

    fn patch(index: u32) -> PodSetPatch {
        PodSetPatch {
            index,
            scheduler_name: None,
            labels: Vec::new(),
            annotations: Vec::new(),
            priority_class_name: None,
            scheduling_group: None,
        }
    }

    #[test]
    fn the_annotation_wins_and_none_turns_scheduling_off() {
        let none = BTreeMap::new();
        let annotated =
            |value: &str| BTreeMap::from([(SCHEDULER_ANNOTATION.to_owned(), value.to_owned())]);
        assert_eq!(scheduler_for(&none, None), None);
        assert_eq!(
            scheduler_for(&none, Some("volcano")).as_deref(),
            Some("volcano")
        );
        assert_eq!(
            scheduler_for(&annotated("yunikorn"), Some("volcano")).as_deref(),
            Some("yunikorn")
        );
        assert_eq!(scheduler_for(&annotated("none"), Some("volcano")), None);
        assert_eq!(scheduler_for(&annotated(" "), Some("volcano")), None);
        assert_eq!(
            scheduler_for(&annotated(" kai-scheduler "), None).as_deref(),
            Some("kai-scheduler")
        );
    }

    #[test]
    fn patches_merge_into_the_template_and_leave_other_sets_alone() {
        let mut sets = vec![
            pod_set(json!({"metadata": {"labels": {"ray.io/group": "headgroup"}}, "spec": {}})),
            pod_set(json!({"spec": {"schedulerName": "default-scheduler"}})),
        ];
        let mut first = patch(0);
        first.scheduler_name = Some("volcano".into());
        first.labels = vec![("volcano.sh/queue-name".into(), "q".into())];
        first.annotations = vec![("scheduling.k8s.io/group-name".into(), "ray-c-pg".into())];
        first.priority_class_name = Some("high".into());
        first.scheduling_group = Some("c-cluster".into());
        patch_pod_sets(&mut sets, &[first]).expect("patched");
        let head: Value = serde_json::from_str(&sets[0].template).expect("json");
        assert_eq!(
            head,
            json!({
                "metadata": {
                    "labels": {"ray.io/group": "headgroup", "volcano.sh/queue-name": "q"},
                    "annotations": {"scheduling.k8s.io/group-name": "ray-c-pg"},
                },
                "spec": {
                    "schedulerName": "volcano",
                    "priorityClassName": "high",
                    "schedulingGroup": {"podGroupName": "c-cluster"},
                },
            })
        );
        let untouched: Value = serde_json::from_str(&sets[1].template).expect("json");
        assert_eq!(
            untouched,
            json!({"spec": {"schedulerName": "default-scheduler"}})
        );
    }

    #[test]
    fn a_bad_index_or_template_is_named() {
        let mut sets = vec![pod_set(json!("not an object"))];
        assert_eq!(
            patch_pod_sets(&mut sets, &[patch(3)]),
            Err("patches[0].index: 3 names no pod set".to_owned())
        );
        assert_eq!(
            patch_pod_sets(&mut sets, &[patch(0)]),
            Err("patches[0]: the template of pod set \"workers\" is not a JSON object".to_owned())
        );
    }
}
