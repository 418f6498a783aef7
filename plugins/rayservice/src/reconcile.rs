//! The reconcile entry point: KubeRay v1.7.1's RayService flow, one step per call, with Ray
//! reached only through the host's Serve query and actions.
//!
//! A call reads the RayService's status (which names the active and pending clusters), its
//! clusters and Services, the serving pods and Serve's status of the
//! cluster the previous call asked about; it returns the clusters and Services to write or
//! delete, the Serve config to send, the next Serve query and the new status.
//!
//! Which cluster Serve's answer is about: every call asks about the cluster its own new
//! status makes the target (pending if any, else active), and the host answers right
//! before the next call, whose input status is that new status. So the answer is about the
//! target of the input status; when this call changes the target, the answer is not used.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use wasmray_crds::constants::{
    BOTH_ACTIVE_PENDING_CLUSTERS_EXIST, INITIALIZING_TIMEOUT, NO_ACTIVE_CLUSTER,
    NO_PENDING_CLUSTER, NON_ZERO_SERVE_ENDPOINTS, RAY_CLUSTER_LABEL_KEY,
    RAY_CLUSTER_SERVING_SERVICE_LABEL_KEY, RAY_SERVICE_FINALIZER, RAY_SERVICE_INITIALIZING,
    RAY_SERVICE_INITIALIZING_TIMEOUT_ANNOTATION_KEY, RAY_SERVICE_READY, RAY_SERVICE_RESUMED,
    RAY_SERVICE_SUSPENDED, RAY_SERVICE_SUSPENDING, RAY_SERVICE_VALIDATION_FAILED, SUSPEND_COMPLETE,
    SUSPEND_IN_PROGRESS, SUSPEND_REQUESTED, UPGRADE_IN_PROGRESS, ZERO_SERVE_ENDPOINTS,
};
use wasmray_crds::parent_services::{head_service, head_service_name};
use wasmray_crds::rayservice::{RayServiceStatus, RayServiceUpgradeType, SERVICE_STATUS_RUNNING};
use wasmray_crds::validation::initializing_timeout_seconds;
use wasmray_crds::{
    FeatureGates, RayCluster, RayService, RayServiceStatuses, ValidationErrors,
    validate_ray_service,
};
use wasmray_plugin_sdk::reconciler::{
    Decision, FinalizerIntent, RayActionKind, RayQuery, Reconciler, Request,
};
use wasmray_plugin_sdk::{
    Duration, Event, EventType, PluginError, Timestamp, WriteMode, from_json, log,
};

use crate::cluster::{SpecChange, cluster_name, desired_cluster, spec_change};
use crate::serve::{desired_config, fingerprint};
use crate::services::{selected_cluster, serve_service};
use wasmray_crds::serve_api::ServeState;

/// KubeRay requeues a RayService every 2 s.
const REQUEUE: Duration = Duration::from_secs(2);
/// A config Ray refused is sent again after this long even if it did not change (Ray may
/// have been missing something it needs, e.g. a runtime_env package index).
const REJECTED_CONFIG_RETRY: Duration = Duration::from_secs(60);

const RAY_API_VERSION: &str = "ray.io/v1";
const RAY_CLUSTER_KIND: &str = "RayCluster";

/// Event reasons and the condition WasmRay adds. KubeRay's where KubeRay has one.
pub mod reasons {
    pub const INVALID_SPEC: &str = "InvalidRayServiceSpec";
    pub const INVALID_METADATA: &str = "InvalidRayServiceMetadata";
    pub const UPDATED_SERVE_APPLICATIONS: &str = "UpdatedServeApplications";
    pub const FAILED_TO_UPDATE_SERVE_APPLICATIONS: &str = "FailedToUpdateServeApplications";
    pub const INITIALIZING_TIMEOUT: &str = "RayServiceInitializingTimeout";
    pub const FAILED_TO_CREATE_SERVE_SERVICE: &str = "FailedToCreateServeService";
    /// A new cluster is prepared because the cluster spec changed.
    pub const UPGRADE_STARTED: &str = "UpgradeStarted";
    /// Traffic moved to the new cluster.
    pub const UPGRADE_COMPLETE: &str = "UpgradeComplete";
    /// WasmRay's condition: whether Ray accepted the latest Serve config.
    pub const SERVE_CONFIG_ACCEPTED: &str = "ServeConfigAccepted";
    pub const ACCEPTED: &str = "Accepted";
    pub const REJECTED_BY_RAY: &str = "RejectedByRay";
    pub const IGNORED_BY_RAY: &str = "IgnoredByRay";
}

/// The built-in RayService reconciler.
pub struct RayServiceReconciler;

impl Reconciler for RayServiceReconciler {
    type Parent = RayService;
    const KINDS: &'static [&'static str] = &["RayService"];

    fn reconcile(request: Request<RayService>) -> Result<Decision, PluginError> {
        decide(&request)
    }
}

/// One of the RayService's clusters as observed.
struct Seen {
    name: String,
    uid: String,
    deleting: bool,
    object: RayCluster,
}

/// Decides for one RayService.
pub fn decide(request: &Request<RayService>) -> Result<Decision, PluginError> {
    let mut pass = Pass::new(request)?;
    let service = &request.parent;
    if service.metadata.deletion_timestamp.is_some() {
        pass.on_deletion();
        return Ok(pass.decision);
    }
    pass.decision
        .finalizer(RAY_SERVICE_FINALIZER, FinalizerIntent::Add);
    let gates = FeatureGates {
        ray_service_incremental_upgrade: request.host.feature_gate("RayServiceIncrementalUpgrade"),
        ..FeatureGates::default()
    };
    if let Err(errors) = validate_ray_service(service, &gates) {
        pass.validation_failed(&errors);
        return pass.finish();
    }
    if service.spec.upgrade_type() == RayServiceUpgradeType::NewClusterWithIncrementalUpgrade {
        pass.refuse(
            "spec.upgradeStrategy.type",
            "NewClusterWithIncrementalUpgrade is not supported by WasmRay's rayservice plugin yet; use NewCluster or None",
        );
        return pass.finish();
    }
    if let Some(text) = service.spec.serve_config_v2.as_deref()
        && !text.trim().is_empty()
        && let Err(error) = desired_config(text)
    {
        pass.refuse("spec.serveConfigV2", &error);
        return pass.finish();
    }
    if pass.suspension() {
        return pass.finish();
    }
    pass.reconcile()?;
    pass.finish()
}

struct Pass<'a> {
    request: &'a Request<RayService>,
    service: &'a RayService,
    name: &'a str,
    generation: Option<i64>,
    previous: RayServiceStatuses,
    status: RayServiceStatuses,
    clusters: Vec<Seen>,
    decision: Decision,
}

impl<'a> Pass<'a> {
    fn new(request: &'a Request<RayService>) -> Result<Pass<'a>, PluginError> {
        let service = &request.parent;
        let previous = service.status.clone().unwrap_or_default();
        let mut status = previous.clone();
        status.observed_generation = service.metadata.generation;
        let mut clusters = Vec::new();
        for object in &request.children {
            if object.api_version != RAY_API_VERSION || object.kind != RAY_CLUSTER_KIND {
                continue;
            }
            let cluster: RayCluster = from_json(
                &format!("RayCluster {} (observed)", object.name),
                &object.object,
            )?;
            clusters.push(Seen {
                name: object.name.clone(),
                uid: object.uid.clone(),
                deleting: cluster.metadata.deletion_timestamp.is_some(),
                object: cluster,
            });
        }
        Ok(Pass {
            request,
            service,
            name: service.metadata.name.as_deref().unwrap_or_default(),
            generation: service.metadata.generation,
            previous,
            status,
            clusters,
            decision: Decision::default(),
        })
    }

    fn finish(mut self) -> Result<Decision, PluginError> {
        let mut unchanged = self.status.clone();
        unchanged.last_update_time = self.previous.last_update_time.clone();
        if unchanged != self.previous {
            self.status.last_update_time = Some(self.request.now.to_kube_time());
        }
        self.decision.set_status(&self.status)?;
        Ok(self.decision)
    }

    fn now(&self) -> Timestamp {
        self.request.now
    }

    fn cluster(&self, name: &str) -> Option<&Seen> {
        self.clusters
            .iter()
            .find(|cluster| cluster.name == name && !cluster.deleting)
    }

    fn active_name(&self) -> Option<String> {
        cluster_of(self.status.active_service_status.as_ref())
    }

    fn pending_name(&self) -> Option<String> {
        cluster_of(self.status.pending_service_status.as_ref())
    }

    fn condition(&self, kind: &str) -> Option<&Condition> {
        self.status
            .conditions
            .iter()
            .flatten()
            .find(|condition| condition.type_ == kind)
    }

    fn holds(&self, kind: &str, status: &str, reason: Option<&str>) -> bool {
        self.condition(kind).is_some_and(|condition| {
            condition.status == status && reason.is_none_or(|reason| condition.reason == reason)
        })
    }

    /// Sets a condition; its transition time changes only with its status.
    fn set_condition(&mut self, kind: &str, status: &str, reason: &str, message: &str) {
        let now = self.now().to_kube_time();
        let generation = self.generation;
        let conditions = self.status.conditions.get_or_insert_with(Vec::new);
        let transition = conditions
            .iter()
            .find(|condition| condition.type_ == kind && condition.status == status)
            .map_or(now, |condition| condition.last_transition_time.clone());
        conditions.retain(|condition| condition.type_ != kind);
        conditions.push(Condition {
            type_: kind.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            last_transition_time: transition,
            observed_generation: generation,
        });
    }

    fn remove_condition(&mut self, kind: &str) {
        if let Some(conditions) = self.status.conditions.as_mut() {
            conditions.retain(|condition| condition.type_ != kind);
        }
    }

    fn event(&mut self, event_type: EventType, reason: &str, message: String) {
        self.decision.event(Event {
            event_type,
            reason: reason.to_owned(),
            message,
        });
    }

    fn delete_cluster(&mut self, index: usize, why: &str) {
        let cluster = &self.clusters[index];
        self.decision.delete(
            RAY_API_VERSION,
            RAY_CLUSTER_KIND,
            &cluster.name,
            &cluster.uid,
            why,
        );
    }

    /// Deleting the RayService: its clusters go at once (no deletion delay), then the
    /// finalizer (KubeRay 1.6.2).
    fn on_deletion(&mut self) {
        let mut remaining = false;
        for index in 0..self.clusters.len() {
            remaining = true;
            if !self.clusters[index].deleting {
                self.delete_cluster(index, "the RayService is being deleted");
            }
        }
        let intent = if remaining {
            FinalizerIntent::Keep
        } else {
            FinalizerIntent::Release
        };
        self.decision.finalizer(RAY_SERVICE_FINALIZER, intent);
        if remaining {
            self.decision.requeue_after(REQUEUE);
        }
    }

    fn validation_failed(&mut self, errors: &ValidationErrors) {
        let field = errors
            .0
            .first()
            .map_or("spec", |error| error.field.as_str());
        let reason = if field.starts_with("metadata") {
            reasons::INVALID_METADATA
        } else {
            reasons::INVALID_SPEC
        };
        let message = errors
            .0
            .iter()
            .map(|error| format!("{}: {}", error.field, error.message))
            .collect::<Vec<_>>()
            .join("; ");
        self.fail_validation(reason, &message);
    }

    fn refuse(&mut self, field: &str, rule: &str) {
        self.fail_validation(reasons::INVALID_SPEC, &format!("{field}: {rule}"));
    }

    /// KubeRay 1.6: a Warning event, `Ready=False/ValidationFailed` with the errors, no
    /// requeue. Nothing else changes: clusters that serve keep serving.
    fn fail_validation(&mut self, reason: &str, message: &str) {
        if !self.holds(
            RAY_SERVICE_READY,
            "False",
            Some(RAY_SERVICE_VALIDATION_FAILED),
        ) || self
            .condition(RAY_SERVICE_READY)
            .map(|c| c.message.as_str())
            != Some(message)
        {
            let namespace = self
                .service
                .metadata
                .namespace
                .as_deref()
                .unwrap_or_default();
            self.event(
                EventType::Warning,
                reason,
                format!("{namespace}/{}: {message}", self.name),
            );
        }
        self.set_condition(
            RAY_SERVICE_READY,
            "False",
            RAY_SERVICE_VALIDATION_FAILED,
            message,
        );
        self.status.service_status = None;
    }

    /// KubeRay 1.7's `spec.suspend`. True when the call ends here.
    fn suspension(&mut self) -> bool {
        let wanted = self.service.spec.is_suspended();
        if self.holds(RAY_SERVICE_SUSPENDING, "True", None) {
            // Atomic once started: every cluster and Service goes, even if `suspend` is
            // turned back off meanwhile.
            let mut remaining = false;
            for index in 0..self.clusters.len() {
                remaining = true;
                if !self.clusters[index].deleting {
                    self.delete_cluster(index, "the RayService is suspended");
                }
            }
            for service in &self.request.services {
                remaining = true;
                if service.deletion_timestamp.is_none() {
                    self.decision.delete(
                        "v1",
                        "Service",
                        &service.name,
                        &service.uid,
                        "the RayService is suspended",
                    );
                }
            }
            if remaining {
                self.set_condition(
                    RAY_SERVICE_SUSPENDING,
                    "True",
                    SUSPEND_IN_PROGRESS,
                    "Deleting the RayClusters and Services of the suspended RayService.",
                );
                self.decision.requeue_after(REQUEUE);
            } else {
                self.set_condition(RAY_SERVICE_SUSPENDING, "False", SUSPEND_COMPLETE, "");
                self.set_condition(
                    RAY_SERVICE_SUSPENDED,
                    "True",
                    SUSPEND_COMPLETE,
                    "Every RayCluster and Service of the RayService is deleted.",
                );
                self.set_condition(RAY_SERVICE_READY, "False", SUSPEND_COMPLETE, "");
                self.set_condition(UPGRADE_IN_PROGRESS, "False", SUSPEND_COMPLETE, "");
            }
            return true;
        }
        if self.holds(RAY_SERVICE_SUSPENDED, "True", None) {
            if wanted {
                return true;
            }
            self.set_condition(
                RAY_SERVICE_SUSPENDED,
                "False",
                RAY_SERVICE_RESUMED,
                "RayService is resumed.",
            );
            // Fresh conditions: the initializing timeout starts again.
            self.remove_condition(RAY_SERVICE_READY);
            self.remove_condition(UPGRADE_IN_PROGRESS);
            self.initializing_conditions();
            self.decision.requeue_after(REQUEUE);
            return true;
        }
        if !wanted {
            return false;
        }
        self.set_condition(
            RAY_SERVICE_SUSPENDING,
            "True",
            SUSPEND_REQUESTED,
            "Spec.Suspend is true; will delete all Kubernetes resources owned by this RayService.",
        );
        self.set_condition(
            RAY_SERVICE_READY,
            "False",
            SUSPEND_IN_PROGRESS,
            "RayService is suspending.",
        );
        self.set_condition(
            UPGRADE_IN_PROGRESS,
            "False",
            SUSPEND_IN_PROGRESS,
            "RayService is suspending.",
        );
        self.status.active_service_status = None;
        self.status.pending_service_status = None;
        self.status.num_serve_endpoints = Some(0);
        self.status.service_status = Some("NotRunning".to_owned());
        self.decision.requeue_after(REQUEUE);
        true
    }

    fn initializing_conditions(&mut self) {
        if self.condition(RAY_SERVICE_READY).is_none() {
            self.set_condition(
                RAY_SERVICE_READY,
                "False",
                RAY_SERVICE_INITIALIZING,
                "RayService is initializing",
            );
        }
        if self.condition(UPGRADE_IN_PROGRESS).is_none() {
            self.set_condition(
                UPGRADE_IN_PROGRESS,
                "False",
                RAY_SERVICE_INITIALIZING,
                "RayService is initializing",
            );
        }
    }

    /// Serving, upgrading and cleaning up.
    fn reconcile(&mut self) -> Result<(), PluginError> {
        self.decision.requeue_after(REQUEUE);
        self.initializing_conditions();
        if self.holds(
            RAY_SERVICE_READY,
            "False",
            Some(RAY_SERVICE_VALIDATION_FAILED),
        ) {
            // Valid again: back to where the endpoints say it is.
            self.set_condition(
                RAY_SERVICE_READY,
                "False",
                RAY_SERVICE_INITIALIZING,
                "RayService is initializing",
            );
        }
        let timed_out = self.holds(RAY_SERVICE_READY, "False", Some(INITIALIZING_TIMEOUT));
        if !timed_out && self.initializing_timed_out() {
            return Ok(());
        }
        self.clean_up_dangling();
        if timed_out {
            // Terminal, as KubeRay: the RayService must be recreated.
            return Ok(());
        }
        self.choose_clusters()?;
        let serve = self.serve()?;
        self.route(serve.as_ref())?;
        self.endpoints_and_conditions();
        Ok(())
    }

    /// `ray.io/initializing-timeout` passed while still initializing: terminal.
    fn initializing_timed_out(&mut self) -> bool {
        let Some(timeout) = self
            .service
            .metadata
            .annotations
            .as_ref()
            .and_then(|annotations| {
                annotations.get(RAY_SERVICE_INITIALIZING_TIMEOUT_ANNOTATION_KEY)
            })
            .and_then(|value| initializing_timeout_seconds(value))
        else {
            return false;
        };
        let Some(since) = self
            .condition(RAY_SERVICE_READY)
            .filter(|ready| ready.status == "False" && ready.reason == RAY_SERVICE_INITIALIZING)
            .map(|ready| Timestamp::from_kube_time(&ready.last_transition_time))
        else {
            return false;
        };
        let deadline = since.plus(Duration::from_secs(timeout));
        if self.now().since(&deadline) == Duration::ZERO && self.now() != deadline {
            self.decision.requeue_after(deadline.since(&self.now()));
            return false;
        }
        let message = format!(
            "RayService did not become ready within the ray.io/initializing-timeout of {timeout} s; delete and recreate it"
        );
        self.event(
            EventType::Warning,
            reasons::INITIALIZING_TIMEOUT,
            message.clone(),
        );
        self.set_condition(RAY_SERVICE_READY, "False", INITIALIZING_TIMEOUT, &message);
        self.status.active_service_status = None;
        self.status.pending_service_status = None;
        true
    }

    /// Clusters that are neither active nor pending go `rayClusterDeletionDelaySeconds`
    /// after they stopped being either. KubeRay keeps that time in operator memory; here it
    /// is the last transition of `UpgradeInProgress` (the switch that left the cluster
    /// behind) or the cluster's creation, whichever is later, so a restart keeps it.
    fn clean_up_dangling(&mut self) {
        let keep = [self.active_name(), self.pending_name()];
        let delay = Duration::from_secs(
            u64::try_from(self.service.spec.ray_cluster_deletion_delay_seconds()).unwrap_or(0),
        );
        let left_behind = self
            .condition(UPGRADE_IN_PROGRESS)
            .map(|condition| Timestamp::from_kube_time(&condition.last_transition_time));
        for index in 0..self.clusters.len() {
            let cluster = &self.clusters[index];
            if cluster.deleting || keep.iter().flatten().any(|name| *name == cluster.name) {
                continue;
            }
            let created = cluster
                .object
                .metadata
                .creation_timestamp
                .as_ref()
                .map(Timestamp::from_kube_time);
            let since = match (left_behind, created) {
                (Some(a), Some(b)) => {
                    if a.since(&b) > Duration::ZERO {
                        a
                    } else {
                        b
                    }
                }
                (a, b) => a.or(b).unwrap_or(self.now()),
            };
            let due = since.plus(delay);
            if self.now().since(&due) > Duration::ZERO || self.now() == due {
                self.delete_cluster(index, "neither the active nor the pending cluster");
            } else {
                self.decision.requeue_after(due.since(&self.now()));
            }
        }
    }

    /// Names the pending cluster when the goal spec needs one, creates it, and updates a
    /// cluster in place where KubeRay does.
    fn choose_clusters(&mut self) -> Result<(), PluginError> {
        let goal = &self.service.spec.ray_cluster_config;
        let mut active = self.active_name();
        if let Some(name) = &active
            && self.cluster(name).is_none()
            && self.pending_name().is_none()
        {
            // The serving cluster is gone (deleted by hand): start over with a new one.
            self.event(
                EventType::Warning,
                reasons::UPGRADE_STARTED,
                format!("The active RayCluster {name} is gone; preparing a new one"),
            );
            self.status.active_service_status = None;
            active = None;
        }
        let pending = self.pending_name();
        if active.is_none() && pending.is_none() {
            self.set_pending(cluster_name(self.service));
        } else {
            let compared = pending.clone().or(active.clone()).unwrap_or_default();
            let change = self
                .cluster(&compared)
                .map(|cluster| spec_change(goal, &cluster.object));
            match change {
                Some(SpecChange::Same) | None => {}
                Some(SpecChange::GroupsAppended | SpecChange::OtherVersion) => {
                    let upgrading = pending.is_some();
                    // KubeRay updates the active cluster in place only when no upgrade is
                    // in progress; the pending one always.
                    if !upgrading || pending.as_deref() == Some(compared.as_str()) {
                        let updated = desired_cluster(self.service, &compared);
                        self.decision.apply(&updated, WriteMode::Apply)?;
                    }
                }
                Some(SpecChange::Upgrade) => {
                    if self.zero_downtime() {
                        let name = cluster_name(self.service);
                        if pending.as_deref() != Some(name.as_str())
                            && active.as_deref() != Some(name.as_str())
                        {
                            self.event(
                                EventType::Normal,
                                reasons::UPGRADE_STARTED,
                                format!(
                                    "The cluster spec changed (generation {}); preparing RayCluster {name} to take over from {compared}",
                                    self.generation.unwrap_or(0)
                                ),
                            );
                            self.set_pending(name);
                        }
                    }
                }
            }
        }
        if let Some(pending) = self.pending_name()
            && self.cluster(&pending).is_none()
            && !self.clusters.iter().any(|cluster| cluster.name == pending)
        {
            let cluster = desired_cluster(self.service, &pending);
            self.decision.apply(&cluster, WriteMode::CreateOnly)?;
        }
        Ok(())
    }

    fn set_pending(&mut self, name: String) {
        self.status.pending_service_status = Some(RayServiceStatus {
            ray_cluster_name: Some(name),
            ..RayServiceStatus::default()
        });
    }

    /// KubeRay: zero-downtime upgrades unless the strategy is `None`, or it is unset and
    /// the operator's `ENABLE_ZERO_DOWNTIME` is false.
    fn zero_downtime(&self) -> bool {
        match self
            .service
            .spec
            .upgrade_strategy
            .as_ref()
            .and_then(|strategy| strategy.type_)
        {
            Some(RayServiceUpgradeType::None) => false,
            Some(_) => true,
            None => self
                .request
                .host
                .setting("enable-zero-downtime")
                .is_none_or(|value| !value.trim().eq_ignore_ascii_case("false")),
        }
    }

    /// The Serve config of the target cluster (pending if any, else active): sent when Ray
    /// does not run it, and the cluster's Serve state, if known.
    fn serve(&mut self) -> Result<Option<ServeState>, PluginError> {
        let Some(target) = self.pending_name().or(self.active_name()) else {
            return Ok(None);
        };
        let ready = self
            .cluster(&target)
            .is_some_and(|cluster| cluster.object.head_pod_ready());
        self.results_of_sent_configs();
        if !ready {
            return Ok(None);
        }
        self.decision
            .ray_query(RayQuery::ServeStatus(target.clone()));
        // The answer is about the input status's target (see the module docs): when this
        // call changed the target, the answer is about another cluster and is not used.
        let input_target = cluster_of(self.previous.pending_service_status.as_ref())
            .or(cluster_of(self.previous.active_service_status.as_ref()));
        if input_target.as_deref() != Some(target.as_str()) {
            return Ok(None);
        }
        let Some(answer) = self.request.ray.serve_status.as_deref() else {
            return Ok(None);
        };
        let state = match ServeState::parse(answer) {
            Ok(state) => state,
            Err(error) => {
                self.event(
                    EventType::Warning,
                    reasons::FAILED_TO_UPDATE_SERVE_APPLICATIONS,
                    error,
                );
                return Ok(None);
            }
        };
        let config_text = self
            .service
            .spec
            .serve_config_v2
            .clone()
            .unwrap_or_default();
        if config_text.trim().is_empty() {
            return Ok(Some(state));
        }
        // Checked before the pass: a config that is not a mapping never gets here.
        let Ok(desired) = desired_config(&config_text) else {
            return Ok(Some(state));
        };
        let missing = state.missing(&desired);
        if missing.is_none() && self.holds(reasons::SERVE_CONFIG_ACCEPTED, "False", None) {
            // Ray runs the desired config (e.g. a refused config was reverted).
            self.set_condition(
                reasons::SERVE_CONFIG_ACCEPTED,
                "True",
                reasons::ACCEPTED,
                &format!("Ray Serve on RayCluster {target} runs serveConfigV2"),
            );
        }
        let accepted_now = self.request.ray.action_results.iter().any(|result| {
            result.outcome.is_ok()
                && result.id == format!("serve:{target}:{}", fingerprint(&desired))
        });
        if missing.is_some() && accepted_now {
            // Ray took this very config and does not run it as sent: it dropped fields it
            // does not know (Serve's schema ignores them). Said, and not sent again for a minute.
            let ignored = state.ignored_fields(&desired);
            let message = format!(
                "Ray Serve on RayCluster {target} accepted serveConfigV2 but ignored {}",
                if ignored.is_empty() {
                    "part of it".to_owned()
                } else {
                    ignored.join(", ")
                }
            );
            self.config_not_taken(reasons::IGNORED_BY_RAY, message);
            return Ok(Some(state));
        }
        if let Some(why) = missing
            && !self.rejected_recently()
        {
            let id = format!("serve:{target}:{}", fingerprint(&desired));
            log::debug(&format!("sending the Serve config to {target}: {why}"));
            self.decision.ray_action(
                &id,
                &target,
                RayActionKind::PutServeConfig(desired.to_string()),
            );
        }
        Ok(Some(state))
    }

    /// Events and the `ServeConfigAccepted` condition from the results of configs sent by
    /// earlier calls.
    fn results_of_sent_configs(&mut self) {
        let results: Vec<_> = self
            .request
            .ray
            .action_results
            .iter()
            .filter_map(|result| {
                let rest = result.id.strip_prefix("serve:")?;
                let (cluster, _) = rest.rsplit_once(':')?;
                Some((cluster.to_owned(), result.outcome.clone()))
            })
            .collect();
        for (cluster, outcome) in results {
            match outcome {
                Ok(_) => {
                    self.event(
                        EventType::Normal,
                        reasons::UPDATED_SERVE_APPLICATIONS,
                        format!("Updated serve applications to the RayCluster {cluster}"),
                    );
                    self.set_condition(
                        reasons::SERVE_CONFIG_ACCEPTED,
                        "True",
                        reasons::ACCEPTED,
                        &format!("Ray Serve on RayCluster {cluster} accepted serveConfigV2"),
                    );
                }
                Err(error) => {
                    let message =
                        format!("Ray Serve on RayCluster {cluster} refused serveConfigV2: {error}");
                    self.config_not_taken(reasons::REJECTED_BY_RAY, message);
                }
            }
        }
    }

    /// Ray did not take the config as sent: a Warning event and `ServeConfigAccepted=False`.
    fn config_not_taken(&mut self, reason: &str, message: String) {
        self.set_condition(reasons::SERVE_CONFIG_ACCEPTED, "False", reason, &message);
        self.event(
            EventType::Warning,
            reasons::FAILED_TO_UPDATE_SERVE_APPLICATIONS,
            message,
        );
    }

    /// Ray refused (or ignored part of) this generation's config less than a minute ago:
    /// not sent again yet.
    fn rejected_recently(&mut self) -> bool {
        let Some(condition) = self
            .condition(reasons::SERVE_CONFIG_ACCEPTED)
            .filter(|condition| {
                condition.status == "False" && condition.observed_generation == self.generation
            })
        else {
            return false;
        };
        let retry =
            Timestamp::from_kube_time(&condition.last_transition_time).plus(REJECTED_CONFIG_RETRY);
        if self.now().since(&retry) > Duration::ZERO {
            // Retried now; the condition's time restarts with the next answer.
            self.remove_condition(reasons::SERVE_CONFIG_ACCEPTED);
            return false;
        }
        self.decision.requeue_after(retry.since(&self.now()));
        true
    }

    /// Services follow the cluster that is ready to serve: the pending one once every
    /// application on it runs (the switch), else the active one. A pending cluster becomes
    /// active once the Services select it.
    fn route(&mut self, serve: Option<&ServeState>) -> Result<(), PluginError> {
        let pending = self.pending_name();
        let active = self.active_name();
        let target_ready = serve.is_some_and(ServeState::all_running);
        let statuses = serve.map(ServeState::statuses);
        // Application statuses of the cluster Serve was asked about.
        if let Some(pending) = &pending {
            let cluster_status = self.cluster(pending).and_then(|c| c.object.status.clone());
            let entry = self
                .status
                .pending_service_status
                .get_or_insert_with(Default::default);
            entry.ray_cluster_status = cluster_status;
            if statuses.is_some() {
                entry.application_statuses = statuses.clone();
            }
            if let Some(active) = self.status.active_service_status.as_mut() {
                // KubeRay shows no active applications while a new cluster takes over.
                active.application_statuses = None;
            }
        } else if let Some(entry) = self.status.active_service_status.as_mut()
            && statuses.is_some()
        {
            entry.application_statuses = statuses.clone();
        }
        if let Some(active) = &active {
            let cluster_status = self.cluster(active).and_then(|c| c.object.status.clone());
            if let Some(entry) = self.status.active_service_status.as_mut() {
                entry.ray_cluster_status = cluster_status;
            }
        }
        let serving = self
            .request
            .services
            .iter()
            .find(|service| service.name == self.service.serve_service_name())
            .and_then(selected_cluster)
            .map(str::to_owned);
        if let Some(pending) = &pending {
            if serving.as_deref() == Some(pending.as_str()) && target_ready {
                // The Services select the new cluster: it is the active one now.
                let previous = active.clone().unwrap_or_default();
                let mut promoted = self
                    .status
                    .pending_service_status
                    .take()
                    .unwrap_or_default();
                promoted.last_traffic_migrated_time = Some(self.now().to_kube_time());
                self.status.active_service_status = Some(promoted);
                if !previous.is_empty() {
                    self.event(
                        EventType::Normal,
                        reasons::UPGRADE_COMPLETE,
                        format!(
                            "Traffic moved from RayCluster {previous} to {pending}; {previous} is deleted in {} s",
                            self.service.spec.ray_cluster_deletion_delay_seconds()
                        ),
                    );
                }
                return self.write_services(pending);
            }
            if target_ready && self.head_serves(pending) {
                return self.write_services(pending);
            }
            if let Some(active) = &active
                && serving.as_deref() != Some(active.as_str())
                && self.cluster(active).is_some()
            {
                // Keep the active cluster reachable (e.g. Services deleted by hand).
                return self.write_services(active);
            }
            return Ok(());
        }
        if let Some(active) = &active
            && (target_ready || serving.as_deref() == Some(active.as_str()))
        {
            return self.write_services(active);
        }
        Ok(())
    }

    /// Whether `cluster` has a pod the serve Service would select: its head once labelled
    /// `ray.io/serve=true` (the host passes such heads), or, with
    /// `excludeHeadPodFromServeSvc`, its workers (labelled from the start, gated by their
    /// readiness probe).
    fn head_serves(&self, cluster: &str) -> bool {
        if self.service.spec.exclude_head_pod_from_serve_svc == Some(true) {
            return true;
        }
        self.request.pods.views().iter().any(|pod| {
            pod.labels.get(RAY_CLUSTER_LABEL_KEY) == Some(cluster)
                && pod.labels.get(RAY_CLUSTER_SERVING_SERVICE_LABEL_KEY) == Some("true")
        })
    }

    /// The head and serve Services, pointed at `cluster`; written when missing or pointing
    /// elsewhere.
    fn write_services(&mut self, cluster: &str) -> Result<(), PluginError> {
        let Some(seen) = self.cluster(cluster) else {
            return Ok(());
        };
        let object = seen.object.clone();
        let selects = |name: &str| {
            self.request
                .services
                .iter()
                .find(|service| service.name == name)
                .and_then(selected_cluster)
                == Some(cluster)
        };
        if !selects(&self.service.serve_service_name()) {
            match serve_service(self.service, cluster) {
                Ok(service) => self.decision.apply(&service, WriteMode::Apply)?,
                Err(error) => self.event(
                    EventType::Warning,
                    reasons::FAILED_TO_CREATE_SERVE_SERVICE,
                    error,
                ),
            }
        }
        if !selects(&head_service_name(self.name)) {
            let head_cluster_ip = self
                .request
                .host
                .setting("head-cluster-ip-service")
                .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"));
            if let Some(service) = head_service(
                "RayService",
                self.name,
                self.service.metadata.namespace.as_deref(),
                &object,
                cluster,
                head_cluster_ip,
            ) {
                self.decision.apply(&service, WriteMode::Apply)?;
            }
        }
        Ok(())
    }

    /// The ready endpoints of the serve Service: the running, ready, not terminating pods
    /// its selector picks (the host passes the namespace's `ray.io/serve=true` pods). That
    /// is the number KubeRay 1.6 counts in the Service's EndpointSlices, read from the
    /// source the EndpointSlice controller reads.
    fn serve_endpoints(&self) -> i32 {
        let Some(cluster) = self
            .request
            .services
            .iter()
            .find(|service| service.name == self.service.serve_service_name())
            .and_then(selected_cluster)
        else {
            return 0;
        };
        let ready = self
            .request
            .pods
            .views()
            .iter()
            .filter(|pod| {
                pod.labels.get(RAY_CLUSTER_LABEL_KEY) == Some(cluster)
                    && pod.labels.get(RAY_CLUSTER_SERVING_SERVICE_LABEL_KEY) == Some("true")
                    && pod.deletion_timestamp.is_none()
                    && pod.pod_ip.is_some_and(|ip| !ip.is_empty())
                    && pod
                        .conditions
                        .get("Ready")
                        .is_some_and(|condition| condition.status == "True")
            })
            .count();
        i32::try_from(ready).unwrap_or(i32::MAX)
    }

    /// `numServeEndpoints` and the conditions.
    fn endpoints_and_conditions(&mut self) {
        let endpoints = self.serve_endpoints();
        self.status.num_serve_endpoints = Some(endpoints);
        if endpoints > 0 {
            self.set_condition(
                RAY_SERVICE_READY,
                "True",
                NON_ZERO_SERVE_ENDPOINTS,
                "Number of serve endpoints is greater than 0",
            );
        } else if self.holds(RAY_SERVICE_READY, "True", None)
            || self.holds(RAY_SERVICE_READY, "False", Some(ZERO_SERVE_ENDPOINTS))
        {
            self.set_condition(
                RAY_SERVICE_READY,
                "False",
                ZERO_SERVE_ENDPOINTS,
                "Number of serve endpoints dropped to 0",
            );
        }
        self.status.service_status = self
            .holds(RAY_SERVICE_READY, "True", None)
            .then(|| SERVICE_STATUS_RUNNING.to_owned());
        let (active, pending) = (self.active_name(), self.pending_name());
        match (active, pending) {
            (Some(_), Some(pending)) => {
                let message = self.upgrade_message(&pending);
                self.set_condition(
                    UPGRADE_IN_PROGRESS,
                    "True",
                    BOTH_ACTIVE_PENDING_CLUSTERS_EXIST,
                    &message,
                );
            }
            (Some(_), None) => self.set_condition(
                UPGRADE_IN_PROGRESS,
                "False",
                NO_PENDING_CLUSTER,
                "Active Ray cluster exists and no pending Ray cluster",
            ),
            (None, _) => {
                if !self.holds(UPGRADE_IN_PROGRESS, "False", Some(RAY_SERVICE_INITIALIZING)) {
                    self.set_condition(
                        UPGRADE_IN_PROGRESS,
                        "Unknown",
                        NO_ACTIVE_CLUSTER,
                        "No active Ray cluster exists",
                    );
                }
            }
        }
    }

    /// Why the upgrade has not finished, and since when: what KubeRay leaves unsaid.
    fn upgrade_message(&self, pending: &str) -> String {
        let since = self
            .condition(UPGRADE_IN_PROGRESS)
            .filter(|condition| condition.status == "True")
            .map_or(self.now(), |condition| {
                Timestamp::from_kube_time(&condition.last_transition_time)
            });
        let waited = self.now().since(&since).as_secs();
        let cluster = self.cluster(pending);
        let why = match cluster {
            None => format!("RayCluster {pending} is being created"),
            Some(cluster) if !cluster.object.head_pod_ready() => {
                format!("the head pod of RayCluster {pending} is not ready")
            }
            Some(_) => {
                let apps = self
                    .status
                    .pending_service_status
                    .as_ref()
                    .and_then(|status| status.application_statuses.as_ref());
                match apps {
                    None => format!("Serve has no applications on RayCluster {pending} yet"),
                    Some(apps)
                        if !apps.is_empty()
                            && apps
                                .values()
                                .all(|app| app.status.as_deref() == Some(SERVICE_APP_RUNNING))
                            && !self.head_serves(pending) =>
                    {
                        format!(
                            "every application runs on RayCluster {pending}; waiting for its head pod's Serve proxy to be healthy (label ray.io/serve=true)"
                        )
                    }
                    Some(apps) if apps.is_empty() => {
                        format!("Serve has no applications on RayCluster {pending} yet")
                    }
                    Some(apps) => apps
                        .iter()
                        .filter(|(_, app)| app.status.as_deref() != Some(SERVICE_APP_RUNNING))
                        .map(|(name, app)| {
                            let message = app.message.as_deref().unwrap_or_default();
                            let status = app.status.as_deref().unwrap_or("unknown");
                            if message.is_empty() {
                                format!("application {name} is {status}")
                            } else {
                                format!("application {name} is {status}: {message}")
                            }
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                }
            }
        };
        format!(
            "Both active and pending Ray clusters exist; waiting {waited} s for {pending}: {}",
            if why.is_empty() {
                "switching traffic".to_owned()
            } else {
                why
            }
        )
    }
}

const SERVICE_APP_RUNNING: &str = wasmray_crds::rayservice::APPLICATION_STATUS_RUNNING;

fn cluster_of(status: Option<&RayServiceStatus>) -> Option<String> {
    status
        .and_then(|status| status.ray_cluster_name.clone())
        .filter(|name| !name.is_empty())
}
