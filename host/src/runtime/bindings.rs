//! Host bindings of the `wasmray:plugin@0.2.0` worlds, generated from `wit/`.
//!
//! The shared interfaces (`types`, `logging`) are generated once with the reconciler world
//! and reused by the others, so a type means one Rust type on the host.

#![allow(missing_docs, clippy::all)]

pub mod reconciler {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "wasmray:plugin/reconciler@0.2.0",
        exports: { default: async },
        additional_derives: [PartialEq],
    });
}

pub mod scheduler {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "wasmray:plugin/scheduler@0.2.0",
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
        path: "../wit",
        world: "wasmray:plugin/autoscaler@0.2.0",
        exports: { default: async },
        additional_derives: [PartialEq],
        with: {
            "wasmray:plugin/types": super::reconciler::wasmray::plugin::types,
            "wasmray:plugin/logging": super::reconciler::wasmray::plugin::logging,
        },
    });
}

pub use reconciler::wasmray::plugin::{logging, types};

use reconciler::exports::wasmray::plugin::reconcile::{DashboardReachability, RayObservations};

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
