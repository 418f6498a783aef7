//! The host controller. For each parent kind (RayCluster now; RayJob and RayService reuse
//! the same driver) it watches the parents and, through label-selected watches, the children
//! they control; gathers what a decision needs; calls the reconciler plugin bound to the
//! kind (or the one an object picks with the `wasmray.io/plugin` annotation); and carries
//! out the answer: creates, applies and deletes children, writes status only when it
//! changed, records events and requeues. A reconcile that changes nothing writes nothing.
//!
//! Modules: [`cache`] (child caches indexed by parent), [`observe`] (objects to contract
//! records), [`expectations`] (a plugin sees its own writes), [`apply`] (writes),
//! [`status`] (status diff and the `PluginFailure` condition), [`parent`] (the driver),
//! [`raycluster`] (what is specific to RayCluster).

pub mod apply;
pub mod cache;
pub mod expectations;
pub mod observe;
pub mod parent;
pub mod plugin;
pub mod raycluster;
pub mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The contract's types as the host's bindings generate them.
pub mod wit {
    pub use crate::runtime::bindings::reconciler::exports::wasmray::plugin::reconcile::{
        DashboardReachability, Deletion, RayObservations, ReconcileInput, ReconcileOutput,
    };
    pub use crate::runtime::bindings::types::{
        ContainerState, ContainerStatus, ContainerTerminated, ContainerWaiting, DesiredObject,
        Event, EventType, HostFacts, ObservedObject, ObservedPod, ObservedService, PodCondition,
        PodReplica, PodSet, ServicePort, Timestamp, WriteMode,
    };
}

pub use parent::{ParentKind, run_controller};

/// Annotation with which one object picks another registered plugin than the kind's.
pub const PLUGIN_ANNOTATION: &str = "wasmray.io/plugin";
/// Field manager of the host's writes (server-side apply, creates, status).
pub const DEFAULT_FIELD_MANAGER: &str = "wasmray";
/// The host's user agent, so audit logs can tell its requests apart.
pub const USER_AGENT: &str = concat!("wasmray/", env!("CARGO_PKG_VERSION"));

/// How the controllers run.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Reconciles running at once (over all namespaces and kinds).
    pub concurrency: u16,
    /// Wait for related events to settle before reconciling (0 = none).
    pub debounce: Duration,
    /// How long to wait for the host's own writes to show in the caches.
    pub expectation_timeout: Duration,
    /// First retry delay after a failure; doubles per consecutive failure.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    pub field_manager: String,
    /// Feature gates passed to plugins, as KubeRay's `--feature-gates`.
    pub feature_gates: BTreeMap<String, bool>,
    /// Operator settings passed to plugins (keys as the plugins document them).
    pub settings: BTreeMap<String, String>,
    /// Plugin bound to each parent kind, e.g. "RayCluster" -> "raycluster".
    pub bindings: BTreeMap<String, String>,
    /// Configuration text given to each plugin, by plugin name.
    pub plugin_config: BTreeMap<String, String>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            namespaces: Vec::new(),
            concurrency: 1,
            debounce: Duration::ZERO,
            expectation_timeout: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            field_manager: DEFAULT_FIELD_MANAGER.to_owned(),
            feature_gates: BTreeMap::new(),
            settings: BTreeMap::new(),
            bindings: BTreeMap::from([(
                "RayCluster".to_owned(),
                raycluster::BUILTIN_PLUGIN.to_owned(),
            )]),
            plugin_config: BTreeMap::new(),
        }
    }
}

/// Adds the host's user agent to a client configuration.
pub fn with_user_agent(mut config: kube::Config, agent: &str) -> kube::Config {
    if let Ok(value) = http::HeaderValue::from_str(agent) {
        config.headers.push((http::header::USER_AGENT, value));
    }
    config
}

/// Counters of what the controllers did (for tests, benchmarks and later metrics).
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) reconciles: AtomicU64,
    pub(crate) plugin_calls: AtomicU64,
    pub(crate) writes: AtomicU64,
}

impl Stats {
    /// Reconciles started (including those that waited for expectations).
    pub fn reconciles(&self) -> u64 {
        self.reconciles.load(Ordering::Relaxed)
    }

    /// Plugin calls made.
    pub fn plugin_calls(&self) -> u64 {
        self.plugin_calls.load(Ordering::Relaxed)
    }

    /// API writes made for children and status (events not counted).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}

/// Runs the controllers of every parent kind (RayCluster for now) for the configured
/// namespaces until `shutdown` turns true.
pub async fn run(
    client: kube::Client,
    plugins: plugin::PluginHost,
    config: ControllerConfig,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    run_with_stats(client, plugins, config, shutdown, Arc::default()).await;
}

/// [`run`], counting into `stats`.
pub async fn run_with_stats(
    client: kube::Client,
    plugins: plugin::PluginHost,
    config: ControllerConfig,
    shutdown: tokio::sync::watch::Receiver<bool>,
    stats: Arc<Stats>,
) {
    let namespaces: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let shared = parent::Shared::new(client, plugins, config, stats);
    let controllers = namespaces.into_iter().map(|namespace| {
        let mut stop = shutdown.clone();
        let stopped = async move {
            // A dropped sender also means stop.
            let _ = stop.wait_for(|stop| *stop).await;
        };
        run_controller::<wasmray_crds::RayCluster>(shared.clone(), namespace, stopped)
    });
    futures::future::join_all(controllers).await;
}
