//! Example autoscaler plugin.
//!
//! Scale-up: each pending request goes to the first worker group whose single worker can
//! hold it; the group grows by enough workers for its share of the demand
//! (Conservative mode: at most one worker per call). Scale-down: workers idle longer than
//! the group's (or the cluster's) idle timeout are deleted while the group stays at or
//! above `minReplicas`. Replicas stay within [min, max].

use std::collections::BTreeMap;

use wasmray_plugin_sdk::autoscaler::{
    AutoscaleOutput, Autoscaler, GroupDecision, NodeStatus, Request, Resources, WorkerGroup,
};
use wasmray_plugin_sdk::serde_json::Value;
use wasmray_plugin_sdk::{Event, PluginError, export_autoscaler};

pub struct ExampleAutoscaler;

fn amount(resources: &Resources, name: &str) -> f64 {
    resources
        .iter()
        .find(|(key, _)| key == name)
        .map_or(0.0, |(_, value)| *value)
}

/// Whether one worker of `group` can hold `shape`.
fn fits(group: &WorkerGroup, shape: &Resources) -> bool {
    shape
        .iter()
        .all(|(name, needed)| *needed <= amount(&group.resources, name))
}

/// How many copies of `shape` one worker of `group` holds (at least one if it fits).
fn per_worker(group: &WorkerGroup, shape: &Resources) -> u32 {
    shape
        .iter()
        .filter(|(_, needed)| *needed > 0.0)
        .map(|(name, needed)| (amount(&group.resources, name) / needed).floor() as u32)
        .min()
        .unwrap_or(1)
        .max(1)
}

impl Autoscaler for ExampleAutoscaler {
    type Cluster = Value;

    fn autoscale(request: Request<Value>) -> Result<AutoscaleOutput, PluginError> {
        let mut extra_workers: BTreeMap<&str, u32> = BTreeMap::new();
        for pending in &request.pending_requests {
            let shape = &pending.request.resources;
            if let Some(group) = request.groups.iter().find(|group| fits(group, shape)) {
                let needed = pending.count.div_ceil(per_worker(group, shape));
                *extra_workers.entry(group.name.as_str()).or_default() += needed;
            }
        }
        let mut output = AutoscaleOutput {
            groups: Vec::new(),
            infeasible: Vec::new(),
            events: Vec::new(),
            requeue_after_ms: Some(30_000),
        };
        for group in &request.groups {
            let mut wanted = extra_workers.get(group.name.as_str()).copied().unwrap_or(0);
            if request.upscaling_mode == "Conservative" {
                wanted = wanted.min(1);
            }
            let timeout_ms = u64::from(
                group
                    .idle_timeout_seconds
                    .unwrap_or(request.idle_timeout_seconds),
            ) * 1000;
            let mut replicas = group.replicas.saturating_add(wanted);
            let mut workers_to_delete = Vec::new();
            if wanted == 0 {
                for worker in request
                    .workers
                    .iter()
                    .filter(|w| w.group == group.name && !w.leaving)
                {
                    let idle_long =
                        worker.status == NodeStatus::Idle && worker.idle_ms >= timeout_ms;
                    if idle_long && replicas > group.min_replicas {
                        workers_to_delete.push(worker.pod.clone());
                        replicas -= 1;
                    }
                }
            }
            let replicas = replicas.clamp(
                group.min_replicas,
                group.max_replicas.max(group.min_replicas),
            );
            if replicas != group.replicas || !workers_to_delete.is_empty() {
                output.events.push(Event::normal(
                    "Autoscaled",
                    format!(
                        "group {}: {} -> {} replicas",
                        group.name, group.replicas, replicas
                    ),
                ));
                output.groups.push(GroupDecision {
                    name: group.name.clone(),
                    replicas,
                    workers_to_delete,
                });
            }
        }
        Ok(output)
    }
}

export_autoscaler!(ExampleAutoscaler);
