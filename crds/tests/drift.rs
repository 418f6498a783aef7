//! The committed CRD YAML must be what the types generate; regenerate with
//! `cargo run -p wasmray-crds --bin crdgen -- crds/generated`.

use std::path::Path;

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("generated");
    for (file_name, crd) in wasmray_crds::crd::custom_resource_definitions().unwrap() {
        let expected = wasmray_crds::crd::to_yaml(&crd).unwrap();
        let committed = std::fs::read_to_string(dir.join(file_name))
            .unwrap_or_else(|error| panic!("{file_name}: {error}; run crdgen"));
        assert!(
            committed == expected,
            "crds/generated/{file_name} differs from the types: run `cargo run -p wasmray-crds --bin crdgen -- crds/generated`"
        );
    }
}

#[test]
fn crds_have_kuberay_names_columns_and_subresources() {
    for (_, crd) in wasmray_crds::crd::custom_resource_definitions().unwrap() {
        assert_eq!(crd.spec.group, "ray.io");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["all".to_owned()][..])
        );
        assert!(crd.spec.names.short_names.is_none());
        let version = &crd.spec.versions[0];
        assert!(version.served && version.storage);
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let columns: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|column| column.name.as_str())
            .collect();
        let expected: &[&str] = match crd.spec.names.kind.as_str() {
            "RayCluster" => &[
                "desired workers",
                "available workers",
                "cpus",
                "memory",
                "gpus",
                "tpus",
                "status",
                "age",
                "head pod IP",
                "head service IP",
            ],
            "RayJob" => &[
                "job status",
                "deployment status",
                "ray cluster name",
                "start time",
                "end time",
                "age",
            ],
            "RayService" => &["service status", "num serve endpoints"],
            other => panic!("unexpected kind {other}"),
        };
        assert_eq!(columns, expected);
        let yaml = wasmray_crds::crd::to_yaml(&crd).unwrap();
        assert!(
            !yaml.contains("nullable"),
            "{} has nullable",
            crd.spec.names.kind
        );
        for forbidden in ["anyOf:", "oneOf:", "allOf:", "$ref"] {
            assert!(
                !yaml.contains(forbidden),
                "{} contains {forbidden}",
                crd.spec.names.kind
            );
        }
    }
}
