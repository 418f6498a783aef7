//! The real operator binary (`wasmray::cli::main`, built in this package as
//! `wasmray-e2e-host`) run as a subprocess, for tests that kill it, run two of it, or check
//! its endpoints. Cargo gives the binary's path only to the package's tests
//! (`env!("CARGO_BIN_EXE_wasmray-e2e-host")`), so they pass it in.
//!
//! `WASMRAY_E2E_OPERATOR=<path>` runs another build instead, e.g. a release build for
//! timings (a debug build is several times slower), or a copy that a concurrent build in a
//! shared target directory cannot replace mid-run.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// An operator binary to run instead of the one the test passes.
pub const OPERATOR_ENV: &str = "WASMRAY_E2E_OPERATOR";

/// How long the operator may take to serve `/healthz` (a cold plugin cache compiles the
/// built-in plugins first).
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// Compiled plugin code shared by every operator the tests start, across runs, so only the
/// first start compiles.
pub fn plugin_cache_dir() -> PathBuf {
    std::env::temp_dir().join("wasmray-e2e-deploy-plugins")
}

/// A free loopback port (the operator binds it right after).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// How to start one operator process.
pub struct OperatorCommand<'a> {
    /// `env!("CARGO_BIN_EXE_wasmray-e2e-host")`; `WASMRAY_E2E_OPERATOR` overrides it.
    pub binary: &'a Path,
    pub kubeconfig: &'a Path,
    /// The only namespace it watches.
    pub namespace: &'a str,
    /// `POD_NAME`, the start of its leader-election identity; also names its log file.
    pub name: &'a str,
    /// Where its log (stdout and stderr) goes.
    pub log_dir: &'a Path,
    /// Flags after the common ones (which set the namespace, the endpoint address, the
    /// plugin cache and `--reconcile-concurrency=4`; a later flag wins).
    pub args: &'a [String],
}

/// A running operator process; killed (SIGKILL) when dropped.
pub struct Operator {
    child: Child,
    /// Its metrics and health endpoints.
    pub address: SocketAddr,
    pub log: PathBuf,
}

impl Operator {
    /// Starts the process and returns once it serves `/healthz`.
    pub async fn start(command: OperatorCommand<'_>) -> anyhow::Result<Operator> {
        std::fs::create_dir_all(command.log_dir)?;
        let address: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let log = command.log_dir.join(format!("{}.log", command.name));
        let log_file = std::fs::File::create(&log)?;
        let binary = std::env::var_os(OPERATOR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| command.binary.to_owned());
        let child = Command::new(&binary)
            .args([
                format!("--watch-namespace={}", command.namespace),
                format!("--metrics-addr={address}"),
                format!("--health-probe-bind-address={address}"),
                format!("--plugin-cache-dir={}", plugin_cache_dir().display()),
                "--reconcile-concurrency=4".to_owned(),
            ])
            .args(command.args)
            .env("KUBECONFIG", command.kubeconfig)
            .env("POD_NAME", command.name)
            .env("RUST_LOG", "info")
            .env_remove("WATCH_NAMESPACE")
            // The operator logs to stderr; both go to the log file.
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let operator = Operator {
            child,
            address,
            log,
        };
        crate::eventually("the operator serves /healthz", START_TIMEOUT, || async {
            ensure!(
                operator.is_running(),
                "the operator exited:\n{}",
                operator.log_tail()
            );
            let (status, _) = http_get(operator.address, "/healthz").await?;
            ensure!(status == 200, "/healthz answered {status}");
            Ok(())
        })
        .await?;
        Ok(operator)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is alive (not exited, not a zombie awaiting its reaping).
    pub fn is_running(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .ok()
            .and_then(|stat| {
                let state = stat.rsplit_once(") ")?.1.chars().next()?;
                Some(state != 'Z' && state != 'X')
            })
            .unwrap_or(false)
    }

    /// The last 30 lines of its log.
    pub fn log_tail(&self) -> String {
        let Ok(file) = std::fs::File::open(&self.log) else {
            return String::new();
        };
        let lines: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGKILL: no lease release, no cleanup, in-flight requests abandoned; a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain HTTP/1.1 GET on loopback: (status, body).
pub async fn http_get(address: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no end of headers")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .context("no status code")?
        .parse()?;
    Ok((status, body.to_owned()))
}

/// The holder of a leader-election Lease (empty when none).
pub async fn lease_holder(client: &Client, namespace: &str, name: &str) -> anyhow::Result<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), namespace)
        .get(name)
        .await?;
    Ok(lease
        .spec
        .and_then(|spec| spec.holder_identity)
        .unwrap_or_default())
}

/// The benchmarks' defaults: the release build of the operator
/// (`$CARGO_TARGET_DIR/release/wasmray`, else the workspace's `target/`), and a compiled-plugin
/// cache that outlives runs (`~/.cache/wasmray/scale-bench-code`), so the first run compiles
/// the plugins and later runs start warm, as the Helm chart's cache volume does.
pub fn bench_defaults() -> (PathBuf, PathBuf) {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let cache = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(".cache/wasmray/scale-bench-code");
    (target.join("release").join("wasmray"), cache)
}
