//! Prometheus metrics of the operator, served at `/metrics` (see [`crate::health`]).
//!
//! Two kinds of families:
//! - KubeRay's (`kuberay_cluster_*`, `kuberay_job_*`, `kuberay_service_*`, same names and
//!   labels, so existing dashboards keep working). They describe objects, not events, so they
//!   are computed at scrape time from the controllers' parent caches (as KubeRay lists
//!   RayClusters at scrape) and vanish with the object. Kinds without a running controller
//!   are registered and empty.
//! - The host's own: reconciles per kind (controller-runtime's names), plugin calls per
//!   plugin, and API requests by method and code (client-go's `rest_client_requests_total`).

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::Resource;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use wasmray_crds::constants::{RAY_CLUSTER_PROVISIONED, RAY_ORIGINATED_FROM_CRD_LABEL_KEY};
use wasmray_crds::{RayCluster, RayJob, RayService};

/// `controller` label of the reconcile families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileResultLabels {
    controller: String,
    /// `success`, `requeue_after` or `error`, as controller-runtime.
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginFailureLabels {
    plugin: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ThrottleLabels {
    controller: String,
    limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// HTTP status code, or `<error>` when no response came (client-go's convention).
    code: String,
    method: String,
}

/// How a reconcile ended, for `controller_runtime_reconcile_total{result}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconcileOutcome {
    Success,
    RequeueAfter,
    Error,
}

impl ReconcileOutcome {
    fn label(self) -> &'static str {
        match self {
            ReconcileOutcome::Success => "success",
            ReconcileOutcome::RequeueAfter => "requeue_after",
            ReconcileOutcome::Error => "error",
        }
    }
}

/// Every metric of the process. Cheap to record into from any thread.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileResultLabels, Counter>,
    reconcile_errors: Family<ControllerLabels, Counter>,
    reconcile_time: Family<ControllerLabels, Histogram>,
    plugin_call_time: Family<PluginLabels, Histogram>,
    plugin_failures: Family<PluginFailureLabels, Counter>,
    throttled: Family<ThrottleLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    events_dropped: Counter,
    parents: Arc<ParentCaches>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Buckets from 1 ms to ~65 s: reconciles and plugin calls span that range.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::default();
        registry.register(
            "controller_runtime_reconcile",
            "Reconciles per controller (lower-case kind) and result",
            reconciles.clone(),
        );
        let reconcile_errors = Family::default();
        registry.register(
            "controller_runtime_reconcile_errors",
            "Reconciles that failed, per controller",
            reconcile_errors.clone(),
        );
        let reconcile_time: Family<ControllerLabels, Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "controller_runtime_reconcile_time_seconds",
            "Time of one reconcile, per controller",
            reconcile_time.clone(),
        );
        let plugin_call_time: Family<PluginLabels, Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "wasmray_plugin_call_duration_seconds",
            "Time of one reconciler plugin call, per plugin",
            plugin_call_time.clone(),
        );
        let plugin_failures = Family::default();
        registry.register(
            "wasmray_plugin_call_failures",
            "Plugin calls that gave no usable answer, per plugin and reason (e.g. PluginTrapped)",
            plugin_failures.clone(),
        );
        let throttled = Family::default();
        registry.register(
            "wasmray_throttled",
            "Times an object's plugin hit a host limit (write-rate, requeue-floor), per controller",
            throttled.clone(),
        );
        let requests = Family::default();
        registry.register(
            "rest_client_requests",
            "Kubernetes API requests by HTTP method and status code",
            requests.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "wasmray_events_dropped",
            "Kubernetes events dropped because the queue of events to publish was full",
            events_dropped.clone(),
        );
        let parents = Arc::new(ParentCaches::default());
        registry.register_collector(Box::new(Arc::clone(&parents)));
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_time,
            plugin_call_time,
            plugin_failures,
            throttled,
            requests,
            events_dropped,
            parents,
        }
    }
}

impl Metrics {
    /// Records one finished reconcile of `kind`.
    pub fn reconcile_done(&self, kind: &str, outcome: ReconcileOutcome, took: Duration) {
        let controller = kind.to_ascii_lowercase();
        self.reconciles
            .get_or_create(&ReconcileResultLabels {
                controller: controller.clone(),
                result: outcome.label(),
            })
            .inc();
        if outcome == ReconcileOutcome::Error {
            self.reconcile_errors
                .get_or_create(&ControllerLabels {
                    controller: controller.clone(),
                })
                .inc();
        }
        self.reconcile_time
            .get_or_create(&ControllerLabels { controller })
            .observe(took.as_secs_f64());
    }

    /// Records one plugin call; `failure` is the reason when it gave no usable answer.
    pub fn plugin_call(&self, plugin: &str, took: Duration, failure: Option<&str>) {
        self.plugin_call_time
            .get_or_create(&PluginLabels {
                plugin: plugin.to_owned(),
            })
            .observe(took.as_secs_f64());
        if let Some(reason) = failure {
            self.plugin_failure(plugin, reason);
        }
    }

    /// Records a failure of a plugin found after the call (e.g. an answer that cannot be
    /// carried out).
    pub fn plugin_failure(&self, plugin: &str, reason: &str) {
        self.plugin_failures
            .get_or_create(&PluginFailureLabels {
                plugin: plugin.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Records that an object of `kind` hit the host limit `limit`.
    pub fn throttled(&self, kind: &str, limit: &str) {
        self.throttled
            .get_or_create(&ThrottleLabels {
                controller: kind.to_ascii_lowercase(),
                limit: limit.to_owned(),
            })
            .inc();
    }

    /// Records one API request; `code` is None when no response came.
    pub fn api_request(&self, method: &str, code: Option<u16>) {
        self.requests
            .get_or_create(&RequestLabels {
                code: code.map_or_else(|| "<error>".to_owned(), |code| code.to_string()),
                method: method.to_owned(),
            })
            .inc();
    }

    /// Records one event dropped before it was published.
    pub fn event_dropped(&self) {
        self.events_dropped.inc();
    }

    /// Reports the objects of a parent cache in KubeRay's object families from now on.
    /// Objects of kinds without KubeRay families are ignored.
    pub fn watch_parents<P>(&self, store: Store<P>)
    where
        P: Resource + Clone + Send + Sync + 'static,
        P::DynamicType: Eq + std::hash::Hash + Clone,
    {
        self.parents
            .sources
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Box::new(StoreSource(store)));
    }

    /// The Prometheus text exposition (OpenMetrics flavour) of every family.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A parent cache whose objects the KubeRay families describe.
trait ParentSource: Send + Sync {
    fn collect(&self, rows: &mut ObjectRows);
}

struct StoreSource<P: Resource + 'static>(Store<P>)
where
    P::DynamicType: Eq + std::hash::Hash + Clone;

impl<P> ParentSource for StoreSource<P>
where
    P: Resource + Clone + Send + Sync + 'static,
    P::DynamicType: Eq + std::hash::Hash + Clone,
{
    fn collect(&self, rows: &mut ObjectRows) {
        for object in self.0.state() {
            rows.add(object.as_ref() as &dyn Any);
        }
    }
}

/// The parent caches registered by the controllers, read at every scrape.
#[derive(Default)]
struct ParentCaches {
    sources: Mutex<Vec<Box<dyn ParentSource>>>,
}

impl fmt::Debug for ParentCaches {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ParentCaches")
            .finish_non_exhaustive()
    }
}

type Labels = Vec<(&'static str, String)>;

/// One gauge family computed at scrape.
struct GaugeRows {
    name: &'static str,
    help: &'static str,
    samples: Vec<(Labels, f64)>,
}

impl GaugeRows {
    fn new(name: &'static str, help: &'static str) -> Self {
        GaugeRows {
            name,
            help,
            samples: Vec::new(),
        }
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut family =
            encoder.encode_descriptor(self.name, self.help, None, MetricType::Gauge)?;
        for (labels, value) in &self.samples {
            ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }
}

/// KubeRay's object families.
struct ObjectRows {
    cluster_info: GaugeRows,
    cluster_provisioned_duration: GaugeRows,
    cluster_condition_provisioned: GaugeRows,
    job_info: GaugeRows,
    job_deployment_status: GaugeRows,
    job_execution_duration: GaugeRows,
    service_info: GaugeRows,
    service_condition_ready: GaugeRows,
    service_condition_upgrade_in_progress: GaugeRows,
}

fn identity(meta: &ObjectMeta) -> Labels {
    vec![
        ("name", meta.name.clone().unwrap_or_default()),
        ("namespace", meta.namespace.clone().unwrap_or_default()),
        ("uid", meta.uid.clone().unwrap_or_default()),
    ]
}

fn with(mut labels: Labels, key: &'static str, value: impl Into<String>) -> Labels {
    labels.push((key, value.into()));
    labels
}

fn condition<'a>(conditions: Option<&'a Vec<Condition>>, type_: &str) -> Option<&'a Condition> {
    conditions?
        .iter()
        .find(|condition| condition.type_ == type_)
}

/// Seconds from `from` to `to`, never negative.
fn seconds_between(from: &Time, to: &Time) -> f64 {
    let span = to.0.duration_since(from.0);
    span.as_secs_f64().max(0.0)
}

impl ObjectRows {
    fn new() -> Self {
        ObjectRows {
            cluster_info: GaugeRows::new(
                "kuberay_cluster_info",
                "Metadata of each RayCluster (always 1)",
            ),
            cluster_provisioned_duration: GaugeRows::new(
                "kuberay_cluster_provisioned_duration_seconds",
                "Seconds from a RayCluster's creation until all its Ray pods were first ready",
            ),
            cluster_condition_provisioned: GaugeRows::new(
                "kuberay_cluster_condition_provisioned",
                "Whether a RayCluster has been provisioned (always 1; see the condition label)",
            ),
            job_info: GaugeRows::new("kuberay_job_info", "Metadata of each RayJob (always 1)"),
            job_deployment_status: GaugeRows::new(
                "kuberay_job_deployment_status",
                "The deployment status of each RayJob (always 1; see the label)",
            ),
            job_execution_duration: GaugeRows::new(
                "kuberay_job_execution_duration_seconds",
                "Seconds from a RayJob's start until it completed or failed",
            ),
            service_info: GaugeRows::new(
                "kuberay_service_info",
                "Metadata of each RayService (always 1)",
            ),
            service_condition_ready: GaugeRows::new(
                "kuberay_service_condition_ready",
                "Whether a RayService is ready (always 1; see the condition label)",
            ),
            service_condition_upgrade_in_progress: GaugeRows::new(
                "kuberay_service_condition_upgrade_in_progress",
                "Whether a RayService is upgrading (always 1; see the condition label)",
            ),
        }
    }

    fn add(&mut self, object: &dyn Any) {
        if let Some(cluster) = object.downcast_ref::<RayCluster>() {
            self.add_cluster(cluster);
        } else if let Some(job) = object.downcast_ref::<RayJob>() {
            self.add_job(job);
        } else if let Some(service) = object.downcast_ref::<RayService>() {
            self.add_service(service);
        }
    }

    fn add_cluster(&mut self, cluster: &RayCluster) {
        let meta = &cluster.metadata;
        let id = identity(meta);
        // KubeRay's owner_kind: the CRD the cluster originated from, else None.
        let owner_kind = meta
            .labels
            .as_ref()
            .and_then(|labels| labels.get(RAY_ORIGINATED_FROM_CRD_LABEL_KEY))
            .filter(|kind| *kind == "RayJob" || *kind == "RayService")
            .map_or("None", String::as_str);
        self.cluster_info
            .samples
            .push((with(id.clone(), "owner_kind", owner_kind), 1.0));
        let conditions = cluster
            .status
            .as_ref()
            .and_then(|status| status.conditions.as_ref());
        let provisioned = condition(conditions, RAY_CLUSTER_PROVISIONED);
        let is_true = provisioned.is_some_and(|condition| condition.status == "True");
        self.cluster_condition_provisioned
            .samples
            .push((with(id.clone(), "condition", is_true.to_string()), 1.0));
        // The condition turns True once and is never recomputed, so its transition time is
        // when the cluster was first provisioned.
        if let (Some(provisioned), Some(created)) = (provisioned, &meta.creation_timestamp)
            && is_true
        {
            self.cluster_provisioned_duration.samples.push((
                id,
                seconds_between(created, &provisioned.last_transition_time),
            ));
        }
    }

    fn add_job(&mut self, job: &RayJob) {
        let id = identity(&job.metadata);
        self.job_info.samples.push((id.clone(), 1.0));
        let Some(status) = &job.status else {
            return;
        };
        let Some(deployment) = status.job_deployment_status else {
            return;
        };
        // The wire name (`Complete`, `Running`, "" for New).
        let deployment_name = serde_json::to_value(deployment)
            .ok()
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default();
        self.job_deployment_status.samples.push((
            with(id.clone(), "deployment_status", deployment_name.clone()),
            1.0,
        ));
        if deployment.is_terminal()
            && let (Some(start), Some(end)) = (&status.start_time, &status.end_time)
        {
            let labels = with(
                with(id, "job_deployment_status", deployment_name),
                "retry_count",
                status.failed.unwrap_or(0).to_string(),
            );
            self.job_execution_duration
                .samples
                .push((labels, seconds_between(start, end)));
        }
    }

    fn add_service(&mut self, service: &RayService) {
        let id = identity(&service.metadata);
        self.service_info.samples.push((id.clone(), 1.0));
        let conditions = service
            .status
            .as_ref()
            .and_then(|status| status.conditions.as_ref());
        let is_true = |type_: &str| {
            condition(conditions, type_)
                .is_some_and(|condition| condition.status == "True")
                .to_string()
        };
        self.service_condition_ready
            .samples
            .push((with(id.clone(), "condition", is_true("Ready")), 1.0));
        self.service_condition_upgrade_in_progress
            .samples
            .push((with(id, "condition", is_true("UpgradeInProgress")), 1.0));
    }
}

impl Collector for ParentCaches {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut rows = ObjectRows::new();
        for source in self
            .sources
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
        {
            source.collect(&mut rows);
        }
        for family in [
            &rows.cluster_info,
            &rows.cluster_provisioned_duration,
            &rows.cluster_condition_provisioned,
            &rows.job_info,
            &rows.job_deployment_status,
            &rows.job_execution_duration,
            &rows.service_info,
            &rows.service_condition_ready,
            &rows.service_condition_upgrade_in_progress,
        ] {
            family.encode(&mut encoder)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::{reflector, watcher};

    fn store_of<K>(objects: Vec<K>) -> Store<K>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        let (reader, mut writer) = reflector::store::<K>();
        for object in objects {
            writer.apply_watcher_event(&watcher::Event::Apply(object));
        }
        reader
    }

    fn sample_lines(text: &str, family: &str) -> Vec<String> {
        text.lines()
            .filter(|line| line.starts_with(&format!("{family}{{")))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn kuberay_families_exist_even_without_objects() {
        // (The host's labelled families appear with their first sample.)
        let text = Metrics::default().encode().unwrap();
        for family in [
            "kuberay_cluster_info",
            "kuberay_cluster_provisioned_duration_seconds",
            "kuberay_cluster_condition_provisioned",
            "kuberay_job_info",
            "kuberay_job_deployment_status",
            "kuberay_job_execution_duration_seconds",
            "kuberay_service_info",
            "kuberay_service_condition_ready",
            "kuberay_service_condition_upgrade_in_progress",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family} missing:\n{text}"
            );
        }
    }

    #[test]
    fn clusters_jobs_and_services_get_kuberay_labels() {
        let metrics = Metrics::default();
        let cluster: RayCluster = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "rc", "namespace": "ns", "uid": "u1",
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"ray.io/originated-from-crd": "RayJob"}},
            "spec": {"headGroupSpec": {"rayStartParams": {}, "template": {}}},
            "status": {"conditions": [{"type": "RayClusterProvisioned", "status": "True",
                "reason": "AllPodRunningAndReadyFirstTime", "message": "",
                "lastTransitionTime": "2026-01-01T00:00:42Z"}]}
        }))
        .unwrap();
        let pending: RayCluster = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "new", "namespace": "ns", "uid": "u2"},
            "spec": {"headGroupSpec": {"rayStartParams": {}, "template": {}}}
        }))
        .unwrap();
        let job: RayJob = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "job", "namespace": "ns", "uid": "u3"},
            "spec": {},
            "status": {"jobDeploymentStatus": "Complete", "failed": 1,
                "startTime": "2026-01-01T00:00:00Z", "endTime": "2026-01-01T00:01:30Z"}
        }))
        .unwrap();
        let service: RayService = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "svc", "namespace": "ns", "uid": "u4"},
            "spec": {"rayClusterConfig": {"headGroupSpec": {"rayStartParams": {}, "template": {}}}},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "r",
                "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap();
        metrics.watch_parents(store_of(vec![cluster, pending]));
        metrics.watch_parents(store_of(vec![job]));
        metrics.watch_parents(store_of(vec![service]));
        let text = metrics.encode().unwrap();

        let mut info = sample_lines(&text, "kuberay_cluster_info");
        info.sort();
        assert_eq!(
            info,
            [
                r#"kuberay_cluster_info{name="new",namespace="ns",uid="u2",owner_kind="None"} 1.0"#,
                r#"kuberay_cluster_info{name="rc",namespace="ns",uid="u1",owner_kind="RayJob"} 1.0"#,
            ]
        );
        assert_eq!(
            sample_lines(&text, "kuberay_cluster_provisioned_duration_seconds"),
            [
                r#"kuberay_cluster_provisioned_duration_seconds{name="rc",namespace="ns",uid="u1"} 42.0"#
            ]
        );
        let mut provisioned = sample_lines(&text, "kuberay_cluster_condition_provisioned");
        provisioned.sort();
        assert_eq!(
            provisioned,
            [
                r#"kuberay_cluster_condition_provisioned{name="new",namespace="ns",uid="u2",condition="false"} 1.0"#,
                r#"kuberay_cluster_condition_provisioned{name="rc",namespace="ns",uid="u1",condition="true"} 1.0"#,
            ]
        );
        assert_eq!(
            sample_lines(&text, "kuberay_job_deployment_status"),
            [
                r#"kuberay_job_deployment_status{name="job",namespace="ns",uid="u3",deployment_status="Complete"} 1.0"#
            ]
        );
        assert_eq!(
            sample_lines(&text, "kuberay_job_execution_duration_seconds"),
            [
                r#"kuberay_job_execution_duration_seconds{name="job",namespace="ns",uid="u3",job_deployment_status="Complete",retry_count="1"} 90.0"#
            ]
        );
        assert_eq!(
            sample_lines(&text, "kuberay_service_condition_ready"),
            [
                r#"kuberay_service_condition_ready{name="svc",namespace="ns",uid="u4",condition="true"} 1.0"#
            ]
        );
        assert_eq!(
            sample_lines(&text, "kuberay_service_condition_upgrade_in_progress"),
            [
                r#"kuberay_service_condition_upgrade_in_progress{name="svc",namespace="ns",uid="u4",condition="false"} 1.0"#
            ]
        );
    }

    #[test]
    fn host_families_count_per_kind_and_plugin() {
        let metrics = Metrics::default();
        metrics.reconcile_done(
            "RayCluster",
            ReconcileOutcome::Success,
            Duration::from_millis(3),
        );
        metrics.reconcile_done(
            "RayCluster",
            ReconcileOutcome::Error,
            Duration::from_millis(3),
        );
        metrics.plugin_call("raycluster", Duration::from_micros(800), None);
        metrics.plugin_call(
            "raycluster",
            Duration::from_micros(900),
            Some("PluginTrapped"),
        );
        let text = metrics.encode().unwrap();
        for line in [
            r#"controller_runtime_reconcile_total{controller="raycluster",result="success"} 1"#,
            r#"controller_runtime_reconcile_total{controller="raycluster",result="error"} 1"#,
            r#"controller_runtime_reconcile_errors_total{controller="raycluster"} 1"#,
            r#"controller_runtime_reconcile_time_seconds_count{controller="raycluster"} 2"#,
            r#"wasmray_plugin_call_duration_seconds_count{plugin="raycluster"} 2"#,
            r#"wasmray_plugin_call_failures_total{plugin="raycluster",reason="PluginTrapped"} 1"#,
        ] {
            assert!(
                text.lines().any(|candidate| candidate == line),
                "no {line} in\n{text}"
            );
        }
    }
}
