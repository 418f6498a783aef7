//! Acceptance tests of the plugin runtime with hostile plugins built in the workspace.

use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use wasmray::builtin::{BUILTIN_PLUGINS, test_plugins};
use wasmray::controller::ParentKind;
use wasmray::controller::plan;
use wasmray::controller::wit::{FailedWrite, WriteOperation};
use wasmray::controller::write_policy::{AnswerLimits, KindRef, WritePolicy};
use wasmray::runtime::bindings::types::HostFacts;
use wasmray::runtime::{
    CallError, CodeSource, LoadError, Plugin, ReconcileInput, Role, Runtime, RuntimeConfig,
};
use wasmray_crds::RayCluster;

const DEADLINE: Duration = Duration::from_millis(300);
const MEMORY_LIMIT: usize = 48 << 20;

struct Fixture {
    runtime: Runtime,
    good: Arc<Plugin>,
    hostile: Arc<Plugin>,
}

/// One runtime for all tests: compiling the plugins once keeps the suite fast.
async fn fixture() -> &'static Fixture {
    static FIXTURE: OnceCell<Fixture> = OnceCell::const_new();
    FIXTURE
        .get_or_init(|| async {
            let runtime = Runtime::new(RuntimeConfig {
                deadline: DEADLINE,
                memory_limit: MEMORY_LIMIT,
                ..RuntimeConfig::default()
            })
            .unwrap();
            let good = runtime
                .load("example-reconciler", &example("example-reconciler"))
                .await
                .unwrap();
            let hostile = runtime
                .load_file("hostile", Path::new(test_plugins::HOSTILE))
                .await
                .unwrap();
            Fixture {
                runtime,
                good,
                hostile,
            }
        })
        .await
}

/// The bytes of an example plugin (built for tests, not shipped in the binary).
fn example(name: &str) -> Vec<u8> {
    let (_, path) = test_plugins::EXAMPLES
        .iter()
        .find(|(example, _)| *example == name)
        .unwrap();
    std::fs::read(path).unwrap()
}

fn input(config: &str) -> ReconcileInput {
    let parent = json!({
        "apiVersion": "ray.io/v1", "kind": "RayCluster",
        "metadata": {"name": "sandbox", "namespace": "default", "generation": 1},
        "spec": {
            "headGroupSpec": {"template": {"spec": {"containers": [{"name": "ray-head", "image": "rayproject/ray:2.46.0"}]}}},
            "workerGroupSpecs": [{"groupName": "cpu", "replicas": 2, "minReplicas": 1, "maxReplicas": 4,
                "template": {"spec": {"containers": [{"name": "ray-worker", "image": "rayproject/ray:2.46.0"}]}}}]
        }
    });
    ReconcileInput {
        kind: "RayCluster".into(),
        parent: parent.to_string(),
        pods: wasmray::runtime::bindings::types::ObservedPods::empty(),
        services: Vec::new(),
        children: Vec::new(),
        related: Vec::new(),
        ray: Default::default(),
        failed_writes: Vec::new(),
        now: wasmray::runtime::bindings::types::Timestamp {
            seconds: 1_795_405_982,
            nanos: 0,
        },
        config: config.into(),
        host: HostFacts {
            operator_version: "test".into(),
            feature_gates: Vec::new(),
            settings: Vec::new(),
        },
    }
}

/// After any failure, a good plugin still answers.
async fn assert_good_plugin_serves(fixture: &Fixture) {
    let output = fixture
        .runtime
        .reconcile_with(&fixture.good, &input(""))
        .await
        .unwrap();
    assert_eq!(output.create_pods.len(), 2, "head and one worker group");
}

fn assert_names_plugin(err: &CallError, plugin: &Plugin) {
    let text = err.to_string();
    assert!(text.contains(&plugin.id().name), "{text}");
    assert!(text.contains(&plugin.id().digest), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_fails_with_deadline_error_near_its_deadline() {
    let fixture = fixture().await;
    let started = Instant::now();
    let err = fixture
        .runtime
        .reconcile_with(&fixture.hostile, &input("loop"))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(err, CallError::DeadlineExceeded { deadline, .. } if deadline == DEADLINE),
        "{err:?}"
    );
    assert_names_plugin(&err, &fixture.hostile);
    // "About its deadline": generous upper bound for a loaded 2-core machine.
    assert!(elapsed >= DEADLINE, "{elapsed:?}");
    assert!(elapsed < DEADLINE + Duration::from_secs(2), "{elapsed:?}");
    assert_good_plugin_serves(fixture).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_fails_with_memory_limit_error() {
    let fixture = fixture().await;
    let err = fixture
        .runtime
        .reconcile_with(&fixture.hostile, &input("memory-bomb"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::MemoryLimit { limit_bytes, .. } if limit_bytes == MEMORY_LIMIT),
        "{err:?}"
    );
    assert_names_plugin(&err, &fixture.hostile);
    assert_good_plugin_serves(fixture).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_fails_with_trap_error_carrying_the_message() {
    let fixture = fixture().await;
    let err = fixture
        .runtime
        .reconcile_with(&fixture.hostile, &input("panic the-marker-4711 went wrong"))
        .await
        .unwrap_err();
    match &err {
        CallError::Trap { message, .. } => {
            assert!(message.contains("the-marker-4711 went wrong"), "{message}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_names_plugin(&err, &fixture.hostile);
    assert_good_plugin_serves(fixture).await;
}

/// Unbounded recursion ends in a trap that says it ran out of stack, and only this call
/// fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_overflow_fails_the_call_and_says_so() {
    let fixture = fixture().await;
    let err = fixture
        .runtime
        .reconcile_with(&fixture.hostile, &input("stack-bomb"))
        .await
        .unwrap_err();
    match &err {
        CallError::Trap { message, .. } => {
            assert!(message.starts_with("stack overflow"), "{message}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_names_plugin(&err, &fixture.hostile);
    assert_good_plugin_serves(fixture).await;
}

/// The runtime returns an answer as the plugin gave it; the host checks it once, where it
/// becomes a write plan, and the error names the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_output_is_refused_by_the_plan_with_the_field() {
    let fixture = fixture().await;
    for (mode, expected) in [
        ("malformed-status", "status: not JSON"),
        (
            "malformed-object",
            "apply[0].object: apiVersion and kind are required",
        ),
        ("malformed-deletion", "delete[0].uid: must not be empty"),
    ] {
        let answer = fixture
            .runtime
            .reconcile_with(&fixture.hostile, &input(mode))
            .await
            .unwrap();
        let error = with_policy(|policy| plan::plan(answer, &parent_view(), &NoChildren, policy))
            .unwrap_err();
        assert!(error.to_string().contains(expected), "{mode}: {error}");
        assert_good_plugin_serves(fixture).await;
    }
}

fn parent_view() -> plan::ParentView<'static> {
    static OWNER: std::sync::LazyLock<OwnerReference> =
        std::sync::LazyLock::new(|| OwnerReference {
            api_version: "ray.io/v1".into(),
            kind: "RayCluster".into(),
            name: "rc".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        });
    plan::ParentView {
        api_version: "ray.io/v1",
        kind: "RayCluster",
        name: "rc",
        uid: "u",
        namespace: "ns",
        owner: &OWNER,
        finalizers: &[],
        deleting: false,
        status: None,
    }
}

struct NoChildren;

impl plan::ChildIndex for NoChildren {
    fn owned(&self, _: &str, _: &str) -> Option<Vec<plan::OwnedChild>> {
        None
    }
    fn find(&self, _: &str, _: &str, _: &str) -> plan::Cached {
        plan::Cached::KindNotWatched
    }
}

/// A RayCluster's write policy with the defaults, plus the ConfigMap the contract-0.2 test
/// plugin writes (as a platform team would allow it in the plugin's binding).
fn with_policy<T>(f: impl FnOnce(&WritePolicy<'_>) -> T) -> T {
    let limits = AnswerLimits::default();
    let extra = [KindRef::new("v1", "ConfigMap")];
    f(&WritePolicy {
        kinds: RayCluster::CHILD_KINDS,
        extra_kinds: &extra,
        grants: RayCluster::ROLE_GRANTS,
        limits: &limits,
        pod_ceiling: None,
        pods_owned: 0,
    })
}

/// A reconciler built against contract 0.2.0 still loads and serves: it gets the 0.3.0
/// input without what 0.2.0 lacks (the last failed pod write under its 0.2.0 extension
/// key), and its answer asks for nothing 0.2.0 could not ask for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_0_2_reconciler_still_loads_and_serves() {
    let runtime = &fixture().await.runtime;
    let old = runtime
        .load_file("contract-0-2", Path::new(test_plugins::CONTRACT_0_2))
        .await
        .unwrap();
    assert_eq!(old.contract(), "0.2.0");
    assert_eq!(old.role(), Role::Reconciler);
    assert_eq!(old.kinds(), ["RayCluster"]);
    runtime.validate_config(&old, "anything").await.unwrap();

    let mut call = input("from the 0.3.0 host");
    call.failed_writes.push(FailedWrite {
        operation: WriteOperation::Create,
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: "rc-head-".into(),
        labels: vec![("ray.io/node-type".into(), "head".into())],
        message: "pods is forbidden: exceeded quota".into(),
    });
    let answer = runtime.reconcile_with(&old, &call).await.unwrap();
    let echo: Value = serde_json::from_str(&answer.apply[0].object).unwrap();
    assert_eq!(echo["metadata"]["name"], "sandbox-contract-0-2");
    let data = &echo["data"];
    assert_eq!(
        (&data["contract"], &data["config"], &data["pods"]),
        (&json!("0.2.0"), &json!("from the 0.3.0 host"), &json!("0"))
    );
    let failure: Value = serde_json::from_str(data["podWriteFailure"].as_str().unwrap()).unwrap();
    assert_eq!(
        failure,
        json!({"operation": "create", "nodeType": "head",
               "message": "pods is forbidden: exceeded quota"})
    );
    assert!(answer.finalizers.is_empty() && answer.generated_secrets.is_empty());
    // Its plan is like any other's.
    let planned =
        with_policy(|policy| plan::plan(answer, &parent_view(), &NoChildren, policy)).unwrap();
    assert_eq!(planned.objects.len(), 1);

    let err = runtime
        .reconcile_with(&old, &input("refuse"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Refused { reason, .. } if reason == "Refused"),
        "{err:?}"
    );
}

/// `validate-config` runs at load: a configuration the plugin refuses is a typed load
/// error that names the plugin and its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_configuration_is_a_load_error() {
    let fixture = fixture().await;
    fixture
        .runtime
        .validate_config(&fixture.hostile, "noop")
        .await
        .unwrap();
    let err = fixture
        .runtime
        .validate_config(&fixture.hostile, "invalid-config please")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LoadError::Config { reason, .. } if reason == "InvalidConfig"),
        "{err:?}"
    );
    assert!(err.to_string().contains("sha256:"), "{err}");
    assert!(err.to_string().contains("invalid-config please"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_refusal_and_wrong_kind_are_typed() {
    let fixture = fixture().await;
    let err = fixture
        .runtime
        .reconcile_with(&fixture.hostile, &input("no-such-mode"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Refused { reason, .. } if reason == "InvalidConfig"),
        "{err:?}"
    );
    let mut job = input("");
    job.kind = "RayJob".into();
    let err = fixture
        .runtime
        .reconcile_with(&fixture.good, &job)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Refused { reason, .. } if reason == "UnsupportedKind"),
        "{err:?}"
    );
    assert_eq!(fixture.good.kinds(), ["RayCluster"]);
}

/// The modes the runtime benchmark's floor uses: they must really read and answer what they
/// are given, or the figures measure nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measuring_modes_read_and_answer_what_they_are_given() {
    let fixture = fixture().await;
    let call = |config: String| async move {
        fixture
            .runtime
            .reconcile_with(&fixture.hostile, &input(&config))
            .await
    };
    let pods = json!([
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "a-"},
         "spec": {"containers": [{"name": "ray", "image": "rayproject/ray:2.46.0"}]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "b-"},
         "spec": {"containers": [{"name": "ray", "image": "rayproject/ray:2.46.0",
                  "command": ["/bin/bash", "-c", "echo \"quoted\"\nnext line"]}]}}
    ]);
    let output = call(format!("write-pods 3 {pods}")).await.unwrap();
    let answered: Vec<Value> = output
        .create_pods
        .iter()
        .map(|set| serde_json::from_str(&set.template).unwrap())
        .collect();
    assert_eq!(Value::from(answered), pods);

    let parent = input("").parent;
    for mode in ["parse-parent", "skim-parent"] {
        let output = call(format!("{mode} 2 {parent}")).await.unwrap();
        assert!(output.create_pods.is_empty() && output.status.is_none());
    }
    let err = call(r#"parse-parent 1 {"spec": 5}"#.to_owned())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Refused { reason, message, .. }
            if reason == "InvalidInput" && message.contains("parent")),
        "{err:?}"
    );
    let err = call("write-pods many []".to_owned()).await.unwrap_err();
    assert!(
        matches!(&err, CallError::Refused { reason, .. } if reason == "InvalidConfig"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_gives_no_filesystem_env_network_clock_or_randomness() {
    let fixture = fixture().await;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap();
    let probe = |fixture: &'static Fixture| async move {
        let output = fixture
            .runtime
            .reconcile_with(&fixture.hostile, &input(&format!("probe {address}")))
            .await
            .unwrap();
        serde_json::from_str::<Value>(&output.status.unwrap()).unwrap()
    };
    let report = probe(fixture).await;
    for field in [
        "readRootDir",
        "readEtcHostname",
        "writeTmpFile",
        "tcpConnect",
    ] {
        let outcome = report[field].as_str().unwrap();
        assert!(outcome.starts_with("error"), "{field}: {outcome}");
    }
    assert!(
        matches!(listener.accept(), Err(err) if err.kind() == std::io::ErrorKind::WouldBlock),
        "the plugin reached the host's listener"
    );
    let host_cwd = std::env::current_dir().unwrap();
    assert!(
        !report["currentDir"]
            .as_str()
            .unwrap()
            .contains(host_cwd.to_str().unwrap()),
        "{report}"
    );
    assert_eq!(report["envVars"], json!([]), "no environment");
    assert!(report["args"].as_array().unwrap().len() <= 1, "{report}");
    assert_eq!(
        report["wallClockUnixNanos"],
        json!(0),
        "wall clock fixed at the epoch"
    );
    assert_eq!(
        report["monotonicElapsedNanos"],
        json!(0),
        "monotonic clock stopped"
    );
    let again = probe(fixture).await;
    assert_eq!(
        report["randomHash"], again["randomHash"],
        "randomness is a fixed sequence, not the host's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_a_plugin_under_load_fails_no_call() {
    let fixture = fixture().await;
    let runtime = &fixture.runtime;
    let registry = runtime.registry();
    registry.install(Arc::clone(&fixture.good));
    // Both plugins answer this input; the status tells which one did.
    let request = Arc::new(input("identify v2"));
    let is_new = |status: &Option<String>| status.as_deref().is_some_and(|s| s.contains("\"v2\""));

    let in_flight = registry.get("example-reconciler").unwrap();
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let request = Arc::clone(&request);
            tokio::spawn(async move {
                let runtime = &fixture.runtime;
                let mut saw_new = false;
                for _ in 0..60 {
                    let output = runtime
                        .reconcile("example-reconciler", &request)
                        .await
                        .unwrap();
                    let new = is_new(&output.status);
                    assert!(new || !saw_new, "a call went back to the old plugin");
                    saw_new |= new;
                }
                saw_new
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The new version: the hostile plugin's bytes under the good plugin's name.
    let replacement = runtime
        .load(
            "example-reconciler",
            &std::fs::read(test_plugins::HOSTILE).unwrap(),
        )
        .await
        .unwrap();
    let previous = registry.install(replacement).unwrap();
    assert_eq!(previous.id(), fixture.good.id());
    for caller in callers {
        caller.await.unwrap();
    }
    let after = runtime
        .reconcile("example-reconciler", &request)
        .await
        .unwrap();
    assert!(is_new(&after.status), "later calls see the new version");
    // A call that resolved the old plugin before the swap still runs the old one.
    let old = runtime.reconcile_with(&in_flight, &request).await.unwrap();
    assert!(!is_new(&old.status));
    registry.remove("example-reconciler");
}

#[tokio::test]
async fn plugin_logs_and_output_reach_tracing_with_the_plugin_name() {
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let fixture = fixture().await;
    fixture
        .runtime
        .reconcile_with(&fixture.hostile, &input("identify log-check"))
        .await
        .unwrap();
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    for line in [
        "identify log-check via the logging import",
        "identify log-check via stdout",
        "identify log-check via stderr",
    ] {
        let found = logs
            .lines()
            .find(|logged| logged.contains(line))
            .unwrap_or_else(|| panic!("{line:?} not in {logs}"));
        assert!(found.contains("plugin=hostile"), "{found}");
        assert!(found.contains(&fixture.hostile.id().digest), "{found}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_errors_are_typed() {
    let runtime = &fixture().await.runtime;
    let err = runtime
        .load_file("missing", Path::new("/nonexistent/plugin.wasm"))
        .await
        .unwrap_err();
    assert!(matches!(err, LoadError::Read { .. }), "{err:?}");
    let err = runtime
        .load("garbage", b"not a component")
        .await
        .unwrap_err();
    assert!(matches!(err, LoadError::Compile { .. }), "{err:?}");
    assert!(err.to_string().contains("sha256:"), "{err}");
    // A reconciler built against an earlier contract: refused with both versions named.
    let earlier = r#"(component
        (instance $reconcile)
        (export "wasmray:plugin/reconcile@0.1.0" (instance $reconcile)))"#;
    let err = runtime
        .load("earlier", earlier.as_bytes())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LoadError::ContractVersion { found, served, .. }
            if found == "0.1.0" && served == "0.3.0 or 0.2.0"),
        "{err:?}"
    );
    assert!(err.to_string().contains("rebuild it"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtins_load_with_their_roles_and_the_disk_cache_serves_a_restart() {
    let cache_dir = std::env::temp_dir().join(format!("wasmray-cache-test-{}", std::process::id()));
    let config = RuntimeConfig {
        cache_dir: Some(cache_dir.clone()),
        ..RuntimeConfig::default()
    };
    let first = Runtime::new(config.clone()).unwrap();
    let bytes = example("example-scheduler");
    let compiled = first.load("example-scheduler", &bytes).await.unwrap();
    assert_eq!(compiled.code_source(), CodeSource::Compiled);
    let restarted = Runtime::new(config).unwrap();
    let cached = restarted.load("example-scheduler", &bytes).await.unwrap();
    assert_eq!(cached.code_source(), CodeSource::Disk);
    assert_eq!(cached.role(), Role::Scheduler);
    std::fs::remove_dir_all(&cache_dir).unwrap();

    let installed = restarted.install_builtins().await.unwrap();
    let shipped: Vec<(&str, Role)> = installed
        .iter()
        .map(|plugin| (plugin.id().name.as_str(), plugin.role()))
        .collect();
    assert_eq!(
        shipped,
        [
            ("raycluster", Role::Reconciler),
            ("rayjob", Role::Reconciler),
            ("rayservice", Role::Reconciler),
            ("ray-default", Role::Autoscaler),
            ("warm-pool", Role::Autoscaler),
            ("volcano", Role::Scheduler),
            ("yunikorn", Role::Scheduler),
            ("scheduler-plugins", Role::Scheduler),
            ("kai-scheduler", Role::Scheduler),
            ("kubernetes-was", Role::Scheduler)
        ]
    );
    assert_eq!(
        BUILTIN_PLUGINS.iter().map(|p| p.name).collect::<Vec<_>>(),
        shipped.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
        "the examples are not shipped in the binary"
    );
    for (name, role) in [
        ("example-reconciler", Role::Reconciler),
        ("example-scheduler", Role::Scheduler),
        ("example-autoscaler", Role::Autoscaler),
    ] {
        let plugin = restarted.load(name, &example(name)).await.unwrap();
        assert_eq!(plugin.role(), role, "{name}");
        restarted.registry().install(plugin);
    }
    let err = restarted
        .reconcile("example-scheduler", &input(""))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::WrongRole { .. }), "{err:?}");
}
