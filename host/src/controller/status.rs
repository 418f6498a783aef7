//! The parent's status: what the plugin sees of it, whether its answer changes it, and the
//! host's own condition for failed plugin calls.
//!
//! Status is written with server-side apply on the status subresource. The plugin's status
//! goes in under the host's field manager; each host condition (`PluginFailure`,
//! `DeletionBlocked`, `WriteFailure`, `Throttled`, `SchedulingHeld`) under a manager of its own, so each can be set and removed without
//! touching the others (conditions are a list-map keyed by `type`).

use serde_json::{Map, Value, json};

/// Condition type the host sets when the plugin call for an object fails.
pub const PLUGIN_FAILURE_CONDITION: &str = "PluginFailure";
/// Condition type the host sets when a plugin keeps a finalizer on an object being deleted.
pub const DELETION_BLOCKED_CONDITION: &str = "DeletionBlocked";
/// Condition type the host sets when writes for an object fail (the API server refused them
/// or could not be reached).
pub const WRITE_FAILURE_CONDITION: &str = "WriteFailure";
/// Condition type the host sets while an object keeps hitting a host limit (the requeue
/// floor, the per-object write rate).
pub const THROTTLED_CONDITION: &str = "Throttled";
/// Condition type the host sets while the object's scheduler plugin holds its pods back.
pub const SCHEDULING_HELD_CONDITION: &str = "SchedulingHeld";
const HOST_CONDITIONS: [&str; 5] = [
    PLUGIN_FAILURE_CONDITION,
    DELETION_BLOCKED_CONDITION,
    WRITE_FAILURE_CONDITION,
    THROTTLED_CONDITION,
    SCHEDULING_HELD_CONDITION,
];

fn conditions_mut(status: &mut Value) -> Option<&mut Vec<Value>> {
    status.get_mut("conditions").and_then(Value::as_array_mut)
}

fn is_host_condition(condition: &Value) -> bool {
    condition
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|type_| HOST_CONDITIONS.contains(&type_))
}

fn condition_of<'a>(status: Option<&'a Value>, type_: &str) -> Option<&'a Value> {
    status?
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|condition| condition.get("type").and_then(Value::as_str) == Some(type_))
}

/// Removes the host-owned conditions from a status (in place); drops an emptied list.
pub fn strip_host_conditions(status: &mut Value) {
    let Some(conditions) = conditions_mut(status) else {
        return;
    };
    conditions.retain(|condition| !is_host_condition(condition));
    if conditions.is_empty()
        && let Some(map) = status.as_object_mut()
    {
        map.remove("conditions");
    }
}

/// The host's `PluginFailure` condition in a status, if set.
pub fn plugin_failure(status: Option<&Value>) -> Option<&Value> {
    condition_of(status, PLUGIN_FAILURE_CONDITION)
}

/// The host's `WriteFailure` condition in a status, if set.
pub fn write_failure(status: Option<&Value>) -> Option<&Value> {
    condition_of(status, WRITE_FAILURE_CONDITION)
}

/// The host's `SchedulingHeld` condition in a status, if set.
pub fn scheduling_held(status: Option<&Value>) -> Option<&Value> {
    condition_of(status, SCHEDULING_HELD_CONDITION)
}

/// The host's `Throttled` condition in a status, if set.
pub fn throttled(status: Option<&Value>) -> Option<&Value> {
    condition_of(status, THROTTLED_CONDITION)
}

/// Whether the plugin's new status differs from the current one (host conditions aside).
/// An absent status equals an empty one.
pub fn status_differs(current: Option<&Value>, desired: &Value) -> bool {
    let empty = Value::Object(Map::new());
    let mut current = current.cloned().unwrap_or_else(|| empty.clone());
    if current.is_null() {
        current = empty.clone();
    }
    strip_host_conditions(&mut current);
    let desired = if desired.is_null() { &empty } else { desired };
    &current != desired
}

/// The `PluginFailure` condition to apply, or None when the current one already says this.
pub fn plugin_failure_condition(
    current: Option<&Value>,
    reason: &str,
    message: &str,
    now_rfc3339: &str,
    generation: Option<i64>,
) -> Option<Value> {
    host_condition(
        current,
        PLUGIN_FAILURE_CONDITION,
        reason,
        message,
        now_rfc3339,
        generation,
    )
}

/// A True host condition of `type_` to apply, or None when the current one already says
/// this.
pub fn host_condition(
    current: Option<&Value>,
    type_: &str,
    reason: &str,
    message: &str,
    now_rfc3339: &str,
    generation: Option<i64>,
) -> Option<Value> {
    let existing = condition_of(current, type_);
    let same = |field: &str, value: &str| {
        existing.and_then(|c| c.get(field)).and_then(Value::as_str) == Some(value)
    };
    if same("status", "True") && same("reason", reason) && same("message", message) {
        return None;
    }
    // The condition stays True across different failures: keep its transition time.
    let since = existing
        .filter(|_| same("status", "True"))
        .and_then(|c| c.get("lastTransitionTime"))
        .and_then(Value::as_str)
        .unwrap_or(now_rfc3339);
    let mut condition = json!({
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    });
    if let (Some(generation), Some(map)) = (generation, condition.as_object_mut()) {
        map.insert("observedGeneration".into(), generation.into());
    }
    Some(condition)
}

/// Condition reasons must match `^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`; plugin-chosen
/// reasons are cleaned to fit.
pub fn condition_reason(raw: &str) -> String {
    let cleaned: String = raw
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let cleaned = cleaned.trim_start_matches(|c: char| !c.is_ascii_alphabetic());
    if cleaned.is_empty() {
        "PluginFailed".to_owned()
    } else {
        cleaned.chars().take(1024).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_conditions_do_not_count_as_plugin_status() {
        let current = json!({"state": "ready", "conditions": [
            {"type": "HeadPodReady", "status": "True"},
            {"type": "PluginFailure", "status": "True"}]});
        let desired =
            json!({"state": "ready", "conditions": [{"type": "HeadPodReady", "status": "True"}]});
        assert!(!status_differs(Some(&current), &desired));
        let changed =
            json!({"state": "ready", "conditions": [{"type": "HeadPodReady", "status": "False"}]});
        assert!(status_differs(Some(&current), &changed));
        assert!(!status_differs(None, &json!({})));
        assert!(status_differs(None, &json!({"state": "ready"})));
        let only_host = json!({"conditions": [{"type": "PluginFailure", "status": "True"}]});
        assert!(!status_differs(Some(&only_host), &json!({})));
    }

    #[test]
    fn failure_condition_is_written_once_per_message() {
        let first = plugin_failure_condition(
            None,
            "Trap",
            "plugin x panicked",
            "2026-01-01T00:00:00Z",
            Some(3),
        )
        .unwrap();
        assert_eq!(first["observedGeneration"], 3);
        let status = json!({"conditions": [first]});
        assert!(
            plugin_failure_condition(
                Some(&status),
                "Trap",
                "plugin x panicked",
                "2026-01-01T00:01:00Z",
                Some(3)
            )
            .is_none()
        );
        let next = plugin_failure_condition(
            Some(&status),
            "DeadlineExceeded",
            "slow",
            "2026-01-01T00:01:00Z",
            None,
        )
        .unwrap();
        assert_eq!(next["lastTransitionTime"], "2026-01-01T00:00:00Z");
        assert!(plugin_failure(Some(&status)).is_some());
    }

    #[test]
    fn reasons_are_made_valid() {
        assert_eq!(condition_reason("InvalidSpec"), "InvalidSpec");
        assert_eq!(condition_reason("9 bad-reason!"), "badreason");
        assert_eq!(condition_reason("!!"), "PluginFailed");
    }
}
