//! Operator knobs the RayJob plugin reads. KubeRay reads them from its environment; the
//! WasmRay host passes them in `host-facts`, so a decision depends only on its input.

use wasmray_crds::FeatureGates;
use wasmray_plugin_sdk::HostFacts;

/// Setting keys (host-facts `settings`).
pub mod keys {
    /// `CLUSTER_DOMAIN`: DNS suffix of in-cluster names (the dashboard URL).
    pub const CLUSTER_DOMAIN: &str = "cluster-domain";
    /// `RAYJOB_DEPLOYMENT_STATUS_TRANSITION_GRACE_PERIOD_SECONDS`.
    pub const TRANSITION_GRACE_PERIOD_SECONDS: &str =
        "rayjob-deployment-status-transition-grace-period-seconds";
    /// `DELETE_RAYJOB_CR_AFTER_JOB_FINISHES`: the TTL deletes the RayJob, not only its cluster.
    pub const DELETE_RAYJOB_AFTER_JOB_FINISHES: &str = "delete-rayjob-cr-after-job-finishes";
    /// `ENABLE_LOGIN_SHELL`: the submitter runs `bash -cel` instead of `-ce`.
    pub const LOGIN_SHELL: &str = "login-shell";
    /// `ENABLE_RAY_HEAD_CLUSTER_IP_SERVICE`: head Services get a cluster IP instead of none.
    pub const HEAD_CLUSTER_IP_SERVICE: &str = "head-cluster-ip-service";
}

/// Feature gate names (host-facts `feature-gates`), as KubeRay's `--feature-gates`.
pub mod gates {
    pub const RAY_JOB_DELETION_POLICY: &str = "RayJobDeletionPolicy";
}

/// Everything the plugin reads from the host's settings, parsed once per call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub cluster_domain: String,
    pub transition_grace_period_seconds: u64,
    pub delete_rayjob_after_job_finishes: bool,
    pub login_shell: bool,
    pub head_cluster_ip_service: bool,
    pub job_deletion_policy: bool,
}

impl Default for Settings {
    /// KubeRay v1.5.1's defaults.
    fn default() -> Self {
        Settings {
            cluster_domain: "cluster.local".to_owned(),
            transition_grace_period_seconds: 300,
            delete_rayjob_after_job_finishes: false,
            login_shell: false,
            head_cluster_ip_service: false,
            job_deletion_policy: false,
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
        Settings {
            cluster_domain: host
                .setting(keys::CLUSTER_DOMAIN)
                .map(str::trim)
                .filter(|domain| !domain.is_empty())
                .map_or(defaults.cluster_domain, str::to_owned),
            transition_grace_period_seconds: host
                .setting(keys::TRANSITION_GRACE_PERIOD_SECONDS)
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or(defaults.transition_grace_period_seconds),
            delete_rayjob_after_job_finishes: flag(
                keys::DELETE_RAYJOB_AFTER_JOB_FINISHES,
                defaults.delete_rayjob_after_job_finishes,
            ),
            login_shell: flag(keys::LOGIN_SHELL, defaults.login_shell),
            head_cluster_ip_service: flag(
                keys::HEAD_CLUSTER_IP_SERVICE,
                defaults.head_cluster_ip_service,
            ),
            job_deletion_policy: host
                .feature_gates
                .iter()
                .find(|(gate, _)| gate == gates::RAY_JOB_DELETION_POLICY)
                .map_or(defaults.job_deletion_policy, |(_, enabled)| *enabled),
        }
    }

    /// The gates the shared validation depends on.
    pub fn feature_gates(&self) -> FeatureGates {
        FeatureGates {
            ray_job_deletion_policy: self.job_deletion_policy,
            ..FeatureGates::default()
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
                (keys::CLUSTER_DOMAIN, "example.org"),
                (keys::TRANSITION_GRACE_PERIOD_SECONDS, "30"),
                (keys::DELETE_RAYJOB_AFTER_JOB_FINISHES, "TRUE"),
                (keys::LOGIN_SHELL, "maybe"),
            ],
            &[(gates::RAY_JOB_DELETION_POLICY, true)],
        ));
        assert_eq!(settings.cluster_domain, "example.org");
        assert_eq!(settings.transition_grace_period_seconds, 30);
        assert!(settings.delete_rayjob_after_job_finishes);
        assert!(!settings.login_shell);
        assert!(settings.job_deletion_policy);
        assert!(settings.feature_gates().ray_job_deletion_policy);
    }
}
