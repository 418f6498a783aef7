//! The RayService's serve Service (`<name>-serve-svc` or `spec.serveService`): the stable
//! address of the applications, pointed at the ready pods of whichever cluster serves.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use wasmray_crds::RayService;
use wasmray_crds::constants::{
    RAY_CLUSTER_LABEL_KEY, RAY_CLUSTER_SERVING_SERVICE_LABEL_KEY,
    RAY_ORIGINATED_FROM_CR_NAME_LABEL_KEY, RAY_ORIGINATED_FROM_CRD_LABEL_KEY, SERVING_PORT_NAME,
};
use wasmray_plugin_sdk::{ObservedService, lookup};

/// The serve Service selecting `cluster`'s serving pods, or why there can be none.
pub fn serve_service(service: &RayService, cluster: &str) -> Result<Service, String> {
    let name = service.metadata.name.clone().unwrap_or_default();
    let custom = service.spec.serve_service.clone().unwrap_or_default();
    let custom_spec = custom.spec.clone().unwrap_or_default();
    let port = service
        .spec
        .ray_cluster_config
        .head_container_port(SERVING_PORT_NAME)
        .map(|port| ServicePort {
            name: Some(SERVING_PORT_NAME.to_owned()),
            port,
            target_port: Some(IntOrString::Int(port)),
            ..ServicePort::default()
        })
        .or_else(|| {
            custom_spec
                .ports
                .iter()
                .flatten()
                .find(|port| port.name.as_deref() == Some(SERVING_PORT_NAME))
                .cloned()
        })
        .ok_or_else(|| {
            format!(
                "the serve Service needs a port named {SERVING_PORT_NAME:?}: neither spec.rayClusterConfig.headGroupSpec.template.spec.containers[0].ports nor spec.serveService.spec.ports has one"
            )
        })?;
    let mut labels = custom.metadata.labels.clone().unwrap_or_default();
    labels.insert(
        RAY_ORIGINATED_FROM_CR_NAME_LABEL_KEY.to_owned(),
        name.clone(),
    );
    labels.insert(
        RAY_ORIGINATED_FROM_CRD_LABEL_KEY.to_owned(),
        "RayService".to_owned(),
    );
    labels.insert(
        RAY_CLUSTER_SERVING_SERVICE_LABEL_KEY.to_owned(),
        format!("{name}-serve"),
    );
    let service_type = custom_spec
        .type_
        .clone()
        .or_else(|| {
            service
                .spec
                .ray_cluster_config
                .head_group_spec
                .service_type
                .clone()
        })
        .filter(|kind| !kind.is_empty());
    Ok(Service {
        metadata: ObjectMeta {
            name: Some(service.serve_service_name()),
            namespace: service.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: custom.metadata.annotations.clone(),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector(cluster)),
            ports: Some(vec![port]),
            type_: service_type,
            ..custom_spec
        }),
        status: None,
    })
}

/// Pods of `cluster` whose proxy serves: workers from the start, the head once its proxy
/// is healthy (its `ray.io/serve` label).
fn selector(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (RAY_CLUSTER_LABEL_KEY.to_owned(), cluster.to_owned()),
        (
            RAY_CLUSTER_SERVING_SERVICE_LABEL_KEY.to_owned(),
            "true".to_owned(),
        ),
    ])
}

/// The cluster an observed Service selects, if any.
pub fn selected_cluster(service: &ObservedService) -> Option<&str> {
    lookup(&service.selector, RAY_CLUSTER_LABEL_KEY)
}
