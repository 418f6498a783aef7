//! The built-in RayCluster reconciler plugin of WasmRay.
//!
//! Given one RayCluster and what the host observed (its pods and services), it decides what
//! KubeRay v1.5.1 would: the head and worker pods to create or delete, the Services, the
//! status and the events. Every module is pure and tested natively; [`reconcile::reconcile`]
//! is the entry point the component exports.

pub mod cluster;
pub mod gcs_ft;
pub mod ingress;
pub mod pod;
pub mod ray_start;
pub mod reconcile;
pub mod scale;
pub mod serve_label;
pub mod service;
pub mod settings;
pub mod status;

#[cfg(test)]
mod test_support;

// Only the component exports the WIT interface: its symbol names are not valid in a native
// shared library's version script.
#[cfg(target_arch = "wasm32")]
wasmray_plugin_sdk::export_reconciler!(reconcile::RayClusterReconciler);
