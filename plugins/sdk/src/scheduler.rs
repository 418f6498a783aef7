//! The scheduler role: typed input and the export macro.

use serde::de::DeserializeOwned;

pub use crate::bindings::scheduler::exports::wasmray::plugin::schedule::{
    Admission, PodSetPatch, ScheduleInput, ScheduleOutput,
};
use crate::{HostFacts, ObservedPods, PluginError, PodSet, Timestamp, from_json};

/// The input of a schedule call with the parent parsed into `P`.
#[derive(Debug, Clone)]
pub struct Request<P> {
    /// "RayCluster", "RayJob" or "RayService".
    pub kind: String,
    /// The parent object.
    pub parent: P,
    /// The pods the reconciler wants to create.
    pub pod_sets: Vec<PodSet>,
    /// Pods that exist already.
    pub existing_pods: ObservedPods,
    /// The current time.
    pub now: Timestamp,
    /// The plugin's configuration (opaque text).
    pub config: String,
    /// Facts about the host.
    pub host: HostFacts,
}

impl Default for ScheduleOutput {
    /// Admit, change nothing.
    fn default() -> Self {
        ScheduleOutput {
            patches: Vec::new(),
            extra_objects: Vec::new(),
            admission: Admission::Admit,
            events: Vec::new(),
        }
    }
}

/// A scheduler plugin.
pub trait Scheduler {
    /// The parent type the plugin reads.
    type Parent: DeserializeOwned;

    /// Checks the plugin's configuration when the host loads the plugin; a refusal keeps
    /// the plugin from being installed. By default every configuration is accepted.
    fn validate_config(_config: &str) -> Result<(), PluginError> {
        Ok(())
    }

    /// Decides. Must be deterministic.
    fn schedule(request: Request<Self::Parent>) -> Result<ScheduleOutput, PluginError>;
}

/// Runs a plugin on a raw input: what the exported function does.
pub fn run<S: Scheduler>(input: ScheduleInput) -> Result<ScheduleOutput, PluginError> {
    let parent = from_json(&format!("{} parent", input.kind), &input.parent)?;
    S::schedule(Request {
        kind: input.kind,
        parent,
        pod_sets: input.pod_sets,
        existing_pods: input.existing_pods,
        now: input.now,
        config: input.config,
        host: input.host,
    })
}

/// Exports a [`Scheduler`] as the component's `schedule` interface.
#[macro_export]
macro_rules! export_scheduler {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub struct __WasmraySchedulerExport;

        impl $crate::bindings::scheduler::exports::wasmray::plugin::schedule::Guest
            for __WasmraySchedulerExport
        {
            fn validate_config(
                config: ::std::string::String,
            ) -> ::std::result::Result<(), $crate::PluginError> {
                <$plugin as $crate::scheduler::Scheduler>::validate_config(&config)
            }

            fn schedule(
                input: $crate::scheduler::ScheduleInput,
            ) -> ::std::result::Result<$crate::scheduler::ScheduleOutput, $crate::PluginError>
            {
                $crate::scheduler::run::<$plugin>(input)
            }
        }

        // Only a component exports the world: native builds (unit tests) must not export
        // symbols named like `wasmray:plugin/...`, which native linkers reject.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::scheduler::__export_scheduler_world!(
            __WasmraySchedulerExport with_types_in $crate::bindings::scheduler
        );
    };
}
