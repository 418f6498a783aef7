//! Faults in the middle of a create, with the real operator binary (`wasmray::cli::main` as
//! the subprocess `wasmray-e2e-host`). Each test ends with every RayCluster `ready`, each
//! with exactly the children it should have: no replica slot with a second pod (counted live,
//! and no pod deleted according to the audit log, so none was made twice and removed), none
//! missing, nothing whose owner is gone.
//!
//! - kill -9 of the operator while it creates 20 clusters' pods, then a new process;
//! - the API server stopped for a few seconds while the operator creates 100 clusters' pods,
//!   then started again: all converge, and the time from it answering again (its `/readyz`
//!   saying ok) is printed against the 10 s goal; the test fails only past 3 times the goal
//!   (a figure, not a timed test: CI machines vary); an ignored variant has a 60 s outage
//!   (`WASMRAY_FAULTS_OUTAGE_SECS` sets the outage of either).
//!
//! The leader failover in the middle of a create is in `deploy.rs`, with the rest of the
//! leader-election tests.
//!
//! These tests restart the API server, which would fail every test sharing the common
//! control plane, so they start one of their own (even when `WASMRAY_TEST_CONTROLPLANE` is
//! set) and take turns on it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use kube::Client;
use tokio::sync::{Mutex, MutexGuard, OnceCell};
use wasmray_e2e::binary::{Operator, OperatorCommand};
use wasmray_e2e::census;
use wasmray_e2e::{TestCluster, TestNamespace};

/// Generous: the machine running the tests may be loaded.
const TIMEOUT: Duration = Duration::from_secs(180);
/// Longer than the operator's longest error backoff (300 s), so that a slow recovery is
/// measured rather than cut off.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(400);
/// The goal: all clusters converged this soon after the API server answers again.
const RECOVERY_GOAL: Duration = Duration::from_secs(10);
/// Past this the recovery is broken, not slow (an unreset backoff alone takes longer).
const RECOVERY_BOUND: Duration = Duration::from_secs(30);
/// How long a converged namespace is watched for a late second pod before the audit count.
const SETTLE: Duration = Duration::from_secs(2);
const OUTAGE_ENV: &str = "WASMRAY_FAULTS_OUTAGE_SECS";

static CONTROL_PLANE: OnceCell<TestCluster> = OnceCell::const_new();
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// A namespace on the private control plane, with the CRD installed, for one test at a time.
struct Fixture {
    cluster: &'static TestCluster,
    admin: Client,
    ns: TestNamespace,
    log_dir: PathBuf,
    /// When this test's turn came (the time spent waiting for it is not the test's).
    started: Instant,
    _turn: MutexGuard<'static, ()>,
}

impl Fixture {
    async fn new(prefix: &str) -> anyhow::Result<Fixture> {
        let turn = ONE_AT_A_TIME.lock().await;
        let started = Instant::now();
        let cluster = CONTROL_PLANE
            .get_or_try_init(wasmray_e2e::private_cluster)
            .await?;
        let admin = cluster.client().await?;
        let crd = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../crds/generated/ray.io_rayclusters.yaml");
        wasmray_e2e::crds::apply_crd_files(&admin, &[crd.as_path()]).await?;
        let ns = cluster.namespace(prefix).await?;
        let log_dir = cluster.run_dir().join("operators").join(&ns.name);
        Ok(Fixture {
            cluster,
            admin,
            ns,
            log_dir,
            started,
            _turn: turn,
        })
    }

    /// The operator binary with the admin's kubeconfig, watching this namespace only,
    /// without leader election (one process at a time here).
    async fn operator(&self, name: &str) -> anyhow::Result<Operator> {
        Operator::start(OperatorCommand {
            binary: Path::new(env!("CARGO_BIN_EXE_wasmray-e2e-host")),
            kubeconfig: self.cluster.kubeconfig_path(),
            namespace: &self.ns.name,
            name,
            log_dir: &self.log_dir,
            args: &["--enable-leader-election=false".to_owned()],
        })
        .await
    }

    /// After convergence: still the same pods a moment later, and no pod was ever deleted
    /// (so none was made twice and removed again), per the audit log.
    async fn assert_settled(&self, converged: &census::Census) -> anyhow::Result<()> {
        tokio::time::sleep(SETTLE).await;
        let later = census::take(&self.admin, &self.ns.name, &BTreeSet::new()).await?;
        ensure!(
            later.converged() && later.pods == converged.pods,
            "changed after converging: {}",
            later.summary()
        );
        let writes = census::pod_writes(&self.cluster.info().audit_log, &self.ns.name)?;
        eprintln!("pod writes: {writes:?}");
        ensure!(
            writes.deletes == 0 && writes.created <= converged.pods,
            "pod writes {writes:?} for {} live pods",
            converged.pods
        );
        Ok(())
    }

    async fn finish(self) -> anyhow::Result<()> {
        let started = self.started;
        self.ns
            .cleanup_within(&self.admin, Duration::from_secs(120))
            .await?;
        eprintln!("test time {:?}", started.elapsed());
        Ok(())
    }
}

fn cluster_names(count: usize) -> BTreeSet<String> {
    (0..count).map(|i| format!("rc-{i:03}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_killed_mid_create_converges_after_restart() -> anyhow::Result<()> {
    const CLUSTERS: usize = 20;
    const WORKERS: i64 = 4;
    const PODS: usize = CLUSTERS * (1 + WORKERS as usize);
    let fx = Fixture::new("faults-kill").await?;
    let names = cluster_names(CLUSTERS);

    let mut first = fx.operator("operator-1").await?;
    census::create_samples(&fx.admin, &fx.ns.name, &names, WORKERS).await?;
    census::until_pods(&fx.admin, &fx.ns.name, PODS / 4, TIMEOUT)
        .await
        .with_context(|| format!("operator log:\n{}", first.log_tail()))?;
    first.kill();
    let at_kill = census::take(&fx.admin, &fx.ns.name, &names).await?;
    eprintln!(
        "operator killed (SIGKILL) with {} of {PODS} pods made",
        at_kill.pods
    );
    ensure!(
        at_kill.faults.is_empty(),
        "before the restart: {}",
        at_kill.summary()
    );
    ensure!(
        at_kill.pods < PODS,
        "the operator made all {PODS} pods before it was killed: the kill was not mid-create"
    );

    let second = fx.operator("operator-2").await?;
    let restarted = Instant::now();
    let converged = census::wait_converged(&fx.admin, &fx.ns.name, &names, TIMEOUT)
        .await
        .with_context(|| format!("operator log:\n{}", second.log_tail()))?;
    eprintln!(
        "converged {:?} after the restart: {}",
        restarted.elapsed(),
        converged.summary()
    );
    ensure!(converged.pods == PODS, "{}", converged.summary());
    fx.assert_settled(&converged).await?;
    drop(second);
    fx.finish().await
}

/// 100 clusters (a head and one worker each); the API server stops once some of their 200
/// pods exist, stays down for `outage`, and comes back on the same etcd. Returns the time
/// from its `/readyz` saying ok to all converged: the restarted server answers seconds
/// earlier, but until then it was seen to refuse the scheduler's bindings with 403 (its RBAC
/// not yet in place), which delays the pods by the scheduler's backoff whatever the operator
/// does; clients behind a load balancer would not reach it before `/readyz` either.
async fn apiserver_outage_mid_create(outage: Duration) -> anyhow::Result<Duration> {
    const CLUSTERS: usize = 100;
    const PODS: usize = CLUSTERS * 2;
    let mut fx = Fixture::new("faults-apiserver").await?;
    let names = cluster_names(CLUSTERS);
    let operator = fx.operator("operator").await?;
    let created = Instant::now();
    census::create_samples(&fx.admin, &fx.ns.name, &names, 1).await?;
    // Half: the stop lands a moment after the watch reports it, with more pods made by then,
    // and what is left to do after the restart should take a small part of the 10 s goal
    // even for a debug build of the operator on a loaded machine (100 clusters from scratch
    // took it 16 s there), so that the time measures the recovery more than the work.
    const STOP_AT: usize = PODS / 2;
    census::until_pods(&fx.admin, &fx.ns.name, STOP_AT, TIMEOUT)
        .await
        .with_context(|| format!("operator log:\n{}", operator.log_tail()))?;
    // It stops listening on the SIGTERM at once; the outage counts from there.
    let stopped = Instant::now();
    fx.cluster.stop_apiserver().await?;
    eprintln!(
        "API server stopped {:?} after the first create, with at least {STOP_AT} of {PODS} pods made",
        stopped.duration_since(created),
    );
    tokio::time::sleep(outage.saturating_sub(stopped.elapsed())).await;
    let started = fx.cluster.start_apiserver().await?;
    eprintln!(
        "API server answering again {:?} after it stopped, /readyz ok {:?} after that",
        started.answering.duration_since(stopped),
        started.ready.duration_since(started.answering)
    );
    // The admin client's pooled connections died with the server; a fresh one.
    fx.admin = fx.cluster.client().await?;
    let admin = fx.admin.clone();
    let at_restart = census::take(&admin, &fx.ns.name, &names).await?;
    eprintln!("at restart: {}", at_restart.summary());
    ensure!(
        at_restart.pods < PODS || at_restart.ready_clusters < CLUSTERS,
        "everything was done before the outage: the outage was not mid-create"
    );
    let (converged, fault) =
        census::wait_converged_noting_faults(&admin, &fx.ns.name, &names, RECOVERY_TIMEOUT)
            .await
            .with_context(|| format!("operator log:\n{}", operator.log_tail()))?;
    let recovery = started.ready.elapsed();
    eprintln!(
        "all {CLUSTERS} clusters converged {recovery:?} after the API server's /readyz said ok, \
         {:?} after its first answer (outage {outage:?}): {}",
        started.answering.elapsed(),
        converged.summary()
    );
    if let Some(fault) = fault {
        bail!("faults on the way (the figure above includes their repair): {fault}");
    }
    ensure!(converged.pods == PODS, "{}", converged.summary());
    fx.assert_settled(&converged).await?;
    drop(operator);
    fx.finish().await?;
    Ok(recovery)
}

fn outage_from_env(default: Duration) -> anyhow::Result<Duration> {
    match std::env::var(OUTAGE_ENV) {
        Ok(secs) => Ok(Duration::from_secs_f64(
            secs.parse()
                .with_context(|| format!("{OUTAGE_ENV}={secs}"))?,
        )),
        Err(_) => Ok(default),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_restart_mid_create_converges() -> anyhow::Result<()> {
    let recovery = apiserver_outage_mid_create(outage_from_env(Duration::from_secs(3))?).await?;
    eprintln!(
        "converged {recovery:?} after the API server's /readyz said ok (goal {RECOVERY_GOAL:?})"
    );
    ensure!(
        recovery <= RECOVERY_BOUND,
        "converged {recovery:?} after the API server's /readyz said ok; the goal is {RECOVERY_GOAL:?}"
    );
    Ok(())
}

/// The figure for a long outage; no time goal (the convergence and the children are still
/// checked). `cargo test -p wasmray-e2e --test faults -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 60 s outage: run for the figure"]
async fn apiserver_restart_after_a_60s_outage() -> anyhow::Result<()> {
    let recovery = apiserver_outage_mid_create(outage_from_env(Duration::from_secs(60))?).await?;
    eprintln!("long outage: converged {recovery:?} after the API server's /readyz said ok");
    Ok(())
}
