//! pod-runner: the kubelet of the test control plane's `ray-*` nodes. Every pod bound to them
//! runs for real, as local processes from the pinned Ray virtualenv: the pods of one RayCluster
//! share a network namespace of their own, each container has its own mount, UTS and PID
//! namespaces, and the pod's status follows its processes. `testcp up --pod-runner` starts it;
//! see tests/controlplane/pod-runner.md for what it changes and what it does not support.
//!
//! ```sh
//! pod-runner --kubeconfig KUBECONFIG --nodes ray-0 --state-dir DIR --pod-cidr 127.129.0.0/16 \
//!   --ray-venv VENV [--cluster-domain cluster.local] [--memory-budget BYTES]
//! ```

mod command;
mod hosts;
mod kubelet;
mod sandbox;
mod status;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Parser;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio_util::sync::CancellationToken;

/// Ray's object store per node unless the pod sets its own: small, since every node of every
/// cluster shares this machine's memory (Ray's default is 30% of it per node).
const DEFAULT_OBJECT_STORE: u64 = 256 << 20;

#[derive(Parser)]
#[command(about = "Runs the pods bound to the given nodes as local processes")]
struct Args {
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Nodes to play the kubelet for, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    nodes: Vec<String>,
    /// Pods' logs, temp dirs, volumes and hosts files; `ready` is created here once serving.
    #[arg(long)]
    state_dir: PathBuf,
    /// Where pod IPs come from; inside 127.0.0.0/8.
    #[arg(long, default_value = "127.129.0.0/16")]
    pod_cidr: String,
    /// The virtualenv whose `bin` comes first on every container's PATH.
    #[arg(long)]
    ray_venv: PathBuf,
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Memory the runner's pods may take together (estimated per pod); default: half of the
    /// machine's available memory at start.
    #[arg(long)]
    memory_budget: Option<u64>,
    /// Ray object store per node when the pod does not set one.
    #[arg(long, default_value_t = DEFAULT_OBJECT_STORE)]
    object_store_bytes: u64,
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("exec-pod") {
        let error = match sandbox::ExecPod::parse(&args[2..]) {
            Ok(exec) => sandbox::exec_pod(&exec),
            Err(error) => error,
        };
        eprintln!("pod-runner exec-pod: {error:#}");
        return std::process::ExitCode::from(127);
    }
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    // One thread: every child is forked from it, and `setpriv --pdeathsig` ties children to
    // the thread that forked them, which must live as long as the runner.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("pod-runner: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pod-runner: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let pod_cidr = parse_cidr(&args.pod_cidr)?;
    std::fs::create_dir_all(&args.state_dir)?;
    let ready = args.state_dir.join("ready");
    let _ = std::fs::remove_file(&ready);
    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(config)?;
    let host_ip = node_ip(&client, &args.nodes[0]).await?;
    let memory_budget = match args.memory_budget {
        Some(budget) => budget,
        None => available_memory()? / 2,
    };
    tracing::info!(memory_budget_mib = memory_budget >> 20, "memory budget");
    let executable = sandbox::pinned_executable(&args.state_dir)?;
    let runner = Arc::new(kubelet::Runner::new(
        client,
        kubelet::Config {
            executable,
            nodes: args.nodes,
            state_dir: std::path::absolute(&args.state_dir)?,
            venv: args.ray_venv,
            pod_cidr,
            cluster_domain: args.cluster_domain,
            memory_budget,
            object_store_bytes: args.object_store_bytes,
        },
        host_ip,
    ));
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        on_signal.cancel();
    });
    runner.run(ready, stop).await
}

fn parse_cidr(text: &str) -> anyhow::Result<(Ipv4Addr, u8)> {
    let (ip, prefix) = text
        .split_once('/')
        .with_context(|| format!("--pod-cidr {text}: not ADDRESS/PREFIX"))?;
    let ip: Ipv4Addr = ip.parse().with_context(|| format!("--pod-cidr {text}"))?;
    let prefix: u8 = prefix
        .parse()
        .with_context(|| format!("--pod-cidr {text}"))?;
    if !ip.is_loopback() || !(8..=30).contains(&prefix) {
        bail!("--pod-cidr {text}: must lie inside 127.0.0.0/8, prefix 8 to 30");
    }
    Ok((ip, prefix))
}

/// The node's InternalIP, reported as each pod's host IP.
async fn node_ip(client: &kube::Client, node: &str) -> anyhow::Result<String> {
    let node = kube::Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .get(node)
        .await
        .with_context(|| format!("reading node {node}"))?;
    Ok(node
        .status
        .and_then(|status| status.addresses)
        .into_iter()
        .flatten()
        .find(|address| address.type_ == "InternalIP")
        .map_or_else(|| "127.0.0.1".to_owned(), |address| address.address))
}

fn available_memory() -> anyhow::Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemAvailable:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib << 10)
        .context("MemAvailable missing from /proc/meminfo")
}
