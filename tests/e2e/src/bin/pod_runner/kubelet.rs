//! The kubelet part: pods bound to the runner's nodes are admitted (memory budget), given an
//! IP and a sandbox, their init containers and containers run and restarted by the pod's
//! restart policy, their status written, and on deletion their processes stopped before the
//! pod object is removed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::command::{self, ConfigError, Lookup};
use crate::hosts::{self, PodHost};
use crate::sandbox::{self, Launch, NetworkNamespace};
use crate::status::{ContainerRecord, Phase, PodRecord, State};

/// What a pod is expected to cost, for the memory budget (measured: README, "Limits").
const HEAD_MEMORY: u64 = 1536 << 20;
const WORKER_MEMORY: u64 = 384 << 20;
const OTHER_MEMORY: u64 = 256 << 20;
/// How long a stopping container gets between SIGTERM and SIGKILL at most.
const MAX_GRACE: Duration = Duration::from_secs(10);
/// Restart back-off: doubles from the first to the last, like a kubelet's (10 s to 5 min)
/// but shorter, so that tests of failures run in seconds.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(20);
/// A container that ran this long restarts without back-off.
const BACKOFF_RESET: Duration = Duration::from_secs(60);
/// Worker slots per cluster namespace (distinct Ray ports, see `command::with_node_ports`).
const MAX_SLOTS: u16 = 400;

pub const RAY_CLUSTER_LABEL: &str = "ray.io/cluster";
pub const RAY_NODE_TYPE_LABEL: &str = "ray.io/node-type";

pub struct Config {
    /// This executable, for the `exec-pod` step (see `sandbox::pinned_executable`).
    pub executable: PathBuf,
    pub nodes: Vec<String>,
    pub state_dir: PathBuf,
    pub venv: PathBuf,
    pub pod_cidr: (Ipv4Addr, u8),
    pub cluster_domain: String,
    pub memory_budget: u64,
    pub object_store_bytes: u64,
}

pub struct Runner {
    client: Client,
    config: Config,
    host_ip: String,
    state: Mutex<RunnerState>,
    /// Sandboxes are created one at a time so two pods of one cluster share theirs.
    sandbox_lock: tokio::sync::Mutex<()>,
    services: Mutex<BTreeMap<(String, String), Service>>,
    /// Woken when memory is released, for pods waiting on the budget.
    released: Notify,
}

#[derive(Default)]
struct RunnerState {
    pods: HashMap<String, PodEntry>,
    ips: BTreeSet<Ipv4Addr>,
    next_ip: u32,
    clusters: HashMap<String, ClusterSandbox>,
    memory_in_use: u64,
}

struct PodEntry {
    host: PodHost,
    /// The cluster sandbox it belongs to, for Ray pods.
    cluster: Option<String>,
    /// Its own hosts file, for pods outside a cluster sandbox.
    own_hosts: Option<PathBuf>,
    stop: CancellationToken,
    /// Stop at once (the pod object is gone) rather than with a grace period.
    hard: Arc<std::sync::atomic::AtomicBool>,
    memory: u64,
}

struct ClusterSandbox {
    network: Arc<NetworkNamespace>,
    hosts: PathBuf,
    slots: BTreeMap<String, u16>,
}

impl Runner {
    pub fn new(client: Client, config: Config, host_ip: String) -> Runner {
        Runner {
            client,
            config,
            host_ip,
            state: Mutex::new(RunnerState::default()),
            sandbox_lock: tokio::sync::Mutex::new(()),
            services: Mutex::new(BTreeMap::new()),
            released: Notify::new(),
        }
    }

    /// Watches Services (for name resolution) and the pods of every node until `stop`.
    pub async fn run(
        self: Arc<Self>,
        ready: PathBuf,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let services = watcher(
            Api::<Service>::all(self.client.clone()),
            watcher::Config::default(),
        );
        let pods = futures::stream::select_all(self.config.nodes.iter().map(|node| {
            watcher(
                Api::<Pod>::all(self.client.clone()),
                watcher::Config::default().fields(&format!("spec.nodeName={node}")),
            )
            .boxed()
        }));
        let mut services = std::pin::pin!(services);
        let mut pods = std::pin::pin!(pods);
        std::fs::write(&ready, b"").with_context(|| format!("writing {}", ready.display()))?;
        tracing::info!(nodes = ?self.config.nodes, "serving pods");
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                event = services.next() => match event {
                    Some(Ok(event)) => self.on_service(event),
                    Some(Err(error)) => {
                        tracing::warn!(%error, "service watch");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    None => break,
                },
                event = pods.next() => match event {
                    Some(Ok(event)) => self.on_pod(event),
                    Some(Err(error)) => {
                        tracing::warn!(%error, "pod watch");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    None => break,
                },
            }
        }
        self.stop_all().await;
        Ok(())
    }

    fn on_service(&self, event: watcher::Event<Service>) {
        let mut changed = false;
        {
            let mut services = lock(&self.services);
            match event {
                watcher::Event::Apply(service) | watcher::Event::InitApply(service) => {
                    if let Some(key) = object_key(&service.metadata) {
                        services.insert(key, service);
                        changed = true;
                    }
                }
                watcher::Event::Delete(service) => {
                    if let Some(key) = object_key(&service.metadata) {
                        changed = services.remove(&key).is_some();
                    }
                }
                watcher::Event::Init => services.clear(),
                watcher::Event::InitDone => changed = true,
            }
        }
        if changed {
            self.refresh_hosts();
        }
    }

    fn on_pod(self: &Arc<Self>, event: watcher::Event<Pod>) {
        match event {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => self.pod_seen(pod),
            watcher::Event::Delete(pod) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    self.stop_pod(uid, true);
                }
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }

    fn pod_seen(self: &Arc<Self>, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let known = lock(&self.state).pods.contains_key(&uid);
        if pod.metadata.deletion_timestamp.is_some() {
            if known {
                self.stop_pod(&uid, false);
            } else {
                // Never ran here (or ran under a runner that is gone): nothing to stop.
                let this = self.clone();
                tokio::spawn(async move { this.remove_object(&pod).await });
            }
            return;
        }
        let phase = pod
            .status
            .as_ref()
            .and_then(|status| status.phase.as_deref());
        if known || matches!(phase, Some("Succeeded" | "Failed")) {
            return;
        }
        let Some(ip) = self.allocate_ip() else {
            tracing::error!(pod = ?pod.metadata.name, "no pod IP left in the runner's CIDR");
            return;
        };
        let host = pod_host(&pod, ip);
        let stop = CancellationToken::new();
        let hard = Arc::new(std::sync::atomic::AtomicBool::new(false));
        lock(&self.state).pods.insert(
            uid.clone(),
            PodEntry {
                host,
                cluster: None,
                own_hosts: None,
                stop: stop.clone(),
                hard: hard.clone(),
                memory: 0,
            },
        );
        let this = self.clone();
        tokio::spawn(async move {
            let name = format!(
                "{}/{}",
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default()
            );
            if let Err(error) = this.clone().run_pod(&pod, &uid, ip, stop, &hard).await {
                tracing::error!(pod = name, error = format!("{error:#}"), "pod");
            }
            this.release(&uid).await;
            if !hard.load(std::sync::atomic::Ordering::SeqCst) {
                this.remove_object(&pod).await;
            }
        });
    }

    fn stop_pod(&self, uid: &str, hard: bool) {
        if let Some(entry) = lock(&self.state).pods.get(uid) {
            if hard {
                entry.hard.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            entry.stop.cancel();
        }
    }

    async fn stop_all(&self) {
        let tokens: Vec<CancellationToken> = {
            let state = lock(&self.state);
            for entry in state.pods.values() {
                entry.hard.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            state
                .pods
                .values()
                .map(|entry| entry.stop.clone())
                .collect()
        };
        for token in &tokens {
            token.cancel();
        }
        // Each pod task stops its processes and releases itself.
        let deadline = tokio::time::Instant::now() + MAX_GRACE + Duration::from_secs(2);
        while !lock(&self.state).pods.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn allocate_ip(&self) -> Option<Ipv4Addr> {
        let (base, prefix) = self.config.pod_cidr;
        let size = 1u32.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        let mut state = lock(&self.state);
        // .0 and .1 of the range are left out, as a node's pod CIDR keeps them.
        for _ in 0..size {
            let offset = state.next_ip % size.max(1);
            state.next_ip = state.next_ip.wrapping_add(1);
            if offset < 2 {
                continue;
            }
            let ip = Ipv4Addr::from(u32::from(base) + offset);
            if state.ips.insert(ip) {
                return Some(ip);
            }
        }
        None
    }

    /// Everything the pod held: its IP, memory, worker slot and sandbox share.
    async fn release(&self, uid: &str) {
        let closing = {
            let mut state = lock(&self.state);
            let Some(entry) = state.pods.remove(uid) else {
                return;
            };
            state.ips.remove(&entry.host.ip);
            state.memory_in_use = state.memory_in_use.saturating_sub(entry.memory);
            let mut closing = None;
            if let Some(cluster) = &entry.cluster
                && let Some(sandbox) = state.clusters.get_mut(cluster)
            {
                sandbox.slots.remove(uid);
                if sandbox.slots.is_empty() {
                    closing = state.clusters.remove(cluster);
                }
            }
            if let Some(own) = &entry.own_hosts {
                let _ = std::fs::remove_file(own);
            }
            closing
        };
        self.released.notify_waiters();
        if let Some(sandbox) = closing {
            let _ = std::fs::remove_file(&sandbox.hosts);
            if let Ok(network) = Arc::try_unwrap(sandbox.network) {
                network.close().await;
            }
        }
        self.refresh_hosts();
    }

    /// Deletes the pod object once its processes are gone, as a kubelet finishes a graceful
    /// deletion.
    async fn remove_object(&self, pod: &Pod) {
        let (Some(namespace), Some(name), Some(uid)) = (
            pod.metadata.namespace.as_deref(),
            pod.metadata.name.as_deref(),
            pod.metadata.uid.clone(),
        ) else {
            return;
        };
        let api = Api::<Pod>::namespaced(self.client.clone(), namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.get_opt(name).await {
            Ok(Some(current)) if current.metadata.deletion_timestamp.is_some() => {
                if let Err(error) = api.delete(name, &params).await {
                    tracing::debug!(pod = name, %error, "removing a deleted pod");
                }
            }
            _ => {}
        }
    }

    async fn run_pod(
        self: Arc<Self>,
        pod: &Pod,
        uid: &str,
        ip: Ipv4Addr,
        stop: CancellationToken,
        hard: &std::sync::atomic::AtomicBool,
    ) -> anyhow::Result<()> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let api = Api::<Pod>::namespaced(self.client.clone(), &namespace);
        let names = |containers: &[Container]| -> Vec<(String, String)> {
            containers
                .iter()
                .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
                .collect()
        };
        let init = spec.init_containers.clone().unwrap_or_default();
        let record = Arc::new(Mutex::new(PodRecord::new(
            ip.to_string(),
            self.host_ip.clone(),
            &names(&init),
            &names(&spec.containers),
        )));
        let publisher = Publisher {
            api: api.clone(),
            name: name.clone(),
            record: record.clone(),
            runner: self.clone(),
            uid: uid.to_owned(),
        };
        publisher.publish().await;

        // Admission: the memory budget.
        let memory = memory_estimate(pod);
        loop {
            let admitted = {
                let mut state = lock(&self.state);
                if state.memory_in_use + memory <= self.config.memory_budget {
                    state.memory_in_use += memory;
                    if let Some(entry) = state.pods.get_mut(uid) {
                        entry.memory = memory;
                    }
                    true
                } else {
                    false
                }
            };
            if admitted {
                break;
            }
            let message = format!(
                "the pod runner's memory budget ({} MiB) is in use; this pod needs {} MiB (--memory-budget)",
                self.config.memory_budget >> 20,
                memory >> 20
            );
            publisher
                .set_all_waiting("PodRunnerMemoryBudget", Some(message))
                .await;
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = self.released.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }

        let pod_dir = self.config.state_dir.join("pods").join(format!(
            "{namespace}_{name}_{}",
            uid.get(..8).unwrap_or(uid)
        ));
        for dir in ["tmp", "volumes", "logs"] {
            std::fs::create_dir_all(pod_dir.join(dir))?;
        }
        let mut ip_pod = pod.clone();
        ip_pod.status.get_or_insert_default().pod_ip = Some(ip.to_string());
        let (network, hosts, slot) = self.sandbox(&ip_pod, uid, &pod_dir).await?;
        let relays = match &network {
            Some(network) => relays(pod, ip, network).await,
            None => Vec::new(),
        };
        let _relays = AbortOnDrop(relays);
        self.refresh_hosts();

        let lookup = loop {
            match self.lookup(&namespace, pod).await {
                Ok(lookup) => break lookup,
                Err(error) => {
                    publisher
                        .set_all_waiting("CreateContainerConfigError", Some(format!("{error:#}")))
                        .await;
                }
            }
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        };
        let mounts = match volumes(pod, &pod_dir.join("volumes"), &lookup) {
            Ok(mounts) => mounts,
            Err(error) => {
                publisher
                    .set_all_waiting("CreateContainerConfigError", Some(error.0))
                    .await;
                stop.cancelled().await;
                return Ok(());
            }
        };
        let context = ContainerContext {
            runner: self.clone(),
            pod: ip_pod,
            pod_dir,
            hosts,
            network: network.as_ref().map(|network| network.path()),
            slot,
            mounts,
            lookup,
            restart_policy: spec
                .restart_policy
                .clone()
                .unwrap_or_else(|| "Always".into()),
            grace: Duration::from_secs(
                spec.termination_grace_period_seconds
                    .and_then(|seconds| u64::try_from(seconds).ok())
                    .unwrap_or(30),
            )
            .min(MAX_GRACE),
        };

        // Init containers, one after the other.
        for (index, container) in init.iter().enumerate() {
            let done = context
                .supervise(container, Slot::Init(index), &publisher, &stop, hard)
                .await;
            if !done {
                return Ok(());
            }
        }
        lock(&record).initialized = true;
        lock(&record).phase = Phase::Running;
        publisher.publish().await;

        futures::future::join_all(
            spec.containers
                .iter()
                .enumerate()
                .map(|(index, container)| {
                    context.supervise(container, Slot::Main(index), &publisher, &stop, hard)
                }),
        )
        .await;
        Ok(())
    }

    /// The pod's network and hosts file: a Ray pod joins its cluster's namespace (created with
    /// its first pod), anything else runs in the runner's namespace with its own hosts file.
    async fn sandbox(
        &self,
        pod: &Pod,
        uid: &str,
        pod_dir: &Path,
    ) -> anyhow::Result<(Option<Arc<NetworkNamespace>>, PathBuf, u16)> {
        let Some(cluster) = ray_cluster_key(pod) else {
            let hosts = pod_dir.join("hosts");
            std::fs::write(&hosts, "")?;
            if let Some(entry) = lock(&self.state).pods.get_mut(uid) {
                entry.own_hosts = Some(hosts.clone());
            }
            return Ok((None, hosts, 0));
        };
        let is_head = ray_node_type(pod).as_deref() == Some("head");
        let _creating = self.sandbox_lock.lock().await;
        let existing = lock(&self.state).clusters.contains_key(&cluster);
        if !existing {
            let network = NetworkNamespace::create().await?;
            let dir = self.config.state_dir.join("clusters");
            std::fs::create_dir_all(&dir)?;
            let hosts = dir.join(format!("{}.hosts", cluster.replace('/', "_")));
            std::fs::write(&hosts, "")?;
            lock(&self.state).clusters.insert(
                cluster.clone(),
                ClusterSandbox {
                    network: Arc::new(network),
                    hosts,
                    slots: BTreeMap::new(),
                },
            );
        }
        let mut state = lock(&self.state);
        let Some(sandbox) = state.clusters.get_mut(&cluster) else {
            anyhow::bail!("the sandbox of {cluster} vanished");
        };
        let used: BTreeSet<u16> = sandbox.slots.values().copied().collect();
        let slot = if is_head {
            0
        } else {
            (1..MAX_SLOTS)
                .find(|slot| !used.contains(slot))
                .context("too many Ray nodes in one cluster for the runner's port slots")?
        };
        sandbox.slots.insert(uid.to_owned(), slot);
        let result = (Some(sandbox.network.clone()), sandbox.hosts.clone(), slot);
        if let Some(entry) = state.pods.get_mut(uid) {
            entry.cluster = Some(cluster);
        }
        Ok(result)
    }

    /// Rewrites every hosts file from the pods and Services now known. Written in place: each
    /// container bind-mounted the file itself, so a rename would not reach it.
    fn refresh_hosts(&self) {
        let services: Vec<Service> = lock(&self.services).values().cloned().collect();
        let state = lock(&self.state);
        let all: Vec<PodHost> = state
            .pods
            .values()
            .map(|entry| entry.host.clone())
            .collect();
        for (key, sandbox) in &state.clusters {
            let own: Vec<PodHost> = state
                .pods
                .values()
                .filter(|entry| entry.cluster.as_deref() == Some(key.as_str()))
                .map(|entry| entry.host.clone())
                .collect();
            let text = hosts::render(&own, &own, &services, &self.config.cluster_domain);
            write_in_place(&sandbox.hosts, &text);
        }
        for entry in state.pods.values() {
            if let Some(path) = &entry.own_hosts {
                let text = hosts::render(
                    std::slice::from_ref(&entry.host),
                    &all,
                    &services,
                    &self.config.cluster_domain,
                );
                write_in_place(path, &text);
            }
        }
    }

    fn set_ready(&self, uid: &str, ready: bool) {
        let changed = {
            let mut state = lock(&self.state);
            match state.pods.get_mut(uid) {
                Some(entry) if entry.host.ready != ready => {
                    entry.host.ready = ready;
                    true
                }
                _ => false,
            }
        };
        if changed {
            self.refresh_hosts();
        }
    }

    /// The Secrets and ConfigMaps the pod's env and volumes name, read once per start.
    async fn lookup(&self, namespace: &str, pod: &Pod) -> anyhow::Result<Fetched> {
        let spec = pod.spec.clone().unwrap_or_default();
        let mut secrets = BTreeSet::new();
        let mut config_maps = BTreeSet::new();
        let containers = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter());
        for container in containers {
            for var in container.env.iter().flatten() {
                if let Some(source) = &var.value_from {
                    if let Some(key) = &source.secret_key_ref {
                        secrets.insert(key.name.clone());
                    }
                    if let Some(key) = &source.config_map_key_ref {
                        config_maps.insert(key.name.clone());
                    }
                }
            }
            for source in container.env_from.iter().flatten() {
                if let Some(map) = &source.config_map_ref {
                    config_maps.insert(map.name.clone());
                }
                if let Some(secret) = &source.secret_ref {
                    secrets.insert(secret.name.clone());
                }
            }
        }
        for volume in spec.volumes.iter().flatten() {
            if let Some(map) = &volume.config_map {
                config_maps.insert(map.name.clone());
            }
            if let Some(secret) = &volume.secret
                && let Some(name) = &secret.secret_name
            {
                secrets.insert(name.clone());
            }
        }
        let mut fetched = Fetched::default();
        let secret_api = Api::<Secret>::namespaced(self.client.clone(), namespace);
        for name in secrets {
            if let Some(secret) = secret_api.get_opt(&name).await? {
                let mut data: BTreeMap<String, String> = secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(key, value)| (key, String::from_utf8_lossy(&value.0).into_owned()))
                    .collect();
                data.extend(secret.string_data.unwrap_or_default());
                fetched.secrets.insert(name, data);
            }
        }
        let map_api = Api::<ConfigMap>::namespaced(self.client.clone(), namespace);
        for name in config_maps {
            if let Some(map) = map_api.get_opt(&name).await? {
                fetched
                    .config_maps
                    .insert(name, map.data.unwrap_or_default());
            }
        }
        Ok(fetched)
    }
}

/// Secrets and ConfigMaps of one pod start.
#[derive(Default)]
struct Fetched {
    secrets: BTreeMap<String, BTreeMap<String, String>>,
    config_maps: BTreeMap<String, BTreeMap<String, String>>,
}

impl Lookup for Fetched {
    fn secret_key(&self, name: &str, key: &str) -> Option<String> {
        self.secrets.get(name)?.get(key).cloned()
    }
    fn config_map_key(&self, name: &str, key: &str) -> Option<String> {
        self.config_maps.get(name)?.get(key).cloned()
    }
    fn secret(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.secrets.get(name).cloned()
    }
    fn config_map(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.config_maps.get(name).cloned()
    }
}

#[derive(Clone, Copy)]
enum Slot {
    Init(usize),
    Main(usize),
}

/// Writes the pod's status after each change.
struct Publisher {
    api: Api<Pod>,
    name: String,
    record: Arc<Mutex<PodRecord>>,
    runner: Arc<Runner>,
    uid: String,
}

impl Publisher {
    async fn publish(&self) {
        let (status, ready) = {
            let mut record = lock(&self.record);
            (record.status_at(Timestamp::now()), record.ready())
        };
        self.runner.set_ready(&self.uid, ready);
        let patch = json!({"status": status});
        if let Err(error) = self
            .api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(pod = self.name, %error, "writing the pod status");
        }
    }

    async fn update(&self, slot: Slot, change: impl FnOnce(&mut ContainerRecord)) {
        {
            let mut record = lock(&self.record);
            let container = match slot {
                Slot::Init(index) => record.init_containers.get_mut(index),
                Slot::Main(index) => record.containers.get_mut(index),
            };
            if let Some(container) = container {
                change(container);
            }
        }
        self.publish().await;
    }

    async fn set_all_waiting(&self, reason: &str, message: Option<String>) {
        {
            let mut guard = lock(&self.record);
            let record = &mut *guard;
            for container in record
                .init_containers
                .iter_mut()
                .chain(record.containers.iter_mut())
            {
                if !matches!(container.state, State::Terminated { .. }) {
                    container.state = State::waiting(reason, message.clone());
                }
            }
        }
        self.publish().await;
    }
}

struct ContainerContext {
    runner: Arc<Runner>,
    pod: Pod,
    pod_dir: PathBuf,
    hosts: PathBuf,
    network: Option<String>,
    slot: u16,
    mounts: Vec<(PathBuf, String, String)>,
    lookup: Fetched,
    restart_policy: String,
    grace: Duration,
}

impl ContainerContext {
    /// Runs one container until it is done for good (`true`: an init container that
    /// succeeded) or the pod stops.
    async fn supervise(
        &self,
        container: &Container,
        slot: Slot,
        publisher: &Publisher,
        stop: &CancellationToken,
        hard: &std::sync::atomic::AtomicBool,
    ) -> bool {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let launch = match self.launch(container) {
                Ok(launch) => launch,
                Err(ConfigError(message)) => {
                    publisher
                        .update(slot, |record| {
                            record.state =
                                State::waiting("CreateContainerConfigError", Some(message));
                        })
                        .await;
                    tokio::select! {
                        () = stop.cancelled() => return false,
                        () = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    }
                }
            };
            let mut child = match sandbox::spawn(&self.runner.config.executable, &launch) {
                Ok(child) => child,
                Err(error) => {
                    publisher
                        .update(slot, |record| {
                            record.state =
                                State::waiting("RunContainerError", Some(format!("{error:#}")));
                        })
                        .await;
                    tokio::select! {
                        () = stop.cancelled() => return false,
                        () = tokio::time::sleep(backoff) => continue,
                    }
                }
            };
            let started_at = Timestamp::now();
            let started = tokio::time::Instant::now();
            let pid = child.id().unwrap_or_default();
            publisher
                .update(slot, |record| {
                    record.state = State::Running { started_at };
                    record.container_id = Some(format!("pod-runner://{pid}"));
                })
                .await;
            let status = tokio::select! {
                status = child.wait() => status.ok(),
                () = stop.cancelled() => {
                    let grace = if hard.load(std::sync::atomic::Ordering::SeqCst) {
                        Duration::ZERO
                    } else {
                        self.grace
                    };
                    let status = sandbox::stop(&mut child, grace).await;
                    let code = status.map_or(137, sandbox::exit_code);
                    if !hard.load(std::sync::atomic::Ordering::SeqCst) {
                        publisher
                            .update(slot, |record| {
                                record.state = State::exited(code, started_at, Timestamp::now());
                            })
                            .await;
                    }
                    return false;
                }
            };
            let code = status.map_or(-1, sandbox::exit_code);
            let finished_at = Timestamp::now();
            let restart = match slot {
                Slot::Init(_) => code != 0 && self.restart_policy != "Never",
                Slot::Main(_) => match self.restart_policy.as_str() {
                    "Never" => false,
                    "OnFailure" => code != 0,
                    _ => true,
                },
            };
            {
                let mut record = lock(&publisher.record);
                let entry = match slot {
                    Slot::Init(index) => record.init_containers.get_mut(index),
                    Slot::Main(index) => record.containers.get_mut(index),
                };
                if let Some(entry) = entry {
                    let exited = State::exited(code, started_at, finished_at);
                    if restart {
                        entry.restart_count += 1;
                        entry.last_state = Some(exited);
                        entry.state = State::waiting(
                            "CrashLoopBackOff",
                            Some(format!(
                                "back-off {}s restarting failed container={} pod={}",
                                backoff.as_secs(),
                                container.name,
                                publisher.name
                            )),
                        );
                    } else {
                        entry.state = exited;
                    }
                }
                if matches!(slot, Slot::Init(_)) && code != 0 && !restart {
                    record.phase = Phase::Failed;
                } else if matches!(slot, Slot::Main(_)) {
                    record.settle_phase(&self.restart_policy);
                }
            }
            publisher.publish().await;
            if matches!(slot, Slot::Init(_)) && code == 0 {
                return true;
            }
            if !restart {
                stop.cancelled().await;
                return false;
            }
            if started.elapsed() > BACKOFF_RESET {
                backoff = FIRST_BACKOFF;
            }
            tokio::select! {
                () = stop.cancelled() => return false,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn launch(&self, container: &Container) -> Result<Launch, ConfigError> {
        let mut env = command::environment(&self.pod, container, &self.lookup)?;
        let argv = command::argv(container, &env)?;
        let argv = if self.network.is_some() {
            command::with_node_ports(&argv, self.slot)
        } else {
            argv
        };
        let config = &self.runner.config;
        let system_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        let path = match env.iter().find(|(name, _)| name == "PATH") {
            Some((_, path)) => path.clone(),
            None => system_path.to_owned(),
        };
        env.retain(|(name, _)| name != "PATH");
        let hostname = hostname(&self.pod);
        let mut base = vec![
            (
                "PATH".to_owned(),
                format!("{}:{path}", config.venv.join("bin").display()),
            ),
            ("HOME".to_owned(), sandbox::POD_HOME.to_owned()),
            ("HOSTNAME".to_owned(), hostname.clone()),
            // Ray reports usage to the internet unless told not to; nothing may leave 127/8.
            ("RAY_USAGE_STATS_ENABLED".to_owned(), "0".to_owned()),
            (
                "RAY_DEFAULT_OBJECT_STORE_MAX_MEMORY_BYTES".to_owned(),
                config.object_store_bytes.to_string(),
            ),
        ];
        base.retain(|(name, _)| !env.iter().any(|(set, _)| set == name) || name == "PATH");
        base.extend(env);
        let mounts = self
            .mounts
            .iter()
            .filter(|(_, _, owner)| owner == &container.name)
            .map(|(source, target, _)| (source.clone(), target.clone()))
            .collect();
        Ok(Launch {
            argv,
            env: base,
            hosts: self.hosts.clone(),
            tmp: self.pod_dir.join("tmp"),
            hostname,
            workdir: container.working_dir.clone(),
            mounts,
            network: self.network.clone(),
            log: self
                .pod_dir
                .join("logs")
                .join(format!("{}.log", container.name)),
        })
    }
}

/// Ray's head ports that clients use (GCS, dashboard, client server, Serve), relayed even when
/// the pod does not declare them: a pod IP answers on every port in a real cluster.
const HEAD_PORTS: [u16; 4] = [6379, 8265, 10001, 8000];

/// Listeners on the pod's IP in the runner's namespace for each declared TCP port, and for a
/// head, [`HEAD_PORTS`].
async fn relays(
    pod: &Pod,
    ip: Ipv4Addr,
    network: &Arc<NetworkNamespace>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut handles = Vec::new();
    let containers = pod
        .spec
        .as_ref()
        .map(|spec| spec.containers.as_slice())
        .unwrap_or_default();
    let mut ports: BTreeSet<u16> = containers
        .iter()
        .flat_map(|container| container.ports.iter().flatten())
        .filter(|port| port.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|port| u16::try_from(port.container_port).ok())
        .collect();
    if ray_node_type(pod).as_deref() == Some("head") {
        ports.extend(HEAD_PORTS);
    }
    for port in ports {
        let address = SocketAddr::from((ip, port));
        match TcpListener::bind(address).await {
            Ok(listener) => {
                handles.push(tokio::spawn(sandbox::relay(
                    listener,
                    address,
                    network.clone(),
                )));
            }
            Err(error) => tracing::warn!(%address, %error, "relay"),
        }
    }
    handles
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}

/// The pod's volumes as `(source, mount path, container)`: ConfigMaps and Secrets written as
/// files, emptyDirs as directories. `/dev/shm` is the machine's already; the ServiceAccount
/// token volume is not mounted (nothing the runner runs talks to the API server).
fn volumes(
    pod: &Pod,
    dir: &Path,
    lookup: &Fetched,
) -> Result<Vec<(PathBuf, String, String)>, ConfigError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut sources: BTreeMap<String, Option<PathBuf>> = BTreeMap::new();
    for volume in spec.volumes.iter().flatten() {
        let path = dir.join(&volume.name);
        let io = |error: std::io::Error| ConfigError(format!("volume {}: {error}", volume.name));
        let write = |files: BTreeMap<String, String>| -> Result<(), ConfigError> {
            std::fs::create_dir_all(&path).map_err(io)?;
            for (name, text) in files {
                let file = path.join(&name);
                if let Some(parent) = file.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                std::fs::write(file, text).map_err(io)?;
            }
            Ok(())
        };
        let source = if let Some(map) = &volume.config_map {
            let data = lookup.config_map(&map.name);
            match data {
                Some(data) => write(project(&data, map.items.as_deref()))?,
                None if map.optional == Some(true) => write(BTreeMap::new())?,
                None => {
                    return Err(ConfigError(format!(
                        "volume {}: ConfigMap \"{}\" not found",
                        volume.name, map.name
                    )));
                }
            }
            Some(path)
        } else if let Some(secret) = &volume.secret {
            let name = secret.secret_name.clone().unwrap_or_default();
            match lookup.secret(&name) {
                Some(data) => write(project(&data, secret.items.as_deref()))?,
                None if secret.optional == Some(true) => write(BTreeMap::new())?,
                None => {
                    return Err(ConfigError(format!(
                        "volume {}: Secret \"{name}\" not found",
                        volume.name
                    )));
                }
            }
            Some(path)
        } else if volume.empty_dir.is_some() {
            std::fs::create_dir_all(&path).map_err(io)?;
            Some(path)
        } else if volume.projected.is_some() && volume.name.starts_with("kube-api-access-") {
            None
        } else {
            return Err(ConfigError(format!(
                "volume {}: only configMap, secret and emptyDir volumes are supported by the pod runner",
                volume.name
            )));
        };
        sources.insert(volume.name.clone(), source);
    }
    let mut mounts = Vec::new();
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    for container in containers {
        for mount in container.volume_mounts.iter().flatten() {
            if mount.mount_path == "/dev/shm" {
                continue;
            }
            if Path::new(&mount.mount_path).starts_with("/tmp") {
                return Err(ConfigError(format!(
                    "container {}: volumeMount {} at {}: the pod runner gives each pod its own /tmp and mounts nothing inside it",
                    container.name, mount.name, mount.mount_path
                )));
            }
            match sources.get(&mount.name) {
                Some(Some(source)) => {
                    let source = match mount.sub_path.as_deref().filter(|sub| !sub.is_empty()) {
                        Some(sub) => source.join(sub),
                        None => source.clone(),
                    };
                    mounts.push((source, mount.mount_path.clone(), container.name.clone()));
                }
                Some(None) => {}
                None => {
                    return Err(ConfigError(format!(
                        "container {}: volumeMount {} names no volume",
                        container.name, mount.name
                    )));
                }
            }
        }
    }
    Ok(mounts)
}

/// A ConfigMap's or Secret's files: every key, or the listed `items` under their paths.
fn project(
    data: &BTreeMap<String, String>,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
) -> BTreeMap<String, String> {
    match items {
        Some(items) if !items.is_empty() => items
            .iter()
            .filter_map(|item| Some((item.path.clone(), data.get(&item.key)?.clone())))
            .collect(),
        _ => data.clone(),
    }
}

/// `head` or `worker` for a Ray pod.
fn ray_node_type(pod: &Pod) -> Option<String> {
    pod.metadata
        .labels
        .as_ref()?
        .get(RAY_NODE_TYPE_LABEL)
        .cloned()
}

fn memory_estimate(pod: &Pod) -> u64 {
    match ray_node_type(pod).as_deref() {
        Some("head") => HEAD_MEMORY,
        Some(_) => WORKER_MEMORY,
        None => OTHER_MEMORY,
    }
}

/// The cluster a Ray pod belongs to (one network namespace each): its controller's uid, or
/// namespace and cluster label.
fn ray_cluster_key(pod: &Pod) -> Option<String> {
    let labels = pod.metadata.labels.as_ref()?;
    let cluster = labels.get(RAY_CLUSTER_LABEL)?;
    labels.get(RAY_NODE_TYPE_LABEL)?;
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|owner| owner.controller == Some(true))
        .map(|owner| owner.uid.clone());
    Some(owner.unwrap_or_else(|| {
        format!(
            "{}/{cluster}",
            pod.metadata.namespace.as_deref().unwrap_or_default()
        )
    }))
}

/// A pod's host name, as Kubernetes sets it: `spec.hostname`, else the pod name cut to 63.
fn hostname(pod: &Pod) -> String {
    let spec_name = pod.spec.as_ref().and_then(|spec| spec.hostname.clone());
    let name = spec_name.unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
    name.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches(['-', '.'])
        .to_owned()
}

fn pod_host(pod: &Pod, ip: Ipv4Addr) -> PodHost {
    PodHost {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        hostname: hostname(pod),
        subdomain: pod.spec.as_ref().and_then(|spec| spec.subdomain.clone()),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        ip,
        ready: false,
    }
}

fn object_key(meta: &kube::api::ObjectMeta) -> Option<(String, String)> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

fn write_in_place(path: &Path, text: &str) {
    if let Err(error) = std::fs::write(path, text) {
        tracing::warn!(path = %path.display(), %error, "writing a hosts file");
    }
}

/// The runner's state stays usable when a task panicked while holding a lock.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
