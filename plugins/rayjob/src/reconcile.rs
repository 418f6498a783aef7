//! The reconcile entry point: KubeRay v1.5.1's RayJob state machine (`jobDeploymentStatus`),
//! one transition per call, with Ray reached only through the host's queries and actions.
//!
//! A call reads the RayJob's status, the children the host observed and Ray's answers to
//! the previous call's queries; it returns the new status, the objects to create, apply or
//! delete, the Ray actions to take and the Ray queries to answer before the next call.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff;
use wasmray_crds::constants::{
    HEAD_NODE_TYPE, KUEUE_QUEUE_NAME_LABEL_KEY, RAY_CLUSTER_LABEL_KEY, RAY_JOB_STOP_JOB_FINALIZER,
    RAY_NODE_TYPE_LABEL_KEY,
};
use wasmray_crds::rayjob::{
    JobDeploymentStatus, JobFailedReason, JobStatus, JobSubmissionMode, RayJobStatusInfo,
};
use wasmray_crds::{RayCluster, RayJob, RayJobStatus, ValidationErrors, validate_ray_job};
use wasmray_plugin_sdk::k8s_openapi::api::batch::v1::Job;
use wasmray_plugin_sdk::reconciler::{
    DashboardReachability, Decision, FinalizerIntent, JobObservation, RayActionKind, RayJobInfo,
    RayQuery, Reconciler, Request,
};
use wasmray_plugin_sdk::{Duration, Event, EventType, PluginError, Timestamp, WriteMode, log};

use crate::cleanup::{self, CleanupAction};
use crate::cluster::{
    auth_secret, dashboard_port, dashboard_url, desired_cluster, head_image, head_lost,
    not_ready_reason,
};
use crate::names::{Attempt, NameRole, generated_name};
use crate::observed::{
    AnyObject, JOB_API_VERSION, JOB_KIND, RAY_API_VERSION, RAY_CLUSTER_KIND, Seen, action_result,
    job_answer, named, of_kind, parse,
};
use crate::service::needs_write;
use crate::settings::Settings;
use crate::submission::JobRequest;
use crate::submitter::{
    SubmitterContext, SubmitterState, job_state, sidecar_dashboard_url, sidecar_state,
};
use wasmray_crds::parent_services::{head_service, head_service_name};

/// KubeRay requeues a RayJob every 3 s while it is in flight.
const REQUEUE: Duration = Duration::from_secs(3);
/// KubeRay's `DefaultSubmitterFinishedTimeout`: a submitter that ended this long ago while
/// Ray still has no final status means the job is lost.
const SUBMITTER_FINISHED_TIMEOUT: Duration = Duration::from_secs(30);

/// Event reasons. KubeRay's where KubeRay has one; the rest say what WasmRay adds.
pub mod reasons {
    pub const INVALID_SPEC: &str = "InvalidRayJobSpec";
    pub const INVALID_METADATA: &str = "InvalidRayJobMetadata";
    pub const INVALID_STATUS: &str = "InvalidRayJobStatus";
    pub const RAY_CLUSTER_NOT_FOUND: &str = "RayClusterNotFound";
    pub const FAILED_TO_CREATE_SUBMITTER: &str = "FailedToCreateRayJobSubmitter";
    /// Initializing waits for the cluster; the message names the conditions.
    pub const RAY_CLUSTER_NOT_READY: &str = "RayClusterNotReady";
    /// The dashboard did not answer; the message has the host's error.
    pub const DASHBOARD_UNREACHABLE: &str = "DashboardUnreachable";
    /// Ray refused or could not take the HTTPMode submission.
    pub const FAILED_TO_SUBMIT: &str = "FailedToSubmitRayJob";
    /// An attempt failed and another one starts with a new cluster and job id.
    pub const RETRYING: &str = "Retrying";
    /// The job reached a final status (the event of a failure is its `JobFailedReason`).
    pub const COMPLETED: &str = "Completed";
    /// A cleanup step after the job finished (TTL or deletion strategy).
    pub const CLEANUP: &str = "JobCleanup";
}

/// The built-in RayJob reconciler.
pub struct RayJobReconciler;

impl Reconciler for RayJobReconciler {
    type Parent = RayJob;
    const KINDS: &'static [&'static str] = &["RayJob"];

    fn reconcile(request: Request<RayJob>) -> Result<Decision, PluginError> {
        decide(&request)
    }
}

/// Decides for one RayJob.
pub fn decide(request: &Request<RayJob>) -> Result<Decision, PluginError> {
    // `spec.managedBy` is the host's gate: an object another controller manages (e.g.
    // MultiKueue) is never passed here.
    let job = &request.parent;
    let deleting = job.metadata.deletion_timestamp.is_some();
    let mut pass = Pass::new(request);
    if let Err(errors) = validate_ray_job(job, &pass.settings.feature_gates()) {
        pass.validation_failed(&errors);
        if deleting {
            // Only valid RayJobs get the finalizer (as KubeRay); one that became invalid
            // has no Ray job this plugin would stop, so its deletion must not wait.
            pass.decision
                .finalizer(RAY_JOB_STOP_JOB_FINALIZER, FinalizerIntent::Release);
        }
        return pass.finish();
    }
    if deleting {
        pass.on_deletion();
        return Ok(pass.decision);
    }
    // As KubeRay: a valid RayJob carries the finalizer, so deleting it stops its Ray job
    // first.
    pass.decision
        .finalizer(RAY_JOB_STOP_JOB_FINALIZER, FinalizerIntent::Add);
    match pass.state() {
        JobDeploymentStatus::New => pass.on_new(),
        JobDeploymentStatus::Initializing => pass.on_initializing()?,
        JobDeploymentStatus::Waiting => pass.on_waiting(),
        JobDeploymentStatus::Running => pass.on_running()?,
        JobDeploymentStatus::Suspending | JobDeploymentStatus::Retrying => pass.on_tear_down()?,
        JobDeploymentStatus::Suspended => pass.on_suspended(),
        JobDeploymentStatus::Complete | JobDeploymentStatus::Failed => pass.on_finished()?,
        // KubeRay leaves an invalid RayJob as it is, even once fixed: the attempt is over.
        JobDeploymentStatus::ValidationFailed => {}
    }
    pass.finish()
}

/// How an attempt ends.
enum Outcome {
    Complete,
    Failed(JobFailedReason, String),
}

/// One call: the input, the status being built and the decision.
struct Pass<'a> {
    request: &'a Request<RayJob>,
    job: &'a RayJob,
    name: &'a str,
    settings: Settings,
    /// The status as observed.
    previous: RayJobStatus,
    /// The status this call decides.
    status: RayJobStatus,
    decision: Decision,
}

impl<'a> Pass<'a> {
    fn new(request: &'a Request<RayJob>) -> Pass<'a> {
        let job = &request.parent;
        let previous = job.status.clone().unwrap_or_default();
        let mut status = previous.clone();
        status.observed_generation = job.metadata.generation;
        Pass {
            request,
            job,
            name: job.metadata.name.as_deref().unwrap_or_default(),
            settings: Settings::from_host(&request.host),
            previous,
            status,
            decision: Decision::default(),
        }
    }

    fn finish(mut self) -> Result<Decision, PluginError> {
        self.decision.set_status(&self.status)?;
        Ok(self.decision)
    }

    fn now(&self) -> Timestamp {
        self.request.now
    }

    fn state(&self) -> JobDeploymentStatus {
        self.status
            .job_deployment_status
            .unwrap_or(JobDeploymentStatus::New)
    }

    fn mode(&self) -> JobSubmissionMode {
        self.job.spec.submission_mode()
    }

    fn go(&mut self, state: JobDeploymentStatus) {
        self.status.job_deployment_status = Some(state);
    }

    fn job_id(&self) -> &str {
        self.status.job_id.as_deref().unwrap_or_default()
    }

    fn cluster_name(&self) -> &str {
        self.status.ray_cluster_name.as_deref().unwrap_or_default()
    }

    fn job_status(&self) -> JobStatus {
        self.status.job_status.unwrap_or(JobStatus::New)
    }

    /// Sets `status.message` without an event (progress the user may look at).
    fn note(&mut self, message: String) {
        self.status.message = Some(message);
    }

    /// Sets `status.message` and records an event when the message is new, so a wait that
    /// lasts many calls makes one event per change, not one per call.
    fn say(&mut self, event_type: EventType, reason: &str, message: String) {
        if self.previous.message.as_deref() != Some(message.as_str()) {
            self.decision.event(Event {
                event_type,
                reason: reason.to_owned(),
                message: message.clone(),
            });
        }
        self.status.message = Some(message);
    }

    fn validation_failed(&mut self, errors: &ValidationErrors) {
        let field = errors
            .0
            .first()
            .map_or("spec", |error| error.field.as_str());
        let reason = if field.starts_with("metadata") {
            reasons::INVALID_METADATA
        } else if field.starts_with("status") {
            reasons::INVALID_STATUS
        } else {
            reasons::INVALID_SPEC
        };
        let message = errors
            .0
            .iter()
            .map(|error| {
                if error.field.starts_with("spec") {
                    format!(
                        "The RayJob spec is invalid: {}: {}",
                        error.field, error.message
                    )
                } else {
                    format!("{}: {}", error.field, error.message)
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        self.go(JobDeploymentStatus::ValidationFailed);
        self.status.reason = Some(JobFailedReason::ValidationFailed);
        self.say(EventType::Warning, reason, message);
    }

    /// The RayJob is being deleted: stop a job Ray may still run (KubeRay's finalizer does
    /// this), keeping the finalizer until the stop has been tried.
    fn on_deletion(&mut self) {
        let job_id = self.job_id().to_owned();
        let cluster = self.cluster_name().to_owned();
        let stop_id = format!("stop:{job_id}");
        if !job_id.is_empty()
            && !cluster.is_empty()
            && !self.job_status().is_terminal()
            && action_result(&self.request.ray, &stop_id).is_none()
        {
            self.decision
                .ray_action(&stop_id, &cluster, RayActionKind::StopJob(job_id));
            self.decision
                .finalizer(RAY_JOB_STOP_JOB_FINALIZER, FinalizerIntent::Keep);
        } else {
            self.decision
                .finalizer(RAY_JOB_STOP_JOB_FINALIZER, FinalizerIntent::Release);
        }
    }

    /// New: choose this attempt's names and start it.
    fn on_new(&mut self) {
        let spec = &self.job.spec;
        let attempt = Attempt {
            uid: self.job.metadata.uid.as_deref().unwrap_or_default(),
            finished: i64::from(self.status.succeeded.unwrap_or(0))
                + i64::from(self.status.failed.unwrap_or(0)),
            generation: self.job.metadata.generation.unwrap_or(0),
        };
        if self.mode() != JobSubmissionMode::InteractiveMode {
            let job_id = spec
                .job_id
                .clone()
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| generated_name(self.name, attempt, NameRole::JobId));
            self.status.job_id = Some(job_id);
        }
        let cluster = match spec.cluster_selector() {
            Some(selector) => selector
                .get(RAY_CLUSTER_LABEL_KEY)
                .cloned()
                .unwrap_or_default(),
            None => generated_name(self.name, attempt, NameRole::Cluster),
        };
        self.status.ray_cluster_name = Some(cluster);
        self.status.job_status = None;
        self.status.start_time = Some(self.now().to_kube_time());
        self.go(JobDeploymentStatus::Initializing);
        self.decision.requeue_after(REQUEUE);
    }

    /// `activeDeadlineSeconds` from the latest `startTime`: the failure if it passed.
    fn deadline_exceeded(&mut self) -> Option<Outcome> {
        let seconds = self.job.spec.active_deadline_seconds?;
        let start = self.status.start_time.as_ref()?;
        let start_at = Timestamp::from_kube_time(start);
        let deadline = start_at.plus(Duration::from_secs(u64::try_from(seconds).unwrap_or(0)));
        let now = self.now();
        if now.since(&deadline) == Duration::ZERO && now != deadline {
            // Look again when it passes, if nothing else brings a call before.
            self.decision.requeue_after(deadline.since(&now));
            return None;
        }
        Some(Outcome::Failed(
            JobFailedReason::DeadlineExceeded,
            format!(
                "The RayJob has passed the activeDeadlineSeconds. StartTime: {} ActiveDeadlineSeconds: {seconds}",
                start_at.to_rfc3339()
            ),
        ))
    }

    /// The attempt's cluster: the selected one (related) or the owned one (children).
    fn cluster(&self) -> Result<Option<Seen<RayCluster>>, PluginError> {
        let objects = if self.job.spec.cluster_selector().is_some() {
            &self.request.related
        } else {
            &self.request.children
        };
        named(
            objects,
            RAY_API_VERSION,
            RAY_CLUSTER_KIND,
            self.cluster_name(),
        )
    }

    fn job_request(&self, ray_version: Option<&str>) -> Result<JobRequest, String> {
        JobRequest::from_spec(&self.job.spec, ray_version).map_err(|error| error.to_string())
    }

    fn on_initializing(&mut self) -> Result<(), PluginError> {
        if self.job.spec.is_suspended() {
            self.go(JobDeploymentStatus::Suspending);
            self.decision.requeue_after(REQUEUE);
            return Ok(());
        }
        if let Some(outcome) = self.deadline_exceeded() {
            // Nothing was submitted yet: there is no Ray job to stop.
            self.end_attempt(outcome, Some(false));
            return Ok(());
        }
        self.decision.requeue_after(REQUEUE);
        let name = self.cluster_name().to_owned();
        let Some(cluster) = self.cluster()? else {
            self.create_cluster(&name)?;
            return Ok(());
        };
        if cluster.deleting {
            self.note(format!(
                "Waiting for the deleted RayCluster {name} to go away before creating it again"
            ));
            return Ok(());
        }
        self.status.ray_cluster_status = cluster.object.status.clone();
        if self
            .status
            .dashboard_url
            .as_deref()
            .is_none_or(str::is_empty)
        {
            if let Some(waiting_for) = not_ready_reason(&cluster.object, &name) {
                self.say(
                    EventType::Normal,
                    reasons::RAY_CLUSTER_NOT_READY,
                    waiting_for,
                );
                return Ok(());
            }
            let namespace = self.job.metadata.namespace.as_deref().unwrap_or_default();
            self.status.dashboard_url = Some(dashboard_url(
                &cluster.object,
                &name,
                namespace,
                &self.settings.cluster_domain,
            ));
        }
        // Better than KubeRay: the job starts only once the dashboard answers, and until
        // then the status says what the host got instead of the submitter failing blindly.
        self.decision.ray_query(RayQuery::Dashboard(name.clone()));
        match &self.request.ray.dashboard {
            DashboardReachability::Reachable => {}
            DashboardReachability::Unreachable(error) => {
                let message = format!(
                    "Waiting for the Ray dashboard of RayCluster {name} at {}: {error}",
                    self.status.dashboard_url.as_deref().unwrap_or_default()
                );
                self.say(EventType::Warning, reasons::DASHBOARD_UNREACHABLE, message);
                return Ok(());
            }
            DashboardReachability::NotChecked => {
                self.note(format!(
                    "Waiting for the Ray dashboard of RayCluster {name} to answer"
                ));
                return Ok(());
            }
        }
        self.status.message = None;
        match self.mode() {
            JobSubmissionMode::InteractiveMode => {
                self.note(
                    "Waiting for spec.jobId: submit the job to the cluster's dashboard, then set spec.jobId to its submission id".to_owned(),
                );
                self.go(JobDeploymentStatus::Waiting);
                return Ok(());
            }
            JobSubmissionMode::K8sJobMode => {
                if !self.ensure_submitter(&cluster)? {
                    return Ok(());
                }
            }
            JobSubmissionMode::HTTPMode | JobSubmissionMode::SidecarMode => {}
        }
        self.go(JobDeploymentStatus::Running);
        Ok(())
    }

    /// Creates the attempt's cluster (or, with a selector, waits for the selected one).
    fn create_cluster(&mut self, name: &str) -> Result<(), PluginError> {
        let spec = &self.job.spec;
        let Some(cluster_spec) = spec
            .ray_cluster_spec
            .as_ref()
            .filter(|_| spec.cluster_selector().is_none())
        else {
            let namespace = self.job.metadata.namespace.as_deref().unwrap_or_default();
            self.say(
                EventType::Warning,
                reasons::RAY_CLUSTER_NOT_FOUND,
                format!("RayCluster {namespace}/{name} selected by spec.clusterSelector not found"),
            );
            return Ok(());
        };
        let sidecar = if self.mode() == JobSubmissionMode::SidecarMode {
            let request = match self.job_request(cluster_spec.ray_version.as_deref()) {
                Ok(request) => request,
                Err(error) => {
                    self.say(
                        EventType::Warning,
                        reasons::FAILED_TO_CREATE_SUBMITTER,
                        error,
                    );
                    return Ok(());
                }
            };
            let url = sidecar_dashboard_url(Some(dashboard_port(cluster_spec)));
            let context = SubmitterContext {
                job: self.job,
                request: &request,
                job_id: self.job_id(),
                dashboard_url: &url,
                head_image: head_image(cluster_spec),
                auth_secret: auth_secret(cluster_spec, name),
                login_shell: self.settings.login_shell,
            };
            Some(context.sidecar_container())
        } else {
            None
        };
        let cluster = desired_cluster(self.job, cluster_spec, name, sidecar);
        self.decision.apply(&cluster, WriteMode::CreateOnly)?;
        self.note(format!("Creating RayCluster {name}"));
        Ok(())
    }

    /// K8sJobMode: the submitter Job exists or is created now. False if it cannot be built
    /// (the status says why).
    fn ensure_submitter(&mut self, cluster: &Seen<RayCluster>) -> Result<bool, PluginError> {
        let existing = of_kind(&self.request.children, JOB_API_VERSION, JOB_KIND)
            .any(|object| object.name == self.name);
        if existing {
            return Ok(true);
        }
        let spec = &cluster.object.spec;
        let request = match self.job_request(spec.ray_version.as_deref()) {
            Ok(request) => request,
            Err(error) => {
                self.say(
                    EventType::Warning,
                    reasons::FAILED_TO_CREATE_SUBMITTER,
                    error,
                );
                return Ok(false);
            }
        };
        let context = SubmitterContext {
            job: self.job,
            request: &request,
            job_id: self.job_id(),
            dashboard_url: self.status.dashboard_url.as_deref().unwrap_or_default(),
            head_image: head_image(spec),
            auth_secret: auth_secret(spec, &cluster.name),
            login_shell: self.settings.login_shell,
        };
        let submitter = context.submitter_job();
        self.decision.apply(&submitter, WriteMode::CreateOnly)?;
        Ok(true)
    }

    fn on_waiting(&mut self) {
        match self.job.spec.job_id.as_deref().filter(|id| !id.is_empty()) {
            Some(id) => {
                self.status.job_id = Some(id.to_owned());
                self.status.message = None;
                self.go(JobDeploymentStatus::Running);
            }
            None => self.decision.requeue_after(REQUEUE),
        }
    }

    fn on_running(&mut self) -> Result<(), PluginError> {
        if self.job.spec.is_suspended() {
            self.go(JobDeploymentStatus::Suspending);
            self.decision.requeue_after(REQUEUE);
            return Ok(());
        }
        if let Some(outcome) = self.deadline_exceeded() {
            self.end_attempt(outcome, Some(true));
            return Ok(());
        }
        self.decision.requeue_after(REQUEUE);
        let name = self.cluster_name().to_owned();
        let job_id = self.job_id().to_owned();
        let cluster = match self.cluster()? {
            Some(cluster) if !cluster.deleting => cluster,
            _ => {
                // Better than KubeRay (which waits on a dashboard that will never answer):
                // the attempt is over, and a retry gets a new cluster.
                self.end_attempt(
                    Outcome::Failed(
                        JobFailedReason::AppFailed,
                        format!("RayCluster {name} is gone while the job was running"),
                    ),
                    Some(false),
                );
                return Ok(());
            }
        };
        self.status.ray_cluster_status = cluster.object.status.clone();
        if self.job.spec.cluster_selector().is_none() {
            self.ensure_head_service(&cluster)?;
        }
        let submitter = match self.mode() {
            JobSubmissionMode::K8sJobMode => Some(self.submitter_state(&cluster)?),
            JobSubmissionMode::SidecarMode => Some(sidecar_state(self.head_pod(&name).as_ref())),
            JobSubmissionMode::HTTPMode | JobSubmissionMode::InteractiveMode => None,
        };
        self.decision
            .ray_query(RayQuery::Job((name.clone(), job_id.clone())));
        let answer = job_answer(&self.request.ray, &job_id).cloned();
        if let Some(JobObservation::Found(info)) = &answer {
            self.copy_ray_info(info);
            if self.job_status() == JobStatus::Failed {
                // Ray's verdict wins over anything the submitter says (KubeRay waits for
                // the submitter, and its retries can hide the driver's failure).
                self.end_attempt(
                    Outcome::Failed(JobFailedReason::AppFailed, ray_failure_message(info)),
                    Some(false),
                );
                return Ok(());
            }
        }
        if !self.job_status().is_terminal()
            && let Some(why) = head_lost(&cluster.object, &name)
        {
            // Better than KubeRay (pain point: the RayJob should fail when the head dies):
            // nothing will bring the job back, so the attempt ends now.
            self.end_attempt(
                Outcome::Failed(JobFailedReason::AppFailed, why),
                Some(false),
            );
            return Ok(());
        }
        match &submitter {
            Some(SubmitterState::Failed { message, .. }) => {
                let reason = if self.job_status() == JobStatus::Failed {
                    JobFailedReason::AppFailed
                } else {
                    JobFailedReason::SubmissionFailed
                };
                self.end_attempt(Outcome::Failed(reason, message.clone()), None);
                return Ok(());
            }
            // The cluster still reports its head ready: the host has not passed the pod
            // yet (its watch follows `rayClusterName`), so this is no verdict.
            Some(SubmitterState::HeadPodMissing) if cluster.object.head_pod_ready() => {
                self.note(format!(
                    "Waiting to observe the head pod of RayCluster {name}"
                ));
                return Ok(());
            }
            Some(SubmitterState::HeadPodMissing) => {
                self.end_attempt(
                    Outcome::Failed(
                        JobFailedReason::AppFailed,
                        "Ray head pod not found.".to_owned(),
                    ),
                    Some(false),
                );
                return Ok(());
            }
            _ => {}
        }
        if let Some(outcome) = self.grace_period_exceeded() {
            self.end_attempt(outcome, None);
            return Ok(());
        }
        if let Some(ended) = submitter.as_ref().and_then(SubmitterState::finished_at)
            && !self.job_status().is_terminal()
            && self.now().since(&ended) > SUBMITTER_FINISHED_TIMEOUT
        {
            self.status.job_status = Some(JobStatus::Failed);
            self.end_attempt(
                Outcome::Failed(
                    JobFailedReason::JobDeploymentStatusTransitionGracePeriodExceeded,
                    format!(
                        "The submitter finished more than {}s ago but Ray reports no final status for job {job_id}",
                        SUBMITTER_FINISHED_TIMEOUT.as_secs()
                    ),
                ),
                Some(false),
            );
            return Ok(());
        }
        match answer {
            // Final in Ray; with a submitter, KubeRay also waits for it to end.
            Some(JobObservation::Found(_)) if self.job_status().is_terminal() => {
                if submitter.as_ref().is_some_and(|state| !state.has_ended()) {
                    self.note(format!(
                        "Ray job {job_id} is {:?}; waiting for the submitter to finish",
                        self.job_status()
                    ));
                } else {
                    self.end_attempt(Outcome::Complete, None);
                }
            }
            // Still running: Ray's message is the status message.
            Some(JobObservation::Found(_)) => {}
            Some(JobObservation::NotFound(_)) => self.job_not_found(&name, &job_id, &submitter),
            Some(JobObservation::Unavailable(error)) => self.say(
                EventType::Warning,
                reasons::DASHBOARD_UNREACHABLE,
                format!(
                    "Cannot get Ray job {job_id} from the dashboard of RayCluster {name}: {error}"
                ),
            ),
            // The query goes out with this answer; the next call has Ray's view.
            None => {}
        }
        Ok(())
    }

    fn job_not_found(&mut self, cluster: &str, job_id: &str, submitter: &Option<SubmitterState>) {
        if submitter.as_ref().is_some_and(SubmitterState::has_ended) {
            self.end_attempt(
                Outcome::Failed(
                    JobFailedReason::AppFailed,
                    "Submitter completed but Ray job not found in RayCluster.".to_owned(),
                ),
                Some(false),
            );
            return;
        }
        match self.mode() {
            JobSubmissionMode::HTTPMode => {
                let action_id = format!("submit:{job_id}");
                if let Some(result) = action_result(&self.request.ray, &action_id)
                    && let Err(error) = &result.outcome
                {
                    self.say(
                        EventType::Warning,
                        reasons::FAILED_TO_SUBMIT,
                        format!("Submitting Ray job {job_id} to RayCluster {cluster} failed: {error}"),
                    );
                }
                let request = match self.job_request(None) {
                    Ok(request) => request,
                    Err(error) => {
                        self.say(EventType::Warning, reasons::FAILED_TO_SUBMIT, error);
                        return;
                    }
                };
                // Safe to repeat: the submission id was written to the status before,
                // and Ray refuses a second job with the same id.
                self.decision.ray_action(
                    &action_id,
                    cluster,
                    RayActionKind::SubmitJob(request.submit_action(job_id)),
                );
            }
            JobSubmissionMode::K8sJobMode | JobSubmissionMode::SidecarMode => self.note(format!(
                "Waiting for the submitter to submit Ray job {job_id}"
            )),
            JobSubmissionMode::InteractiveMode => self.note(format!(
                "Ray job {job_id} is not in RayCluster {cluster} yet; waiting for it to be submitted"
            )),
        }
    }

    /// The submitter Job's state, creating the Job if it is missing (create-only: one that
    /// exists is never changed).
    fn submitter_state(
        &mut self,
        cluster: &Seen<RayCluster>,
    ) -> Result<SubmitterState, PluginError> {
        match named::<Job>(&self.request.children, JOB_API_VERSION, JOB_KIND, self.name)? {
            Some(job) => Ok(job_state(&job.object)),
            None => {
                self.ensure_submitter(cluster)?;
                Ok(SubmitterState::Running)
            }
        }
    }

    fn head_pod(&self, cluster: &str) -> Option<wasmray_plugin_sdk::Pod<'a>> {
        self.request.pods.views().into_iter().find(|pod| {
            pod.labels.get(RAY_CLUSTER_LABEL_KEY) == Some(cluster)
                && pod.labels.get(RAY_NODE_TYPE_LABEL_KEY) == Some(HEAD_NODE_TYPE)
        })
    }

    fn ensure_head_service(&mut self, cluster: &Seen<RayCluster>) -> Result<(), PluginError> {
        let service_name = head_service_name(self.name);
        let existing = self
            .request
            .services
            .iter()
            .find(|service| service.name == service_name);
        if !needs_write(existing, &cluster.name) {
            return Ok(());
        }
        if let Some(service) = head_service(
            "RayJob",
            self.name,
            self.job.metadata.namespace.as_deref(),
            &cluster.object,
            &cluster.name,
            self.settings.head_cluster_ip_service,
        ) {
            self.decision.apply(&service, WriteMode::Apply)?;
        }
        Ok(())
    }

    /// Ray's view of the job into the status: `jobStatus`, `message`, `rayJobInfo`.
    fn copy_ray_info(&mut self, info: &RayJobInfo) {
        match serde_json::from_value::<JobStatus>(serde_json::Value::String(info.status.clone())) {
            Ok(status) => self.status.job_status = Some(status),
            Err(_) => log::warn(&format!(
                "Ray reported unknown status {:?} for job {}",
                info.status, info.submission_id
            )),
        }
        // Ray's message replaces whatever the plugin said while waiting, as in KubeRay.
        self.status.message = info.message.clone().filter(|message| !message.is_empty());
        let time = |ms: Option<u64>| {
            ms.and_then(|ms| i64::try_from(ms).ok())
                .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
                .map(Time)
        };
        self.status.ray_job_info = Some(RayJobStatusInfo {
            start_time: time(info.start_time_ms),
            end_time: time(info.end_time_ms),
        });
    }

    /// KubeRay's safety net: Ray's status is final but the deployment status did not follow
    /// for longer than the grace period.
    fn grace_period_exceeded(&self) -> Option<Outcome> {
        if !self.job_status().is_terminal() {
            return None;
        }
        let end = self.status.ray_job_info.as_ref()?.end_time.as_ref()?;
        let grace = Duration::from_secs(self.settings.transition_grace_period_seconds);
        if self.now().since(&Timestamp::from_kube_time(end)) <= grace {
            return None;
        }
        let message = format!(
            "Ray job {} ended with {:?} more than {}s ago but the RayJob did not follow",
            self.job_id(),
            self.job_status(),
            grace.as_secs()
        );
        Some(if self.job_status() == JobStatus::Failed {
            Outcome::Failed(
                JobFailedReason::JobDeploymentStatusTransitionGracePeriodExceeded,
                message,
            )
        } else {
            Outcome::Complete
        })
    }

    /// Ends the attempt: Complete, Failed, or Retrying while `backoffLimit` allows. A failed
    /// attempt stops its Ray job unless Ray already ended it; `stop` overrides whether to
    /// (Some(false): there is nothing left to stop).
    fn end_attempt(&mut self, outcome: Outcome, stop: Option<bool>) {
        let job_id = self.job_id().to_owned();
        match outcome {
            Outcome::Complete => {
                if self.job_status() == JobStatus::Succeeded {
                    self.status.succeeded = Some(self.status.succeeded.unwrap_or(0) + 1);
                }
                self.go(JobDeploymentStatus::Complete);
                self.status.end_time = Some(self.now().to_kube_time());
                self.decision.event(Event::normal(
                    reasons::COMPLETED,
                    format!(
                        "Ray job {job_id} finished with status {:?}",
                        self.job_status()
                    ),
                ));
            }
            Outcome::Failed(reason, message) => {
                let failed = self.status.failed.unwrap_or(0) + 1;
                self.status.failed = Some(failed);
                self.status.reason = Some(reason);
                self.status.message = Some(message.clone());
                let may_run = !self.job_status().is_terminal() && !job_id.is_empty();
                if stop.unwrap_or(may_run) && may_run {
                    let cluster = self.cluster_name().to_owned();
                    self.decision.ray_action(
                        &format!("stop:{job_id}"),
                        &cluster,
                        RayActionKind::StopJob(job_id.clone()),
                    );
                }
                let retry = self
                    .job
                    .spec
                    .backoff_limit
                    .is_some_and(|limit| failed < limit.saturating_add(1))
                    && reason != JobFailedReason::DeadlineExceeded;
                if retry {
                    self.go(JobDeploymentStatus::Retrying);
                    self.decision.event(Event::warning(
                        reasons::RETRYING,
                        format!(
                            "Attempt {failed} failed ({reason:?}: {message}); retrying with a new RayCluster and job id"
                        ),
                    ));
                    self.decision.requeue_after(REQUEUE);
                } else {
                    self.go(JobDeploymentStatus::Failed);
                    self.status.end_time = Some(self.now().to_kube_time());
                    self.decision
                        .event(Event::warning(format!("{reason:?}"), message));
                }
            }
        }
    }

    /// Suspending and Retrying: delete the attempt's cluster and submitter, wait until they
    /// are gone, then reset the attempt's status fields.
    fn on_tear_down(&mut self) -> Result<(), PluginError> {
        let children = &self.request.children;
        let owned = of_kind(children, RAY_API_VERSION, RAY_CLUSTER_KIND)
            .chain(of_kind(children, JOB_API_VERSION, JOB_KIND))
            .map(parse::<AnyObject>)
            .collect::<Result<Vec<_>, _>>()?;
        let why = match self.state() {
            JobDeploymentStatus::Suspending => "the RayJob is suspended",
            _ => "the RayJob retries with a new RayCluster",
        };
        for object in owned.iter().filter(|object| !object.deleting) {
            self.decision.delete(
                &object.api_version,
                &object.kind,
                &object.name,
                &object.uid,
                why,
            );
        }
        if !owned.is_empty() {
            self.decision.requeue_after(REQUEUE);
            return Ok(());
        }
        self.status.ray_cluster_status = None;
        self.status.ray_cluster_name = None;
        self.status.dashboard_url = None;
        self.status.job_id = None;
        self.status.message = None;
        self.status.reason = None;
        self.status.ray_job_info = None;
        self.status.job_status = None;
        if self.state() == JobDeploymentStatus::Suspending {
            self.go(JobDeploymentStatus::Suspended);
        } else {
            self.go(JobDeploymentStatus::New);
            self.decision.requeue_after(REQUEUE);
        }
        Ok(())
    }

    fn on_suspended(&mut self) {
        if !self.job.spec.is_suspended() {
            self.status.job_status = None;
            self.go(JobDeploymentStatus::New);
            self.decision.requeue_after(REQUEUE);
            return;
        }
        self.report_missing_queue();
    }

    /// A RayJob queued in a LocalQueue that does not exist waits for an admission that never
    /// comes (Kueue says so only on its Workload): the message and a Warning event say it on
    /// the RayJob. The host reads the LocalQueue of a suspended, queued object as related.
    fn report_missing_queue(&mut self) {
        let Some(queue) = self
            .job
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(KUEUE_QUEUE_NAME_LABEL_KEY))
        else {
            return;
        };
        let namespace = self.job.metadata.namespace.as_deref().unwrap_or_default();
        let missing = format!(
            "LocalQueue {queue} does not exist in namespace {namespace}: Kueue admits nothing through it"
        );
        let exists = self
            .request
            .related
            .iter()
            .any(|object| object.kind == "LocalQueue" && object.name == *queue);
        if exists {
            if self.status.message.as_deref() == Some(missing.as_str()) {
                self.status.message = None;
            }
        } else if self.status.message.as_deref() != Some(missing.as_str()) {
            self.decision
                .event(Event::warning("QueueNotFound", missing.clone()));
            self.status.message = Some(missing);
        }
    }

    /// Complete and Failed: the TTL or deletion strategy, nothing else.
    fn on_finished(&mut self) -> Result<(), PluginError> {
        let end = match &self.status.end_time {
            Some(end) => Timestamp::from_kube_time(end),
            None => {
                self.status.end_time = Some(self.now().to_kube_time());
                self.now()
            }
        };
        let cluster = if self.job.spec.cluster_selector().is_some() {
            None
        } else {
            self.cluster()?
        };
        let plan = cleanup::plan(self.job, &self.settings, cluster.as_ref(), end, self.now());
        if let Some(after) = plan.requeue_after {
            self.decision.requeue_after(after);
        }
        let Some((action, why)) = plan.action else {
            return Ok(());
        };
        match (action, &cluster) {
            (CleanupAction::DeleteCluster, Some(cluster)) => {
                self.decision.delete(
                    &cluster.api_version,
                    &cluster.kind,
                    &cluster.name,
                    &cluster.uid,
                    &why,
                );
            }
            (CleanupAction::DeleteWorkers, Some(cluster)) => {
                let mut spec = cluster.object.spec.clone();
                for group in spec.worker_group_specs.iter_mut().flatten() {
                    group.suspend = Some(true);
                }
                let suspended = RayCluster::new(&cluster.name, spec);
                self.decision.apply(&suspended, WriteMode::Apply)?;
                self.decision.event(Event::normal(
                    reasons::CLEANUP,
                    format!(
                        "Suspending the worker groups of RayCluster {}: {why}",
                        cluster.name
                    ),
                ));
            }
            (CleanupAction::DeleteSelf, _) => {
                let uid = self.job.metadata.uid.clone().unwrap_or_default();
                self.decision
                    .delete(RAY_API_VERSION, "RayJob", self.name, &uid, &why);
            }
            // Nothing left to act on.
            (_, None) => {}
        }
        Ok(())
    }
}

/// Ray's account of a failed job: its error type and message.
fn ray_failure_message(info: &RayJobInfo) -> String {
    let message = info
        .message
        .as_deref()
        .filter(|message| !message.is_empty())
        .unwrap_or("Ray reports the job FAILED without a message");
    match info.error_type.as_deref().filter(|kind| !kind.is_empty()) {
        Some(kind) => format!("{kind}: {message}"),
        None => message.to_owned(),
    }
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
