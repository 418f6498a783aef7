//! Guest SDK for WasmRay plugins.
//!
//! A plugin is a small crate of type `cdylib` that implements one of the traits
//! [`reconciler::Reconciler`], [`scheduler::Scheduler`] or [`autoscaler::Autoscaler`]
//! and exports it with the matching macro ([`export_reconciler!`], [`export_scheduler!`],
//! [`export_autoscaler!`]). `cargo build --target wasm32-wasip2 --release` turns it into
//! a component for the WasmRay host. The crate enables the SDK feature of its role
//! (`reconciler`, `scheduler` or `autoscaler`): a component carries the WIT world of
//! exactly one role.
//!
//! The typed layer parses the JSON parts of the contract (the parent object, pod
//! templates, status) into Kubernetes types, reads the pod table through views
//! ([`Pod`]), and gives the other typed WIT records as they are.
//! Everything here also compiles for the host target, so plugin logic is unit-tested
//! with a plain `cargo test`; logging then goes to stderr.

// The generated bindings name this crate by path, which must resolve inside it too.
extern crate self as wasmray_plugin_sdk;

#[cfg(target_arch = "wasm32")]
mod arena;
pub mod bindings;
mod json;
pub mod log;
pub mod names;
// The component's `memcmp`; natively only its tests build.
#[cfg(any(target_arch = "wasm32", test))]
mod memcmp;
pub mod pods;
mod time;

#[cfg(feature = "autoscaler")]
pub mod autoscaler;
#[cfg(feature = "reconciler")]
pub mod reconciler;
#[cfg(feature = "scheduler")]
pub mod scheduler;

pub use bindings::types::{
    DesiredObject, Event, EventType, HostFacts, ObservedObject, ObservedPods, ObservedService,
    PluginError, PodReplica, PodSet, Timestamp, WriteMode,
};
pub use json::{from_json, to_json};
pub use k8s_openapi;
pub use pods::{
    Conditions, ContainerState, ContainerStatus, ContainerStatuses, ContainerTerminated,
    ContainerWaiting, Pairs, Pod, PodCondition, record,
};
pub use serde_json;
pub use time::{Duration, timestamp_from_rfc3339};
/// The `ray.io/v1` types (`crds::RayCluster`, `crds::RayJob`, ...), constants and validation.
pub use wasmray_crds as crds;

/// Every component built with the SDK allocates from a per-call arena (see `arena.rs`):
/// an instance serves one call, so freeing is mostly wasted work. The `system-allocator`
/// feature keeps Rust's default allocator instead.
#[cfg(all(target_arch = "wasm32", not(feature = "system-allocator")))]
#[global_allocator]
static ALLOCATOR: arena::CallArena = arena::CallArena::new();

/// Support for the export macros; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}

impl PluginError {
    /// An error with a reason and a message, retried with the host's backoff.
    pub fn new(reason: impl Into<String>, message: impl Into<String>) -> Self {
        PluginError {
            reason: reason.into(),
            message: message.into(),
            retry_after_ms: None,
        }
    }
}

impl Event {
    /// A Normal event.
    pub fn normal(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Event {
            event_type: EventType::Normal,
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// A Warning event.
    pub fn warning(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Event {
            event_type: EventType::Warning,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Looks up a key in a WIT string map (labels, annotations, settings).
pub fn lookup<'a>(map: &'a [(String, String)], key: &str) -> Option<&'a str> {
    map.iter()
        .find(|(candidate, _)| candidate == key)
        .map(|(_, value)| value.as_str())
}

impl HostFacts {
    /// Whether a feature gate is on (unknown gates are off).
    pub fn feature_gate(&self, name: &str) -> bool {
        self.feature_gates
            .iter()
            .any(|(gate, enabled)| gate == name && *enabled)
    }

    /// An operator setting, if the host gave it.
    pub fn setting(&self, key: &str) -> Option<&str> {
        lookup(&self.settings, key)
    }
}
