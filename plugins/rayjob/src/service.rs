//! When the RayJob's head Service `<rayjob>-head-svc` (built by
//! `wasmray_crds::parent_services`) is written.

use wasmray_crds::constants::RAY_CLUSTER_LABEL_KEY;
use wasmray_plugin_sdk::{ObservedService, lookup};

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
    use wasmray_crds::parent_services::head_service;

    #[test]
    fn service_copies_the_clusters_endpoints_and_selects_its_head() {
        let mut cluster = cluster_from_yaml("c1", None);
        assert!(head_service("RayJob", "job", Some("ns"), &cluster, "c1", false).is_none());
        cluster.status = serde_json::from_value(serde_json::json!({
            "endpoints": {"dashboard": "8265", "client": "10001", "gcs-server": "6379"}
        }))
        .unwrap();
        let service = head_service("RayJob", "job", Some("ns"), &cluster, "c1", false).unwrap();
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
        let with_ip = head_service("RayJob", "job", Some("ns"), &cluster, "c1", true).unwrap();
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
