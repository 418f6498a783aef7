//! What one Ray node of a group provides, as Ray's autoscaler reads it from the spec
//! (KubeRay's `autoscaling_config.py`; `../shared/reference/ray-apis.md` §6): before any
//! node of the group exists, this is the shape an autoscaler packs demand onto.
//!
//! Per resource, the first source that has it wins: the group's `resources` map, then
//! `rayStartParams`, then the Ray container's limits, then its requests. CPU and memory
//! round up to whole units as Kubernetes' `Quantity.Value()` does. `object_store_memory`
//! is never a schedulable resource, so it is left out.
//!
//! What a pod or a whole cluster asks of Kubernetes (KubeRay's desired resources, which the
//! status and the batch schedulers' PodGroups report) is here too.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

use crate::quantity::Quantity;
use crate::raycluster::{RayClusterSpec, WorkerGroupSpec};

/// What one pod of `template` asks of Kubernetes: per resource name, the requests, falling
/// back to the limits, summed over the template's containers (init containers aside).
/// Unparsable quantities are left out (validation reports them).
pub fn pod_resources(template: &PodTemplateSpec) -> BTreeMap<&str, Quantity> {
    let mut total: BTreeMap<&str, Quantity> = BTreeMap::new();
    let containers = template
        .spec
        .as_ref()
        .map(|spec| spec.containers.as_slice());
    for resources in containers
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.resources.as_ref())
    {
        let requests = resources.requests.as_ref();
        let limits = resources.limits.as_ref();
        let names = requests
            .into_iter()
            .flatten()
            .chain(limits.into_iter().flatten());
        let mut seen = BTreeSet::new();
        for (name, _) in names {
            if !seen.insert(name.as_str()) {
                continue;
            }
            let quantity = requests
                .and_then(|r| r.get(name))
                .or_else(|| limits.and_then(|l| l.get(name)))
                .and_then(|q| Quantity::parse(&q.0).ok());
            if let Some(quantity) = quantity {
                let entry = total.entry(name.as_str()).or_insert(Quantity::ZERO);
                *entry = *entry + quantity;
            }
        }
    }
    total
}

/// What a whole cluster asks of Kubernetes: the head pod plus, for each worker group that
/// is not suspended, `pods(group)` pods of its template.
pub fn cluster_resources(
    spec: &RayClusterSpec,
    pods: impl Fn(&WorkerGroupSpec) -> i64,
) -> BTreeMap<&str, Quantity> {
    let mut total = pod_resources(&spec.head_group_spec.template);
    for group in spec.worker_groups().iter().filter(|g| !g.is_suspended()) {
        let count = pods(group);
        for (name, quantity) in pod_resources(&group.template) {
            let entry = total.entry(name).or_insert(Quantity::ZERO);
            *entry = *entry + quantity.times(count);
        }
    }
    total
}

/// Ray resources of one node of a group: `group_resources` is the group's top-level
/// `resources` map, `params` its `rayStartParams`, `template` its pod template (the Ray
/// container is the first). Unparsable values are left out (validation reports them).
pub fn node_resources(
    group_resources: Option<&BTreeMap<String, String>>,
    params: Option<&BTreeMap<String, String>>,
    template: &PodTemplateSpec,
) -> BTreeMap<String, f64> {
    let mut resources = BTreeMap::new();
    let declared = group_resources.filter(|map| !map.is_empty());
    if let Some(declared) = declared {
        for (name, amount) in declared {
            let Ok(amount) = Quantity::parse(amount) else {
                continue;
            };
            let key = match name.as_str() {
                "cpu" | "CPU" => "CPU".to_owned(),
                "memory" => "memory".to_owned(),
                gpu if gpu.to_ascii_lowercase().ends_with("gpu") => "GPU".to_owned(),
                other => other.to_owned(),
            };
            resources.insert(key, amount.ceil_value() as f64);
        }
    }
    let param = |name: &str| {
        params
            .and_then(|params| params.get(name))
            .map(|value| value.trim().trim_matches(['"', '\'']).to_owned())
    };
    let container = template
        .spec
        .as_ref()
        .and_then(|spec| spec.containers.first());
    let requirements = container.and_then(|container| container.resources.as_ref());
    let quantity = |which: &str, name: &str| {
        let map = match which {
            "limits" => requirements.and_then(|r| r.limits.as_ref()),
            _ => requirements.and_then(|r| r.requests.as_ref()),
        };
        map.and_then(|map| map.get(name))
            .and_then(|q| Quantity::parse(&q.0).ok())
            .filter(|q| !q.is_zero())
            .map(|q| q.ceil_value() as f64)
    };
    let first_gpu = |which: &str| {
        let map = match which {
            "limits" => requirements.and_then(|r| r.limits.as_ref()),
            _ => requirements.and_then(|r| r.requests.as_ref()),
        };
        map.into_iter()
            .flatten()
            .filter(|(name, _)| name.to_ascii_lowercase().ends_with("gpu"))
            .find_map(|(_, q)| Quantity::parse(&q.0).ok().filter(|q| !q.is_zero()))
            .map(|q| q.ceil_value() as f64)
    };
    let number = |text: String| text.parse::<f64>().ok().filter(|n| n.is_finite());

    if !resources.contains_key("CPU")
        && let Some(cpu) = param("num-cpus")
            .and_then(number)
            .or_else(|| quantity("limits", "cpu"))
            .or_else(|| quantity("requests", "cpu"))
    {
        resources.insert("CPU".to_owned(), cpu);
    }
    if !resources.contains_key("GPU")
        && let Some(gpu) = param("num-gpus")
            .and_then(number)
            .or_else(|| first_gpu("limits"))
            .or_else(|| first_gpu("requests"))
    {
        resources.insert("GPU".to_owned(), gpu);
    }
    if !resources.contains_key("memory")
        && let Some(memory) = param("memory")
            .and_then(number)
            .or_else(|| quantity("limits", "memory"))
            .or_else(|| quantity("requests", "memory"))
    {
        resources.insert("memory".to_owned(), memory);
    }
    if declared.is_none() {
        // The `resources` start parameter: a JSON object, maybe quoted and escaped.
        if let Some(custom) = param("resources")
            .map(|text| text.replace('\\', ""))
            .and_then(|text| serde_json::from_str::<BTreeMap<String, Value>>(&text).ok())
        {
            for (name, amount) in custom {
                if let Some(amount) = amount.as_f64() {
                    resources.entry(name).or_insert(amount);
                }
            }
        }
        if !resources.contains_key("TPU")
            && let Some(tpu) = quantity("limits", "google.com/tpu")
                .or_else(|| quantity("requests", "google.com/tpu"))
        {
            resources.insert("TPU".to_owned(), tpu);
        }
    }
    resources.retain(|_, amount| *amount > 0.0);
    resources
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(resources: Value) -> PodTemplateSpec {
        serde_json::from_value(serde_json::json!({
            "spec": {"containers": [{"name": "ray-worker", "image": "ray", "resources": resources}]}
        }))
        .expect("template")
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn each_resource_comes_from_the_first_source_that_has_it() {
        let limits = template(serde_json::json!({
            "limits": {"cpu": "1500m", "memory": "2Gi", "nvidia.com/gpu": "1"},
            "requests": {"cpu": "500m"}
        }));
        // (group resources, start params, expected)
        type Params = Option<BTreeMap<String, String>>;
        type Case = (Params, Params, Vec<(&'static str, f64)>);
        let cases: Vec<Case> = vec![
            (
                None,
                None,
                vec![("CPU", 2.0), ("GPU", 1.0), ("memory", 2147483648.0)],
            ),
            (
                None,
                Some(map(&[
                    ("num-cpus", "4"),
                    ("resources", r#"'{"custom_a": 2}'"#),
                ])),
                vec![
                    ("CPU", 4.0),
                    ("GPU", 1.0),
                    ("custom_a", 2.0),
                    ("memory", 2147483648.0),
                ],
            ),
            (
                Some(map(&[("cpu", "3"), ("TPU", "4")])),
                Some(map(&[
                    ("num-cpus", "8"),
                    ("resources", r#"{"custom_a": 2}"#),
                ])),
                // The group map overrides start params; its custom keys replace `resources`.
                vec![
                    ("CPU", 3.0),
                    ("GPU", 1.0),
                    ("TPU", 4.0),
                    ("memory", 2147483648.0),
                ],
            ),
            // An explicit 0 wins over the container's GPU limit.
            (
                None,
                Some(map(&[("num-gpus", "0")])),
                vec![("CPU", 2.0), ("memory", 2147483648.0)],
            ),
        ];
        for (group, params, expected) in cases {
            let got = node_resources(group.as_ref(), params.as_ref(), &limits);
            let expected: BTreeMap<String, f64> = expected
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            assert_eq!(got, expected, "group {group:?} params {params:?}");
        }
    }

    #[test]
    fn requests_count_when_no_limit_is_set() {
        let requests = template(serde_json::json!({"requests": {"cpu": "1", "memory": "1G"}}));
        let got = node_resources(None, None, &requests);
        assert_eq!(got.get("CPU"), Some(&1.0));
        assert_eq!(got.get("memory"), Some(&1e9));
    }
}
