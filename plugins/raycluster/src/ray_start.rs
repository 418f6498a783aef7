//! The `ray start` command: completing `rayStartParams` as KubeRay does and rendering them
//! into the exact flag string (it ends up in the container args and in
//! `KUBERAY_GEN_RAY_START_CMD`, so users and tests compare it byte for byte).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Container;
use serde_json::{Map, Value};
use wasmray_crds::constants::{
    DEFAULT_DASHBOARD_AGENT_LISTEN_PORT, DEFAULT_METRICS_PORT, RAY_START_PARAM_LABELS,
    RAY_START_PARAM_MEMORY, RAY_START_PARAM_NUM_CPUS, RAY_START_PARAM_NUM_GPUS,
    RAY_START_PARAM_REDIS_PASSWORD, RAY_START_PARAM_REDIS_USERNAME, RAY_START_PARAM_RESOURCES,
};

use crate::cluster::{ClusterContext, GroupView, NodeType};
use wasmray_crds::quantity::{Quantity, go_float};

/// Flags whose boolean value is written out (`--log-color=true`) instead of as a switch.
const VALUED_BOOLEAN_FLAGS: [&str; 2] = ["log-color", "include-dashboard"];
/// Ray's names for the accelerators KubeRay recognises in container limits.
const CUSTOM_ACCELERATORS: [(&str, &str); 2] = [
    ("google.com/tpu", "TPU"),
    ("aws.amazon.com/neuroncore", "neuron_cores"),
];

/// The completed parameters of one group's `ray start`.
pub fn complete_params(ctx: &ClusterContext, group: &GroupView) -> BTreeMap<String, String> {
    let mut params = group.ray_start_params.cloned().unwrap_or_default();
    if let Some(resources) = group.resources {
        apply_group_resources(&mut params, resources);
    }
    if let Some(labels) = group.labels.filter(|labels| !labels.is_empty()) {
        let rendered: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        params.insert(RAY_START_PARAM_LABELS.to_owned(), rendered.join(","));
    }
    if let Some(container) = group.ray_container() {
        apply_container_resources(&mut params, container);
    }
    match group.node_type {
        NodeType::Worker => {
            params
                .entry("address".to_owned())
                .or_insert_with(|| format!("{}:{}", ctx.head_service_fqdn, ctx.head_port));
        }
        NodeType::Head => {
            params
                .entry("dashboard-host".to_owned())
                .or_insert_with(|| "0.0.0.0".to_owned());
        }
    }
    params
        .entry("metrics-export-port".to_owned())
        .or_insert_with(|| DEFAULT_METRICS_PORT.to_string());
    params.insert("block".to_owned(), "true".to_owned());
    params
        .entry("dashboard-agent-listen-port".to_owned())
        .or_insert_with(|| DEFAULT_DASHBOARD_AGENT_LISTEN_PORT.to_string());
    if group.node_type == NodeType::Head {
        if ctx.autoscaling {
            params.insert("no-monitor".to_owned(), "true".to_owned());
        }
        if let Some(options) = &ctx.cluster.spec.gcs_fault_tolerance_options {
            if options.redis_username.is_some() {
                params.insert(
                    RAY_START_PARAM_REDIS_USERNAME.to_owned(),
                    "$REDIS_USERNAME".to_owned(),
                );
            }
            if options.redis_password.is_some() {
                params.insert(
                    RAY_START_PARAM_REDIS_PASSWORD.to_owned(),
                    "$REDIS_PASSWORD".to_owned(),
                );
            }
        }
    }
    params
}

/// Group `resources`: `cpu`, `gpu` and `memory` become their flags, anything else goes into
/// the `--resources` JSON. Unparsable quantities are skipped (validation reports them).
fn apply_group_resources(
    params: &mut BTreeMap<String, String>,
    resources: &BTreeMap<String, String>,
) {
    let mut custom = Map::new();
    for (name, text) in resources {
        let Ok(quantity) = Quantity::parse(text) else {
            continue;
        };
        let flag = match name.to_ascii_lowercase().as_str() {
            "cpu" => RAY_START_PARAM_NUM_CPUS,
            "gpu" => RAY_START_PARAM_NUM_GPUS,
            "memory" => RAY_START_PARAM_MEMORY,
            _ => {
                custom.insert(name.clone(), Value::from(quantity.as_f64()));
                continue;
            }
        };
        params.insert(flag.to_owned(), quantity.ceil_value().to_string());
    }
    if !custom.is_empty() {
        params.insert(
            RAY_START_PARAM_RESOURCES.to_owned(),
            render_resources(&custom),
        );
    }
}

/// Flags derived from the Ray container's resources, each only when the user did not set it.
fn apply_container_resources(params: &mut BTreeMap<String, String>, container: &Container) {
    let Some(requirements) = &container.resources else {
        return;
    };
    let limits = requirements.limits.as_ref();
    let limit = |name: &str| limits.and_then(|l| l.get(name));
    let parsed = |q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| {
        Quantity::parse(&q.0).ok().filter(|q| !q.is_zero())
    };
    if !params.contains_key(RAY_START_PARAM_NUM_CPUS) {
        let cpu = limit("cpu")
            .and_then(parsed)
            .or_else(|| requirements.requests.as_ref()?.get("cpu").and_then(parsed));
        if let Some(cpu) = cpu {
            params.insert(
                RAY_START_PARAM_NUM_CPUS.to_owned(),
                cpu.ceil_value().to_string(),
            );
        }
    }
    if !params.contains_key(RAY_START_PARAM_MEMORY)
        && let Some(memory) = limit("memory").and_then(parsed)
    {
        params.insert(
            RAY_START_PARAM_MEMORY.to_owned(),
            memory.ceil_value().to_string(),
        );
    }
    if !params.contains_key(RAY_START_PARAM_NUM_GPUS) {
        let gpu = limits
            .into_iter()
            .flatten()
            .find(|(name, _)| is_gpu_resource(name))
            .and_then(|(_, q)| parsed(q));
        if let Some(gpu) = gpu {
            params.insert(
                RAY_START_PARAM_NUM_GPUS.to_owned(),
                gpu.ceil_value().to_string(),
            );
        }
    }
    let accelerator = CUSTOM_ACCELERATORS
        .iter()
        .find_map(|(name, ray_name)| Some((*ray_name, limit(name).and_then(parsed)?)));
    if let Some((ray_name, amount)) = accelerator {
        add_custom_accelerator(params, ray_name, amount);
    }
}

/// Adds `TPU`/`neuron_cores` to `--resources` unless one is already declared there.
fn add_custom_accelerator(params: &mut BTreeMap<String, String>, ray_name: &str, amount: Quantity) {
    let mut resources = match params.get(RAY_START_PARAM_RESOURCES) {
        Some(existing) => {
            let json = existing.trim().trim_matches('\'').trim_matches('"');
            match serde_json::from_str::<Map<String, Value>>(json) {
                Ok(map) => map,
                // A value Ray must parse itself; leave the user's text alone.
                Err(_) => return,
            }
        }
        None => Map::new(),
    };
    if CUSTOM_ACCELERATORS
        .iter()
        .any(|(_, known)| resources.contains_key(*known))
    {
        return;
    }
    resources.insert(ray_name.to_owned(), Value::from(amount.as_f64()));
    params.insert(
        RAY_START_PARAM_RESOURCES.to_owned(),
        render_resources(&resources),
    );
}

/// `'{"A":1,"B":0.5}'`: single-quoted, keys sorted, numbers as Go prints them.
fn render_resources(resources: &Map<String, Value>) -> String {
    let mut sorted: Vec<(&String, &Value)> = resources.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let body: Vec<String> = sorted
        .into_iter()
        .map(|(key, value)| {
            let rendered = match value.as_f64() {
                Some(number) => go_float(number),
                None => value.to_string(),
            };
            format!("{}:{rendered}", Value::from(key.as_str()))
        })
        .collect();
    format!("'{{{}}}'", body.join(","))
}

/// A resource name Ray counts as GPUs: `*gpu` or `nvidia.com/mig-<n>g.<m>gb`.
pub fn is_gpu_resource(name: &str) -> bool {
    name.ends_with("gpu") || is_mig_resource(name)
}

fn is_mig_resource(name: &str) -> bool {
    let Some(profile) = name.strip_prefix("nvidia.com/mig-") else {
        return false;
    };
    let Some((compute, memory)) = profile.split_once("g.") else {
        return false;
    };
    let Some(memory) = memory.strip_suffix("gb") else {
        return false;
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    all_digits(compute) && all_digits(memory)
}

/// `ray start [--head] ` followed by each flag as ` --key ` or ` --key=value `, keys sorted;
/// `true` is a bare switch and `false` drops the flag.
pub fn render_command(node_type: NodeType, params: &BTreeMap<String, String>) -> String {
    let mut command = String::from(match node_type {
        NodeType::Head => "ray start --head ",
        NodeType::Worker => "ray start ",
    });
    for (key, value) in params {
        let boolean = value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false");
        if boolean && !VALUED_BOOLEAN_FLAGS.contains(&key.as_str()) {
            if value.eq_ignore_ascii_case("true") {
                command.push_str(&format!(" --{key} "));
            }
        } else {
            command.push_str(&format!(" --{key}={value} "));
        }
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use crate::test_support::cluster_from_yaml;

    fn commands(yaml: &str) -> (String, Vec<String>) {
        let cluster = cluster_from_yaml(yaml);
        let settings = Settings::default();
        let ctx = ClusterContext::new(&cluster, &settings);
        let head = GroupView::head(&cluster);
        let head_cmd = render_command(NodeType::Head, &complete_params(&ctx, &head));
        let workers = cluster
            .spec
            .worker_groups()
            .iter()
            .map(|group| {
                let view = GroupView::worker(group);
                render_command(NodeType::Worker, &complete_params(&ctx, &view))
            })
            .collect();
        (head_cmd, workers)
    }

    const SAMPLE: &str = r#"
metadata: {name: raycluster-sample, namespace: default, uid: u-1}
spec:
  headGroupSpec:
    rayStartParams: {}
    template:
      spec:
        containers:
        - name: ray-head
          image: rayproject/ray:2.46.0
          resources:
            limits: {cpu: "1", memory: 2Gi}
            requests: {cpu: "1", memory: 2Gi}
  workerGroupSpecs:
  - groupName: small-group
    replicas: 1
    minReplicas: 1
    maxReplicas: 5
    rayStartParams: {}
    template:
      spec:
        containers:
        - name: ray-worker
          image: rayproject/ray:2.46.0
          resources:
            limits: {cpu: "1", memory: 1G}
            requests: {cpu: 500m, memory: 1G}
"#;

    #[test]
    fn reference_head_and_worker_commands() {
        let (head, workers) = commands(SAMPLE);
        assert_eq!(
            head,
            "ray start --head  --block  --dashboard-agent-listen-port=52365  --dashboard-host=0.0.0.0  --memory=2147483648  --metrics-export-port=8080  --num-cpus=1 "
        );
        assert_eq!(
            workers,
            [
                "ray start  --address=raycluster-sample-head-svc.default.svc.cluster.local:6379  --block  --dashboard-agent-listen-port=52365  --memory=1000000000  --metrics-export-port=8080  --num-cpus=1 "
            ]
        );
    }

    #[test]
    fn flag_rules_table() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("block", "false")], "ray start "),
            (
                &[("disable-usage-stats", "TRUE")],
                "ray start  --disable-usage-stats ",
            ),
            (&[("log-color", "true")], "ray start  --log-color=true "),
            (
                &[("include-dashboard", "false")],
                "ray start  --include-dashboard=false ",
            ),
            (&[("b", "2"), ("a", "1")], "ray start  --a=1  --b=2 "),
        ];
        for (params, expected) in cases {
            let map = params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(render_command(NodeType::Worker, &map), *expected);
        }
    }

    #[test]
    fn group_resources_labels_and_accelerators() {
        let (head, workers) = commands(
            r#"
metadata: {name: c, namespace: ns}
spec:
  enableInTreeAutoscaling: true
  headGroupSpec:
    rayStartParams: {port: "6380", num-cpus: "0"}
    labels: {zone: a, accel: none}
    template: {spec: {containers: [{name: h, image: i}]}}
  workerGroupSpecs:
  - groupName: tpu
    rayStartParams: {}
    resources: {CPU: 1500m, memory: 1Gi, Custom: 500m}
    template:
      spec:
        containers:
        - name: w
          image: i
          resources:
            limits: {google.com/tpu: "4", nvidia.com/gpu: "2"}
  - groupName: mig
    rayStartParams: {resources: "'{\"TPU\": 1}'"}
    template:
      spec:
        containers:
        - name: w
          image: i
          resources:
            limits: {nvidia.com/mig-1g.5gb: "1", google.com/tpu: "4"}
"#,
        );
        assert_eq!(
            head,
            "ray start --head  --block  --dashboard-agent-listen-port=52365  --dashboard-host=0.0.0.0  --labels=accel=none,zone=a  --metrics-export-port=8080  --no-monitor  --num-cpus=0  --port=6380 "
        );
        assert_eq!(
            workers[0],
            "ray start  --address=c-head-svc.ns.svc.cluster.local:6380  --block  --dashboard-agent-listen-port=52365  --memory=1073741824  --metrics-export-port=8080  --num-cpus=2  --num-gpus=2  --resources='{\"Custom\":0.5,\"TPU\":4}' "
        );
        assert!(workers[1].contains(" --num-gpus=1 "), "{}", workers[1]);
        assert!(
            workers[1].contains(" --resources='{\"TPU\": 1}' "),
            "{}",
            workers[1]
        );
    }

    #[test]
    fn gcs_ft_options_point_flags_at_env() {
        let (head, _) = commands(
            r#"
metadata: {name: c, namespace: ns}
spec:
  gcsFaultToleranceOptions:
    redisAddress: redis:6379
    redisPassword: {value: secret}
    redisUsername: {value: user}
  headGroupSpec:
    template: {spec: {containers: [{name: h, image: i}]}}
"#,
        );
        assert!(
            head.contains(" --redis-password=$REDIS_PASSWORD "),
            "{head}"
        );
        assert!(
            head.contains(" --redis-username=$REDIS_USERNAME "),
            "{head}"
        );
    }

    #[test]
    fn gpu_names() {
        assert!(is_gpu_resource("nvidia.com/gpu"));
        assert!(is_gpu_resource("amd.com/gpu"));
        assert!(is_gpu_resource("nvidia.com/mig-3g.20gb"));
        assert!(!is_gpu_resource("nvidia.com/mig-3g.20"));
        assert!(!is_gpu_resource("google.com/tpu"));
    }
}
