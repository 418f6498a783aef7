//! The built-in scheduler plugins: KubeRay's batch-scheduler integrations as WasmRay
//! scheduler components. The host calls one before a RayCluster's pods are created (also a
//! cluster a RayJob owns); it patches the pod sets and adds the objects its scheduler needs.
//!
//! One crate, one component per feature: `volcano`, `yunikorn`, `scheduler-plugins`,
//! `kai-scheduler`, `kubernetes-was`. Each follows what KubeRay's integration of the same
//! name produces for the same RayCluster (`../shared/reference/kuberay-v1.5.1.md` §6 and the
//! 1.6-1.7 delta §3.5); where a module does better, its docs say so.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use wasmray_plugin_sdk::crds::constants::{
    RAY_GANG_SCHEDULING_ENABLED_LABEL_KEY, RAY_NODE_GROUP_LABEL_KEY,
    RAY_ORIGINATED_FROM_CR_NAME_LABEL_KEY, RAY_ORIGINATED_FROM_CRD_LABEL_KEY,
};
use wasmray_plugin_sdk::crds::ray_resources::cluster_resources;
use wasmray_plugin_sdk::crds::{RayCluster, WorkerGroupSpec};
use wasmray_plugin_sdk::scheduler::{PodSetPatch, Request};
use wasmray_plugin_sdk::{PluginError, PodSet};

pub mod coscheduling;
pub mod kai;
pub mod volcano;
pub mod workload_aware;
pub mod yunikorn;

/// The group name KubeRay gives the head in batch-scheduler metadata.
pub const HEAD_GROUP: &str = "headgroup";

/// The RayCluster being scheduled, with what every integration reads of it.
pub struct Cluster<'a> {
    pub cluster: &'a RayCluster,
    pub name: &'a str,
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
}

static EMPTY: BTreeMap<String, String> = BTreeMap::new();

impl<'a> Cluster<'a> {
    pub fn new(cluster: &'a RayCluster) -> Result<Self, PluginError> {
        let name = cluster
            .metadata
            .name
            .as_deref()
            .ok_or_else(|| PluginError::new("InvalidParent", "the RayCluster has no name"))?;
        Ok(Cluster {
            cluster,
            name,
            labels: cluster.metadata.labels.as_ref().unwrap_or(&EMPTY),
            annotations: cluster.metadata.annotations.as_ref().unwrap_or(&EMPTY),
        })
    }

    pub fn label(&self, key: &str) -> Option<&'a str> {
        self.labels.get(key).map(String::as_str)
    }

    pub fn annotation(&self, key: &str) -> Option<&'a str> {
        self.annotations.get(key).map(String::as_str)
    }

    pub fn annotations(&self) -> &'a BTreeMap<String, String> {
        self.annotations
    }

    /// Whether the cluster asks for gang scheduling (`ray.io/gang-scheduling-enabled`, any
    /// value, as KubeRay reads it).
    pub fn gang_requested(&self) -> bool {
        self.labels
            .contains_key(RAY_GANG_SCHEDULING_ENABLED_LABEL_KEY)
    }

    /// The RayJob this cluster was created for, if a RayJob created it.
    pub fn rayjob(&self) -> Option<&'a str> {
        (self.label(RAY_ORIGINATED_FROM_CRD_LABEL_KEY) == Some("RayJob"))
            .then(|| self.label(RAY_ORIGINATED_FROM_CR_NAME_LABEL_KEY))
            .flatten()
    }

    pub fn autoscaling(&self) -> bool {
        self.cluster.spec.autoscaling_enabled()
    }

    /// Workers the spec wants: each group's replicas clamped to its bounds, times its
    /// hosts; suspended groups count none.
    pub fn desired_workers(&self) -> i32 {
        self.workers(|group| group.desired_replicas())
    }

    /// Workers the spec wants at least: each group's `minReplicas` times its hosts.
    pub fn min_workers(&self) -> i32 {
        self.workers(|group| {
            if group.is_suspended() {
                0
            } else {
                group.min_replicas()
            }
        })
    }

    fn workers(&self, replicas: impl Fn(&WorkerGroupSpec) -> i32) -> i32 {
        self.cluster
            .spec
            .worker_groups()
            .iter()
            .fold(0i32, |total, group| {
                total.saturating_add(replicas(group).saturating_mul(group.num_of_hosts()))
            })
    }

    /// What the whole cluster asks of Kubernetes (KubeRay's desired resources: every
    /// group's raw `replicas`), as a ResourceList.
    pub fn desired_resources(&self) -> Value {
        resource_list(&cluster_resources(&self.cluster.spec, |group| {
            i64::from(group.replicas.unwrap_or(0)) * i64::from(group.num_of_hosts())
        }))
    }

    /// What the cluster asks of Kubernetes at its smallest (every group at `minReplicas`).
    pub fn min_resources(&self) -> Value {
        resource_list(&cluster_resources(&self.cluster.spec, |group| {
            i64::from(group.min_replicas()) * i64::from(group.num_of_hosts())
        }))
    }
}

fn resource_list(
    resources: &BTreeMap<&str, wasmray_plugin_sdk::crds::quantity::Quantity>,
) -> Value {
    Value::Object(
        resources
            .iter()
            .map(|(name, quantity)| ((*name).to_owned(), Value::String(quantity.to_string())))
            .collect::<Map<String, Value>>(),
    )
}

/// The batch-scheduler group of a pod set: its template's `ray.io/group` label (KubeRay's
/// head group is `headgroup`), else the pod set's own name.
pub fn group_of(pod_set: &PodSet) -> String {
    serde_json::from_str::<Value>(&pod_set.template)
        .ok()
        .and_then(|template| {
            template
                .pointer("/metadata/labels")
                .and_then(|labels| labels.get(RAY_NODE_GROUP_LABEL_KEY))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| pod_set.group.clone())
}

/// A patch of pod set `index` that changes nothing yet.
pub fn patch(index: usize) -> PodSetPatch {
    PodSetPatch {
        index: u32::try_from(index).unwrap_or(u32::MAX),
        scheduler_name: None,
        labels: Vec::new(),
        annotations: Vec::new(),
        priority_class_name: None,
        scheduling_group: None,
    }
}

/// The parent of a request as a [`Cluster`]; only RayClusters are scheduled.
pub fn cluster_of(request: &Request<RayCluster>) -> Result<Cluster<'_>, PluginError> {
    if request.kind != "RayCluster" {
        return Err(PluginError::new(
            "UnsupportedKind",
            format!(
                "batch schedulers place the pods of RayClusters, not of a {}",
                request.kind
            ),
        ));
    }
    Cluster::new(&request.parent)
}

/// Pairs for a label or annotation map, skipping absent values.
pub fn pairs<'a>(
    entries: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Vec<(String, String)> {
    entries
        .into_iter()
        .filter_map(|(key, value)| Some((key.to_owned(), value?.to_owned())))
        .collect()
}

#[cfg(all(target_arch = "wasm32", feature = "volcano"))]
wasmray_plugin_sdk::export_scheduler!(volcano::Volcano);
#[cfg(all(target_arch = "wasm32", feature = "yunikorn"))]
wasmray_plugin_sdk::export_scheduler!(yunikorn::YuniKorn);
#[cfg(all(target_arch = "wasm32", feature = "scheduler-plugins"))]
wasmray_plugin_sdk::export_scheduler!(coscheduling::Coscheduling);
#[cfg(all(target_arch = "wasm32", feature = "kai-scheduler"))]
wasmray_plugin_sdk::export_scheduler!(kai::Kai);
#[cfg(all(target_arch = "wasm32", feature = "kubernetes-was"))]
wasmray_plugin_sdk::export_scheduler!(workload_aware::WorkloadAware);

#[cfg(test)]
pub(crate) mod test_support;
