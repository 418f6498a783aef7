//! What the host observes. Pods become one-pod tables and services the contract's typed
//! records through [`crate::runtime::observe`]; the caches keep only those (a few hundred
//! bytes per pod instead of the full object), which keeps the operator's memory
//! proportional to Ray pods, and a call concatenates the pod tables. Children of other
//! kinds are passed whole.

use kube::api::DynamicObject;

pub use crate::runtime::records::{first_pod_labels, observed_service, pod_record, pod_table};
pub use wasmray_pod_table::Table as PodTable;

use super::wit::{ObservedObject, Timestamp};

/// The current time as a contract timestamp.
pub fn now() -> Timestamp {
    crate::runtime::records::timestamp(k8s_openapi::jiff::Timestamp::now())
}

/// Another owned child, passed whole (without managedFields). Watch events may omit
/// `apiVersion` and `kind`; the watch knows them.
pub fn observe_object(object: &DynamicObject, api_version: &str, kind: &str) -> ObservedObject {
    let mut object = object.clone();
    object.metadata.managed_fields = None;
    object.types = Some(kube::api::TypeMeta {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
    });
    ObservedObject {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        name: object.metadata.name.clone().unwrap_or_default(),
        uid: object.metadata.uid.clone().unwrap_or_default(),
        // A DynamicObject is a JSON map with string keys: serialising it cannot fail.
        object: serde_json::to_string(&object).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_children_carry_their_kind_and_no_managed_fields() {
        let object: DynamicObject = serde_json::from_str(
            r#"{"metadata": {"name": "rc-redis-cleanup", "uid": "j1",
                 "managedFields": [{"manager": "x"}]},
                "status": {"succeeded": 1}}"#,
        )
        .unwrap();
        let observed = observe_object(&object, "batch/v1", "Job");
        assert_eq!(
            (observed.kind.as_str(), observed.uid.as_str()),
            ("Job", "j1")
        );
        let json: serde_json::Value = serde_json::from_str(&observed.object).unwrap();
        assert_eq!(json["apiVersion"], "batch/v1");
        assert_eq!(json["status"]["succeeded"], 1);
        assert!(json["metadata"].get("managedFields").is_none());
    }
}
