//! Serving plugins built against contract 0.2.0: their input is the host's 0.3.0 input
//! without what 0.2.0 lacks, and their answer is a 0.3.0 answer that asks for nothing
//! 0.2.0 could not ask for (no finalizers, generated Secrets or pruning).
//!
//! The one thing 0.2.0 carried untyped, the previous call's failed pod write, goes back
//! under its 0.2.0 key of `ray.extensions`.

use super::bindings::reconciler::exports::wasmray::plugin::reconcile as v3;
use super::bindings::v0_2::exports::wasmray::plugin::reconcile as v2;

/// Key of `ray.extensions` under which 0.2.0 passed the last failed pod write, as JSON
/// `{"operation": "create"|"delete", "nodeType": "<ray.io/node-type label>", "message"}`.
pub const POD_WRITE_FAILURE_EXTENSION: &str = "pod-write-failure";
const NODE_TYPE_LABEL: &str = "ray.io/node-type";

/// The 0.2.0 input for a 0.3.0 input.
pub fn input(input: &v3::ReconcileInput) -> v2::ReconcileInput {
    let mut ray = observations(&input.ray);
    let last_pod_failure = input
        .failed_writes
        .iter()
        .rev()
        .find(|write| write.api_version == "v1" && write.kind == "Pod");
    if let Some(failure) = last_pod_failure {
        let operation = match failure.operation {
            v3::WriteOperation::Delete => "delete",
            v3::WriteOperation::Create | v3::WriteOperation::Apply => "create",
        };
        let node_type = failure
            .labels
            .iter()
            .find(|(key, _)| key == NODE_TYPE_LABEL)
            .map(|(_, value)| value.as_str())
            .unwrap_or_default();
        let report = serde_json::json!({
            "operation": operation, "nodeType": node_type, "message": failure.message,
        });
        ray.extensions
            .push((POD_WRITE_FAILURE_EXTENSION.to_owned(), report.to_string()));
    }
    v2::ReconcileInput {
        kind: input.kind.clone(),
        parent: input.parent.clone(),
        pods: input.pods.clone(),
        services: input.services.clone(),
        children: input.children.clone(),
        related: input.related.clone(),
        ray,
        now: input.now,
        config: input.config.clone(),
        host: input.host.clone(),
    }
}

fn observations(ray: &v3::RayObservations) -> v2::RayObservations {
    v2::RayObservations {
        dashboard: match &ray.dashboard {
            v3::DashboardReachability::NotChecked => v2::DashboardReachability::NotChecked,
            v3::DashboardReachability::Reachable => v2::DashboardReachability::Reachable,
            v3::DashboardReachability::Unreachable(why) => {
                v2::DashboardReachability::Unreachable(why.clone())
            }
        },
        jobs: ray
            .jobs
            .iter()
            .map(|(id, observation)| (id.clone(), job_observation(observation)))
            .collect(),
        serve_status: ray.serve_status.clone(),
        action_results: ray
            .action_results
            .iter()
            .map(|result| v2::ActionResult {
                id: result.id.clone(),
                at: result.at,
                outcome: result.outcome.clone(),
            })
            .collect(),
        extensions: ray.extensions.clone(),
    }
}

fn job_observation(observation: &v3::JobObservation) -> v2::JobObservation {
    match observation {
        v3::JobObservation::Found(info) => v2::JobObservation::Found(v2::RayJobInfo {
            submission_id: info.submission_id.clone(),
            status: info.status.clone(),
            message: info.message.clone(),
            error_type: info.error_type.clone(),
            start_time_ms: info.start_time_ms,
            end_time_ms: info.end_time_ms,
            entrypoint: info.entrypoint.clone(),
            metadata: info.metadata.clone(),
        }),
        v3::JobObservation::NotFound(why) => v2::JobObservation::NotFound(why.clone()),
        v3::JobObservation::Unavailable(why) => v2::JobObservation::Unavailable(why.clone()),
    }
}

/// The 0.3.0 answer for a 0.2.0 answer.
pub fn output(output: v2::ReconcileOutput) -> v3::ReconcileOutput {
    v3::ReconcileOutput {
        create_pods: output.create_pods,
        apply: output.apply,
        delete: output
            .delete
            .into_iter()
            .map(|deletion| v3::Deletion {
                api_version: deletion.api_version,
                kind: deletion.kind,
                name: deletion.name,
                uid: deletion.uid,
                reason: deletion.reason,
            })
            .collect(),
        status: output.status,
        events: output.events,
        ray_actions: output.ray_actions.into_iter().map(action).collect(),
        ray_queries: output
            .ray_queries
            .into_iter()
            .map(|query| match query {
                v2::RayQuery::Job(target) => v3::RayQuery::Job(target),
                v2::RayQuery::ServeStatus(cluster) => v3::RayQuery::ServeStatus(cluster),
                v2::RayQuery::Dashboard(cluster) => v3::RayQuery::Dashboard(cluster),
            })
            .collect(),
        requeue_after_ms: output.requeue_after_ms,
        finalizers: Vec::new(),
        generated_secrets: Vec::new(),
        prune: Vec::new(),
    }
}

fn action(action: v2::RayAction) -> v3::RayAction {
    v3::RayAction {
        id: action.id,
        cluster: action.cluster,
        action: match action.action {
            v2::RayActionKind::SubmitJob(job) => v3::RayActionKind::SubmitJob(v3::SubmitJob {
                submission_id: job.submission_id,
                entrypoint: job.entrypoint,
                runtime_env: job.runtime_env,
                metadata: job.metadata,
                entrypoint_num_cpus: job.entrypoint_num_cpus,
                entrypoint_num_gpus: job.entrypoint_num_gpus,
                entrypoint_memory: job.entrypoint_memory,
                entrypoint_resources: job.entrypoint_resources,
            }),
            v2::RayActionKind::StopJob(id) => v3::RayActionKind::StopJob(id),
            v2::RayActionKind::DeleteJob(id) => v3::RayActionKind::DeleteJob(id),
            v2::RayActionKind::PutServeConfig(config) => v3::RayActionKind::PutServeConfig(config),
        },
    }
}
