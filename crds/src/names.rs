//! KubeRay's rules for the names of generated objects. The host and every plugin must agree
//! on them (the host looks up a cluster's head Service and auth Secret by name), so they
//! live here once.

use crate::raycluster::RayCluster;

/// KubeRay's `CheckName` budget: 63 minus room for generated suffixes.
pub const MAX_GENERATED_NAME_LENGTH: usize = 50;
/// The longest label value Kubernetes accepts.
pub const MAX_LABEL_VALUE_LENGTH: usize = 63;

/// KubeRay's `CheckName`: keep the last 50 characters; a name may not start with a digit or
/// punctuation, so such a first character becomes `r`.
pub fn check_name(name: &str) -> String {
    fix_first_char(keep_tail(name, MAX_GENERATED_NAME_LENGTH), true)
}

/// KubeRay's `CheckLabel`: keep the last 63 characters; leading punctuation becomes `r`.
pub fn check_label(value: &str) -> String {
    fix_first_char(keep_tail(value, MAX_LABEL_VALUE_LENGTH), false)
}

/// `<cluster>-head-svc` unless the user named the head Service.
pub fn head_service_name(cluster: &RayCluster) -> String {
    cluster
        .spec
        .head_group_spec
        .head_service
        .as_ref()
        .and_then(|service| service.metadata.name.as_deref())
        .filter(|name| !name.is_empty())
        .map_or_else(
            || {
                let cluster_name = cluster.metadata.name.as_deref().unwrap_or_default();
                check_name(&format!("{cluster_name}-head-svc"))
            },
            str::to_owned,
        )
}

/// The Secret that holds a token-auth cluster's Ray token (key
/// [`crate::constants::RAY_AUTH_TOKEN_SECRET_KEY`]).
pub fn auth_secret_name(cluster_name: &str) -> String {
    check_name(cluster_name)
}

fn keep_tail(text: &str, max: usize) -> &str {
    match text.len().checked_sub(max) {
        Some(offset) if offset > 0 => text.get(offset..).unwrap_or(text),
        _ => text,
    }
}

fn fix_first_char(text: &str, digits_too: bool) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) if first.is_ascii_punctuation() || (digits_too && first.is_ascii_digit()) => {
            format!("r{}", chars.as_str())
        }
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kuberay_limits() {
        let svc = format!("{}-head-svc", "b".repeat(53));
        assert_eq!(check_name(&svc).len(), 50);
        assert!(check_name(&svc).ends_with("-head-svc"));
        assert_eq!(check_name("-x"), "rx");
        assert_eq!(check_name("1x"), "rx");
        assert_eq!(check_label("1x"), "1x");
        assert_eq!(check_label(&"c".repeat(70)).len(), 63);
    }

    #[test]
    fn head_service_is_named_after_the_cluster_unless_the_user_named_it() {
        let mut cluster: RayCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "ray.io/v1", "kind": "RayCluster",
            "metadata": {"name": "sample"},
            "spec": {"headGroupSpec": {"template": {"spec": {"containers": []}}}}
        }))
        .unwrap();
        assert_eq!(head_service_name(&cluster), "sample-head-svc");
        cluster.spec.head_group_spec.head_service = Some(
            serde_json::from_value(serde_json::json!({"metadata": {"name": "custom"}})).unwrap(),
        );
        assert_eq!(head_service_name(&cluster), "custom");
    }
}
