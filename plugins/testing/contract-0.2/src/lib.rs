//! A reconciler built against `wasmray:plugin@0.2.0` (the frozen WIT in
//! `wit/plugin@0.2.0/`), with wit-bindgen and no SDK, as a third party's plugin of that
//! version was. The host's tests load it to prove that a host serving 0.3.0 still serves
//! 0.2.0 plugins.
//!
//! For every parent it applies one ConfigMap `<parent>-contract-0-2` whose data echoes what
//! it saw, in the shape 0.2.0 gave it: `contract` ("0.2.0"), `config` (its configuration),
//! `pods` (how many) and `podWriteFailure` (the "pod-write-failure" extension, or `null`).
//! Its configuration text `refuse` makes it refuse every call.

// Only a component carries the export; the crate is never built natively.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    path: "../../../wit/plugin@0.2.0",
    world: "wasmray:plugin/reconciler@0.2.0",
});

use exports::wasmray::plugin::reconcile::{Guest, ReconcileInput, ReconcileOutput};
use wasmray::plugin::types::{DesiredObject, PluginError, WriteMode};

struct ContractZeroTwo;

/// The `metadata.name` of a parent's JSON, without a JSON library: the plugin stays as
/// small as a hand-written one of that time.
fn parent_name(parent: &str) -> &str {
    let after = parent
        .split_once("\"metadata\"")
        .and_then(|(_, rest)| rest.split_once("\"name\""))
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(_, rest)| rest);
    after
        .and_then(|rest| rest.split_once('"'))
        .map_or("unnamed", |(name, _)| name)
}

fn quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Guest for ContractZeroTwo {
    fn kinds() -> Vec<String> {
        vec!["RayCluster".to_owned()]
    }

    fn reconcile(input: ReconcileInput) -> Result<ReconcileOutput, PluginError> {
        if input.config == "refuse" {
            return Err(PluginError {
                reason: "Refused".to_owned(),
                message: "configured to refuse".to_owned(),
                retry_after_ms: None,
            });
        }
        let failure = input
            .ray
            .extensions
            .iter()
            .find(|(key, _)| key == "pod-write-failure")
            .map_or_else(|| "null".to_owned(), |(_, json)| json.clone());
        // 41 words per pod in the 0.2.0 table.
        let pods = input.pods.pods.len() / 41;
        let name = parent_name(&input.parent);
        let config_map = format!(
            "{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":{}}},\"data\":{{\"contract\":\"0.2.0\",\"config\":{},\"pods\":\"{pods}\",\"podWriteFailure\":{}}}}}",
            quoted(&format!("{name}-contract-0-2")),
            quoted(&input.config),
            quoted(&failure),
        );
        Ok(ReconcileOutput {
            create_pods: Vec::new(),
            apply: vec![DesiredObject {
                object: config_map,
                mode: WriteMode::Apply,
            }],
            delete: Vec::new(),
            status: None,
            events: Vec::new(),
            ray_actions: Vec::new(),
            ray_queries: Vec::new(),
            requeue_after_ms: None,
        })
    }
}

export!(ContractZeroTwo);
