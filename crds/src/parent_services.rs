//! The head Service a RayJob or RayService keeps under its own name, `<parent>-head-svc`: a
//! stable name for the dashboard of whichever cluster serves it now. It publishes the ports
//! the cluster's own head Service publishes (the cluster's `status.endpoints`) and selects
//! that cluster's head pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::RayCluster;
use crate::constants::{
    HEAD_NODE_TYPE, RAY_CLUSTER_LABEL_KEY, RAY_ID_LABEL_KEY, RAY_NODE_TYPE_LABEL_KEY,
    RAY_ORIGINATED_FROM_CR_NAME_LABEL_KEY, RAY_ORIGINATED_FROM_CRD_LABEL_KEY,
};

/// `<parent>-head-svc`.
pub fn head_service_name(parent: &str) -> String {
    format!("{parent}-head-svc")
}

/// The Service, or None while the cluster reports no endpoints yet.
/// `cluster_ip_service` is `ENABLE_RAY_HEAD_CLUSTER_IP_SERVICE`: like the cluster's own
/// head Service, a ClusterIP Service is headless unless that is set.
pub fn head_service(
    origin_crd: &str,
    parent: &str,
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
            parent.to_owned(),
        ),
        (
            RAY_ORIGINATED_FROM_CRD_LABEL_KEY.to_owned(),
            origin_crd.to_owned(),
        ),
        (
            RAY_NODE_TYPE_LABEL_KEY.to_owned(),
            HEAD_NODE_TYPE.to_owned(),
        ),
        (
            RAY_ID_LABEL_KEY.to_owned(),
            format!("{parent}-{HEAD_NODE_TYPE}"),
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
            name: Some(head_service_name(parent)),
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
