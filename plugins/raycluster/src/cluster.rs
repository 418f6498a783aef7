//! Facts about one RayCluster that every builder needs, derived once per call: names, the
//! head Service address, GCS fault tolerance and autoscaling mode.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodTemplateSpec};
use wasmray_crds::constants::{
    DEFAULT_GCS_SERVER_PORT, HEAD_GROUP_NAME, HEAD_NODE_TYPE,
    RAY_EXTERNAL_STORAGE_NS_ANNOTATION_KEY, RAY_FT_ENABLED_ANNOTATION_KEY,
    RAY_ORIGINATED_FROM_CRD_LABEL_KEY, WORKER_NODE_TYPE,
};
use wasmray_crds::raycluster::{RayCluster, WorkerGroupSpec};

use crate::settings::Settings;

use wasmray_crds::names::MAX_GENERATED_NAME_LENGTH;
pub use wasmray_crds::names::{check_label, check_name, head_service_name};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeType {
    Head,
    Worker,
}

impl NodeType {
    pub fn label(self) -> &'static str {
        match self {
            NodeType::Head => HEAD_NODE_TYPE,
            NodeType::Worker => WORKER_NODE_TYPE,
        }
    }
}

/// The head group or one worker group, seen the same way by the pod and `ray start` builders.
#[derive(Clone, Copy, Debug)]
pub struct GroupView<'a> {
    pub node_type: NodeType,
    /// `headgroup` or the worker group's name (the `ray.io/group` label).
    pub name: &'a str,
    pub ray_start_params: Option<&'a BTreeMap<String, String>>,
    pub resources: Option<&'a BTreeMap<String, String>>,
    pub labels: Option<&'a BTreeMap<String, String>>,
    pub template: &'a PodTemplateSpec,
}

impl<'a> GroupView<'a> {
    pub fn head(cluster: &'a RayCluster) -> GroupView<'a> {
        let head = &cluster.spec.head_group_spec;
        GroupView {
            node_type: NodeType::Head,
            name: HEAD_GROUP_NAME,
            ray_start_params: head.ray_start_params.as_ref(),
            resources: head.resources.as_ref(),
            labels: head.labels.as_ref(),
            template: &head.template,
        }
    }

    pub fn worker(group: &'a WorkerGroupSpec) -> GroupView<'a> {
        GroupView {
            node_type: NodeType::Worker,
            name: &group.group_name,
            ray_start_params: group.ray_start_params.as_ref(),
            resources: group.resources.as_ref(),
            labels: group.labels.as_ref(),
            template: &group.template,
        }
    }

    /// The Ray container is always the first one.
    pub fn ray_container(&self) -> Option<&'a Container> {
        self.template.spec.as_ref()?.containers.first()
    }

    pub fn param(&self, key: &str) -> Option<&'a str> {
        self.ray_start_params?.get(key).map(String::as_str)
    }
}

/// Derived, read-only facts about the cluster being reconciled.
#[derive(Clone, Debug)]
pub struct ClusterContext<'a> {
    pub cluster: &'a RayCluster,
    pub settings: &'a Settings,
    pub name: &'a str,
    pub namespace: &'a str,
    pub head_service_name: String,
    /// `<head svc>.<ns>.svc.<cluster domain>`.
    pub head_service_fqdn: String,
    /// GCS port: the head's `rayStartParams.port`, or 6379.
    pub head_port: String,
    pub gcs_ft_enabled: bool,
    pub autoscaling: bool,
    pub autoscaler_v2: bool,
    /// Ray token authentication (`authOptions` with a mode other than `disabled`).
    pub token_auth: bool,
    /// `RayCluster`, `RayJob` or `RayService`: the kind that created the cluster.
    pub originated_from_crd: &'a str,
}

impl<'a> ClusterContext<'a> {
    pub fn new(cluster: &'a RayCluster, settings: &'a Settings) -> ClusterContext<'a> {
        let name = cluster.metadata.name.as_deref().unwrap_or_default();
        let namespace = cluster.metadata.namespace.as_deref().unwrap_or_default();
        let head_service_name = head_service_name(cluster);
        let head_service_fqdn = format!(
            "{head_service_name}.{namespace}.svc.{}",
            settings.cluster_domain
        );
        let head_port = GroupView::head(cluster)
            .param("port")
            .map_or_else(|| DEFAULT_GCS_SERVER_PORT.to_string(), str::to_owned);
        let autoscaling = cluster.spec.autoscaling_enabled();
        ClusterContext {
            cluster,
            settings,
            name,
            namespace,
            head_service_name,
            head_service_fqdn,
            head_port,
            gcs_ft_enabled: gcs_ft_enabled(cluster),
            autoscaling,
            // The host's autoscaler is a v2 autoscaler: Ray's side must be v2 too, so that
            // `request_resources` and `ray status` go through the GCS it reads and reports to.
            autoscaler_v2: autoscaling,
            token_auth: cluster.spec.token_auth_enabled(),
            originated_from_crd: cluster
                .metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get(RAY_ORIGINATED_FROM_CRD_LABEL_KEY))
                .map_or("RayCluster", String::as_str),
        }
    }

    pub fn annotation(&self, key: &str) -> Option<&'a str> {
        self.cluster
            .metadata
            .annotations
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }

    /// Where GCS keeps this cluster's state in Redis: the options' namespace, else the
    /// annotation, else the cluster's uid.
    pub fn gcs_storage_namespace(&self) -> String {
        let options = self
            .cluster
            .spec
            .gcs_fault_tolerance_options
            .as_ref()
            .and_then(|options| options.external_storage_namespace.as_deref());
        options
            .or_else(|| self.annotation(RAY_EXTERNAL_STORAGE_NS_ANNOTATION_KEY))
            .or(self.cluster.metadata.uid.as_deref())
            .unwrap_or_default()
            .to_owned()
    }

    /// The Secret holding the Ray auth token (`auth_token` key).
    pub fn auth_secret_name(&self) -> String {
        wasmray_crds::names::auth_secret_name(self.name)
    }

    pub fn owned_by_ray_service(&self) -> bool {
        self.originated_from_crd == "RayService"
    }
}

/// GCS FT is on with `ray.io/ft-enabled: "true"` (any case) or `gcsFaultToleranceOptions`.
pub fn gcs_ft_enabled(cluster: &RayCluster) -> bool {
    cluster.spec.gcs_fault_tolerance_options.is_some()
        || cluster
            .metadata
            .annotations
            .as_ref()
            .and_then(|annotations| annotations.get(RAY_FT_ENABLED_ANNOTATION_KEY))
            .is_some_and(|value| value.eq_ignore_ascii_case("true"))
}

pub fn cluster_name(cluster: &RayCluster) -> &str {
    cluster.metadata.name.as_deref().unwrap_or_default()
}

/// `generateName` of a pod: the prefix cut to 50 characters, lowercased, `-<type>-` appended.
pub fn pod_generate_name(prefix: &str, node_type: NodeType) -> String {
    let cut = prefix
        .char_indices()
        .nth(MAX_GENERATED_NAME_LENGTH)
        .map_or(prefix, |(index, _)| &prefix[..index]);
    format!("{}-{}-", cut.to_lowercase(), node_type.label())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kuberay_limits() {
        assert_eq!(
            pod_generate_name("raycluster-sample", NodeType::Head),
            "raycluster-sample-head-"
        );
        assert_eq!(
            pod_generate_name("Raycluster-Sample-small-group", NodeType::Worker),
            "raycluster-sample-small-group-worker-"
        );
        let long = "a".repeat(60);
        assert_eq!(
            pod_generate_name(&long, NodeType::Head),
            format!("{}-head-", "a".repeat(50))
        );
    }
}
