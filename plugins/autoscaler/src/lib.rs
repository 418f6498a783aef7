//! `ray-default`, the built-in autoscaler plugin: Ray's v2 autoscaler semantics on the
//! demand the host reads from the cluster's GCS.
//!
//! - Bounds: `replicas` stays within [minReplicas, maxReplicas] (maxReplicas wins); a
//!   suspended group is left alone; the head is never touched.
//! - `request_resources` constraints are packed onto the totals of the nodes; what does not
//!   fit adds workers, and nodes holding constraints are never removed.
//! - Placement groups come before tasks: PACK and SPREAD bundles are packed one by one,
//!   STRICT_PACK's as one sum on one node, STRICT_SPREAD's each on a node of its own, all or
//!   nothing.
//! - Tasks and actors are packed first-fit, larger shapes first, onto free resources
//!   (including workers still starting); what is left adds replicas to the best group
//!   (no GPU group for work without GPUs, then `priority`, then matching resources, then
//!   utilization). `upscalingMode: Conservative` adds at most as many replicas as a group
//!   has running, minus those still starting; Default and Aggressive add what is needed.
//!   Label selectors of requests must match the group's Ray labels.
//! - Multi-host groups grow and shrink by whole replicas.
//! - A replica whose nodes are all idle for the group's `idleTimeoutSeconds` (else the
//!   cluster's `autoscalerOptions.idleTimeoutSeconds`) is removed, longest idle first, down
//!   to minReplicas, unless demand or constraints need it.
//! - Demand that no group can hold even at its largest is reported as infeasible.
//!
//! The configuration text must be empty or `{}`: the policy has no settings of its own.

pub mod packing;
pub mod policy;

use wasmray_plugin_sdk::PluginError;
use wasmray_plugin_sdk::autoscaler::{AutoscaleOutput, Autoscaler, Request};
use wasmray_plugin_sdk::serde_json::Value;

pub use policy::{Options, decide};

/// The `ray-default` policy.
pub struct RayDefault;

impl Autoscaler for RayDefault {
    type Cluster = Value;

    fn validate_config(config: &str) -> Result<(), PluginError> {
        match config.trim() {
            "" | "{}" => Ok(()),
            other => Err(PluginError {
                reason: "InvalidConfig".to_owned(),
                message: format!(
                    "ray-default takes no configuration (got {other:?}); it reads everything from the RayCluster"
                ),
                retry_after_ms: None,
            }),
        }
    }

    fn autoscale(request: Request<Value>) -> Result<AutoscaleOutput, PluginError> {
        Ok(decide(&request, &Options::default()))
    }
}

#[cfg(feature = "component")]
wasmray_plugin_sdk::export_autoscaler!(RayDefault);

#[cfg(test)]
mod tests;
