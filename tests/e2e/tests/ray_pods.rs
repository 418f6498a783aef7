//! Real Ray behind the pods: the pod runner (tests/controlplane/pod-runner.md) runs every pod of
//! these tests' namespaces as local Ray processes, so each RayCluster is a Ray cluster of its
//! own. The operator reaches each head by its pod IP (`--ray-head-address pod-ip`), with no
//! dashboard override.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Instant;

use anyhow::{Context as _, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use wasmray_crds::RayJob;
use wasmray_e2e::operator::{Fixture, OperatorOptions, eventually};
use wasmray_e2e::ray::{RayNode, gcs_nodes};

const DASHBOARD_PORT: u16 = 8265;

/// A small RayCluster: one head, one worker group `workers`.
fn cluster(name: &str, workers: i64, extra_worker_env: Value, head_restart: &str) -> Value {
    json!({
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": name},
        "spec": {
            "rayVersion": "2.60.0",
            "headGroupSpec": {
                "rayStartParams": {},
                "template": {"spec": {
                    "restartPolicy": head_restart,
                    "containers": [{
                        "name": "ray-head",
                        "image": "rayproject/ray:2.60.0",
                        "resources": {"limits": {"cpu": "1", "memory": "1G"}},
                        "ports": [
                            {"containerPort": 6379, "name": "gcs-server"},
                            {"containerPort": 8265, "name": "dashboard"},
                            {"containerPort": 10001, "name": "client"}
                        ]
                    }]
                }}
            },
            "workerGroupSpecs": [{
                "groupName": "workers",
                "replicas": workers,
                "minReplicas": 0,
                "maxReplicas": 4,
                "rayStartParams": {},
                "template": {"spec": {"containers": [{
                    "name": "ray-worker",
                    "image": "rayproject/ray:2.60.0",
                    "resources": {"limits": {"cpu": "1", "memory": "500M"}},
                    "env": extra_worker_env
                }]}}
            }]
        }
    })
}

/// The alive Ray nodes of a cluster, from its head's dashboard.
async fn alive_nodes(fixture: &Fixture, cluster: &str) -> anyhow::Result<Vec<RayNode>> {
    let status = fixture.status(cluster).await?;
    let ip: IpAddr = status["head"]["podIP"]
        .as_str()
        .context("no head pod IP yet")?
        .parse()?;
    let nodes = tokio::task::spawn_blocking(move || gcs_nodes(ip, DASHBOARD_PORT)).await??;
    Ok(nodes.into_iter().filter(|node| node.alive).collect())
}

/// The Ray nodes the pods should be: instance id = pod name, node type = group.
fn expected_nodes(pods: &[Pod]) -> Vec<RayNode> {
    let mut nodes: Vec<RayNode> = pods
        .iter()
        .map(|pod| RayNode {
            instance_id: pod.name_any(),
            node_type: pod
                .labels()
                .get("ray.io/group")
                .cloned()
                .unwrap_or_default(),
            alive: true,
        })
        .collect();
    nodes.sort();
    nodes
}

/// Waits until the GCS lists exactly the cluster's running pods, one node each.
async fn nodes_match_pods(fixture: &Fixture, cluster: &str) -> anyhow::Result<Vec<RayNode>> {
    eventually(
        &format!("{cluster}'s Ray nodes to match its pods"),
        || async {
            let pods: Vec<Pod> = fixture
                .pods(cluster)
                .await?
                .into_iter()
                .filter(wasmray_e2e::pod_running_and_ready)
                .collect();
            let expected = expected_nodes(&pods);
            let alive = alive_nodes(fixture, cluster).await?;
            ensure!(
                alive == expected,
                "the GCS lists {alive:?}, the pods are {expected:?}"
            );
            Ok(alive)
        },
    )
    .await
}

/// Processes on this machine whose environment names one of `pods` as its Ray instance id.
fn processes_of(pods: &BTreeSet<String>) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                environ.split(|byte| *byte == 0).any(|var| {
                    std::str::from_utf8(var)
                        .ok()
                        .and_then(|var| var.strip_prefix("RAY_CLOUD_INSTANCE_ID="))
                        .is_some_and(|pod| pods.contains(pod))
                })
            })
        })
        .collect()
}

/// The process of `pod` whose command name is `comm`.
fn process_named(pod: &str, comm: &str) -> Option<u32> {
    processes_of(&BTreeSet::from([pod.to_owned()]))
        .into_iter()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|name| name.trim() == comm)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ray_nodes_follow_the_pods_through_scaling_and_deletion() -> anyhow::Result<()> {
    let fixture = Fixture::with_real_ray("ray-nodes", OperatorOptions::default()).await?;
    let name = "nodes";
    let started = Instant::now();
    fixture
        .create(cluster(name, 1, json!([]), "Always"))
        .await?;
    fixture.wait_ready(name, 2).await?;
    nodes_match_pods(&fixture, name).await?;
    println!(
        "1 head + 1 worker joined one Ray cluster {:.1?} after create",
        started.elapsed()
    );

    fixture
        .patch_spec(name, json!({"workerGroupSpecs": [worker_group(3, &[])]}))
        .await?;
    fixture.wait_group(name, "workers", 3).await?;
    let before = nodes_match_pods(&fixture, name).await?;

    let workers = fixture.workers(name, "workers").await?;
    let victim = workers[1].name_any();
    let survivors: BTreeSet<String> = workers
        .iter()
        .map(|pod| pod.name_any())
        .filter(|pod| *pod != victim)
        .collect();
    fixture
        .patch_spec(
            name,
            json!({"workerGroupSpecs": [worker_group(2, &[&victim])]}),
        )
        .await?;
    eventually("the named worker, and only it, to leave", || async {
        let left: BTreeSet<String> = fixture
            .workers(name, "workers")
            .await?
            .iter()
            .map(|pod| pod.name_any())
            .collect();
        ensure!(
            left == survivors,
            "workers are {left:?}, expected {survivors:?}"
        );
        Ok(())
    })
    .await?;
    let after = nodes_match_pods(&fixture, name).await?;
    ensure!(
        after.len() + 1 == before.len() && after.iter().all(|node| before.contains(node)),
        "scaling down by name changed more than the named node: {before:?} -> {after:?}"
    );

    let pods: BTreeSet<String> = fixture
        .pods(name)
        .await?
        .iter()
        .map(|p| p.name_any())
        .collect();
    ensure!(
        !processes_of(&pods).is_empty(),
        "no Ray process found for {pods:?}"
    );
    fixture
        .clusters()
        .delete(name, &DeleteParams::default())
        .await?;
    eventually(
        "the pods and every Ray process of the cluster to be gone",
        || async {
            let left = fixture.pods(name).await?;
            ensure!(left.is_empty(), "{} pods left", left.len());
            let running = processes_of(&pods);
            ensure!(running.is_empty(), "Ray processes left: {running:?}");
            Ok(())
        },
    )
    .await?;
    fixture.finish().await
}

fn worker_group(replicas: i64, workers_to_delete: &[&str]) -> Value {
    let mut group =
        cluster("x", replicas, json!([]), "Always")["spec"]["workerGroupSpecs"][0].clone();
    group["scaleStrategy"] = json!({"workersToDelete": workers_to_delete});
    group
}

/// A RayJob on a cluster of its own (one head, no workers) running `entrypoint`.
fn ray_job(name: &str, mode: &str, entrypoint: &str) -> anyhow::Result<RayJob> {
    let mut cluster_spec = cluster("x", 0, json!([]), "Always")["spec"].clone();
    cluster_spec["workerGroupSpecs"] = json!([]);
    let mut spec = json!({
        "submissionMode": mode,
        "entrypoint": entrypoint,
        "shutdownAfterJobFinishes": true,
        "rayClusterSpec": cluster_spec,
    });
    if mode == "K8sJobMode" {
        spec["submitterPodTemplate"] = json!({"spec": {"restartPolicy": "Never", "containers": [{
            "name": "ray-job-submitter",
            "image": "rayproject/ray:2.60.0",
            "resources": {"limits": {"cpu": "500m", "memory": "200M"}}
        }]}});
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": name},
        "spec": spec,
    }))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rayjobs_run_to_the_end_on_their_own_clusters() -> anyhow::Result<()> {
    let fixture = Fixture::with_real_ray("ray-jobs", OperatorOptions::default()).await?;
    let jobs: Api<RayJob> = Api::namespaced(fixture.client.clone(), &fixture.ns.name);
    let cases = [
        (
            "http",
            "HTTPMode",
            "python -c \"import ray; ray.init(); print('sum', sum(ray.get([ray.remote(lambda x: x * x).remote(i) for i in range(4)])))\"",
            "SUCCEEDED",
        ),
        (
            "k8s",
            "K8sJobMode",
            "python -c \"import ray; ray.init(); print(ray.cluster_resources())\"",
            "SUCCEEDED",
        ),
        (
            "failing",
            "HTTPMode",
            "python -c \"import sys; sys.exit('the entrypoint gives up')\"",
            "FAILED",
        ),
    ];
    let started = Instant::now();
    for (name, mode, entrypoint, _) in &cases {
        jobs.create(&PostParams::default(), &ray_job(name, mode, entrypoint)?)
            .await?;
    }
    for (name, _, _, expected) in &cases {
        let status = eventually(&format!("RayJob {name} to finish"), || async {
            let job = serde_json::to_value(jobs.get(name).await?)?;
            let status = job["status"].clone();
            let deployment = status["jobDeploymentStatus"].as_str().unwrap_or_default();
            ensure!(
                deployment == "Complete" || deployment == "Failed",
                "jobDeploymentStatus {deployment}, jobStatus {}, message {}",
                status["jobStatus"],
                status["message"]
            );
            Ok(status)
        })
        .await?;
        ensure!(
            status["jobStatus"] == *expected,
            "RayJob {name} ended {} ({}), expected {expected}",
            status["jobStatus"],
            status["message"]
        );
        if *expected == "FAILED" {
            let message = status["message"].as_str().unwrap_or_default();
            ensure!(
                message.contains("the entrypoint gives up") || message.contains("exit code 1"),
                "the failure message does not carry Ray's: {message}"
            );
        }
        println!(
            "RayJob {name}: {} after {:.1?}",
            status["jobStatus"],
            started.elapsed()
        );
    }
    // Their finalizer needs the operator: release them before it stops.
    for (name, ..) in &cases {
        jobs.delete(name, &DeleteParams::default()).await?;
    }
    eventually("the RayJobs to be released", || async {
        let left = jobs.list(&Default::default()).await?.items.len();
        ensure!(left == 0, "{left} RayJobs left");
        Ok(())
    })
    .await?;
    fixture.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_head_is_replaced_and_the_workers_rejoin() -> anyhow::Result<()> {
    let fixture = Fixture::with_real_ray("ray-head", OperatorOptions::default()).await?;
    let name = "phoenix";
    // Workers give up on a lost GCS after 10 s instead of Ray's 60, and are restarted by
    // their restart policy, as in a real cluster without GCS fault tolerance.
    let env = json!([{"name": "RAY_gcs_rpc_server_reconnect_timeout_s", "value": "10"}]);
    fixture.create(cluster(name, 1, env, "Never")).await?;
    fixture.wait_ready(name, 2).await?;
    nodes_match_pods(&fixture, name).await?;
    let heads = |pods: Vec<Pod>| -> Vec<String> {
        pods.iter()
            .filter(|pod| pod.labels().get("ray.io/node-type").map(String::as_str) == Some("head"))
            .map(|pod| pod.name_any())
            .collect()
    };
    let old_head = heads(fixture.pods(name).await?)
        .pop()
        .context("no head pod")?;
    let gcs = process_named(&old_head, "gcs_server").context("the head runs no gcs_server")?;
    let killed = Instant::now();
    kill_process(gcs)?;

    let new_head = eventually("a new head pod", || async {
        let now = heads(fixture.pods(name).await?);
        ensure!(
            now.len() == 1 && now[0] != old_head,
            "head pods are {now:?} (the killed one was {old_head})"
        );
        Ok(now[0].clone())
    })
    .await?;
    // KubeRay's events for it: the failed head deleted, a new one created.
    eventually("KubeRay's events for the replaced head", || async {
        let events = fixture.events(name).await?;
        let names = |reason: &str, pod: &str| {
            events.iter().any(|event| {
                event.reason.as_deref() == Some(reason)
                    && event.note.as_deref().is_some_and(|note| note.contains(pod))
            })
        };
        ensure!(
            names("DeletedHeadPod", &old_head) && names("CreatedHeadPod", &new_head),
            "no DeletedHeadPod event for {old_head} and CreatedHeadPod for {new_head}: {:?}",
            events
                .iter()
                .map(|event| (event.reason.clone(), event.note.clone()))
                .collect::<Vec<_>>()
        );
        Ok(())
    })
    .await?;
    fixture.wait_ready(name, 2).await?;
    let nodes = nodes_match_pods(&fixture, name).await?;
    ensure!(
        nodes.iter().any(|node| node.instance_id == new_head),
        "the new head {new_head} is not among {nodes:?}"
    );
    println!(
        "head {old_head} killed; {new_head} and the workers formed the cluster again {:.1?} later",
        killed.elapsed()
    );
    fixture.finish().await
}

fn kill_process(pid: u32) -> anyhow::Result<()> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)?;
    Ok(())
}
