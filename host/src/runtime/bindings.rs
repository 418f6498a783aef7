//! Host bindings of the contract versions this host serves, generated from
//! `wit/plugin@<version>/`.
//!
//! The newest version (0.3.0) is the host's own model: the modules `reconciler`,
//! `scheduler` and `autoscaler` and the shared `types` and `logging` are 0.3.0's. Older
//! versions live in their own module (`v0_2`) and reuse every interface that did not change
//! (`types` and `logging` are the same shapes in 0.2.0), so only the reconcile interface is
//! converted (`runtime/contract_0_2.rs`).

//!
//! The unstable roles (`@unstable` scheduler and autoscaler) are generated too: wasmtime's
//! bindgen enables every WIT feature gate.

#![allow(missing_docs, clippy::all)]

pub mod reconciler {
    wasmtime::component::bindgen!({
        path: "../wit/plugin@0.3.0",
        world: "wasmray:plugin/reconciler@0.3.0",
        exports: { default: async },
        additional_derives: [PartialEq],
    });
}

pub mod scheduler {
    wasmtime::component::bindgen!({
        path: "../wit/plugin@0.3.0",
        world: "wasmray:plugin/scheduler@0.3.0",
        exports: { default: async },
        additional_derives: [PartialEq],
        with: {
            "wasmray:plugin/types": super::reconciler::wasmray::plugin::types,
            "wasmray:plugin/logging": super::reconciler::wasmray::plugin::logging,
        },
    });
}

pub mod autoscaler {
    wasmtime::component::bindgen!({
        path: "../wit/plugin@0.3.0",
        world: "wasmray:plugin/autoscaler@0.3.0",
        exports: { default: async },
        additional_derives: [PartialEq],
        with: {
            "wasmray:plugin/types": super::reconciler::wasmray::plugin::types,
            "wasmray:plugin/logging": super::reconciler::wasmray::plugin::logging,
        },
    });
}

/// Contract 0.2.0: reconcilers only (no host controller ever called 0.2's scheduler or
/// autoscaler worlds, so no such plugin can depend on being served).
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit/plugin@0.2.0",
        world: "wasmray:plugin/reconciler@0.2.0",
        exports: { default: async },
        additional_derives: [PartialEq],
        // `types` did not change; `logging` is generated anew because the linker
        // registers it under 0.2.0's name.
        with: {
            "wasmray:plugin/types": super::reconciler::wasmray::plugin::types,
        },
    });
}

pub use reconciler::wasmray::plugin::{logging, types};

use reconciler::exports::wasmray::plugin::reconcile::{
    DashboardReachability, RayObservations, ReconcileOutput,
};

impl Default for RayObservations {
    /// Nothing observed: the dashboard not checked, no answers, no results.
    fn default() -> Self {
        RayObservations {
            dashboard: DashboardReachability::NotChecked,
            jobs: Vec::new(),
            serve_status: None,
            action_results: Vec::new(),
            extensions: Vec::new(),
        }
    }
}

impl Default for ReconcileOutput {
    /// Nothing to do: no writes, no Ray actions or queries, no requeue.
    fn default() -> Self {
        ReconcileOutput {
            create_pods: Vec::new(),
            apply: Vec::new(),
            delete: Vec::new(),
            status: None,
            events: Vec::new(),
            ray_actions: Vec::new(),
            ray_queries: Vec::new(),
            requeue_after_ms: None,
            finalizers: Vec::new(),
            generated_secrets: Vec::new(),
            prune: Vec::new(),
        }
    }
}
