//! What a namespace's RayClusters own, counted per replica slot, for the fault tests: after
//! a crash, an outage or a failover every cluster must end with each child it should have,
//! never two pods for one slot, and nothing whose owner is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject, ListParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt as _};
use serde_json::{Value, json};

/// The `ray.io/v1` RayCluster resource, read untyped (this crate does not depend on the
/// typed API).
pub fn rayclusters() -> ApiResource {
    ApiResource {
        group: "ray.io".into(),
        version: "v1".into(),
        api_version: "ray.io/v1".into(),
        kind: "RayCluster".into(),
        plural: "rayclusters".into(),
    }
}

/// `crds/samples/ray-cluster.sample.yaml` (a head and one worker group of 1 CPU pods) named
/// `name`, with `workers` replicas in its group.
pub fn sample_cluster(name: &str, workers: i64) -> anyhow::Result<Value> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds/samples/ray-cluster.sample.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut cluster: Value = serde_yaml::from_str(&text)?;
    cluster["metadata"] = json!({ "name": name });
    let group = &mut cluster["spec"]["workerGroupSpecs"][0];
    group["replicas"] = json!(workers);
    group["maxReplicas"] = json!(workers.max(group["maxReplicas"].as_i64().unwrap_or(0)));
    Ok(cluster)
}

/// Creates `sample_cluster(name, workers)` for every name, 16 requests at a time.
pub async fn create_samples(
    client: &Client,
    namespace: &str,
    names: &BTreeSet<String>,
    workers: i64,
) -> anyhow::Result<()> {
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &rayclusters());
    futures::stream::iter(names)
        .map(|name| {
            let api = api.clone();
            async move {
                let object: DynamicObject = serde_json::from_value(sample_cluster(name, workers)?)?;
                api.create(&PostParams::default(), &object)
                    .await
                    .with_context(|| format!("creating RayCluster {name}"))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await
}

/// Returns once at least `count` pods labelled `ray.io/cluster` exist (or existed) in the
/// namespace. A watch, not polling, so that a fault injected next lands soon after.
pub async fn until_pods(
    client: &Client,
    namespace: &str,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let api = Api::<Pod>::namespaced(client.clone(), namespace);
    let mut seen = BTreeSet::new();
    let mut events = watcher(api, watcher::Config::default().labels("ray.io/cluster")).boxed();
    let wait = async {
        while let Some(event) = events.try_next().await? {
            if let watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) = event {
                seen.insert(pod.name_any());
                if seen.len() >= count {
                    return Ok(());
                }
            }
        }
        bail!("the pod watch ended")
    };
    tokio::time::timeout(timeout, wait)
        .await
        .with_context(|| format!("fewer than {count} pods in {namespace} after {timeout:?}"))?
}

/// One look at a namespace.
#[derive(Debug, Default)]
pub struct Census {
    pub clusters: usize,
    pub ready_clusters: usize,
    /// Live (not terminating) pods owned by a RayCluster.
    pub pods: usize,
    /// What must never be seen: more pods than a group has slots, more than one head
    /// Service, a child whose owner is gone (or that has none).
    pub faults: Vec<String>,
    /// What is not there yet: a missing RayCluster, pod or head Service, a pod not Running
    /// and Ready, a cluster not `ready`. Normal before convergence.
    pub pending: Vec<String>,
}

impl Census {
    pub fn converged(&self) -> bool {
        self.faults.is_empty() && self.pending.is_empty()
    }

    /// A short account: counts, then the first few faults and pending items.
    pub fn summary(&self) -> String {
        let first = |items: &[String]| items.iter().take(8).cloned().collect::<Vec<_>>();
        format!(
            "{} clusters ({} ready), {} pods; {} faults {:?}; {} pending {:?}",
            self.clusters,
            self.ready_clusters,
            self.pods,
            self.faults.len(),
            first(&self.faults),
            self.pending.len(),
            first(&self.pending),
        )
    }
}

/// Pods a group should have: `replicas` (default `minReplicas`) within the group's bounds,
/// times `numOfHosts`; none when the group is suspended.
fn worker_slots(group: &Value) -> i64 {
    if group["suspend"].as_bool() == Some(true) {
        return 0;
    }
    let min = group["minReplicas"].as_i64().unwrap_or(0);
    let max = group["maxReplicas"].as_i64().unwrap_or(i64::MAX).max(min);
    let replicas = group["replicas"].as_i64().unwrap_or(min).clamp(min, max);
    replicas * group["numOfHosts"].as_i64().unwrap_or(1)
}

/// The uid of the RayCluster that controls a child, if any.
fn controller_uid(meta: &ObjectMeta) -> Option<&str> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|owner| owner.kind == "RayCluster" && owner.controller == Some(true))
        .map(|owner| owner.uid.as_str())
}

/// Counts the namespace's RayClusters and their pods and Services. `expected` names the
/// RayClusters that must exist; every RayCluster found is checked, listed or not.
pub async fn take(
    client: &Client,
    namespace: &str,
    expected: &BTreeSet<String>,
) -> anyhow::Result<Census> {
    let clusters = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &rayclusters())
        .list(&ListParams::default())
        .await
        .context("listing RayClusters")?;
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .context("listing pods")?;
    let services = Api::<Service>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .context("listing Services")?;

    let mut census = Census {
        clusters: clusters.items.len(),
        ..Census::default()
    };
    // uid -> (name, slots per group, state)
    let mut owners: BTreeMap<String, (String, BTreeMap<String, i64>, bool)> = BTreeMap::new();
    for cluster in &clusters.items {
        let name = cluster.name_any();
        let Some(uid) = cluster.uid() else {
            continue;
        };
        let spec = &cluster.data["spec"];
        let mut slots = BTreeMap::from([("headgroup".to_owned(), 1)]);
        for group in spec["workerGroupSpecs"].as_array().into_iter().flatten() {
            let group_name = group["groupName"].as_str().unwrap_or_default().to_owned();
            slots.insert(group_name, worker_slots(group));
        }
        let ready = cluster.data["status"]["state"] == "ready";
        if ready {
            census.ready_clusters += 1;
        } else {
            census
                .pending
                .push(format!("{name}: state {}", cluster.data["status"]["state"]));
        }
        owners.insert(uid, (name, slots, ready));
    }
    let found: BTreeSet<&str> = owners.values().map(|(name, ..)| name.as_str()).collect();
    for name in expected {
        if !found.contains(name.as_str()) {
            census.pending.push(format!("RayCluster {name} missing"));
        }
    }

    // (owner uid, group) -> live pods
    let mut filled: BTreeMap<(String, String), i64> = BTreeMap::new();
    for pod in &pods.items {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = pod.name_any();
        let Some(uid) = controller_uid(&pod.metadata).filter(|uid| owners.contains_key(*uid))
        else {
            census
                .faults
                .push(format!("pod {name}: no live RayCluster owns it"));
            continue;
        };
        census.pods += 1;
        let group = pod
            .labels()
            .get("ray.io/group")
            .cloned()
            .unwrap_or_default();
        *filled.entry((uid.to_owned(), group)).or_default() += 1;
        if !crate::pod_running_and_ready(pod) {
            census
                .pending
                .push(format!("pod {name}: not Running and Ready"));
        }
    }
    for (uid, (cluster, slots, _)) in &owners {
        for (group, &want) in slots {
            let have = filled
                .get(&(uid.clone(), group.clone()))
                .copied()
                .unwrap_or(0);
            if have > want {
                census
                    .faults
                    .push(format!("{cluster}/{group}: {have} pods for {want} slots"));
            } else if have < want {
                census
                    .pending
                    .push(format!("{cluster}/{group}: {have} of {want} pods"));
            }
        }
        for ((owner, group), have) in &filled {
            if owner == uid && !slots.contains_key(group) {
                census
                    .faults
                    .push(format!("{cluster}: {have} pods of unknown group {group:?}"));
            }
        }
    }

    let mut heads: BTreeMap<String, usize> = BTreeMap::new();
    for service in &services.items {
        if service.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = service.name_any();
        match controller_uid(&service.metadata).filter(|uid| owners.contains_key(*uid)) {
            Some(uid) => {
                if service.labels().get("ray.io/node-type").map(String::as_str) == Some("head") {
                    *heads.entry(uid.to_owned()).or_default() += 1;
                }
            }
            None => census
                .faults
                .push(format!("Service {name}: no live RayCluster owns it")),
        }
    }
    for (uid, (cluster, ..)) in &owners {
        match heads.get(uid).copied().unwrap_or(0) {
            0 => census.pending.push(format!("{cluster}: no head Service")),
            1 => {}
            n => census.faults.push(format!("{cluster}: {n} head Services")),
        }
    }
    Ok(census)
}

/// Takes a census every 250 ms until everything converged, and fails at once on a fault
/// (a second pod for a slot is an error even if it is deleted later). List errors (the API
/// server may be down) are retried until `timeout`.
pub async fn wait_converged(
    client: &Client,
    namespace: &str,
    expected: &BTreeSet<String>,
    timeout: Duration,
) -> anyhow::Result<Census> {
    converge(client, namespace, expected, timeout, true)
        .await
        .map(|(census, _)| census)
}

/// [`wait_converged`], but a fault is noted (the first census that had one) rather than
/// fatal, so that the time to converge is measured even when the operator had to repair.
pub async fn wait_converged_noting_faults(
    client: &Client,
    namespace: &str,
    expected: &BTreeSet<String>,
    timeout: Duration,
) -> anyhow::Result<(Census, Option<String>)> {
    converge(client, namespace, expected, timeout, false).await
}

async fn converge(
    client: &Client,
    namespace: &str,
    expected: &BTreeSet<String>,
    timeout: Duration,
    stop_on_fault: bool,
) -> anyhow::Result<(Census, Option<String>)> {
    let deadline = Instant::now() + timeout;
    let mut first_fault: Option<String> = None;
    loop {
        let last = match take(client, namespace, expected).await {
            Ok(census) if census.converged() => return Ok((census, first_fault)),
            Ok(census) => {
                if !census.faults.is_empty() {
                    if stop_on_fault {
                        bail!("faults in {namespace}: {}", census.summary());
                    }
                    first_fault.get_or_insert_with(|| census.summary());
                }
                census.summary()
            }
            Err(error) => format!("{error:#}"),
        };
        if Instant::now() > deadline {
            let faults = first_fault.map(|f| format!("; first faults seen: {f}"));
            bail!(
                "{namespace} not converged within {timeout:?}: {last}{}",
                faults.unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Pod writes in one namespace, from the API server's audit log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PodWrites {
    /// Creates answered 201.
    pub created: usize,
    /// Creates answered otherwise. Not all of them failed: a create whose client went away
    /// (a killed operator) is logged 504 "context canceled" and may still have made its pod,
    /// which is why a second pod for a slot is told by the deletes, not by counting creates.
    pub create_failures: usize,
    /// Delete requests (`delete`, `deletecollection`), whatever their answer.
    pub deletes: usize,
}

/// Counts the pod writes in `namespace`, by anyone. With no delete, every pod ever created
/// is still there, so a census with no slot over-filled proves that no slot ever had a
/// second pod, even one made and removed in between.
pub fn pod_writes(audit_log: &Path, namespace: &str) -> anyhow::Result<PodWrites> {
    let text = std::fs::read_to_string(audit_log)
        .with_context(|| format!("reading {}", audit_log.display()))?;
    let mut writes = PodWrites::default();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let object = &event["objectRef"];
        if event["stage"] != "ResponseComplete"
            || object["resource"] != "pods"
            || object["subresource"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
            || object["namespace"] != namespace
        {
            continue;
        }
        let code = event["responseStatus"]["code"].as_i64().unwrap_or_default();
        match event["verb"].as_str() {
            Some("create") if code == 201 => writes.created += 1,
            Some("create") => writes.create_failures += 1,
            Some("delete" | "deletecollection") => writes.deletes += 1,
            _ => {}
        }
    }
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::worker_slots;
    use serde_json::json;

    #[test]
    fn slots_follow_replicas_bounds_hosts_and_suspension() {
        assert_eq!(worker_slots(&json!({"replicas": 3})), 3);
        assert_eq!(worker_slots(&json!({"minReplicas": 2})), 2);
        assert_eq!(
            worker_slots(&json!({"replicas": 9, "minReplicas": 1, "maxReplicas": 4})),
            4
        );
        assert_eq!(
            worker_slots(&json!({"replicas": 0, "minReplicas": 1, "maxReplicas": 4})),
            1
        );
        assert_eq!(worker_slots(&json!({"replicas": 2, "numOfHosts": 4})), 8);
        assert_eq!(worker_slots(&json!({"replicas": 2, "suspend": true})), 0);
    }
}
