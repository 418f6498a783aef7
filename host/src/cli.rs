//! The `wasmray` command: flags, the configuration file, and the process around the
//! controllers (plugins, client, endpoints, leader election, signals).
//!
//! Settings come from three places; for each setting the first that gives it wins:
//! 1. a flag given on the command line;
//! 2. the `--config` file (KubeRay's `config.ray.io/v1alpha1` `Configuration` fields that
//!    apply, plus WasmRay's plugin settings);
//! 3. the default.
//!
//! KubeRay instead ignores every flag but `--feature-gates` and the log flags once
//! `--config` is given; with the same values in both places the result is the same, and
//! WasmRay's rule lets one flag override a shared file. Lists and maps (plugins, bindings,
//! plugin configuration, feature gates) merge per entry, the flag's entry winning.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use serde::Deserialize;

use crate::controller::{self, ControllerConfig, Telemetry, plugin_host::PluginHost};
use crate::health::{self, Endpoints, Role as ElectionRole};
use crate::leader::{self, Elector, LeaseTimings};
use crate::runtime::Role;

/// Parent kinds a reconciler can be bound to.
pub const PARENT_KINDS: [&str; 3] = ["RayCluster", "RayJob", "RayService"];
/// Plugin setting (host facts) naming the batch scheduler bound by `--batch-scheduler`.
pub const BATCH_SCHEDULER_SETTING: &str = "batch-scheduler";
/// KubeRay 1.7's feature gate for Kubernetes' workload-aware (gang) scheduling.
pub const KUBERNETES_WAS_GATE: &str = "KubernetesWAS";
/// The scheduler plugin that gate binds RayClusters to.
pub const KUBERNETES_WAS_SCHEDULER: &str = "kubernetes-was";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (KubeRay's `console`).
    #[value(alias = "console")]
    #[serde(alias = "console")]
    Text,
    Json,
}

/// The WasmRay operator: serves KubeRay's ray.io/v1 API with decisions made by WebAssembly
/// plugins. Runs against the in-cluster configuration or the current kubeconfig.
///
/// Flags given here win over the --config file, which wins over the defaults.
#[derive(Debug, Default, Parser)]
#[command(name = "wasmray", version, about)]
pub struct Flags {
    /// YAML file with KubeRay's Configuration fields that apply and WasmRay's plugin
    /// settings (see deploy/README.md).
    #[arg(long)]
    pub config: Option<PathBuf>,

    /// Address of /metrics (and the probes): `:8080`, `127.0.0.1:8080`, or `0` to disable.
    /// Default :8080.
    #[arg(long)]
    pub metrics_addr: Option<String>,

    /// Address of /healthz and /readyz (and /metrics), or `0` to disable. Default :8082.
    #[arg(long)]
    pub health_probe_bind_address: Option<String>,

    /// Run the controllers only while holding the leader Lease. Default true.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub enable_leader_election: Option<bool>,

    /// Namespace of the leader Lease. Default: the pod's namespace (POD_NAMESPACE or the
    /// in-cluster namespace), else the kubeconfig's.
    #[arg(long)]
    pub leader_election_namespace: Option<String>,

    /// Name of the leader Lease. Default wasmray-operator-leader (KubeRay uses
    /// ray-operator-leader; a different name lets both run during a migration).
    #[arg(long)]
    pub leader_election_id: Option<String>,

    /// How long a standby waits for a silent leader before taking over. Default 15s.
    #[arg(long, value_parser = parse_duration)]
    pub leader_election_lease_duration: Option<Duration>,

    /// How long the leader retries renewing before it gives up the lead. Default 10s.
    #[arg(long, value_parser = parse_duration)]
    pub leader_election_renew_deadline: Option<Duration>,

    /// Time between lease attempts. Default 2s.
    #[arg(long, value_parser = parse_duration)]
    pub leader_election_retry_period: Option<Duration>,

    /// Namespaces to watch (repeatable or comma-separated); all namespaces when not given.
    #[arg(
        long = "watch-namespace",
        value_delimiter = ',',
        env = "WATCH_NAMESPACE"
    )]
    pub watch_namespace: Vec<String>,

    /// Reconciles running at once. Default 1.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub reconcile_concurrency: Option<u16>,

    /// Feature gates as `Name=true|false,...` (KubeRay's gates, e.g.
    /// RayClusterStatusConditions, RayMultiHostIndexing).
    #[arg(long, value_delimiter = ',', value_parser = parse_feature_gate)]
    pub feature_gates: Vec<(String, bool)>,

    /// Client-side limit of API requests per second (0 or less: none). Default 100.
    #[arg(long)]
    pub qps: Option<f32>,

    /// Requests allowed at once above the --qps rate. Default 200.
    #[arg(long)]
    pub burst: Option<u32>,

    /// Log output format (`console` is accepted for text). Default text.
    #[arg(long, alias = "log-stdout-encoder", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Name of the scheduler plugin for gang scheduling (KubeRay: volcano, yunikorn, ...).
    /// A scheduler plugin of that name must be registered (built in or --plugin).
    #[arg(long)]
    pub batch_scheduler: Option<String>,

    /// Load a plugin component file under a name: `NAME=PATH` (repeatable). A name of a
    /// built-in plugin replaces it.
    #[arg(long = "plugin", value_parser = parse_pair)]
    pub plugins: Vec<(String, String)>,

    /// Bind a parent kind to a reconciler plugin: `KIND=NAME` (repeatable), e.g.
    /// RayCluster=my-reconciler. Default RayCluster=raycluster.
    #[arg(long = "plugin-binding", value_parser = parse_pair)]
    pub plugin_bindings: Vec<(String, String)>,

    /// Configuration text for a plugin, read from a file: `NAME=PATH` (repeatable).
    #[arg(long = "plugin-config", value_parser = parse_pair)]
    pub plugin_configs: Vec<(String, String)>,

    /// Let a plugin write a child kind beyond its parent kind's: `NAME=APIVERSION/KIND`
    /// (repeatable), e.g. my-reconciler=v1/ConfigMap. The operator's RBAC must allow it too.
    #[arg(long = "plugin-allow-kind", value_parser = parse_pair)]
    pub plugin_allow_kinds: Vec<(String, String)>,

    /// Raise (or lower) one answer limit of a plugin: `NAME=LIMIT=VALUE` (repeatable), e.g.
    /// my-reconciler=pods-per-answer=5000. Limits: pods-per-answer (default 1000),
    /// objects-per-answer (100), events-per-answer (100), status-bytes (262144),
    /// event-message-bytes (1024).
    #[arg(long = "plugin-limit", value_parser = parse_pair)]
    pub plugin_limits: Vec<(String, String)>,

    /// Reload a --plugin file when it changes, swapping the plugin atomically.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub watch_plugin_files: Option<bool>,

    /// Directory for compiled plugin code, so restarts skip compilation.
    #[arg(long, env = "WASMRAY_PLUGIN_CACHE_DIR")]
    pub plugin_cache_dir: Option<PathBuf>,

    /// Wait this long for related changes to settle before reconciling (milliseconds).
    /// Default 0.
    #[arg(long)]
    pub reconcile_debounce_ms: Option<u64>,

    /// The soonest a plugin may ask to be called again for one object; sooner is raised to
    /// it (docs/plugin-limits.md). Default 1s.
    #[arg(long, value_parser = parse_duration)]
    pub requeue_floor: Option<Duration>,

    /// Write rounds (reconciles that write) per second one object may make. Default 2.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub object_write_rate: Option<u32>,

    /// Write rounds one object may make in a burst above its rate. Default 10.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub object_write_burst: Option<u32>,

    /// Honour the `wasmray.io/dashboard-address` RayCluster annotation instead of the head
    /// Service's address. For tests and demos only: with it, anyone who may annotate a
    /// RayCluster (or RayJob) picks the address the operator calls.
    #[arg(long)]
    pub allow_dashboard_address_override: bool,

    /// How to reach each RayCluster's head (dashboard, and the GCS for autoscaling):
    /// `service`, its head Service's DNS name as KubeRay does, or `pod-ip`, the head pod's
    /// IP, for an operator outside the cluster's DNS that reaches its pod network. Default
    /// service.
    #[arg(long, value_enum)]
    pub ray_head_address: Option<crate::ray::HeadAddress>,

    /// The autoscaler plugin of RayClusters with autoscaling on that do not pick one with
    /// the `wasmray.io/autoscaler` annotation (docs/autoscaling.md). Default ray-default.
    #[arg(long)]
    pub autoscaler_plugin: Option<String>,

    /// How often the host reads each autoscaled cluster's demand from its GCS. Default
    /// 500ms.
    #[arg(long, value_parser = parse_duration)]
    pub autoscaler_poll_interval: Option<Duration>,
}

fn parse_feature_gate(text: &str) -> Result<(String, bool), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("feature gate {text:?} is not Name=true|false"))?;
    let enabled = value
        .trim()
        .to_ascii_lowercase()
        .parse()
        .map_err(|_| format!("feature gate {name}: {value:?} is not true or false"))?;
    Ok((name.trim().to_owned(), enabled))
}

/// The plugins' allowances from the file, then the flags.
fn allowances(
    file: &BTreeMap<String, AllowanceFile>,
    kinds: Vec<(String, String)>,
    limits: Vec<(String, String)>,
) -> Result<controller::write_policy::Allowances, SettingsError> {
    let mut allowances = controller::write_policy::Allowances::new();
    let file_kinds = file.iter().flat_map(|(name, allowance)| {
        allowance
            .kinds
            .iter()
            .map(move |kind| (name.clone(), kind.clone()))
    });
    for (name, kind) in file_kinds.chain(kinds) {
        let kind = kind
            .parse()
            .map_err(|error| invalid("plugin allowed kind", format!("{name}: {error}")))?;
        allowances.entry(name).or_default().extra_kinds.push(kind);
    }
    let file_limits = file.iter().flat_map(|(name, allowance)| {
        allowance
            .limits
            .iter()
            .map(move |(limit, value)| (name.clone(), limit.clone(), Ok(*value)))
    });
    let flag_limits = limits.into_iter().map(|(name, rest)| {
        let (limit, value) = rest.split_once('=').unwrap_or((rest.as_str(), ""));
        let value = value
            .trim()
            .parse::<usize>()
            .map_err(|_| format!("{rest:?} is not LIMIT=NUMBER"));
        (name, limit.trim().to_owned(), value)
    });
    for (name, limit, value) in file_limits.chain(flag_limits) {
        let value = value.map_err(|error| invalid("plugin limit", format!("{name}: {error}")))?;
        allowances
            .entry(name.clone())
            .or_default()
            .limits
            .set(&limit, value)
            .map_err(|error| invalid("plugin limit", format!("{name}: {error}")))?;
    }
    Ok(allowances)
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() && !value.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// A duration as Go and Kubernetes write them: `500ms`, `15s`, `1m30s`, `1.5h`. jiff's
/// "friendly" format reads those (and ISO 8601's `PT15S`), so no parser of our own.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let parsed: jiff::SignedDuration = text
        .parse()
        .map_err(|err| format!("{text:?} is not a duration like 15s or 1m30s: {err}"))?;
    Duration::try_from(parsed).map_err(|_| format!("{text:?} is negative"))
}

/// A plugin loaded from a file (config file form).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PluginFile {
    pub name: String,
    pub path: PathBuf,
}

/// What a platform team allows one plugin beyond the defaults (config file form).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AllowanceFile {
    /// `APIVERSION/KIND`, e.g. `v1/ConfigMap`.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Limit name (e.g. `pods-per-answer`) to its value.
    #[serde(default)]
    pub limits: BTreeMap<String, usize>,
}

/// The `--config` file: KubeRay's `Configuration` (the fields that apply) plus WasmRay's.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileConfig {
    pub api_version: Option<String>,
    pub kind: Option<String>,

    // KubeRay's fields.
    pub metrics_addr: Option<String>,
    pub probe_addr: Option<String>,
    pub enable_leader_election: Option<bool>,
    pub leader_election_namespace: Option<String>,
    pub reconcile_concurrency: Option<u16>,
    /// Comma-separated, as KubeRay's.
    pub watch_namespace: Option<String>,
    pub log_stdout_encoder: Option<LogFormat>,
    pub batch_scheduler: Option<String>,
    /// Deprecated in KubeRay: means `batchScheduler: volcano`.
    pub enable_batch_scheduler: Option<bool>,
    pub qps: Option<f32>,
    pub burst: Option<u32>,

    // KubeRay's fields WasmRay does not implement; accepted so a KubeRay file loads, and
    // named in a startup warning when set.
    pub log_file: Option<serde_yaml::Value>,
    pub log_file_encoder: Option<serde_yaml::Value>,
    pub use_kubernetes_proxy: Option<serde_yaml::Value>,
    /// As KubeRay's DELETE_RAYJOB_CR_AFTER_JOB_FINISHES, which wins when set.
    pub delete_ray_job_after_job_finishes: Option<bool>,
    pub enable_metrics: Option<serde_yaml::Value>,
    pub head_sidecar_containers: Option<serde_yaml::Value>,
    pub worker_sidecar_containers: Option<serde_yaml::Value>,
    pub default_container_envs: Option<serde_yaml::Value>,

    // WasmRay's.
    #[serde(rename = "leaderElectionID")]
    pub leader_election_id: Option<String>,
    pub leader_election_lease_duration: Option<String>,
    pub leader_election_renew_deadline: Option<String>,
    pub leader_election_retry_period: Option<String>,
    #[serde(default)]
    pub feature_gates: BTreeMap<String, bool>,
    #[serde(default)]
    pub plugins: Vec<PluginFile>,
    /// Parent kind to reconciler plugin name.
    #[serde(default)]
    pub bindings: BTreeMap<String, String>,
    /// Plugin name to the configuration text it receives.
    #[serde(default)]
    pub plugin_config: BTreeMap<String, String>,
    /// Plugin name to the extra child kinds and answer limits the platform team allows it.
    #[serde(default)]
    pub plugin_allowances: BTreeMap<String, AllowanceFile>,
    pub watch_plugin_files: Option<bool>,
    pub plugin_cache_dir: Option<PathBuf>,
    pub reconcile_debounce_ms: Option<u64>,
    /// `service` or `pod-ip` (the --ray-head-address flag).
    pub ray_head_address: Option<crate::ray::HeadAddress>,
    /// The default autoscaler plugin (the --autoscaler-plugin flag).
    pub autoscaler_plugin: Option<String>,
    /// The --autoscaler-poll-interval flag, as a Go duration.
    pub autoscaler_poll_interval: Option<String>,
}

impl FileConfig {
    /// KubeRay fields set in the file that WasmRay ignores.
    pub fn ignored_fields(&self) -> Vec<&'static str> {
        [
            ("logFile", self.log_file.is_some()),
            ("logFileEncoder", self.log_file_encoder.is_some()),
            ("useKubernetesProxy", self.use_kubernetes_proxy.is_some()),
            ("enableMetrics", self.enable_metrics.is_some()),
            (
                "headSidecarContainers",
                self.head_sidecar_containers.is_some(),
            ),
            (
                "workerSidecarContainers",
                self.worker_sidecar_containers.is_some(),
            ),
            (
                "defaultContainerEnvs",
                self.default_container_envs.is_some(),
            ),
        ]
        .into_iter()
        .filter_map(|(field, set)| set.then_some(field))
        .collect()
    }
}

/// A setting that cannot be used; names the field or flag.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("reading the config file {path}: {source}")]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the config file {path} is not a valid configuration: {source}")]
    ParseConfig {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: &str, message: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Every setting of the process, resolved.
#[derive(Clone, Debug)]
pub struct Settings {
    pub metrics_addr: Option<SocketAddr>,
    pub probe_addr: Option<SocketAddr>,
    pub leader_election: bool,
    pub leader_election_namespace: Option<String>,
    pub leader_election_id: String,
    pub lease_timings: LeaseTimings,
    pub qps: f32,
    pub burst: u32,
    pub log_format: LogFormat,
    /// Plugin files to load, by name.
    pub plugin_files: BTreeMap<String, PathBuf>,
    pub watch_plugin_files: bool,
    pub plugin_cache_dir: Option<PathBuf>,
    pub batch_scheduler: Option<String>,
    /// KubeRay fields of the config file that are ignored (for a startup warning).
    pub ignored_fields: Vec<&'static str>,
    pub controller: ControllerConfig,
}

fn file_duration(field: &str, text: Option<&String>) -> Result<Option<Duration>, SettingsError> {
    text.map(|text| parse_duration(text).map_err(|message| invalid(field, message)))
        .transpose()
}

fn address(
    field: &str,
    text: Option<&String>,
) -> Result<Option<Option<SocketAddr>>, SettingsError> {
    text.map(|text| health::parse_listen_address(text).map_err(|message| invalid(field, message)))
        .transpose()
}

impl Settings {
    /// Reads the `--config` file, if any, and resolves every setting.
    pub fn load(flags: Flags) -> Result<Settings, SettingsError> {
        let file = match &flags.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| SettingsError::ReadConfig {
                        path: path.clone(),
                        source,
                    })?;
                serde_yaml::from_str(&text).map_err(|source| SettingsError::ParseConfig {
                    path: path.clone(),
                    source,
                })?
            }
            None => FileConfig::default(),
        };
        Settings::resolve(flags, file, |path| std::fs::read_to_string(path))
    }

    /// Resolves flags over the file over the defaults. `read` reads `--plugin-config` files.
    pub fn resolve(
        flags: Flags,
        file: FileConfig,
        read: impl Fn(&Path) -> std::io::Result<String>,
    ) -> Result<Settings, SettingsError> {
        if let Some(kind) = &file.kind
            && kind != "Configuration"
        {
            return Err(invalid("kind", format!("{kind:?} is not Configuration")));
        }
        let defaults = LeaseTimings::default();
        let lease_timings = LeaseTimings {
            lease_duration: flags
                .leader_election_lease_duration
                .or(file_duration(
                    "leaderElectionLeaseDuration",
                    file.leader_election_lease_duration.as_ref(),
                )?)
                .unwrap_or(defaults.lease_duration),
            renew_deadline: flags
                .leader_election_renew_deadline
                .or(file_duration(
                    "leaderElectionRenewDeadline",
                    file.leader_election_renew_deadline.as_ref(),
                )?)
                .unwrap_or(defaults.renew_deadline),
            retry_period: flags
                .leader_election_retry_period
                .or(file_duration(
                    "leaderElectionRetryPeriod",
                    file.leader_election_retry_period.as_ref(),
                )?)
                .unwrap_or(defaults.retry_period),
        };
        lease_timings
            .validate()
            .map_err(|message| invalid("leader election timings", message))?;

        let namespaces: Vec<String> = if flags.watch_namespace.is_empty() {
            file.watch_namespace
                .as_deref()
                .unwrap_or_default()
                .split(',')
                .map(str::to_owned)
                .collect()
        } else {
            flags.watch_namespace
        };
        // A set: a namespace given twice (`a,b,a`) must not get two controllers.
        let namespaces: Vec<String> = namespaces
            .iter()
            .map(|namespace| namespace.trim().to_owned())
            .filter(|namespace| !namespace.is_empty())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();

        let concurrency = flags
            .reconcile_concurrency
            .or(file.reconcile_concurrency)
            .unwrap_or(1);
        if concurrency == 0 {
            return Err(invalid("reconcileConcurrency", "must be at least 1"));
        }

        let mut feature_gates = file.feature_gates.clone();
        feature_gates.extend(flags.feature_gates);

        let mut plugin_files: BTreeMap<String, PathBuf> = file
            .plugins
            .iter()
            .map(|plugin| (plugin.name.clone(), plugin.path.clone()))
            .collect();
        plugin_files.extend(
            flags
                .plugins
                .into_iter()
                .map(|(name, path)| (name, PathBuf::from(path))),
        );

        let mut controller = ControllerConfig::default();
        controller.bindings.extend(file.bindings.clone());
        controller.bindings.extend(flags.plugin_bindings);
        for kind in controller.bindings.keys() {
            if !PARENT_KINDS.contains(&kind.as_str()) {
                return Err(invalid(
                    "plugin binding",
                    format!(
                        "{kind:?} is not a parent kind ({})",
                        PARENT_KINDS.join(", ")
                    ),
                ));
            }
        }
        controller.plugin_config = file.plugin_config.clone();
        for (name, path) in flags.plugin_configs {
            let text = read(Path::new(&path)).map_err(|error| {
                invalid(
                    "--plugin-config",
                    format!("{name}: reading {path}: {error}"),
                )
            })?;
            controller.plugin_config.insert(name, text);
        }
        controller.allowances = allowances(
            &file.plugin_allowances,
            flags.plugin_allow_kinds,
            flags.plugin_limits,
        )?;
        controller.namespaces = namespaces;
        controller.concurrency = concurrency;
        if let Some(floor) = flags.requeue_floor {
            controller.requeue_floor = floor;
        }
        if let Some(rate) = flags.object_write_rate {
            controller.object_write_rounds_per_second = rate;
        }
        if let Some(burst) = flags.object_write_burst {
            controller.object_write_burst = burst;
        }
        controller.debounce = Duration::from_millis(
            flags
                .reconcile_debounce_ms
                .or(file.reconcile_debounce_ms)
                .unwrap_or(0),
        );
        controller.feature_gates = feature_gates;
        controller.allow_dashboard_address_override = flags.allow_dashboard_address_override;
        controller.ray_head_address = flags
            .ray_head_address
            .or(file.ray_head_address)
            .unwrap_or_default();
        if let Some(plugin) = flags
            .autoscaler_plugin
            .or_else(|| file.autoscaler_plugin.clone())
        {
            controller.autoscaler.default_plugin = plugin;
        }
        let poll = match (
            flags.autoscaler_poll_interval,
            &file.autoscaler_poll_interval,
        ) {
            (Some(interval), _) => Some(interval),
            (None, Some(text)) => Some(
                parse_duration(text)
                    .map_err(|message| invalid("autoscalerPollInterval", &message))?,
            ),
            (None, None) => None,
        };
        if let Some(interval) = poll {
            if interval.is_zero() {
                return Err(invalid("autoscalerPollInterval", "must be above zero"));
            }
            controller.autoscaler.poll_interval = interval;
        }
        controller.settings = controller::settings_from_env(|name| std::env::var(name).ok());
        if let Some(delete) = file.delete_ray_job_after_job_finishes {
            let (_, key) = controller::rayjob::SETTINGS_FROM_ENV
                .iter()
                .find(|(env, _)| *env == "DELETE_RAYJOB_CR_AFTER_JOB_FINISHES")
                .ok_or_else(|| {
                    invalid(
                        "deleteRayJobAfterJobFinishes",
                        "no RayJob setting carries it",
                    )
                })?;
            controller
                .settings
                .entry((*key).to_owned())
                .or_insert_with(|| delete.to_string());
        }

        let batch_scheduler = flags
            .batch_scheduler
            .or(file.batch_scheduler.clone())
            .or_else(|| (file.enable_batch_scheduler == Some(true)).then(|| "volcano".to_owned()))
            .filter(|name| !name.trim().is_empty());
        // KubeRay 1.7's gate for Kubernetes' own gang scheduling is a scheduler of its own.
        let workload_aware = controller
            .feature_gates
            .get(KUBERNETES_WAS_GATE)
            .copied()
            .unwrap_or(false);
        let batch_scheduler = match (batch_scheduler, workload_aware) {
            (Some(_), true) => {
                return Err(invalid(
                    "--feature-gates",
                    format!(
                        "the {KUBERNETES_WAS_GATE} feature gate cannot be combined with --batch-scheduler or --enable-batch-scheduler"
                    ),
                ));
            }
            (None, true) => Some(KUBERNETES_WAS_SCHEDULER.to_owned()),
            (chosen, false) => chosen,
        };
        if let Some(name) = &batch_scheduler {
            controller
                .settings
                .insert(BATCH_SCHEDULER_SETTING.to_owned(), name.clone());
        }
        controller.batch_scheduler = batch_scheduler.clone();

        Ok(Settings {
            metrics_addr: address("--metrics-addr", flags.metrics_addr.as_ref())?
                .or(address("metricsAddr", file.metrics_addr.as_ref())?)
                .unwrap_or_else(|| Some(SocketAddr::from(([0, 0, 0, 0], 8080)))),
            probe_addr: address(
                "--health-probe-bind-address",
                flags.health_probe_bind_address.as_ref(),
            )?
            .or(address("probeAddr", file.probe_addr.as_ref())?)
            .unwrap_or_else(|| Some(SocketAddr::from(([0, 0, 0, 0], 8082)))),
            leader_election: flags
                .enable_leader_election
                .or(file.enable_leader_election)
                .unwrap_or(true),
            leader_election_namespace: flags
                .leader_election_namespace
                .or(file.leader_election_namespace.clone())
                .filter(|namespace| !namespace.is_empty()),
            leader_election_id: flags
                .leader_election_id
                .or(file.leader_election_id.clone())
                .unwrap_or_else(|| leader::DEFAULT_LEASE_NAME.to_owned()),
            lease_timings,
            qps: flags.qps.or(file.qps).unwrap_or(100.0),
            burst: flags.burst.or(file.burst).unwrap_or(200),
            log_format: flags
                .log_format
                .or(file.log_stdout_encoder)
                .unwrap_or(LogFormat::Text),
            plugin_files,
            watch_plugin_files: flags
                .watch_plugin_files
                .or(file.watch_plugin_files)
                .unwrap_or(false),
            plugin_cache_dir: flags.plugin_cache_dir.or(file.plugin_cache_dir.clone()),
            batch_scheduler,
            ignored_fields: file.ignored_fields(),
            controller,
        })
    }
}

/// A plugin setting that does not match the plugins loaded.
#[derive(Debug, thiserror::Error)]
pub enum PluginSetupError {
    #[error("plugin {name} from {path}: {message}")]
    Load {
        name: String,
        path: PathBuf,
        message: String,
    },
    #[error("binding {kind}={plugin}: {message}")]
    Binding {
        kind: String,
        plugin: String,
        message: String,
    },
    #[error("--plugin-config {name}: {message}")]
    Config { name: String, message: String },
    #[error(
        "--batch-scheduler {name}: no scheduler plugin of that name is registered (scheduler plugins: {available})"
    )]
    NoScheduler { name: String, available: String },
}

/// Loads the built-in plugins and the plugin files, then checks the bindings and the batch
/// scheduler against what is installed.
pub async fn load_plugins(settings: &Settings) -> anyhow::Result<PluginHost> {
    let plugins = PluginHost::with_builtins(settings.plugin_cache_dir.as_deref())
        .await
        .context("loading the built-in plugins")?;
    let runtime = plugins.runtime();
    for (name, path) in &settings.plugin_files {
        let plugin =
            runtime
                .load_file(name, path)
                .await
                .map_err(|error| PluginSetupError::Load {
                    name: name.clone(),
                    path: path.clone(),
                    message: format!("{error:#}"),
                })?;
        runtime.registry().install(plugin);
    }
    check_plugins(&plugins, settings)?;
    // Each plugin checks its own configuration once, here, not on every object.
    for (name, config) in &settings.controller.plugin_config {
        if let Some(plugin) = runtime.registry().get(name) {
            runtime
                .validate_config(&plugin, config)
                .await
                .map_err(|error| PluginSetupError::Config {
                    name: name.clone(),
                    message: error.to_string(),
                })?;
        }
    }
    Ok(plugins)
}

fn check_plugins(plugins: &PluginHost, settings: &Settings) -> Result<(), PluginSetupError> {
    let registry = plugins.runtime().registry();
    for (kind, name) in &settings.controller.bindings {
        let binding = |message: String| PluginSetupError::Binding {
            kind: kind.clone(),
            plugin: name.clone(),
            message,
        };
        let plugin = registry
            .get(name)
            .ok_or_else(|| binding("no plugin of that name is registered".to_owned()))?;
        if plugin.role() != Role::Reconciler {
            return Err(binding(format!(
                "{} is a {}, not a reconciler",
                plugin.id(),
                plugin.role().as_str()
            )));
        }
        if !plugin.kinds().iter().any(|served| served == kind) {
            return Err(binding(format!(
                "{} serves {:?}, not {kind}",
                plugin.id(),
                plugin.kinds()
            )));
        }
    }
    let autoscaler = &settings.controller.autoscaler.default_plugin;
    let is_autoscaler = registry
        .get(autoscaler)
        .is_some_and(|plugin| plugin.role() == Role::Autoscaler);
    if !is_autoscaler {
        return Err(PluginSetupError::Binding {
            kind: "RayCluster autoscaling".to_owned(),
            plugin: autoscaler.clone(),
            message: "no autoscaler plugin of that name is registered".to_owned(),
        });
    }
    if let Some(name) = &settings.batch_scheduler {
        let is_scheduler = registry
            .get(name)
            .is_some_and(|plugin| plugin.role() == Role::Scheduler);
        if !is_scheduler {
            let available: Vec<String> = registry
                .list()
                .iter()
                .filter(|plugin| plugin.role() == Role::Scheduler)
                .map(|plugin| plugin.id().name.clone())
                .collect();
            return Err(PluginSetupError::NoScheduler {
                name: name.clone(),
                available: if available.is_empty() {
                    "none".to_owned()
                } else {
                    available.join(", ")
                },
            });
        }
    }
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // stderr, as controller-runtime's logger: stdout stays free for command output.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests running the entry point twice) keeps the first.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The binary's entry point: parses the command line, runs until SIGINT/SIGTERM, and exits
/// non-zero on a startup error or when the leader lease is lost.
pub fn main() -> ExitCode {
    let flags = Flags::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("wasmray: starting the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(flags)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("wasmray: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the operator with `flags` until a signal, a startup error or a lost lease.
pub async fn run(flags: Flags) -> anyhow::Result<()> {
    let settings = Settings::load(flags)?;
    init_logging(settings.log_format);
    if !settings.ignored_fields.is_empty() {
        tracing::warn!(fields = ?settings.ignored_fields, "the config file sets KubeRay fields WasmRay does not implement; they are ignored");
    }

    let telemetry = Telemetry::default();
    let plugins = load_plugins(&settings).await?;
    let kube_config = kube::Config::infer()
        .await
        .context("no kubeconfig and no in-cluster configuration")?;
    let kube_config = controller::with_user_agent(kube_config, controller::USER_AGENT);
    // Each client has its own --qps/--burst bucket, as each client-go clientset has.
    let build_client = |config: kube::Config| {
        crate::client::build(
            config,
            crate::client::TokenBucket::new(settings.qps, settings.burst),
            Arc::clone(&telemetry.metrics),
        )
        .context("building the Kubernetes client")
    };
    let client = build_client(kube_config.clone())?;
    let clients = controller::Clients {
        api: client.clone(),
        events: build_client(kube_config)?,
    };

    let endpoints = Endpoints {
        metrics: Arc::clone(&telemetry.metrics),
        readiness: Arc::clone(&telemetry.readiness),
    };
    let mut addresses: Vec<SocketAddr> = [settings.metrics_addr, settings.probe_addr]
        .into_iter()
        .flatten()
        .collect();
    // Two entries at most, so removing adjacent duplicates removes them all.
    addresses.dedup();
    let mut servers = Vec::new();
    for address in addresses {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("listening on {address} for /metrics, /healthz, /readyz"))?;
        tracing::info!(%address, "serving /metrics, /healthz and /readyz");
        servers.push(tokio::spawn(health::serve(listener, endpoints.clone())));
    }

    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    if settings.watch_plugin_files && !settings.plugin_files.is_empty() {
        tokio::spawn(crate::reload::watch_plugin_files(
            plugins.clone(),
            settings.plugin_files.clone(),
            crate::reload::Fit {
                bindings: settings.controller.bindings.clone(),
                configs: settings.controller.plugin_config.clone(),
            },
            stopped.clone(),
        ));
    }

    tracing::info!(
        namespaces = ?settings.controller.namespaces,
        concurrency = settings.controller.concurrency,
        bindings = ?settings.controller.bindings,
        batch_scheduler = ?settings.batch_scheduler,
        plugins = ?plugins.describe(),
        leader_election = settings.leader_election,
        "starting"
    );
    let controllers = controller::run_with_telemetry(
        clients,
        plugins,
        settings.controller.clone(),
        stopped.clone(),
        telemetry.clone(),
    );
    let result = if settings.leader_election {
        let namespace = settings
            .leader_election_namespace
            .clone()
            .or_else(|| {
                std::env::var("POD_NAMESPACE")
                    .ok()
                    .filter(|ns| !ns.is_empty())
            })
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let mut elector = Elector::new(
            client,
            &namespace,
            &settings.leader_election_id,
            leader::default_identity(),
            settings.lease_timings.clone(),
        );
        telemetry.readiness.set_role(ElectionRole::Standby);
        tracing::info!(lease = %elector.lease(), identity = %elector.identity(), "waiting for the leader lease");
        if elector.acquire(&mut stopped.clone()).await {
            telemetry.readiness.set_role(ElectionRole::Leader);
            let lost = tokio::select! {
                () = controllers => None,
                lost = elector.hold() => Some(lost),
            };
            match lost {
                // Exit at once: another replica may already be writing.
                Some(lost) => Err(anyhow::Error::new(lost)),
                None => {
                    elector.release().await;
                    Ok(())
                }
            }
        } else {
            Ok(())
        }
    } else {
        controllers.await;
        Ok(())
    };
    for server in servers {
        server.abort();
    }
    result
}

/// SIGINT or SIGTERM.
async fn wait_for_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = interrupt => {}
            () = terminate => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        Flags::try_parse_from(std::iter::once("wasmray").chain(args.iter().copied())).unwrap()
    }

    fn no_files(path: &Path) -> std::io::Result<String> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            path.display().to_string(),
        ))
    }

    #[test]
    fn flags_parse_like_kuberay() {
        let flags = flags(&[
            "--watch-namespace",
            "a,b",
            "--watch-namespace=c",
            "--reconcile-concurrency",
            "8",
            "--log-stdout-encoder",
            "console",
            "--feature-gates",
            "RayMultiHostIndexing=true,RayClusterStatusConditions=False",
            "--metrics-addr",
            ":9090",
            "--health-probe-bind-address",
            "0",
            "--enable-leader-election=false",
            "--qps",
            "50",
            "--burst",
            "60",
        ]);
        let settings = Settings::resolve(flags, FileConfig::default(), no_files).unwrap();
        assert_eq!(settings.controller.namespaces, ["a", "b", "c"]);
        assert_eq!(settings.controller.concurrency, 8);
        assert_eq!(settings.log_format, LogFormat::Text);
        assert_eq!(
            settings.controller.feature_gates,
            BTreeMap::from([
                ("RayMultiHostIndexing".to_owned(), true),
                ("RayClusterStatusConditions".to_owned(), false)
            ])
        );
        assert_eq!(settings.metrics_addr, Some("0.0.0.0:9090".parse().unwrap()));
        assert_eq!(settings.probe_addr, None);
        assert!(!settings.leader_election);
        assert_eq!((settings.qps, settings.burst), (50.0, 60));
        assert!(Flags::try_parse_from(["wasmray", "--reconcile-concurrency", "0"]).is_err());
        assert!(Flags::try_parse_from(["wasmray", "--feature-gates", "X=maybe"]).is_err());
        assert!(Flags::try_parse_from(["wasmray", "--plugin", "no-path"]).is_err());
    }

    #[test]
    fn a_namespace_given_twice_is_watched_once() {
        let flags = flags(&["--watch-namespace", "b,a", "--watch-namespace=b,a, c"]);
        let settings = Settings::resolve(flags, FileConfig::default(), no_files).unwrap();
        assert_eq!(settings.controller.namespaces, ["a", "b", "c"]);
        let file = FileConfig {
            watch_namespace: Some("a,b,a".to_owned()),
            ..FileConfig::default()
        };
        let settings = Settings::resolve(Flags::default(), file, no_files).unwrap();
        assert_eq!(settings.controller.namespaces, ["a", "b"]);
    }

    #[test]
    fn allowances_come_from_the_file_then_the_flags_and_bad_ones_are_named() {
        let file: FileConfig = serde_yaml::from_str(
            "pluginAllowances:\n  policy:\n    kinds: [v1/ConfigMap]\n    limits: {pods-per-answer: 5000}\n",
        )
        .unwrap();
        let given = flags(&[
            "--plugin-allow-kind",
            "policy=batch/v1/CronJob",
            "--plugin-limit",
            "policy=objects-per-answer=500",
        ]);
        let settings = Settings::resolve(given, file, no_files).unwrap();
        let allowance = &settings.controller.allowances["policy"];
        let kinds: Vec<String> = allowance
            .extra_kinds
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(kinds, ["v1 ConfigMap", "batch/v1 CronJob"]);
        assert_eq!(allowance.limits.pods_per_answer, 5000);
        assert_eq!(allowance.limits.objects_per_answer, 500);
        assert_eq!(
            allowance.limits.events_per_answer, 100,
            "others keep their default"
        );
        let fair = Settings::resolve(
            flags(&[
                "--requeue-floor=2s",
                "--object-write-rate=5",
                "--object-write-burst=20",
            ]),
            FileConfig::default(),
            no_files,
        )
        .unwrap()
        .controller;
        assert_eq!(
            (
                fair.requeue_floor,
                fair.object_write_rounds_per_second,
                fair.object_write_burst
            ),
            (Duration::from_secs(2), 5, 20)
        );
        for (flag, value, expected) in [
            ("--plugin-allow-kind", "policy=ConfigMap", "APIVERSION/KIND"),
            ("--plugin-limit", "policy=pods=5", "unknown limit \"pods\""),
            (
                "--plugin-limit",
                "policy=pods-per-answer=many",
                "not LIMIT=NUMBER",
            ),
        ] {
            let error = Settings::resolve(flags(&[flag, value]), FileConfig::default(), no_files)
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{value}: {error}");
        }
    }

    #[test]
    fn defaults_match_kuberay_where_one_exists() {
        let settings =
            Settings::resolve(Flags::default(), FileConfig::default(), no_files).unwrap();
        assert_eq!(settings.metrics_addr, Some("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(settings.probe_addr, Some("0.0.0.0:8082".parse().unwrap()));
        assert!(settings.leader_election);
        assert_eq!(settings.leader_election_id, "wasmray-operator-leader");
        assert_eq!(settings.lease_timings, LeaseTimings::default());
        assert_eq!((settings.qps, settings.burst), (100.0, 200));
        assert_eq!(settings.controller.concurrency, 1);
        assert!(settings.controller.namespaces.is_empty());
        assert_eq!(settings.controller.bindings["RayCluster"], "raycluster");
        assert_eq!(settings.batch_scheduler, None);
    }

    const KUBERAY_FILE: &str = r#"
apiVersion: config.ray.io/v1alpha1
kind: Configuration
metricsAddr: ":7000"
probeAddr: "127.0.0.1:7001"
enableLeaderElection: false
leaderElectionNamespace: ray-system
reconcileConcurrency: 4
watchNamespace: "team-a, team-b"
logStdoutEncoder: json
enableBatchScheduler: true
qps: 20
burst: 30
logFile: /tmp/ray.log
headSidecarContainers: []
deleteRayJobAfterJobFinishes: true
leaderElectionID: my-lease
leaderElectionLeaseDuration: 30s
featureGates: {RayJobDeletionPolicy: true}
plugins:
  - {name: policy, path: /plugins/policy.wasm}
bindings: {RayCluster: policy}
pluginConfig: {policy: "maxWorkers: 3"}
"#;

    #[test]
    fn a_kuberay_configuration_file_applies() {
        let file: FileConfig = serde_yaml::from_str(KUBERAY_FILE).unwrap();
        let settings = Settings::resolve(Flags::default(), file, no_files).unwrap();
        assert_eq!(settings.metrics_addr, Some("0.0.0.0:7000".parse().unwrap()));
        assert_eq!(settings.probe_addr, Some("127.0.0.1:7001".parse().unwrap()));
        assert!(!settings.leader_election);
        assert_eq!(
            settings.leader_election_namespace.as_deref(),
            Some("ray-system")
        );
        assert_eq!(settings.leader_election_id, "my-lease");
        assert_eq!(
            settings.lease_timings.lease_duration,
            Duration::from_secs(30)
        );
        assert_eq!(settings.controller.concurrency, 4);
        assert_eq!(settings.controller.namespaces, ["team-a", "team-b"]);
        assert_eq!(settings.log_format, LogFormat::Json);
        // The deprecated switch means volcano, as in KubeRay; plugins learn the name.
        assert_eq!(settings.batch_scheduler.as_deref(), Some("volcano"));
        assert_eq!(
            settings.controller.settings[BATCH_SCHEDULER_SETTING],
            "volcano"
        );
        assert_eq!((settings.qps, settings.burst), (20.0, 30));
        assert_eq!(
            settings.ignored_fields,
            ["logFile", "headSidecarContainers"]
        );
        assert_eq!(
            settings.plugin_files["policy"],
            PathBuf::from("/plugins/policy.wasm")
        );
        assert_eq!(settings.controller.bindings["RayCluster"], "policy");
        assert_eq!(settings.controller.plugin_config["policy"], "maxWorkers: 3");
        assert!(settings.controller.feature_gates["RayJobDeletionPolicy"]);
    }

    #[test]
    fn the_batch_scheduler_binds_rayclusters_and_kubernetes_was_is_one() {
        let resolve = |args: &[&str]| {
            Settings::resolve(flags(args), FileConfig::default(), no_files)
                .map(|settings| settings.controller.batch_scheduler)
                .map_err(|error| error.to_string())
        };
        assert_eq!(resolve(&[]), Ok(None));
        assert_eq!(
            resolve(&["--batch-scheduler=yunikorn"]),
            Ok(Some("yunikorn".to_owned()))
        );
        assert_eq!(
            resolve(&["--feature-gates=KubernetesWAS=true"]),
            Ok(Some(KUBERNETES_WAS_SCHEDULER.to_owned()))
        );
        assert_eq!(
            resolve(&["--feature-gates=KubernetesWAS=true", "--batch-scheduler=volcano"]),
            Err("--feature-gates: the KubernetesWAS feature gate cannot be combined with --batch-scheduler or --enable-batch-scheduler".to_owned())
        );
    }

    #[test]
    fn flags_win_over_the_file_entry_by_entry() {
        let file: FileConfig = serde_yaml::from_str(KUBERAY_FILE).unwrap();
        let flags = flags(&[
            "--reconcile-concurrency=2",
            "--watch-namespace=only",
            "--enable-leader-election",
            "--feature-gates=RayJobDeletionPolicy=false",
            "--plugin-binding=RayCluster=raycluster",
            "--plugin-config=policy=/etc/policy.yaml",
            "--plugin=other=/plugins/other.wasm",
        ]);
        let read = |path: &Path| {
            assert_eq!(path, Path::new("/etc/policy.yaml"));
            Ok("maxWorkers: 9".to_owned())
        };
        let settings = Settings::resolve(flags, file, read).unwrap();
        assert_eq!(settings.controller.concurrency, 2);
        assert_eq!(settings.controller.namespaces, ["only"]);
        assert!(settings.leader_election);
        assert!(!settings.controller.feature_gates["RayJobDeletionPolicy"]);
        assert_eq!(settings.controller.bindings["RayCluster"], "raycluster");
        assert_eq!(settings.controller.plugin_config["policy"], "maxWorkers: 9");
        assert_eq!(settings.plugin_files.len(), 2);
        // Not given as a flag: the file's value stays.
        assert_eq!(settings.metrics_addr, Some("0.0.0.0:7000".parse().unwrap()));
    }

    #[test]
    fn bad_settings_name_the_field() {
        let error = |text: &str| {
            let file: FileConfig = serde_yaml::from_str(text).unwrap();
            Settings::resolve(Flags::default(), file, no_files)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            error("metricsAddr: nonsense"),
            r#"metricsAddr: "nonsense" is not an address like :8080, 127.0.0.1:8080 or 0"#
        );
        assert!(
            error("bindings: {Pod: x}").starts_with("plugin binding: \"Pod\" is not a parent kind")
        );
        assert!(error("leaderElectionRetryPeriod: 9s").starts_with("leader election timings:"));
        assert!(error("kind: Other").starts_with("kind:"));
        assert!(serde_yaml::from_str::<FileConfig>("noSuchField: 1").is_err());
        let missing = Settings::resolve(
            flags(&["--plugin-config=p=/nope"]),
            FileConfig::default(),
            no_files,
        )
        .unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("--plugin-config: p: reading /nope")
        );
    }

    #[test]
    fn durations_as_go_writes_them() {
        let ms = Duration::from_millis;
        for (text, expected) in [
            ("15s", ms(15_000)),
            (" 10s ", ms(10_000)),
            ("500ms", ms(500)),
            ("1.5m", ms(90_000)),
            ("1m30s", ms(90_000)),
            ("2h", ms(7_200_000)),
            ("1h0m2s", ms(3_602_000)),
            ("0.5s", ms(500)),
            ("250us", Duration::from_micros(250)),
            ("0s", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        for text in ["15", "15d", "s", "", "-5s", "ten seconds", "1.5.5s"] {
            assert!(parse_duration(text).is_err(), "{text:?} was accepted");
        }
        // Flags and the config file go through it.
        let flags = flags(&["--leader-election-lease-duration=1m30s"]);
        let file = FileConfig {
            leader_election_renew_deadline: Some("1m".to_owned()),
            leader_election_retry_period: Some("500ms".to_owned()),
            ..FileConfig::default()
        };
        let timings = Settings::resolve(flags, file, no_files)
            .unwrap()
            .lease_timings;
        assert_eq!(
            (
                timings.lease_duration,
                timings.renew_deadline,
                timings.retry_period
            ),
            (ms(90_000), ms(60_000), ms(500))
        );
    }

    #[tokio::test]
    async fn bindings_and_the_batch_scheduler_must_match_installed_plugins() {
        let plugins = PluginHost::with_builtins(None).await.unwrap();
        let (_, scheduler) = crate::builtin::test_plugins::EXAMPLES
            .iter()
            .find(|(name, _)| *name == "example-scheduler")
            .unwrap();
        let scheduler = plugins
            .runtime()
            .load_file("example-scheduler", Path::new(scheduler))
            .await
            .unwrap();
        plugins.runtime().registry().install(scheduler);
        let check = |args: &[&str]| {
            let settings = Settings::resolve(flags(args), FileConfig::default(), no_files).unwrap();
            check_plugins(&plugins, &settings).map_err(|error| error.to_string())
        };
        assert_eq!(check(&[]), Ok(()));
        assert_eq!(check(&["--batch-scheduler=example-scheduler"]), Ok(()));
        // KubeRay's four names and Kubernetes' own gang scheduling are built in.
        for builtin in [
            "volcano",
            "yunikorn",
            "scheduler-plugins",
            "kai-scheduler",
            "kubernetes-was",
        ] {
            assert_eq!(check(&[&format!("--batch-scheduler={builtin}")]), Ok(()));
        }
        assert_eq!(
            check(&["--batch-scheduler=slurm"]),
            Err("--batch-scheduler slurm: no scheduler plugin of that name is registered (scheduler plugins: example-scheduler, kai-scheduler, kubernetes-was, scheduler-plugins, volcano, yunikorn)".to_owned())
        );
        assert!(
            check(&["--batch-scheduler=raycluster"])
                .unwrap_err()
                .starts_with("--batch-scheduler raycluster:")
        );
        assert_eq!(
            check(&["--plugin-binding=RayCluster=missing"]),
            Err("binding RayCluster=missing: no plugin of that name is registered".to_owned())
        );
        let not_a_reconciler =
            check(&["--plugin-binding=RayCluster=example-scheduler"]).unwrap_err();
        assert!(
            not_a_reconciler.contains("is a scheduler, not a reconciler"),
            "{not_a_reconciler}"
        );
        let wrong_kind = check(&["--plugin-binding=RayService=raycluster"]).unwrap_err();
        assert!(wrong_kind.contains("not RayService"), "{wrong_kind}");
    }

    /// A plugin checks its configuration once, at load: one it refuses stops the start with
    /// the plugin's reason, instead of failing every object later.
    #[tokio::test]
    async fn a_plugin_configuration_the_plugin_refuses_stops_the_start() {
        let hostile = crate::builtin::test_plugins::HOSTILE;
        let settings_with = |config: &'static str| {
            let plugin = format!("--plugin=hostile={hostile}");
            let read = move |_: &Path| Ok(config.to_owned());
            Settings::resolve(
                flags(&[&plugin, "--plugin-config=hostile=/config/hostile"]),
                FileConfig::default(),
                read,
            )
            .unwrap()
        };
        let refused = load_plugins(&settings_with("invalid-config on purpose"))
            .await
            .err()
            .map(|error| format!("{error:#}"))
            .unwrap_or_default();
        assert!(
            refused.contains("--plugin-config hostile")
                && refused.contains("refuses its configuration")
                && refused.contains("invalid-config on purpose"),
            "{refused}"
        );
        assert!(load_plugins(&settings_with("noop")).await.is_ok());
    }
}
