//! Carrying out the writes of a [`super::plan::Plan`]: generated Secrets, create-only or
//! server-side apply of children, pod creation, deletions with uid preconditions. Every
//! write is recorded as an expectation and an event, and every failed one as a
//! `failed-write` the plugin gets on its next call.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
    PostParams, Preconditions,
};
use kube::runtime::events::EventType;
use kube::{Client, ResourceExt};

use super::expectations::Expectation;
use super::plan::{PlannedDeletion, PreparedObject, PreparedPod};
use super::wit::{Deletion, FailedWrite, WriteMode, WriteOperation};

/// Expectation cache ids: pods, services (any service cache), then other child kinds.
pub const PODS_CACHE: usize = 0;
pub const SERVICES_CACHE: usize = 1;
pub const FIRST_OTHER_CACHE: usize = 2;

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
}

impl WriteReport {
    pub fn merge(&mut self, other: WriteReport) {
        self.expectations.extend(other.expectations);
        self.events.extend(other.events);
        self.failed.extend(other.failed);
        self.errors.extend(other.errors);
        self.writes += other.writes;
    }
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
    known: Mutex<HashMap<(String, String), ApiResource>>,
}

impl ResourceResolver {
    pub async fn resolve(
        &self,
        client: &Client,
        api_version: &str,
        kind: &str,
    ) -> Result<ApiResource, kube::Error> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(resource) = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(resource.clone());
        }
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, _) = kube::discovery::pinned_kind(client, &gvk).await?;
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, resource.clone());
        Ok(resource)
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
}

impl ChildWriter<'_> {
    /// Creates all pods concurrently.
    pub async fn create_pods(&self, pods: Vec<PreparedPod>) -> WriteReport {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), self.namespace);
        let params = PostParams {
            dry_run: false,
            field_manager: Some(self.field_manager.to_owned()),
        };
        let results = join_all(pods.into_iter().map(|prepared| {
            let api = api.clone();
            let params = params.clone();
            async move {
                let result = api.create(&params, &prepared.pod).await;
                (prepared, result)
            }
        }))
        .await;
        let mut report = WriteReport::default();
        for (prepared, result) in results {
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
                    let message = format!(
                        "failed to create {} Pod of group {}: {error}",
                        if node_type.is_empty() {
                            "a"
                        } else {
                            &node_type
                        },
                        prepared.group
                    );
                    report.events.push((
                        EventType::Warning,
                        format!("FailedToCreate{role}Pod"),
                        message.clone(),
                    ));
                    let meta = &prepared.pod.metadata;
                    report.failed.push(failed_write(
                        WriteOperation::Create,
                        "v1",
                        "Pod",
                        meta.name
                            .as_deref()
                            .or(meta.generate_name.as_deref())
                            .unwrap_or_default(),
                        meta.labels.as_ref(),
                        &message,
                    ));
                    report.errors.push(message);
                }
            }
        }
        report
    }

    /// Creates (create-only) or server-side applies other children.
    pub async fn write_objects(&self, objects: Vec<PreparedObject>) -> WriteReport {
        let mut report = WriteReport::default();
        for prepared in objects {
            report.merge(self.write_object(prepared).await);
        }
        report
    }

    async fn write_object(&self, prepared: PreparedObject) -> WriteReport {
        let mut report = WriteReport::default();
        let PreparedObject {
            object,
            api_version,
            kind,
            mode,
        } = prepared;
        let label = object
            .metadata
            .name
            .clone()
            .or_else(|| object.metadata.generate_name.clone())
            .unwrap_or_default();
        // A failed write: a Warning event, a report for the plugin's next call, an error.
        let fail = |report: &mut WriteReport, message: String| {
            report.events.push((
                EventType::Warning,
                format!("FailedToCreate{}", (self.event_noun)(&kind)),
                message.clone(),
            ));
            report.failed.push(failed_write(
                operation_of(mode),
                &api_version,
                &kind,
                &label,
                object.metadata.labels.as_ref(),
                &message,
            ));
            report.errors.push(message);
        };
        let resource = match self
            .resolver
            .resolve(self.client, &api_version, &kind)
            .await
        {
            Ok(resource) => resource,
            Err(error) => {
                let message = format!("cannot resolve {api_version} {kind}: {error}");
                fail(&mut report, message);
                return report;
            }
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), self.namespace, &resource);
        report.writes += 1;
        let result = match mode {
            WriteMode::CreateOnly => {
                let params = PostParams {
                    dry_run: false,
                    field_manager: Some(self.field_manager.to_owned()),
                };
                match api.create(&params, &object).await {
                    Ok(created) => Ok(Some(created)),
                    // Create-only: an existing object is left as it is.
                    Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(None),
                    Err(error) => Err(error),
                }
            }
            WriteMode::Apply => api
                .patch(
                    &label,
                    &PatchParams::apply(self.field_manager).force(),
                    &Patch::Apply(&object),
                )
                .await
                .map(Some),
        };
        match result {
            Ok(Some(written)) => {
                let name = written.name_any();
                if let Some(cache) = (self.cache_of)(&api_version, &kind) {
                    report.expectations.push(Expectation::Created {
                        cache,
                        name: name.clone(),
                    });
                }
                if mode == WriteMode::CreateOnly {
                    report.events.push((
                        EventType::Normal,
                        format!("Created{}", (self.event_noun)(&kind)),
                        format!("Created {kind} {}/{name}", self.namespace),
                    ));
                }
            }
            Ok(None) => {}
            Err(error) => {
                let verb = if mode == WriteMode::Apply {
                    "apply"
                } else {
                    "create"
                };
                let message = format!(
                    "failed to {verb} {kind} {}/{label}: {error}",
                    self.namespace
                );
                fail(&mut report, message);
            }
        }
        report
    }

    /// Deletes children with their uid as precondition; gone or replaced ones are fine.
    pub async fn delete(&self, deletions: &[PlannedDeletion]) -> WriteReport {
        let results = join_all(deletions.iter().map(|planned| async move {
            let result = self.delete_one(&planned.deletion).await;
            (planned, result)
        }))
        .await;
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
            match result {
                Ok(()) => {
                    if let Some(cache) = (self.cache_of)(&deletion.api_version, &deletion.kind) {
                        report.expectations.push(Expectation::Deleted {
                            cache,
                            uid: deletion.uid.clone(),
                        });
                    }
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
                Err(error) => {
                    let message = format!(
                        "failed to delete {described} {}/{}: {error}",
                        self.namespace, deletion.name
                    );
                    report.events.push((
                        EventType::Warning,
                        format!("FailedToDelete{what}"),
                        message.clone(),
                    ));
                    report.failed.push(failed_write(
                        WriteOperation::Delete,
                        &deletion.api_version,
                        &deletion.kind,
                        &deletion.name,
                        Some(&planned.labels),
                        &message,
                    ));
                    report.errors.push(message);
                }
            }
        }
        report
    }

    async fn delete_one(&self, deletion: &Deletion) -> Result<(), kube::Error> {
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
            Ok(_) => Ok(()),
            // Already gone, or a different object now has the name (uid precondition).
            Err(kube::Error::Api(status)) if status.is_not_found() || status.is_conflict() => {
                Ok(())
            }
            Err(error) => Err(error),
        }
    }
}
