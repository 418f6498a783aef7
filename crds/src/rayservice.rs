//! RayService (`ray.io/v1`): a Ray Serve application on a RayCluster, upgraded without downtime.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use crate::raycluster::{RayClusterSpec, RayClusterStatus};

/// Desired state of a Ray Serve deployment.
#[skip_serializing_none]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ray.io",
    version = "v1",
    kind = "RayService",
    plural = "rayservices",
    namespaced,
    status = "RayServiceStatuses",
    category = "all",
    printcolumn = r#"{"name":"service status","type":"string","jsonPath":".status.serviceStatus"}"#,
    printcolumn = r#"{"name":"num serve endpoints","type":"string","jsonPath":".status.numServeEndpoints"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RayServiceSpec {
    /// Seconds before an old RayCluster is deleted after a switch-over (default 60).
    #[serde(default)]
    #[schemars(extend("minimum" = 0))]
    pub ray_cluster_deletion_delay_seconds: Option<i32>,
    /// Deprecated, ignored.
    #[serde(default)]
    pub service_unhealthy_second_threshold: Option<i32>,
    /// Deprecated, ignored.
    #[serde(default)]
    pub deployment_unhealthy_second_threshold: Option<i32>,
    /// Custom serve Service (name, labels, annotations and type are kept).
    #[serde(default, serialize_with = "crate::embedded::serialize_service")]
    pub serve_service: Option<Service>,
    /// How a changed cluster spec is rolled out.
    #[serde(default)]
    pub upgrade_strategy: Option<RayServiceUpgradeStrategy>,
    /// Ray Serve multi-application config, as YAML.
    #[serde(default, rename = "serveConfigV2")]
    pub serve_config_v2: Option<String>,
    /// Template of the RayClusters serving the applications.
    pub ray_cluster_config: RayClusterSpec,
    /// Keeps the head Pod out of the serve Service.
    #[serde(default)]
    pub exclude_head_pod_from_serve_svc: Option<bool>,
    /// Which controller reconciles this RayService; immutable (KubeRay 1.6).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-validations" = crate::cel::managed_by_rules()))]
    pub managed_by: Option<String>,
    /// Deletes every cluster and Service of the RayService while true (KubeRay 1.7).
    #[serde(default)]
    pub suspend: Option<bool>,
}

impl RayService {
    /// The serve Service's name: `spec.serveService.metadata.name`, else `<name>-serve-svc`.
    pub fn serve_service_name(&self) -> String {
        self.spec
            .serve_service
            .as_ref()
            .and_then(|custom| custom.metadata.name.clone())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| {
                format!(
                    "{}-serve-svc",
                    self.metadata.name.as_deref().unwrap_or_default()
                )
            })
    }
}

impl RayServiceSpec {
    pub fn ray_cluster_deletion_delay_seconds(&self) -> i32 {
        self.ray_cluster_deletion_delay_seconds.unwrap_or(60)
    }

    pub fn is_suspended(&self) -> bool {
        self.suspend.unwrap_or(false)
    }

    pub fn upgrade_type(&self) -> RayServiceUpgradeType {
        self.upgrade_strategy
            .as_ref()
            .and_then(|strategy| strategy.type_)
            .unwrap_or(RayServiceUpgradeType::NewCluster)
    }
}

#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RayServiceUpgradeStrategy {
    #[serde(default, rename = "type")]
    pub type_: Option<RayServiceUpgradeType>,
    /// Options of NewClusterWithIncrementalUpgrade.
    #[serde(default)]
    pub cluster_upgrade_options: Option<ClusterUpgradeOptions>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RayServiceUpgradeType {
    /// Start a new cluster, switch traffic when it is ready, delete the old one.
    NewCluster,
    /// Shift traffic step by step through the Gateway API (feature gate).
    NewClusterWithIncrementalUpgrade,
    /// Never upgrade.
    None,
}

/// Pace of an incremental upgrade.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterUpgradeOptions {
    /// Capacity added to the new cluster per step, in percent.
    #[serde(default)]
    #[schemars(extend("default" = 100))]
    pub max_surge_percent: Option<i32>,
    /// Traffic moved per step, in percent.
    pub step_size_percent: i32,
    /// Seconds between steps.
    pub interval_seconds: i32,
    /// GatewayClass of the Gateway that splits traffic.
    pub gateway_class_name: String,
}

/// Observed state of a RayService.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RayServiceStatuses {
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
    #[serde(default)]
    pub last_update_time: Option<Time>,
    /// Deprecated: `Running` when the Ready condition is True.
    #[serde(default)]
    pub service_status: Option<String>,
    #[serde(default)]
    pub active_service_status: Option<RayServiceStatus>,
    #[serde(default)]
    pub pending_service_status: Option<RayServiceStatus>,
    #[serde(default)]
    pub num_serve_endpoints: Option<i32>,
    #[serde(default)]
    pub observed_generation: Option<i64>,
}

/// State of the Serve applications on one cluster (active or pending).
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RayServiceStatus {
    #[serde(default)]
    pub application_statuses: Option<BTreeMap<String, AppStatus>>,
    #[serde(default)]
    pub target_capacity: Option<i32>,
    #[serde(default)]
    pub traffic_routed_percent: Option<i32>,
    #[serde(default)]
    pub last_traffic_migrated_time: Option<Time>,
    #[serde(default)]
    pub ray_cluster_name: Option<String>,
    #[serde(default)]
    pub ray_cluster_status: Option<RayClusterStatus>,
}

/// One Serve application, as Ray Serve reports it.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppStatus {
    #[serde(default)]
    pub serve_deployment_statuses: Option<BTreeMap<String, ServeDeploymentStatus>>,
    /// NOT_STARTED, DEPLOYING, RUNNING, DEPLOY_FAILED, DELETING or UNHEALTHY.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// One Serve deployment of an application.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServeDeploymentStatus {
    /// UPDATING, HEALTHY or UNHEALTHY.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

// Serve status strings, as Ray Serve reports them.
pub const APPLICATION_STATUS_NOT_STARTED: &str = "NOT_STARTED";
pub const APPLICATION_STATUS_DEPLOYING: &str = "DEPLOYING";
pub const APPLICATION_STATUS_RUNNING: &str = "RUNNING";
pub const APPLICATION_STATUS_DEPLOY_FAILED: &str = "DEPLOY_FAILED";
pub const APPLICATION_STATUS_DELETING: &str = "DELETING";
pub const APPLICATION_STATUS_UNHEALTHY: &str = "UNHEALTHY";
pub const DEPLOYMENT_STATUS_UPDATING: &str = "UPDATING";
pub const DEPLOYMENT_STATUS_HEALTHY: &str = "HEALTHY";
pub const DEPLOYMENT_STATUS_UNHEALTHY: &str = "UNHEALTHY";
/// `status.serviceStatus` while the Ready condition is True.
pub const SERVICE_STATUS_RUNNING: &str = "Running";
