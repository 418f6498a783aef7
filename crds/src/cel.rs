//! CEL rules (`x-kubernetes-validations`) put into the CRD schemas, so the API server rejects
//! an object at once with the same message as the validation functions. Only rules that are
//! cheap for the API server's cost estimator live here: comparisons of scalars, no list scans.

use serde_json::{Value, json};

use crate::messages;

fn rule(rule: &str, message: &str) -> Value {
    json!({ "rule": rule, "message": message })
}

/// `spec.managedBy` (RayCluster, RayJob and the embedded cluster specs): KubeRay's two rules.
pub fn managed_by_rules() -> Value {
    json!([
        rule("self == oldSelf", messages::MANAGED_BY_IMMUTABLE),
        rule(
            "self in ['ray.io/kuberay-operator', 'kueue.x-k8s.io/multikueue']",
            messages::MANAGED_BY_VALUE,
        ),
    ])
}

/// One worker group: the replica bounds must be ordered. The API server applies the schema
/// defaults (0 and MaxInt32) before it evaluates the rule.
pub fn worker_group_rules() -> Value {
    json!([rule(
        "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
        messages::MIN_REPLICAS_GREATER_THAN_MAX,
    ),])
}

/// RayJob `spec.deletionStrategy`: KubeRay's two rules.
pub fn deletion_strategy_rules() -> Value {
    json!([
        rule(
            "!((has(self.onSuccess) || has(self.onFailure)) && has(self.deletionRules))",
            messages::DELETION_STRATEGY_MIXED,
        ),
        rule(
            "((has(self.onSuccess) && has(self.onFailure)) || has(self.deletionRules))",
            messages::DELETION_STRATEGY_INCOMPLETE,
        ),
    ])
}

/// RayJob `spec`: rules between scalar fields of the job itself.
pub fn ray_job_spec_rules() -> Value {
    json!([
        rule(
            "!(has(self.suspend) && self.suspend) || (has(self.shutdownAfterJobFinishes) && self.shutdownAfterJobFinishes)",
            messages::JOB_SUSPEND_WITHOUT_SHUTDOWN,
        ),
        rule(
            "!has(self.ttlSecondsAfterFinished) || self.ttlSecondsAfterFinished <= 0 || (has(self.shutdownAfterJobFinishes) && self.shutdownAfterJobFinishes)",
            messages::JOB_TTL_WITHOUT_SHUTDOWN,
        ),
        rule(
            "!has(self.submissionMode) || self.submissionMode != 'InteractiveMode' || !has(self.backoffLimit) || self.backoffLimit <= 0",
            messages::JOB_BACKOFF_LIMIT_INTERACTIVE,
        ),
        rule(
            "!(has(self.clusterSelector) && size(self.clusterSelector) > 0) || !has(self.submissionMode) || self.submissionMode != 'SidecarMode'",
            messages::JOB_CLUSTER_SELECTOR_SIDECAR,
        ),
        rule(
            "!has(self.submissionMode) || self.submissionMode != 'SidecarMode' || !has(self.submitterPodTemplate)",
            messages::JOB_SUBMITTER_TEMPLATE_SIDECAR,
        ),
        rule(
            "!has(self.submissionMode) || self.submissionMode != 'SidecarMode' || !has(self.submitterConfig)",
            messages::JOB_SUBMITTER_CONFIG_SIDECAR,
        ),
        rule(
            "has(self.rayClusterSpec) || (has(self.clusterSelector) && size(self.clusterSelector) > 0)",
            messages::JOB_NO_CLUSTER,
        ),
        rule(
            "!(has(self.suspend) && self.suspend) || !(has(self.clusterSelector) && size(self.clusterSelector) > 0)",
            messages::JOB_SUSPEND_WITH_CLUSTER_SELECTOR,
        ),
    ])
}
