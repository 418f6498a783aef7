//! RayService (`ray.io/v1`): a Ray Serve application on a RayCluster, upgraded without downtime.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::raycluster::{RayClusterSpec, RayClusterStatus};

/// Desired state of a Ray Serve deployment.
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 0))]
    pub ray_cluster_deletion_delay_seconds: Option<i32>,
    /// Deprecated, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_unhealthy_second_threshold: Option<i32>,
    /// Deprecated, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_unhealthy_second_threshold: Option<i32>,
    /// Custom serve Service (name, labels, annotations and type are kept).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::embedded::serialize_service"
    )]
    pub serve_service: Option<Service>,
    /// How a changed cluster spec is rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_strategy: Option<RayServiceUpgradeStrategy>,
    /// Ray Serve multi-application config, as YAML.
    #[serde(
        default,
        rename = "serveConfigV2",
        skip_serializing_if = "Option::is_none"
    )]
    pub serve_config_v2: Option<String>,
    /// Template of the RayClusters serving the applications.
    pub ray_cluster_config: RayClusterSpec,
    /// Keeps the head Pod out of the serve Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_head_pod_from_serve_svc: Option<bool>,
}

impl RayServiceSpec {
    pub fn ray_cluster_deletion_delay_seconds(&self) -> i32 {
        self.ray_cluster_deletion_delay_seconds.unwrap_or(60)
    }

    pub fn upgrade_type(&self) -> RayServiceUpgradeType {
        self.upgrade_strategy
            .as_ref()
            .and_then(|strategy| strategy.type_)
            .unwrap_or(RayServiceUpgradeType::NewCluster)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RayServiceUpgradeStrategy {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<RayServiceUpgradeType>,
    /// Options of NewClusterWithIncrementalUpgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterUpgradeOptions {
    /// Capacity added to the new cluster per step, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RayServiceStatuses {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    /// Deprecated: `Running` when the Ready condition is True.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_service_status: Option<RayServiceStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_service_status: Option<RayServiceStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_serve_endpoints: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// State of the Serve applications on one cluster (active or pending).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RayServiceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_statuses: Option<BTreeMap<String, AppStatus>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_capacity: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_routed_percent: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_traffic_migrated_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ray_cluster_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ray_cluster_status: Option<RayClusterStatus>,
}

/// One Serve application, as Ray Serve reports it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve_deployment_statuses: Option<BTreeMap<String, ServeDeploymentStatus>>,
    /// NOT_STARTED, DEPLOYING, RUNNING, DEPLOY_FAILED, DELETING or UNHEALTHY.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One Serve deployment of an application.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServeDeploymentStatus {
    /// UPDATING, HEALTHY or UNHEALTHY.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
