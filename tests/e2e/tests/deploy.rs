//! The deployment end to end: the REAL `wasmray` entry point (`wasmray::cli::main`, run as
//! the subprocess `wasmray-e2e-host`) against the real control plane, under the identity of
//! the Helm chart's ServiceAccount with the chart's RBAC (rendered by `helm template`), not
//! the admin's.
//!
//! - the chart's RBAC suffices for a RayCluster to go ready, and denies what the host does
//!   not need (listing Secrets cluster-wide); `/metrics` then has KubeRay's families with
//!   the right labels and the host's own;
//! - `/readyz` stays unready until the caches synced (here: until RBAC lets them list);
//! - two replicas: only the leader writes; SIGKILL of the leader in the middle of creating a
//!   batch of clusters hands over within the lease timings, and the new leader finishes the
//!   batch with no pod made twice, none missing and none orphaned.
//!
//! Each host watches only its test's namespace and its Lease lives there, so tests running
//! beside it on the shared control plane are untouched.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{
    Api, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::{Client, ResourceExt};
use serde_json::Value;
use wasmray_crds::RayCluster;
use wasmray_crds::samples::{load_sample, samples_dir};
use wasmray_e2e::binary::{Operator, OperatorCommand, http_get};
use wasmray_e2e::census;

/// Generous: the machine running the tests may be loaded.
const TIMEOUT: Duration = Duration::from_secs(180);
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/helm/wasmray");
/// Short lease timings so the handover test takes seconds (production: 15 s/10 s/2 s).
const LEASE: Duration = Duration::from_secs(4);
const RENEW_DEADLINE: Duration = Duration::from_secs(3);
const RETRY: Duration = Duration::from_millis(500);
const LEASE_NAME: &str = "wasmray-operator-leader";
/// The batch the leader dies in the middle of: clusters, workers each, and how many of its
/// pods exist when the leader is killed.
const BATCH: usize = 8;
const BATCH_WORKERS: i64 = 4;
const KILL_AFTER_PODS: usize = 10;

async fn eventually<T, F, Fut>(what: &str, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    wasmray_e2e::eventually(what, TIMEOUT, check).await
}

/// The helm binary: `WASMRAY_HELM_BIN`, else built (cached) by tests/tools/helm/build.sh.
fn helm() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("WASMRAY_HELM_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/helm/build.sh");
    let output = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    ensure!(output.status.success(), "{} failed", script.display());
    Ok(PathBuf::from(String::from_utf8(output.stdout)?.trim()))
}

/// The chart rendered for a release in `namespace`, as JSON documents.
fn render_chart(namespace: &str, sets: &[String]) -> anyhow::Result<Vec<Value>> {
    let mut command = Command::new(helm()?);
    command
        .args(["template", "wasmray", CHART, "--namespace", namespace])
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("wasmray-e2e-helm"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("wasmray-e2e-helm"),
        );
    for set in sets {
        command.arg("--set").arg(set);
    }
    let output = command.output().context("running helm template")?;
    ensure!(
        output.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_slice(&output.stdout) {
        let value: Value = serde::Deserialize::deserialize(document)?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// The chart's identity and RBAC for one test: cluster-scoped names made unique per
/// namespace so test runs never share them.
struct ChartInstall {
    namespace: String,
    documents: Vec<Value>,
}

impl ChartInstall {
    fn render(namespace: &str) -> anyhow::Result<Self> {
        let documents = render_chart(
            namespace,
            &[format!("fullnameOverride=wasmray-{namespace}")],
        )?
        .into_iter()
        .filter(|document| {
            matches!(
                document["kind"].as_str(),
                Some(
                    "ServiceAccount"
                        | "ClusterRole"
                        | "ClusterRoleBinding"
                        | "Role"
                        | "RoleBinding"
                )
            )
        })
        .collect::<Vec<_>>();
        ensure!(
            documents.iter().any(|d| d["kind"] == "ClusterRole"),
            "the chart rendered no ClusterRole"
        );
        Ok(ChartInstall {
            namespace: namespace.to_owned(),
            documents,
        })
    }

    fn service_account(&self) -> String {
        format!("wasmray-{}", self.namespace)
    }

    /// Server-side applies the documents of the given kinds.
    async fn apply(&self, client: &Client, kinds: &[&str]) -> anyhow::Result<()> {
        for document in &self.documents {
            let kind = document["kind"].as_str().unwrap_or_default();
            if !kinds.contains(&kind) {
                continue;
            }
            let gvk = GroupVersionKind::try_from(&serde_json::from_value::<kube::api::TypeMeta>(
                document.clone(),
            )?)?;
            let (resource, _) = kube::discovery::pinned_kind(client, &gvk).await?;
            let api: Api<DynamicObject> = match document["metadata"]["namespace"].as_str() {
                Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
                None => Api::all_with(client.clone(), &resource),
            };
            let name = document["metadata"]["name"].as_str().unwrap_or_default();
            api.patch(
                name,
                &PatchParams::apply("wasmray-e2e").force(),
                &Patch::Apply(document),
            )
            .await
            .with_context(|| format!("applying {kind} {name}"))?;
        }
        Ok(())
    }

    /// Deletes the cluster-scoped objects (the namespace takes the rest).
    async fn remove_cluster_scoped(&self, client: &Client) {
        use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
        let name = self.service_account();
        let _ = Api::<ClusterRoleBinding>::all(client.clone())
            .delete(&name, &DeleteParams::default())
            .await;
        let _ = Api::<ClusterRole>::all(client.clone())
            .delete(&name, &DeleteParams::default())
            .await;
    }

    /// A bound token of the chart's ServiceAccount, and its JTI (what the audit log records
    /// as the credential id).
    async fn token(&self, client: &Client) -> anyhow::Result<(String, String)> {
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &self.namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let answer = accounts
            .create_token_request(&self.service_account(), &PostParams::default(), &request)
            .await
            .context("minting a ServiceAccount token")?;
        let token = answer
            .status
            .and_then(|status| status.token)
            .context("TokenRequest answered without a token")?;
        let claims = token.split('.').nth(1).context("token is not a JWT")?;
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims)?,
        )?;
        let jti = claims["jti"]
            .as_str()
            .context("token without jti")?
            .to_owned();
        Ok((token, jti))
    }
}

/// The host binary running under a token, watching `namespace` (its Lease lives there too,
/// with short timings).
async fn start_host(
    namespace: &str,
    token: &str,
    name: &str,
    extra: &[&str],
) -> anyhow::Result<Operator> {
    let cluster = wasmray_e2e::cluster().await?;
    let dir = std::env::temp_dir()
        .join("wasmray-e2e-deploy")
        .join(namespace);
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(
        &kubeconfig,
        serde_yaml::to_string(&cluster.kubeconfig_with_token(token)?)?,
    )?;
    let mut args = vec![
        format!("--leader-election-namespace={namespace}"),
        format!("--leader-election-lease-duration={}ms", LEASE.as_millis()),
        format!(
            "--leader-election-renew-deadline={}ms",
            RENEW_DEADLINE.as_millis()
        ),
        format!("--leader-election-retry-period={}ms", RETRY.as_millis()),
    ];
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    Operator::start(OperatorCommand {
        binary: Path::new(env!("CARGO_BIN_EXE_wasmray-e2e-host")),
        kubeconfig: &kubeconfig,
        namespace,
        name,
        log_dir: &dir,
        args: &args,
    })
    .await
}

async fn create_sample(client: &Client, namespace: &str, name: &str) -> anyhow::Result<()> {
    let mut cluster: RayCluster =
        serde_json::from_value(load_sample(&samples_dir().join("ray-cluster.sample.yaml"))?)?;
    cluster.metadata.name = Some(name.to_owned());
    Api::<RayCluster>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &cluster)
        .await?;
    Ok(())
}

async fn wait_cluster_ready(client: &Client, namespace: &str, name: &str) -> anyhow::Result<()> {
    let clusters: Api<RayCluster> = Api::namespaced(client.clone(), namespace);
    eventually(&format!("RayCluster {name} ready"), || async {
        let cluster = clusters.get(name).await?;
        let state = serde_json::to_value(&cluster)?["status"]["state"].clone();
        ensure!(state == "ready", "state is {state}");
        Ok(())
    })
    .await
}

async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let dir = Path::new(CHART).join("crds");
    let files: Vec<PathBuf> = [
        "ray.io_rayclusters.yaml",
        "ray.io_rayjobs.yaml",
        "ray.io_rayservices.yaml",
    ]
    .iter()
    .map(|file| dir.join(file))
    .collect();
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    wasmray_e2e::crds::apply_crd_files(client, &paths).await
}

/// The samples of one family in a Prometheus text exposition: labels to value.
fn samples(text: &str, family: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(family)?.strip_prefix('{')?;
            let (labels, value) = rest.rsplit_once("} ")?;
            let labels = labels
                .split("\",")
                .filter_map(|pair| {
                    let (key, value) = pair.split_once("=\"")?;
                    Some((key.to_owned(), value.trim_end_matches('"').to_owned()))
                })
                .collect();
            Some((labels, value.parse().ok()?))
        })
        .collect()
}

fn has_sample(text: &str, family: &str, labels: &[(&str, &str)]) -> bool {
    samples(text, family).iter().any(|(found, _)| {
        labels
            .iter()
            .all(|(key, value)| found.get(*key).map(String::as_str) == Some(*value))
    })
}

#[tokio::test]
async fn chart_rbac_suffices_confines_the_host_and_metrics_follow() -> anyhow::Result<()> {
    let cluster = wasmray_e2e::cluster().await?;
    let admin = cluster.client().await?;
    install_crds(&admin).await?;
    let ns = cluster.namespace("deploy-rbac").await?;
    let chart = ChartInstall::render(&ns.name)?;
    chart
        .apply(
            &admin,
            &[
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
            ],
        )
        .await?;
    let (token, _) = chart.token(&admin).await?;
    let result = async {
        let host = start_host(&ns.name, &token, "only", &[]).await?;
        create_sample(&admin, &ns.name, "sample").await?;
        wait_cluster_ready(&admin, &ns.name, "sample")
            .await
            .with_context(|| format!("host log:\n{}", host.log_tail()))?;

        // The same identity may not read what the chart does not grant.
        let as_operator = cluster.client_with_token(&token).await?;
        match Api::<Secret>::all(as_operator)
            .list(&Default::default())
            .await
        {
            Err(kube::Error::Api(status)) => {
                ensure!(status.code == 403, "listing Secrets: {status:?}")
            }
            other => {
                bail!("listing Secrets cluster-wide as the operator should be forbidden: {other:?}")
            }
        }

        // Every scope syncs on its own: the RayJob one may list a moment after the
        // RayCluster one brought its cluster up.
        eventually("/readyz ok", || async {
            let (status, body) = http_get(host.address, "/readyz").await?;
            ensure!(
                status == 200 && body.trim() == "ok",
                "/readyz: {status} {body}"
            );
            Ok(())
        })
        .await?;
        let uid = Api::<RayCluster>::namespaced(admin.clone(), &ns.name)
            .get("sample")
            .await?
            .uid()
            .unwrap_or_default();
        let id = [
            ("name", "sample"),
            ("namespace", ns.name.as_str()),
            ("uid", uid.as_str()),
        ];
        eventually("/metrics describes the ready cluster", || async {
            let (_, text) = http_get(host.address, "/metrics").await?;
            let with = |extra: (&'static str, &'static str)| {
                let mut labels = id.to_vec();
                labels.push(extra);
                labels
            };
            ensure!(
                has_sample(&text, "kuberay_cluster_info", &with(("owner_kind", "None"))),
                "cluster_info:\n{text}"
            );
            ensure!(
                has_sample(
                    &text,
                    "kuberay_cluster_condition_provisioned",
                    &with(("condition", "true"))
                ),
                "condition_provisioned:\n{text}"
            );
            let durations = samples(&text, "kuberay_cluster_provisioned_duration_seconds");
            ensure!(
                durations
                    .iter()
                    .any(|(labels, seconds)| labels.get("uid") == Some(&uid) && *seconds >= 0.0),
                "provisioned_duration:\n{text}"
            );
            for family in [
                "kuberay_job_info",
                "kuberay_job_deployment_status",
                "kuberay_job_execution_duration_seconds",
                "kuberay_service_info",
                "kuberay_service_condition_ready",
                "kuberay_service_condition_upgrade_in_progress",
            ] {
                ensure!(
                    text.contains(&format!("# TYPE {family} gauge")),
                    "{family} not registered"
                );
            }
            ensure!(
                has_sample(
                    &text,
                    "controller_runtime_reconcile_total",
                    &[("controller", "raycluster")]
                ),
                "reconcile_total:\n{text}"
            );
            ensure!(
                has_sample(
                    &text,
                    "controller_runtime_reconcile_time_seconds_count",
                    &[("controller", "raycluster")]
                ),
                "reconcile_time:\n{text}"
            );
            ensure!(
                has_sample(
                    &text,
                    "wasmray_plugin_call_duration_seconds_count",
                    &[("plugin", "raycluster")]
                ),
                "plugin calls:\n{text}"
            );
            ensure!(
                has_sample(
                    &text,
                    "rest_client_requests_total",
                    &[("method", "POST"), ("code", "201")]
                ),
                "requests:\n{text}"
            );
            Ok(())
        })
        .await?;
        Ok(())
    }
    .await;
    chart.remove_cluster_scoped(&admin).await;
    ns.cleanup(&admin).await?;
    result
}

#[tokio::test]
async fn readyz_turns_ready_only_after_the_caches_synced() -> anyhow::Result<()> {
    let cluster = wasmray_e2e::cluster().await?;
    let admin = cluster.client().await?;
    install_crds(&admin).await?;
    let ns = cluster.namespace("deploy-readyz").await?;
    let chart = ChartInstall::render(&ns.name)?;
    // The identity exists, its permissions not yet: no cache can list.
    chart.apply(&admin, &["ServiceAccount"]).await?;
    let (token, _) = chart.token(&admin).await?;
    let result = async {
        let host = start_host(
            &ns.name,
            &token,
            "unready",
            &["--enable-leader-election=false"],
        )
        .await?;
        let watched_since = Instant::now();
        while watched_since.elapsed() < Duration::from_secs(3) {
            let (status, body) = http_get(host.address, "/readyz").await?;
            ensure!(
                status == 503,
                "/readyz before any cache could sync: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let (_, body) = http_get(host.address, "/readyz").await?;
        ensure!(
            body.contains("caches not synced: RayCluster in"),
            "/readyz says: {body}"
        );
        chart
            .apply(
                &admin,
                &["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"],
            )
            .await?;
        eventually("/readyz ready once RBAC lets the caches list", || async {
            let (status, body) = http_get(host.address, "/readyz").await?;
            ensure!(
                status == 200 && body.trim() == "ok",
                "/readyz: {status} {body}"
            );
            Ok(())
        })
        .await
        .with_context(|| format!("host log:\n{}", host.log_tail()))
    }
    .await;
    chart.remove_cluster_scoped(&admin).await;
    ns.cleanup(&admin).await?;
    result
}

/// Audit events of writes in `namespace` made with the credential whose JTI is `jti`.
fn writes_by(audit_log: &Path, namespace: &str, jti: &str) -> anyhow::Result<Vec<String>> {
    let credential = format!("JTI={jti}");
    let text = std::fs::read_to_string(audit_log)?;
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| {
            matches!(
                event["verb"].as_str(),
                Some("create" | "update" | "patch" | "delete" | "deletecollection")
            ) && event["objectRef"]["namespace"] == namespace
                && event["user"]["extra"]["authentication.kubernetes.io/credential-id"]
                    .as_array()
                    .is_some_and(|ids| ids.iter().any(|id| id == credential.as_str()))
        })
        .map(|event| format!("{} {}", event["verb"], event["requestURI"]))
        .collect())
}

async fn lease_holder(admin: &Client, namespace: &str) -> anyhow::Result<String> {
    wasmray_e2e::binary::lease_holder(admin, namespace, LEASE_NAME).await
}

#[tokio::test]
async fn only_the_leader_writes_and_a_standby_takes_over() -> anyhow::Result<()> {
    let cluster = wasmray_e2e::cluster().await?;
    let admin = cluster.client().await?;
    install_crds(&admin).await?;
    let ns = cluster.namespace("deploy-leader").await?;
    let chart = ChartInstall::render(&ns.name)?;
    chart
        .apply(
            &admin,
            &[
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
            ],
        )
        .await?;
    // One token per replica: the audit log tells their requests apart by token id.
    let (token_a, jti_a) = chart.token(&admin).await?;
    let (token_b, jti_b) = chart.token(&admin).await?;
    let audit_log = cluster.info().audit_log.clone();
    let result = async {
        let mut first = start_host(&ns.name, &token_a, "replica-a", &[]).await?;
        let leader = eventually("replica-a holds the lease", || async {
            let holder = lease_holder(&admin, &ns.name).await?;
            ensure!(holder.starts_with("replica-a_"), "holder {holder:?}");
            Ok(holder)
        })
        .await
        .with_context(|| format!("replica-a log:\n{}", first.log_tail()))?;
        let second = start_host(&ns.name, &token_b, "replica-b", &[]).await?;
        let (status, body) = http_get(second.address, "/readyz").await?;
        ensure!(status == 200 && body.starts_with("standby"), "standby /readyz: {status} {body}");

        create_sample(&admin, &ns.name, "before").await?;
        wait_cluster_ready(&admin, &ns.name, "before")
            .await
            .with_context(|| format!("replica-a log:\n{}", first.log_tail()))?;
        ensure!(lease_holder(&admin, &ns.name).await? == leader, "the lead moved without a failure");
        let leader_writes = writes_by(&audit_log, &ns.name, &jti_a)?;
        ensure!(
            leader_writes.iter().any(|write| write.contains("/pods")),
            "the leader's pod creates are not in the audit log: {leader_writes:?}"
        );
        let standby_writes = writes_by(&audit_log, &ns.name, &jti_b)?;
        ensure!(standby_writes.is_empty(), "the standby wrote: {standby_writes:?}");

        // The leader dies in the middle of a create, with some of a batch's pods made and
        // the rest not; the new leader must finish the batch without a second pod for any
        // slot, and leave nothing unowned.
        let batch: BTreeSet<String> = (0..BATCH).map(|i| format!("batch-{i}")).collect();
        census::create_samples(&admin, &ns.name, &batch, BATCH_WORKERS).await?;
        // "before" has a head and one worker.
        census::until_pods(&admin, &ns.name, 2 + KILL_AFTER_PODS, TIMEOUT).await?;
        first.kill();
        let killed = Instant::now();
        let batch_pods = BATCH * (1 + BATCH_WORKERS as usize);
        let at_kill = census::take(&admin, &ns.name, &batch)
            .await?
            .pods
            .saturating_sub(2);
        eprintln!("leader killed with {at_kill} of the batch's {batch_pods} pods made");
        ensure!(
            at_kill < batch_pods,
            "the leader made all {batch_pods} pods before it was killed: no failover mid-create"
        );
        let new_leader = eventually("replica-b takes the lease", || async {
            let holder = lease_holder(&admin, &ns.name).await?;
            ensure!(holder.starts_with("replica-b_"), "holder {holder:?}");
            Ok(holder)
        })
        .await
        .with_context(|| format!("replica-b log:\n{}", second.log_tail()))?;
        let handover = killed.elapsed();
        eprintln!("leader handover after SIGKILL: {handover:?} (lease {LEASE:?}, retry {RETRY:?}), new leader {new_leader}");
        // The standby takes over once the record stayed unchanged for the lease duration;
        // it sees the last renewal at most one retry period late.
        ensure!(
            handover <= LEASE + 2 * RETRY + Duration::from_secs(2),
            "handover took {handover:?}"
        );

        let mut expected = batch.clone();
        expected.insert("before".to_owned());
        let done = census::wait_converged(&admin, &ns.name, &expected, TIMEOUT)
            .await
            .with_context(|| format!("replica-b log:\n{}", second.log_tail()))?;
        eprintln!(
            "batch converged {:?} after the handover: {}",
            killed.elapsed().saturating_sub(handover),
            done.summary()
        );
        let new_writes = writes_by(&audit_log, &ns.name, &jti_b)?;
        ensure!(
            new_writes.iter().any(|write| write.contains("/pods")),
            "the new leader's pod creates are not in the audit log: {new_writes:?}"
        );
        // No pod was deleted, so none was made twice and removed again.
        let writes = census::pod_writes(&audit_log, &ns.name)?;
        ensure!(
            writes.deletes == 0 && writes.created <= done.pods,
            "pod writes {writes:?} for {} live pods",
            done.pods
        );
        drop(second);
        Ok(())
    }
    .await;
    chart.remove_cluster_scoped(&admin).await;
    ns.cleanup(&admin).await?;
    result
}
