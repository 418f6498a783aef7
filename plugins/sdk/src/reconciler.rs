//! The reconciler role: typed input, a decision builder, and the export macro.

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::bindings::reconciler::exports::wasmray::plugin::reconcile::{
    ActionResult, ChildKind, DashboardReachability, Deletion, FailedWrite, Finalizer,
    FinalizerIntent, GeneratedSecret, JobObservation, RayAction, RayActionKind, RayJobInfo,
    RayObservations, RayQuery, ReconcileInput, ReconcileOutput, SubmitJob, WriteOperation,
};
use crate::{
    DesiredObject, Duration, Event, HostFacts, ObservedObject, ObservedPods, ObservedService,
    PluginError, Pod, PodReplica, PodSet, Timestamp, WriteMode, from_json, to_json,
};

/// The input of a reconcile call with the parent parsed into `P` (for example
/// `wasmray_crds::RayCluster`, or any serde type that reads the fields you need).
#[derive(Debug, Clone)]
pub struct Request<P> {
    /// "RayCluster", "RayJob" or "RayService".
    pub kind: String,
    /// The parent object.
    pub parent: P,
    /// Pods the parent owns, as the host's table; `pods.views()` reads them.
    pub pods: ObservedPods,
    /// Services the parent owns.
    pub services: Vec<ObservedService>,
    /// Owned children of other kinds.
    pub children: Vec<ObservedObject>,
    /// Related objects the parent does not own.
    pub related: Vec<ObservedObject>,
    /// What the host learned from Ray.
    pub ray: RayObservations,
    /// The writes of the previous call that the API server refused.
    pub failed_writes: Vec<FailedWrite>,
    /// The current time.
    pub now: Timestamp,
    /// The plugin's configuration (opaque text).
    pub config: String,
    /// Facts about the host.
    pub host: HostFacts,
}

impl<P: DeserializeOwned> Request<P> {
    /// Parses the parent of a raw input.
    pub fn from_input(input: ReconcileInput) -> Result<Self, PluginError> {
        let parent = from_json(&format!("{} {}", input.kind, "parent"), &input.parent)?;
        Ok(Request {
            kind: input.kind,
            parent,
            pods: input.pods,
            services: input.services,
            children: input.children,
            related: input.related,
            ray: input.ray,
            failed_writes: input.failed_writes,
            now: input.now,
            config: input.config,
            host: input.host,
        })
    }
}

/// A reconcile decision under construction. Every method adds to it; `Decision::default()`
/// is "nothing to do".
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The raw output; the methods below fill it.
    pub output: ReconcileOutput,
}

impl Default for Decision {
    fn default() -> Self {
        let output = ReconcileOutput {
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
        };
        Decision { output }
    }
}

impl Default for RayObservations {
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

impl Decision {
    /// Creates one pod per replica from `template` (a `k8s_openapi` Pod, or any serde
    /// value of that shape). The template crosses the boundary once.
    pub fn create_pods<T: Serialize>(
        &mut self,
        group: &str,
        template: &T,
        replicas: Vec<PodReplica>,
    ) -> Result<(), PluginError> {
        if replicas.is_empty() {
            return Ok(());
        }
        let template = to_json(&format!("pod template of {group}"), template)?;
        self.output.create_pods.push(PodSet {
            group: group.to_owned(),
            template,
            replicas,
        });
        Ok(())
    }

    /// Creates or applies a child object (a `k8s_openapi` resource or any serde value
    /// with `apiVersion`, `kind` and `metadata.name`).
    pub fn apply<T: Serialize>(&mut self, object: &T, mode: WriteMode) -> Result<(), PluginError> {
        let object = to_json("desired object", object)?;
        self.output.apply.push(DesiredObject { object, mode });
        Ok(())
    }

    /// Deletes a child, with its uid as a precondition.
    pub fn delete(&mut self, api_version: &str, kind: &str, name: &str, uid: &str, reason: &str) {
        self.output.delete.push(Deletion {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            name: name.to_owned(),
            uid: uid.to_owned(),
            reason: reason.to_owned(),
        });
    }

    /// Deletes an owned pod.
    pub fn delete_pod(&mut self, pod: &Pod<'_>, reason: &str) {
        self.delete("v1", "Pod", pod.name, pod.uid, reason);
    }

    /// Sets the parent's full new status; the host writes it only if it changed.
    pub fn set_status<S: Serialize>(&mut self, status: &S) -> Result<(), PluginError> {
        self.output.status = Some(to_json("status", status)?);
        Ok(())
    }

    /// Records an event on the parent.
    pub fn event(&mut self, event: Event) {
        self.output.events.push(event);
    }

    /// Asks the host to carry out an action on a Ray cluster.
    pub fn ray_action(&mut self, id: &str, cluster: &str, action: RayActionKind) {
        self.output.ray_actions.push(RayAction {
            id: id.to_owned(),
            cluster: cluster.to_owned(),
            action,
        });
    }

    /// Asks the host to observe something in Ray before the next call.
    pub fn ray_query(&mut self, query: RayQuery) {
        self.output.ray_queries.push(query);
    }

    /// Says what to do with a finalizer of the parent this plugin owns: `Add` it (before
    /// the other writes), `Keep` it (while deleting: cleanup not done yet), or `Release`
    /// it (after the other writes succeeded; while deleting: cleanup done). A later call
    /// for the same name replaces the earlier one.
    pub fn finalizer(&mut self, name: &str, intent: FinalizerIntent) {
        self.output.finalizers.retain(|held| held.name != name);
        self.output.finalizers.push(Finalizer {
            name: name.to_owned(),
            intent,
        });
    }

    /// Asks for Secret `name` with `key` holding the base64 text of `random_bytes`
    /// random bytes, owned by the parent and created once, before the other writes.
    pub fn generated_secret(
        &mut self,
        name: &str,
        key: &str,
        random_bytes: u32,
        labels: Vec<(String, String)>,
    ) {
        self.output.generated_secrets.push(GeneratedSecret {
            name: name.to_owned(),
            key: key.to_owned(),
            random_bytes,
            labels,
        });
    }

    /// Declares that this decision's `apply` list names every wanted child of this kind:
    /// the host deletes the parent's other children of the kind.
    pub fn prune(&mut self, api_version: &str, kind: &str) {
        self.output.prune.push(ChildKind {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        });
    }

    /// Asks to be called again after `after` at the latest (the earliest request wins).
    pub fn requeue_after(&mut self, after: Duration) {
        let millis = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        self.output.requeue_after_ms = Some(
            self.output
                .requeue_after_ms
                .map_or(millis, |current| current.min(millis)),
        );
    }
}

/// A reconciler plugin.
pub trait Reconciler {
    /// The parent type the plugin reads.
    type Parent: DeserializeOwned;

    /// The kinds this plugin serves, e.g. `&["RayCluster"]`.
    const KINDS: &'static [&'static str];

    /// Checks the plugin's configuration when the host loads the plugin; a refusal keeps
    /// the plugin from being installed. By default every configuration is accepted.
    fn validate_config(_config: &str) -> Result<(), PluginError> {
        Ok(())
    }

    /// Decides. Must be deterministic: the same request gives the same decision.
    fn reconcile(request: Request<Self::Parent>) -> Result<Decision, PluginError>;
}

/// Runs a plugin on a raw input: what the exported function does. Also handy in unit
/// tests that start from a recorded raw input.
pub fn run<R: Reconciler>(input: ReconcileInput) -> Result<ReconcileOutput, PluginError> {
    if !R::KINDS.contains(&input.kind.as_str()) {
        return Err(PluginError::new(
            "UnsupportedKind",
            format!("this plugin serves {:?}, not {}", R::KINDS, input.kind),
        ));
    }
    let request = Request::from_input(input)?;
    R::reconcile(request).map(|decision| decision.output)
}

/// The kinds of a plugin, as owned strings for the export.
pub fn kinds<R: Reconciler>() -> Vec<String> {
    R::KINDS.iter().map(|kind| (*kind).to_owned()).collect()
}

/// Exports a [`Reconciler`] as the component's `reconcile` interface.
///
/// ```ignore
/// struct MyPlugin;
/// impl wasmray_plugin_sdk::reconciler::Reconciler for MyPlugin { /* ... */ }
/// wasmray_plugin_sdk::export_reconciler!(MyPlugin);
/// ```
#[macro_export]
macro_rules! export_reconciler {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub struct __WasmrayReconcilerExport;

        impl $crate::bindings::reconciler::exports::wasmray::plugin::reconcile::Guest
            for __WasmrayReconcilerExport
        {
            fn kinds() -> ::std::vec::Vec<::std::string::String> {
                $crate::reconciler::kinds::<$plugin>()
            }

            fn validate_config(
                config: ::std::string::String,
            ) -> ::std::result::Result<(), $crate::PluginError> {
                <$plugin as $crate::reconciler::Reconciler>::validate_config(&config)
            }

            fn reconcile(
                input: $crate::reconciler::ReconcileInput,
            ) -> ::std::result::Result<$crate::reconciler::ReconcileOutput, $crate::PluginError>
            {
                $crate::reconciler::run::<$plugin>(input)
            }
        }

        // Only a component exports the world: native builds (unit tests) must not export
        // symbols named like `wasmray:plugin/...`, which native linkers reject.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::reconciler::__export_reconciler_world!(
            __WasmrayReconcilerExport with_types_in $crate::bindings::reconciler
        );
    };
}
