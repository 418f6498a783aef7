//! Checks that a scheduler's or autoscaler's answer fits the contract. The WIT types already
//! guarantee the shape; these checks cover what WIT cannot express (JSON text that must be
//! an object of a certain kind, indexes in range). Each error names the field, e.g.
//! `extra-objects[2].object: missing "kind"`. A reconciler's answer is checked once, where it
//! becomes a write plan (`controller::plan`).

use serde::Deserialize;

use super::bindings::autoscaler::exports::wasmray::plugin::autoscale::AutoscaleOutput;
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

/// Checks an autoscaler's answer against the groups it was given.
pub fn autoscale_output(output: &AutoscaleOutput, group_names: &[&str]) -> Result<(), String> {
    for (index, decision) in output.groups.iter().enumerate() {
        if !group_names.contains(&decision.name.as_str()) {
            return Err(format!(
                "groups[{index}].name: unknown worker group {:?}",
                decision.name
            ));
        }
    }
    events("events", &output.events)
}
