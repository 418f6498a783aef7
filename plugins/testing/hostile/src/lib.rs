//! A hostile reconciler for the runtime's sandbox tests. Its configuration text picks
//! the misbehaviour:
//!
//! - `loop`: spins forever (deadline test);
//! - `memory-bomb`: allocates until the memory cap stops it;
//! - `panic <message>`: panics with the message (trap test);
//! - `malformed-status`, `malformed-object`, `malformed-deletion`: answers outside the
//!   contract (invalid JSON status, an object without kind, a deletion without uid);
//! - `probe <addr>`: tries the filesystem, environment, arguments, network (`addr`),
//!   clocks and randomness, and reports what it got in the status;
//! - `identify <text>`: answers a status `{"plugin":"hostile","id":<text>}` after logging
//!   to every channel (used by the swap and logging tests);
//! - `noop`: answers nothing to do, reading nothing but the configuration (used by the
//!   runtime benchmark to measure what crossing the boundary costs without a decision);
//! - `parse-parent <n> <json>`: parses `<json>` as a `RayCluster` `n` times and answers
//!   nothing to do; `skim-parent <n> <json>` only checks that it is JSON, `n` times;
//! - `write-pods <n> <json>`: parses `<json>` (an array of pods) once, then turns the pods
//!   into pod sets `n` times and answers the last ones;
//! - `hold-finalizer <name>`: asks for finalizer `<name>` and never releases it (its
//!   deletion verdict is always "not done");
//! - `generate-secret <name> <key> <bytes>`: asks for a generated Secret;
//! - `stack-bomb`: recurses until the stack runs out;
//!
//! and, for the host's write policy (what an answer may make the host write):
//!
//! - `pod-bomb <n>`: one pod set of `n` replicas;
//! - `many-objects <n>`: `n` ConfigMaps;
//! - `apply <json>`: applies the object `<json>` as it is (e.g. a ClusterRoleBinding);
//! - `delete <apiVersion> <kind> <name> <uid>`: deletes that object;
//! - `status-churn`: a status that differs on every call (it holds the call's time), and
//!   asks to be called again after 1 ms;
//! - `slow <n>`: spins `n` iterations, then asks to be called again after 1 ms;
//! - `big-status <bytes>`: a status of about `<bytes>` bytes.
//!
//! `validate-config` refuses a configuration that starts with `invalid-config`.
//!
//! The last two let the runtime benchmark time, inside a component, what any reconciler
//! that reads a parent and answers pods pays for JSON (`n` = 21 against `n` = 1).
//!
//! It is never embedded in the operator binary.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::IgnoredAny;
use wasmray_plugin_sdk::k8s_openapi::api::core::v1::Pod;
use wasmray_plugin_sdk::reconciler::{Decision, FinalizerIntent, Reconciler, Request};
use wasmray_plugin_sdk::serde_json::json;
use wasmray_plugin_sdk::{
    DesiredObject, PluginError, PodReplica, WriteMode, crds, export_reconciler, from_json, log,
};

pub struct Hostile;

impl Reconciler for Hostile {
    // No mode reads the parent: it is only checked to be JSON.
    type Parent = IgnoredAny;
    const KINDS: &'static [&'static str] = &["RayCluster", "RayJob", "RayService"];

    fn validate_config(config: &str) -> Result<(), PluginError> {
        if config.starts_with("invalid-config") {
            return Err(PluginError::new(
                "InvalidConfig",
                format!("refused at load: {config:?}"),
            ));
        }
        Ok(())
    }

    fn reconcile(request: Request<IgnoredAny>) -> Result<Decision, PluginError> {
        let (mode, argument) = request
            .config
            .split_once(' ')
            .unwrap_or((request.config.as_str(), ""));
        let mut decision = Decision::default();
        match mode {
            "noop" => {}
            "parse-parent" => {
                let (times, parent) = repetitions(argument)?;
                for _ in 0..times {
                    black_box(from_json::<crds::RayCluster>("parent", black_box(parent))?);
                }
            }
            "skim-parent" => {
                let (times, parent) = repetitions(argument)?;
                for _ in 0..times {
                    black_box(from_json::<IgnoredAny>("parent", black_box(parent))?);
                }
            }
            "write-pods" => {
                let (times, pods) = repetitions(argument)?;
                let pods: Vec<Pod> = from_json("pods", pods)?;
                for _ in 0..times {
                    decision = Decision::default();
                    for pod in &pods {
                        let replica = PodReplica {
                            name: None,
                            labels: Vec::new(),
                            annotations: Vec::new(),
                        };
                        decision.create_pods("bench", pod, vec![replica])?;
                    }
                }
            }
            "loop" => spin_forever(),
            "memory-bomb" => exhaust_memory(),
            "panic" => panic!("{argument}"),
            "malformed-status" => decision.output.status = Some("{\"state\": ready".to_owned()),
            "malformed-object" => decision.output.apply.push(DesiredObject {
                object: json!({"apiVersion": "v1", "metadata": {"name": "no-kind"}}).to_string(),
                mode: WriteMode::Apply,
            }),
            "malformed-deletion" => decision.delete("v1", "Pod", "some-pod", "", "no uid"),
            "hold-finalizer" => {
                decision.finalizer(argument, FinalizerIntent::Add);
            }
            "generate-secret" => {
                let mut words = argument.split(' ');
                let (Some(name), Some(key), Some(bytes)) =
                    (words.next(), words.next(), words.next())
                else {
                    return Err(PluginError::new(
                        "InvalidConfig",
                        "expected `generate-secret <name> <key> <bytes>`",
                    ));
                };
                let bytes = bytes
                    .parse()
                    .map_err(|_| PluginError::new("InvalidConfig", "bytes must be a number"))?;
                decision.generated_secret(name, key, bytes, Vec::new());
            }
            "stack-bomb" => {
                black_box(recurse(black_box(1)));
            }
            "pod-bomb" => {
                let replicas: usize = number(argument)?;
                let template = json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"generateName": "hostile-bomb-"},
                    "spec": {"containers": [{"name": "c", "image": "bomb"}]}});
                let replica = PodReplica {
                    name: None,
                    labels: Vec::new(),
                    annotations: Vec::new(),
                };
                decision.create_pods("bomb", &template, vec![replica; replicas])?;
            }
            "many-objects" => {
                for index in 0..number::<usize>(argument)? {
                    let map = json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": format!("hostile-{index}")}});
                    decision.apply(&map, WriteMode::CreateOnly)?;
                }
            }
            "apply" => decision.output.apply.push(DesiredObject {
                object: argument.to_owned(),
                mode: WriteMode::CreateOnly,
            }),
            "delete" => {
                let words: Vec<&str> = argument.split(' ').collect();
                let [api_version, kind, name, uid] = words[..] else {
                    return Err(PluginError::new(
                        "InvalidConfig",
                        "expected `delete <apiVersion> <kind> <name> <uid>`",
                    ));
                };
                decision.delete(api_version, kind, name, uid, "hostile");
            }
            "status-churn" => {
                let now = &request.now;
                decision
                    .set_status(&json!({"reason": format!("{}.{:09}", now.seconds, now.nanos)}))?;
                decision.requeue_after(Duration::from_millis(1));
            }
            "slow" => {
                let mut counter = 0u64;
                for _ in 0..number::<u64>(argument)? {
                    counter = black_box(counter.wrapping_add(1));
                }
                decision.requeue_after(Duration::from_millis(1));
            }
            "big-status" => {
                let bytes: usize = number(argument)?;
                decision.set_status(&json!({"reason": "x".repeat(bytes)}))?;
            }
            "probe" => decision.set_status(&probe_sandbox(argument))?,
            "identify" => {
                log::info(&format!("identify {argument} via the logging import"));
                println!("identify {argument} via stdout");
                eprintln!("identify {argument} via stderr");
                decision.set_status(&json!({"plugin": "hostile", "id": argument}))?;
            }
            other => {
                return Err(PluginError::new(
                    "InvalidConfig",
                    format!("unknown mode {other:?}"),
                ));
            }
        }
        Ok(decision)
    }
}

export_reconciler!(Hostile);

/// The number a mode takes.
fn number<T: std::str::FromStr>(argument: &str) -> Result<T, PluginError> {
    argument
        .trim()
        .parse()
        .map_err(|_| PluginError::new("InvalidConfig", format!("{argument:?} is not a number")))
}

/// Recursion the compiler cannot turn into a loop: each frame keeps a buffer alive.
fn recurse(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    let frame = black_box([depth; 64]);
    recurse(depth + 1).wrapping_add(frame[0])
}

/// `<n> <rest>` of the measuring modes.
fn repetitions(argument: &str) -> Result<(usize, &str), PluginError> {
    argument
        .split_once(' ')
        .and_then(|(times, rest)| Some((times.parse().ok()?, rest)))
        .ok_or_else(|| PluginError::new("InvalidConfig", "expected `<n> <json>`"))
}

fn spin_forever() -> ! {
    let mut counter = 0u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

fn exhaust_memory() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Touch the pages so the allocation is real, not just reserved.
        hoard.push(vec![0xA5; 1 << 20]);
        black_box(&hoard);
    }
}

/// What the sandbox let the plugin see.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SandboxReport {
    read_root_dir: String,
    read_etc_hostname: String,
    write_tmp_file: String,
    current_dir: String,
    env_vars: Vec<(String, String)>,
    args: Vec<String>,
    tcp_connect: String,
    wall_clock_unix_nanos: u128,
    monotonic_elapsed_nanos: u128,
    random_hash: u64,
}

fn outcome<T: std::fmt::Debug, E: std::fmt::Display>(result: Result<T, E>) -> String {
    match result {
        Ok(value) => format!("ok: {value:?}"),
        Err(err) => format!("error: {err}"),
    }
}

fn probe_sandbox(tcp_address: &str) -> SandboxReport {
    let started = Instant::now();
    let read_root_dir = outcome(std::fs::read_dir("/").map(|entries| entries.count()));
    let read_etc_hostname = outcome(std::fs::read_to_string("/etc/hostname"));
    let write_tmp_file = outcome(std::fs::write("/tmp/wasmray-probe", b"escaped"));
    let current_dir = outcome(std::env::current_dir());
    let tcp_connect = outcome(std::net::TcpStream::connect(tcp_address));
    let wall_clock_unix_nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    // std's RandomState seeds from the host's randomness source: a fixed source makes
    // this hash the same on every call.
    let random_hash = RandomState::new().hash_one("wasmray");
    SandboxReport {
        read_root_dir,
        read_etc_hostname,
        write_tmp_file,
        current_dir,
        env_vars: std::env::vars().collect(),
        args: std::env::args().collect(),
        tcp_connect,
        wall_clock_unix_nanos,
        monotonic_elapsed_nanos: started.elapsed().as_nanos(),
        random_hash,
    }
}
