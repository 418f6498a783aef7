//! The desired Serve config: `serveConfigV2` (YAML) as the JSON document the dashboard
//! takes, and its fingerprint.

use serde_json::Value;

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
    let text = config.to_string();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:08x}", hash >> 32)
}
