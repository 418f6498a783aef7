//! What a plugin's answer may make the host write, enforced before anything is written.
//!
//! A plugin runs with no credentials of its own: the host writes for it with the operator's.
//! So the host, not RBAC, is what stops a third-party policy from writing what its author
//! could not: each parent kind lists the child kinds it may have (KubeRay's children), a
//! platform team may add kinds for one plugin in its binding (never the plugin itself), a
//! Role may grant only what KubeRay grants its autoscaler, and every answer is bounded.
//! An answer that breaks a rule is refused as a whole; nothing of it is carried out.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use kube::api::DynamicObject;
use serde_json::Value;

/// A child kind by `apiVersion` and `kind`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KindRef {
    pub api_version: String,
    pub kind: String,
}

impl KindRef {
    pub fn new(api_version: &str, kind: &str) -> Self {
        KindRef {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        }
    }
}

impl fmt::Display for KindRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.api_version, self.kind)
    }
}

impl std::str::FromStr for KindRef {
    type Err = String;

    /// `v1/ConfigMap`, `batch/v1/Job`: the apiVersion, a slash, the kind.
    fn from_str(text: &str) -> Result<Self, String> {
        match text.rsplit_once('/') {
            Some((api_version, kind))
                if !api_version.is_empty()
                    && !kind.is_empty()
                    && kind.chars().all(|c| c.is_ascii_alphanumeric()) =>
            {
                Ok(KindRef::new(api_version, kind))
            }
            _ => Err(format!(
                "{text:?} is not APIVERSION/KIND (e.g. v1/ConfigMap or batch/v1/Job)"
            )),
        }
    }
}

/// One permission a parent kind's Role may grant: verbs on one resource of one API group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub api_group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

/// What one answer may ask for at most. A platform team raises a limit per plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerLimits {
    /// Pods created by one answer.
    pub pods_per_answer: usize,
    /// Other children created or applied by one answer.
    pub objects_per_answer: usize,
    /// Events recorded by one answer.
    pub events_per_answer: usize,
    /// Bytes of the status as JSON.
    pub status_bytes: usize,
    /// Bytes of one event message (events.k8s.io caps a note at 1 KiB).
    pub event_message_bytes: usize,
}

impl Default for AnswerLimits {
    fn default() -> Self {
        AnswerLimits {
            pods_per_answer: 1000,
            objects_per_answer: 100,
            events_per_answer: 100,
            status_bytes: 256 * 1024,
            event_message_bytes: 1024,
        }
    }
}

impl AnswerLimits {
    /// The names `--plugin-limit NAME=LIMIT=VALUE` and the docs use.
    pub const NAMES: [&str; 5] = [
        "pods-per-answer",
        "objects-per-answer",
        "events-per-answer",
        "status-bytes",
        "event-message-bytes",
    ];

    /// Sets the limit called `name`.
    pub fn set(&mut self, name: &str, value: usize) -> Result<(), String> {
        let slot = match name {
            "pods-per-answer" => &mut self.pods_per_answer,
            "objects-per-answer" => &mut self.objects_per_answer,
            "events-per-answer" => &mut self.events_per_answer,
            "status-bytes" => &mut self.status_bytes,
            "event-message-bytes" => &mut self.event_message_bytes,
            _ => {
                return Err(format!(
                    "unknown limit {name:?}; known: {}",
                    Self::NAMES.join(", ")
                ));
            }
        };
        *slot = value;
        Ok(())
    }
}

/// The rules one answer is checked against.
#[derive(Clone, Copy, Debug)]
pub struct WritePolicy<'a> {
    /// The child kinds of the parent kind.
    pub kinds: &'a [(&'static str, &'static str)],
    /// Kinds the platform team allowed this plugin beyond those.
    pub extra_kinds: &'a [KindRef],
    /// What a Role the answer writes may grant.
    pub grants: &'a [Grant],
    pub limits: &'a AnswerLimits,
    /// Pods the parent's spec allows at most (head and workers), if it bounds them.
    pub pod_ceiling: Option<usize>,
    /// Pods the parent owns now and that are not being deleted.
    pub pods_owned: usize,
}

impl WritePolicy<'_> {
    /// Whether the answer may write (or delete) children of this kind.
    pub fn allows(&self, api_version: &str, kind: &str) -> bool {
        self.kinds.iter().any(|(allowed_version, allowed_kind)| {
            *allowed_version == api_version && *allowed_kind == kind
        }) || self
            .extra_kinds
            .iter()
            .any(|extra| extra.api_version == api_version && extra.kind == kind)
    }

    /// The allowed kinds, for messages.
    pub fn allowed_list(&self) -> String {
        let kinds: BTreeSet<String> = self
            .kinds
            .iter()
            .map(|(api_version, kind)| format!("{api_version} {kind}"))
            .chain(self.extra_kinds.iter().map(KindRef::to_string))
            .collect();
        if kinds.is_empty() {
            "none".to_owned()
        } else {
            kinds.into_iter().collect::<Vec<_>>().join(", ")
        }
    }

    /// Checks what a Role or RoleBinding in an answer would grant; `roles` are the names of
    /// the Roles the same answer writes. Other kinds pass.
    pub fn check_rbac(
        &self,
        object: &DynamicObject,
        kind: &str,
        namespace: &str,
        roles: &BTreeSet<&str>,
    ) -> Result<(), String> {
        match kind {
            "Role" => self.check_role(&object.data),
            "RoleBinding" => check_role_binding(&object.data, namespace, roles),
            _ => Ok(()),
        }
    }

    fn check_role(&self, role: &Value) -> Result<(), String> {
        let rules = role.get("rules").and_then(Value::as_array);
        for (index, rule) in rules.into_iter().flatten().enumerate() {
            let strings = |field: &str| -> Vec<&str> {
                rule.get(field)
                    .and_then(Value::as_array)
                    .map(|values| values.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default()
            };
            if !strings("nonResourceURLs").is_empty() {
                return Err(format!(
                    "rules[{index}] grants non-resource URLs, which a Role of a plugin may not"
                ));
            }
            for group in strings("apiGroups") {
                for resource in strings("resources") {
                    for verb in strings("verbs") {
                        let granted = self.grants.iter().any(|grant| {
                            grant.api_group == group
                                && grant.resource == resource
                                && grant.verbs.contains(&verb)
                        });
                        if !granted {
                            return Err(format!(
                                "rules[{index}] grants {verb:?} on {resource:?} of API group {group:?}, beyond what this kind's Role may grant ({})",
                                self.grants_text()
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn grants_text(&self) -> String {
        if self.grants.is_empty() {
            return "nothing".to_owned();
        }
        self.grants
            .iter()
            .map(|grant| {
                let group = if grant.api_group.is_empty() {
                    "core"
                } else {
                    grant.api_group
                };
                format!("{group}/{}: {}", grant.resource, grant.verbs.join(","))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A RoleBinding may bind only a Role of the same answer, and only to ServiceAccounts of
/// the parent's namespace: never a ClusterRole, a user or a group.
fn check_role_binding(
    binding: &Value,
    namespace: &str,
    roles: &BTreeSet<&str>,
) -> Result<(), String> {
    let role_ref = binding.get("roleRef");
    let field = |name: &str| {
        role_ref
            .and_then(|role_ref| role_ref.get(name))
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    if field("kind") != "Role" || field("apiGroup") != "rbac.authorization.k8s.io" {
        return Err(format!(
            "roleRef must be a rbac.authorization.k8s.io Role, not {} {:?}",
            field("kind"),
            field("name")
        ));
    }
    if !roles.contains(field("name")) {
        return Err(format!(
            "roleRef names Role {:?}, which the same answer does not write",
            field("name")
        ));
    }
    let subjects = binding.get("subjects").and_then(Value::as_array);
    for (index, subject) in subjects.into_iter().flatten().enumerate() {
        let of = |name: &str| {
            subject
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        let subject_namespace = of("namespace");
        if of("kind") != "ServiceAccount"
            || !(subject_namespace.is_empty() || subject_namespace == namespace)
        {
            return Err(format!(
                "subjects[{index}] must be a ServiceAccount of namespace {namespace:?}, not {} {:?}",
                of("kind"),
                of("name")
            ));
        }
    }
    Ok(())
}

/// Extra kinds and raised limits a platform team gave one plugin in its binding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PluginAllowance {
    pub extra_kinds: Vec<KindRef>,
    pub limits: AnswerLimits,
}

/// Every plugin's allowance, by plugin name; plugins not named get the defaults.
pub type Allowances = BTreeMap<String, PluginAllowance>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GRANTS: &[Grant] = &[
        Grant {
            api_group: "",
            resource: "pods",
            verbs: &["get", "list", "watch", "patch"],
        },
        Grant {
            api_group: "ray.io",
            resource: "rayclusters",
            verbs: &["get", "patch"],
        },
    ];

    fn policy(limits: &AnswerLimits) -> WritePolicy<'_> {
        WritePolicy {
            kinds: &[("v1", "Service"), ("rbac.authorization.k8s.io/v1", "Role")],
            extra_kinds: &[],
            grants: GRANTS,
            limits,
            pod_ceiling: None,
            pods_owned: 0,
        }
    }

    fn object(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn kinds_parse_and_print() {
        let kind: KindRef = "batch/v1/Job".parse().unwrap();
        assert_eq!(kind, KindRef::new("batch/v1", "Job"));
        assert_eq!(kind.to_string(), "batch/v1 Job");
        assert!("ConfigMap".parse::<KindRef>().is_err());
        assert!("v1/".parse::<KindRef>().is_err());
    }

    #[test]
    fn limits_are_set_by_name() {
        let mut limits = AnswerLimits::default();
        limits.set("pods-per-answer", 5000).unwrap();
        assert_eq!(limits.pods_per_answer, 5000);
        let error = limits.set("pods", 1).unwrap_err();
        assert!(error.contains("pods-per-answer"), "{error}");
    }

    #[test]
    fn a_role_grants_only_what_the_kind_allows() {
        let limits = AnswerLimits::default();
        let policy = policy(&limits);
        let roles = BTreeSet::new();
        let role = |rules: Value| {
            object(
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "rc"}, "rules": rules}),
            )
        };
        let ok =
            role(json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]}]));
        assert_eq!(policy.check_rbac(&ok, "Role", "ns", &roles), Ok(()));
        for (rules, expected) in [
            (
                json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]),
                "\"get\" on \"secrets\"",
            ),
            (
                json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
                "\"*\" on \"*\"",
            ),
            (
                json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]}]),
                "\"delete\" on \"pods\"",
            ),
            (
                json!([{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]),
                "non-resource URLs",
            ),
        ] {
            let error = policy
                .check_rbac(&role(rules), "Role", "ns", &roles)
                .unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn a_role_binding_binds_only_a_role_of_the_answer_to_local_service_accounts() {
        let limits = AnswerLimits::default();
        let policy = policy(&limits);
        let roles = BTreeSet::from(["rc"]);
        let binding = |role_ref: Value, subjects: Value| {
            object(
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "rc"}, "roleRef": role_ref, "subjects": subjects}),
            )
        };
        let role_ref =
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "rc"});
        let local = json!([{"kind": "ServiceAccount", "name": "rc", "namespace": "ns"}]);
        assert_eq!(
            policy.check_rbac(
                &binding(role_ref.clone(), local.clone()),
                "RoleBinding",
                "ns",
                &roles
            ),
            Ok(())
        );
        for (role_ref, subjects, expected) in [
            (
                json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"}),
                local.clone(),
                "ClusterRole \"cluster-admin\"",
            ),
            (
                json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "other"}),
                local.clone(),
                "does not write",
            ),
            (
                role_ref.clone(),
                json!([{"kind": "User", "name": "alice"}]),
                "User \"alice\"",
            ),
            (
                role_ref.clone(),
                json!([{"kind": "ServiceAccount", "name": "x", "namespace": "kube-system"}]),
                "ServiceAccount \"x\"",
            ),
        ] {
            let error = policy
                .check_rbac(&binding(role_ref, subjects), "RoleBinding", "ns", &roles)
                .unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn extra_kinds_extend_the_kinds_of_the_parent() {
        let limits = AnswerLimits::default();
        let extra = [KindRef::new("v1", "ConfigMap")];
        let mut policy = policy(&limits);
        assert!(policy.allows("v1", "Service"));
        assert!(!policy.allows("v1", "ConfigMap"));
        policy.extra_kinds = &extra;
        assert!(policy.allows("v1", "ConfigMap"));
        assert!(policy.allowed_list().contains("v1 ConfigMap"));
    }
}
