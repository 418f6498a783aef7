//! Checks that a scheduler's or autoscaler's answer fits the contract. The WIT types already
//! guarantee the shape; these checks cover what WIT cannot express (JSON text that must be
//! an object of a certain kind, indexes in range). Each error names the field, e.g.
//! `extra-objects[2].object: missing "kind"`. A reconciler's answer is checked once, where it
//! becomes a write plan (`controller::plan`).

use serde::Deserialize;

use super::bindings::autoscaler::exports::wasmray::plugin::autoscale::{
    AutoscaleInput, AutoscaleOutput,
};
use super::bindings::scheduler::exports::wasmray::plugin::schedule::ScheduleOutput;
use super::bindings::types::{DesiredObject, Event, WriteMode};

/// The parts of an object's JSON the host needs; the rest is skipped without building it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectHead {
    api_version: Option<String>,
    kind: Option<String>,
    metadata: Option<MetadataHead>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetadataHead {
    name: Option<String>,
    generate_name: Option<String>,
}

fn non_empty(value: &Option<String>) -> bool {
    value.as_deref().is_some_and(|text| !text.is_empty())
}

fn object_head(field: &str, json: &str) -> Result<ObjectHead, String> {
    let head: ObjectHead =
        serde_json::from_str(json).map_err(|err| format!("{field}: not a JSON object: {err}"))?;
    if !non_empty(&head.api_version) {
        return Err(format!("{field}: missing \"apiVersion\""));
    }
    if !non_empty(&head.kind) {
        return Err(format!("{field}: missing \"kind\""));
    }
    Ok(head)
}

fn required(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        Err(format!("{field}: must not be empty"))
    } else {
        Ok(())
    }
}

fn desired_objects(field: &str, objects: &[DesiredObject]) -> Result<(), String> {
    for (index, desired) in objects.iter().enumerate() {
        let field = format!("{field}[{index}].object");
        let head = object_head(&field, &desired.object)?;
        let meta = head.metadata.as_ref();
        let named = meta.is_some_and(|meta| non_empty(&meta.name));
        let generated = meta.is_some_and(|meta| non_empty(&meta.generate_name));
        match desired.mode {
            WriteMode::Apply if !named => {
                return Err(format!("{field}: apply needs metadata.name"));
            }
            WriteMode::CreateOnly if !named && !generated => {
                return Err(format!(
                    "{field}: needs metadata.name or metadata.generateName"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

fn events(field: &str, events: &[Event]) -> Result<(), String> {
    for (index, event) in events.iter().enumerate() {
        required(&format!("{field}[{index}].reason"), &event.reason)?;
    }
    Ok(())
}

/// Checks a scheduler's answer against the number of pod sets it was given.
pub fn schedule_output(output: &ScheduleOutput, pod_set_count: usize) -> Result<(), String> {
    for (index, patch) in output.patches.iter().enumerate() {
        if !usize::try_from(patch.index).is_ok_and(|target| target < pod_set_count) {
            return Err(format!(
                "patches[{index}].index: {} is out of range (there are {pod_set_count} pod sets)",
                patch.index
            ));
        }
    }
    desired_objects("extra-objects", &output.extra_objects)?;
    events("events", &output.events)
}

/// Checks an autoscaler's answer against its input: every decision names a group of the
/// cluster once, keeps `replicas` within the group's bounds, leaves a suspended group
/// alone, and deletes only pods of its own group (never the head, never twice).
pub fn autoscale_output(output: &AutoscaleOutput, input: &AutoscaleInput) -> Result<(), String> {
    let mut decided: Vec<&str> = Vec::new();
    for (index, decision) in output.groups.iter().enumerate() {
        let field = format!("groups[{index}]");
        let Some(group) = input
            .groups
            .iter()
            .find(|group| group.name == decision.name)
        else {
            return Err(format!(
                "{field}.name: unknown worker group {:?}",
                decision.name
            ));
        };
        if decided.contains(&decision.name.as_str()) {
            return Err(format!(
                "{field}.name: group {:?} is decided twice",
                decision.name
            ));
        }
        decided.push(&decision.name);
        if group.suspended {
            return Err(format!(
                "{field}: group {:?} is suspended and cannot be scaled",
                group.name
            ));
        }
        let min = group.min_replicas.min(group.max_replicas);
        if decision.replicas > group.max_replicas || decision.replicas < min {
            return Err(format!(
                "{field}.replicas: {} is outside [{min}, {}] (minReplicas, maxReplicas) of group {:?}",
                decision.replicas, group.max_replicas, group.name
            ));
        }
        let mut named: Vec<&str> = Vec::new();
        for (pod_index, pod) in decision.workers_to_delete.iter().enumerate() {
            let pod_field = format!("{field}.workers-to-delete[{pod_index}]");
            let Some(worker) = input.workers.iter().find(|worker| worker.pod == *pod) else {
                return Err(format!(
                    "{pod_field}: {pod:?} is not a worker pod of this cluster"
                ));
            };
            if worker.group != group.name {
                return Err(format!(
                    "{pod_field}: {pod:?} belongs to group {:?}, not {:?}",
                    worker.group, group.name
                ));
            }
            if named.contains(&pod.as_str()) {
                return Err(format!("{pod_field}: {pod:?} is named twice"));
            }
            named.push(pod);
        }
    }
    events("events", &output.events)
}
