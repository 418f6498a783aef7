//! RayService against real Ray Serve: the pod runner runs each RayCluster's head as real Ray
//! with Serve (tests/controlplane/pod-runner.md), the operator sends `serveConfigV2` to the
//! cluster's own dashboard, and the test sends HTTP requests as kube-proxy would: to the ready
//! pods the serve Service selects, re-read as they change.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use wasmray::controller::ControllerConfig;
use wasmray_crds::{RayCluster, RayService};
use wasmray_e2e::binary::http_get;
use wasmray_e2e::operator::{Fixture, OperatorOptions, condition, eventually, start_operator};

const NAME: &str = "serve";
const SERVE_PORT: u16 = 8000;
/// Where the pods find the applications' module (a ConfigMap volume).
const APPS_DIR: &str = "/opt/wasmray-e2e/serve-apps";

/// Two Serve applications. `fruit` answers with its `user_config` price and the pod that
/// serves it, so a test sees a config change and a cluster switch in the answers.
const APPS_PY: &str = r#"
import os
from ray import serve

@serve.deployment(ray_actor_options={"num_cpus": 0})
class Fruit:
    def __init__(self):
        self.price = 1

    def reconfigure(self, config):
        self.price = config.get("price", 1)

    async def __call__(self, request):
        return f"fruit price={self.price} pod={os.environ.get('RAY_CLOUD_INSTANCE_ID', '')}"

@serve.deployment(ray_actor_options={"num_cpus": 0})
class Math:
    async def __call__(self, request):
        return "math 42"

fruit = Fruit.bind()
math = Math.bind()
"#;

fn serve_config(price: u32) -> String {
    format!(
        "http_options:\n  host: 0.0.0.0\n  port: {SERVE_PORT}\napplications:\n\
         - name: fruit\n  import_path: wasmray_e2e_apps:fruit\n  route_prefix: /fruit\n  deployments:\n  - name: Fruit\n    user_config:\n      price: {price}\n\
         - name: math\n  import_path: wasmray_e2e_apps:math\n  route_prefix: /math\n"
    )
}

/// A head-only cluster (two clusters at once must fit the pod runner's memory budget); Serve's
/// replicas run on the head. `cpus` is the head's `num-cpus`: changing it is an upgrade.
fn rayservice(cpus: &str) -> Value {
    json!({
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": NAME},
        "spec": {
            "rayClusterDeletionDelaySeconds": 15,
            "serveConfigV2": serve_config(1),
            "rayClusterConfig": {
                "rayVersion": "2.60.0",
                "headGroupSpec": {
                    "rayStartParams": {"num-cpus": cpus},
                    "template": {"spec": {
                        "containers": [{
                            "name": "ray-head",
                            "image": "rayproject/ray:2.60.0",
                            "resources": {"limits": {"cpu": "1", "memory": "1G"}},
                            "env": [{"name": "PYTHONPATH", "value": APPS_DIR}],
                            "ports": [
                                {"containerPort": 6379, "name": "gcs-server"},
                                {"containerPort": 8265, "name": "dashboard"},
                                {"containerPort": 10001, "name": "client"},
                                {"containerPort": 8000, "name": "serve"}
                            ],
                            "volumeMounts": [{"name": "apps", "mountPath": APPS_DIR}]
                        }],
                        "volumes": [{"name": "apps", "configMap": {"name": "serve-apps"}}]
                    }}
                }
            }
        }
    })
}

/// The operator options every start of this test's operator uses (also after a restart).
fn options() -> OperatorOptions {
    OperatorOptions {
        configure: Some(Box::new(|config: &mut ControllerConfig| {
            config.ray_head_address = wasmray::ray::HeadAddress::PodIp;
            config.ray_timeout = Duration::from_secs(10);
        })),
        ..OperatorOptions::default()
    }
}

struct Serving {
    client: Client,
    namespace: String,
}

impl Serving {
    fn services(&self) -> Api<RayService> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn clusters(&self) -> Api<RayCluster> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn status(&self) -> anyhow::Result<Value> {
        let service = self.services().get(NAME).await?;
        Ok(serde_json::to_value(&service)?["status"].clone())
    }

    async fn cluster_names(&self) -> anyhow::Result<BTreeSet<String>> {
        Ok(self
            .clusters()
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|cluster| cluster.metadata.deletion_timestamp.is_none())
            .map(|cluster| cluster.name_any())
            .collect())
    }

    /// The ready addresses of the serve Service, as kube-proxy would route to them.
    async fn endpoints(&self) -> anyhow::Result<Vec<SocketAddr>> {
        endpoints_of(&self.client, &self.namespace).await
    }

    async fn patch_spec(&self, patch: Value) -> anyhow::Result<()> {
        self.services()
            .patch(
                NAME,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": patch})),
            )
            .await?;
        Ok(())
    }

    /// Waits until Ready, every application RUNNING on the active cluster, no pending one.
    async fn wait_serving(&self, what: &str) -> anyhow::Result<Value> {
        eventually(what, || async {
            let status = self.status().await?;
            ensure!(
                condition(&status, "Ready").map(|c| c["status"].clone()) == Some(json!("True")),
                "Ready is {:?}",
                condition(&status, "Ready")
            );
            let apps = &status["activeServiceStatus"]["applicationStatuses"];
            for app in ["fruit", "math"] {
                ensure!(
                    apps[app]["status"] == "RUNNING",
                    "application {app} is {}",
                    apps[app]
                );
            }
            ensure!(
                status["pendingServiceStatus"]["rayClusterName"].is_null(),
                "a pending cluster exists: {}",
                status["pendingServiceStatus"]
            );
            Ok(status)
        })
        .await
    }
}

/// The ready endpoints of the serve Service as the EndpointSlice controller would list them
/// (the test control plane runs none: EndpointSlice validation rejects loopback pod IPs):
/// the running, ready, not terminating pods its selector picks.
async fn endpoints_of(client: &Client, namespace: &str) -> anyhow::Result<Vec<SocketAddr>> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let Some(service) = services.get_opt(&format!("{NAME}-serve-svc")).await? else {
        return Ok(Vec::new());
    };
    let selector = service
        .spec
        .and_then(|spec| spec.selector)
        .unwrap_or_default()
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",");
    if selector.is_empty() {
        return Ok(Vec::new());
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut addresses = Vec::new();
    for pod in pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
    {
        if pod.metadata.deletion_timestamp.is_some() || !wasmray_e2e::pod_running_and_ready(&pod) {
            continue;
        }
        if let Some(ip) = pod.status.and_then(|status| status.pod_ip) {
            addresses.push(SocketAddr::new(ip.parse()?, SERVE_PORT));
        }
    }
    Ok(addresses)
}

/// One GET through the serve Service's endpoints.
async fn request(addresses: &[SocketAddr], index: u64, path: &str) -> anyhow::Result<String> {
    ensure!(
        !addresses.is_empty(),
        "the serve Service has no ready endpoint"
    );
    let address = addresses[usize::try_from(index).unwrap_or(0) % addresses.len()];
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), http_get(address, path))
        .await
        .context("no answer within 10 s")??;
    ensure!(status == 200, "{address}{path}: HTTP {status}: {body}");
    Ok(body)
}

/// A client that sends requests the whole time, re-reading the endpoints as kube-proxy
/// follows them, and counts the answers.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<Mutex<Vec<String>>>,
    pods: Arc<Mutex<BTreeSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(client: Client, namespace: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let pods = Arc::new(Mutex::new(BTreeSet::new()));
        let task = tokio::spawn({
            let (stop, sent, failed, pods) =
                (stop.clone(), sent.clone(), failed.clone(), pods.clone());
            async move {
                let mut addresses = Vec::new();
                let mut refreshed = Instant::now() - Duration::from_secs(1);
                while !stop.load(Ordering::Relaxed) {
                    if refreshed.elapsed() >= Duration::from_millis(200) {
                        // As kube-proxy: keep the last known endpoints if the API does not answer.
                        if let Ok(fresh) = endpoints_of(&client, &namespace).await {
                            addresses = fresh;
                        }
                        refreshed = Instant::now();
                    }
                    let index = sent.fetch_add(1, Ordering::Relaxed);
                    match request(&addresses, index, "/fruit").await {
                        Ok(body) => {
                            // The body may be chunked: the pod name is the word after "pod=".
                            if let Some(pod) = body
                                .split("pod=")
                                .nth(1)
                                .and_then(|rest| rest.split_whitespace().next())
                            {
                                pods.lock().await.insert(pod.to_owned());
                            }
                        }
                        Err(error) => failed
                            .lock()
                            .await
                            .push(format!("request {index}: {error:#}")),
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        Load {
            stop,
            sent,
            failed,
            pods,
            task,
        }
    }

    async fn finish(self) -> (u64, Vec<String>, BTreeSet<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let failed = self.failed.lock().await.clone();
        let pods = self.pods.lock().await.clone();
        (self.sent.load(Ordering::Relaxed), failed, pods)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rayservice_serves_and_upgrades_without_downtime_on_real_serve() -> anyhow::Result<()> {
    let mut fixture = Fixture::with_real_ray("rayservice", options()).await?;
    let serving = Serving {
        client: fixture.client.clone(),
        namespace: fixture.ns.name.clone(),
    };
    let configs: Api<ConfigMap> = Api::namespaced(fixture.client.clone(), &fixture.ns.name);
    configs
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "serve-apps"},
                "data": {"wasmray_e2e_apps.py": APPS_PY},
            }))?,
        )
        .await?;

    // Two applications reach RUNNING and answer through the serve Service's endpoints.
    let started = Instant::now();
    serving
        .services()
        .create(
            &PostParams::default(),
            &serde_json::from_value(rayservice("2"))?,
        )
        .await?;
    let status = serving
        .wait_serving("the RayService to serve both applications")
        .await?;
    let first = status["activeServiceStatus"]["rayClusterName"]
        .as_str()
        .context("no active cluster")?
        .to_owned();
    ensure!(status["numServeEndpoints"].as_i64() >= Some(1), "{status}");
    ensure!(status["serviceStatus"] == "Running", "{status}");
    let addresses = serving.endpoints().await?;
    let fruit = request(&addresses, 0, "/fruit").await?;
    ensure!(fruit.contains("fruit price=1"), "{fruit}");
    let math = request(&addresses, 0, "/math").await?;
    ensure!(math.contains("math 42"), "{math}");
    println!(
        "RayService Ready with 2 applications answering {:.1?} after create (cluster {first})",
        started.elapsed()
    );

    // A config-only change is applied in place: same cluster, new answers.
    serving
        .patch_spec(json!({"serveConfigV2": serve_config(2)}))
        .await?;
    eventually("the new user_config to be served", || async {
        let body = request(&serving.endpoints().await?, 0, "/fruit").await?;
        ensure!(body.contains("fruit price=2"), "{body}");
        Ok(())
    })
    .await?;
    ensure!(
        serving.cluster_names().await? == BTreeSet::from([first.clone()]),
        "a config change made a new cluster"
    );

    // A config Ray refuses (a replica count below 1): reported in status and events, the
    // active cluster keeps serving, no new cluster.
    let broken =
        serve_config(2).replace("    user_config:", "    num_replicas: -1\n    user_config:");
    serving.patch_spec(json!({"serveConfigV2": broken})).await?;
    let refused = eventually("Ray's refusal in status", || async {
        let status = serving.status().await?;
        let accepted = condition(&status, "ServeConfigAccepted")
            .cloned()
            .unwrap_or_default();
        ensure!(
            accepted["status"] == "False",
            "ServeConfigAccepted is {accepted}"
        );
        Ok(accepted["message"].as_str().unwrap_or_default().to_owned())
    })
    .await?;
    ensure!(refused.contains("num_replicas"), "{refused}");
    let body = request(&serving.endpoints().await?, 0, "/fruit").await?;
    ensure!(
        body.contains("fruit price=2"),
        "the active cluster stopped serving: {body}"
    );
    ensure!(serving.cluster_names().await? == BTreeSet::from([first.clone()]));
    serving
        .patch_spec(json!({"serveConfigV2": serve_config(2)}))
        .await?;

    // A cluster spec change upgrades with zero downtime while a client sends requests; the
    // operator is restarted in the middle of it.
    let load = Load::start(fixture.client.clone(), fixture.ns.name.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let upgrade_started = Instant::now();
    serving
        .patch_spec(
            json!({"rayClusterConfig": rayservice("3")["spec"]["rayClusterConfig"].clone()}),
        )
        .await?;
    let pending = eventually("a pending cluster", || async {
        let status = serving.status().await?;
        let pending = status["pendingServiceStatus"]["rayClusterName"]
            .as_str()
            .context("no pending cluster yet")?
            .to_owned();
        ensure!(
            serving.cluster_names().await?.contains(&pending),
            "{pending} not created yet"
        );
        Ok(pending)
    })
    .await?;
    let _ = fixture.operator.stop.send(true);
    eventually("the operator to stop", || async {
        ensure!(fixture.operator.task.is_finished(), "still running");
        Ok(())
    })
    .await?;
    fixture.operator = start_operator(&fixture.ns.name, options()).await?;
    let seen = Mutex::new(BTreeSet::new());
    eventually("the upgrade to finish", || async {
        seen.lock().await.extend(serving.cluster_names().await?);
        let status = serving.status().await?;
        ensure!(
            status["activeServiceStatus"]["rayClusterName"] == pending.as_str(),
            "active is {}",
            status["activeServiceStatus"]["rayClusterName"]
        );
        Ok(())
    })
    .await?;
    let switched = upgrade_started.elapsed();
    eventually("the old cluster to go after the deletion delay", || async {
        let names = serving.cluster_names().await?;
        ensure!(
            names == BTreeSet::from([pending.clone()]),
            "clusters: {names:?}"
        );
        Ok(())
    })
    .await?;
    let finished = upgrade_started.elapsed();
    let seen = seen.into_inner();
    ensure!(
        seen.iter().all(|name| *name == first || *name == pending),
        "a second pending cluster appeared after the restart: {seen:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (sent, failed, pods) = load.finish().await;
    println!(
        "upgrade {first} -> {pending}: traffic switched after {switched:.1?}, old cluster gone after {finished:.1?}; \
         {sent} requests, {} failed, answered by pods {pods:?}",
        failed.len()
    );
    ensure!(
        failed.is_empty(),
        "requests failed during the upgrade: {failed:?}"
    );
    ensure!(
        pods.iter().any(|pod| pod.starts_with(&first))
            && pods.iter().any(|pod| pod.starts_with(&pending)),
        "both clusters should have answered: {pods:?}"
    );
    serving
        .wait_serving("the upgraded RayService to serve")
        .await?;

    // Deleting the RayService deletes its cluster at once; its finalizer then lets it go.
    serving
        .services()
        .delete(NAME, &DeleteParams::default())
        .await?;
    eventually("the RayService and its cluster to go", || async {
        ensure!(
            serving.services().get_opt(NAME).await?.is_none(),
            "the RayService is still there"
        );
        let names = serving.cluster_names().await?;
        ensure!(names.is_empty(), "clusters left: {names:?}");
        Ok(())
    })
    .await?;
    fixture.finish().await
}
