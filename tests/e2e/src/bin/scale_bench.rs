//! scale-bench: how fast the operator brings N RayClusters (1 head + 3 workers each) to
//! `ready` on the test control plane, with how many API writes and how much memory,
//! against what the control plane itself allows: a bare client creating the same pods and
//! services, with the scheduler and kwok doing their part. Prints a table.
//!
//! ```sh
//! cargo build --release -p wasmray
//! cargo run --release -p wasmray-e2e --bin scale-bench -- --clusters 100
//! ```
//!
//! Flags: `--clusters N` (default 100), `--concurrency C` (the operator's
//! `--reconcile-concurrency`, default 8), `--wasmray PATH` (the operator binary; default
//! `$CARGO_TARGET_DIR/release/wasmray`, else `target/release/wasmray`), `--plugin-cache-dir
//! DIR` (the operator's compiled-plugin cache; default `~/.cache/wasmray/scale-bench-code`,
//! so the first run compiles the plugins at start and later runs start warm, as the Helm
//! chart's cache volume does after the first start).
//! Uses a running control plane when `WASMRAY_TEST_CONTROLPLANE` is set, else starts one.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead as _, Seek as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{StreamExt as _, TryStreamExt as _, stream};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};

/// Creates in flight at once, for both the operator's RayClusters and the bare client.
const CREATE_PARALLELISM: usize = 32;
const READY_TIMEOUT: Duration = Duration::from_secs(1800);
/// Status writes a cluster needs at least: its first status, then `ready`.
const MINIMUM_STATUS_WRITES: f64 = 2.0;

struct Flags {
    clusters: usize,
    concurrency: u16,
    wasmray: PathBuf,
    plugin_cache_dir: PathBuf,
}

fn parse_flags() -> anyhow::Result<Flags> {
    let (wasmray, plugin_cache_dir) = wasmray_e2e::binary::bench_defaults();
    let mut flags = Flags {
        clusters: 100,
        concurrency: 8,
        wasmray,
        plugin_cache_dir,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--clusters" => flags.clusters = value()?.parse()?,
            "--concurrency" => flags.concurrency = value()?.parse()?,
            "--wasmray" => flags.wasmray = PathBuf::from(value()?),
            "--plugin-cache-dir" => flags.plugin_cache_dir = PathBuf::from(value()?),
            other => bail!("unknown flag {other}; see the doc comment of scale_bench.rs"),
        }
    }
    Ok(flags)
}

fn raycluster_resource() -> ApiResource {
    ApiResource {
        group: "ray.io".into(),
        version: "v1".into(),
        api_version: "ray.io/v1".into(),
        kind: "RayCluster".into(),
        plural: "rayclusters".into(),
    }
}

/// A small cluster: 1 head + 3 workers with small requests, so 1000 clusters fit the
/// control plane's fake nodes.
fn bench_cluster(name: &str) -> anyhow::Result<DynamicObject> {
    let container = |name: &str| {
        json!({"name": name, "image": "rayproject/ray:2.46.0",
               "resources": {"requests": {"cpu": "100m", "memory": "256Mi"},
                             "limits": {"cpu": "100m", "memory": "256Mi"}}})
    };
    Ok(serde_json::from_value(json!({
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": name},
        "spec": {
            "headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [container("ray-head")]}}},
            "workerGroupSpecs": [{
                "groupName": "workers", "replicas": 3, "minReplicas": 0, "maxReplicas": 10,
                "rayStartParams": {}, "template": {"spec": {"containers": [container("ray-worker")]}}
            }]
        }
    }))?)
}

/// Waits until `done` holds for the watched objects; returns when it does.
async fn watch_until<K, F>(api: Api<K>, mut done: F) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    F: FnMut(&watcher::Event<K>) -> bool,
{
    let mut events = watcher(api, watcher::Config::default()).boxed();
    let wait = async {
        while let Some(event) = events.try_next().await? {
            if done(&event) {
                return Ok(());
            }
        }
        bail!("watch ended")
    };
    tokio::time::timeout(READY_TIMEOUT, wait)
        .await
        .context("timed out")?
}

/// Tracks a set of names satisfying a predicate across watch events.
fn track<K: kube::Resource>(
    set: &mut HashSet<String>,
    event: &watcher::Event<K>,
    ok: impl Fn(&K) -> bool,
) {
    let mut apply = |object: &K| {
        let name = object.meta().name.clone().unwrap_or_default();
        if ok(object) {
            set.insert(name);
        } else {
            set.remove(&name);
        }
    };
    match event {
        watcher::Event::Apply(object) | watcher::Event::InitApply(object) => apply(object),
        watcher::Event::Delete(object) => {
            set.remove(&object.meta().name.clone().unwrap_or_default());
        }
        watcher::Event::Init | watcher::Event::InitDone => {}
    }
}

/// Audit-log writes made after byte `offset` under a user agent prefix in a namespace.
fn audited_writes(
    log: &Path,
    offset: u64,
    agent_prefix: &str,
    namespace: &str,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut file = std::fs::File::open(log)?;
    file.seek(std::io::SeekFrom::Start(offset))?;
    let mut counts = BTreeMap::new();
    for line in std::io::BufReader::new(file).lines() {
        let Ok(event) = serde_json::from_str::<Value>(&line?) else {
            continue;
        };
        if event["stage"] != "ResponseComplete"
            || !event["userAgent"]
                .as_str()
                .unwrap_or_default()
                .starts_with(agent_prefix)
            || event["objectRef"]["namespace"] != namespace
        {
            continue;
        }
        let object = &event["objectRef"];
        let resource = match object["subresource"].as_str() {
            Some(sub) if !sub.is_empty() => {
                format!("{}/{sub}", object["resource"].as_str().unwrap_or_default())
            }
            _ => object["resource"].as_str().unwrap_or_default().to_owned(),
        };
        *counts
            .entry(format!(
                "{} {resource}",
                event["verb"].as_str().unwrap_or_default()
            ))
            .or_insert(0) += 1;
    }
    Ok(counts)
}

/// Peak resident memory of a process, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .context("no VmHWM")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmHWM value")?
        .parse()?)
}

struct OperatorRun {
    seconds: f64,
    writes: BTreeMap<String, usize>,
    peak_rss_kib: u64,
    /// Peak RSS when the caches had synced: start-up, including any plugin compilation.
    startup_peak_rss_kib: u64,
    /// Whether the plugin code cache held compiled code before the start.
    warm_code_cache: bool,
    /// One cluster's pods and head service, as templates for the bare client.
    pods: Vec<Pod>,
    service: Service,
}

async fn run_operator(
    flags: &Flags,
    client: &Client,
    cluster: &wasmray_e2e::TestCluster,
    namespace: &str,
) -> anyhow::Result<OperatorRun> {
    let log_path = cluster
        .run_dir()
        .join(format!("scale-bench-operator-{namespace}.log"));
    let log = std::fs::File::create(&log_path)?;
    let warm_code_cache = std::fs::read_dir(&flags.plugin_cache_dir)
        .is_ok_and(|mut entries| entries.next().is_some());
    let mut child: Child = Command::new(&flags.wasmray)
        .args(["--watch-namespace", namespace, "--log-format", "json"])
        .args(["--reconcile-concurrency", &flags.concurrency.to_string()])
        // One replica on a shared machine: no Lease, no listening ports.
        .args(["--enable-leader-election=false", "--metrics-addr=0"])
        .args(["--health-probe-bind-address=0"])
        .arg("--plugin-cache-dir")
        .arg(&flags.plugin_cache_dir)
        .env("KUBECONFIG", cluster.kubeconfig_path())
        .env("RUST_LOG", "warn,wasmray=info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (build it with cargo build --release -p wasmray)",
                flags.wasmray.display()
            )
        })?;
    let pid = child.id();
    let result = async {
        let started = Instant::now();
        while !std::fs::read_to_string(&log_path)?.contains("child caches synced") {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the operator exited with {status}; see {}",
                    log_path.display()
                );
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!(
                    "the operator did not start within 120 s; see {}",
                    log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let startup_peak_rss_kib = peak_rss_kib(pid)?;
        let audit_log = cluster.info().audit_log.clone();
        let offset = std::fs::metadata(&audit_log)?.len();
        let clusters: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &raycluster_resource());
        let t0 = Instant::now();
        let ready = {
            let clusters = clusters.clone();
            let wanted = flags.clusters;
            tokio::spawn(async move {
                let mut ready = HashSet::new();
                watch_until(clusters, |event| {
                    track(&mut ready, event, |rc: &DynamicObject| {
                        rc.data["status"]["state"] == "ready"
                    });
                    ready.len() >= wanted
                })
                .await
            })
        };
        stream::iter(0..flags.clusters)
            .map(|index| {
                let clusters = clusters.clone();
                async move {
                    let object = bench_cluster(&format!("bench-{index}"))?;
                    clusters.create(&PostParams::default(), &object).await?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(CREATE_PARALLELISM)
            .try_collect::<Vec<()>>()
            .await?;
        ready.await??;
        let seconds = t0.elapsed().as_secs_f64();
        // Let trailing writes (status of the last clusters) reach the audit log.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let writes = audited_writes(&audit_log, offset, "wasmray/", namespace)?;
        let peak_rss_kib = peak_rss_kib(pid)?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let pods = pods
            .list(&ListParams::default().labels("ray.io/cluster=bench-0"))
            .await?
            .items;
        let services: Api<Service> = Api::namespaced(client.clone(), namespace);
        let service = services.get("bench-0-head-svc").await?;
        Ok(OperatorRun {
            seconds,
            writes,
            peak_rss_kib,
            startup_peak_rss_kib,
            warm_code_cache,
            pods,
            service,
        })
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// An object as a bare client would create it: no server-set metadata, status or node.
fn strip<T: serde::Serialize + serde::de::DeserializeOwned>(object: &T) -> anyhow::Result<Value> {
    let mut value = serde_json::to_value(object)?;
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
    }
    if let Some(meta) = value["metadata"].as_object_mut() {
        for key in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
            "ownerReferences",
            "namespace",
            "generation",
        ] {
            meta.remove(key);
        }
    }
    if let Some(spec) = value["spec"].as_object_mut() {
        spec.remove("nodeName");
        // An allocated service IP cannot be copied, but a headless service (KubeRay's head
        // service) must stay headless, or the copies exhaust the service IP range.
        if spec.get("clusterIP").and_then(Value::as_str) != Some("None") {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        }
    }
    Ok(value)
}

async fn run_bare(
    flags: &Flags,
    client: &Client,
    namespace: &str,
    templates: &OperatorRun,
) -> anyhow::Result<f64> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let pod_templates: Vec<Value> = templates
        .pods
        .iter()
        .map(strip)
        .collect::<anyhow::Result<_>>()?;
    let service_template = strip(&templates.service)?;
    let wanted = flags.clusters * pod_templates.len();
    let t0 = Instant::now();
    let ready = {
        let pods = pods.clone();
        tokio::spawn(async move {
            let mut ready = HashSet::new();
            watch_until(pods, |event| {
                track(&mut ready, event, wasmray_e2e::pod_running_and_ready);
                ready.len() >= wanted
            })
            .await
        })
    };
    let mut objects: Vec<(Option<Value>, Option<Value>)> = Vec::new();
    for index in 0..flags.clusters {
        let name = format!("bare-{index}");
        let mut service = service_template.clone();
        service["metadata"]["name"] = json!(format!("{name}-head-svc"));
        objects.push((None, Some(service)));
        for template in &pod_templates {
            let mut pod = template.clone();
            pod["metadata"]["labels"]["ray.io/cluster"] = json!(name);
            if let Some(meta) = pod["metadata"].as_object_mut() {
                let generate = meta
                    .get("generateName")
                    .and_then(Value::as_str)
                    .map(|prefix| prefix.replacen("bench-0", &name, 1))
                    .unwrap_or_else(|| format!("{name}-"));
                meta.remove("name");
                meta.insert("generateName".into(), json!(generate));
            }
            objects.push((Some(pod), None));
        }
    }
    stream::iter(objects)
        .map(|(pod, service)| {
            let (pods, services) = (pods.clone(), services.clone());
            async move {
                if let Some(pod) = pod {
                    pods.create(&PostParams::default(), &serde_json::from_value(pod)?)
                        .await?;
                }
                if let Some(service) = service {
                    services
                        .create(&PostParams::default(), &serde_json::from_value(service)?)
                        .await?;
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CREATE_PARALLELISM)
        .try_collect::<Vec<()>>()
        .await?;
    ready.await??;
    Ok(t0.elapsed().as_secs_f64())
}

/// Waits until the control plane takes a probe pod from created to ready, before anything
/// is timed. One that has just started takes seconds longer for its first pods: at N = 100
/// an operator ready 30 ms after its start (plugin code cached) took 8.5-9.3 s, against
/// 6.3-6.4 s when it started a few seconds later; the bare client always runs later.
async fn settle(cluster: &wasmray_e2e::TestCluster, client: &Client) -> anyhow::Result<()> {
    let namespace = cluster.namespace("bench-settle").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace.name);
    let probe: Pod = serde_json::from_value(json!({
        "metadata": {"name": "probe"},
        "spec": {"containers": [{"name": "probe", "image": "busybox"}]}
    }))?;
    let watched = pods.clone();
    let ready = tokio::spawn(async move {
        watch_until(watched, |event| match event {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                wasmray_e2e::pod_running_and_ready(pod)
            }
            _ => false,
        })
        .await
    });
    pods.create(&PostParams::default(), &probe).await?;
    tokio::time::timeout(READY_TIMEOUT, ready)
        .await
        .context("the probe pod did not become ready")???;
    namespace.cleanup_within(client, READY_TIMEOUT).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = parse_flags()?;
    let cluster = wasmray_e2e::cluster().await?;
    let client = cluster.client().await?;
    let crd =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds/generated/ray.io_rayclusters.yaml");
    wasmray_e2e::crds::apply_crd_files(&client, &[crd.as_path()]).await?;

    settle(cluster, &client).await?;
    let operator_ns = cluster.namespace("bench-operator").await?;
    eprintln!(
        "operator: {} clusters in {}",
        flags.clusters, operator_ns.name
    );
    let operator = run_operator(&flags, &client, cluster, &operator_ns.name).await?;
    // The bare client starts on an empty cluster, as the operator did: at N = 1000 both
    // sets of pods do not fit the fake nodes at once.
    operator_ns.cleanup_within(&client, READY_TIMEOUT).await?;
    let bare_ns = cluster.namespace("bench-bare").await?;
    eprintln!(
        "bare client: the same pods and services in {}",
        bare_ns.name
    );
    let bare_seconds = run_bare(&flags, &client, &bare_ns.name, &operator).await?;

    let n = flags.clusters as f64;
    let count = |prefix: &str| -> usize {
        operator
            .writes
            .iter()
            .filter(|(key, _)| key.starts_with(prefix) || prefix.is_empty())
            .map(|(_, count)| count)
            .sum()
    };
    let events: usize = operator
        .writes
        .iter()
        .filter(|(k, _)| k.ends_with(" events"))
        .map(|(_, c)| c)
        .sum();
    let object_writes = count("") - events;
    let objects_per_cluster = (operator.pods.len() + 1) as f64;
    println!();
    println!(
        "scale-bench: {} RayClusters (1 head + 3 workers), operator --reconcile-concurrency {}",
        flags.clusters, flags.concurrency
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| time to all ready, operator (s) | {:.1} |",
        operator.seconds
    );
    println!("| time to all pods ready, bare client (s) | {bare_seconds:.1} |");
    println!(
        "| ratio (goal <= 1.3) | {:.2} |",
        operator.seconds / bare_seconds
    );
    println!(
        "| operator API writes per cluster, events excluded | {:.2} |",
        object_writes as f64 / n
    );
    println!(
        "| of which status writes per cluster | {:.2} |",
        count("patch rayclusters/status") as f64 / n
    );
    println!("| event writes per cluster | {:.2} |", events as f64 / n);
    println!("| bare-client writes per cluster (pods + services) | {objects_per_cluster:.2} |");
    // The least an operator can write: every pod and service once, plus the two status
    // changes a user must see (the first status with desired counts and conditions, then
    // `ready`).
    let minimum = objects_per_cluster + MINIMUM_STATUS_WRITES;
    println!(
        "| minimum writes per cluster (pods + services + {MINIMUM_STATUS_WRITES} status) | {minimum:.2} |"
    );
    println!(
        "| writes ratio (goal <= 1.2) | {:.2} |",
        object_writes as f64 / n / minimum
    );
    println!(
        "| operator peak RSS (MiB) | {:.1} |",
        operator.peak_rss_kib as f64 / 1024.0
    );
    println!(
        "| operator peak RSS by the end of start-up (MiB) | {:.1} ({}) |",
        operator.startup_peak_rss_kib as f64 / 1024.0,
        if operator.warm_code_cache {
            "plugin code from the cache"
        } else {
            "plugins compiled at start"
        }
    );
    println!();
    println!(
        "operator writes by verb and resource: {:?}",
        operator.writes
    );

    bare_ns.cleanup_within(&client, READY_TIMEOUT).await?;
    Ok(())
}
