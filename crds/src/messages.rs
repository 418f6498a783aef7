//! Validation messages shared by the validation functions and the CRD's CEL rules, so both
//! report the same text. Wording follows KubeRay v1.5.1 where KubeRay has the rule.

pub const MANAGED_BY_IMMUTABLE: &str = "the managedBy field is immutable";
pub const MANAGED_BY_VALUE: &str = "the managedBy field value must be either 'ray.io/kuberay-operator' or 'kueue.x-k8s.io/multikueue'";

pub const HEAD_NO_CONTAINER: &str = "headGroupSpec should have at least one container";
pub const WORKER_NO_CONTAINER: &str = "workerGroupSpec should have at least one container";
pub const DUPLICATE_GROUP_NAME: &str = "worker group names must be unique";
pub const MIN_REPLICAS_GREATER_THAN_MAX: &str =
    "minReplicas must be less than or equal to maxReplicas";
pub const MIN_REPLICAS_NEGATIVE: &str = "minReplicas must be greater than or equal to 0";
pub const MAX_REPLICAS_NEGATIVE: &str = "maxReplicas must be greater than or equal to 0";
pub const REPLICAS_NEGATIVE: &str = "replicas must be greater than or equal to 0";
pub const NUM_OF_HOSTS_NOT_POSITIVE: &str = "numOfHosts must be greater than 0";
pub const FT_ANNOTATION_AND_OPTIONS: &str = "ray.io/ft-enabled annotation and GcsFaultToleranceOptions are both set. \
     Please use only GcsFaultToleranceOptions to configure GCS fault tolerance";
pub const REDIS_ADDRESS_WITHOUT_FT: &str = "RAY_REDIS_ADDRESS is set which implicitly enables GCS fault tolerance, \
     but GcsFaultToleranceOptions is not set. Please set GcsFaultToleranceOptions to enable GCS fault tolerance";
pub const FT_REDIS_PASSWORD_PARAM: &str = "cannot set `redis-password` in rayStartParams when GcsFaultToleranceOptions \
     is enabled - use GcsFaultToleranceOptions.RedisPassword instead";
pub const FT_REDIS_PASSWORD_ENV: &str = "cannot set `REDIS_PASSWORD` env var in head Pod when GcsFaultToleranceOptions \
     is enabled - use GcsFaultToleranceOptions.RedisPassword instead";
pub const FT_REDIS_ADDRESS_ENV: &str = "cannot set `RAY_REDIS_ADDRESS` env var in head Pod when GcsFaultToleranceOptions \
     is enabled - use GcsFaultToleranceOptions.RedisAddress instead";
pub const FT_EXTERNAL_STORAGE_NAMESPACE_ANNOTATION: &str = "cannot set `ray.io/external-storage-namespace` annotation when \
     GcsFaultToleranceOptions is enabled - use GcsFaultToleranceOptions.ExternalStorageNamespace instead";
pub const REDIS_USERNAME_PARAM: &str = "cannot set `redis-username` in rayStartParams - use GcsFaultToleranceOptions.RedisUsername instead";
pub const REDIS_USERNAME_ENV: &str = "cannot set `REDIS_USERNAME` env var in head Pod - use GcsFaultToleranceOptions.RedisUsername instead";
pub const AUTOSCALER_V2_ENV_WITHOUT_AUTOSCALING: &str = "RAY_enable_autoscaler_v2 is set in the head Pod but \
     enableInTreeAutoscaling is not true; set enableInTreeAutoscaling to use the autoscaler";
pub const AUTOSCALER_VERSION_AND_ENV: &str = "both autoscalerOptions.version and head Pod env var \
     RAY_enable_autoscaler_v2 are set, please only use autoscalerOptions.version";
pub const HEAD_RESTART_POLICY_AUTOSCALER_V2: &str =
    "restartPolicy for head Pod should be Never or unset when using autoscaler V2";
pub const AUTH_TOKEN_NO_RAY_VERSION: &str = "authOptions.mode is 'token' but rayVersion was not specified. Ray version 2.52.0 or later is required";
pub const SUSPENDING_AND_SUSPENDED: &str = "The RayCluster status is invalid: RayClusterSuspending and RayClusterSuspended conditions should not be both true";

pub const JOB_SUSPEND_WITHOUT_SHUTDOWN: &str =
    "a RayJob with shutdownAfterJobFinishes set to false is not allowed to be suspended";
pub const JOB_TTL_NEGATIVE: &str = "TTLSecondsAfterFinished must be a non-negative integer";
pub const JOB_TTL_WITHOUT_SHUTDOWN: &str =
    "a RayJob with shutdownAfterJobFinishes set to false cannot have TTLSecondsAfterFinished";
pub const JOB_DELETION_STRATEGY_GATE: &str =
    "RayJobDeletionPolicy feature gate must be enabled to use the DeletionStrategy feature";
pub const DELETION_STRATEGY_MIXED: &str = "legacy policies (onSuccess/onFailure) and deletionRules cannot be used \
     together within the same deletionStrategy";
pub const DELETION_STRATEGY_INCOMPLETE: &str = "deletionStrategy requires either BOTH onSuccess and onFailure, \
     OR the deletionRules field (cannot be empty)";
pub const DELETION_RULES_WITH_SHUTDOWN: &str =
    "shutdownAfterJobFinishes must not be set to true when deletionRules are used";
pub const DELETION_LEGACY_POLICY_MISSING: &str =
    "both DeletionStrategy.OnSuccess.Policy and DeletionStrategy.OnFailure.Policy must be set";
pub const DELETION_WORKERS_WITH_AUTOSCALING: &str =
    "DeletionStrategy=DeleteWorkers currently does not support RayCluster with autoscaling enabled";
pub const DELETION_NONE_WITH_SHUTDOWN: &str =
    "shutdownAfterJobFinishes is set to 'true' while deletion policy is 'DeleteNone'";
pub const DELETION_TTL_NEGATIVE: &str = "ttlSeconds must be a non-negative integer";
pub const JOB_SUSPEND_WITH_CLUSTER_SELECTOR: &str =
    "the ClusterSelector mode doesn't support the suspend operation";
pub const JOB_NO_CLUSTER: &str = "one of RayClusterSpec or ClusterSelector must be set";
pub const JOB_CLUSTER_SELECTOR_NAME_EMPTY: &str =
    "cluster name in ClusterSelector should not be empty";
pub const JOB_CLUSTER_SELECTOR_SIDECAR: &str = "ClusterSelector is not supported in SidecarMode";
pub const JOB_BACKOFF_LIMIT_INTERACTIVE: &str = "BackoffLimit is incompatible with InteractiveMode";
pub const JOB_SUBMITTER_TEMPLATE_SIDECAR: &str =
    "SubmitterPodTemplate is not supported in SidecarMode";
pub const JOB_SUBMITTER_CONFIG_SIDECAR: &str = "SubmitterConfig is not supported in SidecarMode";
pub const JOB_HEAD_RESTART_POLICY_SIDECAR: &str =
    "restartPolicy for head Pod should be Never or unset when using SidecarMode";
pub const JOB_ACTIVE_DEADLINE_NOT_POSITIVE: &str =
    "activeDeadlineSeconds must be a positive integer";
pub const JOB_BACKOFF_LIMIT_NEGATIVE: &str = "backoffLimit must be a non-negative integer";
pub const JOB_WAITING_NOT_INTERACTIVE: &str = "The RayJob status is invalid: JobDeploymentStatus cannot be Waiting when SubmissionMode is not InteractiveMode";

pub const SERVICE_HEAD_SERVICE_NAME_SET: &str =
    "spec.rayClusterConfig.headGroupSpec.headService.metadata.name should not be set";
pub const SERVICE_DELETION_DELAY_NEGATIVE: &str =
    "RayClusterDeletionDelaySeconds should be a non-negative integer";
pub const SERVICE_INCREMENTAL_UPGRADE_GATE: &str = "the RayServiceIncrementalUpgrade feature gate must be enabled to \
     use the NewClusterWithIncrementalUpgrade upgrade strategy";
pub const SERVICE_INCREMENTAL_UPGRADE_AUTOSCALING: &str =
    "Ray Autoscaler is required for NewClusterWithIncrementalUpgrade";
pub const SERVICE_INCREMENTAL_UPGRADE_OPTIONS: &str =
    "ClusterUpgradeOptions are required for NewClusterWithIncrementalUpgrade";
pub const SERVICE_MAX_SURGE_RANGE: &str = "maxSurgePercent must be between 0 and 100";
pub const SERVICE_STEP_SIZE_RANGE: &str = "stepSizePercent must be between 0 and 100";
pub const SERVICE_INTERVAL_NOT_POSITIVE: &str = "intervalSeconds must be greater than 0";
pub const SERVICE_GATEWAY_CLASS_EMPTY: &str =
    "gatewayClassName is required for NewClusterWithIncrementalUpgrade";

pub fn name_too_long(kind: &str, max: usize) -> String {
    format!("{kind} name should be no more than {max} characters")
}

pub fn name_not_dns1035(kind: &str, errors: &[String]) -> String {
    format!(
        "{kind} name should be a valid DNS1035 label: [{}]",
        errors.join(" ")
    )
}

/// KubeRay's message (v1.7, where a NetworkPolicy embeds the name), for every group here:
/// the name is embedded in its pods' names too.
pub fn group_name_not_dns1123(group: &str, errors: &[String]) -> String {
    format!(
        "worker group name {group:?} must be a valid DNS1123 label (it is embedded in the names of its pods and NetworkPolicy): [{}]",
        errors.join(" ")
    )
}

/// `group` is `Head` for the head group, else the worker group's name.
pub fn resources_in_both(group: &str) -> String {
    format!(
        "resource fields should not be set in both rayStartParams and Resources for {group} group; please use only one"
    )
}

pub fn labels_in_ray_start_params(group: &str) -> String {
    format!(
        "rayStartParams['labels'] is not supported for {group} group; please use the top-level Labels field instead"
    )
}

pub fn worker_suspend_needs_gate(group: &str) -> String {
    format!(
        "worker group {group} can be suspended only when the RayJobDeletionPolicy feature gate is enabled"
    )
}

pub fn worker_suspend_with_autoscaler(group: &str) -> String {
    format!("worker group {group} cannot be suspended with Autoscaler enabled")
}

pub fn worker_restart_policy_autoscaler_v2(group: &str) -> String {
    format!(
        "restartPolicy for worker group {group} should be Never or unset when using autoscaler V2"
    )
}

pub fn auth_token_bad_ray_version(version: &str) -> String {
    format!("authOptions.mode is 'token' but rayVersion format is invalid: {version}")
}

pub fn auth_token_old_ray_version(version: &str) -> String {
    format!(
        "authOptions.mode is 'token' but rayVersion is {version}, which is older than the minimum required version 2.52.0"
    )
}

pub fn deletion_policy_with_cluster_selector(policy: &str) -> String {
    format!("the ClusterSelector mode doesn't support DeletionStrategy={policy}")
}

pub fn duplicate_deletion_rule(job_status: &str, policy: &str) -> String {
    format!("duplicate deletion rule for jobStatus '{job_status}' and policy '{policy}'")
}

pub fn deletion_ttl_order(
    job_status: &str,
    later: &str,
    later_ttl: i32,
    earlier: &str,
    earlier_ttl: i32,
) -> String {
    format!(
        "for JobStatus '{job_status}': {later} TTL ({later_ttl}) must be >= {earlier} TTL ({earlier_ttl})"
    )
}

pub fn runtime_env_yaml_invalid(error: &str) -> String {
    format!("failed to unmarshal RuntimeEnvYAML: {error}")
}

pub fn serve_config_invalid(error: &str) -> String {
    format!("failed to unmarshal serveConfigV2: {error}")
}

pub fn initializing_timeout_invalid(value: &str) -> String {
    format!(
        "invalid value for ray.io/initializing-timeout annotation: {value} (must be a positive duration such as '30m' or a positive number of seconds)"
    )
}
