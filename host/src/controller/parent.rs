//! The generic parent driver: one kube-rs controller per parent kind and namespace scope.
//! Gather input, call the plugin bound to the kind, carry out the answer.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::num::NonZeroU32;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::apply::{
    ChildWriter, FIRST_OTHER_CACHE, PODS_CACHE, ResourceResolver, SERVICES_CACHE, WriteReport,
    is_unreachable,
};
use super::child_index::{
    ListedIndex, OwnedIndex, ParentKindRef, api_resource, run_child_watch, watch_backoff,
};
use super::events::EventSink;
use super::expectations::{Expectation, Expectations, Lookup, Readiness};
use super::input_records::{
    PodTable, first_pod_labels, now, observe_object, observed_service, pod_record, pod_table,
};
use super::parent_state::ParentStates;
use super::plan::{self, Cached, ChildIndex, OwnedChild, ParentView, Plan};
use super::plugin_host::{CallFailure, PluginHost};
use super::ray_io::{Clusters, RayIo};
use super::scheduling;
use super::secrets::{SecretError, SecretsEnsured};
use super::status::{
    DELETION_BLOCKED_CONDITION, SCHEDULING_HELD_CONDITION, THROTTLED_CONDITION,
    WRITE_FAILURE_CONDITION, condition_reason, host_condition, plugin_failure,
    plugin_failure_condition, scheduling_held, strip_host_conditions, throttled, write_failure,
};
use super::wit::{
    Admission, DashboardReachability, DesiredObject, HostFacts, ObservedObject, ObservedPods,
    ObservedService, RayObservations, ReconcileInput, ReconcileOutput, ScheduleInput,
};
use super::write_policy::{Grant, PluginAllowance, WritePolicy};
use super::{ControllerConfig, PLUGIN_ANNOTATION, Stats, Telemetry};
use crate::health;
use crate::metrics::{Metrics, ReconcileOutcome};
use std::sync::atomic::Ordering;

/// The values of `spec.managedBy` that hand an object to this operator: KubeRay's own,
/// since WasmRay serves KubeRay's API in its place. An object managed by anyone else (e.g.
/// MultiKueue) is never passed to a plugin and never written to.
pub const MANAGED_BY_THIS_OPERATOR: &[&str] = &[wasmray_crds::constants::MANAGED_BY_KUBERAY];
/// Consecutive calls after which an object that keeps hitting a limit gets a Warning event
/// (and then every 60 times as many).
const PERSISTENT: u32 = 10;
/// Whether an object that hit a limit `count` times in a row gets a warning now: at the
/// PERSISTENT-th time, then every 60 times as many.
fn keeps_hitting(count: u32) -> bool {
    count == PERSISTENT || count.is_multiple_of(PERSISTENT * 60)
}

/// Calls in a row that follow the host's own status write promptly.
const STATUS_FOLLOW_UPS: u32 = 3;
/// Status writes in a row after which an object gets the `Throttled` condition.
const STATUS_CHURN: u32 = 30;
/// Annotation kubectl writes with a full copy of the object; dropped from the cache.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A child kind other than pods and services, watched under a label selector and passed to
/// the plugin whole.
#[derive(Clone, Debug)]
pub struct OtherChildWatch {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub selector: &'static str,
}

/// Which children a parent kind has, and how to select them.
#[derive(Clone, Debug, Default)]
pub struct ChildWatches {
    /// Label selector of the pods (None: the kind owns no pods).
    pub pods: Option<&'static str>,
    /// Label selectors of the services; one watch each. Kubernetes selectors cannot OR
    /// different keys, and each kind of service carries a different label.
    pub services: Vec<&'static str>,
    pub others: Vec<OtherChildWatch>,
}

/// A parent kind the driver serves.
pub trait ParentKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The events reporter, as KubeRay names it (e.g. `raycluster-controller`).
    const EVENT_REPORTER: &'static str;

    /// The children to watch.
    fn child_watches() -> ChildWatches;

    /// The child kinds (apiVersion, kind) a plugin may write or delete for a parent of this
    /// kind: the children KubeRay makes for it. A platform team adds more per plugin.
    const CHILD_KINDS: &'static [(&'static str, &'static str)];

    /// What a Role among the children may grant (nothing unless the kind says so).
    const ROLE_GRANTS: &'static [Grant] = &[];

    /// Whether the parent's scheduler plugin is consulted before its pods are created (the
    /// kind whose answers create pods: RayCluster, also when a RayJob owns it).
    const SCHEDULED: bool = false;

    /// The most pods the parent's spec allows, if it bounds them.
    fn pod_ceiling(&self) -> Option<usize> {
        None
    }

    /// What KubeRay's events call a child of this kind (`Created<noun>`,
    /// `Deleted<noun>`, `FailedToCreate<noun>`): the kind itself unless a parent names
    /// it after its role, e.g. a RayJob's Job is its `RayJobSubmitter`.
    fn child_event_noun(kind: &str) -> &str {
        kind
    }

    /// Objects the parent refers to but does not own, read before each call and passed
    /// as `related` (those that do not exist are left out).
    fn related(&self) -> Vec<RelatedObject> {
        Vec::new()
    }

    /// Tasks that run beside this kind's controller in one scope, on its caches (a
    /// RayCluster's autoscaler); they stop with the controller.
    fn companions(_scope: Companions<Self>) -> Vec<futures::future::BoxFuture<'static, ()>> {
        Vec::new()
    }

    /// Pods the parent does not own whose state its plugin reads (a label selector in the
    /// parent's namespace), passed with its own pods.
    fn unowned_pods_selector(&self) -> Option<String> {
        None
    }
}

/// What a scheduler decided for one answer, beyond its changes to the pod sets.
#[derive(Default)]
struct Scheduled {
    /// Its objects (e.g. a PodGroup), written before the pods.
    objects: Vec<DesiredObject>,
    /// Why the pods are held back, if they are.
    held: Option<String>,
}

/// What a companion task of a controller scope gets: the shared state and the scope's
/// caches of parents and pods.
pub struct Companions<P: kube::Resource<DynamicType = ()> + 'static> {
    pub shared: Arc<Shared>,
    pub parents: reflector::Store<P>,
    pub pods: Arc<OwnedIndex<PodTable>>,
}

/// An object in the parent's namespace that the parent refers to by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelatedObject {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub name: String,
}

impl RelatedObject {
    pub fn named(api_version: &'static str, kind: &'static str, name: impl Into<String>) -> Self {
        RelatedObject {
            api_version,
            kind,
            name: name.into(),
        }
    }
}

/// What every scope and kind shares.
pub struct Shared {
    pub client: Client,
    /// Events go through their own client and rate limiter (see `events.rs`).
    pub events_client: Client,
    pub plugins: PluginHost,
    pub config: ControllerConfig,
    /// Bounds reconciles in flight across namespaces and kinds.
    pub permits: Semaphore,
    pub stats: Arc<Stats>,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<health::Readiness>,
    resolver: ResourceResolver,
    /// Cancelled when the controllers stop: every write in flight stops with it.
    pub stopping: CancellationToken,
    /// Write rounds per object (by uid), so that one object's churn cannot take the API
    /// budget of the others.
    write_rounds: WriteRounds,
}

type WriteRounds = governor::RateLimiter<
    String,
    governor::state::keyed::DefaultKeyedStateStore<String>,
    governor::clock::DefaultClock,
>;

impl Shared {
    pub fn new(
        clients: super::Clients,
        plugins: PluginHost,
        config: ControllerConfig,
        telemetry: Telemetry,
    ) -> Arc<Self> {
        let permits = Semaphore::new(usize::from(config.concurrency.max(1)));
        let rate =
            NonZeroU32::new(config.object_write_rounds_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.object_write_burst).unwrap_or(NonZeroU32::MIN);
        let write_rounds =
            governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst));
        Arc::new(Shared {
            client: clients.api,
            events_client: clients.events,
            plugins,
            config,
            permits,
            stats: telemetry.stats,
            metrics: telemetry.metrics,
            readiness: telemetry.readiness,
            resolver: ResourceResolver::default(),
            stopping: CancellationToken::new(),
            write_rounds,
        })
    }

    fn count_writes(&self, writes: usize) {
        self.stats
            .writes
            .fetch_add(u64::try_from(writes).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub(crate) fn host_facts(&self) -> HostFacts {
        HostFacts {
            operator_version: env!("CARGO_PKG_VERSION").to_owned(),
            feature_gates: self
                .config
                .feature_gates
                .iter()
                .map(|(gate, on)| (gate.clone(), *on))
                .collect(),
            settings: self
                .config
                .settings
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
        }
    }
}

/// A failed reconcile.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{0}")]
    Plugin(CallFailure),
    #[error("{count} write(s) failed: {first}")]
    Writes {
        count: usize,
        first: String,
        /// A write failed because the API server could not be reached.
        unreachable: bool,
    },
    #[error("updating the finalizers of {name}: {source}")]
    Metadata {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("writing the status of {name}: {source}")]
    Status {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading {what}: {source}")]
    Observe {
        what: String,
        #[source]
        source: kube::Error,
    },
}

impl ReconcileError {
    /// Whether the API server could not be reached (rather than refused something).
    fn unreachable(&self) -> bool {
        match self {
            ReconcileError::Plugin(_) => false,
            ReconcileError::Writes { unreachable, .. } => *unreachable,
            ReconcileError::Metadata { source, .. }
            | ReconcileError::Status { source, .. }
            | ReconcileError::Observe { source, .. } => is_unreachable(source),
            ReconcileError::Secret(error) => error.unreachable(),
        }
    }
}

/// One controller's state: a parent kind in one namespace scope.
pub struct Scope<P> {
    shared: Arc<Shared>,
    namespace: Option<String>,
    pods: Arc<OwnedIndex<PodTable>>,
    services: Vec<Arc<OwnedIndex<ObservedService>>>,
    others: Vec<(OtherChildWatch, Arc<OwnedIndex<ObservedObject>>)>,
    /// Everything remembered per parent between reconciles, dropped by one `forget`.
    states: Arc<ParentStates>,
    expectations: Expectations,
    events: EventSink,
    /// Ray queries and action results between calls.
    ray: RayIo,
    secrets: SecretsEnsured,
    /// Set by the first reconcile that finds the API server unreachable; the recovery task
    /// clears it once the API server answers again.
    api_down: std::sync::atomic::AtomicBool,
    outage: Notify,
    _kind: PhantomData<fn() -> P>,
}

/// Services of any service cache.
struct AnyService<'a>(&'a [Arc<OwnedIndex<ObservedService>>]);

impl Lookup for AnyService<'_> {
    fn has_name(&self, parent_uid: &str, name: &str) -> bool {
        self.0.iter().any(|index| index.has_name(parent_uid, name))
    }
    fn has_live_uid(&self, parent_uid: &str, uid: &str) -> bool {
        self.0
            .iter()
            .any(|index| index.has_live_uid(parent_uid, uid))
    }
}

impl<P: ParentKind> Scope<P> {
    fn new(shared: Arc<Shared>, namespace: Option<String>) -> Self {
        let watches = P::child_watches();
        let scope_text = namespace.as_deref().unwrap_or("all namespaces");
        let states = Arc::new(ParentStates::default());
        let events = EventSink::start(
            shared.events_client.clone(),
            Reporter {
                controller: P::EVENT_REPORTER.to_owned(),
                instance: std::env::var("POD_NAME").ok(),
            },
            Arc::clone(&shared.metrics),
        );
        Scope {
            pods: Arc::new(OwnedIndex::new(format!(
                "pods ({}) in {scope_text}",
                watches.pods.unwrap_or("-")
            ))),
            services: watches
                .services
                .iter()
                .map(|selector| {
                    Arc::new(OwnedIndex::new(format!(
                        "services ({selector}) in {scope_text}"
                    )))
                })
                .collect(),
            others: watches
                .others
                .iter()
                .map(|other| {
                    let index = OwnedIndex::new(format!(
                        "{} ({}) in {scope_text}",
                        other.plural, other.selector
                    ));
                    (other.clone(), Arc::new(index))
                })
                .collect(),
            expectations: Expectations::new(shared.config.expectation_timeout, states.clone()),
            events,
            ray: RayIo::new(&shared.config, states.clone()),
            secrets: SecretsEnsured::new(states.clone()),
            states,
            shared,
            namespace,
            api_down: std::sync::atomic::AtomicBool::new(false),
            outage: Notify::new(),
            _kind: PhantomData,
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match &self.namespace {
            Some(namespace) => Api::namespaced(self.shared.client.clone(), namespace),
            None => Api::all(self.shared.client.clone()),
        }
    }

    fn dynamic_api(&self, other: &OtherChildWatch) -> Api<DynamicObject> {
        let resource = api_resource(other.api_version, other.kind, other.plural);
        match &self.namespace {
            Some(namespace) => {
                Api::namespaced_with(self.shared.client.clone(), namespace, &resource)
            }
            None => Api::all_with(self.shared.client.clone(), &resource),
        }
    }

    /// Every child cache, as its relist and sync signals.
    fn indexes(&self) -> Vec<Arc<dyn ListedIndex>> {
        let mut indexes: Vec<Arc<dyn ListedIndex>> = Vec::new();
        if P::child_watches().pods.is_some() {
            indexes.push(self.pods.clone());
        }
        for index in &self.services {
            indexes.push(index.clone());
        }
        for (_, index) in &self.others {
            indexes.push(index.clone());
        }
        indexes
    }

    /// Expectation cache id of a child kind.
    fn cache_of(&self, api_version: &str, kind: &str) -> Option<usize> {
        match (api_version, kind) {
            ("v1", "Pod") => Some(PODS_CACHE),
            ("v1", "Service") => Some(SERVICES_CACHE),
            _ => self
                .others
                .iter()
                .position(|(other, _)| other.api_version == api_version && other.kind == kind)
                .map(|index| FIRST_OTHER_CACHE + index),
        }
    }

    fn readiness(&self, parent: &P, uid: &str) -> Readiness {
        let services = AnyService(&self.services);
        let mut lookups: Vec<&dyn Lookup> = vec![&*self.pods, &services];
        lookups.extend(self.others.iter().map(|(_, index)| &**index as &dyn Lookup));
        self.expectations
            .check(uid, parent.meta().resource_version.as_deref(), &lookups)
    }

    /// The input of a plugin call; `parent_json` is the parent as JSON, whose status loses
    /// the host's own conditions here.
    fn gather(&self, parent: &P, mut parent_json: Value, uid: &str) -> ReconcileInput {
        if let Some(status) = parent_json.get_mut("status") {
            strip_host_conditions(status);
        }
        let parent_text = parent_json.to_string();
        let children = self.pods.children_of(uid);
        let pods = ObservedPods::from(PodTable::concat(children.iter().map(|entry| &entry.value)));
        let mut services: Vec<ObservedService> = Vec::new();
        for index in &self.services {
            for entry in index.children_of(uid) {
                if !services.iter().any(|known| known.uid == entry.uid) {
                    services.push(entry.value.clone());
                }
            }
        }
        let children = self
            .others
            .iter()
            .flat_map(|(_, index)| index.children_of(uid))
            .map(|entry| entry.value.clone())
            .collect();
        let ray = RayObservations {
            dashboard: DashboardReachability::NotChecked,
            jobs: Vec::new(),
            serve_status: None,
            action_results: Vec::new(),
            extensions: Vec::new(),
        };
        let failed_writes = self
            .states
            .with_existing(uid, |state| std::mem::take(&mut state.failed_writes))
            .unwrap_or_default();
        let plugin = self.plugin_for(parent);
        ReconcileInput {
            kind: P::kind(&()).into_owned(),
            parent: parent_text,
            pods,
            services,
            children,
            related: Vec::new(),
            ray,
            failed_writes,
            now: now(),
            config: self
                .shared
                .config
                .plugin_config
                .get(&plugin)
                .cloned()
                .unwrap_or_default(),
            host: self.shared.host_facts(),
        }
    }

    /// Adds to `input` what is read outside the child caches right before the call: the
    /// related objects and unowned pods.
    async fn observe_outside(
        &self,
        parent: &P,
        input: &mut ReconcileInput,
    ) -> Result<(), ReconcileError> {
        let namespace = parent.namespace().unwrap_or_default();
        for related in parent.related() {
            let what = || format!("{} {namespace}/{}", related.kind, related.name);
            let resource = match self
                .shared
                .resolver
                .resolve(&self.shared.client, related.api_version, related.kind)
                .await
            {
                Ok(resource) => resource,
                // A kind the API server does not serve (Kueue not installed): no such object.
                Err(kube::Error::Discovery(_)) => continue,
                Err(kube::Error::Api(status)) if status.is_not_found() => continue,
                Err(source) => {
                    return Err(ReconcileError::Observe {
                        what: what(),
                        source,
                    });
                }
            };
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.shared.client.clone(), &namespace, &resource);
            let found =
                api.get_opt(&related.name)
                    .await
                    .map_err(|source| ReconcileError::Observe {
                        what: what(),
                        source,
                    })?;
            if let Some(object) = found {
                input
                    .related
                    .push(observe_object(&object, related.api_version, related.kind));
            }
        }
        if let Some(selector) = parent.unowned_pods_selector() {
            let api: Api<k8s_openapi::api::core::v1::Pod> =
                Api::namespaced(self.shared.client.clone(), &namespace);
            let pods = api
                .list(&kube::api::ListParams::default().labels(&selector))
                .await
                .map_err(|source| ReconcileError::Observe {
                    what: format!("pods ({selector}) in {namespace}"),
                    source,
                })?;
            // The selected pods join the owned ones.
            let mut table =
                PodTable::from(std::mem::replace(&mut input.pods, ObservedPods::empty()));
            for pod in &pods.items {
                table.push(&pod_record(pod));
            }
            input.pods = ObservedPods::from(table);
        }
        Ok(())
    }

    /// Where the Ray clusters a plugin names are looked up: `known` (its children and
    /// related objects), else the API server.
    fn clusters<'a>(&'a self, namespace: &'a str, known: &'a [ObservedObject]) -> Clusters<'a> {
        Clusters {
            client: &self.shared.client,
            namespace,
            known,
        }
    }

    /// The plugin for this object: its annotation, else the kind's binding.
    fn plugin_for(&self, parent: &P) -> String {
        parent
            .annotations()
            .get(PLUGIN_ANNOTATION)
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .or_else(|| {
                self.shared
                    .config
                    .bindings
                    .get(P::kind(&()).as_ref())
                    .cloned()
            })
            .unwrap_or_default()
    }

    /// Queues events on `parent`; they are published in the background.
    fn publish(&self, parent: &P, events: Vec<(EventType, String, String)>) {
        if !events.is_empty() {
            self.events.publish(&parent.object_ref(&()), events);
        }
    }

    /// Server-side applies `status` under `manager`; returns the new resourceVersion.
    async fn apply_status(
        &self,
        parent: &P,
        manager: &str,
        status: Value,
    ) -> Result<Option<String>, ReconcileError> {
        let name = parent.name_any();
        let api: Api<P> = Api::namespaced(
            self.shared.client.clone(),
            &parent.namespace().unwrap_or_default(),
        );
        let body = json!({
            "apiVersion": P::api_version(&()),
            "kind": P::kind(&()),
            "metadata": {"name": name},
            "status": status,
        });
        self.shared.count_writes(1);
        let written = api
            .patch_status(
                &name,
                &PatchParams::apply(manager).force(),
                &Patch::Apply(&body),
            )
            .await
            .map_err(|source| ReconcileError::Status {
                name: name.clone(),
                source,
            })?;
        Ok(written.resource_version())
    }

    /// Replaces the parent's finalizers, guarded by its resourceVersion.
    async fn set_finalizers(
        &self,
        parent: &P,
        uid: &str,
        finalizers: Vec<String>,
    ) -> Result<(), ReconcileError> {
        let name = parent.name_any();
        let api: Api<P> = Api::namespaced(
            self.shared.client.clone(),
            &parent.namespace().unwrap_or_default(),
        );
        let patch = json!({"metadata": {
            "finalizers": finalizers,
            "resourceVersion": parent.resource_version(),
        }});
        self.shared.count_writes(1);
        let written = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| ReconcileError::Metadata {
                name: name.clone(),
                source,
            })?;
        if let Some(version) = written.resource_version() {
            self.expectations
                .expect(uid, [Expectation::ParentVersion(version)]);
        }
        Ok(())
    }

    fn failure_manager(&self) -> String {
        format!("{}-plugin-failure", self.shared.config.field_manager)
    }

    /// Sets the `PluginFailure` condition and records a Warning event.
    async fn record_plugin_failure(
        &self,
        parent: &P,
        uid: &str,
        current: Option<&Value>,
        failure: &CallFailure,
    ) {
        tracing::warn!(object = %parent.name_any(), namespace = ?parent.namespace(), error = %failure, "plugin call failed");
        let reason = condition_reason(&failure.reason);
        let message = failure.to_string();
        if let Some(condition) = plugin_failure_condition(
            current,
            &reason,
            &message,
            &now_rfc3339(),
            parent.meta().generation,
        ) {
            self.apply_host_condition(parent, uid, &self.failure_manager(), condition)
                .await;
        }
        self.publish(
            parent,
            vec![(EventType::Warning, "PluginFailure".to_owned(), message)],
        );
    }

    /// Applies one host condition under its own field manager; a failure is logged, as the
    /// condition only reports.
    async fn apply_host_condition(&self, parent: &P, uid: &str, manager: &str, condition: Value) {
        match self
            .apply_status(parent, manager, json!({"conditions": [condition]}))
            .await
        {
            Ok(Some(version)) => self
                .expectations
                .expect(uid, [Expectation::ParentVersion(version)]),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(object = %parent.name_any(), %error, "cannot set a host condition")
            }
        }
    }

    /// Carries out a plan (see `plan.rs` for the order). `cancel` stops the writes.
    #[allow(clippy::too_many_arguments)]
    async fn carry_out(
        &self,
        parent: &P,
        uid: &str,
        current_status: Option<&Value>,
        plugin: &str,
        plan: Plan,
        known: &[ObservedObject],
        cancel: &CancellationToken,
    ) -> Result<Action, ReconcileError> {
        let namespace = parent.namespace().unwrap_or_default();
        if let Some(finalizers) = &plan.add_finalizers {
            // Before anything the finalizer guards exists.
            self.set_finalizers(parent, uid, finalizers.clone()).await?;
        }
        let cache_of = |api_version: &str, kind: &str| self.cache_of(api_version, kind);
        let writer = ChildWriter {
            client: &self.shared.client,
            namespace: &namespace,
            field_manager: &self.shared.config.field_manager,
            resolver: &self.shared.resolver,
            cache_of: &cache_of,
            event_noun: &P::child_event_noun,
            cancel,
        };
        let mut report = WriteReport::default();
        if !plan.secrets.is_empty() {
            // Before the children that read them.
            report.merge(self.ensure_secrets(parent, uid, &plan.secrets).await?);
        }
        // The scheduler's objects (a PodGroup) before anything that uses them: if one cannot
        // be written, no pod of this answer is created, so no gang starts half-way.
        let mut pods_blocked = false;
        if !plan.scheduler_objects.is_empty() && !report.cancelled {
            let written = writer.write_objects(plan.scheduler_objects).await;
            if let Some(first) = written.errors.first()
                && !plan.pods.is_empty()
            {
                pods_blocked = true;
                report.events.push((
                    EventType::Warning,
                    "FailedToSchedulePods".to_owned(),
                    format!(
                        "{} pods not created: an object their scheduler needs could not be written ({first})",
                        plan.pods.len()
                    ),
                ));
            }
            report.merge(written);
        }
        // KubeRay's order: services and other children, then pods.
        if !plan.objects.is_empty() && !report.cancelled {
            report.merge(writer.write_objects(plan.objects).await);
        }
        if !plan.pods.is_empty() && !report.cancelled && !pods_blocked {
            report.merge(writer.create_pods(plan.pods).await);
        }
        if !plan.deletions.is_empty() && !report.cancelled {
            report.merge(writer.delete(&plan.deletions).await);
        }
        self.shared.count_writes(report.writes);
        self.expectations
            .expect(uid, std::mem::take(&mut report.expectations));
        if report.cancelled {
            // The parent is going away or the operator stops: what was written stays
            // recorded, nothing more is written for this answer.
            self.publish(parent, std::mem::take(&mut report.events));
            tracing::info!(object = %parent.name_any(), namespace, writes = report.writes, "writes cancelled");
            return Ok(Action::await_change());
        }
        if !report.failed.is_empty() {
            let failed = std::mem::take(&mut report.failed);
            self.states.with(uid, |state| state.failed_writes = failed);
        }

        let status_written = plan.status.is_some();
        if let Some(new_status) = plan.status {
            let manager = self.shared.config.field_manager.clone();
            match self.apply_status(parent, &manager, new_status).await {
                Ok(Some(version)) => self
                    .expectations
                    .expect(uid, [Expectation::ParentVersion(version)]),
                Ok(None) => {}
                Err(error) => {
                    let message = error.to_string();
                    report.errors.push(message.clone());
                    report.unreachable |= error.unreachable();
                    report.events.push((
                        EventType::Warning,
                        "FailedToUpdateStatus".to_owned(),
                        message,
                    ));
                }
            }
        }
        if plugin_failure(current_status).is_some() {
            // The call succeeded: withdraw the failure condition (applying nothing under
            // its manager removes what that manager set).
            if let Some(version) = self
                .apply_status(parent, &self.failure_manager(), json!({}))
                .await?
            {
                self.expectations
                    .expect(uid, [Expectation::ParentVersion(version)]);
            }
        }
        self.report_write_failures(parent, uid, current_status, &report)
            .await;
        self.report_scheduling_hold(parent, uid, current_status, plan.scheduling_held)
            .await;
        if !plan.held_while_deleting.is_empty() {
            let holder = self
                .shared
                .plugins
                .runtime()
                .registry()
                .get(plugin)
                .map_or_else(|| format!("{plugin:?}"), |plugin| plugin.id().to_string());
            let message = format!(
                "deletion waits for finalizer {} held by plugin {holder}",
                plan.held_while_deleting.join(", ")
            );
            if let Some(condition) = host_condition(
                current_status,
                DELETION_BLOCKED_CONDITION,
                "FinalizerHeld",
                &message,
                &now_rfc3339(),
                parent.meta().generation,
            ) {
                self.apply_host_condition(parent, uid, &self.deletion_manager(), condition)
                    .await;
            }
        }

        let mut events = std::mem::take(&mut report.events);
        events.extend(plan.events);
        self.publish(parent, events);

        let new_query = self.ray.remember(uid, plan.ray_queries);
        if let Some(first) = report.errors.first() {
            // Ray actions and released finalizers wait for a call whose writes all
            // succeeded: the plugin decided them assuming its writes (e.g. the submission
            // id in the status before the submit, the cleanup Job before the release).
            return Err(ReconcileError::Writes {
                count: report.errors.len(),
                first: first.clone(),
                unreachable: report.unreachable,
            });
        }
        let acted = !plan.ray_actions.is_empty();
        if acted {
            self.ray
                .act(uid, &self.clusters(&namespace, known), plan.ray_actions)
                .await;
        }
        if let Some(finalizers) = plan.release_finalizers {
            self.set_finalizers(parent, uid, finalizers).await?;
        }
        let requested = self
            .floored(parent, uid, current_status, plan.requeue_after)
            .await;
        // The parent watch ignores the host's own status writes, so after one the plugin is
        // called again by the host: promptly the first few times in a row (a plugin that
        // moves through states, e.g. a RayJob's, sees its own status), then at the requeue
        // floor, so a status that changes on every call is written about once per floor and
        // gets the Throttled condition when it keeps doing so.
        let status_rounds = self.states.with(uid, |state| {
            state.status_rounds = if status_written {
                state.status_rounds.saturating_add(1)
            } else {
                0
            };
            state.status_rounds
        });
        let status_follow_up = status_written.then(|| {
            if status_rounds <= STATUS_FOLLOW_UPS {
                plan::FOLLOW_UP
            } else {
                self.shared.config.requeue_floor
            }
        });
        if status_rounds == STATUS_CHURN {
            let message = format!(
                "the plugin changed the status on {status_rounds} calls in a row; it is called again at most every {:?}",
                self.shared.config.requeue_floor
            );
            self.throttle_warning(parent, uid, current_status, "StatusChurn", message)
                .await;
        } else if status_rounds == 0 {
            self.throttle_over(parent, uid, current_status, "StatusChurn")
                .await;
        }
        let next = plan::next_call(requested, acted, new_query);
        let next = match (next, status_follow_up) {
            (Some(next), Some(follow_up)) => Some(next.min(follow_up)),
            (next, follow_up) => next.or(follow_up),
        };
        Ok(next.map_or_else(Action::await_change, Action::requeue))
    }

    /// The plugin's requeue, raised to the floor; an object that keeps asking for less gets
    /// a Warning event (and the metric counts every time).
    async fn floored(
        &self,
        parent: &P,
        uid: &str,
        current_status: Option<&Value>,
        requested: Option<Duration>,
    ) -> Option<Duration> {
        let floor = self.shared.config.requeue_floor;
        let below = requested.is_some_and(|after| after < floor);
        let hits = self.states.with(uid, |state| {
            state.requeue_floor_hits = if below {
                state.requeue_floor_hits.saturating_add(1)
            } else {
                0
            };
            state.requeue_floor_hits
        });
        if below {
            self.shared
                .metrics
                .throttled(&P::kind(&()), "requeue-floor");
            if keeps_hitting(hits) {
                let message = format!(
                    "the plugin asked {hits} times in a row to be called again in less than the floor of {floor:?}; it is called every {floor:?}"
                );
                self.throttle_warning(parent, uid, current_status, "RequeueFloor", message)
                    .await;
            }
        } else {
            self.throttle_over(parent, uid, current_status, "RequeueFloor")
                .await;
        }
        requested.map(|after| after.max(floor))
    }

    /// A Warning event, a log line and the `Throttled` condition: an object keeps hitting
    /// a host limit.
    async fn throttle_warning(
        &self,
        parent: &P,
        uid: &str,
        current_status: Option<&Value>,
        reason: &str,
        message: String,
    ) {
        tracing::warn!(object = %parent.name_any(), namespace = ?parent.namespace(), reason, "{message}");
        if let Some(condition) = host_condition(
            current_status,
            THROTTLED_CONDITION,
            reason,
            &message,
            &now_rfc3339(),
            parent.meta().generation,
        ) {
            self.apply_host_condition(parent, uid, &self.throttled_manager(), condition)
                .await;
        }
        self.publish(
            parent,
            vec![(EventType::Warning, reason.to_owned(), message)],
        );
    }

    /// Withdraws the `Throttled` condition set for `reason`, if it is set.
    async fn throttle_over(
        &self,
        parent: &P,
        uid: &str,
        current_status: Option<&Value>,
        reason: &str,
    ) {
        if throttled(current_status).is_some_and(|condition| condition["reason"] == reason)
            && let Ok(Some(version)) = self
                .apply_status(parent, &self.throttled_manager(), json!({}))
                .await
        {
            self.expectations
                .expect(uid, [Expectation::ParentVersion(version)]);
        }
    }

    /// Sets the `SchedulingHeld` condition (and a Normal event when it is new) while the
    /// scheduler holds the pods back; withdraws it otherwise.
    async fn report_scheduling_hold(
        &self,
        parent: &P,
        uid: &str,
        current_status: Option<&Value>,
        held: Option<String>,
    ) {
        let manager = format!("{}-scheduling", self.shared.config.field_manager);
        let Some(message) = held else {
            if scheduling_held(current_status).is_some()
                && let Ok(Some(version)) = self.apply_status(parent, &manager, json!({})).await
            {
                self.expectations
                    .expect(uid, [Expectation::ParentVersion(version)]);
            }
            return;
        };
        if let Some(condition) = host_condition(
            current_status,
            SCHEDULING_HELD_CONDITION,
            "HeldByScheduler",
            &message,
            &now_rfc3339(),
            parent.meta().generation,
        ) {
            self.apply_host_condition(parent, uid, &manager, condition)
                .await;
            self.publish(
                parent,
                vec![(EventType::Normal, "SchedulingHeld".to_owned(), message)],
            );
        }
    }

    /// Calls the scheduler plugin on the pods the reconciler wants to create: its patches
    /// change `output`'s pod sets, a hold empties them, its events join the answer's. Its
    /// objects and hold are returned for the plan.
    async fn schedule(
        &self,
        scheduler: &str,
        parent_text: String,
        existing_pods: ObservedPods,
        output: &mut ReconcileOutput,
    ) -> Result<Scheduled, CallFailure> {
        let input = ScheduleInput {
            kind: P::kind(&()).into_owned(),
            parent: parent_text,
            pod_sets: output.create_pods.clone(),
            existing_pods,
            now: now(),
            config: self
                .shared
                .config
                .plugin_config
                .get(scheduler)
                .cloned()
                .unwrap_or_default(),
            host: self.shared.host_facts(),
        };
        self.shared
            .stats
            .plugin_calls
            .fetch_add(1, Ordering::Relaxed);
        let called = std::time::Instant::now();
        let answer = self.shared.plugins.schedule(scheduler, &input).await;
        self.shared.metrics.plugin_call(
            scheduler,
            called.elapsed(),
            answer.as_ref().err().map(|failure| failure.reason.as_str()),
        );
        let decision = answer?;
        scheduling::patch_pod_sets(&mut output.create_pods, &decision.patches).map_err(|what| {
            CallFailure {
                reason: "PluginMalformedOutput".to_owned(),
                message: format!("the answer of scheduler {scheduler} was not carried out: {what}"),
                retry_after: None,
            }
        })?;
        output.events.extend(decision.events);
        let held = match decision.admission {
            Admission::Admit => None,
            Admission::Hold(why) => {
                output.create_pods.clear();
                Some(format!("scheduler {scheduler} holds the pods: {why}"))
            }
        };
        Ok(Scheduled {
            objects: decision.extra_objects,
            held,
        })
    }

    fn throttled_manager(&self) -> String {
        format!("{}-throttled", self.shared.config.field_manager)
    }

    /// Sets (or clears) the `WriteFailure` condition from the writes of one answer, and logs
    /// each failure at warn.
    async fn report_write_failures(
        &self,
        parent: &P,
        uid: &str,
        current_status: Option<&Value>,
        report: &WriteReport,
    ) {
        let manager = self.write_failure_manager();
        let Some(first) = report.errors.first() else {
            if write_failure(current_status).is_some()
                && let Ok(Some(version)) = self.apply_status(parent, &manager, json!({})).await
            {
                self.expectations
                    .expect(uid, [Expectation::ParentVersion(version)]);
            }
            return;
        };
        for error in &report.errors {
            tracing::warn!(object = %parent.name_any(), namespace = ?parent.namespace(), %error, "write failed");
        }
        let message = if report.errors.len() == 1 {
            first.clone()
        } else {
            format!("{first} (and {} more)", report.errors.len() - 1)
        };
        let reason = if report.unreachable {
            "APIServerUnreachable"
        } else {
            "WriteRejected"
        };
        if let Some(condition) = host_condition(
            current_status,
            WRITE_FAILURE_CONDITION,
            reason,
            &message,
            &now_rfc3339(),
            parent.meta().generation,
        ) {
            self.apply_host_condition(parent, uid, &manager, condition)
                .await;
        }
    }

    /// None if the object may make a write round now, else how long until it may; an object
    /// that keeps being held back gets a Warning event.
    async fn write_round_wait(
        &self,
        parent: &P,
        uid: &str,
        current_status: Option<&Value>,
    ) -> Option<Duration> {
        let clock = governor::clock::DefaultClock::default();
        let wait = match self.shared.write_rounds.check_key(&uid.to_owned()) {
            Ok(()) => None,
            Err(not_until) => {
                use governor::clock::Clock as _;
                Some(not_until.wait_time_from(clock.now()))
            }
        };
        let held = self.states.with(uid, |state| {
            state.rate_limited = if wait.is_some() {
                state.rate_limited.saturating_add(1)
            } else {
                0
            };
            state.rate_limited
        });
        if wait.is_some() {
            self.shared.metrics.throttled(&P::kind(&()), "write-rate");
            if keeps_hitting(held) {
                let config = &self.shared.config;
                let message = format!(
                    "writes held back {held} times in a row: over the per-object rate of {} write rounds per second (burst {})",
                    config.object_write_rounds_per_second, config.object_write_burst
                );
                self.throttle_warning(parent, uid, current_status, "WriteRateLimited", message)
                    .await;
            }
        } else {
            self.throttle_over(parent, uid, current_status, "WriteRateLimited")
                .await;
        }
        wait
    }

    fn write_failure_manager(&self) -> String {
        format!("{}-write-failure", self.shared.config.field_manager)
    }

    fn clear_failures(&self, uid: &str) {
        self.states.with_existing(uid, |state| state.failures = 0);
    }

    /// Creates the Secrets the plugin asked for that do not exist yet.
    async fn ensure_secrets(
        &self,
        parent: &P,
        uid: &str,
        wanted: &[super::wit::GeneratedSecret],
    ) -> Result<WriteReport, ReconcileError> {
        let Some(owner) = controller_ref(parent) else {
            return Ok(WriteReport::default());
        };
        let api = Api::namespaced(
            self.shared.client.clone(),
            &parent.namespace().unwrap_or_default(),
        );
        let created = self.secrets.ensure(&api, uid, &owner, wanted).await?;
        Ok(WriteReport {
            writes: created,
            ..WriteReport::default()
        })
    }

    fn deletion_manager(&self) -> String {
        format!("{}-deletion", self.shared.config.field_manager)
    }
}

/// The parent's cached children, for the plan.
struct ScopeChildren<'a, P> {
    scope: &'a Scope<P>,
    uid: &'a str,
    namespace: &'a str,
}

impl<P: ParentKind> ChildIndex for ScopeChildren<'_, P> {
    fn owned(&self, api_version: &str, kind: &str) -> Option<Vec<OwnedChild>> {
        let (uid, scope) = (self.uid, self.scope);
        let labels_of = |pairs: &[(String, String)]| pairs.iter().cloned().collect();
        match (api_version, kind) {
            ("v1", "Pod") => None,
            ("v1", "Service") => {
                let mut owned: Vec<OwnedChild> = Vec::new();
                for index in &scope.services {
                    for entry in index.children_of(uid) {
                        if !entry.terminating && !owned.iter().any(|known| known.uid == entry.uid) {
                            owned.push(OwnedChild {
                                name: entry.name.clone(),
                                uid: entry.uid.clone(),
                                labels: labels_of(&entry.value.labels),
                            });
                        }
                    }
                }
                Some(owned)
            }
            _ => {
                let (_, index) = scope
                    .others
                    .iter()
                    .find(|(other, _)| other.api_version == api_version && other.kind == kind)?;
                Some(
                    index
                        .children_of(uid)
                        .iter()
                        .filter(|entry| !entry.terminating)
                        .map(|entry| OwnedChild {
                            name: entry.name.clone(),
                            uid: entry.uid.clone(),
                            labels: object_labels(&entry.value.object),
                        })
                        .collect(),
                )
            }
        }
    }

    fn find(&self, api_version: &str, kind: &str, name: &str) -> Cached {
        let (uid, scope) = (self.uid, self.scope);
        if (api_version, kind) == ("v1", "Pod") {
            if let Some(entry) = scope.pods.child(uid, name) {
                return Cached::Owned(OwnedChild {
                    name: entry.name.clone(),
                    uid: entry.uid.clone(),
                    labels: first_pod_labels(&entry.value),
                });
            }
            return match scope.pods.parent_of(self.namespace, name) {
                Some(_) => Cached::OtherParent,
                None => Cached::Absent,
            };
        }
        let Some(owned) = self.owned(api_version, kind) else {
            return Cached::KindNotWatched;
        };
        if let Some(child) = owned.into_iter().find(|child| child.name == name) {
            return Cached::Owned(child);
        }
        let elsewhere = match (api_version, kind) {
            ("v1", "Service") => scope
                .services
                .iter()
                .any(|index| index.parent_of(self.namespace, name).is_some()),
            _ => scope
                .others
                .iter()
                .filter(|(other, _)| other.api_version == api_version && other.kind == kind)
                .any(|(_, index)| index.parent_of(self.namespace, name).is_some()),
        };
        if elsewhere {
            Cached::OtherParent
        } else {
            Cached::Absent
        }
    }
}

/// The owner reference every child gets. As KubeRay's controller references, it blocks the
/// owner's foreground deletion until the child is gone.
fn controller_ref<P: ParentKind>(parent: &P) -> Option<OwnerReference> {
    parent
        .controller_owner_ref(&())
        .map(|owner| OwnerReference {
            block_owner_deletion: Some(true),
            ..owner
        })
}

/// `metadata.labels` of an object passed whole.
fn object_labels(object: &str) -> BTreeMap<String, String> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(default)]
        metadata: Meta,
    }
    #[derive(serde::Deserialize, Default)]
    struct Meta {
        #[serde(default)]
        labels: BTreeMap<String, String>,
    }
    serde_json::from_str::<Head>(object)
        .map(|head| head.metadata.labels)
        .unwrap_or_default()
}

/// Now as Kubernetes writes condition times (RFC 3339, whole seconds).
fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now())
        .to_string()
}

async fn reconcile<P: ParentKind>(
    parent: Arc<P>,
    scope: Arc<Scope<P>>,
) -> Result<Action, ReconcileError> {
    scope
        .shared
        .stats
        .reconciles
        .fetch_add(1, Ordering::Relaxed);
    let Some(uid) = parent.uid() else {
        return Ok(Action::await_change());
    };
    let deleting = parent.meta().deletion_timestamp.is_some();
    if deleting && parent.finalizers().is_empty() {
        // Being deleted with nothing to finalise: the garbage collector removes the
        // children.
        return Ok(Action::await_change());
    }
    // Serialised once: the gate, the input and the status comparison all read it.
    let parent_json = serde_json::to_value(&*parent).unwrap_or(Value::Null);
    let managed_by = parent_json
        .pointer("/spec/managedBy")
        .and_then(Value::as_str);
    if let Some(manager) = managed_by
        && !MANAGED_BY_THIS_OPERATOR.contains(&manager)
    {
        // Another controller (e.g. MultiKueue) owns this object: not a single call or write.
        return Ok(Action::await_change());
    }
    if let Readiness::Waiting(remaining) = scope.readiness(&parent, &uid) {
        tracing::trace!(object = %parent.name_any(), ?remaining, "waiting for the host's own writes to show in the caches");
        // A cache event for the awaited write triggers the next reconcile; the requeue is
        // the safety net for a write whose event never comes.
        return Ok(Action::requeue(remaining));
    }
    // The semaphore is never closed; an error could only mean shutdown.
    let Ok(_permit) = scope.shared.permits.acquire().await else {
        return Ok(Action::await_change());
    };
    let plugin = scope.plugin_for(&parent);
    let scheduler = if P::SCHEDULED && !deleting {
        scheduling::scheduler_for(
            parent.annotations(),
            scope.shared.config.batch_scheduler.as_deref(),
        )
    } else {
        None
    };
    // The status as it is (host conditions included) is compared with the answer's later; it is
    // small, so it is copied rather than the whole parent.
    let current_status = parent_json.get("status").cloned();
    let mut input = scope.gather(&parent, parent_json, &uid);
    // What the scheduler sees of the parent is what the reconciler saw.
    let schedule_basis = scheduler
        .as_ref()
        .map(|_| (input.parent.clone(), input.pods.clone()));
    scope.observe_outside(&parent, &mut input).await?;
    let known: Vec<ObservedObject> = input
        .children
        .iter()
        .chain(&input.related)
        .cloned()
        .collect();
    let namespace = parent.namespace().unwrap_or_default();
    // Ray's answers last, right before the call: they are the freshest input.
    let results_passed = scope
        .ray
        .observe(&uid, &scope.clusters(&namespace, &known), &mut input.ray)
        .await;
    scope
        .shared
        .stats
        .plugin_calls
        .fetch_add(1, Ordering::Relaxed);
    let called = std::time::Instant::now();
    let answer = scope
        .shared
        .plugins
        .reconcile(&plugin, P::kind(&()).as_ref(), input)
        .await;
    scope.shared.metrics.plugin_call(
        &plugin,
        called.elapsed(),
        answer.as_ref().err().map(|failure| failure.reason.as_str()),
    );
    let current_status = current_status.as_ref();
    let mut output = match answer {
        Ok(output) => output,
        Err(failure) => {
            scope
                .record_plugin_failure(&parent, &uid, current_status, &failure)
                .await;
            return Err(ReconcileError::Plugin(failure));
        }
    };
    let mut scheduled = Scheduled::default();
    if let (Some(scheduler), Some((parent_text, existing_pods))) = (&scheduler, schedule_basis)
        && !output.create_pods.is_empty()
    {
        match scope
            .schedule(scheduler, parent_text, existing_pods, &mut output)
            .await
        {
            Ok(decision) => scheduled = decision,
            Err(failure) => {
                scope
                    .record_plugin_failure(&parent, &uid, current_status, &failure)
                    .await;
                return Err(ReconcileError::Plugin(failure));
            }
        }
    }
    scope.ray.delivered(&uid, results_passed);
    let Some(owner) = controller_ref(&*parent) else {
        // Only objects without a uid lack an owner reference; the API server gives every
        // stored object one.
        return Ok(Action::await_change());
    };
    let name = parent.name_any();
    let (api_version, kind) = (P::api_version(&()), P::kind(&()));
    let view = ParentView {
        api_version: &api_version,
        kind: &kind,
        name: &name,
        uid: &uid,
        namespace: &namespace,
        owner: &owner,
        finalizers: parent.finalizers(),
        deleting,
        status: current_status,
    };
    let children = ScopeChildren {
        scope: &scope,
        uid: &uid,
        namespace: &namespace,
    };
    let default_allowance = PluginAllowance::default();
    let allowance = scope
        .shared
        .config
        .allowances
        .get(&plugin)
        .unwrap_or(&default_allowance);
    let policy = WritePolicy {
        kinds: P::CHILD_KINDS,
        extra_kinds: &allowance.extra_kinds,
        grants: P::ROLE_GRANTS,
        limits: &allowance.limits,
        pod_ceiling: parent.pod_ceiling(),
        pods_owned: scope
            .pods
            .children_of(&uid)
            .iter()
            .filter(|entry| !entry.terminating)
            .count(),
    };
    let planned = plan::plan(output, &view, &children, &policy)
        .map_err(|refusal| (plugin.as_str(), refusal))
        .and_then(|mut plan| {
            let Some(scheduler) = &scheduler else {
                return Ok(plan);
            };
            let allowance = scope
                .shared
                .config
                .allowances
                .get(scheduler)
                .unwrap_or(&default_allowance);
            let scheduler_policy = WritePolicy {
                kinds: scheduling::SCHEDULER_KINDS,
                extra_kinds: &allowance.extra_kinds,
                grants: &[],
                limits: &allowance.limits,
                pod_ceiling: None,
                pods_owned: 0,
            };
            plan.scheduler_objects =
                plan::scheduler_objects(&scheduled.objects, &view, &children, &scheduler_policy)
                    .map_err(|refusal| (scheduler.as_str(), refusal))?;
            plan.scheduling_held = scheduled.held.take();
            Ok(plan)
        });
    let plan = match planned {
        Ok(plan) => plan,
        Err((refused_plugin, refusal)) => {
            let failure =
                CallFailure::refused_answer(&scope.shared.plugins, refused_plugin, &refusal);
            scope
                .shared
                .metrics
                .plugin_failure(refused_plugin, &failure.reason);
            scope
                .record_plugin_failure(&parent, &uid, current_status, &failure)
                .await;
            return Err(ReconcileError::Plugin(failure));
        }
    };
    tracing::debug!(
        object = %name,
        objects = plan.objects.len(),
        pods = plan.pods.len(),
        deletions = plan.deletions.len(),
        status = plan.status.is_some(),
        ray_queries = plan.ray_queries.len(),
        ray_actions = plan.ray_actions.len(),
        requeue_after = ?plan.requeue_after,
        "plan"
    );
    if !plan.writes_nothing()
        && let Some(wait) = scope.write_round_wait(&parent, &uid, current_status).await
    {
        // Over its write rate: nothing of this answer is written; the plugin is called
        // again when the object may write.
        return Ok(Action::requeue(wait));
    }
    let cancel = scope
        .states
        .start_writes(&uid, &scope.shared.stopping, deleting);
    let action = scope
        .carry_out(
            &parent,
            &uid,
            current_status,
            &plugin,
            plan,
            &known,
            &cancel,
        )
        .await?;
    scope.clear_failures(&uid);
    Ok(action)
}

/// [`reconcile`], timed and counted per kind.
async fn measured_reconcile<P: ParentKind>(
    parent: Arc<P>,
    scope: Arc<Scope<P>>,
) -> Result<Action, ReconcileError> {
    let started = std::time::Instant::now();
    let metrics = scope.shared.metrics.clone();
    let result = reconcile(parent, scope).await;
    let outcome = match &result {
        Err(_) => ReconcileOutcome::Error,
        Ok(action) if *action == Action::await_change() => ReconcileOutcome::Success,
        Ok(_) => ReconcileOutcome::RequeueAfter,
    };
    metrics.reconcile_done(&P::kind(&()), outcome, started.elapsed());
    result
}

fn error_policy<P: ParentKind>(
    parent: Arc<P>,
    error: &ReconcileError,
    scope: Arc<Scope<P>>,
) -> Action {
    let uid = parent.uid().unwrap_or_default();
    let attempts = scope.states.with(&uid, |state| {
        state.failures = state.failures.saturating_add(1);
        state.failures
    });
    if error.unreachable() {
        // One warning per outage (from the recovery task), not one per object and retry.
        if !scope.api_down.swap(true, Ordering::AcqRel) {
            scope.outage.notify_one();
        }
    }
    if let ReconcileError::Plugin(failure) = error
        && let Some(after) = failure.retry_after
    {
        return Action::requeue(after);
    }
    let config = &scope.shared.config;
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
    let delay = config
        .backoff_base
        .saturating_mul(factor)
        .min(config.backoff_max);
    if error.unreachable() {
        tracing::debug!(object = %parent.name_any(), %error, ?delay, "reconcile failed; retrying");
    } else {
        tracing::warn!(object = %parent.name_any(), namespace = ?parent.namespace(), %error, attempts, ?delay, "reconcile failed; retrying");
    }
    Action::requeue(delay)
}

/// What a change to a parent must touch to trigger a reconcile: its generation (the spec),
/// labels, annotations, finalizers or deletion, as KubeRay's predicates. Status-only
/// changes, the host's own status writes among them, do not trigger one, so a rejected
/// write backs off instead of writing a status that triggers the next attempt at once.
fn parent_changed<P: ParentKind>(parent: &P) -> Option<u64> {
    use std::hash::{Hash as _, Hasher as _};
    let meta = parent.meta();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    meta.generation.hash(&mut hasher);
    meta.labels.hash(&mut hasher);
    meta.annotations.hash(&mut hasher);
    meta.finalizers.hash(&mut hasher);
    meta.deletion_timestamp.is_some().hash(&mut hasher);
    Some(hasher.finish())
}

/// Starts the watches of the child kinds of `P`, each filling its index and triggering
/// the parents whose children change.
fn spawn_child_watches<P: ParentKind>(
    scope: &Arc<Scope<P>>,
    triggers: &futures::channel::mpsc::UnboundedSender<ObjectRef<P>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let watches = P::child_watches();
    let parent_kind = ParentKindRef::of::<P>();
    let mut tasks = Vec::new();
    if let Some(selector) = watches.pods {
        tasks.push(tokio::spawn(run_child_watch(
            scope.api::<k8s_openapi::api::core::v1::Pod>(),
            watcher::Config::default().labels(selector),
            scope.pods.clone(),
            parent_kind.clone(),
            pod_table,
            triggers.clone(),
        )));
    }
    for (selector, index) in watches.services.iter().zip(&scope.services) {
        tasks.push(tokio::spawn(run_child_watch(
            scope.api::<k8s_openapi::api::core::v1::Service>(),
            watcher::Config::default().labels(selector),
            index.clone(),
            parent_kind.clone(),
            observed_service,
            triggers.clone(),
        )));
    }
    for (other, index) in &scope.others {
        let (api_version, kind) = (other.api_version, other.kind);
        tasks.push(tokio::spawn(run_child_watch(
            scope.dynamic_api(other),
            watcher::Config::default().labels(other.selector),
            index.clone(),
            parent_kind.clone(),
            move |object: &DynamicObject| observe_object(object, api_version, kind),
            triggers.clone(),
        )));
    }
    tasks
}

/// How often an unreachable API server is probed.
const OUTAGE_PROBE: Duration = Duration::from_millis(500);
/// How long after an outage the child caches may take to relist before the parents are
/// reconciled anyway.
const RELIST_WAIT: Duration = Duration::from_secs(30);
/// The parents' reconciles after an outage are spread over this long.
const RECOVERY_SPREAD: Duration = Duration::from_secs(1);

/// After each outage a reconcile saw: waits until the API server answers, relists the
/// child caches (so nothing missed is decided on), resets every object's backoff and
/// reconciles every parent, spread over a second.
async fn recover_after_outages<P: ParentKind>(
    scope: Arc<Scope<P>>,
    parents: reflector::Store<P>,
    triggers: futures::channel::mpsc::UnboundedSender<ObjectRef<P>>,
    watch_tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
) {
    let kind = P::kind(&());
    loop {
        scope.outage.notified().await;
        let down_since = std::time::Instant::now();
        tracing::warn!(%kind, "the API server cannot be reached; probing it until it answers");
        while scope.shared.client.apiserver_version().await.is_err() {
            tokio::time::sleep(OUTAGE_PROBE).await;
        }
        scope.states.reset_failures();
        let indexes = scope.indexes();
        let lists_before: Vec<u64> = indexes.iter().map(|index| index.lists()).collect();
        {
            let mut tasks = watch_tasks.lock().unwrap_or_else(|e| e.into_inner());
            for task in tasks.drain(..) {
                task.abort();
            }
            tasks.extend(spawn_child_watches(&scope, &triggers));
        }
        let relisted = futures::future::join_all(
            indexes
                .iter()
                .zip(lists_before)
                .map(|(index, before)| index.wait_lists_past(before)),
        );
        let relisted = tokio::time::timeout(RELIST_WAIT, relisted).await.is_ok();
        tracing::info!(%kind, down = ?down_since.elapsed(), relisted, "the API server answers again; reconciling every object with its backoff reset");
        scope.api_down.store(false, Ordering::Release);
        let all = parents.state();
        let gap = RECOVERY_SPREAD / u32::try_from(all.len().max(1)).unwrap_or(u32::MAX);
        for parent in all {
            let _ = triggers.unbounded_send(ObjectRef::from_obj(&*parent));
            tokio::time::sleep(gap).await;
        }
    }
}

/// Runs the controller of parent kind `P` for one namespace (or all, with None) until
/// `shutdown` resolves. Child caches are filled before the first reconcile, so a plugin
/// never decides on an empty view of existing children.
pub async fn run_controller<P: ParentKind>(
    shared: Arc<Shared>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    // Registered before the first await, so that /readyz cannot see every scope synced
    // while another is yet to register.
    let synced = shared.readiness.register(format!(
        "{} in {}",
        P::kind(&()),
        namespace.as_deref().unwrap_or("all namespaces")
    ));
    let scope = Arc::new(Scope::<P>::new(shared.clone(), namespace));
    let (triggers, triggered) = futures::channel::mpsc::unbounded::<ObjectRef<P>>();
    let watch_tasks = Arc::new(std::sync::Mutex::new(spawn_child_watches(
        &scope, &triggers,
    )));
    let indexes = scope.indexes();
    for index in &indexes {
        index.wait_synced().await;
    }
    let caches: Vec<&str> = indexes.iter().map(|index| index.description()).collect();
    tracing::info!(kind = %P::kind(&()), ?caches, "child caches synced; starting the controller");

    let (reader, writer) = reflector::store::<P>();
    shared.metrics.watch_parents(reader.clone());
    // Ready for /readyz at the end of the first full list. (Not Store::wait_until_ready
    // in another task: its one-shot channel wakes only the last of several waiters, and
    // the controller waits on it too.)
    let mut synced = Some(synced);
    // Whether the parents were ever listed: a controller whose first list never completes
    // (e.g. its CRD is missing) has nothing in flight and stops at once on shutdown.
    let listed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listed_in_watch = listed.clone();
    let forget_scope = scope.clone();
    let parents = watcher(scope.api::<P>(), watcher::Config::default())
        .backoff(watch_backoff())
        .map(move |event| {
            match &event {
                Ok(watcher::Event::InitDone) => {
                    if let Some(synced) = synced.take() {
                        synced.synced();
                    }
                    listed_in_watch.store(true, Ordering::Release);
                }
                // Forgetting a parent also stops its writes in flight.
                Ok(watcher::Event::Delete(parent)) => {
                    if let Some(uid) = parent.uid() {
                        forget_scope.states.forget(&uid);
                        // Drops the write-rate state of objects whose bucket is full again,
                        // the deleted one's among them.
                        forget_scope.shared.write_rounds.retain_recent();
                    }
                }
                Ok(watcher::Event::Apply(parent)) if parent.meta().deletion_timestamp.is_some() => {
                    if let Some(uid) = parent.uid() {
                        forget_scope.states.deletion_started(&uid);
                    }
                }
                _ => {}
            }
            event
        })
        .modify(|parent| {
            // The cache keeps what decisions read: not the managed-fields bookkeeping, nor
            // kubectl's second copy of the whole object.
            parent.managed_fields_mut().clear();
            parent.annotations_mut().remove(LAST_APPLIED_ANNOTATION);
        })
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            parent_changed::<P>,
            kube::runtime::PredicateConfig::default(),
        );
    let companions: Vec<tokio::task::JoinHandle<()>> = P::companions(Companions {
        shared: shared.clone(),
        parents: reader.clone(),
        pods: scope.pods.clone(),
    })
    .into_iter()
    .map(tokio::spawn)
    .collect();
    let recovery = tokio::spawn(recover_after_outages(
        scope.clone(),
        reader.clone(),
        triggers,
        watch_tasks.clone(),
    ));
    let config = &shared.config;
    let controller_config = kube::runtime::controller::Config::default()
        .concurrency(config.concurrency.max(1))
        .debounce(config.debounce);
    let shutdown = shutdown.shared();
    let run = Controller::for_stream(parents, reader)
        .reconcile_on(triggered)
        .with_config(controller_config)
        .graceful_shutdown_on(shutdown.clone())
        .run(measured_reconcile::<P>, error_policy::<P>, scope)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile did not complete");
            }
        });
    let never_listed = async {
        shutdown.await;
        if listed.load(Ordering::Acquire) {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = run => {}
        () = never_listed => {
            tracing::info!(kind = %P::kind(&()), "stopping before the parents were ever listed");
        }
    }
    recovery.abort();
    for companion in companions {
        companion.abort();
    }
    for task in watch_tasks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
    {
        task.abort();
    }
}
