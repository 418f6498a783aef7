//! Autoscaling end to end, on real Ray: the pod runner runs each cluster's pods as Ray
//! processes, the operator's host autoscaler reads each head's GCS and the autoscaler
//! plugin decides. Demand comes from Ray jobs submitted to the head's dashboard: tasks, a
//! STRICT_SPREAD placement group, `request_resources`. The head has no CPU, so every task
//! needs a worker.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use kube::ResourceExt as _;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use wasmray::ray::{DashboardAddress, DashboardClient, JobSubmission};
use wasmray_crds::RayCluster;
use wasmray_e2e::operator::{Fixture, OperatorOptions, eventually};

const GROUP: &str = "small";
/// Short, so scale-down is seen within the test.
const IDLE_TIMEOUT_SECONDS: u64 = 8;

/// A cluster with autoscaling on: a head without CPUs and one group of 1-CPU workers.
fn cluster(name: &str, token_auth: bool) -> Value {
    let mut cluster = json!({
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": name},
        "spec": {
            "rayVersion": "2.60.0",
            "enableInTreeAutoscaling": true,
            "autoscalerOptions": {"idleTimeoutSeconds": IDLE_TIMEOUT_SECONDS},
            "headGroupSpec": {
                "rayStartParams": {"num-cpus": "0"},
                "template": {"spec": {"containers": [{
                    "name": "ray-head",
                    "image": "rayproject/ray:2.60.0",
                    "resources": {"limits": {"cpu": "1", "memory": "1G"}},
                    "ports": [
                        {"containerPort": 6379, "name": "gcs-server"},
                        {"containerPort": 8265, "name": "dashboard"}
                    ]
                }]}}
            },
            "workerGroupSpecs": [{
                "groupName": GROUP,
                "replicas": 0,
                "minReplicas": 0,
                "maxReplicas": 3,
                "rayStartParams": {},
                "template": {"spec": {"containers": [{
                    "name": "ray-worker",
                    "image": "rayproject/ray:2.60.0",
                    "resources": {"limits": {"cpu": "1", "memory": "500M"}}
                }]}}
            }]
        }
    });
    if token_auth {
        cluster["spec"]["authOptions"] = json!({"mode": "token"});
    }
    cluster
}

struct Head {
    dashboard: DashboardClient,
    address: DashboardAddress,
}

impl Head {
    async fn of(fixture: &Fixture, cluster: &str, token: Option<String>) -> anyhow::Result<Head> {
        let status = fixture.status(cluster).await?;
        let ip = status["head"]["podIP"]
            .as_str()
            .context("no head pod IP yet")?
            .to_owned();
        Ok(Head {
            dashboard: DashboardClient::new(Duration::from_secs(10)),
            address: DashboardAddress::new(format!("http://{ip}:8265")).with_token(token),
        })
    }

    /// Submits `code` as a Python driver; returns its submission id.
    async fn submit(&self, id: &str, code: &str) -> anyhow::Result<String> {
        ensure!(
            !code.contains('\''),
            "driver code must not contain single quotes"
        );
        let job = JobSubmission {
            entrypoint: format!("python -c '{code}'"),
            submission_id: id.to_owned(),
            ..JobSubmission::default()
        };
        eventually(&format!("the dashboard to take job {id}"), || async {
            self.dashboard.submit_job(&self.address, &job).await?;
            Ok(())
        })
        .await?;
        Ok(id.to_owned())
    }

    async fn wait_succeeded(&self, id: &str) -> anyhow::Result<()> {
        let details = eventually(&format!("job {id} to end"), || async {
            let details = self.dashboard.job(&self.address, id).await?;
            ensure!(details.is_terminal(), "job {id} is {}", details.status);
            Ok(details)
        })
        .await?;
        if details.status != "SUCCEEDED" {
            let logs = self
                .dashboard
                .job_logs(&self.address, id)
                .await
                .unwrap_or_default();
            bail!(
                "job {id} ended {}: {:?}\n{logs}",
                details.status,
                details.message
            );
        }
        Ok(())
    }
}

async fn replicas(fixture: &Fixture, cluster: &str) -> anyhow::Result<i64> {
    let object = serde_json::to_value(fixture.clusters().get(cluster).await?)?;
    Ok(object["spec"]["workerGroupSpecs"][0]["replicas"]
        .as_i64()
        .unwrap_or(0))
}

async fn wait_workers(fixture: &Fixture, cluster: &str, count: usize) -> anyhow::Result<()> {
    eventually(
        &format!("{cluster} to run {count} worker pod(s)"),
        || async {
            let workers = fixture.workers(cluster, GROUP).await?;
            let live = workers
                .iter()
                .filter(|pod| pod.metadata.deletion_timestamp.is_none())
                .count();
            ensure!(live == count, "{live} worker pods");
            Ok(())
        },
    )
    .await
}

async fn event_reasons(fixture: &Fixture, cluster: &str) -> anyhow::Result<Vec<String>> {
    Ok(fixture
        .events(cluster)
        .await?
        .into_iter()
        .filter_map(|event| event.reason)
        .collect())
}

/// Picks the cluster's autoscaler plugin (none: the operator's default).
async fn pick_autoscaler(
    fixture: &Fixture,
    cluster: &str,
    plugin: Option<&str>,
) -> anyhow::Result<()> {
    let clusters: Api<RayCluster> = fixture.clusters();
    clusters
        .patch(
            cluster,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"wasmray.io/autoscaler": plugin}}})),
        )
        .await?;
    Ok(())
}

const TASKS: &str = r#"import ray, time
ray.init()
@ray.remote(num_cpus=1)
def work(i):
    time.sleep(4)
    return i
print("sum", sum(ray.get([work.remote(i) for i in range(2)])))"#;

const STRICT_SPREAD: &str = r#"import ray
from ray.util.placement_group import placement_group, remove_placement_group
ray.init()
pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
ray.get(pg.ready(), timeout=300)
print("placement group ready")
remove_placement_group(pg)"#;

const REQUEST_TWO: &str = r#"import ray
from ray.autoscaler.sdk import request_resources
ray.init()
request_resources(bundles=[{"CPU": 1}, {"CPU": 1}])
print("requested")"#;

const REQUEST_NONE: &str = r#"import ray
from ray.autoscaler.sdk import request_resources
ray.init()
request_resources(bundles=[])
print("cleared")"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_follow_rays_demand_and_the_policy_can_be_swapped() -> anyhow::Result<()> {
    let options = OperatorOptions {
        configure: Some(Box::new(|config| {
            config.plugin_config.insert(
                "warm-pool".to_owned(),
                r#"{"warmWorkers": {"small": 1}, "scaleToZeroAfterSeconds": 3600}"#.to_owned(),
            );
        })),
        ..OperatorOptions::default()
    };
    let fixture = Fixture::with_real_ray("autoscale", options).await?;
    let name = "auto";
    fixture.create(cluster(name, false)).await?;
    fixture.wait_ready(name, 1).await?;
    let head = Head::of(&fixture, name, None).await?;

    // Tasks that only a worker can run: two workers come, run them and go when idle.
    let started = Instant::now();
    let job = head.submit("tasks", TASKS).await?;
    wait_workers(&fixture, name, 2).await?;
    println!(
        "2 workers for 2 pending tasks after {:.1?}",
        started.elapsed()
    );
    head.wait_succeeded(&job).await?;
    println!("the tasks finished after {:.1?}", started.elapsed());
    let workers: Vec<String> = fixture
        .workers(name, GROUP)
        .await?
        .iter()
        .map(|pod| pod.name_any())
        .collect();

    // Swapped to warm-pool while idle: it keeps the most recently used worker warm.
    pick_autoscaler(&fixture, name, Some("warm-pool")).await?;
    wait_workers(&fixture, name, 1).await?;
    let kept = fixture.workers(name, GROUP).await?;
    ensure!(
        kept.len() == 1 && workers.contains(&kept[0].name_any()),
        "warm-pool kept {:?} of {workers:?}",
        kept.iter().map(|pod| pod.name_any()).collect::<Vec<_>>()
    );
    tokio::time::sleep(Duration::from_secs(IDLE_TIMEOUT_SECONDS * 2)).await;
    ensure!(
        replicas(&fixture, name).await? == 1,
        "warm-pool let its warm worker go within twice the idle timeout"
    );
    // Back to ray-default: the next decision removes the idle worker.
    pick_autoscaler(&fixture, name, None).await?;
    wait_workers(&fixture, name, 0).await?;
    ensure!(
        replicas(&fixture, name).await? == 0,
        "replicas not back to 0"
    );
    println!("scaled back to 0 after {:.1?}", started.elapsed());

    // A placement group of two STRICT_SPREAD bundles needs two workers.
    let job = head.submit("spread", STRICT_SPREAD).await?;
    head.wait_succeeded(&job).await?;
    ensure!(
        replicas(&fixture, name).await? >= 2,
        "the placement group was placed with fewer than 2 workers"
    );
    wait_workers(&fixture, name, 0).await?;

    // request_resources keeps two workers up, idle or not, until it is cleared.
    let job = head.submit("request", REQUEST_TWO).await?;
    head.wait_succeeded(&job).await?;
    wait_workers(&fixture, name, 2).await?;
    tokio::time::sleep(Duration::from_secs(IDLE_TIMEOUT_SECONDS * 2)).await;
    ensure!(
        replicas(&fixture, name).await? == 2,
        "request_resources did not keep the workers"
    );
    let job = head.submit("release", REQUEST_NONE).await?;
    head.wait_succeeded(&job).await?;
    wait_workers(&fixture, name, 0).await?;

    let reasons = event_reasons(&fixture, name).await?;
    for expected in ["ScaledUpWorkerGroup", "ScaledDownWorkerGroup"] {
        ensure!(
            reasons.iter().any(|reason| reason == expected),
            "no {expected} event among {reasons:?}"
        );
    }
    ensure!(
        !reasons
            .iter()
            .any(|reason| reason.starts_with("Autoscaler")),
        "the autoscaler reported a failure: {reasons:?}"
    );
    fixture.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_auth_cluster_autoscales() -> anyhow::Result<()> {
    let fixture = Fixture::with_real_ray("autoscale-token", OperatorOptions::default()).await?;
    let name = "auto-token";
    fixture.create(cluster(name, true)).await?;
    fixture.wait_ready(name, 1).await?;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(fixture.client.clone(), &fixture.ns.name);
    let secret = secrets
        .get(&wasmray_crds::names::auth_secret_name(name))
        .await?;
    let token = secret
        .data
        .as_ref()
        .and_then(|data| data.get("auth_token"))
        .map(|bytes| String::from_utf8_lossy(&bytes.0).trim().to_owned())
        .context("the token Secret has no auth_token")?;
    let head = Head::of(&fixture, name, Some(token)).await?;
    let job = head.submit("tasks", TASKS).await?;
    wait_workers(&fixture, name, 2).await?;
    head.wait_succeeded(&job).await?;
    wait_workers(&fixture, name, 0).await?;
    fixture.finish().await
}

/// The benchmark's stand-in GCS (`wasmray_e2e::gcs`) must answer as a real head does for
/// the same demand, in everything the host reads: so its figures are about real replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stand_in_gcs_answers_as_ray_does() -> anyhow::Result<()> {
    let fixture = Fixture::with_real_ray("autoscale-standin", OperatorOptions::default()).await?;
    let name = "standin";
    // Autoscaling off: the demand stays pending for the comparison.
    let mut object = cluster(name, false);
    object["spec"]["enableInTreeAutoscaling"] = json!(false);
    fixture.create(object).await?;
    fixture.wait_ready(name, 1).await?;
    let head = Head::of(&fixture, name, None).await?;
    head.submit("pending", TASKS).await?;
    let status = fixture.status(name).await?;
    let ip = status["head"]["podIP"]
        .as_str()
        .context("head IP")?
        .to_owned();
    let pod = fixture
        .pods(name)
        .await?
        .into_iter()
        .map(|pod| pod.name_any())
        .find(|pod| pod.contains("head"))
        .context("no head pod")?;
    let gcs = wasmray::ray::gcs::GcsClient::new(Duration::from_secs(5));
    let real = eventually("the two tasks to be pending in the GCS", || async {
        let state = gcs.cluster_state(&format!("{ip}:6379"), None).await?;
        let pending: i64 = state
            .pending_resource_requests
            .iter()
            .map(|r| r.count)
            .sum();
        ensure!(pending == 2, "{pending} pending");
        Ok(state)
    })
    .await?;
    let script = wasmray_e2e::gcs::Script {
        head: (pod.clone(), ip.clone()),
        pending_tasks: vec![(vec![("CPU".to_owned(), 1.0)], 2)],
    };
    let stand_in = wasmray_e2e::gcs::cluster_state(&script, 1);
    // What the host reads: pending requests as they are, and the head's identity, status
    // and resource names.
    ensure!(
        real.pending_resource_requests == stand_in.pending_resource_requests,
        "pending requests: Ray {:?}, stand-in {:?}",
        real.pending_resource_requests,
        stand_in.pending_resource_requests
    );
    let view = |state: &wasmray_ray_proto::autoscaler::ClusterResourceState| {
        state
            .node_states
            .iter()
            .map(|node| {
                let mut names: Vec<String> = node.total_resources.keys().cloned().collect();
                names.sort();
                let mut labels: Vec<String> = node.labels.keys().cloned().collect();
                labels.retain(|key| key == "ray.io/node-group" || key == "ray.io/node-id");
                labels.sort();
                (
                    node.instance_id.clone(),
                    node.ray_node_type_name.clone(),
                    node.status,
                    names,
                    labels,
                    node.node_id.len(),
                )
            })
            .collect::<Vec<_>>()
    };
    ensure!(
        view(&real) == view(&stand_in),
        "nodes: Ray {:?}, stand-in {:?}",
        view(&real),
        view(&stand_in)
    );
    ensure!(
        real.pending_gang_resource_requests.is_empty()
            && real.cluster_resource_constraints.is_empty(),
        "Ray reports more demand than the script: {real:?}"
    );
    fixture.finish().await
}
