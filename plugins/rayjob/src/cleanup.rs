//! What happens after a RayJob finished (Complete or Failed): `shutdownAfterJobFinishes`
//! with `ttlSecondsAfterFinished`, or, with the RayJobDeletionPolicy gate, the
//! `deletionStrategy` (legacy `onSuccess`/`onFailure`, or `deletionRules`).

use wasmray_crds::rayjob::{DeletionJobStatus, DeletionPolicyType, DeletionStrategy, JobStatus};
use wasmray_crds::{RayCluster, RayJob};
use wasmray_plugin_sdk::{Duration, Timestamp};

use crate::observed::Seen;
use crate::settings::Settings;

/// KubeRay looks again this long after a deadline, so the deadline has surely passed.
const AFTER_DEADLINE: Duration = Duration::from_secs(2);

/// One cleanup step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleanupAction {
    DeleteCluster,
    /// Suspend every worker group; the head stays for logs and the dashboard.
    DeleteWorkers,
    DeleteSelf,
}

/// The decision: at most one step now, and when to look again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanupPlan {
    pub action: Option<(CleanupAction, String)>,
    pub requeue_after: Option<Duration>,
}

/// What the finished RayJob should clean up now. `end` is `status.endTime`.
pub fn plan(
    job: &RayJob,
    settings: &Settings,
    cluster: Option<&Seen<RayCluster>>,
    end: Timestamp,
    now: Timestamp,
) -> CleanupPlan {
    let spec = &job.spec;
    if spec.cluster_selector().is_some() {
        // Not our cluster: it outlives the job.
        return CleanupPlan::default();
    }
    let job_status = job
        .status
        .as_ref()
        .and_then(|status| status.job_status)
        .unwrap_or(JobStatus::New);
    if settings.job_deletion_policy
        && let Some(strategy) = &spec.deletion_strategy
    {
        return match &strategy.deletion_rules {
            Some(_) => plan_rules(strategy, job_status, cluster, end, now),
            None => plan_legacy(
                spec.ttl_seconds_after_finished(),
                strategy,
                job_status,
                cluster,
                end,
                now,
            ),
        };
    }
    if !spec.shutdown_after_job_finishes() {
        return CleanupPlan::default();
    }
    let action = if settings.delete_rayjob_after_job_finishes {
        CleanupAction::DeleteSelf
    } else {
        CleanupAction::DeleteCluster
    };
    single_policy(
        action,
        spec.ttl_seconds_after_finished(),
        "shutdownAfterJobFinishes",
        cluster,
        end,
        now,
    )
}

fn deadline(end: Timestamp, ttl_seconds: i32) -> Timestamp {
    end.plus(Duration::from_secs(u64::try_from(ttl_seconds).unwrap_or(0)))
}

fn is_due(deadline: Timestamp, now: Timestamp) -> bool {
    now.since(&deadline) > Duration::ZERO || now == deadline
}

/// Whether the step's effect already holds.
fn satisfied(action: CleanupAction, cluster: Option<&Seen<RayCluster>>) -> bool {
    let gone = cluster.is_none_or(|cluster| cluster.deleting);
    match action {
        CleanupAction::DeleteCluster => gone,
        CleanupAction::DeleteWorkers => {
            gone || cluster.is_some_and(|cluster| {
                cluster
                    .object
                    .spec
                    .worker_groups()
                    .iter()
                    .all(|group| group.is_suspended())
            })
        }
        CleanupAction::DeleteSelf => false,
    }
}

fn single_policy(
    action: CleanupAction,
    ttl_seconds: i32,
    why: &str,
    cluster: Option<&Seen<RayCluster>>,
    end: Timestamp,
    now: Timestamp,
) -> CleanupPlan {
    let at = deadline(end, ttl_seconds);
    if !is_due(at, now) {
        return CleanupPlan {
            action: None,
            requeue_after: Some(at.since(&now) + AFTER_DEADLINE),
        };
    }
    if satisfied(action, cluster) {
        return CleanupPlan::default();
    }
    CleanupPlan {
        action: Some((action, format!("{why}: {ttl_seconds}s after the job ended"))),
        requeue_after: None,
    }
}

fn as_action(policy: DeletionPolicyType) -> Option<CleanupAction> {
    match policy {
        DeletionPolicyType::DeleteCluster => Some(CleanupAction::DeleteCluster),
        DeletionPolicyType::DeleteWorkers => Some(CleanupAction::DeleteWorkers),
        DeletionPolicyType::DeleteSelf => Some(CleanupAction::DeleteSelf),
        DeletionPolicyType::DeleteNone => None,
    }
}

fn matching(condition: DeletionJobStatus, job_status: JobStatus) -> bool {
    matches!(
        (condition, job_status),
        (DeletionJobStatus::Succeeded, JobStatus::Succeeded)
            | (DeletionJobStatus::Failed, JobStatus::Failed)
    )
}

fn plan_legacy(
    ttl_seconds: i32,
    strategy: &DeletionStrategy,
    job_status: JobStatus,
    cluster: Option<&Seen<RayCluster>>,
    end: Timestamp,
    now: Timestamp,
) -> CleanupPlan {
    let (policy, which) = match job_status {
        JobStatus::Succeeded => (strategy.on_success.as_ref(), "onSuccess"),
        JobStatus::Failed => (strategy.on_failure.as_ref(), "onFailure"),
        // Only SUCCEEDED and FAILED have a policy.
        _ => return CleanupPlan::default(),
    };
    match policy.and_then(|policy| policy.policy).and_then(as_action) {
        Some(action) => single_policy(
            action,
            ttl_seconds,
            &format!("deletionStrategy.{which}"),
            cluster,
            end,
            now,
        ),
        None => CleanupPlan::default(),
    }
}

/// Impact order: the step that removes most wins when several are due.
fn impact(action: CleanupAction) -> u8 {
    match action {
        CleanupAction::DeleteSelf => 3,
        CleanupAction::DeleteCluster => 2,
        CleanupAction::DeleteWorkers => 1,
    }
}

fn plan_rules(
    strategy: &DeletionStrategy,
    job_status: JobStatus,
    cluster: Option<&Seen<RayCluster>>,
    end: Timestamp,
    now: Timestamp,
) -> CleanupPlan {
    let mut due: Option<(CleanupAction, i32)> = None;
    let mut next: Option<Timestamp> = None;
    for rule in strategy.deletion_rules.iter().flatten() {
        if !matching(rule.condition.job_status, job_status) {
            continue;
        }
        let Some(action) = as_action(rule.policy) else {
            continue;
        };
        let ttl = rule.condition.ttl_seconds();
        let at = deadline(end, ttl);
        if !is_due(at, now) {
            next = Some(next.map_or(at, |current| {
                if at.since(&current) > Duration::ZERO {
                    current
                } else {
                    at
                }
            }));
        } else if !satisfied(action, cluster)
            && due.is_none_or(|(current, _)| impact(action) > impact(current))
        {
            due = Some((action, ttl));
        }
    }
    CleanupPlan {
        action: due.map(|(action, ttl)| {
            (
                action,
                format!(
                    "deletionRules: the job ended with {job_status:?} status at least {ttl}s ago"
                ),
            )
        }),
        requeue_after: next.map(|at| at.since(&now) + AFTER_DEADLINE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{cluster_from_yaml, job_from_yaml, seen};

    const END: Timestamp = Timestamp {
        seconds: 1_000,
        nanos: 0,
    };

    fn at(seconds: i64) -> Timestamp {
        Timestamp { seconds, nanos: 0 }
    }

    fn job(spec: &str, job_status: &str) -> RayJob {
        job_from_yaml(&format!(
            "metadata: {{name: j, namespace: ns, uid: u}}\nspec:\n  rayClusterSpec: {{headGroupSpec: {{template: {{spec: {{containers: [{{name: h}}]}}}}}}}}\n{spec}status: {{jobStatus: \"{job_status}\", jobDeploymentStatus: Complete}}\n"
        ))
    }

    fn gated() -> Settings {
        Settings {
            job_deletion_policy: true,
            ..Settings::default()
        }
    }

    #[test]
    fn shutdown_deletes_the_cluster_after_the_ttl() {
        let job = job(
            "  shutdownAfterJobFinishes: true\n  ttlSecondsAfterFinished: 10\n",
            "SUCCEEDED",
        );
        let cluster = seen(cluster_from_yaml("c", None));
        let early = plan(&job, &Settings::default(), Some(&cluster), END, at(1_004));
        assert_eq!(early.action, None);
        assert_eq!(early.requeue_after, Some(Duration::from_secs(8)));
        let due = plan(&job, &Settings::default(), Some(&cluster), END, at(1_010));
        assert_eq!(due.action.unwrap().0, CleanupAction::DeleteCluster);
        assert_eq!(due.requeue_after, None);
        // Gone: nothing left to do, and no more requeues.
        assert_eq!(
            plan(&job, &Settings::default(), None, END, at(1_010)),
            CleanupPlan::default()
        );
        let self_deleting = Settings {
            delete_rayjob_after_job_finishes: true,
            ..Settings::default()
        };
        let due = plan(&job, &self_deleting, None, END, at(1_010));
        assert_eq!(due.action.unwrap().0, CleanupAction::DeleteSelf);
    }

    #[test]
    fn without_shutdown_or_with_a_selector_nothing_is_deleted() {
        let cluster = seen(cluster_from_yaml("c", None));
        let keep = job("", "SUCCEEDED");
        assert_eq!(
            plan(&keep, &Settings::default(), Some(&cluster), END, at(5_000)),
            CleanupPlan::default()
        );
        let selected = job_from_yaml(
            "metadata: {name: j}\nspec:\n  clusterSelector: {ray.io/cluster: shared}\n  shutdownAfterJobFinishes: true\nstatus: {jobStatus: SUCCEEDED}\n",
        );
        assert_eq!(
            plan(
                &selected,
                &Settings::default(),
                Some(&cluster),
                END,
                at(5_000)
            ),
            CleanupPlan::default()
        );
    }

    #[test]
    fn legacy_strategy_picks_the_policy_of_the_outcome() {
        let strategy = "  ttlSecondsAfterFinished: 0\n  deletionStrategy:\n    onSuccess: {policy: DeleteSelf}\n    onFailure: {policy: DeleteWorkers}\n";
        let cluster = seen(cluster_from_yaml("c", None));
        let succeeded = plan(
            &job(strategy, "SUCCEEDED"),
            &gated(),
            Some(&cluster),
            END,
            END,
        );
        assert_eq!(succeeded.action.unwrap().0, CleanupAction::DeleteSelf);
        let failed = plan(&job(strategy, "FAILED"), &gated(), Some(&cluster), END, END);
        assert_eq!(failed.action.unwrap().0, CleanupAction::DeleteWorkers);
        let stopped = plan(
            &job(strategy, "STOPPED"),
            &gated(),
            Some(&cluster),
            END,
            END,
        );
        assert_eq!(stopped, CleanupPlan::default());
        // Without the gate, the strategy is not in force.
        let ungated = plan(
            &job(strategy, "SUCCEEDED"),
            &Settings::default(),
            Some(&cluster),
            END,
            END,
        );
        assert_eq!(ungated, CleanupPlan::default());
    }

    #[test]
    fn rules_run_the_most_impactful_due_rule_and_requeue_for_the_next() {
        let rules = "  deletionStrategy:\n    deletionRules:\n    - {policy: DeleteWorkers, condition: {jobStatus: SUCCEEDED, ttlSeconds: 0}}\n    - {policy: DeleteCluster, condition: {jobStatus: SUCCEEDED, ttlSeconds: 10}}\n    - {policy: DeleteSelf, condition: {jobStatus: SUCCEEDED, ttlSeconds: 30}}\n    - {policy: DeleteSelf, condition: {jobStatus: FAILED, ttlSeconds: 0}}\n";
        let job = job(rules, "SUCCEEDED");
        let cluster = seen(cluster_from_yaml("c", None));

        let first = plan(&job, &gated(), Some(&cluster), END, at(1_001));
        assert_eq!(
            first.action.as_ref().unwrap().0,
            CleanupAction::DeleteWorkers
        );
        assert_eq!(first.requeue_after, Some(Duration::from_secs(11)));

        // Workers suspended: that rule holds, nothing to do until the cluster's turn.
        let mut suspended = cluster.clone();
        for group in suspended
            .object
            .spec
            .worker_group_specs
            .iter_mut()
            .flatten()
        {
            group.suspend = Some(true);
        }
        let waiting = plan(&job, &gated(), Some(&suspended), END, at(1_002));
        assert_eq!(waiting.action, None);

        let second = plan(&job, &gated(), Some(&suspended), END, at(1_015));
        assert_eq!(second.action.unwrap().0, CleanupAction::DeleteCluster);
        let third = plan(&job, &gated(), None, END, at(1_031));
        assert_eq!(third.action.unwrap().0, CleanupAction::DeleteSelf);
        assert_eq!(third.requeue_after, None);
    }
}
