//! Checks that a plugin's answer fits the contract before the host acts on it. The WIT
//! types already guarantee the shape; these checks cover what WIT cannot express (JSON
//! text that must be an object of a certain kind, required names and uids). Each error
//! names the field, e.g. `apply[2].object: missing "kind"`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::bindings::autoscaler::exports::wasmray::plugin::autoscale::AutoscaleOutput;
use super::bindings::reconciler::exports::wasmray::plugin::reconcile::{
    RayActionKind, RayQuery, ReconcileOutput,
};
use super::bindings::scheduler::exports::wasmray::plugin::schedule::ScheduleOutput;
use super::bindings::types::{DesiredObject, Event, PodSet, WriteMode};

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

fn json_object(field: &str, json: &str) -> Result<(), String> {
    serde_json::from_str::<BTreeMap<String, IgnoredAny>>(json)
        .map(drop)
        .map_err(|err| format!("{field}: not a JSON object: {err}"))
}

fn json_value(field: &str, json: &str) -> Result<(), String> {
    serde_json::from_str::<IgnoredAny>(json)
        .map(drop)
        .map_err(|err| format!("{field}: not JSON: {err}"))
}

fn required(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        Err(format!("{field}: must not be empty"))
    } else {
        Ok(())
    }
}

fn pod_sets(field: &str, sets: &[PodSet]) -> Result<(), String> {
    for (index, set) in sets.iter().enumerate() {
        let field = format!("{field}[{index}]");
        let head = object_head(&format!("{field}.template"), &set.template)?;
        if head.kind.as_deref() != Some("Pod") || head.api_version.as_deref() != Some("v1") {
            return Err(format!("{field}.template: must be a v1 Pod"));
        }
        let generate_name = head
            .metadata
            .as_ref()
            .is_some_and(|meta| non_empty(&meta.generate_name));
        for (replica_index, replica) in set.replicas.iter().enumerate() {
            let named = replica.name.as_deref().is_some_and(|name| !name.is_empty());
            if !named && !generate_name {
                return Err(format!(
                    "{field}.replicas[{replica_index}]: no name and the template has no metadata.generateName"
                ));
            }
            for (key, _) in replica.labels.iter().chain(&replica.annotations) {
                required(
                    &format!("{field}.replicas[{replica_index}] label/annotation key"),
                    key,
                )?;
            }
        }
    }
    Ok(())
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

/// Checks a reconciler's answer.
pub fn reconcile_output(output: &ReconcileOutput) -> Result<(), String> {
    pod_sets("create-pods", &output.create_pods)?;
    desired_objects("apply", &output.apply)?;
    for (index, deletion) in output.delete.iter().enumerate() {
        let field = format!("delete[{index}]");
        required(&format!("{field}.api-version"), &deletion.api_version)?;
        required(&format!("{field}.kind"), &deletion.kind)?;
        required(&format!("{field}.name"), &deletion.name)?;
        required(&format!("{field}.uid"), &deletion.uid)?;
    }
    if let Some(status) = &output.status {
        json_object("status", status)?;
    }
    events("events", &output.events)?;
    for (index, action) in output.ray_actions.iter().enumerate() {
        let field = format!("ray-actions[{index}]");
        required(&format!("{field}.id"), &action.id)?;
        required(&format!("{field}.cluster"), &action.cluster)?;
        match &action.action {
            RayActionKind::SubmitJob(job) => {
                required(
                    &format!("{field}.submit-job.submission-id"),
                    &job.submission_id,
                )?;
                required(&format!("{field}.submit-job.entrypoint"), &job.entrypoint)?;
                if let Some(env) = &job.runtime_env {
                    json_object(&format!("{field}.submit-job.runtime-env"), env)?;
                }
                if let Some(resources) = &job.entrypoint_resources {
                    json_object(
                        &format!("{field}.submit-job.entrypoint-resources"),
                        resources,
                    )?;
                }
            }
            RayActionKind::StopJob(id) | RayActionKind::DeleteJob(id) => {
                required(&format!("{field}.submission-id"), id)?;
            }
            RayActionKind::PutServeConfig(config) => {
                json_value(&format!("{field}.put-serve-config"), config)?;
            }
        }
    }
    for (index, query) in output.ray_queries.iter().enumerate() {
        let field = format!("ray-queries[{index}]");
        match query {
            RayQuery::Job((cluster, submission_id)) => {
                required(&format!("{field}.job.cluster"), cluster)?;
                required(&format!("{field}.job.submission-id"), submission_id)?;
            }
            RayQuery::ServeStatus(cluster) | RayQuery::Dashboard(cluster) => {
                required(&format!("{field}.cluster"), cluster)?;
            }
        }
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
