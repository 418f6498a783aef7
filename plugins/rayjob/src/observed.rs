//! Typed views of what the host observed for one RayJob: its RayCluster (owned, or selected
//! with `clusterSelector`), its submitter Job, and Ray's answers.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use wasmray_crds::RayCluster;
use wasmray_plugin_sdk::reconciler::{ActionResult, JobObservation, RayObservations};
use wasmray_plugin_sdk::{ObservedObject, PluginError, from_json};

/// apiVersion of every ray.io kind.
pub const RAY_API_VERSION: &str = "ray.io/v1";
pub const RAY_CLUSTER_KIND: &str = "RayCluster";
pub const JOB_API_VERSION: &str = "batch/v1";
pub const JOB_KIND: &str = "Job";

/// An observed object parsed into its type, with what deletions need.
#[derive(Clone, Debug)]
pub struct Seen<T> {
    pub name: String,
    pub uid: String,
    pub api_version: String,
    pub kind: String,
    /// `metadata.deletionTimestamp` is set: it is going away.
    pub deleting: bool,
    pub object: T,
}

/// Parses an observed object; a child that does not match its schema is an input error
/// that names it.
pub fn parse<T: DeserializeOwned + HasMeta>(
    object: &ObservedObject,
) -> Result<Seen<T>, PluginError> {
    let parsed: T = from_json(
        &format!("{} {} (observed)", object.kind, object.name),
        &object.object,
    )?;
    Ok(Seen {
        name: object.name.clone(),
        uid: object.uid.clone(),
        api_version: object.api_version.clone(),
        kind: object.kind.clone(),
        deleting: parsed.deletion_requested(),
        object: parsed,
    })
}

/// Whether an object's deletion has begun.
pub trait HasMeta {
    fn deletion_requested(&self) -> bool;
}

impl HasMeta for RayCluster {
    fn deletion_requested(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }
}

impl HasMeta for Job {
    fn deletion_requested(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }
}

/// Any object when only its metadata matters (e.g. to delete it).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct AnyObject {
    #[serde(default)]
    pub metadata: ObjectMeta,
}

impl HasMeta for AnyObject {
    fn deletion_requested(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }
}

/// Observed objects of one kind.
pub fn of_kind<'a>(
    objects: &'a [ObservedObject],
    api_version: &'a str,
    kind: &'a str,
) -> impl Iterator<Item = &'a ObservedObject> + 'a {
    objects
        .iter()
        .filter(move |object| object.api_version == api_version && object.kind == kind)
}

/// The one object of a kind with a given name, parsed.
pub fn named<T: DeserializeOwned + HasMeta>(
    objects: &[ObservedObject],
    api_version: &str,
    kind: &str,
    name: &str,
) -> Result<Option<Seen<T>>, PluginError> {
    of_kind(objects, api_version, kind)
        .find(|object| object.name == name)
        .map(parse)
        .transpose()
}

/// Ray's answer about one submission id, if the host asked (it asks what the previous call
/// queried).
pub fn job_answer<'a>(ray: &'a RayObservations, submission_id: &str) -> Option<&'a JobObservation> {
    ray.jobs
        .iter()
        .find(|(id, _)| id == submission_id)
        .map(|(_, answer)| answer)
}

/// The result of an action asked for earlier, delivered once.
pub fn action_result<'a>(ray: &'a RayObservations, action_id: &str) -> Option<&'a ActionResult> {
    ray.action_results
        .iter()
        .find(|result| result.id == action_id)
}
