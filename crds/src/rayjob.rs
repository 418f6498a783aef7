//! RayJob (`ray.io/v1`): one Ray job, on its own RayCluster or on an existing one.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use crate::cel;
use crate::raycluster::{RayClusterSpec, RayClusterStatus};

/// Desired state of a Ray job.
#[skip_serializing_none]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ray.io",
    version = "v1",
    kind = "RayJob",
    plural = "rayjobs",
    namespaced,
    status = "RayJobStatus",
    category = "all",
    printcolumn = r#"{"name":"job status","type":"string","jsonPath":".status.jobStatus"}"#,
    printcolumn = r#"{"name":"deployment status","type":"string","jsonPath":".status.jobDeploymentStatus"}"#,
    printcolumn = r#"{"name":"ray cluster name","type":"string","jsonPath":".status.rayClusterName"}"#,
    printcolumn = r#"{"name":"start time","type":"string","jsonPath":".status.startTime"}"#,
    printcolumn = r#"{"name":"end time","type":"string","jsonPath":".status.endTime"}"#,
    printcolumn = r#"{"name":"age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = cel::ray_job_spec_rules()))]
pub struct RayJobSpec {
    /// Wall-clock limit in seconds from `status.startTime`; must be positive.
    #[serde(default)]
    pub active_deadline_seconds: Option<i32>,
    /// RayJob-level retries; each retry recreates the RayCluster.
    #[serde(default)]
    #[schemars(extend("default" = 0))]
    pub backoff_limit: Option<i32>,
    /// Template of the RayCluster created for this job.
    #[serde(default)]
    pub ray_cluster_spec: Option<RayClusterSpec>,
    /// Pod template of the submitter Job (K8sJobMode).
    #[serde(default)]
    pub submitter_pod_template: Option<PodTemplateSpec>,
    /// Job metadata passed to `ray job submit --metadata-json`.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Runs the job on an existing RayCluster: `ray.io/cluster: <name>`.
    #[serde(default)]
    pub cluster_selector: Option<BTreeMap<String, String>>,
    /// Options of the submitter Job.
    #[serde(default)]
    pub submitter_config: Option<SubmitterConfig>,
    /// Which controller reconciles this job; immutable.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-validations" = cel::managed_by_rules()))]
    pub managed_by: Option<String>,
    /// What to delete once the job finishes (feature gate RayJobDeletionPolicy).
    #[serde(default)]
    pub deletion_strategy: Option<DeletionStrategy>,
    /// Shell command of the Ray job.
    #[serde(default)]
    pub entrypoint: Option<String>,
    /// Ray runtime environment as YAML.
    #[serde(default, rename = "runtimeEnvYAML")]
    pub runtime_env_yaml: Option<String>,
    /// Submission id; generated when empty.
    #[serde(default)]
    pub job_id: Option<String>,
    #[serde(default)]
    #[schemars(extend("default" = "K8sJobMode"))]
    pub submission_mode: Option<JobSubmissionMode>,
    /// Custom resources reserved for the entrypoint, as a JSON map.
    #[serde(default)]
    pub entrypoint_resources: Option<String>,
    #[serde(default)]
    pub entrypoint_num_cpus: Option<f32>,
    #[serde(default)]
    pub entrypoint_num_gpus: Option<f32>,
    /// Seconds after `status.endTime` before cleanup; needs shutdownAfterJobFinishes.
    #[serde(default)]
    #[schemars(extend("default" = 0))]
    pub ttl_seconds_after_finished: Option<i32>,
    /// Deletes the RayCluster when the job finishes.
    #[serde(default)]
    pub shutdown_after_job_finishes: Option<bool>,
    /// Kueue-style suspend: no cluster exists while true.
    #[serde(default)]
    pub suspend: Option<bool>,
}

impl RayJobSpec {
    pub fn submission_mode(&self) -> JobSubmissionMode {
        self.submission_mode
            .unwrap_or(JobSubmissionMode::K8sJobMode)
    }

    pub fn backoff_limit(&self) -> i32 {
        self.backoff_limit.unwrap_or(0)
    }

    pub fn ttl_seconds_after_finished(&self) -> i32 {
        self.ttl_seconds_after_finished.unwrap_or(0)
    }

    pub fn shutdown_after_job_finishes(&self) -> bool {
        self.shutdown_after_job_finishes.unwrap_or(false)
    }

    pub fn is_suspended(&self) -> bool {
        self.suspend.unwrap_or(false)
    }

    /// The selector, when it selects anything (an empty map counts as absent).
    pub fn cluster_selector(&self) -> Option<&BTreeMap<String, String>> {
        self.cluster_selector
            .as_ref()
            .filter(|selector| !selector.is_empty())
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum JobSubmissionMode {
    /// A Kubernetes Job runs `ray job submit`.
    K8sJobMode,
    /// The operator submits through the dashboard HTTP API.
    HTTPMode,
    /// The user submits; the operator waits for `spec.jobId`.
    InteractiveMode,
    /// A sidecar of the head Pod runs `ray job submit`.
    SidecarMode,
}

/// Options of the submitter Job.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubmitterConfig {
    /// backoffLimit of the submitter batch Job (default 2).
    #[serde(default)]
    pub backoff_limit: Option<i32>,
}

/// What to delete after the job ends: legacy onSuccess/onFailure, or deletionRules.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = cel::deletion_strategy_rules()))]
pub struct DeletionStrategy {
    #[serde(default)]
    pub on_success: Option<DeletionPolicy>,
    #[serde(default)]
    pub on_failure: Option<DeletionPolicy>,
    #[serde(default)]
    #[schemars(extend("minItems" = 1, "x-kubernetes-list-type" = "atomic"))]
    pub deletion_rules: Option<Vec<DeletionRule>>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletionPolicy {
    #[serde(default)]
    pub policy: Option<DeletionPolicyType>,
}

/// One deletion rule: when the job reaches `condition`, apply `policy`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletionRule {
    pub policy: DeletionPolicyType,
    pub condition: DeletionCondition,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletionCondition {
    pub job_status: DeletionJobStatus,
    /// Seconds after the job ended before the policy applies.
    #[serde(default)]
    #[schemars(extend("default" = 0, "minimum" = 0))]
    pub ttl_seconds: Option<i32>,
}

impl DeletionCondition {
    pub fn ttl_seconds(&self) -> i32 {
        self.ttl_seconds.unwrap_or(0)
    }
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum DeletionPolicyType {
    DeleteCluster,
    DeleteWorkers,
    DeleteSelf,
    DeleteNone,
}

/// The terminal Ray job statuses a deletion rule can match.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum DeletionJobStatus {
    #[serde(rename = "SUCCEEDED")]
    Succeeded,
    #[serde(rename = "FAILED")]
    Failed,
}

/// Observed state of a Ray job.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RayJobStatus {
    /// Start and end as reported by Ray.
    #[serde(default)]
    pub ray_job_info: Option<RayJobStatusInfo>,
    #[serde(default)]
    pub job_id: Option<String>,
    #[serde(default)]
    pub ray_cluster_name: Option<String>,
    /// `host:port` of the dashboard, without a scheme.
    #[serde(default, rename = "dashboardURL")]
    pub dashboard_url: Option<String>,
    /// Ray's job status; empty while the job is new.
    #[serde(default)]
    pub job_status: Option<JobStatus>,
    #[serde(default)]
    pub job_deployment_status: Option<JobDeploymentStatus>,
    #[serde(default)]
    pub reason: Option<JobFailedReason>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub start_time: Option<Time>,
    #[serde(default)]
    pub end_time: Option<Time>,
    #[serde(default)]
    #[schemars(extend("default" = 0))]
    pub succeeded: Option<i32>,
    #[serde(default)]
    #[schemars(extend("default" = 0))]
    pub failed: Option<i32>,
    #[serde(default)]
    pub ray_cluster_status: Option<RayClusterStatus>,
    #[serde(default)]
    pub observed_generation: Option<i64>,
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RayJobStatusInfo {
    #[serde(default)]
    pub start_time: Option<Time>,
    #[serde(default)]
    pub end_time: Option<Time>,
}

/// Ray's job status (`ray job status`); `New` is the empty string of a job not yet submitted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum JobStatus {
    #[serde(rename = "")]
    New,
    #[serde(rename = "PENDING")]
    Pending,
    #[serde(rename = "RUNNING")]
    Running,
    #[serde(rename = "STOPPED")]
    Stopped,
    #[serde(rename = "SUCCEEDED")]
    Succeeded,
    #[serde(rename = "FAILED")]
    Failed,
}

impl JobStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Stopped | Self::Succeeded | Self::Failed)
    }
}

/// Where the operator is in running the job; `New` is the empty string.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum JobDeploymentStatus {
    #[serde(rename = "")]
    New,
    Initializing,
    Running,
    Complete,
    Failed,
    ValidationFailed,
    Suspending,
    Suspended,
    Retrying,
    Waiting,
}

impl JobDeploymentStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Complete | Self::Failed)
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum JobFailedReason {
    SubmissionFailed,
    DeadlineExceeded,
    AppFailed,
    JobDeploymentStatusTransitionGracePeriodExceeded,
    ValidationFailed,
}
