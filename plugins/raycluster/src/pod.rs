//! Head and worker pods built from a group's template exactly as KubeRay v1.5.1 builds them:
//! identity (generateName, labels, annotations), the `ray start` command, injected env,
//! ports, `/dev/shm`, probes, the `wait-gcs-ready` init container and restart policy.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction,
    ObjectFieldSelector, Pod, PodSpec, Probe, ResourceRequirements, SecretKeySelector, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use wasmray_crds::constants::*;

use crate::cluster::{ClusterContext, GroupView, NodeType, check_label, pod_generate_name};
use crate::ray_start::{complete_params, render_command};

const SHARED_MEMORY_VOLUME: &str = "shared-mem";
const SHARED_MEMORY_PATH: &str = "/dev/shm";
/// The version Ray's usage statistics are told (WasmRay serves KubeRay v1.5.1's API).
const KUBERAY_VERSION: &str = "v1.5.1";
const ULIMIT: &str = "ulimit -n 65536";

const WORKER_HEALTH_CHECK: &str =
    "wget --tries 1 -T 2 -q -O- http://localhost:52365/api/local_raylet_healthz | grep success";
const HEAD_GCS_HEALTH_CHECK: &str =
    "wget --tries 1 -T 10 -q -O- http://localhost:8265/api/gcs_healthz | grep success";

/// The pod a group's replicas are created from: everything but per-replica labels and the
/// generated name suffix.
pub fn build_pod(ctx: &ClusterContext, group: &GroupView) -> Pod {
    let template = group.template;
    let mut spec = template.spec.clone().unwrap_or_default();
    let params = complete_params(ctx, group);
    let ray_start = render_command(group.node_type, &params);

    let mut original_ray_env = spec
        .containers
        .first()
        .and_then(|container| container.env.clone())
        .unwrap_or_default();
    original_ray_env.extend(auth_env(ctx));
    let annotations = pod_annotations(ctx, group);
    // KubeRay reads the pod's annotation, not only the cluster's: a group's template that
    // sets it keeps that group's command.
    let keep_command = annotations
        .get(RAY_OVERWRITE_CONTAINER_CMD_ANNOTATION_KEY)
        .is_some_and(|value| value.eq_ignore_ascii_case("true"));
    if let Some(container) = spec.containers.first_mut() {
        customize_ray_container(ctx, group, container, &ray_start, keep_command);
    }
    add_shared_memory_volume(&mut spec);
    if group.node_type == NodeType::Worker
        && ctx.settings.init_container_injection
        && let Some(init) = wait_gcs_ready_container(ctx, &spec, original_ray_env)
    {
        spec.init_containers.get_or_insert_with(Vec::new).push(init);
    }
    for init in spec.init_containers.iter_mut().flatten() {
        let env = init.env.get_or_insert_with(Vec::new);
        env.push(env_value(FQ_RAY_IP_ENV, &ctx.head_service_fqdn));
        env.push(env_value(RAY_IP_ENV, &ctx.head_service_name));
    }
    if ctx.autoscaler_v2 {
        spec.restart_policy = Some("Never".to_owned());
    }

    Pod {
        metadata: pod_metadata(ctx, group, annotations),
        spec: Some(spec),
        status: None,
    }
}

fn pod_metadata(
    ctx: &ClusterContext,
    group: &GroupView,
    annotations: BTreeMap<String, String>,
) -> ObjectMeta {
    let template_meta = &group.template.metadata;
    let template_meta = template_meta.as_ref();
    let (generate_name, name) = match group.node_type {
        NodeType::Head if ctx.settings.deterministic_head_pod_name => {
            let prefix = pod_generate_name(ctx.name, NodeType::Head);
            (None, Some(prefix.trim_end_matches('-').to_owned()))
        }
        NodeType::Head => (Some(pod_generate_name(ctx.name, NodeType::Head)), None),
        NodeType::Worker => (
            Some(pod_generate_name(
                &format!("{}-{}", ctx.name, group.name),
                NodeType::Worker,
            )),
            None,
        ),
    };
    ObjectMeta {
        name,
        generate_name,
        namespace: Some(ctx.namespace.to_owned()),
        labels: Some(pod_labels(ctx, group)),
        annotations: Some(annotations),
        ..template_meta.cloned().unwrap_or_default()
    }
}

/// Defaults, then the template's and the group's labels, then the three labels the
/// controller relies on, which users may not change.
pub fn pod_labels(ctx: &ClusterContext, group: &GroupView) -> BTreeMap<String, String> {
    let node_type = group.node_type.label();
    let mut labels = BTreeMap::from([
        (
            RAY_IS_RAY_NODE_LABEL_KEY.to_owned(),
            IS_RAY_NODE_VALUE.to_owned(),
        ),
        (
            RAY_ID_LABEL_KEY.to_owned(),
            check_label(&format!("{}-{node_type}", ctx.name)),
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
    if ctx.owned_by_ray_service() {
        let serving = group.node_type == NodeType::Worker;
        labels.insert(
            RAY_CLUSTER_SERVING_SERVICE_LABEL_KEY.to_owned(),
            serving.to_string(),
        );
    }
    let template_labels = group
        .template
        .metadata
        .as_ref()
        .and_then(|meta| meta.labels.as_ref());
    for source in [template_labels, group.labels].into_iter().flatten() {
        labels.extend(source.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    labels.insert(RAY_CLUSTER_LABEL_KEY.to_owned(), ctx.name.to_owned());
    labels.insert(RAY_NODE_TYPE_LABEL_KEY.to_owned(), node_type.to_owned());
    labels.insert(RAY_NODE_GROUP_LABEL_KEY.to_owned(), group.name.to_owned());
    labels
}

fn pod_annotations(ctx: &ClusterContext, group: &GroupView) -> BTreeMap<String, String> {
    let mut annotations = group
        .template
        .metadata
        .as_ref()
        .and_then(|meta| meta.annotations.clone())
        .unwrap_or_default();
    // Only a true value is copied, as "true": a cluster's "false" leaves a template's
    // own annotation in place.
    if ctx
        .annotation(RAY_OVERWRITE_CONTAINER_CMD_ANNOTATION_KEY)
        .is_some_and(|value| value.eq_ignore_ascii_case("true"))
    {
        annotations.insert(
            RAY_OVERWRITE_CONTAINER_CMD_ANNOTATION_KEY.to_owned(),
            "true".to_owned(),
        );
    }
    if group.node_type == NodeType::Head {
        annotations.insert(
            RAY_FT_ENABLED_ANNOTATION_KEY.to_owned(),
            ctx.gcs_ft_enabled.to_string(),
        );
        if ctx.gcs_ft_enabled {
            annotations.insert(
                RAY_EXTERNAL_STORAGE_NS_ANNOTATION_KEY.to_owned(),
                ctx.gcs_storage_namespace(),
            );
        }
    }
    annotations
}

fn customize_ray_container(
    ctx: &ClusterContext,
    group: &GroupView,
    container: &mut Container,
    ray_start: &str,
    keep_command: bool,
) {
    let ports = container.ports.get_or_insert_with(Vec::new);
    if !ports
        .iter()
        .any(|port| port.name.as_deref() == Some(METRICS_PORT_NAME))
    {
        ports.push(ContainerPort {
            name: Some(METRICS_PORT_NAME.to_owned()),
            container_port: DEFAULT_METRICS_PORT,
            ..ContainerPort::default()
        });
    }
    if !keep_command {
        rewrite_command(ctx, container, ray_start);
    }
    inject_env(ctx, group.node_type, container, ray_start);
    if ctx.settings.probes_injection {
        inject_probes(ctx, group.node_type, container);
    }
}

/// Wraps the user's command so that `ray start` runs after it, unless the user already runs
/// `ray start` themselves.
fn rewrite_command(ctx: &ClusterContext, container: &mut Container, ray_start: &str) {
    let user_parts: Vec<&String> = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .collect();
    let user_command: String = user_parts.iter().map(|part| format!(" {part} ")).collect();
    if user_command.contains("ray start") {
        return;
    }
    let script = if user_parts.is_empty() {
        format!("{ULIMIT}; {ray_start}")
    } else {
        format!("{user_command} && {ULIMIT}; {ray_start}")
    };
    container.command = Some(shell_command(ctx));
    container.args = Some(vec![script]);
}

fn shell_command(ctx: &ClusterContext) -> Vec<String> {
    let flags = if ctx.settings.login_shell {
        "-lc"
    } else {
        "-c"
    };
    vec!["/bin/bash".to_owned(), flags.to_owned(), "--".to_owned()]
}

fn inject_env(
    ctx: &ClusterContext,
    node_type: NodeType,
    container: &mut Container,
    ray_start: &str,
) {
    let head = node_type == NodeType::Head;
    let ray_address = if head {
        format!("127.0.0.1:{}", ctx.head_port)
    } else {
        format!("{}:{}", ctx.head_service_fqdn, ctx.head_port)
    };
    let env = container.env.get_or_insert_with(Vec::new);
    if !head {
        env.push(env_value(FQ_RAY_IP_ENV, &ctx.head_service_fqdn));
        env.push(env_value(RAY_IP_ENV, &ctx.head_service_name));
    }
    env.push(env_field(
        RAY_CLUSTER_NAME_ENV,
        &format!("metadata.labels['{RAY_CLUSTER_LABEL_KEY}']"),
    ));
    env.push(env_field(RAY_CLOUD_INSTANCE_ID_ENV, "metadata.name"));
    env.push(env_field(
        RAY_NODE_TYPE_NAME_ENV,
        &format!("metadata.labels['{RAY_NODE_GROUP_LABEL_KEY}']"),
    ));
    env.push(env_value(KUBERAY_GEN_RAY_START_CMD_ENV, ray_start));
    push_if_absent(env, RAY_PORT_ENV, &ctx.head_port);
    if ctx.owned_by_ray_service() {
        push_if_absent(env, "RAY_timeout_ms_task_wait_for_death_info", "0");
        push_if_absent(env, "RAY_gcs_server_request_timeout_seconds", "5");
        push_if_absent(env, "RAY_SERVE_KV_TIMEOUT_S", "5");
    }
    push_if_absent(env, RAY_ADDRESS_ENV, &ray_address);
    push_if_absent(env, RAY_USAGE_STATS_KUBERAY_IN_USE_ENV, "1");
    if head {
        let tags = format!(
            "kuberay_version={KUBERAY_VERSION};kuberay_crd={}",
            ctx.originated_from_crd
        );
        push_if_absent(env, RAY_USAGE_STATS_EXTRA_TAGS_ENV, &tags);
    }
    push_if_absent(env, RAY_DASHBOARD_ENABLE_K8S_DISK_USAGE_ENV, "1");
    if head && ctx.autoscaler_v2 {
        push_if_absent(env, RAY_ENABLE_AUTOSCALER_V2_ENV, "true");
    }
    if ctx.gcs_ft_enabled {
        inject_gcs_ft_env(ctx, node_type, env);
    }
    env.extend(auth_env(ctx));
}

/// Token auth: the token comes from the Secret named after the cluster. The host creates
/// that Secret (a plugin has no randomness); until it exists the pods wait, so a cluster
/// that asked for auth never runs without it.
fn auth_env(ctx: &ClusterContext) -> Vec<EnvVar> {
    if !ctx.token_auth {
        return Vec::new();
    }
    vec![
        env_value(RAY_AUTH_MODE_ENV, "token"),
        EnvVar {
            name: RAY_AUTH_TOKEN_ENV.to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: ctx.auth_secret_name(),
                    key: RAY_AUTH_TOKEN_SECRET_KEY.to_owned(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
        },
    ]
}

fn inject_gcs_ft_env(ctx: &ClusterContext, node_type: NodeType, env: &mut Vec<EnvVar>) {
    if node_type == NodeType::Worker {
        push_if_absent(env, RAY_GCS_RPC_SERVER_RECONNECT_TIMEOUT_S_ENV, "600");
        return;
    }
    push_if_absent(
        env,
        RAY_EXTERNAL_STORAGE_NAMESPACE_ENV,
        &ctx.gcs_storage_namespace(),
    );
    match &ctx.cluster.spec.gcs_fault_tolerance_options {
        Some(options) => {
            env.push(env_value(RAY_REDIS_ADDRESS_ENV, &options.redis_address));
            for (name, credential) in [
                (REDIS_USERNAME_ENV, &options.redis_username),
                (REDIS_PASSWORD_ENV, &options.redis_password),
            ] {
                if let Some(credential) = credential {
                    env.push(EnvVar {
                        name: name.to_owned(),
                        value: credential.value.clone(),
                        value_from: credential.value_from.clone(),
                    });
                }
            }
        }
        None => {
            // Legacy annotation mode: the password given as a ray start param.
            let password = GroupView::head(ctx.cluster).param(RAY_START_PARAM_REDIS_PASSWORD);
            if let Some(password) = password {
                push_if_absent(env, REDIS_PASSWORD_ENV, password);
            }
        }
    }
}

fn inject_probes(ctx: &ClusterContext, node_type: NodeType, container: &mut Container) {
    let head = node_type == NodeType::Head;
    let timeout = if head { 5 } else { 2 };
    let base_check = if head {
        format!("{WORKER_HEALTH_CHECK} && {HEAD_GCS_HEALTH_CHECK}")
    } else {
        WORKER_HEALTH_CHECK.to_owned()
    };
    if container.liveness_probe.is_none() {
        container.liveness_probe = Some(exec_probe(&base_check, 30, timeout, 120));
    }
    if container.readiness_probe.is_none() {
        let serve_worker = ctx.owned_by_ray_service() && !head;
        container.readiness_probe = Some(if serve_worker {
            let serve_port = container
                .ports
                .iter()
                .flatten()
                .find(|port| port.name.as_deref() == Some(SERVING_PORT_NAME))
                .map_or(DEFAULT_SERVING_PORT, |port| port.container_port);
            let check = format!(
                "{base_check} && wget --tries 1 -T 10 -q -O- http://localhost:{serve_port}/-/healthz | grep success"
            );
            exec_probe(&check, 10, timeout, 1)
        } else {
            exec_probe(&base_check, 10, timeout, 10)
        });
    }
}

fn exec_probe(check: &str, initial_delay: i32, timeout: i32, failure_threshold: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec!["bash".to_owned(), "-c".to_owned(), check.to_owned()]),
        }),
        initial_delay_seconds: Some(initial_delay),
        timeout_seconds: Some(timeout),
        period_seconds: Some(5),
        success_threshold: Some(1),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

/// A memory-backed `/dev/shm` as large as the Ray container's memory, so Ray's object store
/// is not limited to the container runtime's 64 MiB default.
fn add_shared_memory_volume(spec: &mut PodSpec) {
    let Some(container) = spec.containers.first_mut() else {
        return;
    };
    let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
    if mounts
        .iter()
        .any(|mount| mount.mount_path == SHARED_MEMORY_PATH)
    {
        return;
    }
    mounts.push(VolumeMount {
        name: SHARED_MEMORY_VOLUME.to_owned(),
        mount_path: SHARED_MEMORY_PATH.to_owned(),
        ..VolumeMount::default()
    });
    let size_limit = container.resources.as_ref().and_then(|resources| {
        let limit = resources.limits.as_ref().and_then(|l| l.get("memory"));
        limit
            .or_else(|| resources.requests.as_ref()?.get("memory"))
            .cloned()
    });
    spec.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: SHARED_MEMORY_VOLUME.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".to_owned()),
            size_limit,
        }),
        ..Volume::default()
    });
}

/// Keeps a worker from starting Ray before the head's GCS answers.
fn wait_gcs_ready_container(
    ctx: &ClusterContext,
    spec: &PodSpec,
    ray_env: Vec<EnvVar>,
) -> Option<Container> {
    let ray = spec.containers.first()?;
    let address = format!("{}:{}", ctx.head_service_fqdn, ctx.head_port);
    let fixed = BTreeMap::from([
        ("cpu".to_owned(), K8sQuantity("200m".to_owned())),
        ("memory".to_owned(), K8sQuantity("256Mi".to_owned())),
    ]);
    Some(Container {
        name: WAIT_GCS_READY_INIT_CONTAINER_NAME.to_owned(),
        image: ray.image.clone(),
        image_pull_policy: ray.image_pull_policy.clone(),
        security_context: ray.security_context.clone(),
        command: Some(shell_command(ctx)),
        args: Some(vec![wait_gcs_ready_script(&address)]),
        env: Some(ray_env),
        volume_mounts: ray.volume_mounts.clone(),
        resources: Some(ResourceRequirements {
            limits: Some(fixed.clone()),
            requests: Some(fixed),
            ..ResourceRequirements::default()
        }),
        ..Container::default()
    })
}

/// Polls `ray health-check` every 5 s; silent for the first two minutes, then shows Ray's
/// output and where to look for help. Exits 0 once the GCS answers.
fn wait_gcs_ready_script(address: &str) -> String {
    format!(
        r#"SECONDS=0
while true; do
  if (( SECONDS <= 120 )); then
    if ray health-check --address {address} > /dev/null 2>&1; then
      echo "GCS at {address} is ready."
      break
    fi
    echo "$SECONDS seconds elapsed: waiting for GCS at {address}."
  else
    if ray health-check --address {address}; then
      echo "GCS at {address} is ready; earlier errors can be ignored."
      break
    fi
    echo "$SECONDS seconds elapsed: GCS at {address} still not ready. See https://docs.ray.io/en/latest/cluster/kubernetes/troubleshooting/troubleshooting.html"
  fi
  sleep 5
done"#
    )
}

fn env_value(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

fn env_field(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: field_path.to_owned(),
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn push_if_absent(env: &mut Vec<EnvVar>, name: &str, value: &str) {
    if !env.iter().any(|existing| existing.name == name) {
        env.push(env_value(name, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use crate::test_support::cluster_from_yaml;
    use wasmray_crds::raycluster::RayCluster;

    const CLUSTER: &str = r#"
metadata:
  name: raycluster-sample
  namespace: default
  uid: uid-1
  annotations: {ray.io/ft-enabled: "true"}
spec:
  headGroupSpec:
    rayStartParams: {}
    template:
      metadata:
        labels: {app.kubernetes.io/name: custom, ray.io/cluster: hijack, team: a}
        annotations: {note: kept}
      spec:
        containers:
        - name: ray-head
          image: rayproject/ray:2.46.0
          ports: [{name: gcs-server, containerPort: 6379}]
          resources:
            limits: {cpu: "1", memory: 2Gi}
  workerGroupSpecs:
  - groupName: small-group
    replicas: 1
    rayStartParams: {}
    labels: {zone: z1}
    template:
      spec:
        initContainers: [{name: setup, image: busybox}]
        containers:
        - name: ray-worker
          image: rayproject/ray:2.46.0
          imagePullPolicy: Always
          command: [echo, hi]
          env: [{name: RAY_ADDRESS, value: custom:1}]
          resources:
            requests: {cpu: 500m, memory: 1Gi}
          readinessProbe: {exec: {command: [custom]}}
"#;

    fn build(cluster: &RayCluster, settings: &Settings, worker: bool) -> Pod {
        let ctx = ClusterContext::new(cluster, settings);
        let group = if worker {
            GroupView::worker(&cluster.spec.worker_groups()[0])
        } else {
            GroupView::head(cluster)
        };
        build_pod(&ctx, &group)
    }

    fn env_of(container: &Container) -> BTreeMap<String, EnvVar> {
        container
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.clone()))
            .collect()
    }

    fn value(env: &BTreeMap<String, EnvVar>, name: &str) -> Option<String> {
        env.get(name).and_then(|e| e.value.clone())
    }

    #[test]
    fn head_pod_identity_command_env_and_probes() {
        let cluster = cluster_from_yaml(CLUSTER);
        let pod = build(&cluster, &Settings::default(), false);
        let meta = &pod.metadata;
        assert_eq!(
            meta.generate_name.as_deref(),
            Some("raycluster-sample-head-")
        );
        assert_eq!(meta.name, None);
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels[RAY_CLUSTER_LABEL_KEY], "raycluster-sample");
        assert_eq!(labels[RAY_NODE_TYPE_LABEL_KEY], "head");
        assert_eq!(labels[RAY_NODE_GROUP_LABEL_KEY], "headgroup");
        assert_eq!(labels[RAY_ID_LABEL_KEY], "raycluster-sample-head");
        assert_eq!(labels[RAY_IS_RAY_NODE_LABEL_KEY], "yes");
        assert_eq!(labels[KUBERNETES_APPLICATION_NAME_LABEL_KEY], "custom");
        assert_eq!(labels["team"], "a");
        let annotations = meta.annotations.as_ref().unwrap();
        assert_eq!(annotations[RAY_FT_ENABLED_ANNOTATION_KEY], "true");
        assert_eq!(annotations[RAY_EXTERNAL_STORAGE_NS_ANNOTATION_KEY], "uid-1");
        assert_eq!(annotations["note"], "kept");

        let spec = pod.spec.as_ref().unwrap();
        let ray = &spec.containers[0];
        assert_eq!(ray.command.as_ref().unwrap(), &["/bin/bash", "-c", "--"]);
        let start = "ray start --head  --block  --dashboard-agent-listen-port=52365  --dashboard-host=0.0.0.0  --memory=2147483648  --metrics-export-port=8080  --num-cpus=1 ";
        assert_eq!(
            ray.args.as_ref().unwrap(),
            &[format!("ulimit -n 65536; {start}")]
        );
        let env = env_of(ray);
        assert_eq!(
            value(&env, KUBERAY_GEN_RAY_START_CMD_ENV).as_deref(),
            Some(start)
        );
        assert_eq!(
            value(&env, RAY_ADDRESS_ENV).as_deref(),
            Some("127.0.0.1:6379")
        );
        assert_eq!(value(&env, RAY_PORT_ENV).as_deref(), Some("6379"));
        assert_eq!(
            value(&env, RAY_USAGE_STATS_EXTRA_TAGS_ENV).as_deref(),
            Some("kuberay_version=v1.5.1;kuberay_crd=RayCluster")
        );
        assert_eq!(
            value(&env, RAY_EXTERNAL_STORAGE_NAMESPACE_ENV).as_deref(),
            Some("uid-1")
        );
        assert_eq!(
            env[RAY_CLUSTER_NAME_ENV]
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.labels['ray.io/cluster']"
        );
        assert!(!env.contains_key(FQ_RAY_IP_ENV));
        let ports: Vec<_> = ray
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone().unwrap(), p.container_port))
            .collect();
        assert_eq!(
            ports,
            [
                ("gcs-server".to_owned(), 6379),
                ("metrics".to_owned(), 8080)
            ]
        );
        let liveness = ray.liveness_probe.as_ref().unwrap();
        assert_eq!(liveness.timeout_seconds, Some(5));
        assert_eq!(liveness.failure_threshold, Some(120));
        assert_eq!(liveness.initial_delay_seconds, Some(30));
        let command = liveness.exec.as_ref().unwrap().command.as_ref().unwrap();
        assert_eq!(
            command[2],
            format!("{WORKER_HEALTH_CHECK} && {HEAD_GCS_HEALTH_CHECK}")
        );
        assert_eq!(
            ray.readiness_probe.as_ref().unwrap().failure_threshold,
            Some(10)
        );
        let shm = spec
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "shared-mem")
            .unwrap();
        let empty_dir = shm.empty_dir.as_ref().unwrap();
        assert_eq!(empty_dir.medium.as_deref(), Some("Memory"));
        assert_eq!(empty_dir.size_limit.as_ref().unwrap().0, "2Gi");
        assert!(spec.init_containers.is_none());
        assert!(spec.restart_policy.is_none());
    }

    #[test]
    fn worker_pod_command_env_init_container() {
        let cluster = cluster_from_yaml(CLUSTER);
        let pod = build(&cluster, &Settings::default(), true);
        assert_eq!(
            pod.metadata.generate_name.as_deref(),
            Some("raycluster-sample-small-group-worker-")
        );
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[RAY_ID_LABEL_KEY], "raycluster-sample-worker");
        assert_eq!(labels["zone"], "z1");
        assert!(
            !pod.metadata
                .annotations
                .as_ref()
                .unwrap()
                .contains_key(RAY_FT_ENABLED_ANNOTATION_KEY)
        );
        let spec = pod.spec.as_ref().unwrap();
        let ray = &spec.containers[0];
        let fqdn = "raycluster-sample-head-svc.default.svc.cluster.local";
        let start = format!(
            "ray start  --address={fqdn}:6379  --block  --dashboard-agent-listen-port=52365  --labels=zone=z1  --metrics-export-port=8080  --num-cpus=1 "
        );
        assert_eq!(
            ray.args.as_ref().unwrap(),
            &[format!(" echo  hi  && ulimit -n 65536; {start}")]
        );
        let env = env_of(ray);
        assert_eq!(value(&env, FQ_RAY_IP_ENV).as_deref(), Some(fqdn));
        assert_eq!(
            value(&env, RAY_IP_ENV).as_deref(),
            Some("raycluster-sample-head-svc")
        );
        assert_eq!(value(&env, RAY_ADDRESS_ENV).as_deref(), Some("custom:1"));
        assert_eq!(
            value(&env, RAY_GCS_RPC_SERVER_RECONNECT_TIMEOUT_S_ENV).as_deref(),
            Some("600")
        );
        assert!(!env.contains_key(RAY_USAGE_STATS_EXTRA_TAGS_ENV));
        // The user's readiness probe stays; liveness is injected with the worker timeout.
        let readiness = ray.readiness_probe.as_ref().unwrap();
        assert_eq!(
            readiness.exec.as_ref().unwrap().command.as_ref().unwrap(),
            &["custom"]
        );
        assert_eq!(
            ray.liveness_probe.as_ref().unwrap().timeout_seconds,
            Some(2)
        );
        let shm = spec
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "shared-mem")
            .unwrap();
        assert_eq!(
            shm.empty_dir
                .as_ref()
                .unwrap()
                .size_limit
                .as_ref()
                .unwrap()
                .0,
            "1Gi"
        );

        let inits = spec.init_containers.as_ref().unwrap();
        assert_eq!(inits.len(), 2);
        assert_eq!(inits[0].name, "setup");
        assert_eq!(
            value(&env_of(&inits[0]), FQ_RAY_IP_ENV).as_deref(),
            Some(fqdn)
        );
        let wait = &inits[1];
        assert_eq!(wait.name, WAIT_GCS_READY_INIT_CONTAINER_NAME);
        assert_eq!(wait.image.as_deref(), Some("rayproject/ray:2.46.0"));
        assert_eq!(wait.image_pull_policy.as_deref(), Some("Always"));
        assert!(
            wait.args.as_ref().unwrap()[0]
                .contains(&format!("ray health-check --address {fqdn}:6379"))
        );
        let wait_env = env_of(wait);
        assert_eq!(
            value(&wait_env, RAY_ADDRESS_ENV).as_deref(),
            Some("custom:1")
        );
        assert!(!wait_env.contains_key(KUBERAY_GEN_RAY_START_CMD_ENV));
        assert_eq!(
            wait.resources.as_ref().unwrap().limits.as_ref().unwrap()["cpu"].0,
            "200m"
        );
    }

    #[test]
    fn settings_switch_off_injections() {
        let cluster = cluster_from_yaml(CLUSTER);
        let settings = Settings {
            init_container_injection: false,
            probes_injection: false,
            deterministic_head_pod_name: true,
            login_shell: true,
            ..Settings::default()
        };
        let head = build(&cluster, &settings, false);
        assert_eq!(
            head.metadata.name.as_deref(),
            Some("raycluster-sample-head")
        );
        assert_eq!(head.metadata.generate_name, None);
        let ray = &head.spec.as_ref().unwrap().containers[0];
        assert!(ray.liveness_probe.is_none());
        assert_eq!(ray.command.as_ref().unwrap()[1], "-lc");
        let worker = build(&cluster, &settings, true);
        let inits = worker
            .spec
            .as_ref()
            .unwrap()
            .init_containers
            .as_ref()
            .unwrap();
        assert_eq!(inits.len(), 1);
    }

    #[test]
    fn kept_commands_autoscaler_v2_and_gcs_options() {
        let cluster = cluster_from_yaml(
            r#"
metadata:
  name: c
  namespace: ns
  annotations: {ray.io/overwrite-container-cmd: "true"}
spec:
  enableInTreeAutoscaling: true
  autoscalerOptions: {version: v2}
  gcsFaultToleranceOptions:
    redisAddress: redis:6379
    externalStorageNamespace: store
    redisPassword: {valueFrom: {secretKeyRef: {name: s, key: k}}}
  headGroupSpec:
    template:
      spec:
        containers:
        - name: h
          image: i
          command: [sleep, infinity]
          volumeMounts: [{name: mine, mountPath: /dev/shm}]
"#,
        );
        let pod = build(&cluster, &Settings::default(), false);
        let annotations = pod.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            annotations[RAY_OVERWRITE_CONTAINER_CMD_ANNOTATION_KEY],
            "true"
        );
        assert_eq!(annotations[RAY_EXTERNAL_STORAGE_NS_ANNOTATION_KEY], "store");
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert!(spec.volumes.is_none(), "user's /dev/shm mount is kept");
        let ray = &spec.containers[0];
        assert_eq!(ray.command.as_ref().unwrap(), &["sleep", "infinity"]);
        assert!(ray.args.is_none());
        let env = env_of(ray);
        assert!(
            value(&env, KUBERAY_GEN_RAY_START_CMD_ENV)
                .unwrap()
                .contains(" --no-monitor ")
        );
        assert_eq!(
            value(&env, RAY_ENABLE_AUTOSCALER_V2_ENV).as_deref(),
            Some("true")
        );
        assert_eq!(
            value(&env, RAY_REDIS_ADDRESS_ENV).as_deref(),
            Some("redis:6379")
        );
        assert_eq!(
            value(&env, RAY_EXTERNAL_STORAGE_NAMESPACE_ENV).as_deref(),
            Some("store")
        );
        let password = &env[REDIS_PASSWORD_ENV];
        assert!(password.value.is_none());
        assert_eq!(
            password
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .key,
            "k"
        );
    }

    /// KubeRay copies a true cluster annotation to the pod as "true" and then decides on the
    /// pod's annotation, so a group's template can keep its own command; the generated
    /// command stays in `KUBERAY_GEN_RAY_START_CMD` for the user's script to run.
    #[test]
    fn overwrite_container_cmd_on_the_cluster_or_the_template() {
        let user_args = "ulimit -n 65536; echo worker; $KUBERAY_GEN_RAY_START_CMD";
        // (cluster annotation, template annotation) => (pod annotation, command kept)
        type Annotation = Option<&'static str>;
        let cases: [(Annotation, Annotation, Annotation, bool); 7] = [
            (None, None, None, false),
            (Some("true"), None, Some("true"), true),
            (Some("TRUE"), None, Some("true"), true),
            (None, Some("true"), Some("true"), true),
            (None, Some("True"), Some("True"), true),
            (Some("false"), Some("true"), Some("true"), true),
            (Some("false"), None, None, false),
        ];
        for (on_cluster, on_template, on_pod, kept) in cases {
            let mut cluster = cluster_from_yaml(&format!(
                r#"
metadata: {{name: c, namespace: ns}}
spec:
  headGroupSpec:
    template: {{spec: {{containers: [{{name: h, image: i}}]}}}}
  workerGroupSpecs:
  - groupName: g
    replicas: 1
    template:
      spec:
        containers:
        - name: w
          image: i
          command: [/bin/bash, -lc, --]
          args: ["{user_args}"]
"#
            ));
            let key = RAY_OVERWRITE_CONTAINER_CMD_ANNOTATION_KEY.to_owned();
            if let Some(value) = on_cluster {
                cluster.metadata.annotations = Some(BTreeMap::from([(key.clone(), value.into())]));
            }
            if let Some(value) = on_template {
                let group = &mut cluster.spec.worker_group_specs.as_mut().unwrap()[0];
                group
                    .template
                    .metadata
                    .get_or_insert_with(Default::default)
                    .annotations = Some(BTreeMap::from([(key.clone(), value.into())]));
            }
            let pod = build(&cluster, &Settings::default(), true);
            let case = format!("cluster {on_cluster:?}, template {on_template:?}");
            let annotations = pod.metadata.annotations.as_ref().unwrap();
            assert_eq!(annotations.get(&key).map(String::as_str), on_pod, "{case}");
            let ray = &pod.spec.as_ref().unwrap().containers[0];
            let env = env_of(ray);
            let generated = value(&env, KUBERAY_GEN_RAY_START_CMD_ENV).unwrap();
            assert!(generated.starts_with("ray start "), "{case}: {generated}");
            let args = ray.args.as_ref().unwrap();
            if kept {
                assert_eq!(
                    ray.command.as_ref().unwrap(),
                    &["/bin/bash", "-lc", "--"],
                    "{case}"
                );
                assert_eq!(args, &[user_args], "{case}");
            } else {
                assert_eq!(
                    ray.command.as_ref().unwrap(),
                    &["/bin/bash", "-c", "--"],
                    "{case}"
                );
                assert_eq!(
                    args,
                    &[format!(
                        " /bin/bash  -lc  --  {user_args}  && ulimit -n 65536; {generated}"
                    )],
                    "{case}"
                );
            }
        }
    }

    #[test]
    fn token_auth_env_on_ray_and_wait_containers() {
        let mut cluster = cluster_from_yaml(CLUSTER);
        cluster.spec.auth_options = Some(wasmray_crds::raycluster::AuthOptions {
            mode: Some(wasmray_crds::raycluster::AuthMode::Token),
        });
        let worker = build(&cluster, &Settings::default(), true);
        let spec = worker.spec.as_ref().unwrap();
        for container in [
            &spec.containers[0],
            &spec.init_containers.as_ref().unwrap()[1],
        ] {
            let env = env_of(container);
            assert_eq!(value(&env, RAY_AUTH_MODE_ENV).as_deref(), Some("token"));
            let secret = env[RAY_AUTH_TOKEN_ENV]
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap();
            assert_eq!(
                (secret.name.as_str(), secret.key.as_str()),
                ("raycluster-sample", "auth_token")
            );
        }
        let plain = build(&cluster_from_yaml(CLUSTER), &Settings::default(), false);
        assert!(
            !env_of(&plain.spec.as_ref().unwrap().containers[0]).contains_key(RAY_AUTH_MODE_ENV)
        );
    }

    #[test]
    fn ray_service_clusters_get_serve_labels_and_probe() {
        let cluster = cluster_from_yaml(
            r#"
metadata:
  name: c
  namespace: ns
  labels: {ray.io/originated-from-crd: RayService}
spec:
  headGroupSpec:
    template: {spec: {containers: [{name: h, image: i}]}}
  workerGroupSpecs:
  - groupName: g
    template: {spec: {containers: [{name: w, image: i}]}}
"#,
        );
        let head = build(&cluster, &Settings::default(), false);
        assert_eq!(
            head.metadata.labels.as_ref().unwrap()[RAY_CLUSTER_SERVING_SERVICE_LABEL_KEY],
            "false"
        );
        let worker = build(&cluster, &Settings::default(), true);
        assert_eq!(
            worker.metadata.labels.as_ref().unwrap()[RAY_CLUSTER_SERVING_SERVICE_LABEL_KEY],
            "true"
        );
        let ray = &worker.spec.as_ref().unwrap().containers[0];
        let readiness = ray.readiness_probe.as_ref().unwrap();
        assert_eq!(readiness.failure_threshold, Some(1));
        assert!(
            readiness.exec.as_ref().unwrap().command.as_ref().unwrap()[2]
                .ends_with("http://localhost:8000/-/healthz | grep success")
        );
        assert_eq!(
            value(&env_of(ray), "RAY_SERVE_KV_TIMEOUT_S").as_deref(),
            Some("5")
        );
    }
}
