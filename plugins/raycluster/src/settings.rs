//! Operator knobs. KubeRay reads them from its environment; WasmRay's host passes them in
//! `host-facts` (settings and feature gates), so a decision depends only on its input.
//! The keys are documented in docs/raycluster.md.

use wasmray_plugin_sdk::HostFacts;

/// Setting keys (host-facts `settings`).
pub mod keys {
    /// `ENABLE_DETERMINISTIC_HEAD_POD_NAME`: head named `<cluster>-head` instead of generated.
    pub const DETERMINISTIC_HEAD_POD_NAME: &str = "deterministic-head-pod-name";
    /// `ENABLE_INIT_CONTAINER_INJECTION`: the `wait-gcs-ready` init container on workers.
    pub const INIT_CONTAINER_INJECTION: &str = "init-container-injection";
    /// `ENABLE_PROBES_INJECTION`: liveness/readiness probes on Ray containers.
    pub const PROBES_INJECTION: &str = "probes-injection";
    /// `CLUSTER_DOMAIN`: DNS suffix of in-cluster names.
    pub const CLUSTER_DOMAIN: &str = "cluster-domain";
    /// `ENABLE_LOGIN_SHELL`: `/bin/bash -lc` instead of `-c`.
    pub const LOGIN_SHELL: &str = "login-shell";
    /// `ENABLE_RANDOM_POD_DELETE`: scale down surplus pods even with in-tree autoscaling.
    pub const RANDOM_POD_DELETE: &str = "random-pod-delete";
    /// `ENABLE_GCS_FT_REDIS_CLEANUP`: the Redis cleanup finalizer and Job.
    pub const GCS_FT_REDIS_CLEANUP: &str = "gcs-ft-redis-cleanup";
    /// `ENABLE_RAY_HEAD_CLUSTER_IP_SERVICE`: a ClusterIP head Service instead of headless.
    pub const HEAD_CLUSTER_IP_SERVICE: &str = "head-cluster-ip-service";
    /// `RAYCLUSTER_DEFAULT_REQUEUE_SECONDS_ENV`: resync period of a settled cluster.
    pub const DEFAULT_REQUEUE_SECONDS: &str = "default-requeue-seconds";
}

/// Feature gate names (host-facts `feature-gates`), as KubeRay's `--feature-gates`.
pub mod gates {
    pub const RAY_CLUSTER_STATUS_CONDITIONS: &str = "RayClusterStatusConditions";
    pub const RAY_JOB_DELETION_POLICY: &str = "RayJobDeletionPolicy";
    pub const RAY_MULTI_HOST_INDEXING: &str = "RayMultiHostIndexing";
}

/// Everything the plugin reads from the host's settings, parsed once per call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub deterministic_head_pod_name: bool,
    pub init_container_injection: bool,
    pub probes_injection: bool,
    pub cluster_domain: String,
    pub login_shell: bool,
    pub random_pod_delete: bool,
    pub gcs_ft_redis_cleanup: bool,
    pub head_cluster_ip_service: bool,
    pub default_requeue_seconds: u64,
    pub status_conditions: bool,
    pub job_deletion_policy: bool,
    pub multi_host_indexing: bool,
}

impl Default for Settings {
    /// KubeRay v1.5.1's defaults.
    fn default() -> Self {
        Settings {
            deterministic_head_pod_name: false,
            init_container_injection: true,
            probes_injection: true,
            cluster_domain: "cluster.local".to_owned(),
            login_shell: false,
            random_pod_delete: false,
            gcs_ft_redis_cleanup: true,
            head_cluster_ip_service: false,
            default_requeue_seconds: 300,
            status_conditions: true,
            job_deletion_policy: false,
            multi_host_indexing: false,
        }
    }
}

impl Settings {
    /// Reads the settings; unknown keys are ignored and unparsable values keep the default,
    /// as KubeRay does with its environment variables.
    pub fn from_host(host: &HostFacts) -> Settings {
        let defaults = Settings::default();
        let flag = |key: &str, default: bool| {
            host.setting(key)
                .and_then(|value| value.trim().to_ascii_lowercase().parse().ok())
                .unwrap_or(default)
        };
        let gate = |name: &str, default: bool| {
            host.feature_gates
                .iter()
                .find(|(gate, _)| gate == name)
                .map_or(default, |(_, enabled)| *enabled)
        };
        Settings {
            deterministic_head_pod_name: flag(
                keys::DETERMINISTIC_HEAD_POD_NAME,
                defaults.deterministic_head_pod_name,
            ),
            init_container_injection: flag(
                keys::INIT_CONTAINER_INJECTION,
                defaults.init_container_injection,
            ),
            probes_injection: flag(keys::PROBES_INJECTION, defaults.probes_injection),
            cluster_domain: host
                .setting(keys::CLUSTER_DOMAIN)
                .map(str::trim)
                .filter(|domain| !domain.is_empty())
                .map_or(defaults.cluster_domain, str::to_owned),
            login_shell: flag(keys::LOGIN_SHELL, defaults.login_shell),
            random_pod_delete: flag(keys::RANDOM_POD_DELETE, defaults.random_pod_delete),
            gcs_ft_redis_cleanup: flag(keys::GCS_FT_REDIS_CLEANUP, defaults.gcs_ft_redis_cleanup),
            head_cluster_ip_service: flag(
                keys::HEAD_CLUSTER_IP_SERVICE,
                defaults.head_cluster_ip_service,
            ),
            default_requeue_seconds: host
                .setting(keys::DEFAULT_REQUEUE_SECONDS)
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or(defaults.default_requeue_seconds),
            status_conditions: gate(
                gates::RAY_CLUSTER_STATUS_CONDITIONS,
                defaults.status_conditions,
            ),
            job_deletion_policy: gate(gates::RAY_JOB_DELETION_POLICY, defaults.job_deletion_policy),
            multi_host_indexing: gate(gates::RAY_MULTI_HOST_INDEXING, defaults.multi_host_indexing),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(settings: &[(&str, &str)], gates: &[(&str, bool)]) -> HostFacts {
        HostFacts {
            operator_version: "0.1.0".into(),
            feature_gates: gates.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn empty_host_facts_give_kuberay_defaults() {
        assert_eq!(Settings::from_host(&host(&[], &[])), Settings::default());
    }

    #[test]
    fn settings_and_gates_override_defaults() {
        let settings = Settings::from_host(&host(
            &[
                (keys::DETERMINISTIC_HEAD_POD_NAME, "TRUE"),
                (keys::PROBES_INJECTION, "false"),
                (keys::CLUSTER_DOMAIN, "example.org"),
                (keys::DEFAULT_REQUEUE_SECONDS, "60"),
                (keys::LOGIN_SHELL, "not-a-bool"),
            ],
            &[
                (gates::RAY_MULTI_HOST_INDEXING, true),
                (gates::RAY_CLUSTER_STATUS_CONDITIONS, false),
            ],
        ));
        assert!(settings.deterministic_head_pod_name);
        assert!(!settings.probes_injection);
        assert_eq!(settings.cluster_domain, "example.org");
        assert_eq!(settings.default_requeue_seconds, 60);
        assert!(!settings.login_shell);
        assert!(settings.multi_host_indexing);
        assert!(!settings.status_conditions);
    }
}
