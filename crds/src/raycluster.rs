//! RayCluster (`ray.io/v1`): a Ray head group and any number of worker groups.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EnvFromSource, EnvVar, EnvVarSource, PodTemplateSpec, ResourceRequirements, SecurityContext,
    Service, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use crate::cel;

/// Desired state of a Ray cluster.
#[skip_serializing_none]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ray.io",
    version = "v1",
    kind = "RayCluster",
    plural = "rayclusters",
    namespaced,
    status = "RayClusterStatus",
    category = "all",
    printcolumn = r#"{"name":"desired workers","type":"integer","jsonPath":".status.desiredWorkerReplicas"}"#,
    printcolumn = r#"{"name":"available workers","type":"integer","jsonPath":".status.availableWorkerReplicas"}"#,
    printcolumn = r#"{"name":"cpus","type":"string","jsonPath":".status.desiredCPU"}"#,
    printcolumn = r#"{"name":"memory","type":"string","jsonPath":".status.desiredMemory"}"#,
    printcolumn = r#"{"name":"gpus","type":"string","jsonPath":".status.desiredGPU"}"#,
    printcolumn = r#"{"name":"tpus","type":"string","priority":1,"jsonPath":".status.desiredTPU"}"#,
    printcolumn = r#"{"name":"status","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"head pod IP","type":"string","priority":1,"jsonPath":".status.head.podIP"}"#,
    printcolumn = r#"{"name":"head service IP","type":"string","priority":1,"jsonPath":".status.head.serviceIP"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RayClusterSpec {
    /// Ray token authentication (`mode: token` needs rayVersion >= 2.52.0).
    #[serde(default)]
    pub auth_options: Option<AuthOptions>,
    /// Deletes every Pod of the cluster while true.
    #[serde(default)]
    pub suspend: Option<bool>,
    /// Which controller reconciles this cluster; immutable. Any value other than
    /// `ray.io/kuberay-operator` makes the operator leave the object alone.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-validations" = cel::managed_by_rules()))]
    pub managed_by: Option<String>,
    /// Options of the in-tree autoscaler sidecar.
    #[serde(default)]
    pub autoscaler_options: Option<AutoscalerOptions>,
    /// Annotations added to the head Service.
    #[serde(default)]
    pub head_service_annotations: Option<BTreeMap<String, String>>,
    /// Runs the Ray autoscaler as a sidecar of the head Pod.
    #[serde(default)]
    pub enable_in_tree_autoscaling: Option<bool>,
    /// GCS fault tolerance backed by Redis.
    #[serde(default)]
    pub gcs_fault_tolerance_options: Option<GcsFaultToleranceOptions>,
    /// The head Pod and its Service.
    pub head_group_spec: HeadGroupSpec,
    /// Ray version of the images; used for version-dependent features.
    #[serde(default)]
    pub ray_version: Option<String>,
    /// Worker groups, in order.
    #[serde(default)]
    pub worker_group_specs: Option<Vec<WorkerGroupSpec>>,
}

/// Ray authentication options.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthOptions {
    #[serde(default)]
    pub mode: Option<AuthMode>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AuthMode {
    #[serde(rename = "disabled")]
    Disabled,
    #[serde(rename = "token")]
    Token,
}

/// GCS fault tolerance: the GCS keeps its state in Redis so it survives a head restart.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcsFaultToleranceOptions {
    #[serde(default)]
    pub redis_username: Option<RedisCredential>,
    #[serde(default)]
    pub redis_password: Option<RedisCredential>,
    #[serde(default)]
    pub external_storage_namespace: Option<String>,
    /// `host:port` or a `redis://` / `rediss://` URI.
    pub redis_address: String,
}

/// A literal value or a reference (Secret, ConfigMap...) as in a container env var.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisCredential {
    #[serde(default)]
    pub value_from: Option<EnvVarSource>,
    #[serde(default)]
    pub value: Option<String>,
}

/// The head group: exactly one head Pod.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeadGroupSpec {
    /// Pod template of the head; the Ray container is `containers[0]`.
    pub template: PodTemplateSpec,
    /// A complete head Service to use instead of the generated one.
    #[serde(default, serialize_with = "crate::embedded::serialize_service")]
    pub head_service: Option<Service>,
    /// Creates an Ingress for the dashboard.
    #[serde(default)]
    pub enable_ingress: Option<bool>,
    /// Ray logical resources of the head (overrides num-cpus/num-gpus/memory/resources).
    #[serde(default)]
    pub resources: Option<BTreeMap<String, String>>,
    /// Ray node labels (`ray start --labels`), also added to the Pod.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// Arguments of `ray start`, without the leading `--`.
    #[serde(default)]
    pub ray_start_params: Option<BTreeMap<String, String>>,
    /// Type of the head Service (ClusterIP, NodePort, LoadBalancer).
    #[serde(default)]
    pub service_type: Option<String>,
}

/// A group of identical worker Pods.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = cel::worker_group_rules()))]
pub struct WorkerGroupSpec {
    /// Deletes every Pod of the group while true (used by RayJob's DeleteWorkers policy).
    #[serde(default)]
    pub suspend: Option<bool>,
    /// Name of the group; unique within the cluster.
    pub group_name: String,
    /// Desired number of replicas; clamped to [minReplicas, maxReplicas].
    #[serde(default)]
    #[schemars(extend("default" = 0))]
    pub replicas: Option<i32>,
    #[serde(default)]
    #[schemars(extend("default" = 0))]
    pub min_replicas: Option<i32>,
    #[serde(default)]
    #[schemars(extend("default" = 2147483647))]
    pub max_replicas: Option<i32>,
    /// Idle time before the autoscaler (v2) removes a worker of this group.
    #[serde(default)]
    pub idle_timeout_seconds: Option<i32>,
    /// Ray logical resources of the group (overrides num-cpus/num-gpus/memory/resources).
    #[serde(default)]
    pub resources: Option<BTreeMap<String, String>>,
    /// Ray node labels (`ray start --labels`), also added to the Pods.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// Arguments of `ray start`, without the leading `--`.
    #[serde(default)]
    pub ray_start_params: Option<BTreeMap<String, String>>,
    /// Pod template of a worker; the Ray container is `containers[0]`.
    pub template: PodTemplateSpec,
    /// Pods the autoscaler asked to delete.
    #[serde(default)]
    pub scale_strategy: Option<ScaleStrategy>,
    /// Pods per replica (multi-host replicas, e.g. TPU slices).
    #[serde(default)]
    #[schemars(extend("default" = 1))]
    pub num_of_hosts: Option<i32>,
}

impl WorkerGroupSpec {
    pub fn min_replicas(&self) -> i32 {
        self.min_replicas.unwrap_or(0)
    }

    pub fn max_replicas(&self) -> i32 {
        self.max_replicas.unwrap_or(i32::MAX)
    }

    pub fn num_of_hosts(&self) -> i32 {
        self.num_of_hosts.unwrap_or(1)
    }

    pub fn is_suspended(&self) -> bool {
        self.suspend.unwrap_or(false)
    }

    /// Replicas the group should run, as KubeRay computes them: `replicas` (or `minReplicas`
    /// when unset) clamped to [minReplicas, maxReplicas], where maxReplicas wins over a larger
    /// minReplicas; 0 for a suspended group.
    pub fn desired_replicas(&self) -> i32 {
        if self.is_suspended() {
            return 0;
        }
        let max = self.max_replicas();
        let min = self.min_replicas().min(max);
        self.replicas.unwrap_or(min).clamp(min, max)
    }
}

/// Scale-down requests of the autoscaler.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleStrategy {
    /// Names of the worker Pods to delete.
    #[serde(default)]
    pub workers_to_delete: Option<Vec<String>>,
}

/// Options of the Ray autoscaler sidecar.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerOptions {
    /// Resources of the autoscaler container (default 500m CPU, 512Mi).
    #[serde(default)]
    pub resources: Option<ResourceRequirements>,
    /// Image of the autoscaler container (default: the head's Ray image).
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub image_pull_policy: Option<String>,
    #[serde(default)]
    pub security_context: Option<SecurityContext>,
    /// Seconds a node must be idle before the autoscaler removes it (Ray default 60).
    #[serde(default)]
    pub idle_timeout_seconds: Option<i32>,
    #[serde(default)]
    pub upscaling_mode: Option<UpscalingMode>,
    #[serde(default)]
    pub version: Option<AutoscalerVersion>,
    #[serde(default)]
    pub env: Option<Vec<EnvVar>>,
    #[serde(default)]
    pub env_from: Option<Vec<EnvFromSource>>,
    #[serde(default)]
    pub volume_mounts: Option<Vec<VolumeMount>>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum UpscalingMode {
    Default,
    Aggressive,
    Conservative,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AutoscalerVersion {
    #[serde(rename = "v1")]
    V1,
    #[serde(rename = "v2")]
    V2,
}

impl RayClusterSpec {
    pub fn worker_groups(&self) -> &[WorkerGroupSpec] {
        self.worker_group_specs.as_deref().unwrap_or_default()
    }

    pub fn autoscaling_enabled(&self) -> bool {
        self.enable_in_tree_autoscaling.unwrap_or(false)
    }

    pub fn is_suspended(&self) -> bool {
        self.suspend.unwrap_or(false)
    }

    /// The head's Ray container's (`containers[0]`) port named `name`.
    pub fn head_container_port(&self, name: &str) -> Option<i32> {
        self.head_group_spec
            .template
            .spec
            .as_ref()?
            .containers
            .first()?
            .ports
            .iter()
            .flatten()
            .find(|port| port.name.as_deref() == Some(name))
            .map(|port| port.container_port)
    }

    /// Ray token authentication: `authOptions` given with a mode other than `disabled`.
    pub fn token_auth_enabled(&self) -> bool {
        self.auth_options
            .as_ref()
            .is_some_and(|auth| auth.mode != Some(AuthMode::Disabled))
    }
}

impl RayCluster {
    /// Whether the cluster reports its head pod ready (`HeadPodReady=True`).
    pub fn head_pod_ready(&self) -> bool {
        self.status
            .as_ref()
            .and_then(|status| status.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|condition| {
                condition.type_ == crate::constants::HEAD_POD_READY && condition.status == "True"
            })
    }
}

/// Observed state of a Ray cluster.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RayClusterStatus {
    /// Deprecated summary state: `ready` or `suspended`.
    #[serde(default)]
    pub state: Option<ClusterState>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default, rename = "desiredCPU")]
    pub desired_cpu: Option<Quantity>,
    #[serde(default)]
    pub desired_memory: Option<Quantity>,
    #[serde(default, rename = "desiredGPU")]
    pub desired_gpu: Option<Quantity>,
    #[serde(default, rename = "desiredTPU")]
    pub desired_tpu: Option<Quantity>,
    #[serde(default)]
    pub last_update_time: Option<Time>,
    /// When the cluster last entered each state.
    #[serde(default)]
    pub state_transition_times: Option<BTreeMap<String, Time>>,
    /// Head Service port name to port.
    #[serde(default)]
    pub endpoints: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub head: Option<HeadInfo>,
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
    #[serde(default)]
    pub ready_worker_replicas: Option<i32>,
    #[serde(default)]
    pub available_worker_replicas: Option<i32>,
    #[serde(default)]
    pub desired_worker_replicas: Option<i32>,
    #[serde(default)]
    pub min_worker_replicas: Option<i32>,
    #[serde(default)]
    pub max_worker_replicas: Option<i32>,
    #[serde(default)]
    pub observed_generation: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ClusterState {
    #[serde(rename = "ready")]
    Ready,
    #[serde(rename = "suspended")]
    Suspended,
    /// Declared by KubeRay, never set.
    #[serde(rename = "failed")]
    Failed,
}

/// Where the head runs.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeadInfo {
    #[serde(default, rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(default, rename = "serviceIP")]
    pub service_ip: Option<String>,
    #[serde(default)]
    pub pod_name: Option<String>,
    #[serde(default)]
    pub service_name: Option<String>,
}
