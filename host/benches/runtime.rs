//! Plugin runtime benchmarks (issue 3, Performance).
//!
//! - `reconcile/100-pods`: a full call (fresh store and instance, input passed, plugin
//!   run, output read and validated) for one RayCluster with 3 worker groups, 100
//!   observed pods and its head Service, starting from the pods as the host caches them
//!   (one pod table per pod), so concatenating them into the call's table is included;
//! - `reconcile/new-cluster`: the same cluster with no pods yet (the answer is every
//!   desired pod and the head service);
//! - `boundary/*`: what the alternatives cost on the host: turning 100 full pods into a
//!   pod table, concatenating 100 cached one-pod tables, vs serialising the pods as JSON
//!   (and parsing them back, the least a plugin receiving JSON would do);
//! - start-up with all built-in plugins, cold (compile) and warm (on-disk cache),
//!   measured once each and printed (seconds-long, so not sampled by criterion);
//! - with `WASMRAY_BENCH_FLOOR=1`, only the floor of the new-cluster call: what reading
//!   the parent and answering its pods cost inside a component (the hostile plugin's
//!   measuring modes) and what the host's check of the answer costs, whatever the
//!   plugin decides.
//!
//! Run: `cargo bench -p wasmray --bench runtime`.

use std::collections::BTreeMap;
use std::time::Instant;

use criterion::{Criterion, criterion_group};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, ContainerState, ContainerStateRunning, ContainerStatus,
    EmptyDirVolumeSource, EnvVar, HTTPGetAction, Pod, PodCondition, PodSpec, PodStatus,
    PodTemplateSpec, Probe, ResourceRequirements, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp as JiffTimestamp;
use serde_json::{Value, json};
use tokio::runtime::Runtime as Tokio;
use wasmray::builtin::{BUILTIN_PLUGINS, test_plugins};
use wasmray::controller::write_policy::{AnswerLimits, WritePolicy};
use wasmray::controller::{ParentKind, plan};
use wasmray::runtime::bindings::types::{HostFacts, ObservedPods, ObservedService};
use wasmray::runtime::records::{observed_service, pod_record, pod_table, timestamp};
use wasmray::runtime::{ReconcileInput, Runtime, RuntimeConfig};
use wasmray_crds::RayCluster;
use wasmray_pod_table::Table as PodTable;

const CLUSTER: &str = "bench";
const GROUPS: [(&str, usize, &str); 3] = [
    ("cpu-small", 40, "2"),
    ("cpu-large", 40, "8"),
    ("gpu", 19, "16"),
];
const NOW: i64 = 1_795_405_982;

fn quantity(text: &str) -> Quantity {
    Quantity(text.to_owned())
}

/// A container as users write them in RayCluster pod templates.
fn ray_container(name: &str, cpu: &str, gpu: bool) -> Container {
    let mut limits = BTreeMap::from([
        ("cpu".to_owned(), quantity(cpu)),
        ("memory".to_owned(), quantity("32Gi")),
    ]);
    if gpu {
        limits.insert("nvidia.com/gpu".to_owned(), quantity("1"));
    }
    let env = |name: &str, value: &str| EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    };
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(52365),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(10),
        period_seconds: Some(5),
        timeout_seconds: Some(2),
        failure_threshold: Some(120),
        ..Probe::default()
    };
    Container {
        name: name.to_owned(),
        image: Some("rayproject/ray-ml:2.46.0-py311-gpu".to_owned()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        resources: Some(ResourceRequirements {
            limits: Some(limits.clone()),
            requests: Some(limits),
            ..ResourceRequirements::default()
        }),
        env: Some(vec![
            env(
                "RAY_GRAFANA_HOST",
                "http://prometheus-grafana.monitoring.svc:80",
            ),
            env(
                "RAY_PROMETHEUS_HOST",
                "http://prometheus-kube-prometheus-prometheus.monitoring.svc:9090",
            ),
            env("AWS_DEFAULT_REGION", "us-west-2"),
            env("HF_HOME", "/mnt/cache/huggingface"),
            env("PYTHONUNBUFFERED", "1"),
        ]),
        ports: Some(vec![ContainerPort {
            container_port: 8080,
            name: Some("metrics".to_owned()),
            ..ContainerPort::default()
        }]),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "ray-logs".to_owned(),
                mount_path: "/tmp/ray".to_owned(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "model-cache".to_owned(),
                mount_path: "/mnt/cache".to_owned(),
                ..VolumeMount::default()
            },
        ]),
        liveness_probe: Some(probe("/api/local_raylet_healthz")),
        readiness_probe: Some(probe("/api/local_raylet_healthz")),
        ..Container::default()
    }
}

fn template(container: &str, cpu: &str, gpu: bool) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(BTreeMap::from([(
                "team".to_owned(),
                "ml-platform".to_owned(),
            )])),
            annotations: Some(BTreeMap::from([(
                "prometheus.io/scrape".to_owned(),
                "true".to_owned(),
            )])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![ray_container(container, cpu, gpu)],
            volumes: Some(vec![
                Volume {
                    name: "ray-logs".to_owned(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                },
                Volume {
                    name: "model-cache".to_owned(),
                    empty_dir: Some(EmptyDirVolumeSource {
                        size_limit: Some(quantity("50Gi")),
                        ..EmptyDirVolumeSource::default()
                    }),
                    ..Volume::default()
                },
            ]),
            service_account_name: Some("ray-workers".to_owned()),
            node_selector: Some(BTreeMap::from([(
                "node.kubernetes.io/instance-type".to_owned(),
                "m6i.8xlarge".to_owned(),
            )])),
            ..PodSpec::default()
        }),
    }
}

/// The RayCluster as the API server returns it (spec and a status).
fn ray_cluster() -> Value {
    let groups: Vec<Value> = GROUPS
        .iter()
        .map(|(name, replicas, cpu)| {
            json!({
                "groupName": name,
                "replicas": replicas,
                "minReplicas": 1,
                "maxReplicas": 100,
                "rayStartParams": {"metrics-export-port": "8080"},
                "template": template("ray-worker", cpu, *name == "gpu"),
            })
        })
        .collect();
    json!({
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {
            "name": CLUSTER, "namespace": "ml", "uid": "6c1f3b0e-8a55-4d0e-9a53-0d7b5f3f9c11",
            "generation": 7, "resourceVersion": "918273",
            "creationTimestamp": "2026-11-23T01:00:00Z",
            "labels": {"team": "ml-platform"},
        },
        "spec": {
            "rayVersion": "2.46.0",
            "enableInTreeAutoscaling": false,
            "headGroupSpec": {
                "serviceType": "ClusterIP",
                "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
                "template": template("ray-head", "4", false),
            },
            "workerGroupSpecs": groups,
        },
        "status": {"state": "ready", "readyWorkerReplicas": 98, "desiredWorkerReplicas": 99},
    })
}

fn time(seconds: i64) -> Time {
    Time(JiffTimestamp::from_second(seconds).unwrap_or(JiffTimestamp::UNIX_EPOCH))
}

/// A running pod as the API server returns it: full spec from the template, status with
/// conditions and container statuses.
fn running_pod(index: usize, node_type: &str, group: &str, replica_index: usize, cpu: &str) -> Pod {
    let mut template = template(
        if node_type == "head" {
            "ray-head"
        } else {
            "ray-worker"
        },
        cpu,
        group == "gpu",
    );
    let mut metadata = template.metadata.take().unwrap_or_default();
    let name = format!("{CLUSTER}-{group}-worker-{index:05x}");
    let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
    for (key, value) in [
        ("ray.io/cluster", CLUSTER.to_owned()),
        ("ray.io/node-type", node_type.to_owned()),
        ("ray.io/group", group.to_owned()),
        ("ray.io/is-ray-node", "yes".to_owned()),
        ("ray.io/identifier", format!("{CLUSTER}-{node_type}")),
        (
            "ray.io/worker-group-replica-index",
            replica_index.to_string(),
        ),
        ("app.kubernetes.io/name", "kuberay".to_owned()),
        ("app.kubernetes.io/created-by", "wasmray".to_owned()),
    ] {
        labels.insert(key.to_owned(), value);
    }
    metadata.name = Some(name.clone());
    metadata.generate_name = Some(format!("{CLUSTER}-{group}-worker-"));
    metadata.namespace = Some("ml".to_owned());
    metadata.uid = Some(format!("5d0c6a3e-0000-4000-8000-{index:012x}"));
    metadata.resource_version = Some(format!("{}", 900_000 + index));
    metadata.creation_timestamp = Some(time(NOW - 3600));
    metadata.owner_references = Some(vec![OwnerReference {
        api_version: "ray.io/v1".to_owned(),
        kind: "RayCluster".to_owned(),
        name: CLUSTER.to_owned(),
        uid: "6c1f3b0e-8a55-4d0e-9a53-0d7b5f3f9c11".to_owned(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    let mut spec = template.spec.take().unwrap_or_default();
    spec.node_name = Some(format!(
        "ip-10-0-{}-{}.us-west-2.compute.internal",
        index / 250,
        index % 250
    ));
    spec.restart_policy = Some("Never".to_owned());
    spec.scheduler_name = Some("default-scheduler".to_owned());
    let condition = |kind: &str| PodCondition {
        type_: kind.to_owned(),
        status: "True".to_owned(),
        last_transition_time: Some(time(NOW - 3500)),
        ..PodCondition::default()
    };
    let status = PodStatus {
        phase: Some("Running".to_owned()),
        pod_ip: Some(format!("10.1.{}.{}", index / 250, index % 250)),
        host_ip: Some(format!("10.0.{}.{}", index / 250, index % 250)),
        start_time: Some(time(NOW - 3590)),
        qos_class: Some("Guaranteed".to_owned()),
        conditions: Some(
            ["PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready", "PodScheduled"]
                .into_iter()
                .map(condition)
                .collect(),
        ),
        container_statuses: Some(vec![ContainerStatus {
            name: "ray-worker".to_owned(),
            ready: true,
            started: Some(true),
            restart_count: 0,
            image: "rayproject/ray-ml:2.46.0-py311-gpu".to_owned(),
            image_id: "docker.io/rayproject/ray-ml@sha256:3b0a8c1e4f5d6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d".to_owned(),
            container_id: Some(format!("containerd://{index:064x}")),
            state: Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(time(NOW - 3580)),
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }]),
        ..PodStatus::default()
    };
    Pod {
        metadata,
        spec: Some(spec),
        status: Some(status),
    }
}

/// 100 pods: the head and 99 workers (one short of the spec, so the answer creates one).
fn cluster_pods() -> Vec<Pod> {
    let mut pods = vec![running_pod(0, "head", "headgroup", 0, "4")];
    for (name, replicas, cpu) in GROUPS {
        let observed = if name == "cpu-small" {
            replicas - 1
        } else {
            replicas
        };
        for replica_index in 0..observed {
            pods.push(running_pod(pods.len(), "worker", name, replica_index, cpu));
        }
    }
    pods
}

/// The head Service, as a cluster whose pods run has it: the plugin asks for it before any
/// pod.
fn head_service() -> ObservedService {
    let port = |name: &str, port: i32| ServicePort {
        name: Some(name.to_owned()),
        port,
        ..ServicePort::default()
    };
    observed_service(&Service {
        metadata: ObjectMeta {
            name: Some(format!("{CLUSTER}-head-svc")),
            namespace: Some("ml".to_owned()),
            uid: Some("0b6f7c1e-5d2a-4c8e-9f0a-3e4d5c6b7a81".to_owned()),
            labels: Some(BTreeMap::from([
                ("ray.io/cluster".to_owned(), CLUSTER.to_owned()),
                ("ray.io/node-type".to_owned(), "head".to_owned()),
            ])),
            creation_timestamp: Some(time(NOW - 3_600)),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            ports: Some(vec![
                port("client", 10001),
                port("dashboard", 8265),
                port("gcs-server", 6379),
                port("metrics", 8080),
                port("serve", 8000),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// A call's input. `services` is what the controller observed: the head Service on an
/// existing cluster, nothing yet on a new one.
fn reconcile_input(
    parent: &str,
    pods: ObservedPods,
    services: Vec<ObservedService>,
) -> ReconcileInput {
    ReconcileInput {
        kind: "RayCluster".into(),
        parent: parent.to_owned(),
        pods,
        services,
        children: Vec::new(),
        related: Vec::new(),
        ray: Default::default(),
        failed_writes: Vec::new(),
        now: timestamp(JiffTimestamp::from_second(NOW).unwrap_or(JiffTimestamp::UNIX_EPOCH)),
        config: String::new(),
        host: HostFacts {
            operator_version: "bench".into(),
            feature_gates: Vec::new(),
            settings: Vec::new(),
        },
    }
}

fn startup(tokio: &Tokio) {
    let names: Vec<&str> = BUILTIN_PLUGINS.iter().map(|plugin| plugin.name).collect();
    let sizes: Vec<usize> = BUILTIN_PLUGINS
        .iter()
        .map(|plugin| plugin.bytes.len())
        .collect();
    println!("built-in plugins: {names:?}, component bytes: {sizes:?}");
    let cache_dir =
        std::env::temp_dir().join(format!("wasmray-bench-cache-{}", std::process::id()));
    let config = RuntimeConfig {
        cache_dir: Some(cache_dir.clone()),
        ..RuntimeConfig::default()
    };
    for label in [
        "cold (compile, fills the disk cache)",
        "warm (on-disk cache)",
    ] {
        let started = Instant::now();
        let runtime = Runtime::new(config.clone()).unwrap_or_else(|err| panic!("{err}"));
        let plugins = tokio
            .block_on(runtime.install_builtins())
            .unwrap_or_else(|err| panic!("{err}"));
        println!(
            "start-up {label}: {:.1} ms to ready with {} plugins ({:?} allocator)",
            started.elapsed().as_secs_f64() * 1000.0,
            plugins.len(),
            runtime.allocator()
        );
    }
    let _ = std::fs::remove_dir_all(cache_dir);
}

/// The single-threaded tokio runtime the benchmarks drive calls with.
fn current_thread() -> Tokio {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|err| panic!("{err}"))
}

/// A runtime with the default configuration and, if asked, the built-in plugins.
fn new_runtime(tokio: &Tokio, builtins: bool) -> Runtime {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap_or_else(|err| panic!("{err}"));
    if builtins {
        tokio
            .block_on(runtime.install_builtins())
            .unwrap_or_else(|err| panic!("{err}"));
    }
    runtime
}

/// Loads a component file and installs it under `name`.
fn install_file(tokio: &Tokio, runtime: &Runtime, name: &str, path: &str) {
    let plugin = tokio
        .block_on(runtime.load_file(name, std::path::Path::new(path)))
        .unwrap_or_else(|err| panic!("{path}: {err}"));
    runtime.registry().install(plugin);
}

/// The input of a call on an existing cluster as the controller builds it: the cached
/// one-pod tables concatenated.
fn cached_pods_input(parent: &str, cached: &[PodTable]) -> ReconcileInput {
    reconcile_input(
        parent,
        ObservedPods::from(PodTable::concat(cached)),
        vec![head_service()],
    )
}

/// The plugin to measure: `WASMRAY_BENCH_PLUGIN` names a built-in or example plugin or a component
/// file (`*.wasm`, e.g. a plugin rebuilt after a guest-side change, without rebuilding the
/// host); the default is the example reconciler.
fn bench_plugin(tokio: &Tokio, runtime: &Runtime) -> String {
    let chosen =
        std::env::var("WASMRAY_BENCH_PLUGIN").unwrap_or_else(|_| "example-reconciler".to_owned());
    // The examples are built for tests, not shipped: install them from their files.
    if let Some((name, path)) = test_plugins::EXAMPLES
        .iter()
        .find(|(name, _)| *name == chosen)
    {
        install_file(tokio, runtime, name, path);
        return chosen;
    }
    if !chosen.ends_with(".wasm") {
        return chosen;
    }
    install_file(tokio, runtime, "bench-file", &chosen);
    "bench-file".to_owned()
}

fn benches(c: &mut Criterion) {
    let tokio = current_thread();

    let runtime = new_runtime(&tokio, true);
    let plugin_name = bench_plugin(&tokio, &runtime);
    install_file(&tokio, &runtime, "noop", test_plugins::HOSTILE);
    let parent = ray_cluster().to_string();
    let pods = cluster_pods();
    // What the controller caches: one table per pod, concatenated per call.
    let cached: Vec<PodTable> = pods.iter().map(pod_table).collect();
    let table = PodTable::concat(&cached);
    let pods_json = serde_json::to_string(&pods).unwrap_or_default();
    println!(
        "input: parent JSON {} bytes; 100 pods as full JSON {} bytes; as the pod table {} text bytes and {} words",
        parent.len(),
        pods_json.len(),
        table.text.len(),
        table.pods.len()
            + table.pairs.len()
            + table.conditions.len()
            + table.container_statuses.len(),
    );
    let full = reconcile_input(&parent, ObservedPods::from(table), vec![head_service()]);
    let new_cluster = reconcile_input(&parent, ObservedPods::empty(), Vec::new());
    for (label, input) in [("100 pods", &full), ("new cluster", &new_cluster)] {
        let output = tokio
            .block_on(runtime.reconcile(&plugin_name, input))
            .unwrap_or_else(|err| panic!("{err}"));
        let pods_created: usize = output
            .create_pods
            .iter()
            .map(|set| set.replicas.len())
            .sum();
        let output_bytes: usize = output
            .create_pods
            .iter()
            .map(|set| set.template.len())
            .sum::<usize>()
            + output
                .apply
                .iter()
                .map(|object| object.object.len())
                .sum::<usize>()
            + output.status.as_ref().map_or(0, String::len);
        println!(
            "{label}: answer creates {pods_created} pods in {} pod sets, applies {}, deletes {}; output JSON {output_bytes} bytes",
            output.create_pods.len(),
            output.apply.len(),
            output.delete.len()
        );
    }

    // Where a call's time goes, from the host: the fixed cost of a fresh instance, then
    // a plugin that decides nothing (it only checks the parent is JSON), so the rest is
    // the crossing of the input and its drop in the guest.
    let noop_input = |input: &ReconcileInput| ReconcileInput {
        config: "noop".to_owned(),
        ..input.clone()
    };
    let (noop_full, noop_new) = (noop_input(&full), noop_input(&new_cluster));
    let mut group = c.benchmark_group("call");
    group.bench_function("instantiate-only", |b| {
        b.iter(|| tokio.block_on(runtime.instantiate(&plugin_name)))
    });
    group.bench_function("noop-new-cluster", |b| {
        b.iter(|| tokio.block_on(runtime.reconcile("noop", &noop_new)))
    });
    group.bench_function("noop-100-pods", |b| {
        b.iter(|| tokio.block_on(runtime.reconcile("noop", &noop_full)))
    });
    group.finish();

    let mut group = c.benchmark_group("reconcile");
    group.bench_function("100-pods", |b| {
        b.iter(|| {
            tokio.block_on(runtime.reconcile(&plugin_name, &cached_pods_input(&parent, &cached)))
        })
    });
    group.bench_function("100-pods-records-prebuilt", |b| {
        b.iter(|| tokio.block_on(runtime.reconcile(&plugin_name, &full)))
    });
    group.bench_function("new-cluster", |b| {
        b.iter(|| tokio.block_on(runtime.reconcile(&plugin_name, &new_cluster)))
    });
    group.finish();

    let mut group = c.benchmark_group("boundary");
    group.bench_function("100-pods-to-table", |b| {
        b.iter(|| {
            let mut table = PodTable::default();
            for pod in &pods {
                table.push(&pod_record(pod));
            }
            table
        })
    });
    group.bench_function("100-cached-pod-tables-concat", |b| {
        b.iter(|| PodTable::concat(&cached))
    });
    group.bench_function("100-pods-json-serialize-and-parse", |b| {
        b.iter(|| {
            let text = serde_json::to_string(&pods).unwrap_or_default();
            serde_json::from_str::<Vec<Pod>>(&text).map(|parsed| parsed.len())
        })
    });
    group.bench_function("parent-json-parse", |b| {
        b.iter(|| serde_json::from_str::<Value>(&parent).map(|value| value.is_object()))
    });
    group.finish();

    per_call_medians(&mut [
        (
            "instantiate only".to_owned(),
            Box::new(|| {
                if let Err(err) = tokio.block_on(runtime.instantiate(&plugin_name)) {
                    panic!("{err}");
                }
            }),
        ),
        (
            "no-op, new cluster".to_owned(),
            Box::new(|| reconcile_ok(&tokio, &runtime, "noop", &noop_new)),
        ),
        (
            "no-op, 100 pods".to_owned(),
            Box::new(|| reconcile_ok(&tokio, &runtime, "noop", &noop_full)),
        ),
        (
            format!("{plugin_name}, 100 pods (tables concatenated)"),
            Box::new(|| {
                let input = cached_pods_input(&parent, &cached);
                reconcile_ok(&tokio, &runtime, &plugin_name, &input);
            }),
        ),
        (
            format!("{plugin_name}, new cluster"),
            Box::new(|| reconcile_ok(&tokio, &runtime, &plugin_name, &new_cluster)),
        ),
    ]);

    // Last, so that the code of the runtimes it creates and drops is never mapped where
    // a profiler (WASMRAY_PERF_MAP) would attribute the sampled calls' frames to it.
    startup(&tokio);
}

criterion_group!(runtime_benches, benches);

/// A labelled call to time.
type Case<'a> = (String, Box<dyn FnMut() + 'a>);

/// Per-call medians, the figure the goals are stated in (criterion's line is a mean, which
/// this VM's long tail pulls up). The cases run interleaved, in rounds of 100 calls each,
/// so that the machine's drift over a run falls on all of them alike.
fn per_call_medians(cases: &mut [Case<'_>]) -> Vec<f64> {
    const ROUNDS: usize = 40;
    const CALLS_PER_ROUND: usize = 100;
    let mut samples = vec![Vec::with_capacity(ROUNDS * CALLS_PER_ROUND); cases.len()];
    for _ in 0..ROUNDS {
        for ((_, call), samples) in cases.iter_mut().zip(&mut samples) {
            for _ in 0..CALLS_PER_ROUND {
                let started = Instant::now();
                call();
                samples.push(started.elapsed());
            }
        }
    }
    let mut medians = Vec::with_capacity(cases.len());
    for ((label, _), mut samples) in cases.iter().zip(samples) {
        samples.sort();
        let at = |fraction: f64| {
            let index = ((samples.len() - 1) as f64 * fraction) as usize;
            samples[index].as_secs_f64() * 1e6
        };
        println!(
            "per call: {label:<48} median {:>7.1} us  p90 {:>7.1} us",
            at(0.5),
            at(0.9)
        );
        medians.push(at(0.5));
    }
    medians
}

/// `WASMRAY_BENCH_FLOOR=1`: what the new-cluster call costs whatever a RayCluster plugin
/// decides, as long as it reads the parent with the SDK's types and answers KubeRay's pods
/// as JSON: a fresh instance, the parent read, the answer's pods written, and the host's
/// check of the answer. Repeating a step 21 times against once inside one call isolates it
/// from the instance's fixed cost.
fn floor() {
    const REPEATED: usize = 21;
    let tokio = current_thread();
    let runtime = new_runtime(&tokio, true);
    install_file(&tokio, &runtime, "hostile", test_plugins::HOSTILE);
    // The repeated steps run on an engine of their own: an instance slot keeps resident
    // (and resets at every call) every page a call ever touched, so their large heaps
    // would slow the no-op that shares the module's slot.
    let measuring = new_runtime(&tokio, false);
    install_file(&tokio, &measuring, "hostile", test_plugins::HOSTILE);
    let parent = ray_cluster().to_string();
    let new_cluster = reconcile_input(&parent, ObservedPods::empty(), Vec::new());
    let answer = tokio
        .block_on(runtime.reconcile("raycluster", &new_cluster))
        .unwrap_or_else(|err| panic!("{err}"));
    let templates: Vec<&str> = answer
        .create_pods
        .iter()
        .map(|set| set.template.as_str())
        .collect();
    let pods = format!("[{}]", templates.join(","));
    let answer_bytes: usize = templates.iter().map(|template| template.len()).sum();
    println!(
        "floor: the new-cluster answer of the RayCluster plugin has {} pod templates, {answer_bytes} bytes",
        templates.len()
    );
    let mode = |config: String| ReconcileInput {
        config,
        ..new_cluster.clone()
    };
    // The no-op, then each measuring mode once and repeated, labelled by mode and count.
    let mut inputs = vec![("hostile, noop".to_owned(), mode("noop".to_owned()))];
    for (step, payload) in [
        ("parse-parent", &parent),
        ("skim-parent", &parent),
        ("write-pods", &pods),
    ] {
        for times in [1, REPEATED] {
            inputs.push((
                format!("hostile, {step} {times}"),
                mode(format!("{step} {times} {payload}")),
            ));
        }
    }
    // The host's one check of an answer: turning it into a write plan under the policy.
    let limits = AnswerLimits::default();
    let policy = WritePolicy {
        kinds: RayCluster::CHILD_KINDS,
        extra_kinds: &[],
        grants: RayCluster::ROLE_GRANTS,
        limits: &limits,
        pod_ceiling: None,
        pods_owned: 0,
    };
    let owner = OwnerReference {
        api_version: "ray.io/v1".into(),
        kind: "RayCluster".into(),
        name: "bench".into(),
        uid: "6c1f3b0e".into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let parent = plan::ParentView {
        api_version: "ray.io/v1",
        kind: "RayCluster",
        name: "bench",
        uid: "6c1f3b0e",
        namespace: "ml",
        owner: &owner,
        finalizers: &[],
        deleting: false,
        status: None,
    };
    let (tokio, runtime, measuring) = (&tokio, &runtime, &measuring);
    let mut cases: Vec<Case> = inputs
        .iter()
        .map(|(label, input)| -> Case {
            let engine = if input.config == "noop" {
                runtime
            } else {
                measuring
            };
            (
                label.clone(),
                Box::new(move || reconcile_ok(tokio, engine, "hostile", input)),
            )
        })
        .collect();
    let answer_check = || {
        if let Err(err) = plan::plan(answer.clone(), &parent, &NoChildren, &policy) {
            panic!("{err}");
        }
    };
    cases.push((
        "host check of the answer".to_owned(),
        Box::new(answer_check),
    ));
    let whole_call = || reconcile_ok(tokio, runtime, "raycluster", &new_cluster);
    cases.push(("raycluster, new cluster".to_owned(), Box::new(whole_call)));
    let medians = per_call_medians(&mut cases);
    let median = |label: &str| {
        cases
            .iter()
            .zip(&medians)
            .find(|((case, _), _)| case == label)
            .map_or(f64::NAN, |(_, median)| *median)
    };
    let per_step = |step: &str| {
        (median(&format!("hostile, {step} {REPEATED}")) - median(&format!("hostile, {step} 1")))
            / (REPEATED - 1) as f64
    };
    let (fixed, read, skim, write, check, whole) = (
        median("hostile, noop"),
        per_step("parse-parent"),
        per_step("skim-parent"),
        per_step("write-pods"),
        median("host check of the answer"),
        median("raycluster, new cluster"),
    );
    println!("floor: fresh instance, input in, empty answer out (no-op) {fixed:>7.1} us");
    println!("floor: read the parent into the SDK's types             {read:>7.1} us");
    println!("floor:   (only check that the parent is JSON            {skim:>7.1} us)");
    println!("floor: write the answer's pods as JSON                  {write:>7.1} us");
    println!("floor: host check of the answer                         {check:>7.1} us");
    // The no-op checks the parent is JSON once; a plugin reads it instead.
    let floor = fixed - skim + read + write + check;
    println!("floor: sum, before any decision                         {floor:>7.1} us");
    println!(
        "floor: the RayCluster plugin's whole call                {whole:>7.1} us, of which deciding {:.1} us",
        whole - floor
    );
}

/// A reconcile call that must succeed: a failing plugin would make the figures meaningless.
fn reconcile_ok(tokio: &Tokio, runtime: &Runtime, plugin: &str, input: &ReconcileInput) {
    if let Err(err) = tokio.block_on(runtime.reconcile(plugin, input)) {
        panic!("{plugin}: {err}");
    }
}

/// `WASMRAY_BENCH_AB=a.wasm,b.wasm,...`: compares builds of a reconciler plugin on both
/// inputs (per-call medians, interleaved), and exits. For guest-side changes: build the
/// plugin twice with `cargo build --release --target wasm32-wasip2 -p <plugin>`.
fn compare_builds(files: &str) {
    let tokio = current_thread();
    let runtime = new_runtime(&tokio, false);
    let builds: Vec<&str> = files.split(',').collect();
    for (index, file) in builds.iter().enumerate() {
        install_file(&tokio, &runtime, &format!("build-{index}"), file);
    }
    let parent = ray_cluster().to_string();
    let cached: Vec<PodTable> = cluster_pods().iter().map(pod_table).collect();
    let pods = cached_pods_input(&parent, &cached);
    let new_cluster = reconcile_input(&parent, ObservedPods::empty(), Vec::new());
    let mut cases: Vec<Case> = Vec::new();
    for (label, input) in [("100 pods", &pods), ("new cluster", &new_cluster)] {
        for (index, file) in builds.iter().enumerate() {
            let (tokio, runtime) = (&tokio, &runtime);
            let plugin = format!("build-{index}");
            cases.push((
                format!("{label}, {file}"),
                Box::new(move || reconcile_ok(tokio, runtime, &plugin, input)),
            ));
        }
    }
    per_call_medians(&mut cases);
}

fn main() {
    if let Ok(files) = std::env::var("WASMRAY_BENCH_AB") {
        compare_builds(&files);
        return;
    }
    if std::env::var_os("WASMRAY_BENCH_FLOOR").is_some_and(|value| value == "1") {
        floor();
        return;
    }
    runtime_benches();
    Criterion::default().configure_from_args().final_summary();
}

/// No cached children: a new cluster's answer prunes nothing and deletes nothing.
struct NoChildren;

impl plan::ChildIndex for NoChildren {
    fn owned(&self, _: &str, _: &str) -> Option<Vec<plan::OwnedChild>> {
        None
    }
    fn find(&self, _: &str, _: &str, _: &str) -> plan::Cached {
        plan::Cached::Absent
    }
}
