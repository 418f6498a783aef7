//! Serialization of Kubernetes objects embedded in a spec. k8s-openapi always writes
//! `apiVersion` and `kind` for a top-level resource type, but an embedded Service in KubeRay's
//! API carries neither, so writing them would change the user's object on every round trip.

use k8s_openapi::api::core::v1::Service;
use serde::Serialize;
use serde::ser::{Error, Serializer};

pub fn serialize_service<S: Serializer>(
    service: &Option<Service>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut value = serde_json::to_value(service).map_err(S::Error::custom)?;
    if let Some(fields) = value.as_object_mut() {
        fields.remove("apiVersion");
        fields.remove("kind");
    }
    value.serialize(serializer)
}
