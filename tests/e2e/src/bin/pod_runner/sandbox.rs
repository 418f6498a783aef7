//! The Linux side of a pod: network namespaces, relays into them, and container processes in
//! their own mount, UTS and PID namespaces.
//!
//! Nothing outlives the runner: the network namespace is held by a `sleep` (the pause
//! process of a pod sandbox) and each container by `unshare --fork --kill-child`, all started
//! under `setpriv --pdeathsig KILL`, so when the runner dies the kernel kills them, and a
//! PID namespace dies with its first process.

use std::io;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// The container's home and default working directory: inside its own /tmp, as an image's
/// home is inside its own file system.
pub const POD_HOME: &str = "/tmp/home";
/// How long a connection into a namespace may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type ConnectRequest = (SocketAddr, oneshot::Sender<io::Result<std::net::TcpStream>>);

/// A network namespace of its own for one RayCluster, with only `lo` (up): its pods' 127.x
/// addresses, and every port its Ray processes open, live there.
pub struct NetworkNamespace {
    holder: Child,
    pid: u32,
    connect: mpsc::Sender<ConnectRequest>,
}

impl NetworkNamespace {
    pub async fn create() -> anyhow::Result<NetworkNamespace> {
        let holder = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--", "unshare", "--net", "--"])
            .args(["sh", "-c", "ip link set lo up && exec sleep infinity"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting a network namespace (setpriv, unshare, ip, sleep)")?;
        let pid = holder.id().context("the namespace holder exited at once")?;
        // The exec chain keeps one pid; it runs `sleep` once `lo` is up.
        let comm = format!("/proc/{pid}/comm");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::fs::read_to_string(&comm).await {
                Ok(name) if name.trim() == "sleep" => break,
                Ok(_) => {}
                Err(error) => bail!("the network namespace holder {pid} exited: {error}"),
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the network namespace holder {pid} did not bring lo up in 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let namespace = std::fs::File::open(format!("/proc/{pid}/ns/net"))
            .with_context(|| format!("opening the network namespace of {pid}"))?;
        let (connect, requests) = mpsc::channel::<ConnectRequest>();
        // A thread that has joined the namespace: sockets belong to the namespace of the thread
        // that creates them, and a tokio worker must stay in the runner's own.
        std::thread::Builder::new()
            .name(format!("netns-{pid}"))
            .spawn(move || {
                let joined = nix::sched::setns(&namespace, CloneFlags::CLONE_NEWNET);
                for (address, reply) in requests {
                    let result = match joined {
                        Ok(()) => std::net::TcpStream::connect_timeout(&address, CONNECT_TIMEOUT),
                        Err(errno) => Err(io::Error::from(errno)),
                    };
                    let _ = reply.send(result);
                }
            })
            .context("starting the namespace's connect thread")?;
        Ok(NetworkNamespace {
            holder,
            pid,
            connect,
        })
    }

    /// For `nsenter --net=`.
    pub fn path(&self) -> String {
        format!("/proc/{}/ns/net", self.pid)
    }

    /// A connection to `address` inside the namespace.
    pub async fn connect(&self, address: SocketAddr) -> io::Result<TcpStream> {
        let (reply, answer) = oneshot::channel();
        self.connect
            .send((address, reply))
            .map_err(|_| io::Error::other("the namespace's connect thread stopped"))?;
        let stream = answer
            .await
            .map_err(|_| io::Error::other("the namespace's connect thread stopped"))??;
        stream.set_nonblocking(true)?;
        TcpStream::from_std(stream)
    }

    pub async fn close(mut self) {
        let _ = self.holder.kill().await;
    }
}

/// Forwards connections to `address` in the runner's namespace to the same address inside
/// `namespace`, as a pod IP is reachable from anywhere in a cluster. Runs until aborted.
pub async fn relay(
    listener: TcpListener,
    address: SocketAddr,
    namespace: std::sync::Arc<NetworkNamespace>,
) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let namespace = namespace.clone();
        tokio::spawn(async move {
            // Refused inside: close the client's connection, as a closed port would.
            if let Ok(mut outbound) = namespace.connect(address).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// One container process, as [`exec_pod`] will set it up.
pub struct Launch {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub hosts: PathBuf,
    pub tmp: PathBuf,
    pub hostname: String,
    pub workdir: Option<String>,
    /// `(source, mount path)` bind mounts: the pod's volumes.
    pub mounts: Vec<(PathBuf, String)>,
    /// The network namespace to join, if not the runner's.
    pub network: Option<String>,
    pub log: PathBuf,
}

/// A path to this executable that stays valid while the runner runs: a link (else a copy) in
/// `dir`. Cargo replaces its output files when a later build of the package differs (a test
/// build unifies other features), and a replaced binary can no longer be executed by name.
pub fn pinned_executable(dir: &Path) -> anyhow::Result<PathBuf> {
    let current = std::env::current_exe().context("the runner's own path")?;
    let pinned = dir.join("pod-runner.exe");
    let _ = std::fs::remove_file(&pinned);
    if std::fs::hard_link(&current, &pinned).is_err() {
        std::fs::copy(&current, &pinned)
            .with_context(|| format!("copying {} to {}", current.display(), pinned.display()))?;
    }
    Ok(pinned)
}

/// Starts the container in its own process group; `runner` is [`pinned_executable`].
pub fn spawn(runner: &Path, launch: &Launch) -> anyhow::Result<Child> {
    let mut command = Command::new("setpriv");
    command.args(["--pdeathsig", "KILL", "--"]);
    if let Some(network) = &launch.network {
        command.args(["nsenter", &format!("--net={network}"), "--"]);
    }
    command
        .args([
            "unshare",
            "--mount",
            "--uts",
            "--pid",
            "--fork",
            "--kill-child",
        ])
        .args(["--mount-proc", "--propagation", "private", "--"])
        .arg(runner)
        .arg("exec-pod")
        .arg("--hosts")
        .arg(&launch.hosts)
        .arg("--tmp")
        .arg(&launch.tmp)
        .arg("--hostname")
        .arg(&launch.hostname);
    if let Some(workdir) = &launch.workdir {
        command.arg("--workdir").arg(workdir);
    }
    for (source, target) in &launch.mounts {
        command
            .arg("--mount")
            .arg(format!("{}:{target}", source.display()));
    }
    command.arg("--").args(&launch.argv);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.log)
        .with_context(|| format!("opening {}", launch.log.display()))?;
    let log_err = log.try_clone()?;
    command
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .kill_on_drop(true);
    command.spawn().context("starting the container")
}

/// SIGTERM to the container's process group, SIGKILL after `grace`: what a kubelet does.
pub async fn stop(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
        if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
            return status.ok();
        }
    }
    let _ = child.kill().await;
    child.wait().await.ok()
}

/// The exit code a kubelet reports: the code, or 128 + the signal that ended it.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(-1)
}

/// Options of the `exec-pod` step (runs as the first process of the container's namespaces).
pub struct ExecPod {
    pub hosts: PathBuf,
    pub tmp: PathBuf,
    pub hostname: String,
    pub workdir: Option<PathBuf>,
    pub mounts: Vec<(PathBuf, PathBuf)>,
    pub argv: Vec<String>,
}

impl ExecPod {
    pub fn parse(args: &[String]) -> anyhow::Result<ExecPod> {
        let mut exec = ExecPod {
            hosts: PathBuf::new(),
            tmp: PathBuf::new(),
            hostname: String::new(),
            workdir: None,
            mounts: Vec::new(),
            argv: Vec::new(),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            if arg == "--" {
                exec.argv = args.cloned().collect();
                break;
            }
            let value = args
                .next()
                .with_context(|| format!("{arg} needs a value"))?;
            match arg.as_str() {
                "--hosts" => exec.hosts = value.into(),
                "--tmp" => exec.tmp = value.into(),
                "--hostname" => exec.hostname.clone_from(value),
                "--workdir" => exec.workdir = Some(value.into()),
                "--mount" => {
                    let (source, target) = value
                        .split_once(':')
                        .with_context(|| format!("--mount {value}: SOURCE:TARGET"))?;
                    exec.mounts.push((source.into(), target.into()));
                }
                other => bail!("exec-pod: unknown flag {other}"),
            }
        }
        if exec.argv.is_empty() {
            bail!("exec-pod: no command after --");
        }
        Ok(exec)
    }
}

/// Inside the container's fresh namespaces: its own `/etc/hosts`, `/tmp`, volumes and host
/// name, then the container's command in place of this process. Returns only on failure.
pub fn exec_pod(exec: &ExecPod) -> anyhow::Error {
    match prepare(exec) {
        Ok(()) => {
            let error = std::process::Command::new(&exec.argv[0])
                .args(&exec.argv[1..])
                .exec();
            anyhow::Error::new(error).context(format!("running {}", exec.argv[0]))
        }
        Err(error) => error,
    }
}

fn prepare(exec: &ExecPod) -> anyhow::Result<()> {
    // Every source may live under the machine's /tmp (a test's run directory does), which the
    // pod's own /tmp hides: bind them all before /tmp.
    for (source, target) in &exec.mounts {
        if source.is_dir() {
            std::fs::create_dir_all(target)
                .with_context(|| format!("creating the mount point {}", target.display()))?;
        } else if !target.exists() {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::File::create(target)?;
        }
        bind(source, target)?;
    }
    bind(&exec.hosts, Path::new("/etc/hosts"))?;
    bind(&exec.tmp, Path::new("/tmp"))?;
    std::fs::create_dir_all(POD_HOME).context("creating the pod's home")?;
    nix::unistd::sethostname(&exec.hostname).context("setting the host name")?;
    let workdir = exec.workdir.as_deref().unwrap_or(Path::new(POD_HOME));
    std::env::set_current_dir(workdir)
        .with_context(|| format!("workingDir {}", workdir.display()))?;
    Ok(())
}

fn bind(source: &Path, target: &Path) -> anyhow::Result<()> {
    use nix::mount::{MsFlags, mount};
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("bind-mounting {} on {}", source.display(), target.display()))
}
