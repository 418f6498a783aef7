//! The test control plane behaves like a real cluster where WasmRay depends on it: nodes,
//! scheduling (including GPU requests and taints), kwok-driven pod lifecycle, Jobs, garbage
//! collection, large CRDs via server-side apply, and ServiceAccount tokens; and with a pod
//! runner, its own node pool that takes the pods of opted-in namespaces only, untouched by kwok.

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::wait::{Condition, await_condition, conditions};
use kube::{Api, Resource as _, ResourceExt as _};
use serde_json::json;
use wasmray_e2e::{cluster, crds};

const WAIT: Duration = Duration::from_secs(60);

/// Waits until `cond` holds for the named object, failing the test after [`WAIT`].
async fn wait_for<K>(api: &Api<K>, name: &str, what: &str, cond: impl Condition<K>) -> Option<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    tokio::time::timeout(WAIT, await_condition(api.clone(), name, cond))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {name}: {what}"))
        .unwrap_or_else(|err| panic!("watching {name}: {err}"))
}

fn pod(name: &str, spec: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .unwrap()
}

fn container(resources: serde_json::Value) -> serde_json::Value {
    json!({ "name": "main", "image": "registry.invalid/ray:latest", "resources": resources })
}

fn pod_ready(pod: Option<&Pod>) -> bool {
    pod.is_some_and(wasmray_e2e::pod_running_and_ready)
}

fn unschedulable(pod: Option<&Pod>) -> bool {
    pod.and_then(|p| p.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })
}

fn gpus(node: &Node) -> i64 {
    node.status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .and_then(|a| a.get("nvidia.com/gpu"))
        .and_then(|q| q.0.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn nodes_are_ready_and_version_is_pinned() {
    let cluster = cluster().await.unwrap();
    let client = cluster.client().await.unwrap();

    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, "v1.36.3");
    assert_eq!(cluster.info().version, "v1.36.3");

    let nodes: Api<Node> = Api::all(client);
    let list = nodes
        .list(&ListParams::default().labels("type=kwok"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), cluster.info().nodes.len());
    assert!(
        list.items.len() >= 2,
        "expected CPU and GPU nodes, got {}",
        list.items.len()
    );
    for node in &list.items {
        let status = node.status.as_ref().unwrap();
        let ready = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True", "node {} not Ready", node.name_any());
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        assert!(
            taints
                .iter()
                .all(|t| !t.key.starts_with("node.kubernetes.io/")),
            "node {} still has lifecycle taints: {taints:?}",
            node.name_any()
        );
        let address = &status.addresses.as_ref().unwrap()[0].address;
        assert!(
            address.parse::<Ipv4Addr>().unwrap().is_loopback(),
            "node address {address}"
        );
    }
    assert!(list.items.iter().any(|n| gpus(n) > 0), "no GPU node");
    assert!(list.items.iter().any(|n| gpus(n) == 0), "no CPU-only node");
}

#[tokio::test]
async fn pod_is_scheduled_and_becomes_ready_with_loopback_ip() {
    let cluster = cluster().await.unwrap();
    let ns = cluster.namespace("pod-ready").await.unwrap();
    let client = cluster.client().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);

    let spec = json!({ "containers": [container(json!({ "requests": { "cpu": "1", "memory": "1Gi" } }))] });
    pods.create(&PostParams::default(), &pod("worker", spec))
        .await
        .unwrap();
    let pod = wait_for(&pods, "worker", "Running and Ready", pod_ready)
        .await
        .unwrap();

    let spec = pod.spec.unwrap();
    let status = pod.status.unwrap();
    let node = spec.node_name.expect("scheduled pod has a node");
    assert!(cluster.info().nodes.contains(&node));
    let ip: Ipv4Addr = status.pod_ip.unwrap().parse().unwrap();
    assert!(ip.is_loopback(), "pod IP {ip} outside 127.0.0.0/8");
    assert!(status.container_statuses.unwrap()[0].ready);

    ns.cleanup(&client).await.unwrap();
}

#[tokio::test]
async fn gpu_pods_land_only_on_gpu_nodes_and_wait_when_none_fits() {
    let cluster = cluster().await.unwrap();
    let ns = cluster.namespace("gpu").await.unwrap();
    let client = cluster.client().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let nodes: Api<Node> = Api::all(client.clone());
    let toleration =
        json!([{ "key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule" }]);
    let gpu_request = |n: u32| container(json!({ "limits": { "nvidia.com/gpu": n.to_string() } }));

    // Fits: one GPU, tolerating the GPU pool's taint.
    let spec = json!({ "containers": [gpu_request(1)], "tolerations": toleration });
    pods.create(&PostParams::default(), &pod("one-gpu", spec))
        .await
        .unwrap();
    let placed = wait_for(&pods, "one-gpu", "Running and Ready", pod_ready)
        .await
        .unwrap();
    let node = nodes
        .get(&placed.spec.unwrap().node_name.unwrap())
        .await
        .unwrap();
    assert!(
        gpus(&node) >= 1,
        "GPU pod placed on {} without GPUs",
        node.name_any()
    );

    // More GPUs than any node has: the scheduler reports it unschedulable, it stays Pending.
    let max = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(gpus)
        .max()
        .unwrap();
    let spec = json!({ "containers": [gpu_request(max as u32 + 1)], "tolerations": toleration });
    pods.create(&PostParams::default(), &pod("too-many-gpus", spec))
        .await
        .unwrap();
    let pending = wait_for(&pods, "too-many-gpus", "Unschedulable", unschedulable)
        .await
        .unwrap();
    assert_eq!(pending.status.unwrap().phase.as_deref(), Some("Pending"));
    assert!(pending.spec.unwrap().node_name.is_none());

    // A GPU request without the toleration fits no node either: GPU nodes are tainted.
    let spec = json!({ "containers": [gpu_request(1)] });
    pods.create(&PostParams::default(), &pod("untolerated", spec))
        .await
        .unwrap();
    wait_for(&pods, "untolerated", "Unschedulable", unschedulable).await;

    ns.cleanup(&client).await.unwrap();
}

#[tokio::test]
async fn batch_job_completes() {
    let cluster = cluster().await.unwrap();
    let ns = cluster.namespace("job").await.unwrap();
    let client = cluster.client().await.unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);

    let job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": "submitter" },
        "spec": {
            "completions": 2,
            "parallelism": 2,
            "backoffLimit": 0,
            "template": { "spec": {
                "restartPolicy": "Never",
                "containers": [container(json!({ "requests": { "cpu": "100m" } }))],
            }},
        },
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let done = wait_for(
        &jobs,
        "submitter",
        "Complete",
        conditions::is_job_completed(),
    )
    .await
    .unwrap();
    let status = done.status.unwrap();
    assert_eq!(status.succeeded, Some(2));
    assert!(
        status
            .conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True")
    );

    ns.cleanup(&client).await.unwrap();
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_its_dependents() {
    let cluster = cluster().await.unwrap();
    let ns = cluster.namespace("gc").await.unwrap();
    let client = cluster.client().await.unwrap();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);

    let mut owner = ConfigMap::default();
    owner.metadata.name = Some("owner".into());
    let owner = config_maps
        .create(&PostParams::default(), &owner)
        .await
        .unwrap();
    let owner_ref = OwnerReference {
        api_version: ConfigMap::api_version(&()).into(),
        kind: ConfigMap::kind(&()).into(),
        name: owner.name_any(),
        uid: owner.uid().unwrap(),
        ..Default::default()
    };

    let mut dependent_cm = ConfigMap::default();
    dependent_cm.metadata.name = Some("dependent".into());
    dependent_cm.metadata.owner_references = Some(vec![owner_ref.clone()]);
    let dependent_cm = config_maps
        .create(&PostParams::default(), &dependent_cm)
        .await
        .unwrap();
    let mut dependent_pod = pod("dependent", json!({ "containers": [container(json!({}))] }));
    dependent_pod.metadata.owner_references = Some(vec![owner_ref]);
    pods.create(&PostParams::default(), &dependent_pod)
        .await
        .unwrap();
    // Running first, so its removal also needs kwok to finish the graceful deletion.
    let dependent_pod = wait_for(&pods, "dependent", "Running and Ready", pod_ready)
        .await
        .unwrap();

    config_maps
        .delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    wait_for(
        &config_maps,
        "dependent",
        "garbage-collected",
        conditions::is_deleted(&dependent_cm.uid().unwrap()),
    )
    .await;
    wait_for(
        &pods,
        "dependent",
        "garbage-collected",
        conditions::is_deleted(&dependent_pod.uid().unwrap()),
    )
    .await;

    ns.cleanup(&client).await.unwrap();
}

/// A CRD whose manifest exceeds 1 MiB, like KubeRay's RayJob CRD: many documented fields.
fn large_crd(group: &str) -> serde_json::Value {
    let description =
        "Synthetic field padding the schema the way long generated API docs do. ".repeat(12);
    let properties: serde_json::Map<String, serde_json::Value> = (0..1400)
        .map(|i| {
            (
                format!("field{i:04}"),
                json!({ "type": "string", "description": description }),
            )
        })
        .collect();
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("bigs.{group}") },
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": { "plural": "bigs", "singular": "big", "kind": "Big", "listKind": "BigList" },
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": { "spec": { "type": "object", "properties": properties } },
                }},
            }],
        },
    })
}

#[tokio::test]
async fn crd_larger_than_one_mib_installs_with_server_side_apply() {
    let cluster = cluster().await.unwrap();
    let ns = cluster.namespace("crd").await.unwrap();
    let client = cluster.client().await.unwrap();

    let group = "big.e2e.wasmray.io";
    let crd = large_crd(group);
    let yaml = serde_yaml::to_string(&crd).unwrap();
    assert!(
        yaml.len() > 1024 * 1024,
        "test CRD is only {} bytes",
        yaml.len()
    );
    let path = cluster.run_dir().join(format!("{}.yaml", ns.name));
    std::fs::write(&path, &yaml).unwrap();

    crds::apply_crd_files(&client, &[&path]).await.unwrap();
    // Applying again is a no-op rather than a conflict (same field manager).
    crds::apply_crd_files(&client, &[&path]).await.unwrap();

    let stored = Api::<CustomResourceDefinition>::all(client.clone())
        .get(&format!("bigs.{group}"))
        .await
        .unwrap();
    let established = stored.status.unwrap().conditions.unwrap();
    assert!(
        established
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );
    assert!(
        stored.metadata.annotations.unwrap_or_default().is_empty(),
        "no last-applied annotation"
    );

    // The new API serves objects.
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", "Big"), "bigs");
    let bigs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, &resource);
    let mut obj = DynamicObject::new("example", &resource);
    obj.data = json!({ "spec": { "field0007": "value" } });
    bigs.create(&PostParams::default(), &obj).await.unwrap();
    let read = bigs.get("example").await.unwrap();
    assert_eq!(read.data["spec"]["field0007"], "value");

    ns.cleanup(&client).await.unwrap();
}

#[tokio::test]
async fn service_account_tokens_authenticate() {
    let cluster = cluster().await.unwrap();
    let ns = cluster.namespace("sa").await.unwrap();
    let client = cluster.client().await.unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);

    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = accounts
        .create_token_request("default", &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
        .unwrap();

    let as_sa = cluster.client_with_token(&token).await.unwrap();
    let review = Api::<SelfSubjectReview>::all(as_sa)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    let user = review.status.unwrap().user_info.unwrap();
    assert_eq!(
        user.username.unwrap(),
        format!("system:serviceaccount:{}:default", ns.name)
    );

    ns.cleanup(&client).await.unwrap();
}

/// testcp stops and starts its API server alone: same URL and kubeconfig, the objects kept
/// in etcd, a client of before works again. On a control plane of this test's own, since
/// the other tests of this process share theirs.
#[tokio::test]
async fn objects_survive_an_apiserver_restart() -> anyhow::Result<()> {
    let cluster = wasmray_e2e::private_cluster().await?;
    let result = restart_keeps_objects(&cluster).await;
    // Dropping waits for testcp to stop; not on the runtime's threads.
    tokio::task::spawn_blocking(move || drop(cluster)).await?;
    result
}

async fn restart_keeps_objects(cluster: &wasmray_e2e::TestCluster) -> anyhow::Result<()> {
    use anyhow::{Context as _, ensure};

    let ns = cluster.namespace("restart").await?;
    let client = cluster.client().await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let mut before = ConfigMap::default();
    before.metadata.name = Some("before".into());
    before.data = Some([("key".to_owned(), "value".to_owned())].into());
    let before = config_maps.create(&PostParams::default(), &before).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    pods.create(
        &PostParams::default(),
        &pod("runs", json!({ "containers": [container(json!({}))] })),
    )
    .await?;
    let running = wait_for(&pods, "runs", "Running and Ready", pod_ready)
        .await
        .context("pod vanished")?;
    let kubeconfig = std::fs::read(cluster.kubeconfig_path())?;
    let ready_json = cluster.run_dir().join("ready.json");
    let pid_of_apiserver = || -> anyhow::Result<u64> {
        let ready: serde_json::Value = serde_json::from_slice(&std::fs::read(&ready_json)?)?;
        ready["pids"]["kube-apiserver"]
            .as_u64()
            .context("ready.json without the API server's pid")
    };
    let first_pid = pid_of_apiserver()?;

    cluster.stop_apiserver().await?;
    ensure!(
        client.apiserver_version().await.is_err(),
        "the API server still answers after the stop"
    );
    ensure!(
        cluster.stop_apiserver().await.is_err(),
        "a second stop of a stopped API server was accepted"
    );
    cluster.start_apiserver().await?;
    let second_pid = pid_of_apiserver()?;
    ensure!(
        second_pid != first_pid,
        "ready.json still names the old API server ({first_pid})"
    );
    ensure!(
        std::fs::read(cluster.kubeconfig_path())? == kubeconfig,
        "the kubeconfig changed"
    );

    // The client of before the restart (same URL, same CA) works again at once: start
    // returns only once /readyz answers.
    let after = config_maps.get("before").await?;
    ensure!(
        after.metadata.uid == before.metadata.uid && after.data == before.data,
        "the ConfigMap changed: {after:?}"
    );
    let pod_after = pods.get("runs").await?;
    ensure!(
        pod_after.metadata.uid == running.metadata.uid && pod_ready(Some(&pod_after)),
        "the pod changed: {:?}",
        pod_after.status
    );

    // A crash (SIGKILL) keeps what was written just before it, too.
    let mut last = ConfigMap::default();
    last.metadata.name = Some("last".into());
    config_maps.create(&PostParams::default(), &last).await?;
    cluster.kill_apiserver().await?;
    cluster.start_apiserver().await?;
    let fresh: Api<ConfigMap> = Api::namespaced(cluster.client().await?, &ns.name);
    ensure!(
        fresh.get_opt("last").await?.is_some(),
        "a write acknowledged before the crash is gone"
    );
    // No waiting for the namespace to go: the whole control plane goes next.
    drop(ns);
    Ok(())
}

/// Without a pod runner `ray_namespace` refuses clearly; with one, the namespace carries the
/// annotations ready.json names.
#[tokio::test]
async fn ray_namespace_follows_the_control_plane() {
    let cluster = cluster().await.unwrap();
    match &cluster.info().pod_runner {
        None => {
            let err = cluster.ray_namespace("no-runner").await.err().unwrap();
            assert!(
                format!("{err:#}").contains("runs no pod runner"),
                "unclear error: {err:#}"
            );
        }
        Some(runner) => {
            let ns = cluster.ray_namespace("runner").await.unwrap();
            let client = cluster.client().await.unwrap();
            let stored = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
                .get(&ns.name)
                .await
                .unwrap();
            let annotations = stored.metadata.annotations.unwrap_or_default();
            for (key, value) in &runner.namespace_annotations {
                assert_eq!(annotations.get(key), Some(value), "annotation {key}");
            }
            ns.cleanup(&client).await.unwrap();
        }
    }
}

/// `testcp up` refuses pod runner options that would break the pool or the network rule,
/// before it starts anything.
#[tokio::test]
async fn testcp_refuses_bad_pod_runner_options() {
    let cluster = cluster().await.unwrap();
    let testcp = cluster.info().bin_dir.join("testcp");
    let scratch = cluster.run_dir().join("refused-runner-options");
    std::fs::create_dir_all(&scratch).unwrap();
    let nodes = scratch.join("nodes.yaml");
    std::fs::write(
        &nodes,
        "pools:\n- name: ray\n  count: 1\n  capacity: {cpu: \"1\", pods: \"10\"}\n",
    )
    .unwrap();
    let nodes = nodes.to_str().unwrap();
    let dir = scratch.join("never-started");
    let dir = dir.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &["--pod-runner", "/bin/true", "--nodes", nodes],
            "has a pool named \"ray\"",
        ),
        (
            &[
                "--pod-runner",
                "/bin/true",
                "--runner-pod-cidr",
                "127.128.5.0/24",
            ],
            "overlaps --pod-cidr",
        ),
        (
            &[
                "--pod-runner",
                "/bin/true",
                "--runner-pod-cidr",
                "10.1.0.0/16",
            ],
            "must lie inside 127.0.0.0/8",
        ),
        (
            &["--runner-nodes", "2"],
            "--runner-nodes needs --pod-runner",
        ),
        (&["--pod-runner", "/nonexistent/pod-runner"], "--pod-runner"),
    ];
    for (args, message) in cases {
        let output = std::process::Command::new(&testcp)
            .args(["up", "--dir", dir])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(
            stderr.contains(message),
            "{args:?}: expected {message:?} in: {stderr}"
        );
    }
    assert!(
        !scratch.join("never-started").exists(),
        "a refused start touched its run dir"
    );
}

/// A stand-in pod runner: records its arguments in its state dir, says it is ready and runs
/// nothing, so the pods it would own show what kwok leaves alone.
const STAND_IN_RUNNER: &str = r#"#!/bin/sh
prev=
for arg in "$@"; do
  if [ "$prev" = --state-dir ]; then state=$arg; fi
  prev=$arg
done
printf '%s\n' "$@" > "$state/args"
touch "$state/ready"
exec sleep 3600
"#;

/// `testcp up --pod-runner`: the runner's nodes are Ready and tainted, a pod of an opted-in
/// namespace lands there and kwok leaves it to the runner (no status, no deletion), a pod of
/// any other namespace never lands there and kwok runs it as before. On a control plane of
/// this test's own, since the shared one may run a real runner (or none).
#[tokio::test]
async fn pod_runner_pool_takes_only_opted_in_namespaces() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;

    let scratch = std::env::temp_dir()
        .join("wasmray-e2e")
        .join(format!("stand-in-runner-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let runner = scratch.join("pod-runner.sh");
    std::fs::write(&runner, STAND_IN_RUNNER)?;
    std::fs::set_permissions(&runner, std::fs::Permissions::from_mode(0o755))?;
    let runner = runner.to_str().expect("temp dir path is UTF-8");
    let cluster = wasmray_e2e::private_cluster_with(&[
        "--pod-runner",
        runner,
        "--runner-nodes",
        "2",
        "--pod-runner-arg=--ray-venv=/nonexistent/venv",
    ])
    .await?;
    let result = runner_pool_checks(&cluster).await;
    // Dropping waits for testcp to stop; not on the runtime's threads.
    tokio::task::spawn_blocking(move || drop(cluster)).await?;
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

async fn runner_pool_checks(cluster: &wasmray_e2e::TestCluster) -> anyhow::Result<()> {
    use anyhow::{Context as _, ensure};

    let info = cluster.info();
    let runner = info
        .pod_runner
        .as_ref()
        .context("ready.json has no podRunner")?;
    let runner_nodes = vec!["ray-0".to_owned(), "ray-1".to_owned()];
    ensure!(
        runner.nodes == runner_nodes,
        "runner nodes {:?}",
        runner.nodes
    );
    ensure!(
        runner_nodes.iter().all(|n| info.nodes.contains(n)),
        "ready.json's nodes {:?} lack the runner's",
        info.nodes
    );
    ensure!(runner.state_dir == cluster.run_dir().join("pod-runner"));
    ensure!(runner.pod_cidr == "127.129.0.0/16");
    ensure!(info.pids.contains_key("pod-runner"), "pids {:?}", info.pids);
    ensure!(
        runner
            .namespace_annotations
            .get("scheduler.alpha.kubernetes.io/node-selector")
            .map(String::as_str)
            == Some("testcp.wasmray.io/pool=ray"),
        "annotations {:?}",
        runner.namespace_annotations
    );
    let tolerations: serde_json::Value = serde_json::from_str(
        runner
            .namespace_annotations
            .get("scheduler.alpha.kubernetes.io/defaultTolerations")
            .context("no defaultTolerations annotation")?,
    )?;
    ensure!(
        tolerations
            == json!([{ "key": "testcp.wasmray.io/pod-runner", "operator": "Exists", "effect": "NoSchedule" }]),
        "tolerations {tolerations}"
    );
    let args = std::fs::read_to_string(runner.state_dir.join("args"))?;
    let expected = [
        "--kubeconfig".to_owned(),
        cluster.kubeconfig_path().display().to_string(),
        "--nodes".to_owned(),
        "ray-0,ray-1".to_owned(),
        "--state-dir".to_owned(),
        runner.state_dir.display().to_string(),
        "--pod-cidr".to_owned(),
        "127.129.0.0/16".to_owned(),
        "--ray-venv=/nonexistent/venv".to_owned(),
    ];
    ensure!(
        args.lines().eq(expected.iter().map(String::as_str)),
        "runner arguments:\n{args}"
    );

    let client = cluster.client().await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let pool = nodes
        .list(&ListParams::default().labels("testcp.wasmray.io/pool=ray"))
        .await?;
    let mut names: Vec<String> = pool.items.iter().map(|n| n.name_any()).collect();
    names.sort();
    ensure!(names == runner_nodes, "ray pool nodes {names:?}");
    for node in &pool.items {
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ensure!(ready, "node {} not Ready", node.name_any());
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        ensure!(
            taints
                .iter()
                .any(|t| t.key == "testcp.wasmray.io/pod-runner"
                    && t.value.as_deref() == Some("true")
                    && t.effect == "NoSchedule"),
            "node {} taints {taints:?}",
            node.name_any()
        );
        let cpu = node
            .status
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("cpu"))
            .map(|q| q.0.clone());
        ensure!(
            cpu.as_deref() == Some("64"),
            "node {} cpu {cpu:?}",
            node.name_any()
        );
    }

    // Opted in: bound to a runner node, then left alone by kwok (no runner runs it here).
    let ray_ns = cluster.ray_namespace("runner-pods").await?;
    let ray_pods: Api<Pod> = Api::namespaced(client.clone(), &ray_ns.name);
    ray_pods
        .create(
            &PostParams::default(),
            &pod("head", json!({ "containers": [container(json!({}))] })),
        )
        .await?;
    let bound = |p: Option<&Pod>| {
        p.and_then(|p| p.spec.as_ref())
            .and_then(|s| s.node_name.as_ref())
            .is_some()
    };
    let head = wait_for(&ray_pods, "head", "bound to a node", bound)
        .await
        .context("pod vanished")?;
    let node = head
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    ensure!(
        runner_nodes.contains(&node),
        "opted-in pod placed on {node}"
    );
    for _ in 0..10 {
        let now = ray_pods.get("head").await?;
        let status = now.status.unwrap_or_default();
        ensure!(
            status.phase.as_deref() == Some("Pending") && status.pod_ip.is_none(),
            "kwok acted on a pod of the runner's node {node}: phase {:?}, pod IP {:?}",
            status.phase,
            status.pod_ip
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Not opted in: never on a runner node, Running and Ready through kwok as before.
    let plain_ns = cluster.namespace("plain-pods").await?;
    let plain_pods: Api<Pod> = Api::namespaced(client.clone(), &plain_ns.name);
    for i in 0..3 {
        plain_pods
            .create(
                &PostParams::default(),
                &pod(
                    &format!("worker-{i}"),
                    json!({ "containers": [container(json!({}))] }),
                ),
            )
            .await?;
    }
    for i in 0..3 {
        let name = format!("worker-{i}");
        let running = wait_for(&plain_pods, &name, "Running and Ready", pod_ready)
            .await
            .context("pod vanished")?;
        let node = running.spec.and_then(|s| s.node_name).unwrap_or_default();
        ensure!(
            !runner_nodes.contains(&node),
            "{name} placed on runner node {node}"
        );
    }

    // Deleting the runner's pod is the runner's to finish too: kwok does not remove it.
    ray_pods.delete("head", &DeleteParams::default()).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let terminating = ray_pods
        .get_opt("head")
        .await?
        .context("kwok removed a pod of the runner's node")?;
    ensure!(terminating.metadata.deletion_timestamp.is_some());
    // No waiting for the namespaces to go: the whole control plane goes next.
    drop((ray_ns, plain_ns));
    Ok(())
}
