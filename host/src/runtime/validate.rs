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

#[cfg(test)]
mod tests {
    use super::super::bindings::autoscaler::exports::wasmray::plugin::autoscale::{
        GroupDecision, Node, NodeStatus, WorkerGroup,
    };
    use super::super::bindings::types::{HostFacts, Timestamp};
    use super::*;

    fn group(name: &str, suspended: bool) -> WorkerGroup {
        WorkerGroup {
            name: name.to_owned(),
            min_replicas: 1,
            max_replicas: 3,
            replicas: 2,
            num_of_hosts: 1,
            resources: Vec::new(),
            labels: Vec::new(),
            idle_timeout_seconds: None,
            priority: 0,
            suspended,
        }
    }

    fn worker(pod: &str, group: &str) -> Node {
        Node {
            pod: pod.to_owned(),
            group: group.to_owned(),
            replica: pod.to_owned(),
            status: NodeStatus::Idle,
            idle_ms: 0,
            activity: Vec::new(),
            total: Vec::new(),
            available: Vec::new(),
            labels: Vec::new(),
            leaving: false,
        }
    }

    fn decision(name: &str, replicas: u32, delete: &[&str]) -> GroupDecision {
        GroupDecision {
            name: name.to_owned(),
            replicas,
            workers_to_delete: delete.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    #[test]
    fn autoscaler_answers_keep_bounds_groups_and_pods() {
        let input = AutoscaleInput {
            cluster: "{}".to_owned(),
            groups: vec![group("a", false), group("b", false), group("off", true)],
            head: Some(worker("head", "headgroup")),
            workers: vec![worker("a-1", "a"), worker("b-1", "b")],
            pending_requests: Vec::new(),
            pending_gangs: Vec::new(),
            constraints: Vec::new(),
            upscaling_mode: "Default".to_owned(),
            idle_timeout_seconds: 60,
            now: Timestamp {
                seconds: 0,
                nanos: 0,
            },
            config: String::new(),
            host: HostFacts {
                operator_version: String::new(),
                feature_gates: Vec::new(),
                settings: Vec::new(),
            },
        };
        // (decisions, the error's start, or "" when accepted)
        let cases: Vec<(Vec<GroupDecision>, &str)> = vec![
            (vec![decision("a", 3, &[]), decision("b", 1, &["b-1"])], ""),
            (
                vec![decision("a", 4, &[])],
                "groups[0].replicas: 4 is outside [1, 3]",
            ),
            (
                vec![decision("a", 0, &[])],
                "groups[0].replicas: 0 is outside [1, 3]",
            ),
            (
                vec![decision("c", 1, &[])],
                "groups[0].name: unknown worker group",
            ),
            (
                vec![decision("a", 2, &[]), decision("a", 3, &[])],
                "groups[1].name: group \"a\" is decided twice",
            ),
            (
                vec![decision("off", 1, &[])],
                "groups[0]: group \"off\" is suspended",
            ),
            (
                vec![decision("a", 1, &["b-1"])],
                "groups[0].workers-to-delete[0]: \"b-1\" belongs to group \"b\"",
            ),
            (
                vec![decision("a", 1, &["head"])],
                "groups[0].workers-to-delete[0]: \"head\" is not a worker pod",
            ),
            (
                vec![decision("a", 1, &["a-9"])],
                "groups[0].workers-to-delete[0]: \"a-9\" is not a worker pod",
            ),
            (
                vec![decision("a", 1, &["a-1", "a-1"])],
                "groups[0].workers-to-delete[1]: \"a-1\" is named twice",
            ),
        ];
        for (groups, expected) in cases {
            let output = AutoscaleOutput {
                groups,
                infeasible: Vec::new(),
                events: Vec::new(),
                requeue_after_ms: None,
            };
            match autoscale_output(&output, &input) {
                Ok(()) => assert_eq!(expected, "", "accepted, expected {expected}"),
                Err(error) => assert!(
                    !expected.is_empty() && error.starts_with(expected),
                    "{error:?} does not start with {expected:?}"
                ),
            }
        }
    }
}
