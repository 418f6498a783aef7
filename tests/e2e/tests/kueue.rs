//! Kueue end to end, with the real Kueue (built from its Go module, its webhooks
//! registered) and real Ray behind the pods: Kueue works through the Ray objects, not the
//! pods. Its webhook creates a queued RayJob or RayCluster suspended; it unsuspends what it
//! admits, and suspends what it preempts, whose cluster WasmRay tears down; on admission it
//! writes the flavor's node selector into the pod templates, which the pods must carry.
//!
//! One ClusterQueue with room for one 1-CPU head at a time, in one test: the scenarios share
//! one Kueue and run one after another.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use wasmray_crds::{RayCluster, RayJob};
use wasmray_e2e::kueue::Kueue;
use wasmray_e2e::operator::{Fixture, OperatorOptions, eventually};

const QUEUE_LABEL: &str = "kueue.x-k8s.io/queue-name";
const PRIORITY_LABEL: &str = "kueue.x-k8s.io/priority-class";
/// A label the pod runner's nodes carry, given to the queue's flavor: Kueue puts it in the
/// admitted pod templates' node selectors.
const FLAVOR_NODE_LABEL: (&str, &str) = ("node.kubernetes.io/instance-type", "testcp-pod-runner");

fn head_spec() -> Value {
    json!({
        "rayVersion": "2.60.0",
        "headGroupSpec": {
            "rayStartParams": {},
            "template": {"spec": {"containers": [{
                "name": "ray-head",
                "image": "rayproject/ray:2.60.0",
                "resources": {
                    "requests": {"cpu": "1", "memory": "1G"},
                    "limits": {"cpu": "1", "memory": "1G"},
                },
                "ports": [
                    {"containerPort": 6379, "name": "gcs-server"},
                    {"containerPort": 8265, "name": "dashboard"}
                ]
            }]}}
        },
        "workerGroupSpecs": [],
    })
}

/// A queued RayJob of `priority` whose entrypoint sleeps `seconds`.
fn queued_job(name: &str, priority: &str, seconds: u32) -> anyhow::Result<RayJob> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": name, "labels": {QUEUE_LABEL: "lq", PRIORITY_LABEL: priority}},
        "spec": {
            "submissionMode": "HTTPMode",
            "entrypoint": format!("python -c \"import time; time.sleep({seconds}); print('slept')\""),
            "shutdownAfterJobFinishes": true,
            "rayClusterSpec": head_spec(),
        },
    }))?)
}

fn queued_cluster(name: &str) -> anyhow::Result<RayCluster> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": name, "labels": {QUEUE_LABEL: "lq"}},
        "spec": head_spec(),
    }))?)
}

fn kueue_api(fx: &Fixture, kind: &str, namespaced: bool) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("kueue.x-k8s.io", "v1beta2", kind));
    if namespaced {
        Api::namespaced_with(fx.client.clone(), &fx.ns.name, &resource)
    } else {
        Api::all_with(fx.client.clone(), &resource)
    }
}

async fn create_kueue_object(fx: &Fixture, kind: &str, object: Value) -> anyhow::Result<()> {
    let namespaced = object["metadata"].get("namespace").is_some();
    let object: DynamicObject = serde_json::from_value(object)?;
    kueue_api(fx, kind, namespaced)
        .create(&PostParams::default(), &object)
        .await
        .with_context(|| format!("creating {kind}"))?;
    Ok(())
}

fn deployment_status(job: &RayJob) -> String {
    serde_json::to_value(job).unwrap_or_default()["status"]["jobDeploymentStatus"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn suspended(job: &RayJob) -> bool {
    job.spec.suspend == Some(true)
}

/// Waits for the RayJob to end and checks it succeeded.
async fn succeeds(jobs: &Api<RayJob>, name: &str) -> anyhow::Result<()> {
    let status = eventually(&format!("RayJob {name} to finish"), || async {
        let job = serde_json::to_value(jobs.get(name).await?)?;
        let status = job["status"].clone();
        let deployment = status["jobDeploymentStatus"].as_str().unwrap_or_default();
        ensure!(
            deployment == "Complete" || deployment == "Failed",
            "jobDeploymentStatus {deployment}, suspend {}, jobStatus {}, message {}",
            job["spec"]["suspend"],
            status["jobStatus"],
            status["message"]
        );
        Ok(status)
    })
    .await?;
    ensure!(
        status["jobStatus"] == "SUCCEEDED",
        "RayJob {name} ended {} ({})",
        status["jobStatus"],
        status["message"]
    );
    Ok(())
}

/// Every pod of the namespace carries the flavor's node selector Kueue wrote.
async fn pods_carry_the_flavor(fx: &Fixture, selector: &str) -> anyhow::Result<usize> {
    let pods: Api<Pod> = fx.pods_api();
    let list = pods.list(&ListParams::default().labels(selector)).await?;
    for pod in &list.items {
        let node_selector = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.node_selector.clone())
            .unwrap_or_default();
        ensure!(
            node_selector.get(FLAVOR_NODE_LABEL.0).map(String::as_str) == Some(FLAVOR_NODE_LABEL.1),
            "pod {} lacks the flavor's node selector: {node_selector:?}",
            pod.name_any()
        );
    }
    Ok(list.items.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kueue_admits_queues_and_preempts_rayjobs_and_rayclusters() -> anyhow::Result<()> {
    let fx = Fixture::with_real_ray("kueue", OperatorOptions::default()).await?;
    let kueue = Kueue::start(wasmray_e2e::cluster().await?).await?;
    kueue.admit_namespace(&fx.ns.name).await?;
    let result = scenarios(&fx).await;
    let result = result.with_context(|| format!("Kueue's log ends:\n{}", kueue.log_tail()));
    let cleanup = cleanup(&fx).await;
    kueue.stop().await?;
    result?;
    cleanup?;
    fx.finish().await
}

async fn scenarios(fx: &Fixture) -> anyhow::Result<()> {
    let ns = &fx.ns.name;
    create_kueue_object(
        fx,
        "ResourceFlavor",
        json!({
            "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
            "metadata": {"name": format!("{ns}-runner")},
            "spec": {"nodeLabels": {FLAVOR_NODE_LABEL.0: FLAVOR_NODE_LABEL.1}},
        }),
    )
    .await?;
    create_kueue_object(
        fx,
        "ClusterQueue",
        json!({
            "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue",
            "metadata": {"name": format!("{ns}-cq")},
            "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                "preemption": {"withinClusterQueue": "LowerPriority"},
                "resourceGroups": [{
                    "coveredResources": ["cpu", "memory"],
                    "flavors": [{"name": format!("{ns}-runner"), "resources": [
                        {"name": "cpu", "nominalQuota": "1500m"},
                        {"name": "memory", "nominalQuota": "3Gi"},
                    ]}],
                }],
            },
        }),
    )
    .await?;
    for (class, value) in [("low", 100), ("high", 1000)] {
        create_kueue_object(
            fx,
            "WorkloadPriorityClass",
            json!({
                "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "WorkloadPriorityClass",
                "metadata": {"name": format!("{ns}-{class}")},
                "value": value,
            }),
        )
        .await?;
    }
    create_kueue_object(
        fx,
        "LocalQueue",
        json!({
            "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
            "metadata": {"name": "lq", "namespace": ns},
            "spec": {"clusterQueue": format!("{ns}-cq")},
        }),
    )
    .await?;
    let low = format!("{ns}-low");
    let high = format!("{ns}-high");
    let jobs: Api<RayJob> = Api::namespaced(fx.client.clone(), ns);

    // A is admitted and runs. Kueue's webhook created it suspended.
    let created = jobs
        .create(&PostParams::default(), &queued_job("a", &low, 25)?)
        .await?;
    ensure!(
        suspended(&created),
        "Kueue's webhook did not suspend the queued RayJob"
    );
    eventually("RayJob a admitted and running", || async {
        let job = jobs.get("a").await?;
        ensure!(!suspended(&job), "still suspended");
        ensure!(
            deployment_status(&job) == "Running",
            "{}",
            deployment_status(&job)
        );
        Ok(())
    })
    .await?;
    let first_cluster = serde_json::to_value(jobs.get("a").await?)?["status"]["rayClusterName"]
        .as_str()
        .context("a has no cluster")?
        .to_owned();
    let carrying = pods_carry_the_flavor(fx, &format!("ray.io/cluster={first_cluster}")).await?;
    ensure!(carrying == 1, "{carrying} pods in a's cluster");

    // B waits for quota: suspended, no cluster.
    jobs.create(&PostParams::default(), &queued_job("b", &low, 1)?)
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let waiting = jobs.get("b").await?;
    ensure!(suspended(&waiting), "b runs without quota");
    let clusters: Api<RayCluster> = fx.clusters();
    let owned_by_b = clusters
        .list(&ListParams::default().labels("ray.io/originated-from-cr-name=b"))
        .await?;
    ensure!(
        owned_by_b.items.is_empty(),
        "b has a cluster while it waits"
    );

    // C, of higher priority, preempts A: A's cluster is torn down, C runs and finishes.
    jobs.create(&PostParams::default(), &queued_job("c", &high, 1)?)
        .await?;
    eventually("a preempted and its cluster gone", || async {
        let job = jobs.get("a").await?;
        ensure!(suspended(&job), "a is not suspended");
        ensure!(
            deployment_status(&job) == "Suspended",
            "a is {}",
            deployment_status(&job)
        );
        let gone = clusters.get_opt(&first_cluster).await?.is_none();
        ensure!(gone, "a's cluster {first_cluster} still exists");
        Ok(())
    })
    .await?;
    succeeds(&jobs, "c").await?;
    // Then A runs again, and B gets its turn.
    succeeds(&jobs, "a").await?;
    succeeds(&jobs, "b").await?;

    // A RayCluster in the queue likewise: admitted with the flavor, a second one waits.
    let created = clusters
        .create(&PostParams::default(), &queued_cluster("r1")?)
        .await?;
    ensure!(
        created.spec.suspend == Some(true),
        "Kueue's webhook did not suspend the queued RayCluster"
    );
    eventually("RayCluster r1 admitted with its head", || async {
        let carrying = pods_carry_the_flavor(fx, "ray.io/cluster=r1").await?;
        ensure!(carrying == 1, "{carrying} pods");
        Ok(())
    })
    .await?;
    clusters
        .create(&PostParams::default(), &queued_cluster("r2")?)
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let waiting = clusters.get("r2").await?;
    ensure!(waiting.spec.suspend == Some(true), "r2 runs without quota");
    ensure!(
        fx.pods("r2").await?.is_empty(),
        "r2 has pods while it waits"
    );
    clusters.delete("r1", &DeleteParams::default()).await?;
    eventually("RayCluster r2 admitted once r1 is gone", || async {
        let carrying = pods_carry_the_flavor(fx, "ray.io/cluster=r2").await?;
        ensure!(carrying == 1, "{carrying} pods");
        Ok(())
    })
    .await?;

    // A queue that does not exist: Kueue never admits; the objects say why.
    let mut lost_job = queued_job("lost", &low, 1)?;
    lost_job.metadata.labels = Some([(QUEUE_LABEL.to_owned(), "nowhere".to_owned())].into());
    jobs.create(&PostParams::default(), &lost_job).await?;
    let mut lost_cluster = queued_cluster("lost")?;
    lost_cluster.metadata.labels = Some([(QUEUE_LABEL.to_owned(), "nowhere".to_owned())].into());
    clusters
        .create(&PostParams::default(), &lost_cluster)
        .await?;
    eventually(
        "the lost RayJob and RayCluster say their queue is missing",
        || async {
            let job = serde_json::to_value(jobs.get("lost").await?)?;
            let message = job["status"]["message"].as_str().unwrap_or_default();
            ensure!(
                message.contains("LocalQueue nowhere does not exist"),
                "RayJob: {message:?}"
            );
            let cluster = serde_json::to_value(clusters.get("lost").await?)?;
            let reason = cluster["status"]["reason"].as_str().unwrap_or_default();
            ensure!(
                reason.contains("LocalQueue nowhere does not exist"),
                "RayCluster: {reason:?}"
            );
            let events: Api<k8s_openapi::api::events::v1::Event> =
                Api::namespaced(fx.client.clone(), ns);
            let mut warned: Vec<(String, String)> = events
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter(|event| event.reason.as_deref() == Some("QueueNotFound"))
                .filter_map(|event| {
                    let regarding = event.regarding?;
                    Some((regarding.kind?, regarding.name?))
                })
                .collect();
            warned.sort();
            // Only the lost ones: the host read the others' LocalQueue and found it.
            let expected = [("RayCluster", "lost"), ("RayJob", "lost")]
                .map(|(kind, name)| (kind.to_owned(), name.to_owned()));
            ensure!(warned == expected, "QueueNotFound events on {warned:?}");
            Ok(())
        },
    )
    .await?;
    ensure!(
        fx.pods("lost").await?.is_empty(),
        "the lost RayCluster has pods"
    );
    Ok(())
}

/// The namespace's Ray objects (their finalizers need the operator) and the cluster-scoped
/// Kueue objects of this test.
async fn cleanup(fx: &Fixture) -> anyhow::Result<()> {
    let ns = &fx.ns.name;
    let jobs: Api<RayJob> = Api::namespaced(fx.client.clone(), ns);
    jobs.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    fx.clusters()
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    eventually("the Ray objects released", || async {
        let left = jobs.list(&ListParams::default()).await?.items.len()
            + fx.clusters()
                .list(&ListParams::default())
                .await?
                .items
                .len();
        ensure!(left == 0, "{left} left");
        Ok(())
    })
    .await?;
    let deletions = [
        ("ClusterQueue", format!("{ns}-cq")),
        ("ResourceFlavor", format!("{ns}-runner")),
        ("WorkloadPriorityClass", format!("{ns}-low")),
        ("WorkloadPriorityClass", format!("{ns}-high")),
    ];
    for (kind, name) in deletions {
        let api = kueue_api(fx, kind, false);
        // Kueue's finalizers on queues and flavors go with the workloads; remove them so the
        // objects do not outlive a stopped Kueue.
        let _ = api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
            )
            .await;
        let _ = api.delete(&name, &DeleteParams::default()).await;
    }
    Ok(())
}
