//! The desired Serve config: `serveConfigV2` (YAML) as the JSON document the dashboard
//! takes, and its fingerprint.

use serde_json::Value;
use wasmray_plugin_sdk::names::{FNV_OFFSET, fnv1a};

/// `serveConfigV2` as the JSON document the dashboard takes. Errors say what is wrong.
pub fn desired_config(yaml: &str) -> Result<Value, String> {
    let parsed: serde_yaml::Value = serde_yaml::from_str(yaml)
        .map_err(|error| format!("serveConfigV2 is not YAML: {error}"))?;
    let json = serde_json::to_value(parsed)
        .map_err(|error| format!("serveConfigV2 cannot be JSON: {error}"))?;
    match &json {
        Value::Object(fields) => match fields.get("applications") {
            Some(Value::Array(_)) | None => Ok(json),
            Some(_) => Err("serveConfigV2: applications must be a list".to_owned()),
        },
        _ => Err("serveConfigV2 must be a YAML mapping".to_owned()),
    }
}

/// A short, stable fingerprint of a config, for action ids and messages.
pub fn fingerprint(config: &Value) -> String {
    let hash = fnv1a(FNV_OFFSET, config.to_string().as_bytes());
    format!("{:08x}", hash >> 32)
}
