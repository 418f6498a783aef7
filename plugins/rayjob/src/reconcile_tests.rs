//! The state machine, row by row (KubeRay v1.5.1 section 4.1), through the plugin's raw
//! entry point: JSON in, the host's output record out.

use serde_json::{Value, json};
use wasmray_crds::RayJobStatus;
use wasmray_crds::constants::RAY_JOB_STOP_JOB_FINALIZER;
use wasmray_crds::rayjob::{JobDeploymentStatus, JobFailedReason, JobStatus};
use wasmray_plugin_sdk::reconciler::{
    ActionResult, DashboardReachability, FinalizerIntent, JobObservation, RayActionKind,
    RayJobInfo, RayObservations, RayQuery, ReconcileInput, ReconcileOutput, run,
};
use wasmray_plugin_sdk::{
    EventType, HostFacts, ObservedObject, ObservedPods, ObservedService, Timestamp, WriteMode,
};

use super::RayJobReconciler;
use crate::test_support::head_pod;
use wasmray_plugin_sdk::record::ContainerStatus;

const NOW: i64 = 1_795_400_000;
const UID: &str = "0b7d6e1c-uid";

fn now() -> Timestamp {
    Timestamp {
        seconds: NOW,
        nanos: 0,
    }
}

fn rfc(seconds_before_now: i64) -> String {
    Timestamp {
        seconds: NOW - seconds_before_now,
        nanos: 0,
    }
    .to_rfc3339()
}

/// A RayJob in `mode` with `extra` spec fields merged in.
fn job(mode: &str, extra: Value) -> Value {
    let mut job = json!({
        "apiVersion": "ray.io/v1", "kind": "RayJob",
        "metadata": {"name": "rj", "namespace": "ns", "uid": UID, "generation": 1,
                     "labels": {"team": "a"}},
        "spec": {
            "submissionMode": mode,
            "entrypoint": "python -c 'print(1)'",
            "rayClusterSpec": {
                "rayVersion": "2.46.0",
                "headGroupSpec": {"template": {"spec": {"containers": [{
                    "name": "ray-head", "image": "rayproject/ray:2.46.0",
                    "ports": [{"name": "dashboard", "containerPort": 8265}]
                }]}}},
                "workerGroupSpecs": [{"groupName": "small", "replicas": 1, "minReplicas": 1, "maxReplicas": 2,
                    "template": {"spec": {"containers": [{"name": "ray-worker", "image": "rayproject/ray:2.46.0"}]}}}]
            }
        }
    });
    merge(&mut job["spec"], extra);
    job
}

fn merge(target: &mut Value, extra: Value) {
    if let (Some(target), Value::Object(extra)) = (target.as_object_mut(), extra) {
        for (key, value) in extra {
            if value.is_null() {
                target.remove(&key);
            } else {
                target.insert(key, value);
            }
        }
    }
}

fn with_status(mut job: Value, status: Value) -> Value {
    job["status"] = status;
    job
}

/// A job in Running on cluster `rj-c1` with submission id `rj-j1`.
fn running(mode: &str, extra: Value) -> Value {
    with_status(
        job(mode, extra),
        json!({"jobDeploymentStatus": "Running", "jobId": "rj-j1", "rayClusterName": "rj-c1",
               "dashboardURL": "rj-c1-head-svc.ns.svc.cluster.local:8265",
               "startTime": rfc(60), "jobStatus": "RUNNING"}),
    )
}

fn object(api_version: &str, kind: &str, value: Value) -> ObservedObject {
    let name = value["metadata"]["name"].as_str().unwrap().to_owned();
    ObservedObject {
        api_version: api_version.into(),
        kind: kind.into(),
        uid: format!("uid-{name}"),
        name,
        object: value.to_string(),
    }
}

/// The RayCluster `name`, ready or still provisioning.
fn cluster(name: &str, ready: bool) -> ObservedObject {
    let status = if ready {
        json!({"state": "ready", "endpoints": {"dashboard": "8265", "client": "10001"},
               "head": {"serviceName": format!("{name}-head-svc")}})
    } else {
        json!({"conditions": [{"type": "HeadPodReady", "status": "False", "reason": "HeadPodNotFound",
                               "message": "", "lastTransitionTime": rfc(5)}]})
    };
    object(
        "ray.io/v1",
        "RayCluster",
        json!({"apiVersion": "ray.io/v1", "kind": "RayCluster",
               "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
               "spec": {"headGroupSpec": {"template": {"spec": {"containers": [{"name": "ray-head", "image": "rayproject/ray:2.46.0"}]}}},
                        "workerGroupSpecs": [{"groupName": "small", "replicas": 1, "minReplicas": 1, "maxReplicas": 2,
                            "template": {"spec": {"containers": [{"name": "ray-worker"}]}}}]},
               "status": status}),
    )
}

/// The submitter Job with the given final condition ("Complete"/"Failed") `ago` seconds ago.
fn submitter(condition: Option<(&str, i64)>) -> ObservedObject {
    let conditions: Vec<Value> = condition
        .into_iter()
        .map(|(kind, ago)| {
            json!({"type": kind, "status": "True", "reason": "BackoffLimitExceeded",
                   "message": "Job has reached the specified backoff limit", "lastTransitionTime": rfc(ago)})
        })
        .collect();
    object(
        "batch/v1",
        "Job",
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "rj", "namespace": "ns"},
               "status": {"conditions": conditions}}),
    )
}

fn info(status: &str, message: &str) -> RayJobInfo {
    RayJobInfo {
        submission_id: "rj-j1".into(),
        status: status.into(),
        message: Some(message.into()),
        error_type: None,
        start_time_ms: Some(((NOW - 50) * 1000) as u64),
        end_time_ms: matches!(status, "SUCCEEDED" | "FAILED" | "STOPPED")
            .then_some(((NOW - 1) * 1000) as u64),
        entrypoint: None,
        metadata: vec![],
    }
}

#[derive(Clone)]
struct Input {
    parent: Value,
    children: Vec<ObservedObject>,
    related: Vec<ObservedObject>,
    services: Vec<ObservedService>,
    pods: Vec<wasmray_plugin_sdk::record::Pod>,
    ray: RayObservations,
    now: Timestamp,
    settings: Vec<(String, String)>,
    gates: Vec<(String, bool)>,
}

impl Input {
    fn new(parent: Value) -> Input {
        Input {
            parent,
            children: vec![],
            related: vec![],
            services: vec![],
            pods: vec![],
            ray: RayObservations::default(),
            now: now(),
            settings: vec![],
            gates: vec![],
        }
    }

    fn child(mut self, child: ObservedObject) -> Input {
        self.children.push(child);
        self
    }

    fn answer(mut self, answer: JobObservation) -> Input {
        self.ray.jobs.push(("rj-j1".into(), answer));
        self
    }

    fn dashboard(mut self, reachability: DashboardReachability) -> Input {
        self.ray.dashboard = reachability;
        self
    }

    fn at(mut self, seconds_after_now: i64) -> Input {
        self.now.seconds += seconds_after_now;
        self
    }

    fn run(&self) -> Output {
        let input = ReconcileInput {
            kind: "RayJob".into(),
            parent: self.parent.to_string(),
            pods: ObservedPods::from_records(&self.pods),
            services: self.services.clone(),
            children: self.children.clone(),
            related: self.related.clone(),
            ray: self.ray.clone(),
            failed_writes: Vec::new(),
            now: self.now,
            config: String::new(),
            host: HostFacts {
                operator_version: "0.1.0".into(),
                feature_gates: self.gates.clone(),
                settings: self.settings.clone(),
            },
        };
        Output(run::<RayJobReconciler>(input).expect("the plugin decides"))
    }
}

struct Output(ReconcileOutput);

impl Output {
    fn status(&self) -> RayJobStatus {
        serde_json::from_str(self.0.status.as_deref().expect("a status")).unwrap()
    }

    fn state(&self) -> JobDeploymentStatus {
        self.status().job_deployment_status.unwrap()
    }

    fn applied(&self, kind: &str) -> Vec<(Value, WriteMode)> {
        self.0
            .apply
            .iter()
            .map(|desired| {
                (
                    serde_json::from_str::<Value>(&desired.object).unwrap(),
                    desired.mode,
                )
            })
            .filter(|(object, _)| object["kind"] == kind)
            .collect()
    }

    fn deleted(&self) -> Vec<(String, String)> {
        self.0
            .delete
            .iter()
            .map(|deletion| (deletion.kind.clone(), deletion.name.clone()))
            .collect()
    }

    fn events(&self) -> Vec<(EventType, String)> {
        self.0
            .events
            .iter()
            .map(|event| (event.event_type, event.reason.clone()))
            .collect()
    }

    fn message(&self) -> String {
        self.status().message.unwrap_or_default()
    }

    fn submits(&self) -> usize {
        self.0
            .ray_actions
            .iter()
            .filter(|action| matches!(action.action, RayActionKind::SubmitJob(_)))
            .count()
    }

    /// The plugin's intent for the stop-job finalizer, if it names it.
    fn finalizer(&self) -> Option<FinalizerIntent> {
        self.0
            .finalizers
            .iter()
            .find(|finalizer| finalizer.name == RAY_JOB_STOP_JOB_FINALIZER)
            .map(|finalizer| finalizer.intent)
    }

    fn stops(&self) -> Vec<String> {
        self.0
            .ray_actions
            .iter()
            .filter_map(|action| match &action.action {
                RayActionKind::StopJob(id) => Some(format!("{}/{id}", action.cluster)),
                _ => None,
            })
            .collect()
    }

    /// The state the host writes, as the next call's parent.
    fn next(&self, input: &Input) -> Input {
        let mut next = input.clone();
        next.parent["status"] = serde_json::from_str(self.0.status.as_deref().unwrap()).unwrap();
        next.ray = RayObservations::default();
        next
    }
}

// --- validation and pre-checks ---------------------------------------------------------

#[test]
fn invalid_rayjobs_fail_validation_with_kuberays_message_and_create_nothing() {
    for (extra, needle) in [
        (
            json!({"ttlSecondsAfterFinished": 10}),
            "a RayJob with shutdownAfterJobFinishes set to false cannot have TTLSecondsAfterFinished",
        ),
        (
            json!({"backoffLimit": 1}),
            "BackoffLimit is incompatible with InteractiveMode",
        ),
    ] {
        let input = Input::new(job("InteractiveMode", extra));
        let out = input.run();
        let status = out.status();
        assert_eq!(
            status.job_deployment_status,
            Some(JobDeploymentStatus::ValidationFailed)
        );
        assert_eq!(status.reason, Some(JobFailedReason::ValidationFailed));
        assert!(
            out.message()
                .starts_with("The RayJob spec is invalid: spec."),
            "{}",
            out.message()
        );
        assert!(out.message().contains(needle), "{}", out.message());
        assert_eq!(
            out.events(),
            [(EventType::Warning, "InvalidRayJobSpec".to_owned())]
        );
        assert!(out.0.apply.is_empty() && out.0.delete.is_empty() && out.0.ray_actions.is_empty());
        assert_eq!(out.0.requeue_after_ms, None);
        // Unchanged on the next call: no second event.
        let again = out.next(&input).run();
        assert!(again.events().is_empty());
        assert_eq!(again.state(), JobDeploymentStatus::ValidationFailed);
    }
}

// --- New ---------------------------------------------------------------------------------

#[test]
fn new_chooses_names_and_starts_initializing() {
    let out = Input::new(job("HTTPMode", json!({}))).run();
    let status = out.status();
    assert_eq!(
        status.job_deployment_status,
        Some(JobDeploymentStatus::Initializing)
    );
    let job_id = status.job_id.unwrap();
    let cluster = status.ray_cluster_name.unwrap();
    assert!(job_id.starts_with("rj-") && job_id.len() == 8, "{job_id}");
    assert!(
        cluster.starts_with("rj-") && cluster.len() == 8,
        "{cluster}"
    );
    assert_ne!(job_id, cluster);
    assert_eq!(status.start_time.unwrap().0.as_second(), NOW);
    assert_eq!(status.job_status, None);
    assert_eq!(status.observed_generation, Some(1));
    assert!(out.0.apply.is_empty());

    let fixed = Input::new(job("HTTPMode", json!({"jobId": "my-id"}))).run();
    assert_eq!(fixed.status().job_id.as_deref(), Some("my-id"));
    let interactive = Input::new(job("InteractiveMode", json!({}))).run();
    assert_eq!(interactive.status().job_id, None);
    let selector = Input::new(job(
        "HTTPMode",
        json!({"clusterSelector": {"ray.io/cluster": "shared"}, "rayClusterSpec": null}),
    ))
    .run();
    assert_eq!(
        selector.status().ray_cluster_name.as_deref(),
        Some("shared")
    );
}

// --- Initializing ------------------------------------------------------------------------

fn initializing(mode: &str, extra: Value) -> Value {
    with_status(
        job(mode, extra),
        json!({"jobDeploymentStatus": "Initializing", "jobId": "rj-j1", "rayClusterName": "rj-c1",
               "startTime": rfc(10)}),
    )
}

#[test]
fn initializing_creates_the_cluster_then_waits_for_it_with_a_reason() {
    let input = Input::new(initializing("HTTPMode", json!({})));
    let out = input.run();
    let clusters = out.applied("RayCluster");
    assert_eq!(clusters.len(), 1);
    let (created, mode) = &clusters[0];
    assert_eq!(*mode, WriteMode::CreateOnly);
    assert_eq!(created["metadata"]["name"], "rj-c1");
    assert_eq!(created["metadata"]["labels"]["team"], "a");
    assert_eq!(
        created["metadata"]["labels"]["ray.io/originated-from-crd"],
        "RayJob"
    );
    assert_eq!(
        created["metadata"]["labels"]["ray.io/originated-from-cr-name"],
        "rj"
    );
    assert_eq!(
        created["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["name"],
        "ray-head"
    );
    assert_eq!(out.state(), JobDeploymentStatus::Initializing);
    assert_eq!(out.0.requeue_after_ms, Some(3000));

    let waiting = Input::new(initializing("HTTPMode", json!({}))).child(cluster("rj-c1", false));
    let out = waiting.run();
    assert!(out.0.apply.is_empty());
    assert_eq!(out.state(), JobDeploymentStatus::Initializing);
    assert_eq!(
        out.message(),
        "Waiting for RayCluster rj-c1 to be ready: HeadPodReady is False (HeadPodNotFound)"
    );
    assert_eq!(
        out.events(),
        [(EventType::Normal, "RayClusterNotReady".to_owned())]
    );
    assert!(out.status().ray_cluster_status.is_some());
    assert!(
        out.next(&waiting).run().events().is_empty(),
        "one event per new reason"
    );
}

#[test]
fn initializing_checks_the_dashboard_before_running() {
    let input = Input::new(initializing("HTTPMode", json!({}))).child(cluster("rj-c1", true));
    let out = input.run();
    let status = out.status();
    assert_eq!(
        status.dashboard_url.as_deref(),
        Some("rj-c1-head-svc.ns.svc.cluster.local:8265")
    );
    assert_eq!(out.0.ray_queries, [RayQuery::Dashboard("rj-c1".into())]);
    assert_eq!(out.state(), JobDeploymentStatus::Initializing);

    let unreachable = out
        .next(&input)
        .dashboard(DashboardReachability::Unreachable(
            "connection refused".into(),
        ))
        .run();
    assert_eq!(unreachable.state(), JobDeploymentStatus::Initializing);
    assert_eq!(
        unreachable.message(),
        "Waiting for the Ray dashboard of RayCluster rj-c1 at rj-c1-head-svc.ns.svc.cluster.local:8265: connection refused"
    );
    assert_eq!(
        unreachable.events(),
        [(EventType::Warning, "DashboardUnreachable".to_owned())]
    );

    let reachable = out
        .next(&input)
        .dashboard(DashboardReachability::Reachable)
        .run();
    assert_eq!(reachable.state(), JobDeploymentStatus::Running);
    assert_eq!(reachable.status().message, None);
    assert!(
        reachable.applied("Job").is_empty(),
        "HTTPMode has no submitter"
    );
}

#[test]
fn initializing_in_k8s_job_mode_creates_the_submitter_job() {
    let input = Input::new(with_status(
        job("K8sJobMode", json!({})),
        json!({"jobDeploymentStatus": "Initializing", "jobId": "rj-j1", "rayClusterName": "rj-c1",
               "startTime": rfc(10), "dashboardURL": "rj-c1-head-svc.ns.svc.cluster.local:8265"}),
    ))
    .child(cluster("rj-c1", true))
    .dashboard(DashboardReachability::Reachable);
    let out = input.run();
    assert_eq!(out.state(), JobDeploymentStatus::Running);
    let jobs = out.applied("Job");
    assert_eq!(jobs.len(), 1);
    let (submitter, mode) = &jobs[0];
    assert_eq!(*mode, WriteMode::CreateOnly);
    assert_eq!(submitter["apiVersion"], "batch/v1");
    assert_eq!(submitter["metadata"]["name"], "rj");
    assert_eq!(submitter["spec"]["backoffLimit"], 2);
    let args = submitter["spec"]["template"]["spec"]["containers"][0]["args"][0]
        .as_str()
        .unwrap();
    assert!(
        args.contains("--submission-id rj-j1 -- python -c 'print(1)'"),
        "{args}"
    );
    assert!(args.contains("--address http://rj-c1-head-svc.ns.svc.cluster.local:8265"));
}

#[test]
fn initializing_in_interactive_mode_waits_for_the_job_id() {
    let input = Input::new(with_status(
        job("InteractiveMode", json!({})),
        json!({"jobDeploymentStatus": "Initializing", "rayClusterName": "rj-c1", "startTime": rfc(10)}),
    ))
    .child(cluster("rj-c1", true))
    .dashboard(DashboardReachability::Reachable);
    let out = input.run();
    assert_eq!(out.state(), JobDeploymentStatus::Waiting);
    assert!(out.message().starts_with("Waiting for spec.jobId"));

    // Waiting: nothing until the user sets spec.jobId.
    let waiting = out.next(&input);
    let still = waiting.run();
    assert_eq!(still.state(), JobDeploymentStatus::Waiting);
    assert_eq!(still.0.requeue_after_ms, Some(3000));
    let mut with_id = waiting.clone();
    with_id.parent["spec"]["jobId"] = json!("user-submitted");
    let out = with_id.run();
    assert_eq!(out.state(), JobDeploymentStatus::Running);
    assert_eq!(out.status().job_id.as_deref(), Some("user-submitted"));
}

#[test]
fn initializing_with_a_cluster_selector_uses_the_existing_cluster() {
    let spec = json!({"clusterSelector": {"ray.io/cluster": "shared"}, "rayClusterSpec": null});
    let parent = with_status(
        job("HTTPMode", spec),
        json!({"jobDeploymentStatus": "Initializing", "jobId": "rj-j1", "rayClusterName": "shared", "startTime": rfc(10)}),
    );
    let missing = Input::new(parent.clone()).run();
    assert!(
        missing.0.apply.is_empty(),
        "never creates a selected cluster"
    );
    assert_eq!(
        missing.events(),
        [(EventType::Warning, "RayClusterNotFound".to_owned())]
    );
    assert_eq!(
        missing.message(),
        "RayCluster ns/shared selected by spec.clusterSelector not found"
    );

    let mut found = Input::new(parent).dashboard(DashboardReachability::Reachable);
    found.related.push(cluster("shared", true));
    let out = found.run();
    assert_eq!(out.state(), JobDeploymentStatus::Running);
    assert_eq!(
        out.status().dashboard_url.as_deref(),
        Some("shared-head-svc.ns.svc.cluster.local:8265")
    );
}

#[test]
fn initializing_suspend_and_deadline() {
    let suspended = Input::new(initializing(
        "HTTPMode",
        json!({"suspend": true, "shutdownAfterJobFinishes": true}),
    ))
    .run();
    assert_eq!(suspended.state(), JobDeploymentStatus::Suspending);
    assert!(
        suspended.0.apply.is_empty(),
        "a suspended RayJob creates no cluster"
    );

    // The deadline fails the job without a retry, even with backoffLimit.
    let late = Input::new(initializing(
        "HTTPMode",
        json!({"activeDeadlineSeconds": 5, "backoffLimit": 2}),
    ))
    .run();
    let status = late.status();
    assert_eq!(
        status.job_deployment_status,
        Some(JobDeploymentStatus::Failed)
    );
    assert_eq!(status.reason, Some(JobFailedReason::DeadlineExceeded));
    assert_eq!(
        late.message(),
        format!(
            "The RayJob has passed the activeDeadlineSeconds. StartTime: {} ActiveDeadlineSeconds: 5",
            rfc(10)
        )
    );
    assert_eq!(status.failed, Some(1));
    assert_eq!(status.end_time.unwrap().0.as_second(), NOW);
    assert!(
        late.events()
            .contains(&(EventType::Warning, "DeadlineExceeded".to_owned()))
    );
    assert!(late.stops().is_empty(), "nothing was submitted yet");

    let early = Input::new(initializing(
        "HTTPMode",
        json!({"activeDeadlineSeconds": 12}),
    ))
    .run();
    assert_eq!(early.state(), JobDeploymentStatus::Initializing);
    assert_eq!(
        early.0.requeue_after_ms,
        Some(2000),
        "look again when the deadline passes"
    );
}

#[test]
fn sidecar_mode_puts_the_submitter_in_the_head_pod() {
    let out = Input::new(initializing("SidecarMode", json!({}))).run();
    let (created, _) = &out.applied("RayCluster")[0];
    let head = &created["spec"]["headGroupSpec"]["template"]["spec"];
    assert_eq!(head["restartPolicy"], "Never");
    assert_eq!(head["containers"][1]["name"], "ray-job-submitter");
    let command = head["containers"][1]["args"][0].as_str().unwrap();
    assert!(
        command.contains("ray job submit --address http://127.0.0.1:8265 --submission-id rj-j1")
    );
}

// --- Running -----------------------------------------------------------------------------

#[test]
fn http_mode_submits_once_ray_says_the_job_is_unknown() {
    let input = Input::new(running("HTTPMode", json!({}))).child(cluster("rj-c1", true));
    let first = input.run();
    assert_eq!(
        first.0.ray_queries,
        [RayQuery::Job(("rj-c1".into(), "rj-j1".into()))]
    );
    assert_eq!(first.submits(), 0, "no submission before Ray was asked");
    assert_eq!(first.state(), JobDeploymentStatus::Running);

    let unknown = input
        .clone()
        .answer(JobObservation::NotFound("404".into()))
        .run();
    let submit = unknown
        .0
        .ray_actions
        .iter()
        .find_map(|action| match &action.action {
            RayActionKind::SubmitJob(submit) => {
                Some((action.id.clone(), action.cluster.clone(), submit.clone()))
            }
            _ => None,
        })
        .expect("a submission");
    assert_eq!(submit.0, "submit:rj-j1");
    assert_eq!(submit.1, "rj-c1");
    assert_eq!(submit.2.submission_id, "rj-j1");
    assert_eq!(submit.2.entrypoint, "python -c 'print(1)'");

    // Ray refused: the reason is in the status and an event; the next call submits again.
    let mut refused = input.clone().answer(JobObservation::NotFound("404".into()));
    refused.ray.action_results.push(ActionResult {
        id: "submit:rj-j1".into(),
        at: now(),
        outcome: Err("500: runtime_env setup failed".into()),
    });
    let out = refused.run();
    assert_eq!(
        out.events(),
        [(EventType::Warning, "FailedToSubmitRayJob".to_owned())]
    );
    assert!(out.message().ends_with("runtime_env setup failed"));
    assert_eq!(out.submits(), 1);
}

#[test]
fn running_mirrors_ray_and_completes() {
    let input = Input::new(running("HTTPMode", json!({}))).child(cluster("rj-c1", true));
    let out = input
        .clone()
        .answer(JobObservation::Found(info(
            "RUNNING",
            "Job is currently running.",
        )))
        .run();
    let status = out.status();
    assert_eq!(status.job_status, Some(JobStatus::Running));
    assert_eq!(status.message.as_deref(), Some("Job is currently running."));
    assert_eq!(
        status
            .ray_job_info
            .unwrap()
            .start_time
            .unwrap()
            .0
            .as_second(),
        NOW - 50
    );
    assert_eq!(out.state(), JobDeploymentStatus::Running);
    assert_eq!(out.0.requeue_after_ms, Some(3000));
    let services = out.applied("Service");
    assert_eq!(services.len(), 1, "the RayJob head Service");
    assert_eq!(services[0].0["metadata"]["name"], "rj-head-svc");
    assert_eq!(services[0].1, WriteMode::Apply);

    let done = input
        .answer(JobObservation::Found(info(
            "SUCCEEDED",
            "Job finished successfully.",
        )))
        .run();
    let status = done.status();
    assert_eq!(
        status.job_deployment_status,
        Some(JobDeploymentStatus::Complete)
    );
    assert_eq!(status.job_status, Some(JobStatus::Succeeded));
    assert_eq!(status.succeeded, Some(1));
    assert_eq!(status.end_time.unwrap().0.as_second(), NOW);
    assert_eq!(done.events(), [(EventType::Normal, "Completed".to_owned())]);
}

#[test]
fn ray_failure_fails_promptly_with_rays_message_and_error_type() {
    let mut failed = info("FAILED", "Job entrypoint command failed with exit code 1");
    failed.error_type = Some("JOB_ENTRYPOINT_COMMAND_ERROR".into());
    // K8sJobMode with a submitter still running: KubeRay would wait; Ray's verdict wins.
    let out = Input::new(running("K8sJobMode", json!({})))
        .child(cluster("rj-c1", true))
        .child(submitter(None))
        .answer(JobObservation::Found(failed))
        .run();
    let status = out.status();
    assert_eq!(
        status.job_deployment_status,
        Some(JobDeploymentStatus::Failed)
    );
    assert_eq!(status.reason, Some(JobFailedReason::AppFailed));
    assert_eq!(status.job_status, Some(JobStatus::Failed));
    assert_eq!(
        out.message(),
        "JOB_ENTRYPOINT_COMMAND_ERROR: Job entrypoint command failed with exit code 1"
    );
    assert_eq!(out.events(), [(EventType::Warning, "AppFailed".to_owned())]);
    assert!(out.stops().is_empty(), "Ray already ended it");
}

#[test]
fn backoff_limit_retries_with_a_new_cluster_and_job_id() {
    let input = Input::new(running("HTTPMode", json!({"backoffLimit": 1})))
        .child(cluster("rj-c1", true))
        .answer(JobObservation::Found(info("FAILED", "boom")));
    let out = input.run();
    let status = out.status();
    assert_eq!(
        status.job_deployment_status,
        Some(JobDeploymentStatus::Retrying)
    );
    assert_eq!(status.failed, Some(1));
    assert_eq!(status.end_time, None);
    assert_eq!(out.events()[0], (EventType::Warning, "Retrying".to_owned()));

    // Retrying: the cluster goes first ...
    let retrying = out.next(&input);
    let teardown = retrying.run();
    assert_eq!(
        teardown.deleted(),
        [("RayCluster".to_owned(), "rj-c1".to_owned())]
    );
    assert_eq!(teardown.state(), JobDeploymentStatus::Retrying);
    // ... then the attempt's fields are reset and a new attempt starts.
    let mut gone = retrying.clone();
    gone.children.clear();
    let reset = gone.run();
    let status = reset.status();
    assert_eq!(status.job_deployment_status, Some(JobDeploymentStatus::New));
    assert_eq!(
        (status.job_id.clone(), status.ray_cluster_name.clone()),
        (None, None)
    );
    assert_eq!(
        (status.job_status, status.reason, status.message),
        (None, None, None)
    );
    let renewed = reset.next(&gone).run().status();
    assert_eq!(
        renewed.job_deployment_status,
        Some(JobDeploymentStatus::Initializing)
    );
    let first = Input::new(job("HTTPMode", json!({"backoffLimit": 1})))
        .run()
        .status();
    assert_ne!(renewed.ray_cluster_name, first.ray_cluster_name);
    assert_ne!(renewed.job_id, first.job_id);

    // The second failure is final.
    let mut last = input.clone();
    last.parent["status"]["failed"] = json!(1);
    let out = last.run();
    assert_eq!(out.state(), JobDeploymentStatus::Failed);
    assert_eq!(out.status().failed, Some(2));
}

#[test]
fn k8s_job_mode_follows_the_submitter() {
    let base = Input::new(running("K8sJobMode", json!({}))).child(cluster("rj-c1", true));

    // Submitter gave up before Ray knew the job: SubmissionFailed, with the Job's reason.
    let failed = base
        .clone()
        .child(submitter(Some(("Failed", 1))))
        .answer(JobObservation::Found(info("RUNNING", "")))
        .run();
    assert_eq!(failed.state(), JobDeploymentStatus::Failed);
    assert_eq!(
        failed.status().reason,
        Some(JobFailedReason::SubmissionFailed)
    );
    assert_eq!(
        failed.message(),
        "Job submission has failed. Reason: BackoffLimitExceeded. Message: Job has reached the specified backoff limit"
    );
    assert_eq!(
        failed.stops(),
        ["rj-c1/rj-j1"],
        "the RayJob failed: its Ray job stops"
    );

    // Ray says SUCCEEDED but the submitter still tails the logs: wait for it.
    let waiting = base
        .clone()
        .child(submitter(None))
        .answer(JobObservation::Found(info("SUCCEEDED", "done")))
        .run();
    assert_eq!(waiting.state(), JobDeploymentStatus::Running);
    assert_eq!(
        waiting.message(),
        "Ray job rj-j1 is Succeeded; waiting for the submitter to finish"
    );
    let complete = base
        .clone()
        .child(submitter(Some(("Complete", 1))))
        .answer(JobObservation::Found(info("SUCCEEDED", "done")))
        .run();
    assert_eq!(complete.state(), JobDeploymentStatus::Complete);

    // The submitter finished 31 s ago and Ray still says RUNNING: the job is lost.
    let lost = base
        .clone()
        .child(submitter(Some(("Complete", 31))))
        .answer(JobObservation::Found(info("RUNNING", "")))
        .run();
    let status = lost.status();
    assert_eq!(
        status.job_deployment_status,
        Some(JobDeploymentStatus::Failed)
    );
    assert_eq!(status.job_status, Some(JobStatus::Failed));
    assert_eq!(
        status.reason,
        Some(JobFailedReason::JobDeploymentStatusTransitionGracePeriodExceeded)
    );

    // The submitter finished but Ray never heard of the job.
    let never = base
        .clone()
        .child(submitter(Some(("Complete", 1))))
        .answer(JobObservation::NotFound("404".into()))
        .run();
    assert_eq!(never.status().reason, Some(JobFailedReason::AppFailed));
    assert_eq!(
        never.message(),
        "Submitter completed but Ray job not found in RayCluster."
    );

    // Not found while the submitter runs: wait for it, never submit from here.
    let pending = base
        .clone()
        .child(submitter(None))
        .answer(JobObservation::NotFound("404".into()))
        .run();
    assert_eq!(pending.state(), JobDeploymentStatus::Running);
    assert_eq!(pending.submits(), 0);

    // A missing submitter (deleted by someone) is created again; its command does not
    // resubmit a job Ray knows.
    let recreated = base
        .answer(JobObservation::Found(info("RUNNING", "")))
        .run();
    assert_eq!(recreated.applied("Job").len(), 1);
}

#[test]
fn the_grace_period_ends_a_stuck_running_state() {
    let mut ended = info("SUCCEEDED", "done");
    ended.end_time_ms = Some(((NOW - 301) * 1000) as u64);
    let out = Input::new(running("K8sJobMode", json!({})))
        .child(cluster("rj-c1", true))
        .child(submitter(None))
        .answer(JobObservation::Found(ended))
        .run();
    assert_eq!(out.state(), JobDeploymentStatus::Complete);
}

#[test]
fn sidecar_mode_follows_the_head_pods_submitter_container() {
    let base = Input::new(running("SidecarMode", json!({}))).child(cluster("rj-c1", true));
    let missing = base.run();
    assert_eq!(missing.state(), JobDeploymentStatus::Failed);
    assert_eq!(missing.message(), "Ray head pod not found.");
    assert_eq!(missing.status().reason, Some(JobFailedReason::AppFailed));

    // The cluster says its head is ready: the pod is not passed yet, no verdict.
    let mut ready_head = cluster("rj-c1", true);
    let mut value: Value = serde_json::from_str(&ready_head.object).unwrap();
    value["status"]["conditions"] = json!([{"type": "HeadPodReady", "status": "True",
        "reason": "HeadPodRunningAndReady", "message": "", "lastTransitionTime": rfc(30)}]);
    ready_head.object = value.to_string();
    let unseen = Input::new(running("SidecarMode", json!({})))
        .child(ready_head)
        .run();
    assert_eq!(unseen.state(), JobDeploymentStatus::Running);
    assert_eq!(
        unseen.message(),
        "Waiting to observe the head pod of RayCluster rj-c1"
    );

    let mut pod = head_pod("rj-c1");
    pod.container_statuses
        .push(ContainerStatus::terminated("ray-job-submitter", 2));
    let mut exited = base.clone();
    exited.pods.push(pod);
    let out = exited.run();
    assert_eq!(out.status().reason, Some(JobFailedReason::SubmissionFailed));
    assert_eq!(
        out.message(),
        "Ray head pod container ray-job-submitter terminated with exit code 2: Error"
    );

    let mut alive = base;
    alive.pods.push(head_pod("rj-c1"));
    let out = alive.answer(JobObservation::NotFound("404".into())).run();
    assert_eq!(out.state(), JobDeploymentStatus::Running);
    assert_eq!(out.submits(), 0);
}

#[test]
fn interactive_mode_never_submits() {
    let out = Input::new(running("InteractiveMode", json!({})))
        .child(cluster("rj-c1", true))
        .answer(JobObservation::NotFound("404".into()))
        .run();
    assert_eq!(out.state(), JobDeploymentStatus::Running);
    assert_eq!(out.submits(), 0);
}

#[test]
fn running_deadline_stops_the_ray_job() {
    let out = Input::new(running("HTTPMode", json!({"activeDeadlineSeconds": 30})))
        .child(cluster("rj-c1", true))
        .run();
    assert_eq!(out.state(), JobDeploymentStatus::Failed);
    assert_eq!(out.status().reason, Some(JobFailedReason::DeadlineExceeded));
    assert_eq!(out.stops(), ["rj-c1/rj-j1"]);
}

#[test]
fn running_without_its_cluster_fails_instead_of_waiting_forever() {
    let out = Input::new(running("HTTPMode", json!({}))).run();
    assert_eq!(out.state(), JobDeploymentStatus::Failed);
    assert_eq!(
        out.message(),
        "RayCluster rj-c1 is gone while the job was running"
    );
}

#[test]
fn a_lost_head_pod_fails_the_attempt() {
    let mut lost = cluster("rj-c1", true);
    let mut value: Value = serde_json::from_str(&lost.object).unwrap();
    value["status"]["conditions"] = json!([
        {"type": "HeadPodReady", "status": "False", "reason": "HeadPodNotFound", "message": "", "lastTransitionTime": rfc(3)},
        {"type": "RayClusterProvisioned", "status": "True", "reason": "AllPodRunningAndReadyFirstTime", "message": "", "lastTransitionTime": rfc(40)}
    ]);
    lost.object = value.to_string();
    let out = Input::new(running("HTTPMode", json!({"backoffLimit": 1})))
        .child(lost)
        .answer(JobObservation::Unavailable("connection refused".into()))
        .run();
    assert_eq!(out.state(), JobDeploymentStatus::Retrying);
    assert_eq!(out.status().reason, Some(JobFailedReason::AppFailed));
    assert!(
        out.message()
            .contains("head pod of RayCluster rj-c1 is gone")
    );
}

#[test]
fn an_unreachable_dashboard_is_reported_while_running() {
    let input = Input::new(running("HTTPMode", json!({})))
        .child(cluster("rj-c1", true))
        .answer(JobObservation::Unavailable("timed out after 2s".into()));
    let out = input.run();
    assert_eq!(out.state(), JobDeploymentStatus::Running);
    assert_eq!(
        out.message(),
        "Cannot get Ray job rj-j1 from the dashboard of RayCluster rj-c1: timed out after 2s"
    );
    assert_eq!(
        out.events(),
        [(EventType::Warning, "DashboardUnreachable".to_owned())]
    );
}

// --- Suspend / resume --------------------------------------------------------------------

#[test]
fn suspend_while_running_tears_down_and_resume_starts_a_new_attempt() {
    let spec = json!({"suspend": true, "shutdownAfterJobFinishes": true});
    let input = Input::new(running("K8sJobMode", spec))
        .child(cluster("rj-c1", true))
        .child(submitter(None));
    let out = input.run();
    assert_eq!(out.state(), JobDeploymentStatus::Suspending);

    let suspending = out.next(&input);
    let teardown = suspending.run();
    assert_eq!(
        teardown.deleted(),
        [
            ("RayCluster".to_owned(), "rj-c1".to_owned()),
            ("Job".to_owned(), "rj".to_owned())
        ]
    );
    assert_eq!(teardown.state(), JobDeploymentStatus::Suspending);

    // What is already going away is not deleted again, but still waited for.
    let mut terminating = suspending.clone();
    for child in &mut terminating.children {
        let mut value: Value = serde_json::from_str(&child.object).unwrap();
        value["metadata"]["deletionTimestamp"] = json!(rfc(1));
        child.object = value.to_string();
    }
    let out = terminating.run();
    assert!(out.deleted().is_empty());
    assert_eq!(out.state(), JobDeploymentStatus::Suspending);

    let mut gone = suspending.clone();
    gone.children.clear();
    let suspended = gone.run();
    let status = suspended.status();
    assert_eq!(
        status.job_deployment_status,
        Some(JobDeploymentStatus::Suspended)
    );
    assert_eq!(status.ray_cluster_name, None);
    assert_eq!(status.dashboard_url, None);
    assert_eq!(status.job_id, None);
    assert_eq!(status.ray_cluster_status, None);

    // Still suspended: nothing happens.
    let idle = suspended.next(&gone);
    assert_eq!(idle.run().state(), JobDeploymentStatus::Suspended);

    // Kueue admits it again: suspend flips, the generation moves, new names.
    let mut resumed = idle.clone();
    resumed.parent["spec"]["suspend"] = json!(false);
    resumed.parent["metadata"]["generation"] = json!(3);
    let new = resumed.run();
    assert_eq!(new.state(), JobDeploymentStatus::New);
    let started = new.next(&resumed).run().status();
    assert_eq!(
        started.job_deployment_status,
        Some(JobDeploymentStatus::Initializing)
    );
    assert_ne!(started.ray_cluster_name.as_deref(), Some("rj-c1"));
    let first = Input::new(job("K8sJobMode", json!({}))).run().status();
    assert_ne!(started.ray_cluster_name, first.ray_cluster_name);
    assert_ne!(started.job_id, first.job_id);
}

// --- Complete / Failed -------------------------------------------------------------------

fn finished(extra: Value, job_status: &str, ended_ago: i64) -> Value {
    with_status(
        job("HTTPMode", extra),
        json!({"jobDeploymentStatus": "Complete", "jobId": "rj-j1", "rayClusterName": "rj-c1",
               "jobStatus": job_status, "startTime": rfc(100), "endTime": rfc(ended_ago)}),
    )
}

#[test]
fn shutdown_after_job_finishes_deletes_the_cluster_after_the_ttl() {
    let spec = json!({"shutdownAfterJobFinishes": true, "ttlSecondsAfterFinished": 10});
    let early = Input::new(finished(spec.clone(), "SUCCEEDED", 4))
        .child(cluster("rj-c1", true))
        .run();
    assert!(early.deleted().is_empty());
    assert_eq!(early.0.requeue_after_ms, Some(8000));
    let due = Input::new(finished(spec.clone(), "SUCCEEDED", 10))
        .child(cluster("rj-c1", true))
        .run();
    assert_eq!(
        due.deleted(),
        [("RayCluster".to_owned(), "rj-c1".to_owned())]
    );
    assert_eq!(due.0.requeue_after_ms, None);
    assert!(due.0.ray_queries.is_empty());

    let mut self_deleting = Input::new(finished(spec, "SUCCEEDED", 10));
    self_deleting
        .settings
        .push(("delete-rayjob-cr-after-job-finishes".into(), "true".into()));
    let out = self_deleting.run();
    assert_eq!(out.deleted(), [("RayJob".to_owned(), "rj".to_owned())]);
    assert_eq!(out.0.delete[0].uid, UID);
    assert_eq!(out.0.delete[0].api_version, "ray.io/v1");
}

#[test]
fn deletion_rules_suspend_workers_under_the_gate() {
    let spec = json!({"deletionStrategy": {"deletionRules": [
        {"policy": "DeleteWorkers", "condition": {"jobStatus": "FAILED", "ttlSeconds": 0}}
    ]}});
    let mut input = Input::new(finished(spec, "FAILED", 1)).child(cluster("rj-c1", true));
    input.gates.push(("RayJobDeletionPolicy".into(), true));
    let out = input.run();
    let clusters = out.applied("RayCluster");
    assert_eq!(clusters.len(), 1);
    assert_eq!(clusters[0].1, WriteMode::Apply);
    assert_eq!(clusters[0].0["metadata"]["name"], "rj-c1");
    assert_eq!(
        clusters[0].0["spec"]["workerGroupSpecs"][0]["suspend"],
        true
    );
    assert_eq!(
        clusters[0].0["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["name"],
        "ray-worker",
        "the full group is applied, so nothing else changes"
    );

    // Without the gate the strategy is invalid.
    input.gates.clear();
    assert_eq!(input.run().state(), JobDeploymentStatus::ValidationFailed);
}

#[test]
fn deleting_a_running_rayjob_stops_its_ray_job() {
    let mut parent = running("HTTPMode", json!({}));
    parent["metadata"]["deletionTimestamp"] = json!(rfc(1));
    let input = Input::new(parent);
    let out = input.run();
    assert_eq!(out.stops(), ["rj-c1/rj-j1"]);
    assert_eq!(out.0.status, None);
    assert_eq!(
        out.finalizer(),
        Some(FinalizerIntent::Keep),
        "held until stopped"
    );
    let mut stopped = input.clone();
    stopped.ray.action_results.push(ActionResult {
        id: "stop:rj-j1".into(),
        at: now(),
        outcome: Ok(String::new()),
    });
    let out = stopped.run();
    assert!(out.stops().is_empty(), "stopped once");
    assert_eq!(out.finalizer(), Some(FinalizerIntent::Release));
}

#[test]
fn valid_rayjobs_ask_for_the_finalizer_and_invalid_ones_let_deletion_go() {
    let out = Input::new(job("K8sJobMode", json!({}))).run();
    assert_eq!(out.finalizer(), Some(FinalizerIntent::Add));
    // KubeRay: a TTL needs shutdownAfterJobFinishes.
    let mut invalid = job("K8sJobMode", json!({"ttlSecondsAfterFinished": 10}));
    assert_eq!(Input::new(invalid.clone()).run().finalizer(), None);
    invalid["metadata"]["deletionTimestamp"] = json!(rfc(1));
    assert_eq!(
        Input::new(invalid).run().finalizer(),
        Some(FinalizerIntent::Release)
    );
}

#[test]
fn a_replayed_input_gives_the_same_decision() {
    let input = Input::new(job("K8sJobMode", json!({}))).at(17);
    assert_eq!(input.run().0, input.run().0);
}

#[test]
fn a_queued_rayjob_says_when_its_local_queue_does_not_exist() {
    let mut parent = with_status(
        job(
            "HTTPMode",
            json!({"suspend": true, "shutdownAfterJobFinishes": true}),
        ),
        json!({"jobDeploymentStatus": "Suspended"}),
    );
    parent["metadata"]["labels"] = json!({"kueue.x-k8s.io/queue-name": "nowhere"});
    let lost = Input::new(parent);
    let out = lost.run();
    let message = out.status().message.unwrap_or_default();
    assert!(
        message.starts_with("LocalQueue nowhere does not exist in namespace"),
        "{message}"
    );
    assert_eq!(
        out.events(),
        [(EventType::Warning, "QueueNotFound".to_owned())]
    );
    // Said once.
    let again = out.next(&lost);
    assert!(again.run().events().is_empty());
    // The queue appears: the message goes.
    let mut found = again.clone();
    found.related.push(object(
        "kueue.x-k8s.io/v1beta2",
        "LocalQueue",
        json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
               "metadata": {"name": "nowhere", "namespace": "ns", "uid": "uid-q"}}),
    ));
    assert_eq!(found.run().status().message, None);
}
