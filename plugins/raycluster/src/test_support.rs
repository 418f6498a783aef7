//! Builders shared by the unit tests.

use wasmray_crds::raycluster::RayCluster;

/// A RayCluster from YAML without `apiVersion`/`kind`.
pub fn cluster_from_yaml(yaml: &str) -> RayCluster {
    let mut value: serde_json::Value = serde_yaml::from_str(yaml).expect("test YAML parses");
    value["apiVersion"] = "ray.io/v1".into();
    value["kind"] = "RayCluster".into();
    serde_json::from_value(value).expect("test YAML is a RayCluster")
}
