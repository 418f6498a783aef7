//! Hostile plugins against the host's write policy and its fairness, on the real control
//! plane: whatever a plugin answers, the host writes only what the policy allows, what the
//! parent owns and at a rate the other objects do not feel.
//!
//! Each case runs the hostile test plugin on one RayCluster, with two ordinary RayClusters
//! (the built-in plugin) created beside it, and checks that
//! - the ordinary clusters become ready within a few seconds of the time one took alone,
//!   measured in the same test just before;
//! - nothing was written that should not be;
//! - the hostile cluster carries a condition and an event that name the rule;
//! - the test process (operator included) stays under a memory bound.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ResourceQuota};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use wasmray_crds::samples::{load_sample, samples_dir};
use wasmray_e2e::operator::{
    Fixture, OperatorOptions, audited_writes, condition, eventually, start_operator,
};

/// How much slower than alone an ordinary cluster may become ready beside a hostile one.
const SLACK: Duration = Duration::from_secs(5);
/// The test process's resident memory may not grow past this (the operators of the tests
/// running at once, their plugin runtimes and the test clients).
const RSS_LIMIT_MIB: u64 = 1024;

fn hostile(name: &str, config: impl Into<String>) -> (String, PathBuf, String) {
    (
        name.to_owned(),
        PathBuf::from(wasmray::builtin::test_plugins::HOSTILE),
        config.into(),
    )
}

/// The Helm chart's sample (a head and one worker, at most three) under `name`, reconciled
/// by `plugin` when given.
fn sample(name: &str, plugin: Option<&str>) -> anyhow::Result<Value> {
    let mut cluster = load_sample(&samples_dir().join("ray-cluster.helm-default.yaml"))?;
    cluster["metadata"]["name"] = json!(name);
    if let Some(plugin) = plugin {
        cluster["metadata"]["annotations"] = json!({"wasmray.io/plugin": plugin});
    }
    Ok(cluster)
}

/// How long an ordinary cluster takes to become ready.
async fn time_to_ready(fx: &Fixture, name: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    fx.create(sample(name, None)?).await?;
    fx.wait_ready(name, 2).await?;
    Ok(started.elapsed())
}

/// Creates the hostile clusters (name, plugin), then two ordinary ones beside them, and
/// checks the ordinary ones are not slowed by more than [`SLACK`].
async fn beside_hostile(fx: &Fixture, hostile: &[(&str, &str)]) -> anyhow::Result<()> {
    let alone = time_to_ready(fx, "alone").await?;
    for (name, plugin) in hostile {
        fx.create(sample(name, Some(plugin))?).await?;
    }
    let (first, second) =
        tokio::try_join!(time_to_ready(fx, "beside-a"), time_to_ready(fx, "beside-b"))?;
    eprintln!("ready alone in {alone:?}; beside {hostile:?} in {first:?} and {second:?}",);
    for beside in [first, second] {
        ensure!(
            beside <= alone + SLACK,
            "an ordinary cluster took {beside:?} beside {hostile:?}, alone {alone:?}"
        );
    }
    Ok(())
}

/// Waits for the `PluginFailure` condition with `reason` and a message holding `rule`, and
/// a Warning event saying the same.
async fn refused_with(fx: &Fixture, cluster: &str, reason: &str, rule: &str) -> anyhow::Result<()> {
    eventually(&format!("{cluster}: {reason} naming {rule:?}"), || async {
        let status = fx.status(cluster).await?;
        let failure = condition(&status, "PluginFailure").context("no PluginFailure condition")?;
        ensure!(failure["reason"] == reason, "{failure}");
        let message = failure["message"].as_str().unwrap_or_default();
        ensure!(message.contains(rule), "{message}");
        let events = fx.events(cluster).await?;
        ensure!(
            events
                .iter()
                .any(|event| event.type_.as_deref() == Some("Warning")
                    && event.reason.as_deref() == Some("PluginFailure")
                    && event
                        .note
                        .as_deref()
                        .is_some_and(|note| note.contains(rule))),
            "no Warning event naming {rule:?}"
        );
        Ok(())
    })
    .await
}

/// Waits for the `Throttled` condition with `reason` and the Warning event of that reason.
async fn throttled_with(fx: &Fixture, cluster: &str, reason: &str) -> anyhow::Result<()> {
    eventually(&format!("{cluster} throttled for {reason}"), || async {
        let status = fx.status(cluster).await?;
        let throttled = condition(&status, "Throttled").context("no Throttled condition")?;
        ensure!(throttled["reason"] == reason, "{throttled}");
        let events = fx.events(cluster).await?;
        ensure!(
            events
                .iter()
                .any(|event| event.type_.as_deref() == Some("Warning")
                    && event.reason.as_deref() == Some(reason)),
            "no {reason} event"
        );
        Ok(())
    })
    .await
}

fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(0, |kib| kib / 1024)
}

fn check_rss() -> anyhow::Result<()> {
    let rss = rss_mib();
    eprintln!("test process RSS {rss} MiB");
    ensure!(
        rss < RSS_LIMIT_MIB,
        "RSS {rss} MiB over {RSS_LIMIT_MIB} MiB"
    );
    Ok(())
}

/// Pods in the namespace owned by the object with this uid.
async fn pods_owned_by(client: &Client, namespace: &str, uid: &str) -> anyhow::Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    Ok(pods
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|pod| pod.owner_references().iter().any(|owner| owner.uid == uid))
        .collect())
}

async fn fixture(prefix: &str, plugins: Vec<(String, PathBuf, String)>) -> anyhow::Result<Fixture> {
    Fixture::new(
        prefix,
        OperatorOptions {
            extra_plugins: plugins,
            ..OperatorOptions::default()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_bomb_is_refused_whole_and_costs_the_others_nothing() -> anyhow::Result<()> {
    let fx = fixture("hostile-pods", vec![hostile("bomb", "pod-bomb 100000")]).await?;
    beside_hostile(&fx, &[("evil", "bomb")]).await?;
    refused_with(&fx, "evil", "PluginAnswerOverLimit", "pods-per-answer").await?;
    let evil = fx.clusters().get("evil").await?;
    let owned = pods_owned_by(&fx.client, &fx.ns.name, &evil.uid().unwrap_or_default()).await?;
    ensure!(
        owned.is_empty(),
        "{} pods of the bomb were created",
        owned.len()
    );
    check_rss()?;
    fx.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_objects_are_refused_whole() -> anyhow::Result<()> {
    let fx = fixture(
        "hostile-objects",
        vec![hostile("hoard", "many-objects 10000")],
    )
    .await?;
    beside_hostile(&fx, &[("evil", "hoard")]).await?;
    refused_with(&fx, "evil", "PluginAnswerOverLimit", "objects-per-answer").await?;
    let maps: Api<ConfigMap> = Api::namespaced(fx.client.clone(), &fx.ns.name);
    ensure!(
        maps.get_opt("hostile-0").await?.is_none(),
        "a ConfigMap of the answer was written"
    );
    check_rss()?;
    fx.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_and_cluster_scoped_objects_are_refused() -> anyhow::Result<()> {
    let suffix = format!("{}", std::process::id());
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "hostile-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "default"}]});
    let cluster_binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("hostile-admin-{suffix}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}]});
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": format!("hostile-{suffix}")}});
    let fx = fixture(
        "hostile-rbac",
        vec![
            hostile("binder", format!("apply {binding}")),
            hostile("cluster-binder", format!("apply {cluster_binding}")),
            hostile("namer", format!("apply {namespace}")),
        ],
    )
    .await?;
    beside_hostile(
        &fx,
        &[
            ("evil-rb", "binder"),
            ("evil-crb", "cluster-binder"),
            ("evil-ns", "namer"),
        ],
    )
    .await?;
    refused_with(
        &fx,
        "evil-rb",
        "PluginWriteNotAllowed",
        "ClusterRole \"cluster-admin\"",
    )
    .await?;
    refused_with(
        &fx,
        "evil-crb",
        "PluginWriteNotAllowed",
        "rbac.authorization.k8s.io/v1 ClusterRoleBinding is not a child kind",
    )
    .await?;
    refused_with(
        &fx,
        "evil-ns",
        "PluginWriteNotAllowed",
        "v1 Namespace is not a child kind",
    )
    .await?;
    let bindings: Api<RoleBinding> = Api::namespaced(fx.client.clone(), &fx.ns.name);
    ensure!(
        bindings.get_opt("hostile-admin").await?.is_none(),
        "RoleBinding written"
    );
    let cluster_bindings: Api<ClusterRoleBinding> = Api::all(fx.client.clone());
    ensure!(
        cluster_bindings
            .get_opt(&format!("hostile-admin-{suffix}"))
            .await?
            .is_none(),
        "ClusterRoleBinding written"
    );
    let namespaces: Api<Namespace> = Api::all(fx.client.clone());
    ensure!(
        namespaces
            .get_opt(&format!("hostile-{suffix}"))
            .await?
            .is_none(),
        "Namespace written"
    );
    check_rss()?;
    fx.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_of_another_clusters_pod_is_refused_even_with_its_uid() -> anyhow::Result<()> {
    let mut fx = fixture("hostile-delete", Vec::new()).await?;
    fx.create(sample("victim", None)?).await?;
    fx.wait_ready("victim", 2).await?;
    let victim = fx.pods("victim").await?;
    let target = victim.first().context("victim has no pods")?;
    let (name, uid) = (target.name_any(), target.uid().unwrap_or_default());
    // The hostile plugin gets the real name and uid of the victim's pod.
    fx.operator.shutdown().await;
    fx.operator = start_operator(
        &fx.ns.name,
        OperatorOptions {
            extra_plugins: vec![hostile("deleter", format!("delete v1 Pod {name} {uid}"))],
            ..OperatorOptions::default()
        },
    )
    .await?;
    beside_hostile(&fx, &[("evil", "deleter")]).await?;
    refused_with(
        &fx,
        "evil",
        "PluginWriteNotOwned",
        "owned by another RayCluster",
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(fx.client.clone(), &fx.ns.name);
    let still = pods.get(&name).await?;
    ensure!(
        still.uid().as_deref() == Some(uid.as_str()) && still.metadata.deletion_timestamp.is_none(),
        "the victim's pod was deleted"
    );
    check_rss()?;
    fx.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_that_changes_on_every_call_is_written_at_the_floor_rate() -> anyhow::Result<()> {
    let fx = fixture("hostile-churn", vec![hostile("churn", "status-churn")]).await?;
    beside_hostile(&fx, &[("evil", "churn")]).await?;
    throttled_with(&fx, "evil", "RequeueFloor").await?;
    // Status writes for it over ten seconds: about one per second (the floor), not the
    // thousands a 1 ms requeue would make.
    let audit_log = wasmray_e2e::cluster().await?.info().audit_log.clone();
    let status_writes = || -> anyhow::Result<usize> {
        Ok(audited_writes(&audit_log, &fx.operator.agent)?
            .iter()
            .filter(|event| {
                event["objectRef"]["name"] == "evil"
                    && event["objectRef"]["subresource"] == "status"
            })
            .count())
    };
    let before = status_writes()?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let writes = status_writes()? - before;
    eprintln!("status writes of the churning cluster in 10 s: {writes}");
    ensure!(writes <= 15, "{writes} status writes in 10 s");
    check_rss()?;
    fx.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_plugin_asking_for_a_1ms_requeue_is_held_to_the_floor() -> anyhow::Result<()> {
    let fx = fixture("hostile-slow", vec![hostile("slow", "slow 20000000")]).await?;
    beside_hostile(&fx, &[("evil", "slow")]).await?;
    throttled_with(&fx, "evil", "RequeueFloor").await?;
    check_rss()?;
    fx.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mib_status_is_refused_before_the_api_server_sees_it() -> anyhow::Result<()> {
    let fx = fixture(
        "hostile-status",
        vec![hostile("big", "big-status 10485760")],
    )
    .await?;
    beside_hostile(&fx, &[("evil", "big")]).await?;
    refused_with(&fx, "evil", "PluginAnswerOverLimit", "status-bytes").await?;
    let status = fx.status("evil").await?;
    ensure!(
        status.to_string().len() < 64 * 1024,
        "the big status was written"
    );
    check_rss()?;
    fx.finish().await
}

/// A hostile cluster whose plugin creates `pods` pods in one answer (the spec allows them),
/// with the operator's client limited to 50 requests per second so the creates take
/// seconds.
async fn slow_creates(prefix: &str, pods: usize) -> anyhow::Result<(Fixture, String)> {
    let fx = Fixture::new(
        prefix,
        OperatorOptions {
            extra_plugins: vec![hostile("creator", format!("pod-bomb {pods}"))],
            rate_limit: Some((50.0, 50)),
            ..OperatorOptions::default()
        },
    )
    .await?;
    let mut cluster = sample("many", Some("creator"))?;
    cluster["spec"]["workerGroupSpecs"][0]["maxReplicas"] = json!(pods);
    let created = fx.create(cluster).await?;
    let uid = created.uid().unwrap_or_default();
    eventually("the first pods", || async {
        let owned = pods_owned_by(&fx.client, &fx.ns.name, &uid).await?;
        ensure!(owned.len() >= 10, "{} pods", owned.len());
        Ok(())
    })
    .await?;
    Ok((fx, uid))
}

/// Pod creates the operator sent after `after` (by the audit log's receive time).
async fn creates_after(fx: &Fixture, after: Timestamp) -> anyhow::Result<Vec<Timestamp>> {
    let audit_log = wasmray_e2e::cluster().await?.info().audit_log.clone();
    Ok(audited_writes(&audit_log, &fx.operator.agent)?
        .iter()
        .filter(|event| event["verb"] == "create" && event["objectRef"]["resource"] == "pods")
        .filter_map(|event| event["requestReceivedTimestamp"].as_str()?.parse().ok())
        .filter(|at: &Timestamp| *at > after)
        .collect())
}

fn two_seconds_from_now() -> Timestamp {
    Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_parent_stops_its_creates_within_two_seconds() -> anyhow::Result<()> {
    let (fx, uid) = slow_creates("hostile-stop-delete", 600).await?;
    fx.clusters()
        .delete("many", &DeleteParams::default())
        .await?;
    let deadline = two_seconds_from_now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let late = creates_after(&fx, deadline).await?;
    ensure!(
        late.is_empty(),
        "{} pod creates more than 2 s after the delete: {late:?}",
        late.len()
    );
    let created = audited_writes(
        &wasmray_e2e::cluster().await?.info().audit_log,
        &fx.operator.agent,
    )?
    .iter()
    .filter(|event| event["verb"] == "create" && event["objectRef"]["resource"] == "pods")
    .count();
    eprintln!("pods created before the delete stopped them: {created} of 600 ({uid})");
    ensure!(created < 600, "all 600 creates went out");
    fx.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_operator_stops_its_creates_and_it_ends_promptly() -> anyhow::Result<()> {
    let (mut fx, _) = slow_creates("hostile-stop-operator", 600).await?;
    let deadline = two_seconds_from_now();
    let stopped = Instant::now();
    let _ = fx.operator.stop.send(true);
    let task = std::mem::replace(&mut fx.operator.task, tokio::spawn(async {}));
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .context("the operator did not end within 5 s of its stop")??;
    eprintln!("operator ended {:?} after its stop", stopped.elapsed());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let late = creates_after(&fx, deadline).await?;
    ensure!(
        late.is_empty(),
        "{} pod creates more than 2 s after the stop",
        late.len()
    );
    fx.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_that_refuses_workers_backs_off_and_converges_once_lifted() -> anyhow::Result<()> {
    let fx = Fixture::new(
        "hostile-quota",
        OperatorOptions {
            configure: Some(Box::new(|config| {
                config.backoff_max = Duration::from_secs(8);
            })),
            ..OperatorOptions::default()
        },
    )
    .await?;
    let quotas: Api<ResourceQuota> = Api::namespaced(fx.client.clone(), &fx.ns.name);
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "one-pod"}, "spec": {"hard": {"pods": "1"}}
    }))?;
    quotas.create(&PostParams::default(), &quota).await?;
    // The quota controller fills in the usage before the admission enforces it.
    eventually("the quota in force", || async {
        let quota = quotas.get("one-pod").await?;
        ensure!(
            quota.status.and_then(|status| status.hard).is_some(),
            "no status yet"
        );
        Ok(())
    })
    .await?;
    fx.create(sample("quota", None)?).await?;
    eventually("the WriteFailure condition naming the quota", || async {
        let status = fx.status("quota").await?;
        let failure = condition(&status, "WriteFailure").context("no WriteFailure")?;
        let message = failure["message"].as_str().unwrap_or_default();
        ensure!(message.contains("exceeded quota"), "{message}");
        Ok(())
    })
    .await?;
    let audit_log = wasmray_e2e::cluster().await?.info().audit_log.clone();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let before = audited_writes(&audit_log, &fx.operator.agent)?.len();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let writes = audited_writes(&audit_log, &fx.operator.agent)?.len() - before;
    eprintln!("writes for the refused cluster in 30 s of backoff: {writes}");
    ensure!(writes <= 12, "{writes} writes in 30 s: no backoff");
    quotas.delete("one-pod", &DeleteParams::default()).await?;
    let lifted = Instant::now();
    fx.wait_ready("quota", 2).await?;
    eprintln!("ready {:?} after the quota was lifted", lifted.elapsed());
    ensure!(
        lifted.elapsed() < Duration::from_secs(20),
        "took {:?} after the quota was lifted",
        lifted.elapsed()
    );
    fx.finish().await
}
