//! The RayJob head Service `<rayjob>-head-svc`: a stable name for the dashboard of whichever
//! cluster the current attempt runs on. It publishes the ports the cluster's own head
//! Service publishes (the cluster's `status.endpoints`) and selects that cluster's head pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use wasmray_crds::RayCluster;
use wasmray_crds::constants::{
    HEAD_NODE_TYPE, RAY_CLUSTER_LABEL_KEY, RAY_ID_LABEL_KEY, RAY_NODE_TYPE_LABEL_KEY,
    RAY_ORIGINATED_FROM_CR_NAME_LABEL_KEY, RAY_ORIGINATED_FROM_CRD_LABEL_KEY,
};
use wasmray_plugin_sdk::{ObservedService, lookup};

/// `<rayjob>-head-svc`.
pub fn head_service_name(rayjob: &str) -> String {
    format!("{rayjob}-head-svc")
}

/// The Service, or None while the cluster reports no endpoints yet.
/// `cluster_ip_service` is `ENABLE_RAY_HEAD_CLUSTER_IP_SERVICE`: like the cluster's own
/// head Service, a ClusterIP Service is headless unless that is set.
pub fn head_service(
    rayjob: &str,
    namespace: Option<&str>,
    cluster: &RayCluster,
    cluster_name: &str,
    cluster_ip_service: bool,
) -> Option<Service> {
    let ports: Vec<ServicePort> = cluster
        .status
        .as_ref()
        .and_then(|status| status.endpoints.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|(name, port)| {
            Some(ServicePort {
                name: Some(name.clone()),
                port: port.trim().parse().ok()?,
                app_protocol: Some("tcp".to_owned()),
                ..ServicePort::default()
            })
        })
        .collect();
    if ports.is_empty() {
        return None;
    }
    let head = &cluster.spec.head_group_spec;
    let service_type = head
        .service_type
        .clone()
        .or_else(|| {
            head.head_service
                .as_ref()
                .and_then(|service| service.spec.as_ref())
                .and_then(|spec| spec.type_.clone())
        })
        .filter(|kind| !kind.is_empty());
    let headless = service_type
        .as_deref()
        .is_none_or(|kind| kind == "ClusterIP")
        && !cluster_ip_service;
    let labels = BTreeMap::from([
        (
            RAY_ORIGINATED_FROM_CR_NAME_LABEL_KEY.to_owned(),
            rayjob.to_owned(),
        ),
        (
            RAY_ORIGINATED_FROM_CRD_LABEL_KEY.to_owned(),
            "RayJob".to_owned(),
        ),
        (
            RAY_NODE_TYPE_LABEL_KEY.to_owned(),
            HEAD_NODE_TYPE.to_owned(),
        ),
        (
            RAY_ID_LABEL_KEY.to_owned(),
            format!("{rayjob}-{HEAD_NODE_TYPE}"),
        ),
    ]);
    let selector = BTreeMap::from([
        (RAY_CLUSTER_LABEL_KEY.to_owned(), cluster_name.to_owned()),
        (
            RAY_NODE_TYPE_LABEL_KEY.to_owned(),
            HEAD_NODE_TYPE.to_owned(),
        ),
    ]);
    Some(Service {
        metadata: ObjectMeta {
            name: Some(head_service_name(rayjob)),
            namespace: namespace.map(str::to_owned),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(ports),
            type_: service_type,
            cluster_ip: headless.then(|| "None".to_owned()),
            publish_not_ready_addresses: headless.then_some(true),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// KubeRay writes the Service only when it is missing or selects another cluster (a
/// retry's new cluster); otherwise it is left alone.
pub fn needs_write(existing: Option<&ObservedService>, cluster_name: &str) -> bool {
    existing.is_none_or(|service| {
        lookup(&service.selector, RAY_CLUSTER_LABEL_KEY) != Some(cluster_name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::cluster_from_yaml;

    #[test]
    fn service_copies_the_clusters_endpoints_and_selects_its_head() {
        let mut cluster = cluster_from_yaml("c1", None);
        assert!(head_service("job", Some("ns"), &cluster, "c1", false).is_none());
        cluster.status = serde_json::from_value(serde_json::json!({
            "endpoints": {"dashboard": "8265", "client": "10001", "gcs-server": "6379"}
        }))
        .unwrap();
        let service = head_service("job", Some("ns"), &cluster, "c1", false).unwrap();
        assert_eq!(service.metadata.name.as_deref(), Some("job-head-svc"));
        let labels = service.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["ray.io/originated-from-cr-name"], "job");
        assert_eq!(labels["ray.io/originated-from-crd"], "RayJob");
        assert_eq!(labels["ray.io/node-type"], "head");
        assert_eq!(labels["ray.io/identifier"], "job-head");
        let spec = service.spec.unwrap();
        assert_eq!(spec.selector.as_ref().unwrap()["ray.io/cluster"], "c1");
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        let ports: Vec<(String, i32)> = spec
            .ports
            .unwrap()
            .into_iter()
            .map(|port| (port.name.unwrap(), port.port))
            .collect();
        assert_eq!(
            ports,
            [
                ("client".into(), 10001),
                ("dashboard".into(), 8265),
                ("gcs-server".into(), 6379)
            ]
        );
        let with_ip = head_service("job", Some("ns"), &cluster, "c1", true).unwrap();
        assert_eq!(with_ip.spec.unwrap().cluster_ip, None);
    }

    #[test]
    fn written_only_when_missing_or_pointing_elsewhere() {
        let observed = ObservedService {
            name: "job-head-svc".into(),
            uid: "u".into(),
            labels: vec![],
            annotations: vec![],
            creation_timestamp: None,
            deletion_timestamp: None,
            service_type: None,
            cluster_ip: Some("None".into()),
            selector: vec![("ray.io/cluster".into(), "c1".into())],
            ports: vec![],
        };
        assert!(needs_write(None, "c1"));
        assert!(!needs_write(Some(&observed), "c1"));
        assert!(needs_write(Some(&observed), "c2"));
    }
}
