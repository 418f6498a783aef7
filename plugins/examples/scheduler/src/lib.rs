//! Example scheduler plugin.
//!
//! Configuration (JSON, all optional):
//! `{"schedulerName": "volcano", "queue": "research", "holdLabel": "example.io/hold"}`.
//! Every pod set gets the scheduler name and a queue annotation; a parent carrying the
//! hold label (any value) is held back with a reason.

use serde::Deserialize;
use wasmray_plugin_sdk::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use wasmray_plugin_sdk::scheduler::{Admission, PodSetPatch, Request, ScheduleOutput, Scheduler};
use wasmray_plugin_sdk::{Event, PluginError, export_scheduler, from_json};

/// The annotation that carries the queue name.
pub const QUEUE_ANNOTATION: &str = "scheduling.wasmray.io/queue";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    scheduler_name: Option<String>,
    queue: Option<String>,
    hold_label: Option<String>,
}

/// Only the parent's metadata matters here.
#[derive(Debug, Deserialize)]
pub struct Parent {
    pub metadata: ObjectMeta,
}

pub struct ExampleScheduler;

impl Scheduler for ExampleScheduler {
    type Parent = Parent;

    fn schedule(request: Request<Parent>) -> Result<ScheduleOutput, PluginError> {
        let config: Config = if request.config.trim().is_empty() {
            Config::default()
        } else {
            from_json("plugin configuration", &request.config)?
        };
        let mut output = ScheduleOutput::default();
        let held = config.hold_label.as_ref().is_some_and(|label| {
            request
                .parent
                .metadata
                .labels
                .as_ref()
                .is_some_and(|labels| labels.contains_key(label))
        });
        if held {
            output.admission = Admission::Hold(format!(
                "label {} is set",
                config.hold_label.unwrap_or_default()
            ));
            return Ok(output);
        }
        let annotations: Vec<(String, String)> = config
            .queue
            .iter()
            .map(|queue| (QUEUE_ANNOTATION.to_owned(), queue.clone()))
            .collect();
        for index in 0..request.pod_sets.len() {
            output.patches.push(PodSetPatch {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                scheduler_name: config.scheduler_name.clone(),
                labels: Vec::new(),
                annotations: annotations.clone(),
                priority_class_name: None,
                scheduling_group: None,
            });
        }
        if let Some(queue) = &config.queue {
            output.events.push(Event::normal(
                "Queued",
                format!("{} pod sets queued in {queue}", request.pod_sets.len()),
            ));
        }
        Ok(output)
    }
}

export_scheduler!(ExampleScheduler);
