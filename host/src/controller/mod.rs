//! The host controller. For each parent kind (RayCluster, RayJob and RayService, on one
//! driver) it watches the parents and, through label-selected watches, the children
//! they control; gathers what a decision needs; calls the reconciler plugin bound to the
//! kind (or the one an object picks with the `wasmray.io/plugin` annotation); and carries
//! out the answer: creates, applies and deletes children, writes status only when it
//! changed, records events, carries out the Ray actions the plugin asked for and requeues.
//! A reconcile that changes nothing writes nothing.
//!
//! Modules: [`child_index`] (child caches indexed by parent), [`input_records`] (objects to
//! contract records), [`expectations`] (a plugin sees its own writes), [`apply`] (writes),
//! [`plan`] (an answer checked and parsed once into writes), [`write_policy`] (what an
//! answer may write), [`status`] (status diff and
//! the host's conditions), [`parent`] (the driver),
//! [`ray_io`] (the Ray queries and actions plugins ask for), [`raycluster`], [`rayjob`] and
//! [`rayservice`] (what is specific to each kind).

pub mod apply;
pub mod autoscaler;
pub mod child_index;
pub mod events;
pub mod expectations;
pub mod input_records;
pub mod parent;
pub mod parent_state;
pub mod plan;
pub mod plugin_host;
pub mod ray_io;
pub mod raycluster;
pub mod rayjob;
pub mod rayservice;
pub mod scheduling;
pub mod secrets;
pub mod status;
pub mod write_policy;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The contract's types as the host's bindings generate them.
pub mod wit {
    pub use crate::runtime::bindings::reconciler::exports::wasmray::plugin::reconcile::{
        ActionResult, ChildKind, DashboardReachability, Deletion, FailedWrite, Finalizer,
        FinalizerIntent, GeneratedSecret, JobObservation, RayAction, RayActionKind, RayJobInfo,
        RayObservations, RayQuery, ReconcileInput, ReconcileOutput, SubmitJob, WriteOperation,
    };
    pub use crate::runtime::bindings::scheduler::exports::wasmray::plugin::schedule::{
        Admission, PodSetPatch, ScheduleInput, ScheduleOutput,
    };
    pub use crate::runtime::bindings::types::{
        DesiredObject, Event, EventType, HostFacts, ObservedObject, ObservedPods, ObservedService,
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
    /// Child kinds beyond its parent kind's and raised answer limits, by plugin name
    /// (the platform team's; see `write_policy.rs`).
    pub allowances: write_policy::Allowances,
    /// Honour the `wasmray.io/dashboard-address` RayCluster annotation (tests and demos
    /// only: with it, whoever may annotate a RayCluster picks the address the operator calls).
    pub allow_dashboard_address_override: bool,
    /// How the operator reaches each cluster's head: its Service's DNS name or its pod IP.
    pub ray_head_address: crate::ray::HeadAddress,
    /// Deadline of each Ray dashboard request.
    pub ray_timeout: Duration,
    /// The soonest a plugin's answer may ask to be called again; sooner is raised to it.
    pub requeue_floor: Duration,
    /// Write rounds (reconciles that write) per second one object may make, sustained.
    pub object_write_rounds_per_second: u32,
    /// Write rounds one object may make in a burst above that rate.
    pub object_write_burst: u32,
    /// How the host autoscales RayClusters with autoscaling on.
    pub autoscaler: autoscaler::AutoscalerConfig,
    /// The scheduler plugin RayClusters are bound to (KubeRay's `batchScheduler`); an
    /// object's `wasmray.io/scheduler` annotation overrides it.
    pub batch_scheduler: Option<String>,
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
            bindings: BTreeMap::from([
                (
                    "RayCluster".to_owned(),
                    raycluster::BUILTIN_PLUGIN.to_owned(),
                ),
                ("RayJob".to_owned(), rayjob::BUILTIN_PLUGIN.to_owned()),
                (
                    "RayService".to_owned(),
                    rayservice::BUILTIN_PLUGIN.to_owned(),
                ),
            ]),
            plugin_config: BTreeMap::new(),
            allowances: write_policy::Allowances::new(),
            allow_dashboard_address_override: false,
            ray_head_address: crate::ray::HeadAddress::Service,
            ray_timeout: crate::ray::DashboardClient::DEFAULT_TIMEOUT,
            requeue_floor: Duration::from_secs(1),
            object_write_rounds_per_second: 2,
            object_write_burst: 10,
            autoscaler: autoscaler::AutoscalerConfig::default(),
            batch_scheduler: None,
        }
    }
}

impl ControllerConfig {
    /// The feature gates as the CRD validation reads them (KubeRay's defaults for gates
    /// not given).
    pub fn crd_feature_gates(&self) -> wasmray_crds::FeatureGates {
        let gate =
            |name: &str, default: bool| self.feature_gates.get(name).copied().unwrap_or(default);
        let defaults = wasmray_crds::FeatureGates::default();
        wasmray_crds::FeatureGates {
            ray_cluster_status_conditions: gate(
                "RayClusterStatusConditions",
                defaults.ray_cluster_status_conditions,
            ),
            ray_job_deletion_policy: gate("RayJobDeletionPolicy", defaults.ray_job_deletion_policy),
            ray_multi_host_indexing: gate("RayMultiHostIndexing", defaults.ray_multi_host_indexing),
            ray_service_incremental_upgrade: gate(
                "RayServiceIncrementalUpgrade",
                defaults.ray_service_incremental_upgrade,
            ),
        }
    }
}

/// The plugin settings found in an environment (`lookup` is e.g. `std::env::var`): KubeRay's
/// operator environment variables of every kind ([`raycluster::SETTINGS_FROM_ENV`],
/// [`rayjob::SETTINGS_FROM_ENV`]), so a KubeRay deployment's env keeps its meaning.
pub fn settings_from_env(lookup: impl Fn(&str) -> Option<String>) -> BTreeMap<String, String> {
    raycluster::SETTINGS_FROM_ENV
        .iter()
        .chain(rayjob::SETTINGS_FROM_ENV)
        .chain(rayservice::SETTINGS_FROM_ENV)
        .filter_map(|(env, key)| lookup(env).map(|value| ((*key).to_owned(), value)))
        .collect()
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

/// Where the controllers report: counters for tests and benchmarks, Prometheus metrics,
/// cache readiness for `/readyz`.
#[derive(Clone, Debug, Default)]
pub struct Telemetry {
    pub stats: Arc<Stats>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub readiness: Arc<crate::health::Readiness>,
}

/// The clients the controllers write with. Events have a client of their own, and so their
/// own rate limiter, as client-go's event broadcaster has its own clientset in KubeRay.
#[derive(Clone)]
pub struct Clients {
    /// Watches, children, status, Secrets and the Lease.
    pub api: kube::Client,
    /// Events only.
    pub events: kube::Client,
}

impl From<kube::Client> for Clients {
    /// One client for everything (one rate limiter).
    fn from(client: kube::Client) -> Self {
        Clients {
            api: client.clone(),
            events: client,
        }
    }
}

/// Runs the controllers of every parent kind (RayCluster, RayJob, RayService) for the configured
/// namespaces until `shutdown` turns true.
pub async fn run(
    client: kube::Client,
    plugins: plugin_host::PluginHost,
    config: ControllerConfig,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    run_with_stats(client, plugins, config, shutdown, Arc::default()).await;
}

/// [`run`], counting into `stats`.
pub async fn run_with_stats(
    client: kube::Client,
    plugins: plugin_host::PluginHost,
    config: ControllerConfig,
    shutdown: tokio::sync::watch::Receiver<bool>,
    stats: Arc<Stats>,
) {
    let telemetry = Telemetry {
        stats,
        ..Telemetry::default()
    };
    run_with_telemetry(client.into(), plugins, config, shutdown, telemetry).await;
}

/// [`run`], reporting into `telemetry`.
pub async fn run_with_telemetry(
    clients: Clients,
    plugins: plugin_host::PluginHost,
    config: ControllerConfig,
    shutdown: tokio::sync::watch::Receiver<bool>,
    telemetry: Telemetry,
) {
    let namespaces: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let shared = parent::Shared::new(clients, plugins, config, telemetry);
    let stopped = || {
        let mut stop = shutdown.clone();
        async move {
            // A dropped sender also means stop.
            let _ = stop.wait_for(|stop| *stop).await;
        }
    };
    // On shutdown the writes in flight stop at once; the controllers then finish the
    // reconciles in flight (which write nothing more) and return.
    let stopping = shared.stopping.clone();
    let stop_writes = stopped();
    let stop_writes = tokio::spawn(async move {
        stop_writes.await;
        stopping.cancel();
    });
    let mut controllers: Vec<futures::future::BoxFuture<'static, ()>> = Vec::new();
    for namespace in namespaces {
        controllers.push(Box::pin(run_controller::<wasmray_crds::RayCluster>(
            shared.clone(),
            namespace.clone(),
            stopped(),
        )));
        controllers.push(Box::pin(run_controller::<wasmray_crds::RayJob>(
            shared.clone(),
            namespace.clone(),
            stopped(),
        )));
        controllers.push(Box::pin(run_controller::<wasmray_crds::RayService>(
            shared.clone(),
            namespace,
            stopped(),
        )));
    }
    futures::future::join_all(controllers).await;
    stop_writes.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kuberay_env_becomes_settings() {
        let settings = settings_from_env(|name| match name {
            "ENABLE_DETERMINISTIC_HEAD_POD_NAME" => Some("true".into()),
            "CLUSTER_DOMAIN" => Some("example.org".into()),
            "DELETE_RAYJOB_CR_AFTER_JOB_FINISHES" => Some("true".into()),
            _ => None,
        });
        assert_eq!(settings.len(), 3);
        assert_eq!(settings["deterministic-head-pod-name"], "true");
        assert_eq!(settings["cluster-domain"], "example.org");
        assert_eq!(settings["delete-rayjob-cr-after-job-finishes"], "true");
    }
}
