//! A reconciler's answer, checked and parsed once into the writes that carry it out.
//!
//! [`plan`] is a pure function of the answer, the parent as the host sees it and the
//! parent's cached children: it makes no call, so every rule (what may be written, in which
//! order, what is skipped because nothing changed) is tested as a table, without a cluster.
//! `parent.rs` carries a [`Plan`] out in the order its fields are listed: finalizers added,
//! Secrets, other children, pods, deletions, status, events; then, only if every write
//! succeeded, the Ray actions and the finalizers released.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::DynamicObject;
use kube::runtime::events::EventType;
use serde::de::IgnoredAny;
use serde_json::Value;

use super::status::status_differs;
use super::wit::{
    ChildKind, Deletion, DesiredObject, FinalizerIntent, GeneratedSecret, RayAction, RayActionKind,
    RayQuery, ReconcileOutput, WriteMode,
};
use super::write_policy::WritePolicy;

/// How soon the host calls again after carrying out a Ray action or taking a new query, so
/// the plugin sees the outcome promptly.
pub const FOLLOW_UP: Duration = Duration::from_millis(500);
/// Random bytes a generated Secret may ask for.
const SECRET_BYTES: std::ops::RangeInclusive<u32> = 1..=1024;
const RBAC_API_VERSION: &str = "rbac.authorization.k8s.io/v1";
/// The API server's limit on an event reason.
const EVENT_REASON_BYTES: usize = 128;
/// Finalizers the API server or the garbage collector give a meaning of their own.
const RESERVED_FINALIZER_DOMAINS: [&str; 2] = ["kubernetes.io", "k8s.io"];

/// An answer that does not fit the contract or breaks the host's write policy: nothing of
/// it is carried out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {message}")]
pub struct MalformedAnswer {
    /// The field, e.g. `apply[2].object`.
    pub what: String,
    pub message: String,
    pub rule: AnswerRule,
}

/// Which kind of rule an answer broke; each is a condition reason of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerRule {
    /// It does not fit the contract (not JSON, a required field missing...).
    Contract,
    /// It writes a kind the parent kind may not have, or grants more than it may.
    NotAllowed,
    /// It is over one of the answer limits.
    OverLimit,
    /// It deletes an object this parent does not own.
    NotOwned,
}

impl AnswerRule {
    /// The reason of the `PluginFailure` condition and event.
    pub fn reason(self) -> &'static str {
        match self {
            AnswerRule::Contract => "PluginMalformedOutput",
            AnswerRule::NotAllowed => "PluginWriteNotAllowed",
            AnswerRule::OverLimit => "PluginAnswerOverLimit",
            AnswerRule::NotOwned => "PluginWriteNotOwned",
        }
    }
}

fn malformed(what: impl Into<String>, message: impl Into<String>) -> MalformedAnswer {
    refused(AnswerRule::Contract, what, message)
}

fn refused(
    rule: AnswerRule,
    what: impl Into<String>,
    message: impl Into<String>,
) -> MalformedAnswer {
    MalformedAnswer {
        what: what.into(),
        message: message.into(),
        rule,
    }
}

/// The parent as the host sees it when the answer comes back.
#[derive(Clone, Copy, Debug)]
pub struct ParentView<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub namespace: &'a str,
    /// The controller owner reference every child gets.
    pub owner: &'a OwnerReference,
    pub finalizers: &'a [String],
    pub deleting: bool,
    /// The current `status`, if any.
    pub status: Option<&'a Value>,
}

/// A child the parent owns, as the host's cache has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedChild {
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
}

/// What the host's caches know of a child by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cached {
    /// The host does not watch this kind for the parent kind.
    KindNotWatched,
    /// Not in the cache: gone, or not a child of any parent of this kind.
    Absent,
    /// A child of this parent.
    Owned(OwnedChild),
    /// A child of another parent.
    OtherParent,
}

/// What the plan needs of the parent's cached children.
pub trait ChildIndex {
    /// Every child of this kind the parent owns, or None if the host does not watch the
    /// kind for this parent kind.
    fn owned(&self, api_version: &str, kind: &str) -> Option<Vec<OwnedChild>>;
    /// What the caches know of the object of this kind and name in the parent's namespace.
    fn find(&self, api_version: &str, kind: &str, name: &str) -> Cached;
}

/// One child to create or apply, parsed and owned by the parent.
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedObject {
    pub object: DynamicObject,
    pub api_version: String,
    pub kind: String,
    pub mode: WriteMode,
    /// The caches show an object of this name that the parent owns (only looked up for
    /// objects to apply: an object to apply that is not known as the parent's is created
    /// first, so that nobody else's object is taken over).
    pub owned: bool,
}

/// One pod to create.
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedPod {
    pub pod: Pod,
    /// The pod set it came from, for messages.
    pub group: String,
}

/// One child to delete, with what the cache knows of it (for events and failure reports).
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedDeletion {
    pub deletion: Deletion,
    pub labels: BTreeMap<String, String>,
}

/// The writes and follow-ups of one answer, in the order they are carried out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// The parent's whole new finalizer list, when an `add` changes it; written first.
    pub add_finalizers: Option<Vec<String>>,
    pub secrets: Vec<GeneratedSecret>,
    pub objects: Vec<PreparedObject>,
    pub pods: Vec<PreparedPod>,
    pub deletions: Vec<PlannedDeletion>,
    /// The new status, only when it differs from the current one.
    pub status: Option<Value>,
    pub events: Vec<(EventType, String, String)>,
    /// Carried out only if every write above succeeded.
    pub ray_actions: Vec<RayAction>,
    pub ray_queries: Vec<RayQuery>,
    pub requeue_after: Option<Duration>,
    /// The parent's whole new finalizer list, when a `release` changes it; written last,
    /// only if every write above succeeded.
    pub release_finalizers: Option<Vec<String>>,
    /// Finalizers the plugin keeps on a parent that is being deleted: its deletion waits.
    pub held_while_deleting: Vec<String>,
    /// The scheduler's objects, written before everything else; the pods wait for them.
    pub scheduler_objects: Vec<PreparedObject>,
    /// Why the scheduler holds the pods back (then `pods` is empty).
    pub scheduling_held: Option<String>,
}

impl Plan {
    /// Whether carrying the plan out writes anything to the API server.
    pub fn writes_nothing(&self) -> bool {
        self.add_finalizers.is_none()
            && self.secrets.is_empty()
            && self.objects.is_empty()
            && self.scheduler_objects.is_empty()
            && self.pods.is_empty()
            && self.deletions.is_empty()
            && self.status.is_none()
            && self.release_finalizers.is_none()
    }
}

/// Checks and parses an answer for `parent` against the host's write `policy`.
pub fn plan(
    output: ReconcileOutput,
    parent: &ParentView<'_>,
    children: &dyn ChildIndex,
    policy: &WritePolicy<'_>,
) -> Result<Plan, MalformedAnswer> {
    let (add_finalizers, release_finalizers, held_while_deleting) = finalizers(&output, parent)?;
    let secrets = secrets(&output.generated_secrets)?;
    let mut objects = objects(&output.apply, "apply", parent, policy)?;
    mark_owned(&mut objects, children);
    let pods = pods(&output, parent, policy)?;
    let deletions = deletions(&output, &objects, parent, children, policy)?;
    let limits = policy.limits;
    let status = match output.status.as_deref() {
        None => None,
        Some(text) => {
            if text.len() > limits.status_bytes {
                return Err(refused(
                    AnswerRule::OverLimit,
                    "status",
                    format!(
                        "{} bytes, over the limit of {} (status-bytes)",
                        text.len(),
                        limits.status_bytes
                    ),
                ));
            }
            let status: Value = serde_json::from_str(text)
                .map_err(|error| malformed("status", format!("not JSON: {error}")))?;
            if !status.is_object() {
                return Err(malformed("status", "must be a JSON object"));
            }
            status_differs(parent.status, &status).then_some(status)
        }
    };
    if output.events.len() > limits.events_per_answer {
        return Err(refused(
            AnswerRule::OverLimit,
            "events",
            format!(
                "{} events, over the limit of {} (events-per-answer)",
                output.events.len(),
                limits.events_per_answer
            ),
        ));
    }
    let mut events = Vec::with_capacity(output.events.len());
    for (index, event) in output.events.into_iter().enumerate() {
        if event.reason.is_empty() || event.reason.len() > EVENT_REASON_BYTES {
            return Err(malformed(
                format!("events[{index}].reason"),
                format!("must be 1 to {EVENT_REASON_BYTES} bytes"),
            ));
        }
        if event.message.len() > limits.event_message_bytes {
            return Err(refused(
                AnswerRule::OverLimit,
                format!("events[{index}].message"),
                format!(
                    "{} bytes, over the limit of {} (event-message-bytes)",
                    event.message.len(),
                    limits.event_message_bytes
                ),
            ));
        }
        let type_ = match event.event_type {
            super::wit::EventType::Normal => EventType::Normal,
            super::wit::EventType::Warning => EventType::Warning,
        };
        events.push((type_, event.reason, event.message));
    }
    check_ray_actions(&output.ray_actions)?;
    check_ray_queries(&output.ray_queries)?;
    Ok(Plan {
        add_finalizers,
        secrets,
        objects,
        pods,
        deletions,
        status,
        events,
        ray_actions: output.ray_actions,
        ray_queries: output.ray_queries,
        requeue_after: output
            .requeue_after_ms
            .map(|millis| Duration::from_millis(millis.max(1))),
        release_finalizers,
        held_while_deleting,
        scheduler_objects: Vec::new(),
        scheduling_held: None,
    })
}

/// Checks and parses a scheduler's extra objects (field `extra-objects`) for `parent`
/// against the scheduler's write `policy`.
pub fn scheduler_objects(
    desired_objects: &[DesiredObject],
    parent: &ParentView<'_>,
    children: &dyn ChildIndex,
    policy: &WritePolicy<'_>,
) -> Result<Vec<PreparedObject>, MalformedAnswer> {
    let mut prepared = objects(desired_objects, "extra-objects", parent, policy)?;
    mark_owned(&mut prepared, children);
    Ok(prepared)
}

/// Objects to apply that the parent owns already are patched directly; others are created
/// first (and taken over only if the parent controls them).
fn mark_owned(objects: &mut [PreparedObject], children: &dyn ChildIndex) {
    for object in objects {
        if object.mode == WriteMode::Apply {
            let name = object.object.metadata.name.as_deref().unwrap_or_default();
            object.owned = matches!(
                children.find(&object.api_version, &object.kind, name),
                Cached::Owned(_)
            );
        }
    }
}

/// When to call again: what the plugin asked for, but promptly after an action or a new
/// query, whose outcome the plugin waits for. None: only on a change.
pub fn next_call(requested: Option<Duration>, acted: bool, new_query: bool) -> Option<Duration> {
    if acted || new_query {
        Some(requested.map_or(FOLLOW_UP, |after| after.min(FOLLOW_UP)))
    } else {
        requested
    }
}

type FinalizerLists = (Option<Vec<String>>, Option<Vec<String>>, Vec<String>);

fn finalizers(
    output: &ReconcileOutput,
    parent: &ParentView<'_>,
) -> Result<FinalizerLists, MalformedAnswer> {
    let mut seen = BTreeSet::new();
    let mut adds = Vec::new();
    let mut releases = BTreeSet::new();
    let mut held = Vec::new();
    for (index, finalizer) in output.finalizers.iter().enumerate() {
        let what = || format!("finalizers[{index}].name");
        let name = finalizer.name.as_str();
        let Some((domain, rest)) = name.split_once('/') else {
            return Err(malformed(
                what(),
                format!("{name:?} is not domain-qualified (e.g. example.com/cleanup)"),
            ));
        };
        if domain.is_empty() || rest.is_empty() || name.len() > 253 {
            return Err(malformed(
                what(),
                format!("{name:?} is not a valid finalizer name"),
            ));
        }
        if RESERVED_FINALIZER_DOMAINS
            .iter()
            .any(|reserved| domain == *reserved || domain.ends_with(&format!(".{reserved}")))
        {
            return Err(malformed(
                what(),
                format!("{name:?} is in a domain Kubernetes reserves"),
            ));
        }
        if !seen.insert(name) {
            return Err(malformed(what(), format!("{name:?} is named twice")));
        }
        let present = parent.finalizers.iter().any(|held| held == name);
        match finalizer.intent {
            // Kubernetes refuses new finalizers on an object being deleted.
            FinalizerIntent::Add if !present && !parent.deleting => adds.push(name.to_owned()),
            FinalizerIntent::Add | FinalizerIntent::Keep => {
                if present && parent.deleting {
                    held.push(name.to_owned());
                }
            }
            FinalizerIntent::Release => {
                if present {
                    releases.insert(name);
                }
            }
        }
    }
    let added = (!adds.is_empty()).then(|| {
        parent
            .finalizers
            .iter()
            .cloned()
            .chain(adds)
            .collect::<Vec<_>>()
    });
    let released = (!releases.is_empty()).then(|| {
        added
            .as_deref()
            .unwrap_or(parent.finalizers)
            .iter()
            .filter(|name| !releases.contains(name.as_str()))
            .cloned()
            .collect()
    });
    Ok((added, released, held))
}

fn secrets(wanted: &[GeneratedSecret]) -> Result<Vec<GeneratedSecret>, MalformedAnswer> {
    let mut names = BTreeSet::new();
    for (index, secret) in wanted.iter().enumerate() {
        let field = |name: &str| format!("generated-secrets[{index}].{name}");
        if secret.name.is_empty() {
            return Err(malformed(field("name"), "must not be empty"));
        }
        if secret.key.is_empty() {
            return Err(malformed(field("key"), "must not be empty"));
        }
        if !SECRET_BYTES.contains(&secret.random_bytes) {
            return Err(malformed(
                field("random-bytes"),
                format!(
                    "{} is outside {}..={}",
                    secret.random_bytes,
                    SECRET_BYTES.start(),
                    SECRET_BYTES.end()
                ),
            ));
        }
        if !names.insert(secret.name.as_str()) {
            return Err(malformed(
                field("name"),
                format!("{:?} is asked for twice", secret.name),
            ));
        }
    }
    Ok(wanted.to_vec())
}

/// Kinds of objects whose `apiVersion`/`kind` must be present and not empty.
fn types_of(object: &DynamicObject) -> Option<(String, String)> {
    object
        .types
        .as_ref()
        .map(|types| (types.api_version.clone(), types.kind.clone()))
        .filter(|(api_version, kind)| !api_version.is_empty() && !kind.is_empty())
}

fn objects(
    desired_objects: &[DesiredObject],
    field: &str,
    parent: &ParentView<'_>,
    policy: &WritePolicy<'_>,
) -> Result<Vec<PreparedObject>, MalformedAnswer> {
    if desired_objects.len() > policy.limits.objects_per_answer {
        return Err(refused(
            AnswerRule::OverLimit,
            field,
            format!(
                "{} objects, over the limit of {} (objects-per-answer)",
                desired_objects.len(),
                policy.limits.objects_per_answer
            ),
        ));
    }
    let prepared = desired_objects
        .iter()
        .enumerate()
        .map(|(index, desired)| {
            let what = format!("{field}[{index}].object");
            let mut object: DynamicObject = serde_json::from_str(&desired.object)
                .map_err(|error| malformed(&what, format!("not a Kubernetes object: {error}")))?;
            let (api_version, kind) = types_of(&object)
                .ok_or_else(|| malformed(&what, "apiVersion and kind are required"))?;
            if !policy.allows(&api_version, &kind) {
                return Err(refused(
                    AnswerRule::NotAllowed,
                    &what,
                    format!(
                        "{api_version} {kind} is not a child kind a {} plugin may write (allowed: {})",
                        parent.kind,
                        policy.allowed_list()
                    ),
                ));
            }
            let named = object.metadata.name.as_deref().is_some_and(|name| !name.is_empty());
            let generated = object
                .metadata
                .generate_name
                .as_deref()
                .is_some_and(|name| !name.is_empty());
            match desired.mode {
                WriteMode::Apply if !named => {
                    return Err(malformed(
                        &what,
                        format!("{kind} to apply needs metadata.name (generateName only works with create-only)"),
                    ));
                }
                WriteMode::CreateOnly if !named && !generated => {
                    return Err(malformed(
                        &what,
                        format!("{kind} needs metadata.name or metadata.generateName"),
                    ));
                }
                _ => {}
            }
            let meta = &mut object.metadata;
            meta.namespace = Some(parent.namespace.to_owned());
            meta.owner_references = Some(vec![parent.owner.clone()]);
            meta.resource_version = None;
            meta.uid = None;
            meta.managed_fields = None;
            Ok(PreparedObject {
                object,
                api_version,
                kind,
                mode: desired.mode,
                owned: false,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let roles: BTreeSet<&str> = prepared
        .iter()
        .filter(|object| object.kind == "Role")
        .filter_map(|object| object.object.metadata.name.as_deref())
        .collect();
    for (index, object) in prepared.iter().enumerate() {
        if object.api_version == RBAC_API_VERSION {
            policy
                .check_rbac(&object.object, &object.kind, parent.namespace, &roles)
                .map_err(|message| {
                    refused(
                        AnswerRule::NotAllowed,
                        format!(
                            "{field}[{index}].object ({} {})",
                            object.kind,
                            object.object.metadata.name.as_deref().unwrap_or_default()
                        ),
                        message,
                    )
                })?;
        }
    }
    Ok(prepared)
}

/// Every pod of the pod sets: template, then per-replica name, labels and annotations,
/// then the parent's namespace and controller owner reference.
fn pods(
    output: &ReconcileOutput,
    parent: &ParentView<'_>,
    policy: &WritePolicy<'_>,
) -> Result<Vec<PreparedPod>, MalformedAnswer> {
    // Counted before a single pod is built: a bomb costs no memory.
    let asked: usize = output
        .create_pods
        .iter()
        .map(|set| set.replicas.len())
        .sum();
    if asked > policy.limits.pods_per_answer {
        return Err(refused(
            AnswerRule::OverLimit,
            "create-pods",
            format!(
                "{asked} pods, over the limit of {} (pods-per-answer)",
                policy.limits.pods_per_answer
            ),
        ));
    }
    if asked > 0 && !policy.allows("v1", "Pod") {
        return Err(refused(
            AnswerRule::NotAllowed,
            "create-pods",
            format!("a {} owns no pods", parent.kind),
        ));
    }
    if let Some(ceiling) = policy.pod_ceiling
        && policy.pods_owned.saturating_add(asked) > ceiling
    {
        return Err(refused(
            AnswerRule::OverLimit,
            "create-pods",
            format!(
                "{asked} new pods beside the {} it has would exceed the {ceiling} its spec allows (the head plus each group's maxReplicas times numOfHosts)",
                policy.pods_owned
            ),
        ));
    }
    let mut pods = Vec::with_capacity(asked);
    for (index, set) in output.create_pods.iter().enumerate() {
        let what = format!("create-pods[{index}] ({:?})", set.group);
        let head: ObjectHead = serde_json::from_str(&set.template)
            .map_err(|error| malformed(format!("{what}.template"), format!("not JSON: {error}")))?;
        if head.api_version.as_deref() != Some("v1") || head.kind.as_deref() != Some("Pod") {
            return Err(malformed(format!("{what}.template"), "must be a v1 Pod"));
        }
        let template: Pod = serde_json::from_str(&set.template)
            .map_err(|error| malformed(format!("{what}.template"), error.to_string()))?;
        for (replica_index, replica) in set.replicas.iter().enumerate() {
            let what = format!("{what}.replicas[{replica_index}]");
            if replica
                .labels
                .iter()
                .chain(&replica.annotations)
                .any(|(key, _)| key.is_empty())
            {
                return Err(malformed(what, "a label or annotation key is empty"));
            }
            let mut pod = template.clone();
            let meta = &mut pod.metadata;
            if let Some(name) = replica.name.as_ref().filter(|name| !name.is_empty()) {
                meta.name = Some(name.clone());
                meta.generate_name = None;
            }
            let named = meta.name.as_deref().is_some_and(|name| !name.is_empty());
            let generated = meta
                .generate_name
                .as_deref()
                .is_some_and(|name| !name.is_empty());
            if !named && !generated {
                return Err(malformed(
                    what,
                    "no name and the template has no metadata.generateName",
                ));
            }
            if !replica.labels.is_empty() {
                meta.labels
                    .get_or_insert_with(Default::default)
                    .extend(replica.labels.iter().cloned());
            }
            if !replica.annotations.is_empty() {
                meta.annotations
                    .get_or_insert_with(Default::default)
                    .extend(replica.annotations.iter().cloned());
            }
            meta.namespace = Some(parent.namespace.to_owned());
            meta.owner_references = Some(vec![parent.owner.clone()]);
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

/// The parts of a template the checks read before it is parsed whole.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectHead {
    api_version: Option<String>,
    kind: Option<String>,
}

fn deletions(
    output: &ReconcileOutput,
    objects: &[PreparedObject],
    parent: &ParentView<'_>,
    children: &dyn ChildIndex,
    policy: &WritePolicy<'_>,
) -> Result<Vec<PlannedDeletion>, MalformedAnswer> {
    let mut planned = Vec::with_capacity(output.delete.len());
    for (index, deletion) in output.delete.iter().enumerate() {
        let field = |name: &str| format!("delete[{index}].{name}");
        for (name, value) in [
            ("api-version", &deletion.api_version),
            ("kind", &deletion.kind),
            ("name", &deletion.name),
            ("uid", &deletion.uid),
        ] {
            if value.is_empty() {
                return Err(malformed(field(name), "must not be empty"));
            }
        }
        let what = || {
            format!(
                "delete[{index}] ({} {} {})",
                deletion.api_version, deletion.kind, deletion.name
            )
        };
        // The only object of its own kind a plugin may delete is its parent (KubeRay's
        // DeleteSelf); anything else of that kind belongs to someone else.
        if deletion.api_version == parent.api_version && deletion.kind == parent.kind {
            if deletion.name != parent.name || deletion.uid != parent.uid {
                return Err(refused(
                    AnswerRule::NotOwned,
                    what(),
                    format!(
                        "a {kind} plugin may delete only the {kind} it was called for (name and uid)",
                        kind = parent.kind,
                    ),
                ));
            }
            planned.push(PlannedDeletion {
                deletion: deletion.clone(),
                labels: BTreeMap::new(),
            });
            continue;
        }
        if !policy.allows(&deletion.api_version, &deletion.kind) {
            return Err(refused(
                AnswerRule::NotAllowed,
                what(),
                format!(
                    "not a child kind a {} plugin may delete (allowed: {})",
                    parent.kind,
                    policy.allowed_list()
                ),
            ));
        }
        // Only what the host's own caches show this parent owns is deleted.
        match children.find(&deletion.api_version, &deletion.kind, &deletion.name) {
            Cached::Owned(child) if child.uid == deletion.uid => planned.push(PlannedDeletion {
                deletion: deletion.clone(),
                labels: child.labels,
            }),
            // Gone, or replaced by a newer object of the name: nothing to delete.
            Cached::Owned(_) | Cached::Absent => {}
            Cached::OtherParent => {
                return Err(refused(
                    AnswerRule::NotOwned,
                    what(),
                    format!("owned by another {}, not by this one", parent.kind),
                ));
            }
            Cached::KindNotWatched => {
                return Err(refused(
                    AnswerRule::NotOwned,
                    what(),
                    format!(
                        "the host does not watch this kind for a {}, so it cannot check that the {} owns it",
                        parent.kind, parent.kind
                    ),
                ));
            }
        }
    }
    let mut pruned_kinds = BTreeSet::new();
    for (index, ChildKind { api_version, kind }) in output.prune.iter().enumerate() {
        let what = format!("prune[{index}]");
        if api_version == "v1" && kind == "Pod" {
            return Err(malformed(what, "pods are not pruned: delete them by name"));
        }
        if !pruned_kinds.insert((api_version.as_str(), kind.as_str())) {
            return Err(malformed(
                what,
                format!("{api_version} {kind} is named twice"),
            ));
        }
        let owned = children.owned(api_version, kind).ok_or_else(|| {
            refused(
                AnswerRule::NotOwned,
                &what,
                format!(
                    "{api_version} {kind} is not a child kind the host watches for a {}",
                    parent.kind
                ),
            )
        })?;
        let listed: BTreeSet<&str> = objects
            .iter()
            .filter(|object| &object.api_version == api_version && &object.kind == kind)
            .filter_map(|object| object.object.metadata.name.as_deref())
            .collect();
        for child in owned {
            let already = planned
                .iter()
                .any(|planned| planned.deletion.uid == child.uid && planned.deletion.kind == *kind);
            if listed.contains(child.name.as_str()) || already {
                continue;
            }
            planned.push(PlannedDeletion {
                deletion: Deletion {
                    api_version: api_version.clone(),
                    kind: kind.clone(),
                    name: child.name,
                    uid: child.uid,
                    reason: "no longer desired".to_owned(),
                },
                labels: child.labels,
            });
        }
    }
    Ok(planned)
}

fn check_ray_actions(actions: &[RayAction]) -> Result<(), MalformedAnswer> {
    for (index, action) in actions.iter().enumerate() {
        let field = |name: &str| format!("ray-actions[{index}].{name}");
        let required = |name: &str, value: &str| {
            if value.is_empty() {
                Err(malformed(field(name), "must not be empty"))
            } else {
                Ok(())
            }
        };
        let json_object = |name: &str, text: &str| {
            serde_json::from_str::<BTreeMap<String, IgnoredAny>>(text)
                .map(drop)
                .map_err(|error| malformed(field(name), format!("not a JSON object: {error}")))
        };
        required("id", &action.id)?;
        required("cluster", &action.cluster)?;
        match &action.action {
            RayActionKind::SubmitJob(job) => {
                required("submit-job.submission-id", &job.submission_id)?;
                required("submit-job.entrypoint", &job.entrypoint)?;
                if let Some(env) = &job.runtime_env {
                    json_object("submit-job.runtime-env", env)?;
                }
                if let Some(resources) = &job.entrypoint_resources {
                    json_object("submit-job.entrypoint-resources", resources)?;
                }
            }
            RayActionKind::StopJob(id) | RayActionKind::DeleteJob(id) => {
                required("submission-id", id)?;
            }
            RayActionKind::PutServeConfig(config) => {
                serde_json::from_str::<IgnoredAny>(config).map_err(|error| {
                    malformed(field("put-serve-config"), format!("not JSON: {error}"))
                })?;
            }
        }
    }
    Ok(())
}

fn check_ray_queries(queries: &[RayQuery]) -> Result<(), MalformedAnswer> {
    for (index, query) in queries.iter().enumerate() {
        let what = format!("ray-queries[{index}]");
        let empty = match query {
            RayQuery::Job((cluster, submission_id)) => {
                cluster.is_empty() || submission_id.is_empty()
            }
            RayQuery::ServeStatus(cluster) | RayQuery::Dashboard(cluster) => cluster.is_empty(),
        };
        if empty {
            return Err(malformed(what, "names no cluster or no submission id"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::wit::{
        DesiredObject, Event, EventType as WitEventType, Finalizer, PodReplica, PodSet, SubmitJob,
    };
    use crate::controller::write_policy::AnswerLimits;

    const FINALIZER: &str = "ray.io/rayjob-finalizer";

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

    /// The parent `rc` (uid `u`) in `ns`, with these finalizers and status.
    fn view<'a>(
        owner: &'a OwnerReference,
        finalizers: &'a [String],
        deleting: bool,
        status: Option<&'a Value>,
    ) -> ParentView<'a> {
        ParentView {
            api_version: "ray.io/v1",
            kind: "RayCluster",
            name: "rc",
            uid: "u",
            namespace: "ns",
            owner,
            finalizers,
            deleting,
            status,
        }
    }

    /// Cached children: services `rc-head-svc` and `rc-old-svc`, a pod `rc-head-x`.
    struct Cache;

    impl ChildIndex for Cache {
        fn owned(&self, api_version: &str, kind: &str) -> Option<Vec<OwnedChild>> {
            let service = |name: &str, uid: &str| OwnedChild {
                name: name.into(),
                uid: uid.into(),
                labels: BTreeMap::from([("ray.io/cluster".into(), "rc".into())]),
            };
            match (api_version, kind) {
                ("v1", "Service") => Some(vec![
                    service("rc-head-svc", "s1"),
                    service("rc-old-svc", "s2"),
                ]),
                ("batch/v1", "Job") => Some(Vec::new()),
                _ => None,
            }
        }
        fn find(&self, api_version: &str, kind: &str, name: &str) -> Cached {
            match (api_version, kind, name) {
                ("v1", "Pod", "rc-head-x") => Cached::Owned(OwnedChild {
                    name: name.into(),
                    uid: "p1".into(),
                    labels: BTreeMap::from([("ray.io/node-type".into(), "head".into())]),
                }),
                ("v1", "Pod", "other-head-y") => Cached::OtherParent,
                ("v1", "Pod", _) => Cached::Absent,
                _ => match self
                    .owned(api_version, kind)
                    .map(|owned| owned.into_iter().find(|child| child.name == name))
                {
                    None => Cached::KindNotWatched,
                    Some(None) => Cached::Absent,
                    Some(Some(child)) => Cached::Owned(child),
                },
            }
        }
    }

    const KINDS: &[(&str, &str)] = &[
        ("v1", "Pod"),
        ("v1", "Service"),
        ("batch/v1", "Job"),
        ("networking.k8s.io/v1", "Ingress"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ];

    /// The test parent may have 10 pods and owns 2.
    fn policy(limits: &AnswerLimits) -> WritePolicy<'_> {
        WritePolicy {
            kinds: KINDS,
            extra_kinds: &[],
            grants: &[],
            limits,
            pod_ceiling: Some(10),
            pods_owned: 2,
        }
    }

    fn nothing() -> ReconcileOutput {
        ReconcileOutput::default()
    }

    fn finalizer(name: &str, intent: FinalizerIntent) -> Finalizer {
        Finalizer {
            name: name.into(),
            intent,
        }
    }

    fn service(name: &str) -> DesiredObject {
        DesiredObject {
            object: json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "elsewhere"}, "spec": {"clusterIP": "None"}}).to_string(),
            mode: WriteMode::CreateOnly,
        }
    }

    fn plan_of(output: ReconcileOutput) -> Result<Plan, MalformedAnswer> {
        let owner = owner();
        let limits = AnswerLimits::default();
        plan(
            output,
            &view(&owner, &[], false, None),
            &Cache,
            &policy(&limits),
        )
    }

    use serde_json::json;

    #[test]
    fn an_answer_that_asks_nothing_plans_no_write() {
        let status = json!({"state": "ready"});
        let owner = owner();
        let mut output = nothing();
        output.status = Some(status.to_string());
        let plan = plan(
            output,
            &view(&owner, &[], false, Some(&status)),
            &Cache,
            &policy(&AnswerLimits::default()),
        )
        .unwrap();
        assert!(plan.writes_nothing(), "{plan:?}");
        assert_eq!(plan.status, None, "an unchanged status is not written");
        let mut changed = nothing();
        changed.status = Some(json!({"state": "suspended"}).to_string());
        let plan = super::plan(
            changed,
            &view(&owner, &[], false, Some(&status)),
            &Cache,
            &policy(&AnswerLimits::default()),
        )
        .unwrap();
        assert_eq!(plan.status, Some(json!({"state": "suspended"})));
    }

    #[test]
    fn pod_sets_expand_to_owned_pods_with_replica_overrides() {
        let mut output = nothing();
        output.create_pods.push(PodSet {
            group: "small".into(),
            template: r#"{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"rc-small-worker-","labels":{"ray.io/node-type":"worker"}},"spec":{"containers":[{"name":"ray-worker"}]}}"#.into(),
            replicas: vec![
                PodReplica { name: None, labels: vec![("idx".into(), "0".into())], annotations: vec![] },
                PodReplica { name: Some("fixed".into()), labels: vec![], annotations: vec![("a".into(), "b".into())] },
            ],
        });
        let pods = plan_of(output).unwrap().pods;
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
    }

    #[test]
    fn malformed_answers_name_the_field_and_plan_nothing() {
        type Breaker = Box<dyn Fn(&mut ReconcileOutput)>;
        let cases: Vec<(&str, Breaker)> = vec![
            (
                "create-pods[0] (\"g\").template",
                Box::new(|o| {
                    o.create_pods.push(PodSet {
                        group: "g".into(),
                        template: "{not json".into(),
                        replicas: vec![],
                    })
                }),
            ),
            (
                "create-pods[0] (\"g\").template",
                Box::new(|o| {
                    o.create_pods.push(PodSet {
                        group: "g".into(),
                        template: r#"{"apiVersion":"v1","kind":"Service"}"#.into(),
                        replicas: vec![],
                    })
                }),
            ),
            (
                "create-pods[0] (\"g\").replicas[0]",
                Box::new(|o| {
                    o.create_pods.push(PodSet {
                        group: "g".into(),
                        template: r#"{"apiVersion":"v1","kind":"Pod","metadata":{}}"#.into(),
                        replicas: vec![PodReplica {
                            name: None,
                            labels: vec![],
                            annotations: vec![],
                        }],
                    })
                }),
            ),
            (
                "apply[0].object",
                Box::new(|o| {
                    o.apply.push(DesiredObject {
                        object: r#"{"metadata":{"name":"x"}}"#.into(),
                        mode: WriteMode::Apply,
                    })
                }),
            ),
            (
                "apply[0].object",
                Box::new(|o| {
                    o.apply.push(DesiredObject { object: r#"{"apiVersion":"v1","kind":"Service","metadata":{"generateName":"x-"}}"#.into(), mode: WriteMode::Apply })
                }),
            ),
            (
                "delete[0].uid",
                Box::new(|o| {
                    o.delete.push(Deletion {
                        api_version: "v1".into(),
                        kind: "Pod".into(),
                        name: "p".into(),
                        uid: String::new(),
                        reason: String::new(),
                    })
                }),
            ),
            ("status", Box::new(|o| o.status = Some("[1]".into()))),
            ("status", Box::new(|o| o.status = Some("{".into()))),
            (
                "events[0].reason",
                Box::new(|o| {
                    o.events.push(Event {
                        event_type: WitEventType::Normal,
                        reason: String::new(),
                        message: "m".into(),
                    })
                }),
            ),
            (
                "ray-actions[0].submit-job.runtime-env",
                Box::new(|o| {
                    o.ray_actions.push(RayAction {
                        id: "a".into(),
                        cluster: "rc".into(),
                        action: RayActionKind::SubmitJob(SubmitJob {
                            submission_id: "s".into(),
                            entrypoint: "python x.py".into(),
                            runtime_env: Some("[]".into()),
                            metadata: vec![],
                            entrypoint_num_cpus: None,
                            entrypoint_num_gpus: None,
                            entrypoint_memory: None,
                            entrypoint_resources: None,
                        }),
                    })
                }),
            ),
            (
                "ray-queries[0]",
                Box::new(|o| o.ray_queries.push(RayQuery::Dashboard(String::new()))),
            ),
            (
                "finalizers[0].name",
                Box::new(|o| o.finalizers.push(finalizer("orphan", FinalizerIntent::Add))),
            ),
            (
                "finalizers[0].name",
                Box::new(|o| {
                    o.finalizers.push(finalizer(
                        "kubernetes.io/pv-protection",
                        FinalizerIntent::Add,
                    ))
                }),
            ),
            (
                "finalizers[1].name",
                Box::new(|o| {
                    o.finalizers
                        .push(finalizer(FINALIZER, FinalizerIntent::Add));
                    o.finalizers
                        .push(finalizer(FINALIZER, FinalizerIntent::Release));
                }),
            ),
            (
                "generated-secrets[0].random-bytes",
                Box::new(|o| {
                    o.generated_secrets.push(GeneratedSecret {
                        name: "s".into(),
                        key: "k".into(),
                        random_bytes: 0,
                        labels: vec![],
                    })
                }),
            ),
            (
                "generated-secrets[0].random-bytes",
                Box::new(|o| {
                    o.generated_secrets.push(GeneratedSecret {
                        name: "s".into(),
                        key: "k".into(),
                        random_bytes: 1025,
                        labels: vec![],
                    })
                }),
            ),
            (
                "generated-secrets[0].key",
                Box::new(|o| {
                    o.generated_secrets.push(GeneratedSecret {
                        name: "s".into(),
                        key: String::new(),
                        random_bytes: 32,
                        labels: vec![],
                    })
                }),
            ),
            (
                "prune[0]",
                Box::new(|o| {
                    o.prune.push(ChildKind {
                        api_version: "v1".into(),
                        kind: "Pod".into(),
                    })
                }),
            ),
            (
                "prune[0]",
                Box::new(|o| {
                    o.prune.push(ChildKind {
                        api_version: "v1".into(),
                        kind: "ConfigMap".into(),
                    })
                }),
            ),
        ];
        for (field, break_it) in cases {
            let mut output = nothing();
            break_it(&mut output);
            let error = plan_of(output).expect_err(field);
            assert_eq!(error.what, field, "{error}");
        }
    }

    #[test]
    fn desired_objects_get_namespace_and_owner() {
        let mut output = nothing();
        output.apply.push(service("rc-head-svc"));
        let objects = plan_of(output).unwrap().objects;
        assert_eq!(objects[0].kind, "Service");
        assert_eq!(objects[0].object.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(objects[0].object.data["spec"]["clusterIP"], "None");
        assert_eq!(
            objects[0].object.metadata.owner_references.as_deref(),
            Some(&[owner()][..])
        );
    }

    #[test]
    fn finalizers_are_added_first_and_released_last_only_when_they_change() {
        let owner = owner();
        let none: Vec<String> = Vec::new();
        let held = vec!["other.io/theirs".to_owned(), FINALIZER.to_owned()];
        // (current finalizers, deleting, intent) -> (added list, released list, held)
        type Row<'a> = (
            &'a [String],
            bool,
            FinalizerIntent,
            Option<Vec<&'a str>>,
            Option<Vec<&'a str>>,
            bool,
        );
        let rows: Vec<Row> = vec![
            (
                &none,
                false,
                FinalizerIntent::Add,
                Some(vec![FINALIZER]),
                None,
                false,
            ),
            (&held, false, FinalizerIntent::Add, None, None, false),
            (&held, false, FinalizerIntent::Keep, None, None, false),
            (&none, false, FinalizerIntent::Keep, None, None, false),
            (
                &held,
                false,
                FinalizerIntent::Release,
                None,
                Some(vec!["other.io/theirs"]),
                false,
            ),
            (&none, false, FinalizerIntent::Release, None, None, false),
            // Deleting: nothing can be added; keeping is the verdict "not done yet".
            (&none, true, FinalizerIntent::Add, None, None, false),
            (&held, true, FinalizerIntent::Add, None, None, true),
            (&held, true, FinalizerIntent::Keep, None, None, true),
            (
                &held,
                true,
                FinalizerIntent::Release,
                None,
                Some(vec!["other.io/theirs"]),
                false,
            ),
        ];
        for (current, deleting, intent, added, released, blocked) in rows {
            let mut output = nothing();
            output.finalizers.push(finalizer(FINALIZER, intent));
            let plan = plan(
                output,
                &view(&owner, current, deleting, None),
                &Cache,
                &policy(&AnswerLimits::default()),
            )
            .unwrap();
            let owned = |list: Option<Vec<&str>>| {
                list.map(|names| names.into_iter().map(str::to_owned).collect::<Vec<_>>())
            };
            let case = format!("{current:?} deleting={deleting} {intent:?}");
            assert_eq!(plan.add_finalizers, owned(added), "{case}");
            assert_eq!(plan.release_finalizers, owned(released), "{case}");
            assert_eq!(plan.held_while_deleting.len() == 1, blocked, "{case}");
        }
    }

    #[test]
    fn a_finalizer_added_and_another_released_in_one_answer_keep_each_other() {
        let owner = owner();
        let current = vec!["example.com/old".to_owned()];
        let mut output = nothing();
        output
            .finalizers
            .push(finalizer("example.com/new", FinalizerIntent::Add));
        output
            .finalizers
            .push(finalizer("example.com/old", FinalizerIntent::Release));
        let plan = plan(
            output,
            &view(&owner, &current, false, None),
            &Cache,
            &policy(&AnswerLimits::default()),
        )
        .unwrap();
        assert_eq!(
            plan.add_finalizers.as_deref(),
            Some(&["example.com/old".to_owned(), "example.com/new".to_owned()][..])
        );
        assert_eq!(
            plan.release_finalizers.as_deref(),
            Some(&["example.com/new".to_owned()][..])
        );
    }

    #[test]
    fn pruning_deletes_owned_children_the_answer_does_not_list() {
        let mut output = nothing();
        output.apply.push(service("rc-head-svc"));
        output.prune.push(ChildKind {
            api_version: "v1".into(),
            kind: "Service".into(),
        });
        output.prune.push(ChildKind {
            api_version: "batch/v1".into(),
            kind: "Job".into(),
        });
        let plan = plan_of(output).unwrap();
        let pruned: Vec<_> = plan
            .deletions
            .iter()
            .map(|planned| {
                (
                    planned.deletion.name.as_str(),
                    planned.deletion.uid.as_str(),
                )
            })
            .collect();
        assert_eq!(pruned, [("rc-old-svc", "s2")]);
        assert_eq!(plan.deletions[0].labels["ray.io/cluster"], "rc");
        // A child the answer deletes by name is not deleted twice.
        let mut output = nothing();
        output.delete.push(Deletion {
            api_version: "v1".into(),
            kind: "Service".into(),
            name: "rc-old-svc".into(),
            uid: "s2".into(),
            reason: "gone".into(),
        });
        output.prune.push(ChildKind {
            api_version: "v1".into(),
            kind: "Service".into(),
        });
        let plan = plan_of(output).unwrap();
        let names: Vec<_> = plan
            .deletions
            .iter()
            .map(|d| d.deletion.name.as_str())
            .collect();
        assert_eq!(names, ["rc-old-svc", "rc-head-svc"]);
    }

    #[test]
    fn deletions_carry_the_cached_labels_and_the_parent_may_delete_itself() {
        let mut output = nothing();
        output.delete.push(Deletion {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: "rc-head-x".into(),
            uid: "p1".into(),
            reason: "failed".into(),
        });
        output.delete.push(Deletion {
            api_version: "ray.io/v1".into(),
            kind: "RayCluster".into(),
            name: "rc".into(),
            uid: "u".into(),
            reason: "done".into(),
        });
        let plan = plan_of(output).unwrap();
        assert_eq!(plan.deletions[0].labels["ray.io/node-type"], "head");
        assert!(plan.deletions[1].labels.is_empty());
    }

    fn object(value: Value) -> DesiredObject {
        DesiredObject {
            object: value.to_string(),
            mode: WriteMode::CreateOnly,
        }
    }

    fn pod_set(replicas: usize) -> PodSet {
        let replica = PodReplica {
            name: None,
            labels: vec![],
            annotations: vec![],
        };
        PodSet {
            group: "g".into(),
            template: r#"{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"rc-g-"}}"#
                .into(),
            replicas: vec![replica; replicas],
        }
    }

    fn delete(api_version: &str, kind: &str, name: &str, uid: &str) -> Deletion {
        Deletion {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            uid: uid.into(),
            reason: String::new(),
        }
    }

    #[test]
    fn answers_that_break_the_write_policy_are_refused_naming_the_rule() {
        type Breaker = Box<dyn Fn(&mut ReconcileOutput)>;
        let rbac = "rbac.authorization.k8s.io/v1";
        let cases: Vec<(AnswerRule, &str, &str, Breaker)> = vec![
            (
                AnswerRule::NotAllowed,
                "apply[0].object",
                "rbac.authorization.k8s.io/v1 ClusterRoleBinding is not a child kind",
                Box::new(move |o| {
                    o.apply.push(object(json!({"apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": {"name": "x"}, "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": "cluster-admin"}})))
                }),
            ),
            (
                AnswerRule::NotAllowed,
                "apply[0].object",
                "v1 Namespace is not a child kind",
                Box::new(|o| {
                    o.apply.push(object(
                        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}),
                    ))
                }),
            ),
            (
                AnswerRule::NotAllowed,
                "apply[0].object (RoleBinding x)",
                "ClusterRole \"cluster-admin\"",
                Box::new(move |o| {
                    o.apply.push(object(json!({"apiVersion": rbac, "kind": "RoleBinding", "metadata": {"name": "x"}, "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": "cluster-admin"}, "subjects": [{"kind": "ServiceAccount", "name": "default"}]})))
                }),
            ),
            (
                AnswerRule::NotAllowed,
                "apply[0].object (Role x)",
                "beyond what this kind's Role may grant (nothing)",
                Box::new(move |o| {
                    o.apply.push(object(json!({"apiVersion": rbac, "kind": "Role", "metadata": {"name": "x"}, "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]})))
                }),
            ),
            (
                AnswerRule::OverLimit,
                "apply",
                "101 objects, over the limit of 100 (objects-per-answer)",
                Box::new(|o| {
                    for index in 0..101 {
                        o.apply.push(service(&format!("s{index}")));
                    }
                }),
            ),
            (
                AnswerRule::OverLimit,
                "create-pods",
                "100000 pods, over the limit of 1000 (pods-per-answer)",
                Box::new(|o| o.create_pods.push(pod_set(100_000))),
            ),
            (
                AnswerRule::OverLimit,
                "create-pods",
                "9 new pods beside the 2 it has would exceed the 10",
                Box::new(|o| {
                    o.create_pods.push(pod_set(4));
                    o.create_pods.push(pod_set(5));
                }),
            ),
            (
                AnswerRule::OverLimit,
                "status",
                "over the limit of 262144 (status-bytes)",
                Box::new(|o| {
                    o.status = Some(json!({"blob": "x".repeat(300_000)}).to_string());
                }),
            ),
            (
                AnswerRule::OverLimit,
                "events",
                "101 events, over the limit of 100",
                Box::new(|o| {
                    o.events = vec![
                        Event {
                            event_type: WitEventType::Normal,
                            reason: "R".into(),
                            message: String::new()
                        };
                        101
                    ];
                }),
            ),
            (
                AnswerRule::OverLimit,
                "events[0].message",
                "2000 bytes, over the limit of 1024",
                Box::new(|o| {
                    o.events.push(Event {
                        event_type: WitEventType::Warning,
                        reason: "R".into(),
                        message: "m".repeat(2000),
                    });
                }),
            ),
            (
                AnswerRule::NotOwned,
                "delete[0] (v1 Pod other-head-y)",
                "owned by another RayCluster",
                Box::new(|o| {
                    o.delete
                        .push(delete("v1", "Pod", "other-head-y", "real-uid"));
                }),
            ),
            (
                AnswerRule::NotOwned,
                "delete[0] (networking.k8s.io/v1 Ingress rc)",
                "does not watch this kind",
                Box::new(|o| {
                    o.delete
                        .push(delete("networking.k8s.io/v1", "Ingress", "rc", "i1"));
                }),
            ),
            (
                AnswerRule::NotAllowed,
                "delete[0] (v1 Secret token)",
                "not a child kind a RayCluster plugin may delete",
                Box::new(|o| {
                    o.delete.push(delete("v1", "Secret", "token", "t1"));
                }),
            ),
            (
                AnswerRule::NotOwned,
                "delete[0] (ray.io/v1 RayCluster other)",
                "only the RayCluster it was called for",
                Box::new(|o| {
                    o.delete
                        .push(delete("ray.io/v1", "RayCluster", "other", "o"));
                }),
            ),
        ];
        for (rule, what, message, break_it) in cases {
            let mut output = nothing();
            break_it(&mut output);
            let error = plan_of(output).expect_err(what);
            assert_eq!((error.rule, error.what.as_str()), (rule, what), "{error}");
            assert!(error.message.contains(message), "{error}");
        }
    }

    #[test]
    fn a_kind_added_in_the_binding_and_a_raised_limit_are_honoured() {
        let owner = owner();
        let limits = AnswerLimits {
            objects_per_answer: 200,
            ..AnswerLimits::default()
        };
        let extra = [crate::controller::write_policy::KindRef::new(
            "v1",
            "ConfigMap",
        )];
        let policy = WritePolicy {
            extra_kinds: &extra,
            ..policy(&limits)
        };
        let mut output = nothing();
        for index in 0..150 {
            output.apply.push(object(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{index}")}})));
        }
        let plan = plan(output, &view(&owner, &[], false, None), &Cache, &policy).unwrap();
        assert_eq!(plan.objects.len(), 150);
    }

    #[test]
    fn deletions_of_children_gone_or_replaced_are_dropped() {
        let mut output = nothing();
        output
            .delete
            .push(delete("v1", "Pod", "rc-worker-gone", "p9"));
        output
            .delete
            .push(delete("v1", "Pod", "rc-head-x", "an-older-uid"));
        output
            .delete
            .push(delete("v1", "Service", "rc-head-svc", "s1"));
        let plan = plan_of(output).unwrap();
        let names: Vec<_> = plan
            .deletions
            .iter()
            .map(|d| d.deletion.name.as_str())
            .collect();
        assert_eq!(names, ["rc-head-svc"]);
    }

    #[test]
    fn the_next_call_comes_promptly_after_an_action_or_a_new_query() {
        let secs = Duration::from_secs;
        let rows = [
            (None, false, false, None),
            (Some(secs(30)), false, false, Some(secs(30))),
            (None, true, false, Some(FOLLOW_UP)),
            (None, false, true, Some(FOLLOW_UP)),
            (Some(secs(30)), true, false, Some(FOLLOW_UP)),
            (
                Some(Duration::from_millis(100)),
                false,
                true,
                Some(Duration::from_millis(100)),
            ),
        ];
        for (requested, acted, new_query, expected) in rows {
            assert_eq!(
                next_call(requested, acted, new_query),
                expected,
                "{requested:?} {acted} {new_query}"
            );
        }
        let mut output = nothing();
        output.requeue_after_ms = Some(0);
        assert_eq!(
            plan_of(output).unwrap().requeue_after,
            Some(Duration::from_millis(1))
        );
    }

    #[test]
    fn generated_secrets_are_checked_and_kept_in_order() {
        let mut output = nothing();
        for name in ["b", "a"] {
            output.generated_secrets.push(GeneratedSecret {
                name: name.into(),
                key: "auth_token".into(),
                random_bytes: 32,
                labels: vec![],
            });
        }
        let plan = plan_of(output.clone()).unwrap();
        assert_eq!(plan.secrets, output.generated_secrets);
        output
            .generated_secrets
            .push(output.generated_secrets[0].clone());
        assert_eq!(
            plan_of(output).unwrap_err().what,
            "generated-secrets[2].name"
        );
    }
}
