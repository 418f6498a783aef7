//! RayCluster end to end on the real control plane (kwok nodes): the host controller runs
//! in-process ([`wasmray_e2e::operator`]), one per test, scoped to the test's namespace and
//! with its own user agent, so the apiserver's audit log tells its requests apart from the
//! test's and other tests'.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use wasmray_crds::samples::{invalid_cases, load_sample, samples_dir};
use wasmray_e2e::operator::{
    Fixture, OperatorOptions, TIMEOUT, audited_writes, condition, condition_status, eventually,
};

fn gpu_node_selector() -> Value {
    // The sample selects GKE's accelerator label; the test control plane's GPU nodes carry
    // NVIDIA's product label instead (same A100 meaning).
    json!({"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"})
}

fn container_env(pod: &Pod, container: usize) -> BTreeMap<String, Option<String>> {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.containers.get(container))
        .and_then(|c| c.env.as_ref())
        .into_iter()
        .flatten()
        .map(|var| (var.name.clone(), var.value.clone()))
        .collect()
}

fn gpu_sample() -> anyhow::Result<Value> {
    let mut sample = load_sample(&samples_dir().join("ray-cluster.gpu-heterogeneous.yaml"))?;
    let groups = sample["spec"]["workerGroupSpecs"]
        .as_array_mut()
        .context("sample has worker groups")?;
    for group in groups {
        if group["groupName"] == "gpu-group" {
            group["template"]["spec"]["nodeSelector"] = gpu_node_selector();
        }
    }
    Ok(sample)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_examples_reach_ready_with_kuberay_pods() -> anyhow::Result<()> {
    let fx = Fixture::new("rc-seed", OperatorOptions::default()).await?;
    fx.create(gpu_sample()?).await?;
    fx.create_sample("ray-cluster.helm-default.yaml").await?;
    // GPU sample: head + 2 cpu-group + 1 gpu-group (+ 0 custom-resource-group).
    fx.wait_ready("raycluster-gpu", 4).await?;
    fx.wait_ready("raycluster-kuberay", 2).await?;

    // The head is found by KubeRay's label, as users do.
    let output = wasmray_e2e::cluster()
        .await?
        .kubectl()
        .args([
            "get",
            "pods",
            "-n",
            &fx.ns.name,
            "-l",
            "ray.io/node-type=head",
            "-o",
            "name",
        ])
        .output()?;
    ensure!(output.status.success(), "kubectl failed: {:?}", output);
    let heads = String::from_utf8(output.stdout)?;
    ensure!(heads.lines().count() == 2, "kubectl found heads: {heads:?}");
    ensure!(heads.contains("pod/raycluster-gpu-head-"), "{heads}");

    let pods = fx.pods("raycluster-gpu").await?;
    let head = pods
        .iter()
        .find(|p| p.labels().get("ray.io/node-type").map(String::as_str) == Some("head"))
        .context("head pod")?;
    let labels = head.labels();
    for (key, value) in [
        ("ray.io/cluster", "raycluster-gpu"),
        ("ray.io/group", "headgroup"),
        ("ray.io/identifier", "raycluster-gpu-head"),
        ("ray.io/is-ray-node", "yes"),
        ("app.kubernetes.io/created-by", "kuberay-operator"),
        ("app.kubernetes.io/name", "kuberay"),
    ] {
        ensure!(
            labels.get(key).map(String::as_str) == Some(value),
            "head label {key}: {labels:?}"
        );
    }
    ensure!(
        head.annotations()
            .get("ray.io/ft-enabled")
            .map(String::as_str)
            == Some("false")
    );
    let owner = &head.owner_references()[0];
    // As KubeRay's controller references: controller and blockOwnerDeletion.
    ensure!(
        owner.kind == "RayCluster"
            && owner.controller == Some(true)
            && owner.block_owner_deletion == Some(true),
        "{owner:?}"
    );
    let spec = head.spec.as_ref().context("head spec")?;
    let ray = &spec.containers[0];
    ensure!(
        ray.command.as_deref()
            == Some(&["/bin/bash".to_owned(), "-c".to_owned(), "--".to_owned()][..]),
        "command {:?}",
        ray.command
    );
    let args = ray.args.clone().unwrap_or_default().join(" ");
    ensure!(
        args.starts_with("ulimit -n 65536; ray start --head "),
        "{args}"
    );
    for flag in [
        "--block",
        "--dashboard-host=0.0.0.0",
        "--metrics-export-port=8080",
        "--num-gpus=0",
        "--num-cpus=2",
        "--memory=8589934592",
        "--dashboard-agent-listen-port=52365",
    ] {
        ensure!(args.contains(flag), "head args lack {flag}: {args}");
    }
    let env = container_env(head, 0);
    for name in [
        "RAY_CLUSTER_NAME",
        "RAY_CLOUD_INSTANCE_ID",
        "RAY_NODE_TYPE_NAME",
        "KUBERAY_GEN_RAY_START_CMD",
        "RAY_PORT",
        "RAY_ADDRESS",
        "RAY_USAGE_STATS_KUBERAY_IN_USE",
        "RAY_USAGE_STATS_EXTRA_TAGS",
        "RAY_DASHBOARD_ENABLE_K8S_DISK_USAGE",
    ] {
        ensure!(env.contains_key(name), "head env lacks {name}: {env:?}");
    }
    ensure!(env["RAY_ADDRESS"].as_deref() == Some("127.0.0.1:6379"));
    let readiness = ray
        .readiness_probe
        .as_ref()
        .context("head readiness probe")?;
    let probe = readiness
        .exec
        .as_ref()
        .and_then(|e| e.command.clone())
        .unwrap_or_default()
        .join(" ");
    ensure!(
        probe.contains("52365/api/local_raylet_healthz") && probe.contains("8265/api/gcs_healthz"),
        "{probe}"
    );
    ensure!(
        ray.liveness_probe
            .as_ref()
            .and_then(|p| p.failure_threshold)
            == Some(120)
    );
    ensure!(readiness.failure_threshold == Some(10) && readiness.timeout_seconds == Some(5));
    let shm = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "shared-mem")
        .context("shared-mem volume")?;
    let empty_dir = shm
        .empty_dir
        .as_ref()
        .context("shared-mem is an emptyDir")?;
    ensure!(empty_dir.medium.as_deref() == Some("Memory"));
    ensure!(
        ray.volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == "/dev/shm" && m.name == "shared-mem")
    );
    ensure!(
        ray.ports
            .iter()
            .flatten()
            .any(|p| p.name.as_deref() == Some("metrics") && p.container_port == 8080)
    );

    let gpu_workers = fx.workers("raycluster-gpu", "gpu-group").await?;
    let worker = gpu_workers.first().context("a gpu worker")?;
    ensure!(
        worker
            .name_any()
            .starts_with("raycluster-gpu-gpu-group-worker-"),
        "{}",
        worker.name_any()
    );
    let spec = worker.spec.as_ref().context("worker spec")?;
    let args = spec.containers[0]
        .args
        .clone()
        .unwrap_or_default()
        .join(" ");
    ensure!(
        args.contains("ray start ") && args.contains("--address=raycluster-gpu-head-svc."),
        "{args}"
    );
    ensure!(
        args.contains("--num-gpus=1") && args.contains("--labels=ray.io/accelerator-type=A100"),
        "{args}"
    );
    let init = spec
        .init_containers
        .as_ref()
        .and_then(|c| c.first())
        .context("wait-gcs-ready")?;
    ensure!(init.name == "wait-gcs-ready");
    let env = container_env(worker, 0);
    ensure!(
        env.get("FQ_RAY_IP")
            .cloned()
            .flatten()
            .is_some_and(|ip| ip.starts_with("raycluster-gpu-head-svc.")),
        "{env:?}"
    );
    let probe = spec.containers[0]
        .readiness_probe
        .as_ref()
        .and_then(|p| p.exec.as_ref())
        .and_then(|e| e.command.clone())
        .unwrap_or_default()
        .join(" ");
    ensure!(
        probe.contains("local_raylet_healthz") && !probe.contains("gcs_healthz"),
        "{probe}"
    );

    // The head Service, headless as KubeRay makes it by default.
    let service = fx.services_api().get("raycluster-gpu-head-svc").await?;
    let service_spec = service.spec.as_ref().context("service spec")?;
    ensure!(service_spec.cluster_ip.as_deref() == Some("None"));
    let status = fx.status("raycluster-gpu").await?;
    ensure!(
        status["desiredWorkerReplicas"] == 3 && status["readyWorkerReplicas"] == 3,
        "{status}"
    );
    ensure!(status["endpoints"]["dashboard"] == "8265", "{status}");
    ensure!(
        status["head"]["serviceName"] == "raycluster-gpu-head-svc",
        "{status}"
    );
    ensure!(status["desiredGPU"] == "1", "{status}");
    ensure!(
        condition_status(&status, "RayClusterProvisioned").as_deref() == Some("True"),
        "{status}"
    );
    ensure!(
        condition_status(&status, "HeadPodReady").as_deref() == Some("True"),
        "{status}"
    );
    // KubeRay states both suspend conditions, False, on every cluster.
    for type_ in ["RayClusterSuspended", "RayClusterSuspending"] {
        ensure!(
            condition_status(&status, type_).as_deref() == Some("False"),
            "{type_}: {status}"
        );
    }
    let reasons: Vec<String> = fx
        .events("raycluster-gpu")
        .await?
        .iter()
        .filter_map(|e| e.reason.clone())
        .collect();
    for reason in ["CreatedService", "CreatedHeadPod", "CreatedWorkerPod"] {
        ensure!(
            reasons.iter().any(|r| r == reason),
            "events {reasons:?} lack {reason}"
        );
    }
    // One CreatedWorkerPod event per worker, naming it, as client-go's recorder makes them
    // (events with another message are not counted on the first one).
    let workers: Vec<String> = fx
        .pods("raycluster-gpu")
        .await?
        .iter()
        .filter(|pod| pod.labels().get("ray.io/node-type").map(String::as_str) == Some("worker"))
        .map(|pod| pod.name_any())
        .collect();
    ensure!(workers.len() == 3, "workers {workers:?}");
    eventually("a CreatedWorkerPod event naming each worker", || async {
        let notes: Vec<String> = fx
            .events("raycluster-gpu")
            .await?
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("CreatedWorkerPod"))
            .filter_map(|e| e.note)
            .collect();
        for worker in &workers {
            let named = notes
                .iter()
                .filter(|note| note.ends_with(&format!("/{worker}")))
                .count();
            ensure!(named == 1, "{named} events name {worker}: {notes:?}");
        }
        Ok(())
    })
    .await?;
    fx.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_up_down_workers_to_delete_and_clamping() -> anyhow::Result<()> {
    let fx = Fixture::new("rc-scale", OperatorOptions::default()).await?;
    let cluster = "raycluster-kuberay";
    fx.create_sample("ray-cluster.helm-default.yaml").await?;
    fx.wait_ready(cluster, 2).await?;

    // Up (max 3).
    fx.patch_spec(
        cluster,
        json!({"workerGroupSpecs": [group_patch(json!({"replicas": 3}))]}),
    )
    .await?;
    fx.wait_group(cluster, "workergroup", 3).await?;
    // Down without workersToDelete.
    fx.patch_spec(
        cluster,
        json!({"workerGroupSpecs": [group_patch(json!({"replicas": 2}))]}),
    )
    .await?;
    let workers = fx.wait_group(cluster, "workergroup", 2).await?;
    // Down naming the pod to delete.
    let victim = workers[1].name_any();
    let keeper = workers[0].name_any();
    fx.patch_spec(
        cluster,
        json!({"workerGroupSpecs": [group_patch(json!({"replicas": 1, "scaleStrategy": {"workersToDelete": [victim]}}))]}),
    )
    .await?;
    let workers = fx.wait_group(cluster, "workergroup", 1).await?;
    ensure!(
        workers[0].name_any() == keeper,
        "kept {} instead of {keeper}",
        workers[0].name_any()
    );
    // Clamping: above max -> max; below min -> min.
    fx.patch_spec(cluster, json!({"workerGroupSpecs": [group_patch(json!({"replicas": 7, "scaleStrategy": {"workersToDelete": []}}))]})).await?;
    fx.wait_group(cluster, "workergroup", 3).await?;
    let status = fx.status(cluster).await?;
    ensure!(
        status["desiredWorkerReplicas"] == 3 && status["maxWorkerReplicas"] == 3,
        "{status}"
    );
    fx.patch_spec(
        cluster,
        json!({"workerGroupSpecs": [group_patch(json!({"replicas": 0, "minReplicas": 2}))]}),
    )
    .await?;
    fx.wait_group(cluster, "workergroup", 2).await?;
    eventually("desired replicas 2", || async {
        let status = fx.status(cluster).await?;
        ensure!(
            status["desiredWorkerReplicas"] == 2 && status["minWorkerReplicas"] == 2,
            "{status}"
        );
        Ok(())
    })
    .await?;
    fx.finish().await
}

/// A merge patch of the Helm sample's only worker group (lists are replaced whole, so
/// the group is restated).
fn group_patch(changes: Value) -> Value {
    let sample =
        load_sample(&samples_dir().join("ray-cluster.helm-default.yaml")).unwrap_or(Value::Null);
    let mut group = sample["spec"]["workerGroupSpecs"][0].clone();
    if let (Some(group), Some(changes)) = (group.as_object_mut(), changes.as_object()) {
        for (key, value) in changes {
            group.insert(key.clone(), value.clone());
        }
    }
    group
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_worker_and_head_are_recreated() -> anyhow::Result<()> {
    let fx = Fixture::new("rc-recreate", OperatorOptions::default()).await?;
    let cluster = "raycluster-kuberay";
    fx.create_sample("ray-cluster.helm-default.yaml").await?;
    fx.wait_ready(cluster, 2).await?;
    for node_type in ["worker", "head"] {
        let old = fx
            .pods(cluster)
            .await?
            .into_iter()
            .find(|p| p.labels().get("ray.io/node-type").map(String::as_str) == Some(node_type))
            .context("pod to delete")?;
        fx.pods_api()
            .delete(&old.name_any(), &DeleteParams::default())
            .await?;
        eventually(&format!("a new {node_type} pod"), || async {
            let pods = fx.pods(cluster).await?;
            let fresh: Vec<_> = pods
                .iter()
                .filter(|p| {
                    p.labels().get("ray.io/node-type").map(String::as_str) == Some(node_type)
                })
                .collect();
            ensure!(fresh.len() == 1, "{} {node_type} pods", fresh.len());
            ensure!(fresh[0].uid() != old.uid(), "still the old pod");
            ensure!(
                wasmray_e2e::pod_running_and_ready(fresh[0]),
                "not ready yet"
            );
            Ok(())
        })
        .await?;
    }
    fx.wait_ready(cluster, 2).await?;
    fx.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_and_resume_cluster_and_group() -> anyhow::Result<()> {
    let options = OperatorOptions {
        // KubeRay allows suspending one worker group only with this gate.
        feature_gates: BTreeMap::from([("RayJobDeletionPolicy".to_owned(), true)]),
        ..OperatorOptions::default()
    };
    let fx = Fixture::new("rc-suspend", options).await?;
    let cluster = "raycluster-kuberay";
    fx.create_sample("ray-cluster.helm-default.yaml").await?;
    fx.wait_ready(cluster, 2).await?;

    // Watch the conditions as they change (every update, not samples), to check their
    // order.
    let clusters = fx.clusters();
    let observer = tokio::spawn(async move {
        use futures::{StreamExt as _, TryStreamExt as _};
        let mut updates =
            kube::runtime::watcher::watch_object(clusters, "raycluster-kuberay").boxed();
        let mut seen: Vec<(String, String)> = Vec::new();
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while let Ok(Ok(Some(Some(cluster)))) =
            tokio::time::timeout_at(deadline, updates.try_next()).await
        {
            let status = serde_json::to_value(&cluster)
                .map(|v| v["status"].clone())
                .unwrap_or_default();
            let state = (
                condition_status(&status, "RayClusterSuspending").unwrap_or_default(),
                condition_status(&status, "RayClusterSuspended").unwrap_or_default(),
            );
            if seen.last() != Some(&state) {
                seen.push(state.clone());
            }
            if state.1 == "True" {
                break;
            }
        }
        seen
    });
    fx.patch_spec(cluster, json!({"suspend": true})).await?;
    eventually("suspended with no pods", || async {
        let status = fx.status(cluster).await?;
        ensure!(status["state"] == "suspended", "state {}", status["state"]);
        ensure!(fx.pods(cluster).await?.is_empty(), "pods remain");
        ensure!(condition_status(&status, "RayClusterSuspended").as_deref() == Some("True"));
        ensure!(condition_status(&status, "RayClusterSuspending").as_deref() == Some("False"));
        ensure!(condition_status(&status, "RayClusterProvisioned").as_deref() == Some("False"));
        Ok(())
    })
    .await?;
    let seen = observer.await?;
    let suspending_at = seen.iter().position(|(ing, _)| ing == "True");
    let suspended_at = seen.iter().position(|(_, ed)| ed == "True");
    ensure!(
        matches!((suspending_at, suspended_at), (Some(a), Some(b)) if a < b),
        "Suspending must be True before Suspended: {seen:?}"
    );
    ensure!(
        !seen.iter().any(|(ing, ed)| ing == "True" && ed == "True"),
        "{seen:?}"
    );
    // Services stay while suspended.
    fx.services_api().get("raycluster-kuberay-head-svc").await?;

    fx.patch_spec(cluster, json!({"suspend": false})).await?;
    eventually("resumed", || async {
        let status = fx.status(cluster).await?;
        ensure!(
            condition_status(&status, "RayClusterSuspended").as_deref() == Some("False"),
            "{status}"
        );
        ensure!(fx.pods(cluster).await?.len() == 2);
        Ok(())
    })
    .await?;
    fx.wait_group(cluster, "workergroup", 1).await?;

    // One group.
    fx.patch_spec(
        cluster,
        json!({"workerGroupSpecs": [group_patch(json!({"suspend": true}))]}),
    )
    .await?;
    fx.wait_group(cluster, "workergroup", 0).await?;
    ensure!(fx.pods(cluster).await?.len() == 1, "the head must stay");
    fx.patch_spec(
        cluster,
        json!({"workerGroupSpecs": [group_patch(json!({"suspend": false}))]}),
    )
    .await?;
    fx.wait_group(cluster, "workergroup", 1).await?;
    fx.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_cluster_removes_what_it_owns() -> anyhow::Result<()> {
    let fx = Fixture::new("rc-delete", OperatorOptions::default()).await?;
    let cluster = "raycluster-kuberay";
    fx.create_sample("ray-cluster.helm-default.yaml").await?;
    fx.wait_ready(cluster, 2).await?;
    fx.clusters()
        .delete(cluster, &DeleteParams::foreground())
        .await?;
    eventually("children garbage-collected", || async {
        let pods = fx
            .pods_api()
            .list(&ListParams::default().labels(&format!("ray.io/cluster={cluster}")))
            .await?;
        ensure!(pods.items.is_empty(), "{} pods left", pods.items.len());
        let services = fx
            .services_api()
            .list(&ListParams::default().labels(&format!("ray.io/cluster={cluster}")))
            .await?;
        ensure!(
            services.items.is_empty(),
            "{} services left",
            services.items.len()
        );
        ensure!(
            fx.clusters().get_opt(cluster).await?.is_none(),
            "cluster still there"
        );
        Ok(())
    })
    .await?;
    fx.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_get_a_message_and_nothing_is_created() -> anyhow::Result<()> {
    let fx = Fixture::new("rc-invalid", OperatorOptions::default()).await?;
    // The cases the API server accepts (no CEL rule, no gate): only the controller can
    // refuse them.
    let cases: Vec<_> = invalid_cases()?
        .into_iter()
        .filter(|case| !case.cel && case.server_message.is_none() && case.gates.is_empty())
        .filter(|case| case.sample.starts_with("ray-cluster."))
        .collect();
    ensure!(
        cases.len() >= 3,
        "expected several RayCluster cases, found {}",
        cases.len()
    );
    let mut created = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        let mut object = case.object()?;
        // Unique names, unless the case is about the name.
        if case.field != "metadata.name" {
            object["metadata"]["name"] = json!(format!("invalid-{index}"));
        }
        match fx.create(object).await {
            Ok(cluster) => created.push((cluster.name_any(), case)),
            // The API server's own format checks may refuse a bad name first.
            Err(error) => ensure!(case.field == "metadata.name", "{}: {error:#}", case.name),
        }
    }
    ensure!(!created.is_empty());
    for (name, case) in &created {
        eventually(
            &format!("case {}: invalid condition", case.name),
            || async {
                let status = fx.status(name).await?;
                let invalid = condition(&status, "RayClusterInvalid")
                    .context("no RayClusterInvalid condition")?;
                ensure!(invalid["status"] == "True");
                let message = invalid["message"].as_str().unwrap_or_default();
                ensure!(
                    message.contains(&case.message),
                    "message {message:?} lacks {:?}",
                    case.message
                );
                let events = fx.events(name).await?;
                ensure!(
                    events.iter().any(|e| e.type_.as_deref() == Some("Warning")
                        && e.reason
                            .as_deref()
                            .is_some_and(|r| r.starts_with("InvalidRayCluster"))
                        && e.note.as_deref().is_some_and(|n| n.contains(&case.message))),
                    "no Warning event with the message"
                );
                Ok(())
            },
        )
        .await?;
    }
    // Nothing was created for any of them: no pods, no services in the namespace.
    ensure!(
        fx.pods_api()
            .list(&ListParams::default())
            .await?
            .items
            .is_empty(),
        "pods created"
    );
    ensure!(
        fx.services_api()
            .list(&ListParams::default())
            .await?
            .items
            .is_empty(),
        "services created"
    );
    fx.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_op_reconcile_writes_nothing() -> anyhow::Result<()> {
    let fx = Fixture::new("rc-noop", OperatorOptions::default()).await?;
    let cluster = "raycluster-kuberay";
    fx.create_sample("ray-cluster.helm-default.yaml").await?;
    fx.wait_ready(cluster, 2).await?;
    let audit_log = wasmray_e2e::cluster().await?.info().audit_log.clone();
    // Settle: until the operator's writes stop growing for a while.
    let mut before = audited_writes(&audit_log, &fx.operator.agent)?.len();
    let mut stable_since = Instant::now();
    eventually("the operator's writes settle", || {
        let now = audited_writes(&audit_log, &fx.operator.agent).map(|w| w.len());
        let result = match now {
            Ok(count) if count != before => {
                before = count;
                stable_since = Instant::now();
                Err(anyhow::anyhow!("still writing"))
            }
            Ok(_) if stable_since.elapsed() < Duration::from_secs(5) => {
                Err(anyhow::anyhow!("not settled yet"))
            }
            Ok(_) => Ok(()),
            Err(error) => Err(error),
        };
        async move { result }
    })
    .await?;
    ensure!(
        before > 0,
        "the operator's writes are not in the audit log under {:?}",
        fx.operator.agent
    );

    // Trigger reconciles that must change nothing: touch a label the plugin ignores.
    let calls_before = fx.operator.stats.plugin_calls();
    for round in 0..3 {
        fx.clusters()
            .patch(
                cluster,
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": {"labels": {"e2e-touch": round.to_string()}}})),
            )
            .await?;
        let wanted = calls_before + round + 1;
        eventually("a reconcile of the touched cluster", || async {
            let calls = fx.operator.stats.plugin_calls();
            ensure!(calls >= wanted, "{calls} plugin calls");
            Ok(())
        })
        .await?;
    }
    // Give any write the reconciles might have made time to reach the audit log.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = audited_writes(&audit_log, &fx.operator.agent)?;
    ensure!(
        after.len() == before,
        "no-op reconciles wrote: {:#?}",
        &after[before.min(after.len())..]
    );
    fx.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_plugin_sets_condition_and_event_and_others_still_reconcile() -> anyhow::Result<()>
{
    let hostile = wasmray::builtin::test_plugins::HOSTILE;
    let options = OperatorOptions {
        extra_plugins: vec![(
            "hostile".to_owned(),
            PathBuf::from(hostile),
            "panic deliberate failure for the e2e test".to_owned(),
        )],
        ..OperatorOptions::default()
    };
    let fx = Fixture::new("rc-failing", options).await?;
    let mut bad = load_sample(&samples_dir().join("ray-cluster.helm-default.yaml"))?;
    bad["metadata"]["name"] = json!("bad");
    bad["metadata"]["annotations"] = json!({"wasmray.io/plugin": "hostile"});
    fx.create(bad).await?;
    fx.create_sample("ray-cluster.helm-default.yaml").await?;

    eventually("the PluginFailure condition and event", || async {
        let status = fx.status("bad").await?;
        let failure = condition(&status, "PluginFailure").context("no PluginFailure condition")?;
        ensure!(
            failure["status"] == "True" && failure["reason"] == "PluginTrapped",
            "{failure}"
        );
        let message = failure["message"].as_str().unwrap_or_default();
        ensure!(
            message.contains("\"hostile\"") && message.contains("sha256:"),
            "{message}"
        );
        ensure!(message.contains("deliberate failure"), "{message}");
        let events = fx.events("bad").await?;
        ensure!(
            events.iter().any(|e| e.type_.as_deref() == Some("Warning")
                && e.reason.as_deref() == Some("PluginFailure")
                && e.note.as_deref().is_some_and(|n| n.contains("hostile"))),
            "no PluginFailure event"
        );
        Ok(())
    })
    .await?;
    fx.wait_ready("raycluster-kuberay", 2).await?;
    ensure!(
        fx.pods("bad").await?.is_empty(),
        "the failing plugin's cluster got pods"
    );

    // Back to the built-in plugin: the cluster comes up and the condition goes.
    fx.clusters()
        .patch(
            "bad",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {"wasmray.io/plugin": null}}})),
        )
        .await?;
    fx.wait_ready("bad", 2).await?;
    eventually("PluginFailure withdrawn", || async {
        let status = fx.status("bad").await?;
        ensure!(condition(&status, "PluginFailure").is_none(), "{status}");
        Ok(())
    })
    .await?;
    fx.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_clusters_get_a_random_token_secret_once() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    let fx = Fixture::new("rc-token", OperatorOptions::default()).await?;
    let cluster = "raycluster-kuberay";
    let mut object = load_sample(&samples_dir().join("ray-cluster.helm-default.yaml"))?;
    object["spec"]["rayVersion"] = json!("2.52.0");
    object["spec"]["authOptions"] = json!({"mode": "token"});
    let created = fx.create(object).await?;
    fx.wait_ready(cluster, 2).await?;

    let secrets: Api<Secret> = Api::namespaced(fx.client.clone(), &fx.ns.name);
    let secret = secrets.get(cluster).await?;
    let owner = secret
        .owner_references()
        .first()
        .context("the Secret has no owner")?;
    ensure!(owner.kind == "RayCluster" && Some(&owner.uid) == created.metadata.uid.as_ref());
    ensure!(secret.labels().get("ray.io/cluster").map(String::as_str) == Some(cluster));
    let token = secret
        .data
        .as_ref()
        .and_then(|data| data.get("auth_token"))
        .context("no auth_token")?;
    let raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &token.0)?;
    ensure!(raw.len() == 32, "token is base64 of {} bytes", raw.len());

    // The pods read the token from that Secret.
    let head = fx
        .pods(cluster)
        .await?
        .into_iter()
        .find(|pod| pod.labels().get("ray.io/node-type").map(String::as_str) == Some("head"))
        .context("no head pod")?;
    let token_ref = head
        .spec
        .as_ref()
        .and_then(|spec| spec.containers.first())
        .and_then(|container| container.env.as_ref())
        .and_then(|env| env.iter().find(|var| var.name == "RAY_AUTH_TOKEN"))
        .and_then(|var| var.value_from.as_ref())
        .and_then(|from| from.secret_key_ref.as_ref())
        .context("no RAY_AUTH_TOKEN from a Secret")?;
    ensure!(token_ref.name == cluster && token_ref.key == "auth_token");

    // Later reconciles keep the token.
    fx.patch_spec(
        cluster,
        json!({"workerGroupSpecs": [group_patch(json!({"replicas": 2}))]}),
    )
    .await?;
    fx.wait_ready(cluster, 3).await?;
    let again = secrets.get(cluster).await?;
    ensure!(again.resource_version() == secret.resource_version());
    fx.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_gcs_ft_cluster_runs_the_redis_cleanup_first() -> anyhow::Result<()> {
    use k8s_openapi::api::batch::v1::Job;
    let fx = Fixture::new("rc-gcs-ft", OperatorOptions::default()).await?;
    let cluster = "raycluster-external-redis";
    fx.create_sample("ray-cluster.external-redis.yaml").await?;
    fx.wait_ready(cluster, 2).await?;
    let finalizer = "ray.io/gcs-ft-redis-cleanup-finalizer";
    let held = fx.clusters().get(cluster).await?;
    ensure!(
        held.finalizers().iter().any(|f| f == finalizer),
        "finalizers: {:?}",
        held.finalizers()
    );

    fx.clusters()
        .delete(cluster, &DeleteParams::background())
        .await?;
    let jobs: Api<Job> = Api::namespaced(fx.client.clone(), &fx.ns.name);
    let cleanup = eventually("the Redis cleanup Job", || async {
        let list = jobs
            .list(&ListParams::default().labels("ray.io/node-type=redis-cleanup"))
            .await?;
        list.items.into_iter().next().context("no cleanup Job yet")
    })
    .await?;
    ensure!(
        cleanup
            .owner_references()
            .iter()
            .any(|owner| owner.kind == "RayCluster" && owner.name == cluster),
        "the cleanup Job is not owned by the cluster"
    );
    // kwok completes Job pods; the host then releases the finalizer.
    eventually("the cluster gone after the cleanup", || async {
        ensure!(
            fx.clusters().get_opt(cluster).await?.is_none(),
            "cluster still there"
        );
        Ok(())
    })
    .await?;
    fx.finish().await
}

/// Contract 0.3: a plugin owns its parent's finalizer. One that never releases it holds the
/// deletion, and the parent says which plugin holds it; nothing else is waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_never_releases_its_finalizer_holds_the_deletion_visibly()
-> anyhow::Result<()> {
    const HELD: &str = "example.com/never-released";
    let options = OperatorOptions {
        extra_plugins: vec![(
            "holder".to_owned(),
            PathBuf::from(wasmray::builtin::test_plugins::HOSTILE),
            format!("hold-finalizer {HELD}"),
        )],
        ..OperatorOptions::default()
    };
    let fx = Fixture::new("rc-finalizer", options).await?;
    let mut held = load_sample(&samples_dir().join("ray-cluster.helm-default.yaml"))?;
    held["metadata"]["name"] = json!("held");
    held["metadata"]["annotations"] = json!({"wasmray.io/plugin": "holder"});
    fx.create(held).await?;
    eventually("the plugin's finalizer on the cluster", || async {
        let cluster = fx.clusters().get("held").await?;
        ensure!(
            cluster.finalizers().iter().any(|name| name == HELD),
            "{:?}",
            cluster.finalizers()
        );
        Ok(())
    })
    .await?;

    fx.clusters()
        .delete("held", &DeleteParams::default())
        .await?;
    eventually("the DeletionBlocked condition", || async {
        let status = fx.status("held").await?;
        let blocked = condition(&status, "DeletionBlocked").context("no DeletionBlocked")?;
        let message = blocked["message"].as_str().unwrap_or_default();
        ensure!(blocked["status"] == "True", "{blocked}");
        ensure!(
            message.contains(HELD) && message.contains("\"holder\"") && message.contains("sha256:"),
            "{message}"
        );
        Ok(())
    })
    .await?;
    // Still there after more reconciles: the host never drops a plugin's finalizer itself.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = fx.clusters().get("held").await?;
    ensure!(still.metadata.deletion_timestamp.is_some());
    ensure!(still.finalizers().iter().any(|name| name == HELD));

    // An administrator's way out, as for any stuck finalizer.
    fx.clusters()
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
        )
        .await?;
    eventually("the cluster gone", || async {
        ensure!(
            fx.clusters().get_opt("held").await?.is_none(),
            "still there"
        );
        Ok(())
    })
    .await?;
    fx.finish().await
}

/// Contract 0.3: a plugin asks for a Secret with random content; the host creates it once,
/// owned by the parent, with the size asked for, and never rewrites it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_gets_the_generated_secret_it_asks_for_once() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    let options = OperatorOptions {
        extra_plugins: vec![(
            "secretive".to_owned(),
            PathBuf::from(wasmray::builtin::test_plugins::HOSTILE),
            "generate-secret s3cret-of-secretive key 48".to_owned(),
        )],
        ..OperatorOptions::default()
    };
    let fx = Fixture::new("rc-secret", options).await?;
    let mut object = load_sample(&samples_dir().join("ray-cluster.helm-default.yaml"))?;
    object["metadata"]["name"] = json!("secretive");
    object["metadata"]["annotations"] = json!({"wasmray.io/plugin": "secretive"});
    let created = fx.create(object).await?;
    let secrets: Api<Secret> = Api::namespaced(fx.client.clone(), &fx.ns.name);
    let secret = eventually("the generated Secret", || async {
        secrets
            .get_opt("s3cret-of-secretive")
            .await?
            .context("no Secret")
    })
    .await?;
    let owner = secret.owner_references().first().context("no owner")?;
    ensure!(
        owner.kind == "RayCluster"
            && Some(&owner.uid) == created.metadata.uid.as_ref()
            && owner.block_owner_deletion == Some(true),
        "{owner:?}"
    );
    let value = secret
        .data
        .as_ref()
        .and_then(|data| data.get("key"))
        .context("no key")?;
    let raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &value.0)?;
    ensure!(raw.len() == 48, "base64 of {} bytes", raw.len());
    // More calls ask again; the Secret is left as it is.
    let calls = fx.operator.stats.plugin_calls();
    fx.clusters()
        .patch(
            "secretive",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"touch": "1"}}})),
        )
        .await?;
    eventually("another call", || async {
        ensure!(fx.operator.stats.plugin_calls() > calls, "no call yet");
        Ok(())
    })
    .await?;
    let again = secrets.get("s3cret-of-secretive").await?;
    ensure!(again.resource_version() == secret.resource_version());
    fx.finish().await
}

/// A reconciler built against contract 0.2.0 still serves a cluster on a 0.3.0 host, and
/// `spec.managedBy` naming another controller is the host's gate: no call, no write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_0_2_plugin_still_serves_and_managed_by_others_is_left_alone()
-> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let options = OperatorOptions {
        extra_plugins: vec![(
            "contract-0-2".to_owned(),
            PathBuf::from(wasmray::builtin::test_plugins::CONTRACT_0_2),
            "from e2e".to_owned(),
        )],
        // It echoes into a ConfigMap, which a RayCluster plugin may write only when the
        // platform team allows it in the plugin's binding.
        configure: Some(Box::new(|config| {
            config.allowances.insert(
                "contract-0-2".to_owned(),
                wasmray::controller::write_policy::PluginAllowance {
                    extra_kinds: vec![wasmray::controller::write_policy::KindRef::new(
                        "v1",
                        "ConfigMap",
                    )],
                    ..Default::default()
                },
            );
        })),
        ..OperatorOptions::default()
    };
    let fx = Fixture::new("rc-contract", options).await?;
    let mut old = load_sample(&samples_dir().join("ray-cluster.helm-default.yaml"))?;
    old["metadata"]["name"] = json!("old");
    old["metadata"]["annotations"] = json!({"wasmray.io/plugin": "contract-0-2"});
    let created = fx.create(old).await?;
    let mut elsewhere = load_sample(&samples_dir().join("ray-cluster.helm-default.yaml"))?;
    elsewhere["metadata"]["name"] = json!("elsewhere");
    elsewhere["spec"]["managedBy"] = json!("kueue.x-k8s.io/multikueue");
    fx.create(elsewhere).await?;

    eventually("the 0.2.0 plugin's ConfigMap", || async {
        let maps: Api<ConfigMap> = Api::namespaced(fx.client.clone(), &fx.ns.name);
        let map = maps.get("old-contract-0-2").await?;
        ensure!(
            map.owner_references().first().map(|owner| &owner.uid) == created.metadata.uid.as_ref()
        );
        let data = map.data.unwrap_or_default();
        ensure!(
            data.get("contract").map(String::as_str) == Some("0.2.0")
                && data.get("config").map(String::as_str) == Some("from e2e"),
            "{data:?}"
        );
        Ok(())
    })
    .await?;
    // A built-in cluster beside them comes up, so the controller did run for `elsewhere`.
    fx.create_sample("ray-cluster.helm-default.yaml").await?;
    fx.wait_ready("raycluster-kuberay", 2).await?;
    ensure!(fx.pods("elsewhere").await?.is_empty(), "pods for elsewhere");
    ensure!(
        fx.status("elsewhere").await?.is_null(),
        "status written for elsewhere"
    );
    fx.finish().await
}
