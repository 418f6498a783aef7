//! The driver's Ray I/O, for every parent kind: the queries a plugin asked for are made
//! right before its next call (so answers are fresh), the actions it asked for are carried
//! out right after the Kubernetes writes of the call, and each action's result is passed
//! to exactly one later call. Nothing here survives a restart: a plugin must be able to
//! decide from Kubernetes state and fresh queries alone (see docs/architecture.md).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use futures::future::join_all;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt as _};
use serde_json::Value;

use super::ControllerConfig;
use super::input_records::now;
use super::parent_state::ParentStates;
use super::wit::{
    ActionResult, DashboardReachability, JobObservation, ObservedObject, RayAction, RayActionKind,
    RayJobInfo, RayObservations, RayQuery, SubmitJob,
};
use crate::ray::address::{
    AUTH_TOKEN_KEY, CLUSTER_DOMAIN_SETTING, DEFAULT_CLUSTER_DOMAIN, dashboard_target,
};
use crate::ray::{
    DashboardAddress, DashboardClient, JobDetails, JobSubmission, RayError, SubmitOutcome,
};

/// Key of `ray.extensions` under which a failed `serve-status` query's reason is passed.
pub const SERVE_STATUS_ERROR_EXTENSION: &str = "serve-status-unavailable";

/// Ray I/O of one controller scope.
pub struct RayIo {
    client: DashboardClient,
    allow_override: bool,
    head_address: crate::ray::HeadAddress,
    cluster_domain: String,
    /// Queries, undelivered results and logged warnings live in each parent's state.
    states: Arc<ParentStates>,
}

/// Where a parent's Ray clusters are found: among the objects the plugin was given, else
/// read from the API server.
pub struct Clusters<'a> {
    pub client: &'a Client,
    pub namespace: &'a str,
    /// The parent's children and related objects.
    pub known: &'a [ObservedObject],
}

impl RayIo {
    pub fn new(config: &ControllerConfig, states: Arc<ParentStates>) -> Self {
        RayIo {
            client: DashboardClient::new(config.ray_timeout),
            allow_override: config.allow_dashboard_address_override,
            head_address: config.ray_head_address,
            cluster_domain: config
                .settings
                .get(CLUSTER_DOMAIN_SETTING)
                .cloned()
                .unwrap_or_else(|| DEFAULT_CLUSTER_DOMAIN.to_owned()),
            states,
        }
    }

    /// Makes the remembered queries of parent `uid` and adds their answers and the
    /// undelivered action results to `ray`. Returns how many results were added; pass it
    /// to [`RayIo::delivered`] once the plugin has them.
    pub async fn observe(
        &self,
        uid: &str,
        clusters: &Clusters<'_>,
        ray: &mut RayObservations,
    ) -> usize {
        let (queries, results) = self
            .states
            .with_existing(uid, |state| {
                (state.ray_queries.clone(), state.ray_results.clone())
            })
            .unwrap_or_default();
        let mut addresses = AddressBook::default();
        for query in &queries {
            let cluster = match query {
                RayQuery::Job((cluster, _))
                | RayQuery::ServeStatus(cluster)
                | RayQuery::Dashboard(cluster) => cluster,
            };
            addresses.resolve(self, uid, clusters, cluster).await;
        }
        let answers = join_all(queries.iter().map(|query| self.ask(query, &addresses))).await;
        for answer in answers {
            match answer {
                Answer::Job(id, observation) => ray.jobs.push((id, observation)),
                Answer::Dashboard(reachability) => ray.dashboard = reachability,
                Answer::Serve(Ok(status)) => ray.serve_status = Some(status),
                Answer::Serve(Err(reason)) => ray.extensions.push((
                    SERVE_STATUS_ERROR_EXTENSION.to_owned(),
                    Value::String(reason).to_string(),
                )),
            }
        }
        let count = results.len();
        ray.action_results.extend(results);
        count
    }

    /// Forgets the first `count` action results of `uid`: a plugin call got them.
    pub fn delivered(&self, uid: &str, count: usize) {
        self.states.with(uid, |state| {
            state
                .ray_results
                .drain(..count.min(state.ray_results.len()));
        });
    }

    /// Remembers the queries of the plugin's latest answer (a query it stops asking for is
    /// no longer made). True when one of them was not asked before: its answer is due.
    pub fn remember(&self, uid: &str, queries: Vec<RayQuery>) -> bool {
        self.states.with(uid, |state| {
            let new = queries
                .iter()
                .any(|query| !state.ray_queries.contains(query));
            state.ray_queries = queries;
            new
        })
    }

    /// Carries out the actions in order; their results go to the next call.
    pub async fn act(&self, uid: &str, clusters: &Clusters<'_>, actions: Vec<RayAction>) {
        let mut addresses = AddressBook::default();
        for action in actions {
            let outcome = match addresses
                .resolve(self, uid, clusters, &action.cluster)
                .await
            {
                Ok(address) => self.carry_out(&address.clone(), action.action).await,
                Err(reason) => Err(reason.clone()),
            };
            if let Err(error) = &outcome {
                tracing::info!(action = %action.id, cluster = %action.cluster, %error, "Ray action failed");
            }
            let result = ActionResult {
                id: action.id,
                at: now(),
                outcome,
            };
            self.states
                .with(uid, |state| state.ray_results.push(result));
        }
    }

    async fn ask(&self, query: &RayQuery, addresses: &AddressBook) -> Answer {
        match query {
            RayQuery::Job((cluster, id)) => {
                let observation = match addresses.get(cluster) {
                    Ok(address) => match self.client.job(&address, id).await {
                        Ok(details) => JobObservation::Found(job_info(id, details)),
                        Err(error) if error.is_not_found() => {
                            JobObservation::NotFound(error.to_string())
                        }
                        Err(error) => JobObservation::Unavailable(error.to_string()),
                    },
                    Err(reason) => JobObservation::Unavailable(reason),
                };
                Answer::Job(id.clone(), observation)
            }
            RayQuery::Dashboard(cluster) => Answer::Dashboard(match addresses.get(cluster) {
                Ok(address) => match self.client.version(&address).await {
                    Ok(_) => DashboardReachability::Reachable,
                    Err(error) => DashboardReachability::Unreachable(error.to_string()),
                },
                Err(reason) => DashboardReachability::Unreachable(reason),
            }),
            RayQuery::ServeStatus(cluster) => Answer::Serve(match addresses.get(cluster) {
                Ok(address) => self
                    .client
                    .serve_applications(&address)
                    .await
                    .map(|status| status.to_string())
                    .map_err(|error| error.to_string()),
                Err(reason) => Err(reason),
            }),
        }
    }

    /// One action; Ok holds Ray's answer as JSON text (empty for a Serve config).
    async fn carry_out(
        &self,
        at: &DashboardAddress,
        action: RayActionKind,
    ) -> Result<String, String> {
        let text = |error: RayError| error.to_string();
        match action {
            RayActionKind::SubmitJob(job) => {
                let submission = submission(job)?;
                match self
                    .client
                    .submit_job(at, &submission)
                    .await
                    .map_err(text)?
                {
                    SubmitOutcome::Submitted { submission_id } => {
                        Ok(serde_json::json!({"submission_id": submission_id}).to_string())
                    }
                    // Submitted before (e.g. by a host that restarted): as good as done.
                    SubmitOutcome::AlreadySubmitted { message } => Ok(message),
                }
            }
            RayActionKind::StopJob(id) => {
                let stopped = self.client.stop_job(at, &id).await.map_err(text)?;
                Ok(serde_json::json!({"stopped": stopped}).to_string())
            }
            RayActionKind::DeleteJob(id) => {
                let deleted = self.client.delete_job(at, &id).await.map_err(text)?;
                Ok(serde_json::json!({"deleted": deleted}).to_string())
            }
            RayActionKind::PutServeConfig(config) => {
                let config: Value = serde_json::from_str(&config)
                    .map_err(|error| format!("the Serve config is not JSON: {error}"))?;
                self.client
                    .put_serve_config(at, &config)
                    .await
                    .map_err(text)?;
                Ok(String::new())
            }
        }
    }

    /// The dashboard of the RayCluster `name`, with its token when it uses token auth.
    async fn address(
        &self,
        parent_uid: &str,
        clusters: &Clusters<'_>,
        name: &str,
    ) -> Result<DashboardAddress, String> {
        let cluster = find_cluster(clusters, name).await?;
        let target = dashboard_target(
            &cluster,
            &self.cluster_domain,
            self.head_address,
            self.allow_override,
        )?;
        if target.ignored_override {
            let first = self.states.with(parent_uid, |state| {
                state.warned_overrides.insert(name.to_owned())
            });
            if first {
                tracing::warn!(
                    cluster = name,
                    namespace = clusters.namespace,
                    annotation = crate::ray::DASHBOARD_ADDRESS_ANNOTATION,
                    "ignoring the dashboard address annotation: the host runs without --allow-dashboard-address-override"
                );
            }
        }
        let token = match &target.token_secret {
            Some(secret) => Some(read_token(clusters.client, clusters.namespace, secret).await?),
            None => None,
        };
        Ok(DashboardAddress::new(target.base).with_token(token))
    }
}

/// Dashboard addresses resolved once per call and cluster.
#[derive(Default)]
struct AddressBook(HashMap<String, Result<DashboardAddress, String>>);

impl AddressBook {
    async fn resolve(
        &mut self,
        io: &RayIo,
        parent_uid: &str,
        clusters: &Clusters<'_>,
        name: &str,
    ) -> &Result<DashboardAddress, String> {
        match self.0.entry(name.to_owned()) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(new) => new.insert(io.address(parent_uid, clusters, name).await),
        }
    }

    fn get(&self, name: &str) -> Result<DashboardAddress, String> {
        self.0
            .get(name)
            .cloned()
            .unwrap_or_else(|| Err(format!("RayCluster {name} was not looked up")))
    }
}

enum Answer {
    Job(String, JobObservation),
    Dashboard(DashboardReachability),
    Serve(Result<String, String>),
}

/// The RayCluster `name` in the parent's namespace, as JSON.
async fn find_cluster(clusters: &Clusters<'_>, name: &str) -> Result<Value, String> {
    if let Some(known) = clusters
        .known
        .iter()
        .find(|object| object.kind == "RayCluster" && object.name == name)
        && let Ok(cluster) = serde_json::from_str::<Value>(&known.object)
    {
        return Ok(cluster);
    }
    let api: Api<wasmray_crds::RayCluster> =
        Api::namespaced(clusters.client.clone(), clusters.namespace);
    match api.get_opt(name).await {
        Ok(Some(cluster)) => serde_json::to_value(&cluster).map_err(|error| error.to_string()),
        Ok(None) => Err(format!(
            "RayCluster {}/{name} not found",
            clusters.namespace
        )),
        Err(error) => Err(format!(
            "reading RayCluster {}/{name}: {error}",
            clusters.namespace
        )),
    }
}

/// The token in key `auth_token` of Secret `secret` in `namespace`.
pub(crate) async fn read_token(
    client: &Client,
    namespace: &str,
    secret: &str,
) -> Result<String, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let found = api
        .get_opt(secret)
        .await
        .map_err(|error| format!("reading the auth token Secret {namespace}/{secret}: {error}"))?
        .ok_or_else(|| {
            format!("the auth token Secret {namespace}/{secret} does not exist (yet)")
        })?;
    let bytes = found
        .data
        .as_ref()
        .and_then(|data| data.get(AUTH_TOKEN_KEY))
        .ok_or_else(|| format!("Secret {namespace}/{secret} has no key {AUTH_TOKEN_KEY}"))?;
    String::from_utf8(bytes.0.clone())
        .map(|token| token.trim().to_owned())
        .map_err(|_| {
            format!(
                "key {AUTH_TOKEN_KEY} of Secret {namespace}/{} is not UTF-8",
                found.name_any()
            )
        })
}

/// The contract's job info from Ray's JobDetails; the submission id is the one asked about.
fn job_info(submission_id: &str, details: JobDetails) -> RayJobInfo {
    RayJobInfo {
        submission_id: submission_id.to_owned(),
        status: details.status,
        message: details.message,
        error_type: details.error_type,
        start_time_ms: details.start_time,
        end_time_ms: details.end_time,
        entrypoint: details.entrypoint,
        metadata: details.metadata.unwrap_or_default().into_iter().collect(),
    }
}

/// The submit request of a plugin's submit-job; JSON fields must parse.
fn submission(job: SubmitJob) -> Result<JobSubmission, String> {
    let json = |field: &str, text: Option<String>| {
        text.map(|text| serde_json::from_str::<Value>(&text))
            .transpose()
            .map_err(|error| {
                format!(
                    "submit-job {}: {field} is not JSON: {error}",
                    job.submission_id
                )
            })
    };
    Ok(JobSubmission {
        runtime_env: json("runtime-env", job.runtime_env.clone())?,
        entrypoint_resources: json("entrypoint-resources", job.entrypoint_resources.clone())?,
        metadata: job.metadata.iter().cloned().collect(),
        entrypoint_num_cpus: job.entrypoint_num_cpus,
        entrypoint_num_gpus: job.entrypoint_num_gpus,
        entrypoint_memory: job.entrypoint_memory,
        entrypoint: job.entrypoint,
        submission_id: job.submission_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submissions_carry_the_plugin_fields_and_refuse_bad_json() {
        let job = SubmitJob {
            submission_id: "rj-bcdfg".into(),
            entrypoint: "python x.py".into(),
            runtime_env: Some(r#"{"env_vars": {"A": "1"}}"#.into()),
            metadata: vec![("k".into(), "v".into())],
            entrypoint_num_cpus: Some(1.0),
            entrypoint_num_gpus: None,
            entrypoint_memory: None,
            entrypoint_resources: Some(r#"{"custom": 1}"#.into()),
        };
        let request = submission(job.clone()).unwrap();
        assert_eq!(request.runtime_env.unwrap()["env_vars"]["A"], "1");
        assert_eq!(request.entrypoint_resources.unwrap()["custom"], 1);
        assert_eq!(request.metadata["k"], "v");
        let bad = SubmitJob {
            runtime_env: Some("{not json".into()),
            ..job
        };
        let error = submission(bad).unwrap_err();
        assert!(
            error.contains("runtime-env") && error.contains("rj-bcdfg"),
            "{error}"
        );
    }

    #[test]
    fn results_are_delivered_once_and_queries_replaced() {
        let io = RayIo::new(&ControllerConfig::default(), Arc::default());
        let query = RayQuery::Job(("rc".into(), "id".into()));
        assert!(io.remember("p", vec![query.clone()]));
        assert!(!io.remember("p", vec![query.clone()]));
        assert!(io.remember("p", vec![RayQuery::Dashboard("rc".into()), query]));
        io.states.with("p", |state| {
            state.ray_results.push(ActionResult {
                id: "a".into(),
                at: now(),
                outcome: Ok(String::new()),
            });
            state.ray_results.push(ActionResult {
                id: "b".into(),
                at: now(),
                outcome: Err("x".into()),
            });
        });
        io.delivered("p", 1);
        io.states.with("p", |state| {
            assert_eq!(state.ray_results.len(), 1);
            assert_eq!(state.ray_results[0].id, "b");
        });
        io.delivered("p", 5);
        assert!(!io.remember("p", vec![]));
        io.states.with("p", |state| {
            assert!(state.ray_results.is_empty() && state.ray_queries.is_empty())
        });
    }
}
