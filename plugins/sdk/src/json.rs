use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::PluginError;

/// Parses JSON text from the host into a typed value; `what` names it in the error.
pub fn from_json<T: DeserializeOwned>(what: &str, text: &str) -> Result<T, PluginError> {
    serde_json::from_str(text)
        .map_err(|err| PluginError::new("InvalidInput", format!("{what}: {err}")))
}

/// Serialises a typed value to JSON text for the host; `what` names it in the error.
pub fn to_json<T: Serialize + ?Sized>(what: &str, value: &T) -> Result<String, PluginError> {
    serde_json::to_string(value)
        .map_err(|err| PluginError::new("SerializationFailed", format!("{what}: {err}")))
}
