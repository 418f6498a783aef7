//! Carrying out the writes of a [`super::plan::Plan`]: generated Secrets, create-only or
//! server-side apply of children, pod creation, deletions with uid preconditions. Every
//! write is recorded as an expectation and an event, and every failed one as a
//! `failed-write` the plugin gets on its next call.
//!
//! Pods go out in batches that start at one and double while creates succeed (as the
//! ReplicaSet controller's slow start), so a rejection costs one request, not hundreds,
//! and one parent's thousands of creates cannot hold the API budget from the others.
//! Every batch and every object write stops when the parent's writes are cancelled (the
//! parent is deleted, the operator stops or loses the lead).

use std::collections::HashMap;
use std::sync::Mutex;

use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
    PostParams, Preconditions,
};
use kube::discovery::Scope;
use kube::runtime::events::EventType;
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::expectations::Expectation;
use super::plan::{PlannedDeletion, PreparedObject, PreparedPod};
use super::wit::{Deletion, FailedWrite, WriteMode, WriteOperation};

/// Expectation cache ids: pods, services (any service cache), then other child kinds.
pub const PODS_CACHE: usize = 0;
pub const SERVICES_CACHE: usize = 1;
pub const FIRST_OTHER_CACHE: usize = 2;

/// Pod creates in flight at most, once slow start has doubled up to it.
const MAX_POD_BATCH: usize = 64;

/// KubeRay's label naming the Ray node type of a pod; it picks the event reasons of pod
/// writes (`CreatedHeadPod`, `DeletedWorkerPod`, ...).
const NODE_TYPE_LABEL: &str = "ray.io/node-type";

/// What the writes of one reconcile produced.
#[derive(Debug, Default)]
pub struct WriteReport {
    pub expectations: Vec<Expectation>,
    /// (type, reason, message) to record on the parent.
    pub events: Vec<(EventType, String, String)>,
    /// The failed writes, for the plugin's next call.
    pub failed: Vec<FailedWrite>,
    /// Failed writes, as text; the reconcile is retried with backoff when not empty.
    pub errors: Vec<String>,
    /// Number of API writes made.
    pub writes: usize,
    /// A write failed because the API server could not be reached.
    pub unreachable: bool,
    /// The writes were cancelled before they all went out.
    pub cancelled: bool,
}

impl WriteReport {
    pub fn merge(&mut self, other: WriteReport) {
        self.expectations.extend(other.expectations);
        self.events.extend(other.events);
        self.failed.extend(other.failed);
        self.errors.extend(other.errors);
        self.writes += other.writes;
        self.unreachable |= other.unreachable;
        self.cancelled |= other.cancelled;
    }

    /// Records a failed write: a Warning event, a report for the plugin's next call, an
    /// error for the retry.
    fn fail(&mut self, reason: String, failed: FailedWrite) {
        self.events
            .push((EventType::Warning, reason, failed.message.clone()));
        self.errors.push(failed.message.clone());
        self.failed.push(failed);
    }
}

/// Whether an error means the API server could not be reached or could not answer, rather
/// than that it refused the write.
pub fn is_unreachable(error: &kube::Error) -> bool {
    match error {
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        kube::Error::Api(status) => matches!(status.code, 502..=504),
        _ => false,
    }
}

/// The API server's message with a generated name (`prefix` and five random characters)
/// put back to its prefix, so that one rejection reads the same on every attempt and a
/// condition holding it does not change with each retry.
pub fn without_generated_name(message: &str, prefix: &str) -> String {
    if prefix.is_empty() {
        return message.to_owned();
    }
    let is_name_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(prefix) {
        let after = &rest[at + prefix.len()..];
        let suffix: String = after.chars().take_while(|c| is_name_char(*c)).collect();
        out.push_str(&rest[..at + prefix.len()]);
        rest = if suffix.len() == 5 {
            &after[5..]
        } else {
            after
        };
    }
    out.push_str(rest);
    out
}

/// "Head"/"Worker" from a pod's node-type label, for event reasons.
fn pod_role(labels: Option<&std::collections::BTreeMap<String, String>>) -> (String, String) {
    let node_type = labels
        .and_then(|labels| labels.get(NODE_TYPE_LABEL))
        .map(String::as_str)
        .unwrap_or_default();
    let mut chars = node_type.chars();
    let capitalised: String = chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default();
    (capitalised, node_type.to_owned())
}

fn failed_write(
    operation: WriteOperation,
    api_version: &str,
    kind: &str,
    name: &str,
    labels: Option<&std::collections::BTreeMap<String, String>>,
    message: &str,
) -> FailedWrite {
    FailedWrite {
        operation,
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
        labels: labels
            .into_iter()
            .flatten()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
        message: message.to_owned(),
    }
}

fn operation_of(mode: WriteMode) -> WriteOperation {
    match mode {
        WriteMode::CreateOnly => WriteOperation::Create,
        WriteMode::Apply => WriteOperation::Apply,
    }
}

/// Resolves `apiVersion`/`kind` to an API resource (with its plural), once per kind.
#[derive(Default)]
pub struct ResourceResolver {
    known: Mutex<HashMap<(String, String), (ApiResource, Scope)>>,
}

impl ResourceResolver {
    pub async fn resolve(
        &self,
        client: &Client,
        api_version: &str,
        kind: &str,
    ) -> Result<ApiResource, kube::Error> {
        Ok(self.resolve_scoped(client, api_version, kind).await?.0)
    }

    /// The resource and whether it is namespaced.
    pub async fn resolve_scoped(
        &self,
        client: &Client,
        api_version: &str,
        kind: &str,
    ) -> Result<(ApiResource, Scope), kube::Error> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(known) = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(known.clone());
        }
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk).await?;
        let known = (resource, capabilities.scope);
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, known.clone());
        Ok(known)
    }
}

/// Writes for one parent.
pub struct ChildWriter<'a> {
    pub client: &'a Client,
    pub namespace: &'a str,
    pub field_manager: &'a str,
    pub resolver: &'a ResourceResolver,
    /// Expectation cache id of a child kind, by (apiVersion, kind); unknown kinds are not
    /// cached and so not waited for.
    pub cache_of: &'a (dyn Fn(&str, &str) -> Option<usize> + Sync),
    /// The noun of a child kind in event reasons ([`super::parent::ParentKind::child_event_noun`]).
    pub event_noun: &'a (dyn Fn(&str) -> &str + Sync),
    /// Cancelled when the writes must stop (the parent is gone, the operator stops).
    pub cancel: &'a CancellationToken,
}

impl ChildWriter<'_> {
    /// Creates the pods in slow-start batches; stops at the first batch with a failure (the
    /// rest are not attempted) or when cancelled.
    pub async fn create_pods(&self, pods: Vec<PreparedPod>) -> WriteReport {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), self.namespace);
        let params = PostParams {
            dry_run: false,
            field_manager: Some(self.field_manager.to_owned()),
        };
        let mut report = WriteReport::default();
        let total = pods.len();
        let mut pending = pods.into_iter();
        let mut batch_size = 1;
        let mut sent = 0;
        while sent < total {
            let batch: Vec<PreparedPod> = pending.by_ref().take(batch_size).collect();
            sent += batch.len();
            let creates = join_all(batch.into_iter().map(|prepared| {
                let api = api.clone();
                let params = params.clone();
                async move {
                    let result = api.create(&params, &prepared.pod).await;
                    (prepared, result)
                }
            }));
            let results = tokio::select! {
                // Dropping the batch abandons the requests not yet answered.
                () = self.cancel.cancelled() => {
                    report.cancelled = true;
                    return report;
                }
                results = creates => results,
            };
            let failures_before = report.failed.len();
            for (prepared, result) in results {
                self.record_pod_create(&mut report, prepared, result);
            }
            if report.failed.len() > failures_before {
                let skipped = total - sent;
                if skipped > 0 {
                    report.errors.push(format!(
                        "{skipped} more pod creates not attempted after a failed one"
                    ));
                }
                break;
            }
            batch_size = (batch_size * 2).min(MAX_POD_BATCH);
        }
        report
    }

    fn record_pod_create(
        &self,
        report: &mut WriteReport,
        prepared: PreparedPod,
        result: Result<Pod, kube::Error>,
    ) {
        report.writes += 1;
        let (role, node_type) = pod_role(prepared.pod.metadata.labels.as_ref());
        match result {
            Ok(created) => {
                let name = created.name_any();
                report.expectations.push(Expectation::Created {
                    cache: PODS_CACHE,
                    name: name.clone(),
                });
                let role_text = if node_type.is_empty() {
                    String::new()
                } else {
                    format!("{node_type} ")
                };
                report.events.push((
                    EventType::Normal,
                    format!("Created{role}Pod"),
                    format!("Created {role_text}Pod {}/{name}", self.namespace),
                ));
            }
            Err(error) => {
                report.unreachable |= is_unreachable(&error);
                let meta = &prepared.pod.metadata;
                let generate_name = meta.generate_name.as_deref().unwrap_or_default();
                let message = format!(
                    "failed to create {} Pod of group {}: {}",
                    if node_type.is_empty() {
                        "a"
                    } else {
                        &node_type
                    },
                    prepared.group,
                    without_generated_name(&error.to_string(), generate_name)
                );
                let failed = failed_write(
                    WriteOperation::Create,
                    "v1",
                    "Pod",
                    meta.name.as_deref().unwrap_or(generate_name),
                    meta.labels.as_ref(),
                    &message,
                );
                report.fail(format!("FailedToCreate{role}Pod"), failed);
            }
        }
    }

    /// Creates (create-only) or server-side applies other children, one after another,
    /// until cancelled.
    pub async fn write_objects(&self, objects: Vec<PreparedObject>) -> WriteReport {
        let mut report = WriteReport::default();
        for prepared in objects {
            if self.cancel.is_cancelled() {
                report.cancelled = true;
                break;
            }
            let written = tokio::select! {
                () = self.cancel.cancelled() => {
                    report.cancelled = true;
                    break;
                }
                written = self.write_object(prepared) => written,
            };
            report.merge(written);
        }
        report
    }

    async fn write_object(&self, prepared: PreparedObject) -> WriteReport {
        let mut report = WriteReport::default();
        let label = prepared
            .object
            .metadata
            .name
            .clone()
            .or_else(|| prepared.object.metadata.generate_name.clone())
            .unwrap_or_default();
        let verb = match prepared.mode {
            WriteMode::Apply => "apply",
            WriteMode::CreateOnly => "create",
        };
        let kind = prepared.kind.clone();
        match self.put(&prepared, &label, &mut report).await {
            Ok(Some(written)) => {
                let name = written.name_any();
                if let Some(cache) = (self.cache_of)(&prepared.api_version, &kind) {
                    report.expectations.push(Expectation::Created {
                        cache,
                        name: name.clone(),
                    });
                }
                if prepared.mode == WriteMode::CreateOnly {
                    report.events.push((
                        EventType::Normal,
                        format!("Created{}", (self.event_noun)(&kind)),
                        format!("Created {kind} {}/{name}", self.namespace),
                    ));
                }
            }
            Ok(None) => {}
            Err(why) => {
                let message = format!(
                    "failed to {verb} {kind} {}/{label}: {}",
                    self.namespace,
                    without_generated_name(
                        &why,
                        prepared
                            .object
                            .metadata
                            .generate_name
                            .as_deref()
                            .unwrap_or_default()
                    )
                );
                let failed = failed_write(
                    operation_of(prepared.mode),
                    &prepared.api_version,
                    &kind,
                    &label,
                    prepared.object.metadata.labels.as_ref(),
                    &message,
                );
                report.fail(
                    format!("FailedToCreate{}", (self.event_noun)(&kind)),
                    failed,
                );
            }
        }
        report
    }

    /// Writes one object: Some(object) when written, None when a create-only object
    /// exists already, Err(why) when refused. An object to apply that the caches do not
    /// show as this parent's is created, so that an existing object of someone else's is
    /// never taken over: if one exists, it is applied only if the parent controls it.
    async fn put(
        &self,
        prepared: &PreparedObject,
        name: &str,
        report: &mut WriteReport,
    ) -> Result<Option<DynamicObject>, String> {
        let (api_version, kind) = (&prepared.api_version, &prepared.kind);
        let (resource, scope) = self
            .resolver
            .resolve_scoped(self.client, api_version, kind)
            .await
            .map_err(|error| {
                report.unreachable |= is_unreachable(&error);
                format!("cannot resolve {api_version} {kind}: {error}")
            })?;
        if scope == Scope::Cluster {
            return Err(format!(
                "{api_version} {kind} is cluster-scoped; the host writes only namespaced children"
            ));
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), self.namespace, &resource);
        let create = PostParams {
            dry_run: false,
            field_manager: Some(self.field_manager.to_owned()),
        };
        let apply = PatchParams::apply(self.field_manager).force();
        let mut api_error = |error: kube::Error| {
            report.unreachable |= is_unreachable(&error);
            error.to_string()
        };
        report.writes += 1;
        if prepared.mode == WriteMode::Apply && prepared.owned {
            return api
                .patch(name, &apply, &Patch::Apply(&prepared.object))
                .await
                .map(Some)
                .map_err(api_error);
        }
        match api.create(&create, &prepared.object).await {
            Ok(created) => Ok(Some(created)),
            Err(kube::Error::Api(status)) if status.is_already_exists() => {
                if prepared.mode == WriteMode::CreateOnly {
                    // Create-only: an existing object is left as it is.
                    return Ok(None);
                }
                let owner_uid = prepared
                    .object
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .map(|owner| owner.uid.as_str())
                    .next()
                    .unwrap_or_default();
                let existing = api.get(name).await.map_err(&mut api_error)?;
                let controlled = existing
                    .owner_references()
                    .iter()
                    .any(|owner| owner.controller == Some(true) && owner.uid == owner_uid);
                if !controlled {
                    return Err(format!(
                        "{kind} {}/{name} exists and is not controlled by this parent; it is left as it is",
                        self.namespace
                    ));
                }
                report.writes += 1;
                api.patch(name, &apply, &Patch::Apply(&prepared.object))
                    .await
                    .map(Some)
                    .map_err(api_error)
            }
            Err(error) => Err(api_error(error)),
        }
    }

    /// Deletes children with their uid as precondition.
    pub async fn delete(&self, deletions: &[PlannedDeletion]) -> WriteReport {
        let results = join_all(deletions.iter().map(|planned| async move {
            let result = self.delete_one(&planned.deletion).await;
            (planned, result)
        }));
        let results = tokio::select! {
            () = self.cancel.cancelled() => {
                return WriteReport { cancelled: true, ..WriteReport::default() };
            }
            results = results => results,
        };
        let mut report = WriteReport::default();
        for (planned, result) in results {
            let deletion = &planned.deletion;
            report.writes += 1;
            let is_pod = deletion.kind == "Pod" && deletion.api_version == "v1";
            let (role, node_type) = if is_pod {
                pod_role(Some(&planned.labels))
            } else {
                (String::new(), String::new())
            };
            let what = if is_pod {
                format!("{role}Pod")
            } else {
                (self.event_noun)(&deletion.kind).to_owned()
            };
            let described = if is_pod && !node_type.is_empty() {
                format!("{node_type} Pod")
            } else {
                deletion.kind.clone()
            };
            let expect_gone = |report: &mut WriteReport| {
                if let Some(cache) = (self.cache_of)(&deletion.api_version, &deletion.kind) {
                    report.expectations.push(Expectation::Deleted {
                        cache,
                        uid: deletion.uid.clone(),
                    });
                }
            };
            match result {
                Ok(Deleted::Now) => {
                    expect_gone(&mut report);
                    let reason = if deletion.reason.is_empty() {
                        String::new()
                    } else {
                        format!("; {}", deletion.reason)
                    };
                    report.events.push((
                        EventType::Normal,
                        format!("Deleted{what}"),
                        format!(
                            "Deleted {described} {}/{}{reason}",
                            self.namespace, deletion.name
                        ),
                    ));
                }
                // Gone before the request: nothing was deleted, so no event says so.
                Ok(Deleted::AlreadyGone) => expect_gone(&mut report),
                Err(error) => {
                    report.unreachable |= is_unreachable(&error);
                    let why = match &error {
                        kube::Error::Api(status) if status.is_conflict() => format!(
                            "the object named so now has another uid than {} (precondition failed); nothing was deleted",
                            deletion.uid
                        ),
                        _ => error.to_string(),
                    };
                    let message = format!(
                        "failed to delete {described} {}/{}: {why}",
                        self.namespace, deletion.name
                    );
                    let failed = failed_write(
                        WriteOperation::Delete,
                        &deletion.api_version,
                        &deletion.kind,
                        &deletion.name,
                        Some(&planned.labels),
                        &message,
                    );
                    report.fail(format!("FailedToDelete{what}"), failed);
                }
            }
        }
        report
    }

    async fn delete_one(&self, deletion: &Deletion) -> Result<Deleted, kube::Error> {
        let resource = self
            .resolver
            .resolve(self.client, &deletion.api_version, &deletion.kind)
            .await?;
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), self.namespace, &resource);
        let params = DeleteParams {
            preconditions: (!deletion.uid.is_empty()).then(|| Preconditions {
                uid: Some(deletion.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&deletion.name, &params).await {
            Ok(_) => Ok(Deleted::Now),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(Deleted::AlreadyGone),
            Err(error) => Err(error),
        }
    }
}

/// What a delete did.
enum Deleted {
    Now,
    AlreadyGone,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_are_put_back_to_their_prefix() {
        let prefix = "rc-small-worker-";
        for (message, expected) in [
            (
                r#"pods "rc-small-worker-x7k2q" is forbidden: exceeded quota: q, requested: cpu=1"#,
                r#"pods "rc-small-worker-" is forbidden: exceeded quota: q, requested: cpu=1"#,
            ),
            // Not five name characters: not a generated suffix.
            (
                r#"pods "rc-small-worker-abc" is invalid"#,
                r#"pods "rc-small-worker-abc" is invalid"#,
            ),
            (
                "rc-small-worker-aaaaa and rc-small-worker-bbbbb",
                "rc-small-worker- and rc-small-worker-",
            ),
            ("no name here", "no name here"),
        ] {
            assert_eq!(without_generated_name(message, prefix), expected);
        }
        assert_eq!(without_generated_name("as is", ""), "as is");
    }
}
