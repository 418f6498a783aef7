//! The reconcile entry point: validation first, deletion with GCS FT cleanup, the GCS FT
//! finalizer and the token Secret, Services, suspension, pods, then status, in KubeRay's
//! order. (`spec.managedBy` is the host's gate: an object another controller manages is
//! never passed here.)

use wasmray_crds::constants::{
    FAILED_CREATE_HEAD_POD, FAILED_CREATE_WORKER_POD, FAILED_DELETE_ALL_PODS,
    FAILED_DELETE_HEAD_POD, FAILED_DELETE_WORKER_POD, FeatureGates, GCS_FT_REDIS_CLEANUP_FINALIZER,
    HEAD_NODE_TYPE, KUEUE_QUEUE_NAME_LABEL_KEY, RAY_AUTH_TOKEN_SECRET_KEY, RAY_CLUSTER_LABEL_KEY,
    RAY_CLUSTER_PROVISIONED, RAY_NODE_TYPE_LABEL_KEY,
};
use wasmray_crds::names::check_label;
use wasmray_crds::raycluster::{RayCluster, RayClusterStatus};
use wasmray_crds::validate_ray_cluster;
use wasmray_plugin_sdk::reconciler::{
    Decision, FinalizerIntent, Reconciler, Request, WriteOperation,
};
use wasmray_plugin_sdk::{Duration, Event, PluginError, PodReplica, WriteMode};

use crate::cluster::{ClusterContext, GroupView};
use crate::gcs_ft::{self, CleanupJobState};
use crate::ingress::{head_ingress, ingress_enabled, ingress_name};
use crate::pod::build_pod;
use crate::scale::{PodMode, RayPod, is_head, plan_pods};
use crate::serve_label::plan_head_serve_label;
use crate::service::{
    head_service, headless_service_needed, headless_worker_service, serve_service,
    serve_service_enabled,
};
use crate::settings::Settings;
use crate::status::{PassOutcome, SuspendStep, compute_status, suspend_step};
use wasmray_plugin_sdk::names::{FNV_OFFSET, fnv1a};

/// KubeRay's requeue after an error or while waiting for something to progress.
const SHORT_REQUEUE: Duration = Duration::from_secs(2);
/// While the head pod of a deleted GCS FT cluster terminates.
const HEAD_GONE_REQUEUE: Duration = Duration::from_secs(10);

/// Bytes of the Ray auth token: KubeRay's token is base64 of 32 random bytes.
const AUTH_TOKEN_BYTES: u32 = 32;

/// The built-in RayCluster reconciler.
pub struct RayClusterReconciler;

impl Reconciler for RayClusterReconciler {
    type Parent = RayCluster;
    const KINDS: &'static [&'static str] = &["RayCluster"];

    fn reconcile(request: Request<RayCluster>) -> Result<Decision, PluginError> {
        decide(&request)
    }
}

/// Decides for one RayCluster.
pub fn decide(request: &Request<RayCluster>) -> Result<Decision, PluginError> {
    let cluster = &request.parent;
    let mut decision = Decision::default();
    let settings = Settings::from_host(&request.host);
    let ctx = ClusterContext::new(cluster, &settings);
    let views = request.pods.views();
    let pods = RayPod::all(&views);

    if let Err(errors) = validate_ray_cluster(cluster, &feature_gates(&settings)) {
        let reason = invalid_reason(errors.0.first().map_or("spec", |e| e.field.as_str()));
        let message = errors.to_string();
        let plan = Default::default();
        let outcome = PassOutcome {
            plan: &plan,
            suspend: SuspendStep::None,
            replica_failure: None,
            invalid: Some((reason, message.clone())),
        };
        // The event goes with the condition, so a resync of an unchanged invalid object
        // writes nothing.
        if let Some(status) = compute_status(&ctx, &pods, &request.services, &outcome, request.now)
        {
            decision.set_status(&status)?;
            decision.event(Event::warning(reason, message));
        }
        // As KubeRay, only valid clusters get the finalizer; one that became invalid
        // cannot run its cleanup Job, and holding the finalizer would block its deletion.
        if cluster.metadata.deletion_timestamp.is_some() && gcs_ft::has_finalizer(&ctx) {
            decision.finalizer(GCS_FT_REDIS_CLEANUP_FINALIZER, FinalizerIntent::Release);
        }
        return Ok(decision);
    }

    if cluster.metadata.deletion_timestamp.is_some() {
        decide_deletion(&ctx, request, &mut decision)?;
        return Ok(decision);
    }
    if gcs_ft::finalizer_required(&ctx) {
        // GCS fault tolerance keeps state in Redis: the finalizer holds the cluster until
        // the cleanup Job has run.
        decision.finalizer(GCS_FT_REDIS_CLEANUP_FINALIZER, FinalizerIntent::Add);
    }
    if ctx.token_auth {
        // The token the pods and the host's dashboard calls read; created once.
        decision.generated_secret(
            &ctx.auth_secret_name(),
            RAY_AUTH_TOKEN_SECRET_KEY,
            AUTH_TOKEN_BYTES,
            vec![(RAY_CLUSTER_LABEL_KEY.to_owned(), check_label(ctx.name))],
        );
    }

    let mut problems = Vec::new();
    let services_ready = plan_services(&ctx, request, &mut decision, &mut problems)?;

    let suspend = suspend_step(&ctx, &pods);
    let mode = if services_ready {
        suspend.pod_mode()
    } else {
        PodMode::Leave
    };
    // A RayJob's cluster whose head died must not come back: the RayJob fails instead.
    let head_recreation_forbidden = ctx.originated_from_crd == "RayJob"
        && cluster
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == RAY_CLUSTER_PROVISIONED && c.status == "True");
    let seed = fnv1a(
        fnv1a(
            FNV_OFFSET,
            cluster
                .metadata
                .uid
                .as_deref()
                .unwrap_or_default()
                .as_bytes(),
        ),
        &request.now.seconds.to_le_bytes(),
    );
    let mut plan = plan_pods(&ctx, &pods, mode, head_recreation_forbidden, seed);
    plan.problems.extend(problems);

    for create in &plan.creates {
        let group = match create.worker_group {
            None => GroupView::head(cluster),
            Some(index) => match cluster.spec.worker_groups().get(index) {
                Some(spec) => GroupView::worker(spec),
                None => continue,
            },
        };
        let pod = build_pod(&ctx, &group);
        let fixed_name = pod.metadata.name.clone();
        let replicas = create
            .replicas
            .iter()
            .map(|labels| PodReplica {
                name: fixed_name.clone(),
                labels: labels.clone(),
                annotations: Vec::new(),
            })
            .collect();
        decision.create_pods(group.name, &pod, replicas)?;
    }
    for delete in &plan.deletes {
        decision.delete_pod(delete.pod, &delete.reason);
    }

    let outcome = PassOutcome {
        plan: &plan,
        suspend,
        replica_failure: replica_failure(request, suspend),
        invalid: None,
    };
    let mut status = compute_status(&ctx, &pods, &request.services, &outcome, request.now);
    report_missing_queue(request, &mut status, &mut decision);
    if let Some(status) = status {
        decision.set_status(&status)?;
    }

    if ctx.owned_by_ray_service() {
        plan_head_serve_label(request, ctx.name, &views, &mut decision)?;
    }

    let waiting =
        !plan.problems.is_empty() || matches!(suspend, SuspendStep::Begin | SuspendStep::Continue);
    decision.requeue_after(if waiting {
        SHORT_REQUEUE
    } else {
        Duration::from_secs(settings.default_requeue_seconds)
    });
    Ok(decision)
}

/// A suspended RayCluster queued in a LocalQueue that does not exist waits for an admission
/// that never comes (Kueue says so only on its Workload): `status.reason` and a Warning event
/// say it on the cluster. The host reads the LocalQueue of a suspended, queued object as
/// related; `status` is the new status, if the pass changes it.
fn report_missing_queue(
    request: &Request<RayCluster>,
    status: &mut Option<RayClusterStatus>,
    decision: &mut Decision,
) {
    let cluster = &request.parent;
    let queue = cluster
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(KUEUE_QUEUE_NAME_LABEL_KEY));
    let (Some(queue), true) = (queue, cluster.spec.is_suspended()) else {
        return;
    };
    let namespace = cluster.metadata.namespace.as_deref().unwrap_or_default();
    let missing = format!(
        "LocalQueue {queue} does not exist in namespace {namespace}: Kueue admits nothing through it"
    );
    let exists = request
        .related
        .iter()
        .any(|object| object.kind == "LocalQueue" && object.name == *queue);
    let reason = |status: &Option<RayClusterStatus>| {
        status
            .as_ref()
            .or(cluster.status.as_ref())
            .and_then(|status| status.reason.clone())
    };
    let says_missing = reason(status).as_deref() == Some(missing.as_str());
    if exists == says_missing {
        let changed = status.get_or_insert_with(|| cluster.status.clone().unwrap_or_default());
        if exists {
            changed.reason = None;
        } else {
            changed.reason = Some(missing.clone());
            decision.event(Event::warning("QueueNotFound", missing));
        }
    }
}

fn feature_gates(settings: &Settings) -> FeatureGates {
    FeatureGates {
        ray_cluster_status_conditions: settings.status_conditions,
        ray_job_deletion_policy: settings.job_deletion_policy,
        ray_multi_host_indexing: settings.multi_host_indexing,
        ..FeatureGates::default()
    }
}

/// KubeRay's event reason for the part of the object that is invalid.
fn invalid_reason(field: &str) -> &'static str {
    if field.starts_with("metadata") {
        "InvalidRayClusterMetadata"
    } else if field.starts_with("status") {
        "InvalidRayClusterStatus"
    } else {
        "InvalidRayClusterSpec"
    }
}

/// The dashboard Ingress and the head, headless and serve Services, each created once (KubeRay never updates them).
/// Returns false when one cannot be built: as KubeRay, pods then wait.
fn plan_services(
    ctx: &ClusterContext,
    request: &Request<RayCluster>,
    decision: &mut Decision,
    problems: &mut Vec<String>,
) -> Result<bool, PluginError> {
    if ingress_enabled(ctx) {
        let name = ingress_name(ctx);
        let exists = request
            .children
            .iter()
            .any(|child| child.kind == "Ingress" && child.name == name);
        if !exists {
            decision.apply(&head_ingress(ctx), WriteMode::CreateOnly)?;
        }
    }
    let exists = |name: &str| request.services.iter().any(|service| service.name == name);
    if !exists(&ctx.head_service_name) {
        match head_service(ctx) {
            Ok(service) => decision.apply(&service, WriteMode::CreateOnly)?,
            Err(error) => {
                decision.event(Event::warning("FailedToCreateService", error.to_string()));
                problems.push(error.to_string());
                return Ok(false);
            }
        }
    }
    if headless_service_needed(ctx) {
        let service = headless_worker_service(ctx);
        if !service.metadata.name.as_deref().is_some_and(exists) {
            decision.apply(&service, WriteMode::CreateOnly)?;
        }
    }
    if serve_service_enabled(ctx) {
        match serve_service(ctx) {
            Ok(service) => {
                if !service.metadata.name.as_deref().is_some_and(exists) {
                    decision.apply(&service, WriteMode::CreateOnly)?;
                }
            }
            Err(error) => {
                decision.event(Event::warning("FailedToCreateService", error.to_string()));
                problems.push(error.to_string());
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// A deleted cluster: with the Redis cleanup finalizer, delete the pods, wait for the head
/// to go, run the cleanup Job and wait for it. Otherwise Kubernetes' garbage collector
/// removes the children.
fn decide_deletion(
    ctx: &ClusterContext,
    request: &Request<RayCluster>,
    decision: &mut Decision,
) -> Result<(), PluginError> {
    if !gcs_ft::has_finalizer(ctx) {
        return Ok(());
    }
    let views = request.pods.views();
    let pods = RayPod::all(&views);
    let plan = plan_pods(ctx, &pods, PodMode::DeleteAll, false, 0);
    for delete in &plan.deletes {
        decision.delete_pod(delete.pod, "the RayCluster is being deleted");
    }
    if pods.iter().any(is_head) {
        decision.finalizer(GCS_FT_REDIS_CLEANUP_FINALIZER, FinalizerIntent::Keep);
        decision.requeue_after(HEAD_GONE_REQUEUE);
        return Ok(());
    }
    match gcs_ft::cleanup_job_state(ctx, &request.children) {
        CleanupJobState::Missing => {
            decision.finalizer(GCS_FT_REDIS_CLEANUP_FINALIZER, FinalizerIntent::Keep);
            decision.apply(&gcs_ft::cleanup_job(ctx), WriteMode::CreateOnly)?;
            decision.requeue_after(SHORT_REQUEUE);
        }
        CleanupJobState::Running => {
            decision.finalizer(GCS_FT_REDIS_CLEANUP_FINALIZER, FinalizerIntent::Keep);
            decision.requeue_after(SHORT_REQUEUE);
        }
        // As KubeRay, a failed cleanup must not keep the cluster forever.
        CleanupJobState::Finished => {
            decision.finalizer(GCS_FT_REDIS_CLEANUP_FINALIZER, FinalizerIntent::Release);
        }
    }
    Ok(())
}

/// The `ReplicaFailure` reason and message from the host's report of failed pod writes.
fn replica_failure(
    request: &Request<RayCluster>,
    suspend: SuspendStep,
) -> Option<(String, String)> {
    // The last failed pod write, as KubeRay reports its last failed create or delete.
    let failure = request
        .failed_writes
        .iter()
        .rev()
        .find(|write| write.api_version == "v1" && write.kind == "Pod")?;
    let head = failure
        .labels
        .iter()
        .any(|(key, value)| key == RAY_NODE_TYPE_LABEL_KEY && value == HEAD_NODE_TYPE);
    let reason = match failure.operation {
        _ if matches!(suspend, SuspendStep::Begin | SuspendStep::Continue) => {
            FAILED_DELETE_ALL_PODS
        }
        WriteOperation::Create | WriteOperation::Apply if head => FAILED_CREATE_HEAD_POD,
        WriteOperation::Create | WriteOperation::Apply => FAILED_CREATE_WORKER_POD,
        WriteOperation::Delete if head => FAILED_DELETE_HEAD_POD,
        WriteOperation::Delete => FAILED_DELETE_WORKER_POD,
    };
    Some((reason.to_owned(), failure.message.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{cluster_from_yaml, head_service, pod, reconcile_input};
    use wasmray_crds::constants::*;
    use wasmray_plugin_sdk::ObservedObject;
    use wasmray_plugin_sdk::ObservedService;
    use wasmray_plugin_sdk::reconciler::{
        FailedWrite, Finalizer, GeneratedSecret, ReconcileInput, ReconcileOutput, run,
    };
    use wasmray_plugin_sdk::record::Pod as PodRecord;

    const SAMPLE: &str = r#"
metadata: {name: rc, namespace: ns, uid: u, generation: 1}
spec:
  headGroupSpec:
    rayStartParams: {}
    template:
      spec:
        containers:
        - {name: ray-head, image: "rayproject/ray:2.46.0", resources: {limits: {cpu: "1", memory: 2Gi}}}
  workerGroupSpecs:
  - groupName: small
    replicas: 3
    minReplicas: 1
    maxReplicas: 5
    rayStartParams: {}
    template:
      spec:
        containers:
        - {name: ray-worker, image: "rayproject/ray:2.46.0", resources: {limits: {cpu: "1", memory: 1Gi}}}
"#;

    fn input(
        cluster: &RayCluster,
        pods: Vec<PodRecord>,
        services: Vec<ObservedService>,
    ) -> ReconcileInput {
        let parent = serde_json::to_value(cluster).unwrap();
        reconcile_input(&parent, &pods, services, &[])
    }

    fn reconcile(input: ReconcileInput) -> ReconcileOutput {
        run::<RayClusterReconciler>(input).unwrap()
    }

    fn running_cluster_pods() -> Vec<PodRecord> {
        let mut pods = vec![pod("rc-head-a", "head", "headgroup", "Running", true)];
        for name in [
            "rc-small-worker-a",
            "rc-small-worker-b",
            "rc-small-worker-c",
        ] {
            pods.push(pod(name, "worker", "small", "Running", true));
        }
        pods
    }

    fn status_of(output: &ReconcileOutput) -> wasmray_crds::RayClusterStatus {
        serde_json::from_str(output.status.as_ref().unwrap()).unwrap()
    }

    #[test]
    fn new_cluster_gets_service_head_and_one_pod_set_per_group() {
        let cluster = cluster_from_yaml(SAMPLE);
        let output = reconcile(input(&cluster, vec![], vec![]));
        assert_eq!(output.apply.len(), 1);
        let service: serde_json::Value = serde_json::from_str(&output.apply[0].object).unwrap();
        assert_eq!(service["kind"], "Service");
        assert_eq!(service["metadata"]["name"], "rc-head-svc");
        assert_eq!(output.create_pods.len(), 2);
        let head = &output.create_pods[0];
        assert_eq!((head.group.as_str(), head.replicas.len()), ("headgroup", 1));
        let template: serde_json::Value = serde_json::from_str(&head.template).unwrap();
        assert_eq!(template["kind"], "Pod");
        assert_eq!(template["metadata"]["generateName"], "rc-head-");
        let workers = &output.create_pods[1];
        assert_eq!(
            (workers.group.as_str(), workers.replicas.len()),
            ("small", 3)
        );
        assert!(output.delete.is_empty());
        let status = status_of(&output);
        assert_eq!(status.desired_worker_replicas, Some(3));
        assert_eq!(status.state, None);
        assert_eq!(output.requeue_after_ms, Some(300_000));
    }

    #[test]
    fn settled_cluster_writes_nothing() {
        let mut cluster = cluster_from_yaml(SAMPLE);
        let first = reconcile(input(
            &cluster,
            running_cluster_pods(),
            vec![head_service("rc")],
        ));
        assert!(first.create_pods.is_empty() && first.apply.is_empty() && first.delete.is_empty());
        let status = status_of(&first);
        assert_eq!(
            status.state,
            Some(wasmray_crds::raycluster::ClusterState::Ready)
        );
        cluster.status = Some(status);
        let second = reconcile(input(
            &cluster,
            running_cluster_pods(),
            vec![head_service("rc")],
        ));
        assert!(
            second.create_pods.is_empty() && second.apply.is_empty() && second.delete.is_empty()
        );
        assert!(second.status.is_none(), "{:?}", second.status);
        assert!(second.events.is_empty());
    }

    #[test]
    fn invalid_cluster_creates_nothing_and_reports_once() {
        let mut cluster = cluster_from_yaml(&SAMPLE.replace("rayStartParams: {}\n    template:\n      spec:\n        containers:\n        - {name: ray-worker", "rayStartParams: {num-cpus: \"2\"}\n    resources: {CPU: \"1\"}\n    template:\n      spec:\n        containers:\n        - {name: ray-worker"));
        let output = reconcile(input(&cluster, vec![], vec![]));
        assert!(
            output.create_pods.is_empty() && output.apply.is_empty() && output.delete.is_empty()
        );
        assert_eq!(output.events.len(), 1);
        assert_eq!(output.events[0].reason, "InvalidRayClusterSpec");
        assert!(
            output.events[0]
                .message
                .contains("spec.workerGroupSpecs[0]"),
            "{}",
            output.events[0].message
        );
        let status = status_of(&output);
        let condition = status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == crate::status::RAY_CLUSTER_INVALID)
            .unwrap();
        assert_eq!(condition.status, "True");
        cluster.status = Some(status);
        let again = reconcile(input(&cluster, vec![], vec![]));
        assert!(again.events.is_empty() && again.status.is_none());
    }

    #[test]
    fn invalid_objects_table() {
        let long_name = format!("name: {}", "a".repeat(54));
        let cases: [(String, Option<&str>, &str, &str); 3] = [
            (SAMPLE.replace("name: rc", &long_name), None, "InvalidRayClusterMetadata", "no more than 53 characters"),
            (SAMPLE.replace("        - {name: ray-head, image: \"rayproject/ray:2.46.0\", resources: {limits: {cpu: \"1\", memory: 2Gi}}}", "          []"), None, "InvalidRayClusterSpec", "at least one container"),
            (
                SAMPLE.to_owned(),
                Some(r#"{"conditions":[{"type":"RayClusterSuspending","status":"True","reason":"r","message":"","lastTransitionTime":"2026-01-01T00:00:00Z"},{"type":"RayClusterSuspended","status":"True","reason":"r","message":"","lastTransitionTime":"2026-01-01T00:00:00Z"}]}"#),
                "InvalidRayClusterStatus",
                "",
            ),
        ];
        for (yaml, status, reason, text) in cases {
            let mut cluster = cluster_from_yaml(&yaml);
            cluster.status = status.map(|s| serde_json::from_str(s).unwrap());
            let output = reconcile(input(&cluster, running_cluster_pods(), vec![]));
            assert!(
                output.create_pods.is_empty()
                    && output.apply.is_empty()
                    && output.delete.is_empty(),
                "{reason}"
            );
            assert_eq!(output.events.len(), 1, "{reason}");
            assert_eq!(output.events[0].reason, reason);
            assert!(
                output.events[0].message.contains(text),
                "{}",
                output.events[0].message
            );
        }
    }

    #[test]
    fn suspend_and_resume_through_reconcile() {
        let mut cluster = cluster_from_yaml(SAMPLE);
        cluster.spec.suspend = Some(true);
        let output = reconcile(input(
            &cluster,
            running_cluster_pods(),
            vec![head_service("rc")],
        ));
        assert_eq!(output.delete.len(), 4);
        assert!(output.create_pods.is_empty());
        assert_eq!(output.requeue_after_ms, Some(2000));
        cluster.status = Some(status_of(&output));
        let output = reconcile(input(&cluster, vec![], vec![head_service("rc")]));
        let status = status_of(&output);
        assert_eq!(
            status.state,
            Some(wasmray_crds::raycluster::ClusterState::Suspended)
        );
        cluster.status = Some(status);
        let output = reconcile(input(&cluster, vec![], vec![head_service("rc")]));
        assert!(output.create_pods.is_empty() && output.status.is_none());
        cluster.spec.suspend = Some(false);
        let output = reconcile(input(&cluster, vec![], vec![head_service("rc")]));
        assert_eq!(output.create_pods.len(), 2);
    }

    #[test]
    fn deletion_with_gcs_ft_finalizer_runs_cleanup() {
        let mut cluster = cluster_from_yaml(SAMPLE);
        cluster.spec.gcs_fault_tolerance_options =
            Some(wasmray_crds::raycluster::GcsFaultToleranceOptions {
                redis_address: "redis:6379".into(),
                ..Default::default()
            });
        cluster.metadata.finalizers = Some(vec![GCS_FT_REDIS_CLEANUP_FINALIZER.into()]);
        cluster.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let output = reconcile(input(&cluster, running_cluster_pods(), vec![]));
        assert_eq!(output.delete.len(), 4);
        assert_eq!(output.requeue_after_ms, Some(10_000));
        assert!(output.apply.is_empty());
        assert_eq!(output.finalizers, [keep()]);
        let output = reconcile(input(&cluster, vec![], vec![]));
        assert_eq!(output.apply.len(), 1);
        assert!(output.apply[0].object.contains("rc-redis-cleanup"));
        assert_eq!(output.apply[0].mode, WriteMode::CreateOnly);
        assert_eq!(output.finalizers, [keep()]);
        // The cleanup Job ended (failed, even): the finalizer goes.
        let mut request = input(&cluster, vec![], vec![]);
        request.children.push(ObservedObject {
            api_version: "batch/v1".into(),
            kind: "Job".into(),
            name: "rc-redis-cleanup".into(),
            uid: "j".into(),
            object: serde_json::json!({"metadata": {"name": "rc-redis-cleanup"},
                "status": {"conditions": [{"type": "Failed", "status": "True"}]}})
            .to_string(),
        });
        let output = reconcile(request);
        assert_eq!(
            output.finalizers,
            [Finalizer {
                name: GCS_FT_REDIS_CLEANUP_FINALIZER.into(),
                intent: FinalizerIntent::Release,
            }]
        );
        assert!(output.apply.is_empty());
        // A cluster that became invalid cannot run the Job: its deletion must not wait.
        cluster
            .spec
            .head_group_spec
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers
            .clear();
        let output = reconcile(input(&cluster, vec![], vec![]));
        assert_eq!(output.finalizers[0].intent, FinalizerIntent::Release);
    }

    fn keep() -> Finalizer {
        Finalizer {
            name: GCS_FT_REDIS_CLEANUP_FINALIZER.into(),
            intent: FinalizerIntent::Keep,
        }
    }

    #[test]
    fn gcs_ft_clusters_ask_for_the_finalizer_and_token_clusters_for_their_secret() {
        let mut cluster = cluster_from_yaml(SAMPLE);
        let output = reconcile(input(&cluster, vec![], vec![head_service("rc")]));
        assert!(output.finalizers.is_empty() && output.generated_secrets.is_empty());
        cluster.spec.gcs_fault_tolerance_options =
            Some(wasmray_crds::raycluster::GcsFaultToleranceOptions {
                redis_address: "redis:6379".into(),
                ..Default::default()
            });
        let output = reconcile(input(&cluster, vec![], vec![head_service("rc")]));
        assert_eq!(
            output.finalizers,
            [Finalizer {
                name: GCS_FT_REDIS_CLEANUP_FINALIZER.into(),
                intent: FinalizerIntent::Add,
            }]
        );
        // The operator switched the cleanup off: no finalizer.
        let mut request = input(&cluster, vec![], vec![head_service("rc")]);
        request
            .host
            .settings
            .push(("gcs-ft-redis-cleanup".into(), "false".into()));
        assert!(reconcile(request).finalizers.is_empty());

        let mut cluster = cluster_from_yaml(SAMPLE);
        cluster.spec.auth_options =
            Some(serde_json::from_value(serde_json::json!({"mode": "token"})).unwrap());
        cluster.spec.ray_version = Some("2.52.0".into());
        let output = reconcile(input(&cluster, vec![], vec![head_service("rc")]));
        assert_eq!(
            output.generated_secrets,
            [GeneratedSecret {
                name: "rc".into(),
                key: RAY_AUTH_TOKEN_SECRET_KEY.into(),
                random_bytes: 32,
                labels: vec![(RAY_CLUSTER_LABEL_KEY.into(), "rc".into())],
            }]
        );
    }

    #[test]
    fn host_reported_pod_write_failure_sets_replica_failure() {
        let cluster = cluster_from_yaml(SAMPLE);
        let mut request = input(&cluster, vec![], vec![]);
        request.failed_writes.push(FailedWrite {
            operation: WriteOperation::Create,
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: "rc-small-worker-".into(),
            labels: vec![("ray.io/node-type".into(), "worker".into())],
            message: "pods is forbidden: exceeded quota".into(),
        });
        let status = status_of(&reconcile(request));
        let failure = status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == RAY_CLUSTER_REPLICA_FAILURE)
            .unwrap();
        assert_eq!(failure.reason, FAILED_CREATE_WORKER_POD);
        assert!(failure.message.contains("exceeded quota"));
    }
}
