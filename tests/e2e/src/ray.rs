//! A real Ray head for tests: one per test process, from the pinned virtualenv that
//! `tests/scripts/ray-venv.sh` creates (env `WASMRAY_RAY_VENV` skips running it).
//!
//! The head runs `ray start --head --block` in its own process group under a small shell
//! that holds a pipe from this process: when the test process exits, the pipe closes and
//! the shell kills the group. Every port is chosen free on 127.0.0.1 and Ray is kept on
//! loopback: `--node-ip-address=127.0.0.1` alone still lets Ray's Python components
//! advertise the machine's address, `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` makes them use
//! loopback too (Ray's single-machine mode).

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The virtualenv holding Ray (as printed by `tests/scripts/ray-venv.sh`).
pub const VENV_ENV: &str = "WASMRAY_RAY_VENV";
/// How long the head may take to answer `/api/version` (about 10 s on 2 cores).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Unix socket paths must stay under 108 bytes; Ray adds about 62 to its temp dir.
const MAX_TEMP_DIR_LEN: usize = 40;

static HEAD: OnceLock<Result<RayHead, String>> = OnceLock::new();
static TOKEN_HEAD: OnceLock<Result<RayHead, String>> = OnceLock::new();

/// The Ray head of this test process, started on first use with its `--temp-dir` under
/// `run_dir` (the control plane's run directory, so logs stay together).
pub fn head(run_dir: &Path) -> anyhow::Result<&'static RayHead> {
    started(&HEAD, run_dir, None)
}

/// A second head of this test process with Ray's token auth on (`RAY_AUTH_MODE=token`); its
/// token is [`RayHead::token`].
pub fn token_head(run_dir: &Path) -> anyhow::Result<&'static RayHead> {
    // Fixed per process: a test token, not a secret.
    let token = format!(
        "{:064x}",
        u128::from(std::process::id()) * 0x9e37_79b9_7f4a_7c15
    );
    started(&TOKEN_HEAD, run_dir, Some(token))
}

fn started(
    slot: &'static OnceLock<Result<RayHead, String>>,
    run_dir: &Path,
    token: Option<String>,
) -> anyhow::Result<&'static RayHead> {
    slot.get_or_init(|| RayHead::start(run_dir, token).map_err(|error| format!("{error:#}")))
        .as_ref()
        .map_err(|error| anyhow::anyhow!("the test Ray head did not start: {error}"))
}

/// A running Ray head.
pub struct RayHead {
    dashboard: String,
    venv: PathBuf,
    temp_dir: PathBuf,
    token: Option<String>,
    /// How long `ray start` took until the dashboard answered.
    pub startup: Duration,
    _supervisor: Supervisor,
}

struct Supervisor {
    _child: Child,
    /// Closing it (when this process exits) makes the supervisor kill the head's group.
    _stdin: ChildStdin,
}

impl RayHead {
    fn start(run_dir: &Path, token: Option<String>) -> anyhow::Result<RayHead> {
        let venv = venv()?;
        let ray = venv.join("bin/ray");
        let suffix = if token.is_some() { "t" } else { "" };
        let mut temp_dir = run_dir.join(format!("r{}{suffix}", std::process::id()));
        if temp_dir.as_os_str().len() > MAX_TEMP_DIR_LEN {
            temp_dir =
                std::env::temp_dir().join(format!("wasmray-ray-{}{suffix}", std::process::id()));
        }
        std::fs::create_dir_all(&temp_dir)
            .with_context(|| format!("creating {}", temp_dir.display()))?;
        let log = temp_dir.join("head.log");
        let (ports, workers) = head_ports()?;
        let dashboard_port = ports[1];
        let args = [
            "start".to_owned(),
            "--head".into(),
            "--block".into(),
            "--disable-usage-stats".into(),
            "--node-ip-address=127.0.0.1".into(),
            "--dashboard-host=127.0.0.1".into(),
            format!("--port={}", ports[0]),
            format!("--dashboard-port={dashboard_port}"),
            format!("--dashboard-agent-listen-port={}", ports[2]),
            format!("--dashboard-agent-grpc-port={}", ports[3]),
            format!("--ray-client-server-port={}", ports[4]),
            format!("--metrics-export-port={}", ports[5]),
            format!("--runtime-env-agent-port={}", ports[6]),
            // Workers take ports from a range; keep it away from other heads' ranges.
            format!("--min-worker-port={}", workers.start()),
            format!("--max-worker-port={}", workers.end()),
            "--num-cpus=2".into(),
            "--object-store-memory=100000000".into(),
            format!("--temp-dir={}", temp_dir.display()),
        ];
        // `set -m` puts the head in its own process group; `cat` returns when this
        // process's end of the pipe closes, and the trap then ends the whole group.
        let script = r#"set -m
"$0" "$@" >"$WASMRAY_RAY_LOG" 2>&1 &
head=$!
trap 'kill -TERM -- -$head 2>/dev/null; sleep 3; kill -KILL -- -$head 2>/dev/null; exit 0' EXIT INT TERM
cat >/dev/null"#;
        let started = Instant::now();
        let mut command = Command::new("bash");
        match &token {
            Some(token) => command
                .env("RAY_AUTH_MODE", "token")
                .env("RAY_AUTH_TOKEN", token),
            // A token file in the user's home would turn auth on by itself.
            None => command.env("RAY_AUTH_MODE", "disabled"),
        };
        let mut child = command
            .arg("-c")
            .arg(script)
            .arg(&ray)
            .args(&args)
            .env("WASMRAY_RAY_LOG", &log)
            .env("RAY_USAGE_STATS_ENABLED", "0")
            .env("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", ray.display()))?;
        let stdin = child
            .stdin
            .take()
            .context("the supervisor's stdin was not piped")?;
        let supervisor = Supervisor {
            _child: child,
            _stdin: stdin,
        };
        let dashboard = format!("http://127.0.0.1:{dashboard_port}");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            // Public even with token auth on, and answered once the dashboard is up.
            if let Ok((200, _)) = http_get(dashboard_port, "/api/gcs_healthz") {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "Ray head not answering {dashboard}/api/version within {START_TIMEOUT:?}; its log ({}):\n{}",
                    log.display(),
                    crate::tail(&log, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(RayHead {
            dashboard,
            venv,
            temp_dir,
            token,
            startup: started.elapsed(),
            _supervisor: supervisor,
        })
    }

    /// `http://127.0.0.1:<port>`: the dashboard (Jobs and Serve REST API).
    pub fn dashboard_url(&self) -> &str {
        &self.dashboard
    }

    /// The virtualenv's Python; job entrypoints name it, as Ray runs them through a shell
    /// with the raylet's PATH.
    pub fn python(&self) -> PathBuf {
        self.venv.join("bin/python")
    }

    /// The token of a head started by [`token_head`].
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The head's `--temp-dir` (session logs are under `session_latest/logs`).
    pub fn temp_dir(&self) -> &Path {
        &self.temp_dir
    }

    /// A Python entrypoint running `code` (single-quoted for the shell; no `'` allowed).
    pub fn python_entrypoint(&self, code: &str) -> String {
        assert!(
            !code.contains('\''),
            "entrypoint code must not contain single quotes"
        );
        format!("{} -c '{code}'", self.python().display())
    }
}

/// The Ray virtualenv: env [`VENV_ENV`], else what `tests/scripts/ray-venv.sh` prints
/// (it installs once, then answers from its cache).
pub fn venv() -> anyhow::Result<PathBuf> {
    if let Some(venv) = std::env::var_os(VENV_ENV) {
        let venv = PathBuf::from(venv);
        if !venv.join("bin/ray").is_file() {
            bail!("{VENV_ENV}: {} holds no bin/ray", venv.display());
        }
        return Ok(venv);
    }
    crate::path_printed_by("../scripts/ray-venv.sh")
}

/// Ports for the head's seven components, and a range for its workers that contains none of
/// them: Ray refuses to start when a component port falls inside the worker range, and the
/// kernel often hands out neighbouring ephemeral ports.
fn head_ports() -> anyhow::Result<(Vec<u16>, std::ops::RangeInclusive<u16>)> {
    const COMPONENTS: usize = 7;
    const WORKER_PORTS: u16 = 200;
    let start = free_ports(1)?[0].min(u16::MAX - WORKER_PORTS);
    let workers = start..=start + WORKER_PORTS;
    let ports: Vec<u16> = free_ports(COMPONENTS + usize::from(WORKER_PORTS) + 1)?
        .into_iter()
        .filter(|port| !workers.contains(port))
        .take(COMPONENTS)
        .collect();
    anyhow::ensure!(
        ports.len() == COMPONENTS,
        "no {COMPONENTS} free loopback ports outside {workers:?}"
    );
    Ok((ports, workers))
}

/// Ports free on 127.0.0.1 right now (held together so they differ).
fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("finding free loopback ports")?;
    listeners
        .iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect()
}

/// A Ray node as the GCS lists it (through the dashboard's node summary).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RayNode {
    /// `RAY_CLOUD_INSTANCE_ID`: the pod's name.
    pub instance_id: String,
    /// `RAY_NODE_TYPE_NAME`: the pod's group.
    pub node_type: String,
    pub alive: bool,
}

/// The nodes of the Ray cluster whose dashboard listens on `host:port` (a head pod's IP
/// under the pod runner). Blocking, with a short deadline.
pub fn gcs_nodes(host: std::net::IpAddr, port: u16) -> anyhow::Result<Vec<RayNode>> {
    let (status, body) = http_get_at(host, port, "/nodes?view=summary")?;
    if status != 200 {
        bail!("the dashboard at {host}:{port} answered {status}: {body}");
    }
    let answer: serde_json::Value = serde_json::from_str(&body)
        .with_context(|| format!("the node summary is not JSON: {body}"))?;
    let summary = answer["data"]["summary"]
        .as_array()
        .with_context(|| format!("no node summary in {body}"))?;
    let mut nodes: Vec<RayNode> = summary
        .iter()
        .map(|node| {
            let raylet = &node["raylet"];
            let text = |key: &str| raylet[key].as_str().unwrap_or_default().to_owned();
            RayNode {
                instance_id: text("instanceId"),
                node_type: text("nodeTypeName"),
                alive: raylet["state"] == "ALIVE",
            }
        })
        .collect();
    nodes.sort();
    Ok(nodes)
}

/// A minimal blocking `GET` on 127.0.0.1 (status and body); enough to poll readiness
/// without an HTTP client in the support crate.
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    http_get_at(std::net::Ipv4Addr::LOCALHOST.into(), port, path)
}

fn http_get_at(host: std::net::IpAddr, port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let address = std::net::SocketAddr::new(host, port);
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
