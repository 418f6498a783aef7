//! The RayClusters of a RayService: the one it creates from `rayClusterConfig`, its name, and
//! the fingerprint of its spec that tells an upgrade from a change that needs none.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;
use wasmray_crds::constants::{
    HASH_WITHOUT_REPLICAS_AND_WORKERS_TO_DELETE_KEY, KUBERAY_VERSION_ANNOTATION_KEY,
    NUM_WORKER_GROUPS_KEY, RAY_ORIGINATED_FROM_CR_NAME_LABEL_KEY,
    RAY_ORIGINATED_FROM_CRD_LABEL_KEY,
};
use wasmray_crds::{RayCluster, RayClusterSpec, RayService};
use wasmray_plugin_sdk::names::{FNV_OFFSET, fnv1a, suffix};

/// The API version WasmRay serves; a cluster made by another version is updated in place
/// once (KubeRay's rule), never replaced.
pub const KUBERAY_VERSION: &str = "v1.7.1";

/// `<rayservice>-<5 chars>`, a function of the RayService's uid and the generation that
/// asked for the cluster: a replay gives the same name, every upgrade another.
pub fn cluster_name(service: &RayService) -> String {
    let uid = service.metadata.uid.as_deref().unwrap_or_default();
    let generation = service.metadata.generation.unwrap_or(0);
    let hash = fnv1a(fnv1a(FNV_OFFSET, uid.as_bytes()), &generation.to_le_bytes());
    format!(
        "{}-{}",
        service.metadata.name.as_deref().unwrap_or_default(),
        suffix(hash ^ (hash >> 32))
    )
}

/// The fingerprint KubeRay keeps in `ray.io/hash-without-replicas-and-workers-to-delete`:
/// of the spec without what scaling, suspending and Kueue change (replica counts,
/// `workersToDelete`, `suspend`, tolerations and scheduling gates), over the first
/// `groups` worker groups. Not KubeRay's bytes (its hash is of Go's JSON), the same rule.
pub fn spec_hash(spec: &RayClusterSpec, groups: usize) -> String {
    let mut spec = spec.clone();
    spec.suspend = None;
    if let Some(workers) = spec.worker_group_specs.as_mut() {
        workers.truncate(groups);
    }
    let mut value = serde_json::to_value(&spec).unwrap_or(Value::Null);
    if let Some(groups) = value
        .get_mut("workerGroupSpecs")
        .and_then(Value::as_array_mut)
    {
        for group in groups {
            if let Some(group) = group.as_object_mut() {
                for field in ["replicas", "minReplicas", "maxReplicas", "suspend"] {
                    group.remove(field);
                }
                if let Some(strategy) = group
                    .get_mut("scaleStrategy")
                    .and_then(Value::as_object_mut)
                {
                    strategy.remove("workersToDelete");
                }
            }
            strip_scheduling(group.pointer_mut("/template/spec"));
        }
    }
    strip_scheduling(value.pointer_mut("/headGroupSpec/template/spec"));
    let text = value.to_string();
    format!("{:016x}", fnv1a(FNV_OFFSET, text.as_bytes()))
}

fn strip_scheduling(pod: Option<&mut Value>) {
    if let Some(pod) = pod.and_then(Value::as_object_mut) {
        pod.remove("tolerations");
        pod.remove("schedulingGates");
    }
}

/// How many worker groups a spec has.
pub fn group_count(spec: &RayClusterSpec) -> usize {
    spec.worker_group_specs.as_ref().map_or(0, Vec::len)
}

/// The RayCluster a RayService creates: `rayClusterConfig`, the RayService's labels and
/// annotations, the origin labels and KubeRay's bookkeeping annotations.
pub fn desired_cluster(service: &RayService, name: &str) -> RayCluster {
    let spec = service.spec.ray_cluster_config.clone();
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    labels.insert(
        RAY_ORIGINATED_FROM_CR_NAME_LABEL_KEY.to_owned(),
        service.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(
        RAY_ORIGINATED_FROM_CRD_LABEL_KEY.to_owned(),
        "RayService".to_owned(),
    );
    let mut annotations = service.metadata.annotations.clone().unwrap_or_default();
    // The host's own bookkeeping on the RayService is not the cluster's.
    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    let groups = group_count(&spec);
    annotations.insert(
        HASH_WITHOUT_REPLICAS_AND_WORKERS_TO_DELETE_KEY.to_owned(),
        spec_hash(&spec, groups),
    );
    annotations.insert(NUM_WORKER_GROUPS_KEY.to_owned(), groups.to_string());
    annotations.insert(
        KUBERAY_VERSION_ANNOTATION_KEY.to_owned(),
        KUBERAY_VERSION.to_owned(),
    );
    let mut cluster = RayCluster::new(name, spec);
    cluster.metadata = ObjectMeta {
        name: Some(name.to_owned()),
        namespace: service.metadata.namespace.clone(),
        labels: Some(labels),
        annotations: Some(annotations),
        ..ObjectMeta::default()
    };
    cluster
}

/// How a RayService's goal spec relates to one of its clusters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecChange {
    /// Nothing an upgrade would change (replica counts at most).
    Same,
    /// Only worker groups appended at the end: KubeRay updates the cluster in place.
    GroupsAppended,
    /// Made by another operator version with the same spec: updated in place, once.
    OtherVersion,
    /// Anything else: a new cluster.
    Upgrade,
}

/// Compares the goal spec with a cluster's annotations.
pub fn spec_change(goal: &RayClusterSpec, cluster: &RayCluster) -> SpecChange {
    let annotations = cluster.metadata.annotations.clone().unwrap_or_default();
    let hash = annotations
        .get(HASH_WITHOUT_REPLICAS_AND_WORKERS_TO_DELETE_KEY)
        .cloned()
        .unwrap_or_default();
    let groups = annotations
        .get(NUM_WORKER_GROUPS_KEY)
        .and_then(|count| count.parse::<usize>().ok())
        .unwrap_or_else(|| group_count(&cluster.spec));
    let goal_groups = group_count(goal);
    if goal_groups == groups && spec_hash(goal, groups) == hash {
        return if annotations
            .get(KUBERAY_VERSION_ANNOTATION_KEY)
            .map(String::as_str)
            == Some(KUBERAY_VERSION)
        {
            SpecChange::Same
        } else {
            SpecChange::OtherVersion
        };
    }
    if goal_groups > groups && spec_hash(goal, groups) == hash {
        return SpecChange::GroupsAppended;
    }
    SpecChange::Upgrade
}
