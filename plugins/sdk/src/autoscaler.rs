//! The autoscaler role: typed input and the export macro.

use serde::de::DeserializeOwned;

pub use crate::bindings::autoscaler::exports::wasmray::plugin::autoscale::{
    AutoscaleInput, AutoscaleOutput, GangRequest, GroupDecision, LabelConstraint, Node, NodeStatus,
    PlacementStrategy, RequestCount, ResourceRequest, SelectorOperator, WorkerGroup,
};
use crate::{HostFacts, PluginError, Timestamp, from_json};

/// Resources per name, e.g. `[("CPU", 4.0), ("GPU", 1.0)]`.
pub type Resources = Vec<(String, f64)>;

/// The input of an autoscale call with the RayCluster parsed into `C`.
#[derive(Debug, Clone)]
pub struct Request<C> {
    /// The RayCluster.
    pub cluster: C,
    /// Its worker groups.
    pub groups: Vec<WorkerGroup>,
    /// The head node, once its pod exists.
    pub head: Option<Node>,
    /// Its worker nodes, one per pod.
    pub workers: Vec<Node>,
    /// Tasks and actors Ray cannot place now, by shape.
    pub pending_requests: Vec<RequestCount>,
    /// Placement groups Ray cannot place now.
    pub pending_gangs: Vec<GangRequest>,
    /// What `request_resources` asked for: the cluster must be able to hold all of it.
    pub constraints: Vec<RequestCount>,
    /// "Default", "Conservative" or "Aggressive".
    pub upscaling_mode: String,
    /// `autoscalerOptions.idleTimeoutSeconds`.
    pub idle_timeout_seconds: u32,
    /// The current time.
    pub now: Timestamp,
    /// The plugin's configuration (opaque text).
    pub config: String,
    /// Facts about the host.
    pub host: HostFacts,
}

/// An autoscaler plugin.
pub trait Autoscaler {
    /// The RayCluster type the plugin reads.
    type Cluster: DeserializeOwned;

    /// Checks the plugin's configuration when the host loads the plugin; a refusal keeps
    /// the plugin from being installed. By default every configuration is accepted.
    fn validate_config(_config: &str) -> Result<(), PluginError> {
        Ok(())
    }

    /// Decides. Must be deterministic.
    fn autoscale(request: Request<Self::Cluster>) -> Result<AutoscaleOutput, PluginError>;
}

/// Runs a plugin on a raw input: what the exported function does.
pub fn run<A: Autoscaler>(input: AutoscaleInput) -> Result<AutoscaleOutput, PluginError> {
    let cluster = from_json("RayCluster", &input.cluster)?;
    A::autoscale(Request {
        cluster,
        groups: input.groups,
        head: input.head,
        workers: input.workers,
        pending_requests: input.pending_requests,
        pending_gangs: input.pending_gangs,
        constraints: input.constraints,
        upscaling_mode: input.upscaling_mode,
        idle_timeout_seconds: input.idle_timeout_seconds,
        now: input.now,
        config: input.config,
        host: input.host,
    })
}

/// Exports an [`Autoscaler`] as the component's `autoscale` interface.
#[macro_export]
macro_rules! export_autoscaler {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub struct __WasmrayAutoscalerExport;

        impl $crate::bindings::autoscaler::exports::wasmray::plugin::autoscale::Guest
            for __WasmrayAutoscalerExport
        {
            fn validate_config(
                config: ::std::string::String,
            ) -> ::std::result::Result<(), $crate::PluginError> {
                <$plugin as $crate::autoscaler::Autoscaler>::validate_config(&config)
            }

            fn autoscale(
                input: $crate::autoscaler::AutoscaleInput,
            ) -> ::std::result::Result<$crate::autoscaler::AutoscaleOutput, $crate::PluginError>
            {
                $crate::autoscaler::run::<$plugin>(input)
            }
        }

        // Only a component exports the world: native builds (unit tests) must not export
        // symbols named like `wasmray:plugin/...`, which native linkers reject.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::autoscaler::__export_autoscaler_world!(
            __WasmrayAutoscalerExport with_types_in $crate::bindings::autoscaler
        );
    };
}
