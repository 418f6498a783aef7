//! Where a RayCluster's dashboard is: the head Service's DNS name and the head container's
//! `dashboard` port, as KubeRay computes it; the head pod's IP, for an operator that runs
//! outside the cluster's DNS but reaches its pod network (`--ray-head-address pod-ip`); or
//! (tests and demos only, behind an operator flag) the address a cluster annotation names.

use serde_json::Value;
use wasmray_crds::constants::{
    DASHBOARD_PORT_NAME, DEFAULT_DASHBOARD_PORT, DEFAULT_GCS_SERVER_PORT, GCS_SERVER_PORT_NAME,
};
use wasmray_crds::names::{auth_secret_name, check_name};

/// Cluster annotation naming the dashboard address to use instead of the head Service's,
/// e.g. `http://127.0.0.1:8265`. Honoured only when the host runs with
/// `--allow-dashboard-address-override`: otherwise anyone who may annotate a RayCluster
/// could make the operator call any address.
pub const DASHBOARD_ADDRESS_ANNOTATION: &str = "wasmray.io/dashboard-address";
/// Plugin setting (KubeRay's `CLUSTER_DOMAIN`) with the cluster's DNS domain.
pub const CLUSTER_DOMAIN_SETTING: &str = "cluster-domain";
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// Key of the token in the cluster's auth Secret (named after the cluster).
pub use wasmray_crds::constants::RAY_AUTH_TOKEN_SECRET_KEY as AUTH_TOKEN_KEY;

/// How the operator reaches a cluster's head (`--ray-head-address`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadAddress {
    /// The head Service's DNS name, as KubeRay does: the operator runs inside the cluster.
    #[default]
    Service,
    /// The head pod's IP (`status.head.podIP`): the operator reaches pod IPs but does not
    /// resolve the cluster's Service names, e.g. it runs beside the cluster on its pod network.
    PodIp,
}

/// How to reach one cluster's dashboard, before the token is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardTarget {
    /// `http://host:port`.
    pub base: String,
    /// The Secret holding the token (key [`AUTH_TOKEN_KEY`]) when the cluster uses token auth.
    pub token_secret: Option<String>,
    /// The cluster carries the override annotation but the host does not honour it.
    pub ignored_override: bool,
}

/// The dashboard of `cluster` (a RayCluster as JSON); an error says why there is none yet.
pub fn dashboard_target(
    cluster: &Value,
    cluster_domain: &str,
    head: HeadAddress,
    allow_override: bool,
) -> Result<DashboardTarget, String> {
    let token_secret = token_secret(cluster);
    let annotated = cluster["metadata"]["annotations"][DASHBOARD_ADDRESS_ANNOTATION]
        .as_str()
        .map(str::trim)
        .filter(|address| !address.is_empty());
    if let Some(address) = annotated
        && allow_override
    {
        return Ok(DashboardTarget {
            base: address.trim_end_matches('/').to_owned(),
            token_secret,
            ignored_override: false,
        });
    }
    let host = head_host(cluster, cluster_domain, head)?;
    Ok(DashboardTarget {
        base: format!(
            "http://{host}:{}",
            head_port(cluster, DASHBOARD_PORT_NAME, DEFAULT_DASHBOARD_PORT)
        ),
        token_secret,
        ignored_override: annotated.is_some(),
    })
}

/// How to reach one cluster's GCS (for autoscaling), before the token is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcsTarget {
    /// `host:port`.
    pub address: String,
    /// The Secret holding the token when the cluster uses token auth.
    pub token_secret: Option<String>,
}

/// The GCS of `cluster`: the head's `gcs-server` port (6379 by default) on the head
/// Service or the head pod's IP. The dashboard override does not apply: it names a
/// dashboard, not a GCS.
pub fn gcs_target(
    cluster: &Value,
    cluster_domain: &str,
    head: HeadAddress,
) -> Result<GcsTarget, String> {
    let host = head_host(cluster, cluster_domain, head)?;
    Ok(GcsTarget {
        address: format!(
            "{host}:{}",
            head_port(cluster, GCS_SERVER_PORT_NAME, DEFAULT_GCS_SERVER_PORT)
        ),
        token_secret: token_secret(cluster),
    })
}

/// The Secret with the cluster's token, when it uses token auth: as the RayCluster type
/// decides it, `authOptions` given with a mode other than `disabled` (see
/// `RayClusterSpec::token_auth_enabled`).
fn token_secret(cluster: &Value) -> Option<String> {
    let name = cluster["metadata"]["name"].as_str().unwrap_or_default();
    let auth = &cluster["spec"]["authOptions"];
    (auth.is_object() && auth["mode"].as_str() != Some("disabled")).then(|| auth_secret_name(name))
}

/// The head's host: its Service's DNS name or its pod IP.
fn head_host(cluster: &Value, cluster_domain: &str, head: HeadAddress) -> Result<String, String> {
    match head {
        HeadAddress::Service => Ok(head_service_host(cluster, cluster_domain)),
        HeadAddress::PodIp => {
            let name = cluster["metadata"]["name"].as_str().unwrap_or_default();
            cluster["status"]["head"]["podIP"]
                .as_str()
                .filter(|ip| !ip.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| format!("RayCluster {name} reports no head pod IP yet"))
        }
    }
}

/// `<head service>.<namespace>.svc.<domain>:<dashboard port>`: KubeRay's `dashboardURL`.
pub fn dashboard_host_port(cluster: &Value, cluster_domain: &str) -> String {
    format!(
        "{}:{}",
        head_service_host(cluster, cluster_domain),
        head_port(cluster, DASHBOARD_PORT_NAME, DEFAULT_DASHBOARD_PORT)
    )
}

/// `<head service>.<namespace>.svc.<domain>`.
fn head_service_host(cluster: &Value, cluster_domain: &str) -> String {
    let name = cluster["metadata"]["name"].as_str().unwrap_or_default();
    let namespace = cluster["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default();
    let service = cluster["status"]["head"]["serviceName"]
        .as_str()
        .filter(|service| !service.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| check_name(&format!("{name}-head-svc")));
    format!("{service}.{namespace}.svc.{cluster_domain}")
}

/// The head container's port named `port_name`, else `default`.
fn head_port(cluster: &Value, port_name: &str, default: i32) -> i64 {
    cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|containers| containers.first())
        .and_then(|head| head["ports"].as_array())
        .into_iter()
        .flatten()
        .find(|port| port["name"].as_str() == Some(port_name))
        .and_then(|port| port["containerPort"].as_i64())
        .unwrap_or(i64::from(default))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster(extra_meta: Value, spec: Value, status: Value) -> Value {
        let mut metadata = json!({"name": "rc", "namespace": "team"});
        if let (Some(meta), Some(extra)) = (metadata.as_object_mut(), extra_meta.as_object()) {
            meta.extend(extra.clone());
        }
        json!({"metadata": metadata, "spec": spec, "status": status})
    }

    #[test]
    fn the_head_service_and_dashboard_port_by_default() {
        let plain = cluster(json!({}), json!({}), json!({}));
        let target =
            dashboard_target(&plain, "cluster.local", HeadAddress::Service, false).expect("target");
        assert_eq!(
            target.base,
            "http://rc-head-svc.team.svc.cluster.local:8265"
        );
        assert_eq!(target.token_secret, None);
        assert!(!target.ignored_override);

        let custom = cluster(
            json!({}),
            json!({"headGroupSpec": {"template": {"spec": {"containers": [{"name": "ray-head",
                "ports": [{"name": "gcs", "containerPort": 6379}, {"name": "dashboard", "containerPort": 9999}]}]}}},
                "authOptions": {"mode": "token"}}),
            json!({"head": {"serviceName": "custom-svc"}}),
        );
        let target =
            dashboard_target(&custom, "example.org", HeadAddress::Service, true).expect("target");
        assert_eq!(target.base, "http://custom-svc.team.svc.example.org:9999");
        assert_eq!(target.token_secret.as_deref(), Some("rc"));
    }

    #[test]
    fn the_override_annotation_needs_the_operator_flag() {
        let annotated = cluster(
            json!({"annotations": {DASHBOARD_ADDRESS_ANNOTATION: "http://127.0.0.1:8265/"}}),
            json!({}),
            json!({}),
        );
        let honoured = dashboard_target(&annotated, "cluster.local", HeadAddress::PodIp, true)
            .expect("target");
        assert_eq!(honoured.base, "http://127.0.0.1:8265");
        assert!(!honoured.ignored_override);
        let ignored = dashboard_target(&annotated, "cluster.local", HeadAddress::Service, false)
            .expect("target");
        assert_eq!(
            ignored.base,
            "http://rc-head-svc.team.svc.cluster.local:8265"
        );
        assert!(ignored.ignored_override);
    }

    #[test]
    fn pod_ip_mode_uses_the_head_pod_ip_once_the_cluster_reports_it() {
        let spec = json!({"headGroupSpec": {"template": {"spec": {"containers": [{"name": "ray-head",
            "ports": [{"name": "dashboard", "containerPort": 9999}]}]}}}});
        let pending = cluster(json!({}), spec.clone(), json!({"head": {"podIP": ""}}));
        let error = dashboard_target(&pending, "cluster.local", HeadAddress::PodIp, false)
            .expect_err("no IP yet");
        assert_eq!(error, "RayCluster rc reports no head pod IP yet");
        let running = cluster(json!({}), spec, json!({"head": {"podIP": "10.1.2.3"}}));
        let target =
            dashboard_target(&running, "cluster.local", HeadAddress::PodIp, false).expect("target");
        assert_eq!(target.base, "http://10.1.2.3:9999");
    }
}
