//! What a container runs: its argv and environment, resolved from the pod as a kubelet would,
//! plus the runner's documented changes (README: "What the runner changes").

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};

/// Ray flags that bind fixed ports on every node. Two Ray nodes of one cluster share a network
/// namespace here (unlike two pods of a real cluster), so every worker gets its own values.
pub const PER_NODE_PORT_FLAGS: [&str; 2] =
    ["--metrics-export-port", "--dashboard-agent-listen-port"];
/// First port of the per-worker range; worker slot `s` uses `PORT_BASE + 10 * s + i` for the
/// i-th flag of [`PER_NODE_PORT_FLAGS`]. Far from Ray's defaults (6379, 8265, 10001, 52365,
/// 8080) and its worker port range (10002-19999).
const PORT_BASE: u16 = 20000;

/// A value the runner cannot provide: the container waits with this message, as a kubelet's
/// `CreateContainerConfigError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

/// Where `env` values come from besides the pod: Secrets and ConfigMaps, read by the caller.
pub trait Lookup {
    fn secret_key(&self, name: &str, key: &str) -> Option<String>;
    fn config_map_key(&self, name: &str, key: &str) -> Option<String>;
    fn secret(&self, name: &str) -> Option<BTreeMap<String, String>>;
    fn config_map(&self, name: &str) -> Option<BTreeMap<String, String>>;
}

/// The container's environment in Kubernetes order: `envFrom` first, then `env`, each `env`
/// entry able to refer to earlier ones with `$(NAME)`.
pub fn environment(
    pod: &Pod,
    container: &Container,
    lookup: &dyn Lookup,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, name: String, value: String| {
        env.retain(|(existing, _)| *existing != name);
        env.push((name, value));
    };
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        let (values, what, name, optional) = if let Some(map) = &source.config_map_ref {
            (
                lookup.config_map(&map.name),
                "ConfigMap",
                map.name.clone(),
                map.optional,
            )
        } else if let Some(secret) = &source.secret_ref {
            (
                lookup.secret(&secret.name),
                "Secret",
                secret.name.clone(),
                secret.optional,
            )
        } else {
            continue;
        };
        match values {
            Some(values) => {
                for (key, value) in values {
                    set(&mut env, format!("{prefix}{key}"), value);
                }
            }
            None if optional == Some(true) => {}
            None => return Err(ConfigError(format!("{what} \"{name}\" not found"))),
        }
    }
    for var in container.env.iter().flatten() {
        if let Some(value) = env_value(pod, var, lookup, &env)? {
            set(&mut env, var.name.clone(), value);
        }
    }
    Ok(env)
}

fn env_value(
    pod: &Pod,
    var: &EnvVar,
    lookup: &dyn Lookup,
    earlier: &[(String, String)],
) -> Result<Option<String>, ConfigError> {
    let Some(source) = &var.value_from else {
        return Ok(Some(expand(
            var.value.as_deref().unwrap_or_default(),
            earlier,
        )));
    };
    if let Some(field) = &source.field_ref {
        return field_value(pod, &field.field_path).map(Some);
    }
    if let Some(key) = &source.secret_key_ref {
        return match lookup.secret_key(&key.name, &key.key) {
            Some(value) => Ok(Some(value)),
            None if key.optional == Some(true) => Ok(None),
            None => Err(ConfigError(format!(
                "env {}: key \"{}\" of Secret \"{}\" not found",
                var.name, key.key, key.name
            ))),
        };
    }
    if let Some(key) = &source.config_map_key_ref {
        return match lookup.config_map_key(&key.name, &key.key) {
            Some(value) => Ok(Some(value)),
            None if key.optional == Some(true) => Ok(None),
            None => Err(ConfigError(format!(
                "env {}: key \"{}\" of ConfigMap \"{}\" not found",
                var.name, key.key, key.name
            ))),
        };
    }
    Err(ConfigError(format!(
        "env {}: resourceFieldRef is not supported by the pod runner",
        var.name
    )))
}

/// A downward-API `fieldRef`, from the pod as the runner sees it (its IP is set by then).
pub fn field_value(pod: &Pod, path: &str) -> Result<String, ConfigError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let map_entry = |map: Option<&BTreeMap<String, String>>, key: &str| {
        map.and_then(|map| map.get(key))
            .cloned()
            .unwrap_or_default()
    };
    if let Some(key) = bracketed(path, "metadata.labels") {
        return Ok(map_entry(meta.labels.as_ref(), key));
    }
    if let Some(key) = bracketed(path, "metadata.annotations") {
        return Ok(map_entry(meta.annotations.as_ref(), key));
    }
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|spec| spec.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|spec| spec.service_account_name.clone()),
        "status.podIP" => status.and_then(|status| status.pod_ip.clone()),
        "status.hostIP" => status.and_then(|status| status.host_ip.clone()),
        "status.podIPs" => status.and_then(|status| status.pod_ip.clone()),
        _ => {
            return Err(ConfigError(format!(
                "fieldRef {path} is not supported by the pod runner"
            )));
        }
    };
    Ok(value.unwrap_or_default())
}

/// `metadata.labels['key']` → `key`.
fn bracketed<'a>(path: &'a str, field: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(field)?.strip_prefix("['")?;
    rest.strip_suffix("']")
}

/// Kubernetes' `$(NAME)` expansion: defined names are replaced, `$$` is a literal `$`, and
/// anything else is left as written.
pub fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(inner) = rest.strip_prefix("$(")
            && let Some(end) = inner.find(')')
            && let Some((_, value)) = env.iter().rev().find(|(name, _)| *name == inner[..end])
        {
            out.push_str(value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The container's argv: command then args, expanded. The runner has no images, so a
/// container must name its command.
pub fn argv(container: &Container, env: &[(String, String)]) -> Result<Vec<String>, ConfigError> {
    let command = container.command.clone().unwrap_or_default();
    if command.is_empty() {
        return Err(ConfigError(format!(
            "container {} has no command: the pod runner runs no images, only commands",
            container.name
        )));
    }
    Ok(command
        .iter()
        .chain(container.args.iter().flatten())
        .map(|part| expand(part, env))
        .collect())
}

/// Gives a worker in slot `slot` (1, 2, ...) of its cluster's network namespace its own
/// values of [`PER_NODE_PORT_FLAGS`] in every `ray start` of its argv: an existing value is
/// replaced, a missing flag is added right after `ray start`. Slot 0 (the head) is unchanged.
pub fn with_node_ports(argv: &[String], slot: u16) -> Vec<String> {
    if slot == 0 {
        return argv.to_vec();
    }
    argv.iter()
        .map(|part| {
            if !part.contains("ray start") {
                return part.clone();
            }
            let mut part = part.clone();
            for (index, flag) in PER_NODE_PORT_FLAGS.iter().enumerate() {
                let port = node_port(slot, index);
                part = set_flag(&part, flag, port);
            }
            part
        })
        .collect()
}

/// The port of flag `index` for worker slot `slot`.
pub fn node_port(slot: u16, index: usize) -> u16 {
    // Slots are bounded by the runner (MAX_SLOTS), so this stays far below 65535.
    PORT_BASE + 10 * slot + u16::try_from(index).unwrap_or(0)
}

/// `--flag=V`, `--flag V` → `--flag=port`; absent: inserted after each `ray start`.
fn set_flag(text: &str, flag: &str, port: u16) -> String {
    let words: Vec<&str> = text.split(' ').collect();
    let mut out: Vec<String> = Vec::with_capacity(words.len() + 1);
    let mut found = false;
    let mut skip_value = false;
    for word in &words {
        if skip_value {
            skip_value = false;
            continue;
        }
        if *word == flag {
            out.push(format!("{flag}={port}"));
            skip_value = true;
            found = true;
        } else if word
            .strip_prefix(flag)
            .is_some_and(|rest| rest.starts_with('='))
        {
            out.push(format!("{flag}={port}"));
            found = true;
        } else {
            out.push((*word).to_owned());
        }
    }
    let joined = out.join(" ");
    if found {
        return joined;
    }
    joined.replace("ray start", &format!("ray start {flag}={port}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EnvVarSource, ObjectFieldSelector, PodSpec, PodStatus};
    use kube::api::ObjectMeta;

    struct NoLookup;
    impl Lookup for NoLookup {
        fn secret_key(&self, name: &str, key: &str) -> Option<String> {
            (name == "tok" && key == "auth_token").then(|| "s3cret".to_owned())
        }
        fn config_map_key(&self, _: &str, _: &str) -> Option<String> {
            None
        }
        fn secret(&self, _: &str) -> Option<BTreeMap<String, String>> {
            None
        }
        fn config_map(&self, name: &str) -> Option<BTreeMap<String, String>> {
            (name == "cm").then(|| BTreeMap::from([("A".to_owned(), "from-cm".to_owned())]))
        }
    }

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("rc-head-x".into()),
                namespace: Some("team".into()),
                labels: Some(BTreeMap::from([("ray.io/cluster".into(), "rc".into())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("ray-0".into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some("127.129.0.2".into()),
                ..Default::default()
            }),
        }
    }

    fn field(name: &str, path: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: path.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn plain(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            ..Default::default()
        }
    }

    #[test]
    fn environment_resolves_the_downward_api_and_refers_to_earlier_entries() {
        let container = Container {
            name: "ray-head".into(),
            env_from: Some(vec![k8s_openapi::api::core::v1::EnvFromSource {
                config_map_ref: Some(k8s_openapi::api::core::v1::ConfigMapEnvSource {
                    name: "cm".into(),
                    optional: None,
                }),
                ..Default::default()
            }]),
            env: Some(vec![
                field("CLUSTER", "metadata.labels['ray.io/cluster']"),
                field("NAME", "metadata.name"),
                field("IP", "status.podIP"),
                plain("ADDRESS", "$(IP):6379 $$(IP) $(UNSET)"),
                plain("A", "overrides-cm"),
            ]),
            ..Default::default()
        };
        let env = environment(&pod(), &container, &NoLookup).expect("resolves");
        let get = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(get("CLUSTER"), Some("rc"));
        assert_eq!(get("NAME"), Some("rc-head-x"));
        assert_eq!(get("ADDRESS"), Some("127.129.0.2:6379 $(IP) $(UNSET)"));
        assert_eq!(get("A"), Some("overrides-cm"));
    }

    #[test]
    fn a_missing_secret_or_unsupported_source_is_a_config_error_naming_it() {
        let mut var = plain("TOKEN", "");
        var.value = None;
        var.value_from = Some(EnvVarSource {
            secret_key_ref: Some(k8s_openapi::api::core::v1::SecretKeySelector {
                name: "other".into(),
                key: "auth_token".into(),
                optional: None,
            }),
            ..Default::default()
        });
        let container = Container {
            name: "c".into(),
            env: Some(vec![var]),
            ..Default::default()
        };
        let error = environment(&pod(), &container, &NoLookup).expect_err("missing");
        assert!(error.0.contains("Secret \"other\""), "{}", error.0);
        let error = environment(
            &pod(),
            &Container {
                name: "c".into(),
                env: Some(vec![field("X", "status.phase")]),
                ..Default::default()
            },
            &NoLookup,
        )
        .expect_err("unsupported");
        assert!(error.0.contains("status.phase"), "{}", error.0);
    }

    #[test]
    fn argv_needs_a_command() {
        let container = Container {
            name: "c".into(),
            args: Some(vec!["x".into()]),
            ..Default::default()
        };
        assert!(argv(&container, &[]).is_err());
    }

    #[test]
    fn workers_get_their_own_ports_and_the_head_keeps_its_own() {
        let argv = vec![
            "/bin/bash".to_owned(),
            "-c".to_owned(),
            "ulimit -n 65536; ray start  --address=rc-head-svc:6379  --block  --dashboard-agent-listen-port=52365  --metrics-export-port 8080  --num-cpus=1 ".to_owned(),
        ];
        assert_eq!(with_node_ports(&argv, 0), argv);
        let worker = with_node_ports(&argv, 2);
        assert_eq!(worker[..2], argv[..2]);
        assert_eq!(
            worker[2],
            "ulimit -n 65536; ray start  --address=rc-head-svc:6379  --block  --dashboard-agent-listen-port=20021  --metrics-export-port=20020  --num-cpus=1 "
        );
        let bare = with_node_ports(&["ray start --address=a:6379 --block".to_owned()], 1);
        assert_eq!(
            bare,
            [
                "ray start --dashboard-agent-listen-port=20011 --metrics-export-port=20010 --address=a:6379 --block"
            ]
        );
    }
}
