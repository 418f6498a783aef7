//! The dashboard Ingress of `headGroupSpec.enableIngress`.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use wasmray_crds::constants::{
    APPLICATION_NAME, COMPONENT_NAME, DASHBOARD_PORT_NAME, DEFAULT_DASHBOARD_PORT, HEAD_NODE_TYPE,
    INGRESS_CLASS_ANNOTATION_KEY, KUBERNETES_APPLICATION_NAME_LABEL_KEY,
    KUBERNETES_CREATED_BY_LABEL_KEY, RAY_CLUSTER_LABEL_KEY, RAY_ID_LABEL_KEY,
};

use crate::cluster::{ClusterContext, GroupView, check_label, check_name};

pub fn ingress_enabled(ctx: &ClusterContext) -> bool {
    ctx.cluster.spec.head_group_spec.enable_ingress == Some(true)
}

pub fn ingress_name(ctx: &ClusterContext) -> String {
    check_name(&format!("{}-head-ingress", ctx.name))
}

/// `/<cluster>/(.*)` to the head Service's dashboard port; the cluster's annotations are
/// passed on (for the ingress controller), the class annotation becomes `ingressClassName`.
pub fn head_ingress(ctx: &ClusterContext) -> Ingress {
    let mut annotations = ctx.cluster.metadata.annotations.clone().unwrap_or_default();
    let class = annotations.remove(INGRESS_CLASS_ANNOTATION_KEY);
    let dashboard_port = GroupView::head(ctx.cluster)
        .ray_container()
        .and_then(|container| container.ports.as_ref())
        .into_iter()
        .flatten()
        .find(|port| port.name.as_deref() == Some(DASHBOARD_PORT_NAME))
        .map_or(DEFAULT_DASHBOARD_PORT, |port| port.container_port);
    let labels = BTreeMap::from([
        (RAY_CLUSTER_LABEL_KEY.to_owned(), ctx.name.to_owned()),
        (
            RAY_ID_LABEL_KEY.to_owned(),
            check_label(&format!("{}-{HEAD_NODE_TYPE}", ctx.name)),
        ),
        (
            KUBERNETES_APPLICATION_NAME_LABEL_KEY.to_owned(),
            APPLICATION_NAME.to_owned(),
        ),
        (
            KUBERNETES_CREATED_BY_LABEL_KEY.to_owned(),
            COMPONENT_NAME.to_owned(),
        ),
    ]);
    Ingress {
        metadata: ObjectMeta {
            name: Some(ingress_name(ctx)),
            namespace: Some(ctx.namespace.to_owned()),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(IngressSpec {
            ingress_class_name: class,
            rules: Some(vec![IngressRule {
                host: None,
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(format!("/{}/(.*)", ctx.name)),
                        path_type: "Exact".to_owned(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: ctx.head_service_name.clone(),
                                port: Some(ServiceBackendPort {
                                    name: None,
                                    number: Some(dashboard_port),
                                }),
                            }),
                            resource: None,
                        },
                    }],
                }),
            }]),
            ..IngressSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use crate::test_support::cluster_from_yaml;

    #[test]
    fn dashboard_ingress() {
        let cluster = cluster_from_yaml(
            r#"
metadata: {name: rc, namespace: ns, annotations: {kubernetes.io/ingress.class: nginx, nginx.ingress.kubernetes.io/rewrite-target: /$1}}
spec:
  headGroupSpec:
    enableIngress: true
    template: {spec: {containers: [{name: h, image: i, ports: [{name: dashboard, containerPort: 9000}]}]}}
"#,
        );
        let settings = Settings::default();
        let ctx = ClusterContext::new(&cluster, &settings);
        assert!(ingress_enabled(&ctx));
        let ingress = head_ingress(&ctx);
        assert_eq!(ingress.metadata.name.as_deref(), Some("rc-head-ingress"));
        let annotations = ingress.metadata.annotations.as_ref().unwrap();
        assert!(!annotations.contains_key(INGRESS_CLASS_ANNOTATION_KEY));
        assert_eq!(
            annotations["nginx.ingress.kubernetes.io/rewrite-target"],
            "/$1"
        );
        let spec = ingress.spec.as_ref().unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        let path = &spec.rules.as_ref().unwrap()[0].http.as_ref().unwrap().paths[0];
        assert_eq!(path.path.as_deref(), Some("/rc/(.*)"));
        assert_eq!(path.path_type, "Exact");
        let backend = path.backend.service.as_ref().unwrap();
        assert_eq!(backend.name, "rc-head-svc");
        assert_eq!(backend.port.as_ref().unwrap().number, Some(9000));
    }
}
