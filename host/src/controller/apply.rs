//! Carrying out a plugin's answer: pod creation from pod sets, create-only or server-side
//! apply of other children, deletions with uid preconditions. Every write is recorded as an
//! expectation, an event and (for failed pod writes) a report the plugin gets on its next
//! call.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
    PostParams, Preconditions,
};
use kube::runtime::events::EventType;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::expectations::Expectation;
use super::wit::{Deletion, PodSet, WriteMode};

/// Expectation cache ids: pods, services (any service cache), then other child kinds.
pub const PODS_CACHE: usize = 0;
pub const SERVICES_CACHE: usize = 1;
pub const FIRST_OTHER_CACHE: usize = 2;

/// KubeRay's label naming the Ray node type of a pod; it picks the event reasons of pod
/// writes (`CreatedHeadPod`, `DeletedWorkerPod`, ...).
const NODE_TYPE_LABEL: &str = "ray.io/node-type";

/// A plugin answer whose objects do not parse: nothing of it is written.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}")]
pub struct MalformedAnswer {
    pub what: String,
    pub message: String,
}

/// One child to create or apply, parsed and owned by the parent.
#[derive(Debug)]
pub struct PreparedObject {
    pub object: DynamicObject,
    pub api_version: String,
    pub kind: String,
    pub mode: WriteMode,
}

/// The pods of the answer, each ready to create.
#[derive(Debug)]
pub struct PreparedPod {
    pub pod: Pod,
    pub group: String,
}

/// Builds every pod of the pod sets: template, then per-replica name, labels and
/// annotations, then the parent's namespace and controller ownerReference.
pub fn prepare_pods(
    pod_sets: &[PodSet],
    namespace: &str,
    owner: &OwnerReference,
) -> Result<Vec<PreparedPod>, MalformedAnswer> {
    let mut pods = Vec::new();
    for set in pod_sets {
        let template: Pod =
            serde_json::from_str(&set.template).map_err(|error| MalformedAnswer {
                what: format!("pod template of pod set {:?}", set.group),
                message: error.to_string(),
            })?;
        for replica in &set.replicas {
            let mut pod = template.clone();
            let meta = &mut pod.metadata;
            if let Some(name) = &replica.name {
                meta.name = Some(name.clone());
                meta.generate_name = None;
            }
            if meta.name.is_none() && meta.generate_name.is_none() {
                return Err(MalformedAnswer {
                    what: format!("pod set {:?}", set.group),
                    message: "a replica has no name and the template no generateName".into(),
                });
            }
            let labels = meta.labels.get_or_insert_with(Default::default);
            labels.extend(replica.labels.iter().cloned());
            if !replica.annotations.is_empty() {
                meta.annotations
                    .get_or_insert_with(Default::default)
                    .extend(replica.annotations.iter().cloned());
            }
            meta.namespace = Some(namespace.to_owned());
            meta.owner_references = Some(vec![owner.clone()]);
            meta.resource_version = None;
            meta.uid = None;
            pods.push(PreparedPod {
                pod,
                group: set.group.clone(),
            });
        }
    }
    Ok(pods)
}

/// Parses the desired objects and sets namespace and owner.
pub fn prepare_objects(
    desired: &[super::wit::DesiredObject],
    namespace: &str,
    owner: &OwnerReference,
) -> Result<Vec<PreparedObject>, MalformedAnswer> {
    desired
        .iter()
        .enumerate()
        .map(|(index, desired)| {
            let malformed = |message: String| MalformedAnswer {
                what: format!("desired object #{index}"),
                message,
            };
            let mut object: DynamicObject =
                serde_json::from_str(&desired.object).map_err(|e| malformed(e.to_string()))?;
            let (api_version, kind) = object
                .types
                .as_ref()
                .map(|types| (types.api_version.clone(), types.kind.clone()))
                .filter(|(api_version, kind)| !api_version.is_empty() && !kind.is_empty())
                .ok_or_else(|| malformed("apiVersion and kind are required".into()))?;
            let named = object.metadata.name.is_some();
            let generated = object.metadata.generate_name.is_some();
            match desired.mode {
                WriteMode::Apply if !named => {
                    return Err(malformed(format!(
                        "{kind} to apply needs metadata.name (generateName only works with create-only)"
                    )));
                }
                WriteMode::CreateOnly if !named && !generated => {
                    return Err(malformed(format!(
                        "{kind} needs metadata.name or metadata.generateName"
                    )));
                }
                _ => {}
            }
            object.metadata.namespace = Some(namespace.to_owned());
            object.metadata.owner_references = Some(vec![owner.clone()]);
            object.metadata.resource_version = None;
            object.metadata.uid = None;
            object.metadata.managed_fields = None;
            Ok(PreparedObject {
                object,
                api_version,
                kind,
                mode: desired.mode,
            })
        })
        .collect()
}

/// What the writes of one reconcile produced.
#[derive(Debug, Default)]
pub struct WriteReport {
    pub expectations: Vec<Expectation>,
    /// (type, reason, message) to record on the parent.
    pub events: Vec<(EventType, String, String)>,
    /// The latest failed pod write, for the plugin's next call.
    pub pod_write_failure: Option<Value>,
    /// Failed writes, as text; the reconcile is retried with backoff when not empty.
    pub errors: Vec<String>,
    /// Number of API writes made.
    pub writes: usize,
}

impl WriteReport {
    fn merge(&mut self, other: WriteReport) {
        self.expectations.extend(other.expectations);
        self.events.extend(other.events);
        if other.pod_write_failure.is_some() {
            self.pod_write_failure = other.pod_write_failure;
        }
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

fn pod_failure(operation: &str, node_type: &str, message: &str) -> Value {
    json!({"operation": operation, "nodeType": node_type, "message": message})
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
                    report.pod_write_failure = Some(pod_failure("create", &node_type, &message));
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
        let resource = match self
            .resolver
            .resolve(self.client, &api_version, &kind)
            .await
        {
            Ok(resource) => resource,
            Err(error) => {
                let message = format!("cannot resolve {api_version} {kind}: {error}");
                report.events.push((
                    EventType::Warning,
                    format!("FailedToCreate{}", (self.event_noun)(&kind)),
                    message.clone(),
                ));
                report.errors.push(message);
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
                report.events.push((
                    EventType::Warning,
                    format!("FailedToCreate{}", (self.event_noun)(&kind)),
                    message.clone(),
                ));
                report.errors.push(message);
            }
        }
        report
    }

    /// Deletes children with their uid as precondition; gone or replaced ones are fine.
    pub async fn delete(
        &self,
        deletions: &[Deletion],
        pod_labels: &(dyn Fn(&str) -> Option<std::collections::BTreeMap<String, String>> + Sync),
    ) -> WriteReport {
        let results = join_all(deletions.iter().map(|deletion| async move {
            let result = self.delete_one(deletion).await;
            (deletion, result)
        }))
        .await;
        let mut report = WriteReport::default();
        for (deletion, result) in results {
            report.writes += 1;
            let is_pod = deletion.kind == "Pod" && deletion.api_version == "v1";
            let (role, node_type) = if is_pod {
                pod_role(pod_labels(&deletion.name).as_ref())
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
                    if is_pod {
                        report.pod_write_failure =
                            Some(pod_failure("delete", &node_type, &message));
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::wit::{DesiredObject, PodReplica};

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "ray.io/v1".into(),
            kind: "RayCluster".into(),
            name: "rc".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    #[test]
    fn pod_sets_expand_to_owned_pods_with_replica_overrides() {
        let set = PodSet {
            group: "small".into(),
            template: r#"{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"rc-small-worker-","labels":{"ray.io/node-type":"worker"}},"spec":{"containers":[{"name":"ray-worker"}]}}"#.into(),
            replicas: vec![
                PodReplica { name: None, labels: vec![("idx".into(), "0".into())], annotations: vec![] },
                PodReplica { name: Some("fixed".into()), labels: vec![], annotations: vec![("a".into(), "b".into())] },
            ],
        };
        let pods = prepare_pods(&[set], "ns", &owner()).unwrap();
        assert_eq!(pods.len(), 2);
        let first = &pods[0].pod.metadata;
        assert_eq!(first.generate_name.as_deref(), Some("rc-small-worker-"));
        assert_eq!(first.labels.as_ref().unwrap()["idx"], "0");
        assert_eq!(first.namespace.as_deref(), Some("ns"));
        assert_eq!(first.owner_references.as_ref().unwrap()[0].uid, "u");
        let second = &pods[1].pod.metadata;
        assert_eq!(second.name.as_deref(), Some("fixed"));
        assert_eq!(second.generate_name, None);
        assert_eq!(second.annotations.as_ref().unwrap()["a"], "b");
        assert!(!second.labels.as_ref().unwrap().contains_key("idx"));
        assert_eq!(
            pod_role(first.labels.as_ref()),
            ("Worker".into(), "worker".into())
        );
    }

    #[test]
    fn malformed_answers_are_refused_before_any_write() {
        let bad = PodSet {
            group: "g".into(),
            template: "{not json".into(),
            replicas: vec![],
        };
        let error = prepare_pods(&[bad], "ns", &owner()).unwrap_err();
        assert!(error.what.contains("\"g\""), "{error}");
        let nameless = PodSet {
            group: "g".into(),
            template: r#"{"metadata":{}}"#.into(),
            replicas: vec![PodReplica {
                name: None,
                labels: vec![],
                annotations: vec![],
            }],
        };
        assert!(prepare_pods(&[nameless], "ns", &owner()).is_err());
        let objects = [DesiredObject {
            object: r#"{"metadata":{"name":"x"}}"#.into(),
            mode: WriteMode::Apply,
        }];
        assert!(
            prepare_objects(&objects, "ns", &owner())
                .unwrap_err()
                .message
                .contains("apiVersion")
        );
        let objects = [DesiredObject {
            object: r#"{"apiVersion":"v1","kind":"Service","metadata":{"generateName":"x-"}}"#
                .into(),
            mode: WriteMode::Apply,
        }];
        assert!(prepare_objects(&objects, "ns", &owner()).is_err());
    }

    #[test]
    fn desired_objects_get_namespace_and_owner() {
        let objects = [DesiredObject {
            object: r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"rc-head-svc","namespace":"elsewhere"},"spec":{"clusterIP":"None"}}"#.into(),
            mode: WriteMode::CreateOnly,
        }];
        let prepared = prepare_objects(&objects, "ns", &owner()).unwrap();
        assert_eq!(prepared[0].kind, "Service");
        assert_eq!(prepared[0].object.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(prepared[0].object.data["spec"]["clusterIP"], "None");
        assert_eq!(
            prepared[0]
                .object
                .metadata
                .owner_references
                .as_ref()
                .unwrap()
                .len(),
            1
        );
    }
}
