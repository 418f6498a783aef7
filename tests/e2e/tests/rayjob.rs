//! RayJob end to end: the real control plane, the host controller in-process (one per test,
//! scoped to the test's namespace), and real Ray (2.60.0 from PyPI) in one of two ways:
//! - the RayJob's own cluster ([`Ray::OwnCluster`]): the pod runner runs the cluster's pods
//!   (and a K8sJobMode submitter) as real Ray processes, and the operator reaches the head by
//!   its pod IP. For the tests of what happens in Ray: submission, status, logs, stops,
//!   failures, an operator restart.
//! - one head shared by the tests of this process ([`Ray::Shared`]), named on each RayJob by the
//!   `wasmray.io/dashboard-address` annotation (the operator allows the override), while kwok
//!   runs the pods. For the tests whose point is the Kubernetes side (names, suspension,
//!   validation, deletion, an existing cluster) or Ray history across clusters that are gone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};
use wasmray::controller::{self, ControllerConfig, plugin_host::PluginHost};
use wasmray::ray::address::DASHBOARD_ADDRESS_ANNOTATION;
use wasmray::ray::{DashboardAddress, DashboardClient, HeadAddress, JobSubmission};
use wasmray::runtime::{Runtime, RuntimeConfig};
use wasmray_crds::{RayCluster, RayJob};
use wasmray_e2e::ray::RayHead;

/// Generous: the machine running the tests may be loaded.
const TIMEOUT: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(250);

/// A controller running in this test's runtime.
struct Operator {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Operator {
    /// `settings` are the plugin settings (KubeRay's env vars, e.g.
    /// `delete-rayjob-cr-after-job-finishes`); `own_clusters` has it reach heads by pod IP
    /// instead of honouring the dashboard-address annotation.
    async fn start(
        client: Client,
        namespace: &str,
        settings: &BTreeMap<String, String>,
        own_clusters: bool,
    ) -> anyhow::Result<Operator> {
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: Some(
                std::env::temp_dir()
                    .join(format!("wasmray-e2e-plugin-cache-{}", std::process::id())),
            ),
            ..RuntimeConfig::default()
        })
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        runtime.install_builtins().await?;
        let config = ControllerConfig {
            namespaces: vec![namespace.to_owned()],
            concurrency: 4,
            allow_dashboard_address_override: !own_clusters,
            ray_head_address: if own_clusters {
                HeadAddress::PodIp
            } else {
                HeadAddress::Service
            },
            ray_timeout: Duration::from_secs(10),
            settings: settings.clone(),
            ..ControllerConfig::default()
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(controller::run(
            client,
            PluginHost::new(Arc::new(runtime)),
            config,
            stopped,
        ));
        Ok(Operator { stop, task })
    }

    async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }
}

/// Where a test's Ray jobs run.
enum Ray {
    Shared(&'static RayHead),
    OwnCluster,
}

/// A namespace, the CRDs, an admin client, Ray and a running operator.
struct Fixture {
    client: Client,
    ns: wasmray_e2e::TestNamespace,
    ray: Ray,
    dashboard: DashboardClient,
    settings: BTreeMap<String, String>,
    operator: Option<Operator>,
}

impl Fixture {
    /// Jobs on the shared head.
    async fn new(prefix: &str) -> anyhow::Result<Fixture> {
        Self::start(prefix, BTreeMap::new(), false).await
    }

    /// Jobs on each RayJob's own cluster.
    async fn own_clusters(prefix: &str) -> anyhow::Result<Fixture> {
        Self::start(prefix, BTreeMap::new(), true).await
    }

    async fn with_settings(
        prefix: &str,
        settings: BTreeMap<String, String>,
    ) -> anyhow::Result<Fixture> {
        Self::start(prefix, settings, false).await
    }

    async fn start(
        prefix: &str,
        settings: BTreeMap<String, String>,
        own_clusters: bool,
    ) -> anyhow::Result<Fixture> {
        let cluster = wasmray_e2e::cluster().await?;
        let client = cluster.client().await?;
        let generated =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds/generated");
        wasmray_e2e::crds::apply_crd_files(
            &client,
            &[
                generated.join("ray.io_rayclusters.yaml").as_path(),
                generated.join("ray.io_rayjobs.yaml").as_path(),
            ],
        )
        .await?;
        let (ray, ns) = if own_clusters {
            (Ray::OwnCluster, cluster.ray_namespace(prefix).await?)
        } else {
            let run_dir = cluster.run_dir().to_owned();
            let head =
                tokio::task::spawn_blocking(move || wasmray_e2e::ray::head(&run_dir)).await??;
            (Ray::Shared(head), cluster.namespace(prefix).await?)
        };
        let operator = Operator::start(client.clone(), &ns.name, &settings, own_clusters).await?;
        Ok(Fixture {
            client,
            ns,
            ray,
            dashboard: DashboardClient::new(Duration::from_secs(10)),
            settings,
            operator: Some(operator),
        })
    }

    async fn restart_operator(&mut self) -> anyhow::Result<()> {
        if let Some(operator) = self.operator.take() {
            operator.shutdown().await;
        }
        let own_clusters = matches!(self.ray, Ray::OwnCluster);
        self.operator = Some(
            Operator::start(
                self.client.clone(),
                &self.ns.name,
                &self.settings,
                own_clusters,
            )
            .await?,
        );
        Ok(())
    }

    /// Deletes the RayJobs while the operator runs (their finalizer needs it), then stops
    /// the operator and deletes the namespace.
    async fn finish(mut self) -> anyhow::Result<()> {
        let rayjobs = self.rayjobs();
        rayjobs
            .delete_collection(&Default::default(), &ListParams::default())
            .await?;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = rayjobs.list(&ListParams::default()).await?.items;
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                let names: Vec<String> = left.iter().map(|job| job.name_any()).collect();
                bail!("RayJobs {names:?} not released within {TIMEOUT:?}");
            }
            tokio::time::sleep(POLL).await;
        }
        if let Some(operator) = self.operator.take() {
            operator.shutdown().await;
        }
        self.ns.cleanup(&self.client).await
    }

    /// Polls Ray (the head `head`) until the job has `status`.
    async fn wait_ray_status(
        &self,
        head: &DashboardAddress,
        job_id: &str,
        status: &str,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let job = self.dashboard.job(head, job_id).await?;
            if job.status == status {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "Ray job {job_id} still {} after {TIMEOUT:?}, not {status}",
                    job.status
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn rayjobs(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &self.ns.name,
            &ApiResource::erase::<RayJob>(&()),
        )
    }

    fn clusters(&self) -> Api<RayCluster> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    fn shared_head(&self) -> anyhow::Result<&'static RayHead> {
        match self.ray {
            Ray::Shared(head) => Ok(head),
            Ray::OwnCluster => bail!("this test runs its jobs on their own clusters"),
        }
    }

    /// The dashboard of the RayJob `name`'s Ray: the shared head, or its cluster's head.
    async fn head(&self, name: &str) -> anyhow::Result<DashboardAddress> {
        if let Ray::Shared(head) = self.ray {
            return Ok(DashboardAddress::new(head.dashboard_url()));
        }
        let job = self.rayjobs().get(name).await?;
        let cluster = job.data["status"]["rayClusterName"]
            .as_str()
            .filter(|name| !name.is_empty())
            .with_context(|| format!("RayJob {name} has no cluster yet"))?
            .to_owned();
        let cluster = serde_json::to_value(self.clusters().get(&cluster).await?)?;
        let ip = cluster["status"]["head"]["podIP"]
            .as_str()
            .filter(|ip| !ip.is_empty())
            .with_context(|| format!("the cluster of RayJob {name} reports no head pod IP"))?;
        Ok(DashboardAddress::new(format!("http://{ip}:8265")))
    }

    /// `python -c 'code'` with the Ray virtualenv's python.
    fn entrypoint(&self, code: &str) -> String {
        match self.ray {
            Ray::Shared(head) => head.python_entrypoint(code),
            // The pod runner puts the virtualenv first on the head's PATH.
            Ray::OwnCluster => {
                assert!(
                    !code.contains('\''),
                    "entrypoint code must not contain single quotes"
                );
                format!("python -c '{code}'")
            }
        }
    }

    /// A RayJob with a small cluster and `spec` merged in.
    fn rayjob(&self, name: &str, spec: Value) -> Value {
        let (annotations, cluster) = match self.ray {
            Ray::Shared(head) => (
                json!({DASHBOARD_ADDRESS_ANNOTATION: head.dashboard_url()}),
                cluster_spec(),
            ),
            Ray::OwnCluster => (json!({}), own_cluster_spec()),
        };
        let mut full = json!({
            "entrypoint": self.entrypoint("print(\"hello from a RayJob\")"),
            "submissionMode": "HTTPMode",
            "metadata": {"wasmray-test": format!("{}/{name}", self.ns.name)},
            "rayClusterSpec": cluster,
        });
        merge(&mut full, spec);
        json!({
            "apiVersion": "ray.io/v1",
            "kind": "RayJob",
            "metadata": {"name": name, "annotations": annotations},
            "spec": full,
        })
    }

    async fn create(&self, rayjob: Value) -> anyhow::Result<DynamicObject> {
        let object: DynamicObject = serde_json::from_value(rayjob)?;
        Ok(self
            .rayjobs()
            .create(&PostParams::default(), &object)
            .await?)
    }

    async fn patch_spec(&self, name: &str, spec: Value) -> anyhow::Result<()> {
        self.rayjobs()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": spec})),
            )
            .await?;
        Ok(())
    }

    /// Polls the RayJob's status until `done` holds; fails with the last status.
    async fn wait_status(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + TIMEOUT;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Some(job) = self.rayjobs().get_opt(name).await? {
                last = job.data.get("status").cloned().unwrap_or(Value::Null);
                if done(&last) {
                    return Ok(last);
                }
            }
            tokio::time::sleep(POLL).await;
        }
        bail!("RayJob {name}: not {what} within {TIMEOUT:?}; status: {last:#}")
    }

    async fn wait_deployment(&self, name: &str, state: &str) -> anyhow::Result<Value> {
        self.wait_status(name, state, |status| status["jobDeploymentStatus"] == state)
            .await
    }

    async fn wait_cluster_gone(&self, cluster: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + TIMEOUT;
        while self.clusters().get_opt(cluster).await?.is_some() {
            if Instant::now() > deadline {
                bail!("RayCluster {cluster} still exists after {TIMEOUT:?}");
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    /// Ray's jobs that carry this RayJob's test metadata (one per submission), on its Ray.
    async fn ray_jobs_of(&self, name: &str) -> anyhow::Result<Vec<wasmray::ray::JobDetails>> {
        let tag = format!("{}/{name}", self.ns.name);
        Ok(self
            .dashboard
            .list_jobs(&self.head(name).await?)
            .await?
            .into_iter()
            .filter(|job| {
                job.metadata
                    .as_ref()
                    .and_then(|metadata| metadata.get("wasmray-test"))
                    == Some(&tag)
            })
            .collect())
    }

    /// Waits until an event with `reason` is recorded (events are published in the
    /// background, after the reconcile that caused them).
    async fn wait_event(&self, reason: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + TIMEOUT;
        while self.events(reason).await?.is_empty() {
            if Instant::now() > deadline {
                bail!("no {reason} event within {TIMEOUT:?}");
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    async fn events(&self, reason: &str) -> anyhow::Result<Vec<Event>> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns.name);
        Ok(events
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|event| event.reason.as_deref() == Some(reason))
            .collect())
    }
}

/// A head and one worker; kwok runs the pods, the RayCluster plugin makes them ready.
fn cluster_spec() -> Value {
    json!({
        "rayVersion": "2.46.0",
        "headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [{
            "name": "ray-head", "image": "rayproject/ray:2.46.0",
            "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
        }]}}},
        "workerGroupSpecs": [{
            "groupName": "small", "replicas": 1, "minReplicas": 1, "maxReplicas": 1, "rayStartParams": {},
            "template": {"spec": {"containers": [{
                "name": "ray-worker", "image": "rayproject/ray:2.46.0",
                "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
            }]}},
        }],
    })
}

/// A head alone, its pods run by the pod runner: a RayJob's own Ray cluster.
fn own_cluster_spec() -> Value {
    json!({
        "rayVersion": "2.60.0",
        "headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [{
            "name": "ray-head", "image": "rayproject/ray:2.60.0",
            "resources": {"limits": {"cpu": "1", "memory": "1G"}},
        }]}}},
        "workerGroupSpecs": [],
    })
}

/// JSON merge patch semantics, enough for specs.
fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    base.remove(&key);
                } else {
                    merge(base.entry(key).or_insert(Value::Null), value);
                }
            }
        }
        (base, patch) => *base = patch,
    }
}

fn text(status: &Value, field: &str) -> String {
    status[field].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn http_mode_success_completes_and_the_cluster_goes_after_the_ttl() -> anyhow::Result<()> {
    let fx = Fixture::own_clusters("rayjob-http-ok").await?;
    fx.create(fx.rayjob(
        "ok",
        json!({"shutdownAfterJobFinishes": true, "ttlSecondsAfterFinished": 10}),
    ))
    .await?;
    let running = fx.wait_deployment("ok", "Running").await?;
    let cluster = text(&running, "rayClusterName");
    let job_id = text(&running, "jobId");
    assert!(
        cluster.starts_with("ok-") && job_id.starts_with("ok-"),
        "{running:#}"
    );
    assert!(fx.clusters().get_opt(&cluster).await?.is_some());
    // The RayJob head Service follows the cluster's (written on the call after the one
    // that went Running).
    let services: Api<Service> = Api::namespaced(fx.client.clone(), &fx.ns.name);
    let deadline = Instant::now() + Duration::from_secs(10);
    while services.get_opt("ok-head-svc").await?.is_none() {
        assert!(Instant::now() < deadline, "no RayJob head Service");
        tokio::time::sleep(POLL).await;
    }

    let head = fx.head("ok").await?;
    let done = fx.wait_deployment("ok", "Complete").await?;
    assert_eq!(done["jobStatus"], "SUCCEEDED", "{done:#}");
    assert!(
        done["endTime"].is_string() && done["rayJobInfo"]["endTime"].is_string(),
        "{done:#}"
    );
    assert_eq!(done["succeeded"], 1);
    let logs = fx.dashboard.job_logs(&head, &job_id).await?;
    assert!(logs.contains("hello from a RayJob"), "{logs}");
    // Submitted once.
    assert_eq!(fx.ray_jobs_of("ok").await?.len(), 1);

    // ttlSecondsAfterFinished after the end: the cluster goes, the RayJob stays.
    fx.wait_cluster_gone(&cluster).await?;
    assert!(fx.rayjobs().get_opt("ok").await?.is_some());
    fx.finish().await
}

#[tokio::test]
async fn a_failing_entrypoint_fails_with_rays_message() -> anyhow::Result<()> {
    let fx = Fixture::own_clusters("rayjob-http-fail").await?;
    let entrypoint = fx.entrypoint("import sys; print(\"bad input\"); sys.exit(3)");
    fx.create(fx.rayjob("fails", json!({"entrypoint": entrypoint})))
        .await?;
    let failed = fx.wait_deployment("fails", "Failed").await?;
    assert_eq!(failed["jobStatus"], "FAILED", "{failed:#}");
    assert_eq!(failed["reason"], "AppFailed", "{failed:#}");
    let message = text(&failed, "message");
    let ray = fx
        .dashboard
        .job(&fx.head("fails").await?, &text(&failed, "jobId"))
        .await?;
    let ray_message = ray.message.unwrap_or_default();
    assert!(!ray_message.is_empty());
    assert!(
        message.contains(&ray_message),
        "status message {message:?} lacks Ray's {ray_message:?}"
    );
    assert_eq!(failed["failed"], 1);
    fx.wait_event("AppFailed").await?;
    fx.finish().await
}

#[tokio::test]
async fn active_deadline_fails_the_job_and_stops_it_in_ray() -> anyhow::Result<()> {
    let fx = Fixture::own_clusters("rayjob-deadline").await?;
    let entrypoint = fx.entrypoint("import time; time.sleep(300)");
    fx.create(fx.rayjob(
        "slow",
        json!({"entrypoint": entrypoint, "activeDeadlineSeconds": 20, "backoffLimit": 2}),
    ))
    .await?;
    let failed = fx.wait_deployment("slow", "Failed").await?;
    assert_eq!(failed["reason"], "DeadlineExceeded", "{failed:#}");
    // No retry after a deadline, whatever backoffLimit says.
    assert_eq!(failed["failed"], 1, "{failed:#}");
    fx.wait_ray_status(&fx.head("slow").await?, &text(&failed, "jobId"), "STOPPED")
        .await?;
    fx.finish().await
}

#[tokio::test]
async fn backoff_limit_retries_with_a_new_cluster_and_job_id() -> anyhow::Result<()> {
    let fx = Fixture::new("rayjob-backoff").await?;
    let entrypoint = fx.entrypoint("import sys; sys.exit(1)");
    fx.create(fx.rayjob(
        "retry",
        json!({"entrypoint": entrypoint, "backoffLimit": 1}),
    ))
    .await?;
    let first = fx
        .wait_status("retry", "running its first attempt", |s| {
            !text(s, "jobId").is_empty()
        })
        .await?;
    let (first_cluster, first_id) = (text(&first, "rayClusterName"), text(&first, "jobId"));
    let second = fx
        .wait_status("retry", "running a second attempt", |s| {
            !text(s, "jobId").is_empty() && text(s, "jobId") != first_id
        })
        .await?;
    let (second_cluster, second_id) = (text(&second, "rayClusterName"), text(&second, "jobId"));
    assert_ne!(first_cluster, second_cluster);
    assert_ne!(first_id, second_id);
    let failed = fx.wait_deployment("retry", "Failed").await?;
    assert_eq!(failed["failed"], 2, "{failed:#}");
    assert_eq!(text(&failed, "jobId"), second_id);
    assert_eq!(failed["reason"], "AppFailed");
    // Both attempts ran in Ray, once each.
    let mut ids: Vec<String> = fx
        .ray_jobs_of("retry")
        .await?
        .into_iter()
        .filter_map(|job| job.submission_id)
        .collect();
    ids.sort();
    let mut expected = vec![first_id, second_id];
    expected.sort();
    assert_eq!(ids, expected);
    fx.finish().await
}

#[tokio::test]
async fn k8s_job_mode_follows_ray_and_the_submitter_job() -> anyhow::Result<()> {
    let fx = Fixture::own_clusters("rayjob-k8sjob").await?;
    let entrypoint = fx.entrypoint("print(\"submitted by the test\")");
    fx.create(fx.rayjob(
        "viajob",
        json!({"submissionMode": "K8sJobMode", "entrypoint": entrypoint.clone()}),
    ))
    .await?;
    // The pod runner runs the submitter's pod for real: it submits with the RayJob's id.
    let chosen = fx
        .wait_status("viajob", "given a job id", |s| !text(s, "jobId").is_empty())
        .await?;
    let job_id = text(&chosen, "jobId");
    let done = fx.wait_deployment("viajob", "Complete").await?;
    assert_eq!(done["jobStatus"], "SUCCEEDED", "{done:#}");
    // The submitter Job, as KubeRay builds it.
    let submitter = fx.jobs().get("viajob").await?;
    let labels = submitter.labels();
    assert_eq!(labels["ray.io/originated-from-crd"], "RayJob");
    assert_eq!(labels["ray.io/originated-from-cr-name"], "viajob");
    assert_eq!(labels["app.kubernetes.io/created-by"], "kuberay-operator");
    let spec = submitter.spec.as_ref().context("submitter without spec")?;
    assert_eq!(spec.backoff_limit, Some(2));
    let pod = spec
        .template
        .spec
        .as_ref()
        .context("submitter without pod spec")?;
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let container = &pod.containers[0];
    assert_eq!(container.name, "ray-job-submitter");
    let script = container
        .args
        .as_ref()
        .map(|args| args.join(" "))
        .unwrap_or_default();
    assert!(
        script.contains(&format!("--submission-id {job_id}")),
        "{script}"
    );
    assert!(
        script.contains("ray job submit") && script.contains("--no-wait"),
        "{script}"
    );
    let env: Vec<String> = container
        .env
        .iter()
        .flatten()
        .map(|e| e.name.clone())
        .collect();
    for name in [
        "PYTHONUNBUFFERED",
        "RAY_DASHBOARD_ADDRESS",
        "RAY_JOB_SUBMISSION_ID",
    ] {
        assert!(env.iter().any(|e| e == name), "{name} missing from {env:?}");
    }
    let complete = submitter
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Complete" && c.status == "True")
        });
    assert!(complete, "the submitter Job is not Complete");
    let submitted = fx.ray_jobs_of("viajob").await?;
    assert_eq!(submitted.len(), 1, "{submitted:?}");
    let logs = fx
        .dashboard
        .job_logs(&fx.head("viajob").await?, &job_id)
        .await?;
    assert!(logs.contains("submitted by the test"), "{logs}");
    fx.finish().await
}

#[tokio::test]
async fn k8s_job_mode_fails_when_the_submitter_job_fails() -> anyhow::Result<()> {
    let fx = Fixture::new("rayjob-k8sjob-fail").await?;
    // The submitter pod can go nowhere, so kwok never completes it; the test then fails it
    // as a kubelet would, and the Job controller marks the Job Failed (backoffLimit 0).
    let template = json!({"spec": {
        "restartPolicy": "Never",
        "nodeSelector": {"wasmray.io/no-such-node": "true"},
        "containers": [{"name": "ray-job-submitter", "image": "rayproject/ray:2.46.0"}],
    }});
    fx.create(fx.rayjob(
        "badsub",
        json!({"submissionMode": "K8sJobMode", "submitterPodTemplate": template,
               "submitterConfig": {"backoffLimit": 0}}),
    ))
    .await?;
    let pods: Api<Pod> = Api::namespaced(fx.client.clone(), &fx.ns.name);
    let deadline = Instant::now() + TIMEOUT;
    let pod = loop {
        let found = pods
            .list(&ListParams::default().labels("batch.kubernetes.io/job-name=badsub"))
            .await?;
        if let Some(pod) = found.items.into_iter().next() {
            break pod;
        }
        if Instant::now() > deadline {
            bail!("no submitter pod within {TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    };
    pods.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Failed", "reason": "Error",
            "message": "ray job submit exited with 1"}})),
    )
    .await?;
    let failed = fx.wait_deployment("badsub", "Failed").await?;
    assert_eq!(failed["reason"], "SubmissionFailed", "{failed:#}");
    let message = text(&failed, "message");
    assert!(message.contains("Job submission has failed"), "{message}");
    fx.finish().await
}

#[tokio::test]
async fn cluster_selector_runs_on_an_existing_cluster_and_leaves_it() -> anyhow::Result<()> {
    let fx = Fixture::new("rayjob-selector").await?;
    let cluster: RayCluster = serde_json::from_value(json!({
        "apiVersion": "ray.io/v1", "kind": "RayCluster",
        "metadata": {"name": "shared", "annotations": {DASHBOARD_ADDRESS_ANNOTATION: fx.shared_head()?.dashboard_url()}},
        "spec": cluster_spec(),
    }))?;
    fx.clusters()
        .create(&PostParams::default(), &cluster)
        .await?;
    fx.create(fx.rayjob(
        "onshared",
        json!({"clusterSelector": {"ray.io/cluster": "shared"}, "rayClusterSpec": null}),
    ))
    .await?;
    let done = fx.wait_deployment("onshared", "Complete").await?;
    assert_eq!(done["rayClusterName"], "shared");
    assert_eq!(done["jobStatus"], "SUCCEEDED");
    // Nothing of its own: no cluster, no head Service; the selected cluster stays.
    let clusters = fx.clusters().list(&ListParams::default()).await?;
    assert_eq!(clusters.items.len(), 1);
    let services: Api<Service> = Api::namespaced(fx.client.clone(), &fx.ns.name);
    assert!(services.get_opt("onshared-head-svc").await?.is_none());
    fx.finish().await
}

#[tokio::test]
async fn interactive_mode_waits_for_the_users_job_id() -> anyhow::Result<()> {
    let fx = Fixture::new("rayjob-interactive").await?;
    fx.create(fx.rayjob("byhand", json!({"submissionMode": "InteractiveMode"})))
        .await?;
    let waiting = fx.wait_deployment("byhand", "Waiting").await?;
    assert!(text(&waiting, "jobId").is_empty(), "{waiting:#}");
    let id = format!("byhand-{}", fx.ns.name);
    fx.dashboard
        .submit_job(
            &fx.head("byhand").await?,
            &JobSubmission {
                entrypoint: fx.entrypoint("print(\"interactive\")"),
                submission_id: id.clone(),
                ..JobSubmission::default()
            },
        )
        .await?;
    fx.patch_spec("byhand", json!({"jobId": id})).await?;
    let done = fx.wait_deployment("byhand", "Complete").await?;
    assert_eq!(text(&done, "jobId"), id);
    assert_eq!(done["jobStatus"], "SUCCEEDED");
    fx.finish().await
}

#[tokio::test]
async fn suspend_tears_down_and_resume_starts_with_new_names() -> anyhow::Result<()> {
    let fx = Fixture::new("rayjob-suspend").await?;
    let entrypoint = fx.entrypoint("import time; time.sleep(60)");
    fx.create(fx.rayjob(
        "pausable",
        json!({"entrypoint": entrypoint, "shutdownAfterJobFinishes": true}),
    ))
    .await?;
    let running = fx
        .wait_status("pausable", "running in Ray", |s| {
            s["jobStatus"] == "RUNNING"
        })
        .await?;
    let (cluster, job_id) = (text(&running, "rayClusterName"), text(&running, "jobId"));
    fx.patch_spec("pausable", json!({"suspend": true})).await?;
    let suspended = fx.wait_deployment("pausable", "Suspended").await?;
    for field in ["jobId", "rayClusterName", "dashboardURL", "jobStatus"] {
        assert!(
            text(&suspended, field).is_empty(),
            "{field} not reset: {suspended:#}"
        );
    }
    fx.wait_cluster_gone(&cluster).await?;

    fx.patch_spec("pausable", json!({"suspend": false})).await?;
    let resumed = fx
        .wait_status("pausable", "running again", |s| {
            s["jobDeploymentStatus"] == "Running" && !text(s, "jobId").is_empty()
        })
        .await?;
    assert_ne!(text(&resumed, "rayClusterName"), cluster);
    assert_ne!(text(&resumed, "jobId"), job_id);
    // The shared head outlives the deleted cluster: stop what the test left running there.
    for id in [job_id, text(&resumed, "jobId")] {
        let _ = fx
            .dashboard
            .stop_job(&fx.head("pausable").await?, &id)
            .await;
    }
    fx.finish().await
}

#[tokio::test]
async fn suspending_a_k8s_job_mode_rayjob_deletes_its_submitter() -> anyhow::Result<()> {
    let fx = Fixture::new("rayjob-suspend-k8s").await?;
    let entrypoint = fx.entrypoint("import time; time.sleep(60)");
    fx.create(fx.rayjob(
        "pausesub",
        json!({"submissionMode": "K8sJobMode", "entrypoint": entrypoint.clone(),
               "shutdownAfterJobFinishes": true}),
    ))
    .await?;
    // As in the K8sJobMode test, the test plays the submitter kwok does not run.
    let chosen = fx
        .wait_status("pausesub", "given a job id", |s| {
            !text(s, "jobId").is_empty()
        })
        .await?;
    let job_id = text(&chosen, "jobId");
    fx.dashboard
        .submit_job(
            &fx.head("pausesub").await?,
            &JobSubmission {
                entrypoint,
                submission_id: job_id.clone(),
                ..JobSubmission::default()
            },
        )
        .await?;
    let running = fx
        .wait_status("pausesub", "running in Ray", |s| {
            s["jobStatus"] == "RUNNING"
        })
        .await?;
    let submitter_uid = fx.jobs().get("pausesub").await?.uid();
    fx.patch_spec("pausesub", json!({"suspend": true})).await?;
    fx.wait_deployment("pausesub", "Suspended").await?;
    fx.wait_cluster_gone(&text(&running, "rayClusterName"))
        .await?;
    let deadline = Instant::now() + TIMEOUT;
    while fx.jobs().get_opt("pausesub").await?.map(|job| job.uid()) == Some(submitter_uid.clone()) {
        if Instant::now() > deadline {
            bail!("the submitter Job survived the suspension by {TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
    // KubeRay's reasons for the submitter's events, not the generic `CreatedJob`.
    fx.wait_event("CreatedRayJobSubmitter").await?;
    fx.wait_event("DeletedRayJobSubmitter").await?;
    let _ = fx
        .dashboard
        .stop_job(&fx.head("pausesub").await?, &job_id)
        .await;
    fx.finish().await
}

#[tokio::test]
async fn invalid_rayjobs_fail_validation_and_create_nothing() -> anyhow::Result<()> {
    use wasmray_crds::messages as m;
    let fx = Fixture::new("rayjob-invalid").await?;
    // KubeRay's rules between fields of the spec are CEL rules of the CRD (the API server
    // refuses those objects); the rest are the controller's (status ValidationFailed).
    let cases = [
        (
            "ttl-alone",
            json!({"ttlSecondsAfterFinished": 10}),
            m::JOB_TTL_WITHOUT_SHUTDOWN,
        ),
        (
            "interactive-retry",
            json!({"submissionMode": "InteractiveMode", "backoffLimit": 2}),
            m::JOB_BACKOFF_LIMIT_INTERACTIVE,
        ),
        (
            "no-deadline",
            json!({"activeDeadlineSeconds": 0}),
            m::JOB_ACTIVE_DEADLINE_NOT_POSITIVE,
        ),
        (
            "nameless-selector",
            json!({"clusterSelector": {"team": "a"}, "rayClusterSpec": null}),
            m::JOB_CLUSTER_SELECTOR_NAME_EMPTY,
        ),
    ];
    let mut by_controller = 0;
    for (name, spec, message) in &cases {
        match fx.create(fx.rayjob(name, spec.clone())).await {
            Err(error) => {
                let refused = error.to_string();
                assert!(refused.contains("is invalid"), "{name}: {refused}");
                assert!(
                    refused.contains(message),
                    "{name}: {refused:?} does not say {message:?}"
                );
            }
            Ok(_) => {
                let failed = fx.wait_deployment(name, "ValidationFailed").await?;
                assert_eq!(failed["reason"], "ValidationFailed", "{failed:#}");
                let said = text(&failed, "message");
                assert!(
                    said.contains(message),
                    "{name}: {said:?} does not say {message:?}"
                );
                by_controller += 1;
            }
        }
    }
    assert!(
        by_controller >= 2,
        "only {by_controller} cases reached the controller"
    );
    fx.wait_event("InvalidRayJobSpec").await?;
    // Give the controller time to (wrongly) act, then check nothing was created.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        fx.clusters()
            .list(&ListParams::default())
            .await?
            .items
            .is_empty()
    );
    assert!(
        fx.jobs()
            .list(&ListParams::default())
            .await?
            .items
            .is_empty()
    );
    for job in fx.rayjobs().list(&ListParams::default()).await?.items {
        assert!(
            job.finalizers().is_empty(),
            "{} got a finalizer",
            job.name_any()
        );
    }
    fx.finish().await
}

#[tokio::test]
async fn a_restarted_operator_neither_submits_twice_nor_loses_the_job() -> anyhow::Result<()> {
    let mut fx = Fixture::own_clusters("rayjob-restart").await?;
    let entrypoint =
        fx.entrypoint("import time; print(\"started\"); time.sleep(8); print(\"done\")");
    fx.create(fx.rayjob("survivor", json!({"entrypoint": entrypoint})))
        .await?;
    let running = fx
        .wait_status("survivor", "running in Ray", |s| {
            s["jobStatus"] == "RUNNING"
        })
        .await?;
    let job_id = text(&running, "jobId");
    let head = fx.head("survivor").await?;
    let before = fx.dashboard.job(&head, &job_id).await?;

    fx.restart_operator().await?;
    let done = fx.wait_deployment("survivor", "Complete").await?;
    assert_eq!(text(&done, "jobId"), job_id);
    assert_eq!(done["jobStatus"], "SUCCEEDED");
    // One Ray job for this RayJob, the one that was running before the restart.
    let jobs = fx.ray_jobs_of("survivor").await?;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].submission_id.as_deref(), Some(job_id.as_str()));
    assert_eq!(jobs[0].start_time, before.start_time);
    let logs = fx.dashboard.job_logs(&head, &job_id).await?;
    assert_eq!(
        logs.lines().filter(|line| *line == "started").count(),
        1,
        "{logs}"
    );
    fx.finish().await
}

#[tokio::test]
async fn deleting_a_running_rayjob_stops_its_ray_job_first() -> anyhow::Result<()> {
    let fx = Fixture::new("rayjob-delete").await?;
    let entrypoint = fx.entrypoint("import time; time.sleep(300)");
    fx.create(fx.rayjob("doomed", json!({"entrypoint": entrypoint})))
        .await?;
    let running = fx
        .wait_status("doomed", "running in Ray", |s| s["jobStatus"] == "RUNNING")
        .await?;
    let job_id = text(&running, "jobId");
    let head = fx.head("doomed").await?;
    let job = fx.rayjobs().get("doomed").await?;
    assert!(
        job.finalizers()
            .iter()
            .any(|f| f == "ray.io/rayjob-finalizer")
    );
    fx.rayjobs().delete("doomed", &Default::default()).await?;
    let deadline = Instant::now() + TIMEOUT;
    while fx.rayjobs().get_opt("doomed").await?.is_some() {
        if Instant::now() > deadline {
            bail!("RayJob doomed not released within {TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
    // Ray stops a job asynchronously: the stop was asked for, the status follows.
    fx.wait_ray_status(&head, &job_id, "STOPPED").await?;
    fx.finish().await
}

#[tokio::test]
async fn delete_rayjob_cr_after_job_finishes_deletes_the_rayjob_itself() -> anyhow::Result<()> {
    let settings = [(
        "delete-rayjob-cr-after-job-finishes".to_owned(),
        "true".to_owned(),
    )]
    .into();
    let fx = Fixture::with_settings("rayjob-deleteself", settings).await?;
    fx.create(fx.rayjob(
        "ephemeral",
        json!({"shutdownAfterJobFinishes": true, "ttlSecondsAfterFinished": 2}),
    ))
    .await?;
    let done = fx.wait_deployment("ephemeral", "Complete").await?;
    assert_eq!(done["jobStatus"], "SUCCEEDED");
    // The plugin deletes its own RayJob (KubeRay's DeleteSelf); the finalizer is released
    // on the next call and the garbage collector takes the cluster.
    let deadline = Instant::now() + TIMEOUT;
    while fx.rayjobs().get_opt("ephemeral").await?.is_some() {
        if Instant::now() > deadline {
            bail!("RayJob ephemeral still exists {TIMEOUT:?} after its TTL");
        }
        tokio::time::sleep(POLL).await;
    }
    fx.wait_cluster_gone(&text(&done, "rayClusterName")).await?;
    fx.finish().await
}
