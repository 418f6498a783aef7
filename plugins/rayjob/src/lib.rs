//! The built-in RayJob reconciler plugin of WasmRay.
//!
//! Given one RayJob and what the host observed (its RayCluster and submitter Job, the RayJob
//! head Service, the selected cluster, Ray's answers about the job), it decides what KubeRay
//! v1.5.1 would: the next `jobDeploymentStatus`, the RayCluster, submitter Job and head
//! Service to create, what to delete, which Ray actions to take and which Ray facts to look
//! up next. Where KubeRay hides why a job failed or waits, the status says it
//! (docs/rayjob.md). Every module is pure and tested natively; [`reconcile::decide`] is the
//! entry point the component exports.

pub mod cleanup;
pub mod cluster;
pub mod names;
pub mod observed;
pub mod reconcile;
pub mod service;
pub mod settings;
pub mod submission;
pub mod submitter;

#[cfg(test)]
mod test_support;

// Only the component exports the WIT interface: its symbol names are not valid in a native
// shared library's version script.
#[cfg(target_arch = "wasm32")]
wasmray_plugin_sdk::export_reconciler!(reconcile::RayJobReconciler);
