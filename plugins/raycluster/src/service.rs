//! Services of a RayCluster: the head Service, the serve Service (on annotation) and the
//! headless worker Service of multi-host groups.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use wasmray_crds::constants::*;

use crate::cluster::{ClusterContext, GroupView, check_label, check_name};

/// A Service that cannot be built from the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceError {
    /// The head Service would have no port.
    NoHeadPorts,
    /// The serve Service needs a head port named `serve`.
    NoServePort,
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceError::NoHeadPorts => f.write_str(
                "the head Service has no ports: spec.headGroupSpec.template.spec.containers[0].ports and spec.headGroupSpec.headService.spec.ports are both empty",
            ),
            ServiceError::NoServePort => write!(
                f,
                "annotation {ENABLE_SERVE_SERVICE_ANNOTATION_KEY} asks for a serve Service but the head container has no port named {SERVING_PORT_NAME:?}"
            ),
        }
    }
}

impl std::error::Error for ServiceError {}

/// The labels (and selector) that identify the head Service and pod.
pub fn head_service_labels(ctx: &ClusterContext) -> BTreeMap<String, String> {
    let app_name = GroupView::head(ctx.cluster)
        .template
        .metadata
        .as_ref()
        .and_then(|meta| meta.labels.as_ref())
        .and_then(|labels| labels.get(KUBERNETES_APPLICATION_NAME_LABEL_KEY))
        .map_or(APPLICATION_NAME, String::as_str);
    BTreeMap::from([
        (RAY_CLUSTER_LABEL_KEY.to_owned(), ctx.name.to_owned()),
        (
            RAY_NODE_TYPE_LABEL_KEY.to_owned(),
            HEAD_NODE_TYPE.to_owned(),
        ),
        (
            RAY_ID_LABEL_KEY.to_owned(),
            check_label(&format!("{}-{HEAD_NODE_TYPE}", ctx.name)),
        ),
        (
            KUBERNETES_APPLICATION_NAME_LABEL_KEY.to_owned(),
            app_name.to_owned(),
        ),
        (
            KUBERNETES_CREATED_BY_LABEL_KEY.to_owned(),
            COMPONENT_NAME.to_owned(),
        ),
    ])
}

/// The head Ray container's ports by name, or KubeRay's defaults when it declares none;
/// `metrics` is always there.
fn head_ports(ctx: &ClusterContext) -> BTreeMap<String, i32> {
    let declared = GroupView::head(ctx.cluster)
        .ray_container()
        .and_then(|container| container.ports.as_ref())
        .filter(|ports| !ports.is_empty());
    let mut ports: BTreeMap<String, i32> = match declared {
        Some(ports) => ports
            .iter()
            .map(|port| {
                let name = port
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("{}-port", port.container_port));
                (name, port.container_port)
            })
            .collect(),
        None => [
            (CLIENT_PORT_NAME, DEFAULT_CLIENT_PORT),
            (GCS_SERVER_PORT_NAME, DEFAULT_GCS_SERVER_PORT),
            (DASHBOARD_PORT_NAME, DEFAULT_DASHBOARD_PORT),
            (METRICS_PORT_NAME, DEFAULT_METRICS_PORT),
            (SERVING_PORT_NAME, DEFAULT_SERVING_PORT),
        ]
        .into_iter()
        .map(|(name, port)| (name.to_owned(), port))
        .collect(),
    };
    ports
        .entry(METRICS_PORT_NAME.to_owned())
        .or_insert(DEFAULT_METRICS_PORT);
    ports
}

fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port,
        app_protocol: Some("tcp".to_owned()),
        ..ServicePort::default()
    }
}

/// The head Service: generated, or the user's `headService` completed with KubeRay's
/// name, labels, selector and ports.
pub fn head_service(ctx: &ClusterContext) -> Result<Service, ServiceError> {
    let head = &ctx.cluster.spec.head_group_spec;
    let labels = head_service_labels(ctx);
    let default_ports: Vec<ServicePort> = head_ports(ctx)
        .iter()
        .map(|(name, port)| service_port(name, *port))
        .collect();
    let extra_annotations = ctx.cluster.spec.head_service_annotations.clone();
    let service_type = head.service_type.clone().filter(|t| !t.is_empty());

    let service = match &head.head_service {
        Some(custom) => {
            let mut service = custom.clone();
            service.status = None;
            let meta = &mut service.metadata;
            meta.name = Some(ctx.head_service_name.clone());
            meta.namespace = Some(ctx.namespace.to_owned());
            let merged = meta.labels.get_or_insert_with(BTreeMap::new);
            merged.extend(labels.clone());
            if let Some(extra) = extra_annotations {
                meta.annotations
                    .get_or_insert_with(BTreeMap::new)
                    .extend(extra);
            }
            let spec = service.spec.get_or_insert_with(ServiceSpec::default);
            spec.selector = Some(labels);
            let ports = spec.ports.get_or_insert_with(Vec::new);
            for port in default_ports {
                // Appending a name or number the user already declared would be refused by
                // the API server, so the user's port wins.
                let clash = ports
                    .iter()
                    .any(|existing| existing.name == port.name || existing.port == port.port);
                if !clash {
                    ports.push(port);
                }
            }
            if spec.type_.as_deref().is_none_or(str::is_empty) {
                spec.type_ = service_type;
            }
            service
        }
        None => {
            let headless = service_type.as_deref().is_none_or(|t| t == "ClusterIP")
                && !ctx.settings.head_cluster_ip_service;
            Service {
                metadata: ObjectMeta {
                    name: Some(ctx.head_service_name.clone()),
                    namespace: Some(ctx.namespace.to_owned()),
                    labels: Some(labels.clone()),
                    annotations: extra_annotations,
                    ..ObjectMeta::default()
                },
                spec: Some(ServiceSpec {
                    selector: Some(labels),
                    ports: Some(default_ports),
                    type_: service_type,
                    cluster_ip: headless.then(|| "None".to_owned()),
                    publish_not_ready_addresses: headless.then_some(true),
                    ..ServiceSpec::default()
                }),
                status: None,
            }
        }
    };
    let has_ports = service
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.as_ref())
        .is_some_and(|ports| !ports.is_empty());
    if has_ports {
        Ok(service)
    } else {
        Err(ServiceError::NoHeadPorts)
    }
}

/// Whether the cluster asks for a serve Service.
pub fn serve_service_enabled(ctx: &ClusterContext) -> bool {
    ctx.annotation(ENABLE_SERVE_SERVICE_ANNOTATION_KEY)
        .is_some_and(|value| value.eq_ignore_ascii_case("true"))
}

/// `<cluster>-serve-svc`: the head's `serve` port for every pod of the cluster.
pub fn serve_service(ctx: &ClusterContext) -> Result<Service, ServiceError> {
    let port = *head_ports(ctx)
        .get(SERVING_PORT_NAME)
        .ok_or(ServiceError::NoServePort)?;
    let labels = BTreeMap::from([
        (
            RAY_ORIGINATED_FROM_CR_NAME_LABEL_KEY.to_owned(),
            ctx.name.to_owned(),
        ),
        (
            RAY_ORIGINATED_FROM_CRD_LABEL_KEY.to_owned(),
            "RayCluster".to_owned(),
        ),
        (
            RAY_CLUSTER_SERVING_SERVICE_LABEL_KEY.to_owned(),
            check_label(&format!("{}-serve", ctx.name)),
        ),
    ]);
    Ok(Service {
        metadata: ObjectMeta {
            name: Some(check_name(&format!("{}-serve-svc", ctx.name))),
            namespace: Some(ctx.namespace.to_owned()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([(
                RAY_CLUSTER_LABEL_KEY.to_owned(),
                ctx.name.to_owned(),
            )])),
            ports: Some(vec![service_port(SERVING_PORT_NAME, port)]),
            type_: ctx
                .cluster
                .spec
                .head_group_spec
                .service_type
                .clone()
                .filter(|t| !t.is_empty()),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// Whether any worker group spans several hosts per replica.
pub fn headless_service_needed(ctx: &ClusterContext) -> bool {
    ctx.cluster
        .spec
        .worker_groups()
        .iter()
        .any(|group| group.num_of_hosts() > 1)
}

/// `<cluster>-headless`: stable DNS for the workers of multi-host replicas.
pub fn headless_worker_service(ctx: &ClusterContext) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(check_name(&format!("{}-headless", ctx.name))),
            namespace: Some(ctx.namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                RAY_CLUSTER_HEADLESS_SERVICE_LABEL_KEY.to_owned(),
                ctx.name.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([
                (RAY_CLUSTER_LABEL_KEY.to_owned(), ctx.name.to_owned()),
                (
                    RAY_NODE_TYPE_LABEL_KEY.to_owned(),
                    WORKER_NODE_TYPE.to_owned(),
                ),
            ])),
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use crate::test_support::cluster_from_yaml;

    fn ports(service: &Service) -> Vec<(String, i32)> {
        service
            .spec
            .as_ref()
            .unwrap()
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone().unwrap(), p.port))
            .collect()
    }

    #[test]
    fn default_head_service_is_headless_with_default_ports() {
        let cluster = cluster_from_yaml(
            r#"
metadata: {name: rc, namespace: ns, annotations: {ray.io/enable-serve-service: "true"}}
spec:
  headServiceAnnotations: {a: b}
  headGroupSpec:
    template: {spec: {containers: [{name: h, image: i}]}}
"#,
        );
        let settings = Settings::default();
        let ctx = ClusterContext::new(&cluster, &settings);
        let service = head_service(&ctx).unwrap();
        assert_eq!(service.metadata.name.as_deref(), Some("rc-head-svc"));
        assert_eq!(service.metadata.annotations.as_ref().unwrap()["a"], "b");
        let spec = service.spec.as_ref().unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        assert_eq!(spec.selector.as_ref().unwrap()[RAY_ID_LABEL_KEY], "rc-head");
        assert_eq!(
            ports(&service),
            [
                ("client".to_owned(), 10001),
                ("dashboard".to_owned(), 8265),
                ("gcs-server".to_owned(), 6379),
                ("metrics".to_owned(), 8080),
                ("serve".to_owned(), 8000),
            ]
        );
        assert!(
            spec.ports
                .iter()
                .flatten()
                .all(|p| p.app_protocol.as_deref() == Some("tcp"))
        );
        assert!(serve_service_enabled(&ctx));
        let serve = serve_service(&ctx).unwrap();
        assert_eq!(serve.metadata.name.as_deref(), Some("rc-serve-svc"));
        assert_eq!(ports(&serve), [("serve".to_owned(), 8000)]);
        assert_eq!(
            serve.metadata.labels.as_ref().unwrap()[RAY_CLUSTER_SERVING_SERVICE_LABEL_KEY],
            "rc-serve"
        );
        assert!(!headless_service_needed(&ctx));
    }

    #[test]
    fn declared_ports_cluster_ip_setting_and_missing_serve_port() {
        let cluster = cluster_from_yaml(
            r#"
metadata: {name: rc, namespace: ns}
spec:
  headGroupSpec:
    serviceType: NodePort
    template:
      metadata: {labels: {app.kubernetes.io/name: mine}}
      spec:
        containers:
        - name: h
          image: i
          ports: [{containerPort: 6379, name: gcs}, {containerPort: 9999}]
  workerGroupSpecs:
  - groupName: tpu
    numOfHosts: 2
    template: {spec: {containers: [{name: w, image: i}]}}
"#,
        );
        let settings = Settings::default();
        let ctx = ClusterContext::new(&cluster, &settings);
        let service = head_service(&ctx).unwrap();
        let spec = service.spec.as_ref().unwrap();
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        assert_eq!(spec.cluster_ip, None);
        assert_eq!(
            service.metadata.labels.as_ref().unwrap()[KUBERNETES_APPLICATION_NAME_LABEL_KEY],
            "mine"
        );
        assert_eq!(
            ports(&service),
            [
                ("9999-port".to_owned(), 9999),
                ("gcs".to_owned(), 6379),
                ("metrics".to_owned(), 8080)
            ]
        );
        assert_eq!(serve_service(&ctx), Err(ServiceError::NoServePort));
        assert!(headless_service_needed(&ctx));
        let headless = headless_worker_service(&ctx);
        assert_eq!(headless.metadata.name.as_deref(), Some("rc-headless"));
        assert_eq!(
            headless.spec.as_ref().unwrap().cluster_ip.as_deref(),
            Some("None")
        );

        let settings = Settings {
            head_cluster_ip_service: true,
            ..Settings::default()
        };
        let plain = cluster_from_yaml(
            "metadata: {name: rc, namespace: ns}\nspec: {headGroupSpec: {template: {spec: {containers: [{name: h}]}}}}",
        );
        let ctx = ClusterContext::new(&plain, &settings);
        assert_eq!(head_service(&ctx).unwrap().spec.unwrap().cluster_ip, None);
    }

    #[test]
    fn custom_head_service_is_completed() {
        let cluster = cluster_from_yaml(
            r#"
metadata: {name: rc, namespace: ns}
spec:
  headServiceAnnotations: {win: from-spec}
  headGroupSpec:
    serviceType: LoadBalancer
    headService:
      metadata: {name: my-head, namespace: other, labels: {ray.io/cluster: x, mine: "1"}, annotations: {win: from-svc, keep: "1"}}
      spec:
        selector: {any: thing}
        ports: [{name: dashboard, port: 443}]
    template:
      spec:
        containers: [{name: h, image: i, ports: [{name: dashboard, containerPort: 8265}, {name: gcs-server, containerPort: 6379}]}]
"#,
        );
        let settings = Settings::default();
        let ctx = ClusterContext::new(&cluster, &settings);
        assert_eq!(ctx.head_service_fqdn, "my-head.ns.svc.cluster.local");
        let service = head_service(&ctx).unwrap();
        let meta = &service.metadata;
        assert_eq!(meta.name.as_deref(), Some("my-head"));
        assert_eq!(meta.namespace.as_deref(), Some("ns"));
        assert_eq!(meta.labels.as_ref().unwrap()[RAY_CLUSTER_LABEL_KEY], "rc");
        assert_eq!(meta.labels.as_ref().unwrap()["mine"], "1");
        assert_eq!(meta.annotations.as_ref().unwrap()["win"], "from-spec");
        assert_eq!(meta.annotations.as_ref().unwrap()["keep"], "1");
        let spec = service.spec.as_ref().unwrap();
        assert_eq!(spec.selector.as_ref().unwrap(), &head_service_labels(&ctx));
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(
            ports(&service),
            [
                ("dashboard".to_owned(), 443),
                ("gcs-server".to_owned(), 6379),
                ("metrics".to_owned(), 8080)
            ]
        );
    }
}
