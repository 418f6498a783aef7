//! autoscale-bench: how fast the host's autoscaler reacts, from demand visible in a
//! cluster's GCS to the new `replicas` written on the RayCluster, and what it costs in
//! operator CPU per autoscaled cluster. Prints a table.
//!
//! ```sh
//! cargo build --release -p wasmray
//! cargo run --release -p wasmray-e2e --bin autoscale-bench -- --clusters 50
//! ```
//!
//! Two sources of demand:
//! - `--real-ray`: one cluster whose pods the pod runner runs as real Ray (the control plane
//!   must run one). Each step a driver calls `request_resources` for one more 1-CPU bundle;
//!   the reaction is the time from the constraint showing in the head's GCS (the benchmark
//!   polls it every 10 ms) to the watch seeing the written replicas. Ramps of 3 steps, then
//!   back to 0 workers (idle timeout 5 s), `--rounds` times.
//! - otherwise, `--clusters N` clusters, each GCS the stand-in of `wasmray_e2e::gcs` (scripted
//!   demand, replies as a real head's; the `autoscaling` e2e test checks them against real
//!   Ray) served on the head pod's IP: a real head costs about 1.5 GiB here. Each round gives
//!   every cluster one more pending task, spread over a second; the reaction is the time from
//!   the stand-in answering with it to the watch seeing the written replicas.
//!
//! The operator runs as its release binary with `--ray-head-address pod-ip` and its default
//! poll interval (500 ms). The table says which source the figures come from.
//!
//! Flags: `--real-ray`, `--clusters N` (default 50), `--rounds R` (default 10; with
//! `--real-ray`, ramps, default 3), `--wasmray PATH` (default
//! `$CARGO_TARGET_DIR/release/wasmray`), `--plugin-cache-dir DIR` (default
//! `~/.cache/wasmray/scale-bench-code`). Uses a running control plane when
//! `WASMRAY_TEST_CONTROLPLANE` is set, else starts one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use wasmray_crds::RayCluster;
use wasmray_e2e::gcs::{Script, StandIn};

/// Linux reports process CPU time in ticks of 1/100 s (USER_HZ) on every architecture.
const TICKS_PER_SECOND: f64 = 100.0;
const SETTLE: Duration = Duration::from_secs(5);
const IDLE_WINDOW: Duration = Duration::from_secs(20);
const ROUND_TIMEOUT: Duration = Duration::from_secs(120);

struct Flags {
    real_ray: bool,
    clusters: usize,
    rounds: Option<usize>,
    wasmray: PathBuf,
    plugin_cache_dir: PathBuf,
}

fn parse_flags() -> anyhow::Result<Flags> {
    let (wasmray, plugin_cache_dir) = wasmray_e2e::binary::bench_defaults();
    let mut flags = Flags {
        real_ray: false,
        clusters: 50,
        rounds: None,
        wasmray,
        plugin_cache_dir,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--clusters" => flags.clusters = value()?.parse()?,
            "--rounds" => flags.rounds = Some(value()?.parse()?),
            "--real-ray" => flags.real_ray = true,
            "--wasmray" => flags.wasmray = PathBuf::from(value()?),
            "--plugin-cache-dir" => flags.plugin_cache_dir = PathBuf::from(value()?),
            other => bail!("unknown flag {other}; see the doc comment of autoscale_bench.rs"),
        }
    }
    Ok(flags)
}

fn autoscaled_cluster(name: &str) -> anyhow::Result<RayCluster> {
    let container = |name: &str| {
        json!({"name": name, "image": "rayproject/ray:2.60.0",
               "resources": {"limits": {"cpu": "1", "memory": "256Mi"}}})
    };
    Ok(serde_json::from_value(json!({
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": name},
        "spec": {
            "enableInTreeAutoscaling": true,
            "headGroupSpec": {"rayStartParams": {"num-cpus": "0"},
                              "template": {"spec": {"containers": [container("ray-head")]}}},
            "workerGroupSpecs": [{
                "groupName": "small", "replicas": 0, "minReplicas": 0, "maxReplicas": 100,
                "rayStartParams": {}, "template": {"spec": {"containers": [container("ray-worker")]}}
            }]
        }
    }))?)
}

/// User plus system CPU seconds of a process.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) start at ") ".
    let rest = stat.rsplit_once(") ").context("no command in stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |index: usize| -> anyhow::Result<f64> {
        Ok(fields.get(index).context("short stat")?.parse::<f64>()?)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command.
    Ok((ticks(11)? + ticks(12)?) / TICKS_PER_SECOND)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = parse_flags()?;
    let cluster = wasmray_e2e::cluster().await?;
    let client = cluster.client().await?;
    let crd =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds/generated/ray.io_rayclusters.yaml");
    wasmray_e2e::crds::apply_crd_files(&client, &[crd.as_path()]).await?;
    let ns = if flags.real_ray {
        let generated = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds/generated");
        wasmray_e2e::crds::apply_crd_files(
            &client,
            &[generated.join("ray.io_rayjobs.yaml").as_path()],
        )
        .await?;
        cluster.ray_namespace("autoscale-bench").await?
    } else {
        cluster.namespace("autoscale-bench").await?
    };
    let namespace = ns.name.clone();

    let log_path = cluster
        .run_dir()
        .join(format!("autoscale-bench-{namespace}.log"));
    let mut child = Command::new(&flags.wasmray)
        .args(["--watch-namespace", &namespace, "--log-format", "json"])
        .args(["--enable-leader-election=false", "--metrics-addr=0"])
        .args([
            "--health-probe-bind-address=0",
            "--ray-head-address",
            "pod-ip",
        ])
        .args(["--reconcile-concurrency", "8"])
        .arg("--plugin-cache-dir")
        .arg(&flags.plugin_cache_dir)
        .env("KUBECONFIG", cluster.kubeconfig_path())
        .env("RUST_LOG", "warn,wasmray=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (cargo build --release -p wasmray)",
                flags.wasmray.display()
            )
        })?;
    let pid = child.id();
    let result = if flags.real_ray {
        run_real(&flags, &client, &namespace, pid, &log_path).await
    } else {
        run(&flags, &client, &namespace, pid, &log_path).await
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

async fn wait_started(log_path: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    while !std::fs::read_to_string(log_path)?.contains("child caches synced") {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the operator did not start; see {}", log_path.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Records the first moment each cluster's first group reached each `replicas`.
fn watch_replicas(clusters: Api<RayCluster>) -> (Reached, tokio::task::JoinHandle<()>) {
    let reached: Reached = Arc::default();
    let task = {
        let reached = Arc::clone(&reached);
        tokio::spawn(async move {
            let mut events = watcher(clusters, watcher::Config::default()).boxed();
            while let Ok(Some(event)) = events.try_next().await {
                if let watcher::Event::Apply(object) | watcher::Event::InitApply(object) = event {
                    let replicas = object
                        .spec
                        .worker_group_specs
                        .as_ref()
                        .and_then(|groups| groups.first())
                        .and_then(|group| group.replicas)
                        .unwrap_or(0);
                    let name = object.metadata.name.clone().unwrap_or_default();
                    reached
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry((name, i64::from(replicas)))
                        .or_insert_with(Instant::now);
                }
            }
        })
    };
    (reached, task)
}

type Reached = Arc<Mutex<HashMap<(String, i64), Instant>>>;

fn print_reactions(source: &str, reactions: &mut [Duration]) {
    reactions.sort();
    println!("autoscale-bench: {source}");
    println!("| figure | value |");
    println!("|---|---|");
    println!("| reactions measured | {} |", reactions.len());
    println!(
        "| reaction p50 | {:.0} ms |",
        percentile(reactions, 50.0).as_secs_f64() * 1000.0
    );
    println!(
        "| reaction p99 | {:.0} ms |",
        percentile(reactions, 99.0).as_secs_f64() * 1000.0
    );
    println!(
        "| reaction max | {:.0} ms |",
        reactions.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
    );
}

const REQUEST: &str = r#"import ray, sys
from ray.autoscaler.sdk import request_resources
ray.init()
request_resources(bundles=[{"CPU": 1}] * int(sys.argv[1]))"#;

/// One real Ray cluster: `request_resources` ramps, reaction from the GCS to the replicas.
async fn run_real(
    flags: &Flags,
    client: &kube::Client,
    namespace: &str,
    pid: u32,
    log_path: &Path,
) -> anyhow::Result<()> {
    use wasmray::ray::gcs::GcsClient;
    use wasmray::ray::{DashboardAddress, DashboardClient, JobSubmission};
    wait_started(log_path).await?;
    let clusters: Api<RayCluster> = Api::namespaced(client.clone(), namespace);
    let mut object = autoscaled_cluster("real")?;
    object.spec.autoscaler_options =
        Some(serde_json::from_value(json!({"idleTimeoutSeconds": 5}))?);
    object
        .spec
        .head_group_spec
        .template
        .spec
        .as_mut()
        .context("head spec")?
        .containers[0]
        .resources = Some(serde_json::from_value(
        json!({"limits": {"cpu": "1", "memory": "1G"}}),
    )?);
    if let Some(group) = object
        .spec
        .worker_group_specs
        .as_mut()
        .and_then(|g| g.first_mut())
    {
        group.max_replicas = Some(3);
        group
            .template
            .spec
            .as_mut()
            .context("worker spec")?
            .containers[0]
            .resources = Some(serde_json::from_value(
            json!({"limits": {"cpu": "1", "memory": "500M"}}),
        )?);
    }
    clusters.create(&PostParams::default(), &object).await?;
    let ip = loop {
        let status = clusters.get("real").await?.status;
        if let Some(ip) = status
            .and_then(|s| s.head)
            .and_then(|h| h.pod_ip)
            .filter(|ip| !ip.is_empty())
        {
            break ip;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let gcs = GcsClient::new(Duration::from_secs(2));
    let gcs_address = format!("{ip}:6379");
    let dashboard = DashboardClient::new(Duration::from_secs(10));
    let at = DashboardAddress::new(format!("http://{ip}:8265"));
    let constrained = |state: &wasmray_ray_proto::autoscaler::ClusterResourceState| -> i64 {
        state
            .cluster_resource_constraints
            .iter()
            .flat_map(|c| &c.resource_requests)
            .map(|r| r.count)
            .sum()
    };
    let (reached, watch) = watch_replicas(clusters.clone());
    let mut reactions = Vec::new();
    let cpu_before = cpu_seconds(pid)?;
    let cpu_started = Instant::now();
    let mut submission = 0;
    for ramp in 0..flags.rounds.unwrap_or(3) {
        for wanted in [1i64, 2, 3, 0] {
            submission += 1;
            let job = JobSubmission {
                entrypoint: format!("python -c '{REQUEST}' {wanted}"),
                submission_id: format!("request-{submission}"),
                ..JobSubmission::default()
            };
            let deadline = Instant::now() + ROUND_TIMEOUT;
            while dashboard.submit_job(&at, &job).await.is_err() {
                if Instant::now() > deadline {
                    bail!("the head's dashboard does not take jobs");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let shown = loop {
                if let Ok(state) = gcs.cluster_state(&gcs_address, None).await
                    && constrained(&state) == wanted
                {
                    break Instant::now();
                }
                if Instant::now() > deadline {
                    bail!("ramp {ramp}: the GCS never showed {wanted} requested bundles");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            if wanted == 0 {
                // Back to no workers (idle timeout), off the clock, before the next ramp.
                while clusters
                    .get("real")
                    .await?
                    .spec
                    .worker_group_specs
                    .as_ref()
                    .and_then(|g| g.first())
                    .and_then(|g| g.replicas)
                    != Some(0)
                {
                    if Instant::now() > deadline {
                        bail!("ramp {ramp}: the workers did not go");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                continue;
            }
            loop {
                let seen = reached
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&("real".to_owned(), wanted))
                    .copied();
                if let Some(seen) = seen {
                    reactions.push(seen.saturating_duration_since(shown));
                    break;
                }
                if Instant::now() > deadline {
                    bail!("ramp {ramp}: replicas never reached {wanted}");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // The next ramp's counts are reached again: forget this ramp's.
        reached.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
    let cpu = (cpu_seconds(pid)? - cpu_before) / cpu_started.elapsed().as_secs_f64();
    watch.abort();
    print_reactions(
        "1 cluster, real Ray 2.60.0 behind its pods (pod runner)",
        &mut reactions,
    );
    println!(
        "| operator CPU, whole run | {:.2} millicores |",
        cpu * 1000.0
    );
    Ok(())
}

async fn run(
    flags: &Flags,
    client: &kube::Client,
    namespace: &str,
    pid: u32,
    log_path: &Path,
) -> anyhow::Result<()> {
    wait_started(log_path).await?;
    let clusters: Api<RayCluster> = Api::namespaced(client.clone(), namespace);
    let names: Vec<String> = (0..flags.clusters).map(|i| format!("auto-{i}")).collect();
    for name in &names {
        clusters
            .create(&PostParams::default(), &autoscaled_cluster(name)?)
            .await?;
    }
    // Each head's stand-in GCS, on the head pod's IP, once the head has one.
    let mut stand_ins: HashMap<String, StandIn> = HashMap::new();
    let mut servers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while stand_ins.len() < names.len() {
        if Instant::now() > deadline {
            bail!(
                "only {} of {} heads got an IP",
                stand_ins.len(),
                names.len()
            );
        }
        for object in clusters.list(&Default::default()).await?.items {
            let name = object.metadata.name.clone().unwrap_or_default();
            let Some(head) = object.status.as_ref().and_then(|s| s.head.as_ref()) else {
                continue;
            };
            let (Some(ip), Some(pod)) = (head.pod_ip.clone(), head.pod_name.clone()) else {
                continue;
            };
            if ip.is_empty() || stand_ins.contains_key(&name) {
                continue;
            }
            let stand_in = StandIn::new(Script {
                head: (pod, ip.clone()),
                pending_tasks: Vec::new(),
            });
            let address: SocketAddr = format!("{ip}:6379").parse()?;
            servers.push(stand_in.serve(address));
            stand_ins.insert(name, stand_in);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    tokio::time::sleep(SETTLE).await;
    let idle_cpu_before = cpu_seconds(pid)?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle_cpu = cpu_seconds(pid)? - idle_cpu_before;

    let (reached, watch) = watch_replicas(clusters.clone());
    let mut reactions: Vec<Duration> = Vec::new();
    let active_cpu_before = cpu_seconds(pid)?;
    let active_started = Instant::now();
    let rounds = flags.rounds.unwrap_or(10);
    for round in 1..=rounds {
        let wanted = i64::try_from(round)?;
        let mut shown: HashMap<String, Instant> = HashMap::new();
        // Spread over a second, in an order that changes every round.
        let mut order: Vec<&String> = names.iter().collect();
        order.rotate_left(round % names.len().max(1));
        let gap = Duration::from_secs(1) / u32::try_from(order.len().max(1))?;
        // A round starts right after the last one's replicas were seen, in step with the
        // host's poll: shift it by a pseudo-random part of a second so demand lands anywhere
        // in the poll interval.
        tokio::time::sleep(Duration::from_millis((round as u64 * 337) % 1000)).await;
        for name in order {
            let stand_in = &stand_ins[name];
            let mut script = stand_in.script();
            script.pending_tasks = vec![(vec![("CPU".to_owned(), 1.0)], wanted)];
            stand_in.set(script);
            shown.insert(name.clone(), Instant::now());
            tokio::time::sleep(gap).await;
        }
        let round_deadline = Instant::now() + ROUND_TIMEOUT;
        loop {
            let done: Vec<Duration> = {
                let reached = reached.lock().unwrap_or_else(|e| e.into_inner());
                shown
                    .iter()
                    .filter_map(|(name, at)| {
                        reached
                            .get(&(name.clone(), wanted))
                            .map(|seen| seen.saturating_duration_since(*at))
                    })
                    .collect()
            };
            if done.len() == shown.len() {
                reactions.extend(done);
                break;
            }
            if Instant::now() > round_deadline {
                bail!(
                    "round {round}: {} of {} clusters reacted",
                    done.len(),
                    shown.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let active_seconds = active_started.elapsed().as_secs_f64();
    let active_cpu = cpu_seconds(pid)? - active_cpu_before;
    watch.abort();
    for server in servers {
        server.abort();
    }
    let n = flags.clusters as f64;
    print_reactions(
        &format!(
            "{} clusters, a stand-in GCS each, {rounds} rounds",
            flags.clusters
        ),
        &mut reactions,
    );
    println!(
        "| operator CPU per cluster, idle | {:.2} millicores |",
        idle_cpu / IDLE_WINDOW.as_secs_f64() / n * 1000.0
    );
    println!(
        "| operator CPU per cluster, scaling | {:.2} millicores |",
        active_cpu / active_seconds / n * 1000.0
    );
    Ok(())
}
