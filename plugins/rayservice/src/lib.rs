//! The built-in RayService reconciler plugin of WasmRay.
//!
//! Given one RayService and what the host observed (its RayClusters, its head and serve
//! Services, the serve Service's EndpointSlices and Ray Serve's status of the cluster it
//! asked about), it decides what KubeRay v1.7.1 would: which cluster is active and which is
//! pending, which Serve config goes to which cluster, when traffic switches, when an old
//! cluster goes, and the status. Where KubeRay loses state in memory (the applied configs,
//! the deletion times), this plugin reads it from Ray and from the RayService's own status,
//! so an operator restart changes nothing (docs/rayservice.md). Every module is pure and
//! tested natively; [`reconcile::decide`] is the entry point the component exports.

pub mod cluster;
pub mod reconcile;
pub mod serve;
pub mod services;

#[cfg(test)]
mod tests;

// Only the component exports the WIT interface.
#[cfg(target_arch = "wasm32")]
wasmray_plugin_sdk::export_reconciler!(reconcile::RayServiceReconciler);
