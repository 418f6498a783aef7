//! Test support for WasmRay's end-to-end tests: a real Kubernetes control plane
//! (`tests/controlplane`: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
//! kwok fake nodes, all on loopback) shared by every test of one test process.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let cluster = wasmray_e2e::cluster().await?;
//! let ns = cluster.namespace("my-test").await?;
//! let client = cluster.client().await?;
//! // ... create objects in `ns.name` with `client` ...
//! # Ok(()) }
//! ```
//!
//! The first call to [`cluster`] either attaches to a running control plane (env
//! `WASMRAY_TEST_CONTROLPLANE=<run dir>`, as written by `testcp up --dir <run dir>`) or builds
//! (`tests/controlplane/build.sh`, cached) and starts one that lives as long as the test
//! process: it holds a pipe to testcp's stdin and testcp stops when that pipe closes.
//!
//! [`private_cluster`] starts one more that belongs to the caller alone, for tests that stop
//! and start its API server ([`TestCluster::stop_apiserver`], [`TestCluster::start_apiserver`])
//! and must not disturb the tests sharing the first.
//!
//! When this package's `pod-runner` binary is built, the shared control plane it starts runs
//! it (`testcp up --pod-runner`): pods of a namespace from [`TestCluster::ray_namespace`] then
//! run as real local processes on the runner's nodes instead of being faked by kwok. Env
//! `WASMRAY_POD_RUNNER` names another runner binary, or `off`.
//!
//! [`ray::head`] starts one real Ray head per test process the same way (see [`ray`]).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::future::Future;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde::Deserialize;
use tokio::sync::OnceCell;

pub mod binary;
pub mod census;
pub mod gcs;
pub mod kueue;
pub mod operator;
pub mod ray;

/// Run directory of an already running control plane to attach to instead of starting one.
pub const ATTACH_ENV: &str = "WASMRAY_TEST_CONTROLPLANE";
/// The directory holding `testcp` (as printed by `build.sh`), or the `testcp` binary itself;
/// skips running `build.sh`.
pub const BIN_ENV: &str = "WASMRAY_CONTROLPLANE_BIN";
/// The pod runner binary for the control plane this support starts, or `off` for none;
/// unset, `pod-runner` next to the test binary's directory is used when it exists.
pub const RUNNER_ENV: &str = "WASMRAY_POD_RUNNER";

/// How long a cold start may take (a cold Go build is not included: `build.sh` runs first).
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a new namespace may take to get its default ServiceAccount.
const NAMESPACE_TIMEOUT: Duration = Duration::from_secs(30);

static CLUSTER: OnceCell<TestCluster> = OnceCell::const_new();

/// Starts one control plane per test process (or attaches to one already running when env
/// `WASMRAY_TEST_CONTROLPLANE=<run dir with ready.json and kubeconfig>` is set), shared by
/// all tests.
pub async fn cluster() -> anyhow::Result<&'static TestCluster> {
    CLUSTER
        .get_or_try_init(|| async {
            // Starting blocks on a build and on readiness polling; keep it off the test's
            // async threads. Nothing created here is tied to this test's runtime.
            tokio::task::spawn_blocking(TestCluster::start_or_attach)
                .await
                .context("control-plane start task failed")?
        })
        .await
}

/// Starts a control plane of the caller's own, even when `WASMRAY_TEST_CONTROLPLANE` names a
/// shared one: for tests that restart its API server. It stops when the returned value is
/// dropped (or when this process exits).
pub async fn private_cluster() -> anyhow::Result<TestCluster> {
    private_cluster_with(&[]).await
}

/// [`private_cluster`] with extra `testcp up` flags (e.g. `--pod-runner`, `--nodes`). Like
/// it, it runs no pod runner unless the flags ask for one.
pub async fn private_cluster_with(args: &[&str]) -> anyhow::Result<TestCluster> {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    tokio::task::spawn_blocking(move || TestCluster::start(args))
        .await
        .context("control-plane start task failed")?
}

/// What `testcp up` writes to `<run dir>/ready.json` once the cluster is usable.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadyInfo {
    /// Kubernetes version the apiserver reports, e.g. `v1.36.3`.
    pub version: String,
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    pub kubeconfig: PathBuf,
    pub run_dir: PathBuf,
    pub logs_dir: PathBuf,
    /// The apiserver's audit log: one JSON event per line, every write at Metadata level.
    pub audit_log: PathBuf,
    /// Directory holding testcp, kubectl and kwok.
    pub bin_dir: PathBuf,
    /// CIDR (inside 127.0.0.0/8) kwok assigns pod IPs from.
    #[serde(rename = "podCIDR")]
    pub pod_cidr: String,
    /// Names of the fake nodes.
    pub nodes: Vec<String>,
    /// Loopback ports by component (`kubeApiserver`, `etcd`, ...).
    pub ports: BTreeMap<String, u16>,
    /// Process ids by component (`testcp` is the orchestrator, which also runs etcd), as
    /// at start: a restarted API server has a new one (testcp rewrites ready.json).
    pub pids: BTreeMap<String, u32>,
    /// The pod runner, when `testcp up` was started with one.
    #[serde(default)]
    pub pod_runner: Option<PodRunnerInfo>,
}

/// ready.json's `podRunner`: the kubelet of a tainted node pool whose pods run as real local
/// processes.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRunnerInfo {
    /// Its nodes (`ray-0`, ...), labelled `testcp.wasmray.io/pool=ray`.
    pub nodes: Vec<String>,
    /// Its state directory (it signals readiness with the file `ready` there).
    pub state_dir: PathBuf,
    /// CIDR (inside 127.0.0.0/8, apart from [`ReadyInfo::pod_cidr`]) it assigns pod IPs from.
    #[serde(rename = "podCIDR")]
    pub pod_cidr: String,
    /// The annotations that put every pod of a namespace on its nodes.
    pub namespace_annotations: BTreeMap<String, String>,
}

/// When a restarted API server came back.
#[derive(Debug, Clone, Copy)]
pub struct ApiserverStarted {
    /// It first answered a request.
    pub answering: Instant,
    /// Its `/readyz` said ok.
    pub ready: Instant,
}

/// A running control plane.
pub struct TestCluster {
    ready: ReadyInfo,
    /// Present when this process started the control plane. The shared one lives in a
    /// static and is never dropped, so the pipe to testcp's stdin closes exactly when this
    /// process exits; a private one stops when dropped.
    _owned: Option<OwnedControlPlane>,
}

struct OwnedControlPlane {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Drop for OwnedControlPlane {
    fn drop(&mut self) {
        // EOF on stdin makes testcp stop its components and delete the etcd data; waiting
        // for it keeps a finished test's processes from running on beside the next test.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

impl TestCluster {
    fn start_or_attach() -> anyhow::Result<TestCluster> {
        if let Some(dir) = std::env::var_os(ATTACH_ENV) {
            let dir = PathBuf::from(dir);
            let ready = read_ready(&dir).with_context(|| {
                format!(
                    "{ATTACH_ENV}={} does not hold a running control plane (no readable ready.json)",
                    dir.display()
                )
            })?;
            return Ok(TestCluster {
                ready,
                _owned: None,
            });
        }
        Self::start(pod_runner_args()?)
    }

    /// Starts `testcp up` with `args` added to its usual flags.
    fn start(args: Vec<OsString>) -> anyhow::Result<TestCluster> {
        static STARTED: AtomicU64 = AtomicU64::new(0);
        let testcp = testcp_binary()?;
        let run_dir = std::env::temp_dir().join("wasmray-e2e").join(format!(
            "{}-{}-{}",
            std::process::id(),
            unix_millis(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("creating run dir {}", run_dir.display()))?;
        let log_path = run_dir.join("testcp.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut child = Command::new(&testcp)
            .arg("up")
            .arg("--dir")
            .arg(&run_dir)
            .arg("--stop-on-stdin-eof")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} up", testcp.display()))?;
        let stdin = child.stdin.take().context("testcp stdin was not piped")?;

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "testcp up exited with {status} before the cluster was ready; its log ({}):\n{}",
                    log_path.display(),
                    tail(&log_path, 30)
                );
            }
            if let Ok(ready) = read_ready(&run_dir) {
                return Ok(TestCluster {
                    ready,
                    _owned: Some(OwnedControlPlane {
                        child,
                        stdin: Some(stdin),
                    }),
                });
            }
            if Instant::now() > deadline {
                // Dropping the pipe stops testcp; reap it so nothing is left behind.
                drop(stdin);
                let _ = child.wait();
                bail!(
                    "control plane not ready within {START_TIMEOUT:?}; testcp log ({}):\n{}",
                    log_path.display(),
                    tail(&log_path, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The admin kubeconfig (client certificate in group `system:masters`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.ready.kubeconfig
    }

    /// The run directory: `ready.json`, `kubeconfig`, `logs/`, `audit.log`.
    pub fn run_dir(&self) -> &Path {
        &self.ready.run_dir
    }

    /// Everything `ready.json` says about the cluster.
    pub fn info(&self) -> &ReadyInfo {
        &self.ready
    }

    /// A fresh admin client. Each `#[tokio::test]` has its own runtime, and a client's
    /// connections belong to the runtime that made them, so never share one across tests.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let kubeconfig = Kubeconfig::read_from(&self.ready.kubeconfig)
            .with_context(|| format!("reading {}", self.ready.kubeconfig.display()))?;
        let config =
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }

    /// The admin kubeconfig with its credentials replaced by a bearer token (e.g. a
    /// ServiceAccount token from TokenRequest), to act under that identity's RBAC.
    pub fn kubeconfig_with_token(&self, token: &str) -> anyhow::Result<Kubeconfig> {
        let mut kubeconfig = Kubeconfig::read_from(&self.ready.kubeconfig)
            .with_context(|| format!("reading {}", self.ready.kubeconfig.display()))?;
        let user = kubeconfig
            .auth_infos
            .first_mut()
            .and_then(|named| named.auth_info.as_mut())
            .context("admin kubeconfig has no user entry")?;
        // Round-trip through YAML: the only way to set the token without naming the
        // secret-string type kube uses for it.
        *user = serde_yaml::from_value(serde_yaml::to_value(
            [("token", token)].into_iter().collect::<BTreeMap<_, _>>(),
        )?)?;
        Ok(kubeconfig)
    }

    /// A client authenticating with a bearer token instead of the admin certificate.
    pub async fn client_with_token(&self, token: &str) -> anyhow::Result<Client> {
        let config = Config::from_custom_kubeconfig(
            self.kubeconfig_with_token(token)?,
            &KubeConfigOptions::default(),
        )
        .await?;
        Ok(Client::try_from(config)?)
    }

    /// Creates a namespace with a unique name starting with `prefix` and waits until its
    /// default ServiceAccount exists (pods cannot be created before that).
    pub async fn namespace(&self, prefix: &str) -> anyhow::Result<TestNamespace> {
        self.namespace_annotated(prefix, None).await
    }

    /// [`Self::namespace`], annotated so that every pod created in it is placed on the pod
    /// runner's nodes and runs as real local processes (no pod elsewhere lands there). Fails
    /// when the control plane runs no pod runner.
    pub async fn ray_namespace(&self, prefix: &str) -> anyhow::Result<TestNamespace> {
        let Some(runner) = &self.ready.pod_runner else {
            bail!(
                "ray_namespace: the control plane in {} runs no pod runner (ready.json has no \
                 podRunner): build this package's pod-runner binary or set {RUNNER_ENV} to one, \
                 and do not set {RUNNER_ENV}=off",
                self.ready.run_dir.display()
            );
        };
        self.namespace_annotated(prefix, Some(runner.namespace_annotations.clone()))
            .await
    }

    async fn namespace_annotated(
        &self,
        prefix: &str,
        annotations: Option<BTreeMap<String, String>>,
    ) -> anyhow::Result<TestNamespace> {
        let name = unique_namespace_name(prefix);
        let client = self.client().await?;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let mut ns = Namespace::default();
        ns.metadata.name = Some(name.clone());
        ns.metadata.labels = Some([("wasmray.io/e2e".to_owned(), "true".to_owned())].into());
        ns.metadata.annotations = annotations;
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        let namespace = TestNamespace {
            name: name.clone(),
            kubectl: self.kubectl(),
            armed: true,
        };
        let accounts: Api<ServiceAccount> = Api::namespaced(client, &name);
        let deadline = Instant::now() + NAMESPACE_TIMEOUT;
        while accounts.get_opt("default").await?.is_none() {
            if Instant::now() > deadline {
                bail!(
                    "namespace {name}: default ServiceAccount not created within {NAMESPACE_TIMEOUT:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(namespace)
    }

    /// Stops the API server (SIGTERM, SIGKILL after 2 s) and returns once it has exited;
    /// etcd, the other components, the port, the certificates and the kubeconfig stay.
    /// Only for a [`private_cluster`]: the tests sharing a control plane would fail.
    pub async fn stop_apiserver(&self) -> anyhow::Result<()> {
        self.control("apiserver stop").await.map(drop)
    }

    /// Stops the API server with SIGKILL, as a crash (in-flight requests get no answer).
    pub async fn kill_apiserver(&self) -> anyhow::Result<()> {
        self.control("apiserver kill").await.map(drop)
    }

    /// Starts the stopped API server again, on the same URL, certificates and etcd data, and
    /// returns once its `/readyz` answers ok, with when it first answered a request: the
    /// two can be seconds apart under load (its RBAC bootstrap hook keeps `/readyz` red while
    /// it already serves clients).
    pub async fn start_apiserver(&self) -> anyhow::Result<ApiserverStarted> {
        let client = self.client().await?;
        let probe = async {
            loop {
                match client.apiserver_version().await {
                    // Any HTTP answer, even an error status, is the server answering.
                    Ok(_) | Err(kube::Error::Api(_)) => return Instant::now(),
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        };
        let control = self.control("apiserver start");
        tokio::pin!(control, probe);
        let mut answering = None;
        // Not join!: a start that fails must not wait for a server that never answers.
        let started = loop {
            tokio::select! {
                result = &mut control => break result,
                at = &mut probe, if answering.is_none() => answering = Some(at),
            }
        };
        started?;
        let ready = Instant::now();
        let answering = match answering {
            Some(at) => at,
            None => probe.await,
        };
        Ok(ApiserverStarted {
            answering: answering.min(ready),
            ready,
        })
    }

    /// One request to testcp's control socket (protocol: tests/controlplane/README.md), in
    /// Rust rather than through `testcp apiserver`, so no Go tool is needed to drive it.
    async fn control(&self, request: &str) -> anyhow::Result<String> {
        let socket = self.ready.run_dir.join("control.sock");
        let line = format!("{request}\n");
        let answer = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
            let mut stream = UnixStream::connect(&socket)
                .with_context(|| format!("connecting to {}", socket.display()))?;
            // A start waits for /readyz, which testcp bounds by its own --timeout.
            stream.set_read_timeout(Some(START_TIMEOUT + Duration::from_secs(30)))?;
            stream.write_all(line.as_bytes())?;
            let mut answer = String::new();
            BufReader::new(stream).read_line(&mut answer)?;
            Ok(answer.trim().to_owned())
        })
        .await
        .context("control request task failed")??;
        match answer.strip_prefix("ok") {
            Some(rest) => Ok(rest.trim().to_owned()),
            None => bail!("testcp refused {request:?}: {answer:?}"),
        }
    }

    /// `kubectl` of the same Kubernetes release, with `--kubeconfig` set.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.ready.bin_dir.join("testcp"));
        cmd.arg("kubectl")
            .arg(format!("--kubeconfig={}", self.ready.kubeconfig.display()));
        cmd
    }
}

/// A namespace for one test. It is deleted when dropped (without waiting for its contents to
/// go), or by [`TestNamespace::cleanup`], which waits.
pub struct TestNamespace {
    pub name: String,
    kubectl: Command,
    armed: bool,
}

impl TestNamespace {
    /// Deletes the namespace and waits until it is gone.
    pub async fn cleanup(self, client: &Client) -> anyhow::Result<()> {
        self.cleanup_within(client, NAMESPACE_TIMEOUT).await
    }

    /// [`Self::cleanup`], waiting up to `timeout` (thousands of pods take longer).
    pub async fn cleanup_within(
        mut self,
        client: &Client,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        self.armed = false;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let uid = match namespaces.get_opt(&self.name).await? {
            Some(ns) => ns.metadata.uid,
            None => return Ok(()),
        };
        namespaces
            .delete(&self.name, &DeleteParams::default())
            .await
            .with_context(|| format!("deleting namespace {}", self.name))?;
        let gone = kube::runtime::wait::await_condition(
            namespaces,
            &self.name,
            kube::runtime::wait::conditions::is_deleted(uid.as_deref().unwrap_or_default()),
        );
        tokio::time::timeout(timeout, gone)
            .await
            .with_context(|| format!("namespace {} not deleted in time", self.name))??;
        Ok(())
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Drop cannot await, and the test's runtime may already be shutting down, so
        // use kubectl; --wait=false returns once the deletion is accepted.
        let _ = self
            .kubectl
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Polls `check` every 200 ms until it succeeds; after `timeout` fails with its last error.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return Ok(value),
            Err(error) if Instant::now() > deadline => {
                bail!("{what}: not within {timeout:?}: {error:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Whether a pod is Running with its Ready condition True (what kwok's stages make of a
/// scheduled pod).
pub fn pod_running_and_ready(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Server-side apply of CustomResourceDefinitions.
pub mod crds {
    use std::path::Path;
    use std::time::Duration;

    use anyhow::{Context as _, bail};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};
    use kube::runtime::wait::{await_condition, conditions};
    use kube::{Api, Client};

    /// Field manager of applies made by the test support.
    pub const FIELD_MANAGER: &str = "wasmray-e2e";
    const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(60);

    /// Server-side applies every CRD in the YAML file(s) and waits until each is Established.
    pub async fn apply_crd_files(client: &Client, paths: &[&Path]) -> anyhow::Result<()> {
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        let mut names = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            for (index, doc) in crd_documents(&text)
                .with_context(|| format!("parsing {}", path.display()))?
                .into_iter()
                .enumerate()
            {
                let name = crd_name(&doc)
                    .with_context(|| format!("{}: document {index}", path.display()))?;
                // Applied as parsed, so no field the typed struct might not know is lost.
                // Server-side apply keeps no last-applied annotation, which would not fit
                // (256 KiB limit) for large CRDs.
                api.patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&doc),
                )
                .await
                .with_context(|| format!("{}: applying CRD {name}", path.display()))?;
                names.push(name);
            }
        }
        for name in names {
            let established = await_condition(api.clone(), &name, conditions::is_crd_established());
            tokio::time::timeout(ESTABLISH_TIMEOUT, established)
                .await
                .with_context(|| {
                    format!("CRD {name} not Established within {ESTABLISH_TIMEOUT:?}")
                })?
                .with_context(|| format!("watching CRD {name}"))?;
        }
        Ok(())
    }

    /// The non-empty documents of a multi-document YAML stream, as JSON values.
    fn crd_documents(text: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let mut docs = Vec::new();
        for de in serde_yaml::Deserializer::from_str(text) {
            let value: serde_json::Value = serde::Deserialize::deserialize(de)?;
            if !value.is_null() {
                docs.push(value);
            }
        }
        Ok(docs)
    }

    fn crd_name(doc: &serde_json::Value) -> anyhow::Result<String> {
        let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
        let api_version = doc
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        if kind != "CustomResourceDefinition" || api_version != "apiextensions.k8s.io/v1" {
            bail!(
                "expected an apiextensions.k8s.io/v1 CustomResourceDefinition, found {api_version:?} {kind:?}"
            );
        }
        match doc.pointer("/metadata/name").and_then(|n| n.as_str()) {
            Some(name) if !name.is_empty() => Ok(name.to_owned()),
            _ => bail!("CustomResourceDefinition without metadata.name"),
        }
    }
}

fn read_ready(run_dir: &Path) -> anyhow::Result<ReadyInfo> {
    let raw = std::fs::read(run_dir.join("ready.json"))?;
    Ok(serde_json::from_slice(&raw)?)
}

/// Finds testcp: `$WASMRAY_CONTROLPLANE_BIN`, else what `tests/controlplane/build.sh` prints
/// (a no-op when the cached build is current).
fn testcp_binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os(BIN_ENV) {
        let bin = PathBuf::from(bin);
        let testcp = if bin.is_dir() {
            bin.join("testcp")
        } else {
            bin
        };
        if !testcp.is_file() {
            bail!("{BIN_ENV}: {} is not the testcp binary", testcp.display());
        }
        return Ok(testcp);
    }
    Ok(path_printed_by("../controlplane/build.sh")?.join("testcp"))
}

/// The `testcp up` flags that run a pod runner for the shared control plane: env
/// [`RUNNER_ENV`] (a path, or `off`), else `pod-runner` in the directory above the test
/// binary's (tests run from `target/<profile>/deps/`, and cargo puts this package's binaries in
/// `target/<profile>/`) when it exists; none when there is no runner.
fn pod_runner_args() -> anyhow::Result<Vec<OsString>> {
    let runner = match std::env::var_os(RUNNER_ENV) {
        Some(value) if value == "off" => return Ok(Vec::new()),
        Some(value) => {
            // Absolute, so that testcp does not look a bare name up on $PATH.
            let runner = std::path::absolute(PathBuf::from(value))
                .with_context(|| format!("{RUNNER_ENV}: resolving the path"))?;
            if !runner.is_file() {
                bail!("{RUNNER_ENV}: {} is not a file", runner.display());
            }
            runner
        }
        None => {
            let exe = std::env::current_exe().context("locating the test binary")?;
            match exe.parent().and_then(Path::parent) {
                Some(profile_dir) if profile_dir.join("pod-runner").is_file() => {
                    profile_dir.join("pod-runner")
                }
                _ => return Ok(Vec::new()),
            }
        }
    };
    let venv = ray::venv()?;
    let mut venv_arg = OsString::from("--pod-runner-arg=--ray-venv=");
    venv_arg.push(venv.as_os_str());
    Ok(vec![
        "--pod-runner".into(),
        runner.into_os_string(),
        venv_arg,
    ])
}

/// Runs one of the project's setup scripts (relative to this crate), which builds or installs
/// something once and prints where it is.
pub(crate) fn path_printed_by(script: &str) -> anyhow::Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let output = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!("{} failed with {}", script.display(), output.status);
    }
    let path = String::from_utf8(output.stdout)
        .with_context(|| format!("{} printed a non-UTF-8 path", script.display()))?;
    Ok(PathBuf::from(path.trim()))
}

/// `<prefix>-<n>-<suffix>`: lower-case DNS label, unique within and across test processes.
fn unique_namespace_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix = format!(
        "{:x}",
        (unix_millis() ^ u128::from(std::process::id()) << 20) & 0xff_ffff
    );
    let mut clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let tail = format!("-{n}-{suffix}");
    clean.truncate(63 - tail.len());
    let clean = clean.trim_matches('-');
    let clean = if clean.is_empty() { "test" } else { clean };
    format!("{clean}{tail}")
}

fn unix_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

fn tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Err(err) = std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text)) {
        return format!("(cannot read: {err})");
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::unique_namespace_name;

    #[test]
    fn namespace_names_are_unique_dns_labels() {
        let long = "A_Very/Long Prefix".repeat(10);
        let a = unique_namespace_name(&long);
        let b = unique_namespace_name(&long);
        assert_ne!(a, b);
        for name in [
            &a,
            &b,
            &unique_namespace_name("--"),
            &unique_namespace_name("gpu-pods"),
        ] {
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.starts_with('-') && !name.ends_with('-'), "{name}");
        }
        assert!(unique_namespace_name("gpu-pods").starts_with("gpu-pods-"));
    }
}
