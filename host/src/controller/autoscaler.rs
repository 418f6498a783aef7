//! Autoscaling in the host, in place of KubeRay's autoscaler sidecar: for every RayCluster
//! with `enableInTreeAutoscaling: true`, the host polls the cluster's GCS
//! (`AutoscalerStateService`), calls the cluster's autoscaler plugin with its groups, nodes
//! and demand, and writes the decision as Ray's autoscaler does: `replicas` and
//! `scaleStrategy.workersToDelete` per group, one JSON patch. The reconciler then deletes
//! exactly the named pods; once they are gone the host clears the lists. A worker is
//! drained through the GCS before it is named; one Ray refuses to drain stays.
//!
//! The plugin is called when its input changed (time and idle durations aside) or when it
//! asked to be called again, so an idle cluster costs one GCS read per poll and no call.
//! A decision that breaks the group's bounds or names a pod of another group is refused
//! with an event; the cluster keeps its size. An unreachable or incompatible GCS, or a
//! failing plugin, is reported once per distinct reason, not on every poll.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::reflector;
use kube::{Resource as _, ResourceExt as _};
use serde_json::json;
use wasmray_crds::RayCluster;
use wasmray_crds::constants::{
    HEAD_GROUP_NAME, RAY_NODE_GROUP_LABEL_KEY, RAY_NODE_TYPE_LABEL_KEY,
    RAY_WORKER_REPLICA_NAME_LABEL_KEY,
};
use wasmray_crds::ray_resources::node_resources;
use wasmray_crds::raycluster::UpscalingMode;
use wasmray_ray_proto::autoscaler as gcs;
use wasmray_ray_proto::rpc::{LabelSelectorOperator, PlacementStrategy as RayStrategy};

use super::child_index::OwnedIndex;
use super::events::EventSink;
use super::input_records::{PodTable, now};
use super::parent::Shared;
use crate::ray::address::{CLUSTER_DOMAIN_SETTING, DEFAULT_CLUSTER_DOMAIN, gcs_target};
use crate::ray::gcs::{DrainOutcome, GcsClient};
use crate::runtime::bindings::autoscaler::exports::wasmray::plugin::autoscale::{
    AutoscaleInput, AutoscaleOutput, GangRequest, GroupDecision, LabelConstraint, Node, NodeStatus,
    PlacementStrategy, RequestCount, ResourceRequest, SelectorOperator, WorkerGroup,
};
use crate::runtime::records::first_pod_labels;

/// Annotation with which a RayCluster picks its autoscaler plugin.
pub const AUTOSCALER_ANNOTATION: &str = "wasmray.io/autoscaler";
/// The built-in autoscaler plugin used when neither the operator nor the cluster picks one.
pub const DEFAULT_AUTOSCALER: &str = "ray-default";
/// `managedBy` of clusters this operator serves (KubeRay's value).
const KUBERAY_MANAGER: &str = "ray.io/kuberay-operator";
/// KubeRay's default `idleTimeoutSeconds`.
const DEFAULT_IDLE_TIMEOUT_SECONDS: u32 = 60;
/// Called again after this long when the plugin does not say.
const DEFAULT_RECALL: Duration = Duration::from_secs(30);
/// After a failed call or a refused decision, the next call waits this long unless the
/// input changes.
const FAILURE_RECALL: Duration = Duration::from_secs(10);
/// The token Secret is read again after this long.
const TOKEN_TTL: Duration = Duration::from_secs(60);
/// A head that cannot be reached yet (starting, restarting) is reported only once it has
/// been so for this long.
const UNREACHABLE_GRACE: Duration = Duration::from_secs(30);
/// Events taken from one answer.
const MAX_PLUGIN_EVENTS: usize = 10;

/// How the host autoscales.
#[derive(Clone, Debug)]
pub struct AutoscalerConfig {
    /// How often each autoscaled cluster's GCS is read.
    pub poll_interval: Duration,
    /// The autoscaler plugin of clusters that do not pick one by annotation.
    pub default_plugin: String,
    /// Deadline of each GCS call.
    pub gcs_timeout: Duration,
    /// Clusters polled at once.
    pub concurrency: usize,
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        AutoscalerConfig {
            poll_interval: Duration::from_millis(500),
            default_plugin: DEFAULT_AUTOSCALER.to_owned(),
            gcs_timeout: GcsClient::DEFAULT_TIMEOUT,
            concurrency: 64,
        }
    }
}

/// Whether the host autoscales `cluster`.
pub fn autoscaled(cluster: &RayCluster) -> bool {
    cluster.spec.autoscaling_enabled()
        && !cluster.spec.is_suspended()
        && cluster.meta().deletion_timestamp.is_none()
        && cluster
            .spec
            .managed_by
            .as_deref()
            .is_none_or(|manager| manager == KUBERAY_MANAGER)
}

/// What the autoscaler remembers of one cluster between polls.
#[derive(Default)]
struct ClusterMemory {
    /// The last input the plugin was called with, without its time and idle durations.
    last_input: Option<AutoscaleInput>,
    /// Called again at this time even if nothing changed.
    recall_at: Option<Instant>,
    /// The infeasible demand last reported.
    infeasible: Vec<String>,
    /// What identifies the last failure reported (event), so a repeat is not reported again.
    failure: Option<String>,
    /// Since when the head has been unreachable, in a row.
    unreachable_since: Option<Instant>,
    /// The token and when it was read.
    token: Option<(String, Instant)>,
    /// Sent with each report to the GCS.
    report_version: i64,
    /// The GCS address last used, to drop its connection when it changes.
    address: Option<String>,
}

/// The autoscaler of one controller scope.
pub struct Autoscaler {
    shared: Arc<Shared>,
    parents: reflector::Store<RayCluster>,
    pods: Arc<OwnedIndex<PodTable>>,
    events: EventSink,
    gcs: GcsClient,
    config: AutoscalerConfig,
    cluster_domain: String,
    memory: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<ClusterMemory>>>>,
}

/// Why one poll of one cluster stopped before a decision.
#[derive(Debug)]
struct Skip {
    /// CamelCase reason of the Warning event.
    reason: &'static str,
    message: String,
}

impl Skip {
    /// The head is not there or does not answer: normal while it starts or restarts.
    fn head_unreachable(&self) -> bool {
        matches!(
            self.reason,
            "AutoscalerWaitingForHead" | "AutoscalerGcsUnavailable"
        )
    }
}

impl Autoscaler {
    pub fn new(
        shared: Arc<Shared>,
        parents: reflector::Store<RayCluster>,
        pods: Arc<OwnedIndex<PodTable>>,
    ) -> Self {
        let config = shared.config.autoscaler.clone();
        let events = EventSink::start(
            shared.events_client.clone(),
            Reporter {
                controller: "wasmray-autoscaler".to_owned(),
                instance: std::env::var("POD_NAME").ok(),
            },
            Arc::clone(&shared.metrics),
        );
        let cluster_domain = shared
            .config
            .settings
            .get(CLUSTER_DOMAIN_SETTING)
            .cloned()
            .unwrap_or_else(|| DEFAULT_CLUSTER_DOMAIN.to_owned());
        Autoscaler {
            gcs: GcsClient::new(config.gcs_timeout),
            shared,
            parents,
            pods,
            events,
            config,
            cluster_domain,
            memory: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Polls every autoscaled cluster each interval, until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(self.config.poll_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if self.shared.stopping.is_cancelled() {
                return;
            }
            let clusters: Vec<Arc<RayCluster>> = self
                .parents
                .state()
                .into_iter()
                .filter(|cluster| autoscaled(cluster))
                .collect();
            self.forget_others(&clusters);
            futures::stream::iter(clusters)
                .for_each_concurrent(self.config.concurrency.max(1), |cluster| {
                    let this = Arc::clone(&self);
                    async move { this.poll(&cluster).await }
                })
                .await;
        }
    }

    /// Drops what is remembered of clusters no longer autoscaled.
    fn forget_others(&self, clusters: &[Arc<RayCluster>]) {
        let live: HashSet<String> = clusters.iter().filter_map(|c| c.uid()).collect();
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.retain(|uid, _| live.contains(uid));
    }

    fn memory_of(&self, uid: &str) -> Arc<tokio::sync::Mutex<ClusterMemory>> {
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(memory.entry(uid.to_owned()).or_default())
    }

    async fn poll(&self, cluster: &RayCluster) {
        let Some(uid) = cluster.uid() else { return };
        let memory = self.memory_of(&uid);
        let mut memory = memory.lock().await;
        match self.step(cluster, &uid, &mut memory).await {
            Ok(()) => {
                memory.failure = None;
                memory.unreachable_since = None;
            }
            Err(skip) => {
                if skip.head_unreachable() {
                    let since = *memory.unreachable_since.get_or_insert_with(Instant::now);
                    if since.elapsed() < UNREACHABLE_GRACE {
                        tracing::debug!(cluster = %cluster.name_any(), message = %skip.message, "the head does not answer yet");
                        return;
                    }
                }
                // An unreachable head's message varies with how the connection failed: one
                // report per outage, not per wording.
                let key = if skip.head_unreachable() {
                    skip.reason.to_owned()
                } else {
                    skip.message.clone()
                };
                if memory.failure.as_deref() != Some(key.as_str()) {
                    tracing::warn!(cluster = %cluster.name_any(), namespace = ?cluster.namespace(), reason = skip.reason, message = %skip.message, "not autoscaling this round");
                    self.publish(
                        cluster,
                        vec![(
                            EventType::Warning,
                            skip.reason.to_owned(),
                            skip.message.clone(),
                        )],
                    );
                    memory.failure = Some(key);
                }
            }
        }
    }

    async fn step(
        &self,
        cluster: &RayCluster,
        uid: &str,
        memory: &mut ClusterMemory,
    ) -> Result<(), Skip> {
        let pods = self.pods.children_of(uid);
        let existing: HashSet<&str> = pods.iter().map(|pod| pod.name.as_str()).collect();
        // As Ray's autoscaler: nothing new while a named pod still exists; once they are
        // all gone, the lists are cleared.
        let groups = cluster
            .spec
            .worker_group_specs
            .as_deref()
            .unwrap_or_default();
        let listed: Vec<(usize, &Vec<String>)> = groups
            .iter()
            .enumerate()
            .filter_map(|(index, group)| {
                let names = group.scale_strategy.as_ref()?.workers_to_delete.as_ref()?;
                (!names.is_empty()).then_some((index, names))
            })
            .collect();
        if listed
            .iter()
            .any(|(_, names)| names.iter().any(|name| existing.contains(name.as_str())))
        {
            return Ok(());
        }
        if !listed.is_empty() {
            let mut ops = Vec::new();
            for (index, _) in &listed {
                ops.push(json!({"op": "test", "path": format!("/spec/workerGroupSpecs/{index}/groupName"), "value": groups[*index].group_name}));
                ops.push(json!({"op": "replace", "path": format!("/spec/workerGroupSpecs/{index}/scaleStrategy"), "value": {"workersToDelete": []}}));
            }
            return self.patch(cluster, ops).await;
        }

        let cluster_json = serde_json::to_value(cluster).map_err(|error| Skip {
            reason: "AutoscalerInputInvalid",
            message: format!("the RayCluster does not serialise: {error}"),
        })?;
        let target = gcs_target(
            &cluster_json,
            &self.cluster_domain,
            self.shared.config.ray_head_address,
        )
        .map_err(|message| Skip {
            reason: "AutoscalerWaitingForHead",
            message,
        })?;
        if memory.address.as_deref() != Some(target.address.as_str())
            && let Some(old) = memory.address.replace(target.address.clone())
        {
            self.gcs.forget(&old);
        }
        let token = match &target.token_secret {
            Some(secret) => Some(self.token(cluster, secret, memory).await?),
            None => None,
        };
        let state = self
            .gcs
            .cluster_state(&target.address, token.as_deref())
            .await
            .map_err(|error| Skip {
                reason: "AutoscalerGcsUnavailable",
                message: error.to_string(),
            })?;

        let plugin = cluster
            .annotations()
            .get(AUTOSCALER_ANNOTATION)
            .cloned()
            .unwrap_or_else(|| self.config.default_plugin.clone());
        let (input, node_ids) = self.input(cluster, cluster_json, &pods, &state, &plugin);
        let normalized = normalized(&input);
        let due = memory.recall_at.is_none_or(|at| Instant::now() >= at);
        if !due && memory.last_input.as_ref() == Some(&normalized) {
            return Ok(());
        }
        memory.last_input = Some(normalized);
        memory.recall_at = Some(Instant::now() + FAILURE_RECALL);
        self.shared
            .stats
            .plugin_calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let output = self
            .shared
            .plugins
            .runtime()
            .autoscale(&plugin, &input)
            .await
            .map_err(|error| Skip {
                reason: "AutoscalerPluginFailed",
                message: error.to_string(),
            })?;
        memory.recall_at = Some(
            Instant::now()
                + output
                    .requeue_after_ms
                    .map(Duration::from_millis)
                    .unwrap_or(DEFAULT_RECALL)
                    .max(self.config.poll_interval),
        );
        self.report_infeasible(cluster, &output, memory);
        let events: Vec<(EventType, String, String)> = output
            .events
            .iter()
            .take(MAX_PLUGIN_EVENTS)
            .map(|event| {
                let kind = match event.event_type {
                    crate::runtime::bindings::types::EventType::Normal => EventType::Normal,
                    crate::runtime::bindings::types::EventType::Warning => EventType::Warning,
                };
                (kind, event.reason.clone(), event.message.clone())
            })
            .collect();
        let decisions = self
            .drain(
                cluster,
                &target.address,
                token.as_deref(),
                &input,
                &output,
                &node_ids,
            )
            .await;
        self.report(
            &target.address,
            token.as_deref(),
            &state,
            &input,
            &output,
            memory,
        )
        .await;
        let mut ops = Vec::new();
        for decision in &decisions {
            let Some(index) = groups.iter().position(|g| g.group_name == decision.name) else {
                continue;
            };
            let current = groups[index].replicas.unwrap_or(0);
            if i64::from(current) == i64::from(decision.replicas)
                && decision.workers_to_delete.is_empty()
            {
                continue;
            }
            ops.push(json!({"op": "test", "path": format!("/spec/workerGroupSpecs/{index}/groupName"), "value": decision.name}));
            ops.push(json!({"op": "add", "path": format!("/spec/workerGroupSpecs/{index}/replicas"), "value": decision.replicas}));
            if !decision.workers_to_delete.is_empty() {
                ops.push(json!({"op": "add", "path": format!("/spec/workerGroupSpecs/{index}/scaleStrategy"), "value": {"workersToDelete": decision.workers_to_delete}}));
            }
        }
        if ops.is_empty() {
            return Ok(());
        }
        self.patch(cluster, ops).await?;
        self.publish(cluster, events);
        Ok(())
    }

    /// The plugin's input, and the Ray node id of each pod Ray knows.
    fn input(
        &self,
        cluster: &RayCluster,
        cluster_json: serde_json::Value,
        pods: &[Arc<super::child_index::Entry<PodTable>>],
        state: &gcs::ClusterResourceState,
        plugin: &str,
    ) -> (AutoscaleInput, HashMap<String, Vec<u8>>) {
        let spec = &cluster.spec;
        let groups: Vec<WorkerGroup> = spec
            .worker_group_specs
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|group| {
                let mut labels = group.labels.clone().unwrap_or_default();
                labels
                    .entry(RAY_NODE_GROUP_NODE_LABEL.to_owned())
                    .or_insert_with(|| group.group_name.clone());
                WorkerGroup {
                    name: group.group_name.clone(),
                    min_replicas: to_u32(group.min_replicas()),
                    max_replicas: to_u32(group.max_replicas()),
                    replicas: to_u32(group.replicas.unwrap_or(group.min_replicas())),
                    num_of_hosts: to_u32(group.num_of_hosts()).max(1),
                    resources: node_resources(
                        group.resources.as_ref(),
                        group.ray_start_params.as_ref(),
                        &group.template,
                    )
                    .into_iter()
                    .collect(),
                    labels: labels.into_iter().collect(),
                    idle_timeout_seconds: group
                        .idle_timeout_seconds
                        .and_then(|s| u32::try_from(s).ok()),
                    // KubeRay 1.7's `priority`; the served CRD (1.5.1) has no such field yet.
                    priority: 0,
                    suspended: group.is_suspended(),
                }
            })
            .collect();
        let by_instance: HashMap<&str, &gcs::NodeState> = state
            .node_states
            .iter()
            .filter(|node| !node.instance_id.is_empty())
            .map(|node| (node.instance_id.as_str(), node))
            .collect();
        let mut node_ids = HashMap::new();
        let mut head = None;
        let mut workers = Vec::new();
        for pod in pods {
            let labels = first_pod_labels(&pod.value);
            let group = labels
                .get(RAY_NODE_GROUP_LABEL_KEY)
                .cloned()
                .unwrap_or_default();
            let is_head = labels.get(RAY_NODE_TYPE_LABEL_KEY).map(String::as_str) == Some("head");
            let ray = by_instance.get(pod.name.as_str()).copied();
            if let Some(ray) = ray {
                node_ids.insert(pod.name.clone(), ray.node_id.clone());
            }
            let shape = groups
                .iter()
                .find(|g| g.name == group)
                .map(|g| g.resources.clone())
                .unwrap_or_default();
            let node = node_of(
                &pod.name,
                &group,
                labels
                    .get(RAY_WORKER_REPLICA_NAME_LABEL_KEY)
                    .cloned()
                    .unwrap_or_else(|| pod.name.clone()),
                ray,
                shape,
                pod.terminating,
            );
            if is_head || group == HEAD_GROUP_NAME {
                head = Some(node);
            } else {
                workers.push(node);
            }
        }
        let options = spec.autoscaler_options.as_ref();
        let upscaling_mode = match options.and_then(|o| o.upscaling_mode) {
            Some(UpscalingMode::Conservative) => "Conservative",
            Some(UpscalingMode::Aggressive) => "Aggressive",
            Some(UpscalingMode::Default) | None => "Default",
        };
        let input = AutoscaleInput {
            cluster: cluster_json.to_string(),
            groups,
            head,
            workers,
            pending_requests: state
                .pending_resource_requests
                .iter()
                .filter_map(request_count)
                .collect(),
            pending_gangs: state
                .pending_gang_resource_requests
                .iter()
                .map(gang_request)
                .collect(),
            constraints: state
                .cluster_resource_constraints
                .iter()
                .flat_map(|constraint| constraint.resource_requests.iter())
                .filter_map(request_count)
                .collect(),
            upscaling_mode: upscaling_mode.to_owned(),
            idle_timeout_seconds: options
                .and_then(|o| o.idle_timeout_seconds)
                .and_then(|s| u32::try_from(s).ok())
                .unwrap_or(DEFAULT_IDLE_TIMEOUT_SECONDS),
            now: now(),
            config: self
                .shared
                .config
                .plugin_config
                .get(plugin)
                .cloned()
                .unwrap_or_default(),
            host: self.shared.host_facts(),
        };
        (input, node_ids)
    }

    /// Drains every named worker Ray knows; a worker Ray refuses (or cannot be asked) to
    /// drain is taken off the list with its whole replica, and its group keeps one more
    /// replica. Returns the decisions as they are to be written.
    async fn drain(
        &self,
        cluster: &RayCluster,
        address: &str,
        token: Option<&str>,
        input: &AutoscaleInput,
        output: &AutoscaleOutput,
        node_ids: &HashMap<String, Vec<u8>>,
    ) -> Vec<GroupDecision> {
        let mut decisions = Vec::new();
        for decision in &output.groups {
            let mut kept_replicas: HashSet<&str> = HashSet::new();
            let mut notes = Vec::new();
            for pod in &decision.workers_to_delete {
                let Some(node_id) = node_ids.get(pod) else {
                    continue; // no Ray node yet: nothing to drain
                };
                let replica = replica_of(input, pod);
                let outcome = self
                    .gcs
                    .drain_idle_node(
                        address,
                        token,
                        node_id,
                        &format!("WasmRay autoscaler: removing idle pod {pod}"),
                        0,
                    )
                    .await;
                match outcome {
                    Ok(DrainOutcome::Accepted) => {}
                    Ok(DrainOutcome::Rejected(why)) => {
                        notes.push(format!("Ray refused to drain {pod}: {why}"));
                        kept_replicas.insert(replica);
                    }
                    Err(error) => {
                        notes.push(format!("cannot drain {pod}: {error}"));
                        kept_replicas.insert(replica);
                    }
                }
            }
            let mut decision = decision.clone();
            if !kept_replicas.is_empty() {
                decision
                    .workers_to_delete
                    .retain(|pod| !kept_replicas.contains(replica_of(input, pod)));
                decision.replicas = decision
                    .replicas
                    .saturating_add(u32::try_from(kept_replicas.len()).unwrap_or(u32::MAX));
                self.publish(
                    cluster,
                    vec![(
                        EventType::Normal,
                        "DrainRejected".to_owned(),
                        format!(
                            "group {}: keeping {} ({})",
                            decision.name,
                            kept_replicas.len(),
                            notes.join("; ")
                        ),
                    )],
                );
            }
            decisions.push(decision);
        }
        decisions
    }

    /// Tells the GCS what was decided, so `ray status` on the cluster shows it.
    async fn report(
        &self,
        address: &str,
        token: Option<&str>,
        state: &gcs::ClusterResourceState,
        input: &AutoscaleInput,
        output: &AutoscaleOutput,
        memory: &mut ClusterMemory,
    ) {
        memory.report_version += 1;
        let now_ms = now().seconds.saturating_mul(1000);
        let pending_instance_requests = output
            .groups
            .iter()
            .filter_map(|decision| {
                let group = input.groups.iter().find(|g| g.name == decision.name)?;
                let added = decision
                    .replicas
                    .checked_sub(group.replicas)
                    .filter(|n| *n > 0)?;
                Some(gcs::PendingInstanceRequest {
                    instance_type_name: group.name.clone(),
                    ray_node_type_name: group.name.clone(),
                    count: i32::try_from(added.saturating_mul(group.num_of_hosts))
                        .unwrap_or(i32::MAX),
                    request_ts: now_ms,
                })
            })
            .collect();
        let pending_instances = input
            .workers
            .iter()
            .filter(|worker| worker.status == NodeStatus::Starting)
            .map(|worker| gcs::PendingInstance {
                instance_type_name: worker.group.clone(),
                ray_node_type_name: worker.group.clone(),
                instance_id: worker.pod.clone(),
                ip_address: String::new(),
                details: "pod created, Ray node not registered yet".to_owned(),
            })
            .collect();
        let report = gcs::AutoscalingState {
            last_seen_cluster_resource_state_version: state.cluster_resource_state_version,
            autoscaler_state_version: memory.report_version,
            pending_instance_requests,
            infeasible_resource_requests: output.infeasible.iter().map(ray_request).collect(),
            pending_instances,
            ..Default::default()
        };
        if let Err(error) = self.gcs.report(address, token, report).await {
            tracing::debug!(%error, "cannot report the autoscaling state to the GCS");
        }
    }

    /// One Warning event per change of the infeasible demand.
    fn report_infeasible(
        &self,
        cluster: &RayCluster,
        output: &AutoscaleOutput,
        memory: &mut ClusterMemory,
    ) {
        let mut infeasible: Vec<String> = output.infeasible.iter().map(describe).collect();
        infeasible.sort();
        infeasible.dedup();
        if infeasible == memory.infeasible {
            return;
        }
        if !infeasible.is_empty() {
            self.publish(
                cluster,
                vec![(
                    EventType::Warning,
                    "InfeasibleDemand".to_owned(),
                    format!(
                        "no worker group can hold {} even at maxReplicas; Ray keeps it pending",
                        infeasible.join(", ")
                    ),
                )],
            );
        }
        memory.infeasible = infeasible;
    }

    async fn token(
        &self,
        cluster: &RayCluster,
        secret: &str,
        memory: &mut ClusterMemory,
    ) -> Result<String, Skip> {
        if let Some((token, read)) = &memory.token
            && read.elapsed() < TOKEN_TTL
        {
            return Ok(token.clone());
        }
        let namespace = cluster.namespace().unwrap_or_default();
        let token = super::ray_io::read_token(&self.shared.client, &namespace, secret)
            .await
            .map_err(|message| Skip {
                reason: "AutoscalerTokenUnavailable",
                message,
            })?;
        memory.token = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    async fn patch(&self, cluster: &RayCluster, ops: Vec<serde_json::Value>) -> Result<(), Skip> {
        let namespace = cluster.namespace().unwrap_or_default();
        let api: Api<RayCluster> = Api::namespaced(self.shared.client.clone(), &namespace);
        let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops))
            .map_err(|error| Skip {
                reason: "AutoscalerWriteFailed",
                message: format!("building the patch: {error}"),
            })?;
        let params = PatchParams {
            field_manager: Some(format!("{}-autoscaler", self.shared.config.field_manager)),
            ..PatchParams::default()
        };
        api.patch(&cluster.name_any(), &params, &Patch::Json::<()>(patch))
            .await
            .map_err(|error| Skip {
                reason: "AutoscalerWriteFailed",
                message: format!(
                    "writing the decision to RayCluster {namespace}/{}: {error}",
                    cluster.name_any()
                ),
            })?;
        self.shared
            .stats
            .writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn publish(&self, cluster: &RayCluster, events: Vec<(EventType, String, String)>) {
        if events.is_empty() {
            return;
        }
        let reference: ObjectReference = cluster.object_ref(&());
        self.events.publish(&reference, events);
    }
}

/// Ray's node label with the group name (`RAY_NODE_TYPE_NAME`).
const RAY_NODE_GROUP_NODE_LABEL: &str = "ray.io/node-group";

/// The replica `pod` belongs to (itself unless in a multi-host group).
fn replica_of<'a>(input: &'a AutoscaleInput, pod: &'a str) -> &'a str {
    input
        .workers
        .iter()
        .find(|worker| worker.pod == pod)
        .map_or(pod, |worker| worker.replica.as_str())
}

fn to_u32(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

/// The input without what changes on every poll (the time, idle durations), to tell
/// whether anything a decision depends on changed.
fn normalized(input: &AutoscaleInput) -> AutoscaleInput {
    let mut copy = input.clone();
    copy.now = crate::runtime::bindings::types::Timestamp {
        seconds: 0,
        nanos: 0,
    };
    for node in copy.workers.iter_mut().chain(copy.head.as_mut()) {
        node.idle_ms = 0;
        node.available.clear();
    }
    copy
}

fn node_of(
    pod: &str,
    group: &str,
    replica: String,
    ray: Option<&gcs::NodeState>,
    shape: Vec<(String, f64)>,
    terminating: bool,
) -> Node {
    let sorted = |map: &HashMap<String, f64>| {
        let mut pairs: Vec<(String, f64)> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs
    };
    match ray {
        Some(ray) => {
            let status = match gcs::NodeStatus::try_from(ray.status) {
                Ok(gcs::NodeStatus::Idle) => NodeStatus::Idle,
                Ok(gcs::NodeStatus::Draining) => NodeStatus::Draining,
                Ok(gcs::NodeStatus::Dead) => NodeStatus::Dead,
                _ => NodeStatus::Running,
            };
            let mut labels: Vec<(String, String)> = ray
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.sort();
            Node {
                pod: pod.to_owned(),
                group: group.to_owned(),
                replica,
                status,
                idle_ms: if status == NodeStatus::Idle {
                    u64::try_from(ray.idle_duration_ms).unwrap_or(0)
                } else {
                    0
                },
                activity: ray.node_activity.clone(),
                total: sorted(&ray.total_resources),
                available: sorted(&ray.available_resources),
                labels,
                leaving: terminating,
            }
        }
        None => Node {
            pod: pod.to_owned(),
            group: group.to_owned(),
            replica,
            status: NodeStatus::Starting,
            idle_ms: 0,
            activity: Vec::new(),
            available: shape.clone(),
            total: shape,
            labels: vec![(RAY_NODE_GROUP_NODE_LABEL.to_owned(), group.to_owned())],
            leaving: terminating,
        },
    }
}

fn resource_request(request: &gcs::ResourceRequest) -> ResourceRequest {
    let mut resources: Vec<(String, f64)> = request
        .resources_bundle
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    resources.sort_by(|a, b| a.0.cmp(&b.0));
    // Several selectors are alternatives, the first preferred: the policy sees that one.
    let label_selector = request
        .label_selectors
        .first()
        .map(|selector| {
            selector
                .label_constraints
                .iter()
                .map(|constraint| LabelConstraint {
                    key: constraint.label_key.clone(),
                    operator: match LabelSelectorOperator::try_from(constraint.operator) {
                        Ok(LabelSelectorOperator::LabelOperatorNotIn) => SelectorOperator::NotIn,
                        _ => SelectorOperator::In,
                    },
                    values: constraint.label_values.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    ResourceRequest {
        resources,
        label_selector,
    }
}

fn request_count(by_count: &gcs::ResourceRequestByCount) -> Option<RequestCount> {
    let request = by_count.request.as_ref()?;
    let count = u32::try_from(by_count.count.max(0)).unwrap_or(u32::MAX);
    (count > 0).then(|| RequestCount {
        request: resource_request(request),
        count,
    })
}

/// A pending placement group: its id and strategy from `details`
/// (`<id>:<STRATEGY>|<state>`), else from its bundles' constraints.
fn gang_request(gang: &gcs::GangResourceRequest) -> GangRequest {
    let (id, strategy_text) = gang
        .details
        .split_once(':')
        .map(|(id, rest)| (id.to_owned(), rest.split('|').next().unwrap_or_default()))
        .unwrap_or_else(|| (gang.details.clone(), ""));
    let selected = gang
        .bundle_selectors
        .first()
        .map(|selector| &selector.resource_requests)
        .filter(|requests| !requests.is_empty());
    let requests = selected.unwrap_or(&gang.requests);
    let from_locality = gang
        .bundle_selectors
        .first()
        .and_then(|selector| selector.locality_requirement.as_ref())
        .and_then(|locality| locality.locality_constraint.as_ref())
        .and_then(|constraint| RayStrategy::try_from(constraint.placement_strategy).ok());
    let strategy = match strategy_text {
        "PACK" => PlacementStrategy::Pack,
        "SPREAD" => PlacementStrategy::Spread,
        "STRICT_PACK" => PlacementStrategy::StrictPack,
        "STRICT_SPREAD" => PlacementStrategy::StrictSpread,
        _ => match from_locality {
            Some(RayStrategy::StrictSpread) => PlacementStrategy::StrictSpread,
            Some(RayStrategy::StrictPack) => PlacementStrategy::StrictPack,
            Some(RayStrategy::Spread) => PlacementStrategy::Spread,
            Some(RayStrategy::Pack) => PlacementStrategy::Pack,
            None => {
                let constraints = requests.iter().flat_map(|r| &r.placement_constraints);
                let mut strategy = PlacementStrategy::Pack;
                for constraint in constraints {
                    if constraint.anti_affinity.is_some() {
                        strategy = PlacementStrategy::StrictSpread;
                    } else if constraint.affinity.is_some() {
                        strategy = PlacementStrategy::StrictPack;
                    }
                }
                strategy
            }
        },
    };
    GangRequest {
        id,
        strategy,
        bundles: requests.iter().map(resource_request).collect(),
    }
}

fn ray_request(request: &ResourceRequest) -> gcs::ResourceRequest {
    gcs::ResourceRequest {
        resources_bundle: request.resources.iter().cloned().collect(),
        ..Default::default()
    }
}

/// `{CPU: 1, GPU: 1}`.
fn describe(request: &ResourceRequest) -> String {
    let parts: Vec<String> = request
        .resources
        .iter()
        .map(|(name, amount)| format!("{name}: {amount}"))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(cpu: f64) -> gcs::ResourceRequest {
        gcs::ResourceRequest {
            resources_bundle: [("CPU".to_owned(), cpu)].into_iter().collect(),
            ..Default::default()
        }
    }

    #[test]
    fn gangs_take_their_strategy_from_details_then_constraints() {
        let gang = gcs::GangResourceRequest {
            requests: vec![bundle(1.0), bundle(1.0)],
            details: "abc123:STRICT_SPREAD|PENDING".to_owned(),
            bundle_selectors: Vec::new(),
        };
        let parsed = gang_request(&gang);
        assert_eq!(parsed.id, "abc123");
        assert_eq!(parsed.strategy, PlacementStrategy::StrictSpread);
        assert_eq!(parsed.bundles.len(), 2);

        let mut anti = bundle(2.0);
        anti.placement_constraints = vec![gcs::PlacementConstraint {
            anti_affinity: Some(gcs::AntiAffinityConstraint {
                label_name: "_PG_abc".to_owned(),
                label_value: String::new(),
            }),
            affinity: None,
        }];
        let gang = gcs::GangResourceRequest {
            requests: vec![anti],
            details: String::new(),
            bundle_selectors: Vec::new(),
        };
        assert_eq!(
            gang_request(&gang).strategy,
            PlacementStrategy::StrictSpread
        );
    }

    #[test]
    fn requests_keep_counts_and_the_first_selector() {
        let mut request = bundle(1.0);
        request.label_selectors = vec![wasmray_ray_proto::rpc::LabelSelector {
            label_constraints: vec![wasmray_ray_proto::rpc::LabelSelectorConstraint {
                label_key: "zone".to_owned(),
                operator: LabelSelectorOperator::LabelOperatorNotIn.into(),
                label_values: vec!["a".to_owned()],
            }],
        }];
        let counted = request_count(&gcs::ResourceRequestByCount {
            request: Some(request),
            count: 3,
        })
        .expect("a request");
        assert_eq!(counted.count, 3);
        assert_eq!(
            counted.request.label_selector[0].operator,
            SelectorOperator::NotIn
        );
        assert!(
            request_count(&gcs::ResourceRequestByCount {
                request: None,
                count: 3
            })
            .is_none()
        );
        assert!(
            request_count(&gcs::ResourceRequestByCount {
                request: Some(bundle(1.0)),
                count: -2
            })
            .is_none()
        );
    }

    #[test]
    fn ray_states_map_onto_node_status() {
        let mut ray = gcs::NodeState {
            instance_id: "w1".to_owned(),
            status: gcs::NodeStatus::Idle.into(),
            idle_duration_ms: 12_000,
            ..Default::default()
        };
        let node = node_of("w1", "small", "w1".to_owned(), Some(&ray), vec![], false);
        assert_eq!((node.status, node.idle_ms), (NodeStatus::Idle, 12_000));
        ray.status = gcs::NodeStatus::Running.into();
        let node = node_of("w1", "small", "w1".to_owned(), Some(&ray), vec![], true);
        assert_eq!(
            (node.status, node.idle_ms, node.leaving),
            (NodeStatus::Running, 0, true)
        );
        let node = node_of(
            "w2",
            "small",
            "w2".to_owned(),
            None,
            vec![("CPU".into(), 1.0)],
            false,
        );
        assert_eq!(node.status, NodeStatus::Starting);
        assert_eq!(node.total, vec![("CPU".to_owned(), 1.0)]);
    }
}
