//! What gets submitted to Ray, derived once from the RayJob's spec: the entrypoint, the
//! runtime environment (`runtimeEnvYAML` as JSON), metadata and entrypoint resources. The
//! HTTPMode submit action and the submitter commands (K8sJobMode, SidecarMode) both read it,
//! so the three paths submit the same job.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;
use wasmray_crds::RayJobSpec;
use wasmray_plugin_sdk::reconciler::SubmitJob;

/// Ray needs this version for `--metadata-json`.
const MIN_RAY_VERSION_FOR_METADATA: (u64, u64, u64) = (2, 6, 0);

/// Why the job cannot be submitted as specified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubmissionError {
    /// `spec.runtimeEnvYAML` is not a YAML mapping that converts to JSON.
    RuntimeEnv(String),
    /// `spec.entrypointResources` is not a JSON object.
    EntrypointResources(String),
    /// `spec.metadata` needs a newer Ray.
    MetadataNeedsNewerRay(String),
}

impl fmt::Display for SubmissionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmissionError::RuntimeEnv(error) => {
                write!(
                    f,
                    "spec.runtimeEnvYAML cannot be converted to JSON: {error}"
                )
            }
            SubmissionError::EntrypointResources(error) => {
                write!(f, "spec.entrypointResources is not a JSON object: {error}")
            }
            SubmissionError::MetadataNeedsNewerRay(version) => write!(
                f,
                "spec.metadata needs Ray 2.6.0 or newer (--metadata-json), but rayVersion is {version:?}"
            ),
        }
    }
}

impl std::error::Error for SubmissionError {}

/// One Ray job as the spec describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRequest {
    pub entrypoint: String,
    /// `runtime_env` as JSON, keys sorted (as KubeRay's YAML-to-JSON conversion gives them).
    pub runtime_env: Option<Value>,
    pub metadata: BTreeMap<String, String>,
    pub num_cpus: f32,
    pub num_gpus: f32,
    /// `spec.entrypointResources` as the user wrote it (already checked to be a JSON object).
    pub resources: Option<String>,
}

impl JobRequest {
    /// Reads the spec; `ray_version` is the cluster's `rayVersion`, for the metadata rule.
    pub fn from_spec(
        spec: &RayJobSpec,
        ray_version: Option<&str>,
    ) -> Result<JobRequest, SubmissionError> {
        let runtime_env = spec
            .runtime_env_yaml
            .as_deref()
            .filter(|yaml| !yaml.trim().is_empty())
            .map(runtime_env_json)
            .transpose()?;
        let resources = spec
            .entrypoint_resources
            .as_deref()
            .filter(|text| !text.trim().is_empty())
            .map(|text| {
                match serde_json::from_str::<Value>(text) {
                    Ok(Value::Object(_)) => Ok(text.to_owned()),
                    Ok(other) => Err(format!("found {other}")),
                    Err(error) => Err(error.to_string()),
                }
                .map_err(SubmissionError::EntrypointResources)
            })
            .transpose()?;
        let metadata = spec.metadata.clone().unwrap_or_default();
        if !metadata.is_empty()
            && let Some(version) = ray_version
            && parse_version(version).is_some_and(|parsed| parsed < MIN_RAY_VERSION_FOR_METADATA)
        {
            return Err(SubmissionError::MetadataNeedsNewerRay(version.to_owned()));
        }
        Ok(JobRequest {
            entrypoint: spec.entrypoint.clone().unwrap_or_default(),
            runtime_env,
            metadata,
            num_cpus: spec.entrypoint_num_cpus.unwrap_or(0.0),
            num_gpus: spec.entrypoint_num_gpus.unwrap_or(0.0),
            resources,
        })
    }

    /// The HTTPMode submission with this submission id.
    pub fn submit_action(&self, submission_id: &str) -> SubmitJob {
        let positive = |amount: f32| (amount > 0.0).then_some(f64::from(amount));
        SubmitJob {
            submission_id: submission_id.to_owned(),
            entrypoint: self.entrypoint.clone(),
            runtime_env: self.runtime_env.as_ref().map(Value::to_string),
            metadata: self
                .metadata
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
            entrypoint_num_cpus: positive(self.num_cpus),
            entrypoint_num_gpus: positive(self.num_gpus),
            entrypoint_memory: None,
            entrypoint_resources: self.resources.clone(),
        }
    }

    /// `ray job submit` with KubeRay's flags, in KubeRay's order; `no_wait` returns as soon
    /// as Ray accepted the job (K8sJobMode tails the logs afterwards).
    pub fn submit_command(&self, address: &str, submission_id: &str, no_wait: bool) -> String {
        let mut command = format!("ray job submit --address {address}");
        if no_wait {
            command.push_str(" --no-wait");
        }
        if let Some(runtime_env) = &self.runtime_env {
            command.push_str(&format!(
                " --runtime-env-json {}",
                go_quote(&runtime_env.to_string())
            ));
        }
        if !self.metadata.is_empty() {
            let metadata = serde_json::to_string(&self.metadata).unwrap_or_default();
            command.push_str(&format!(" --metadata-json {}", go_quote(&metadata)));
        }
        command.push_str(&format!(" --submission-id {submission_id}"));
        if self.num_cpus > 0.0 {
            command.push_str(&format!(" --entrypoint-num-cpus {:.6}", self.num_cpus));
        }
        if self.num_gpus > 0.0 {
            command.push_str(&format!(" --entrypoint-num-gpus {:.6}", self.num_gpus));
        }
        if let Some(resources) = &self.resources {
            command.push_str(&format!(" --entrypoint-resources {}", go_quote(resources)));
        }
        command.push_str(&format!(" -- {}", self.entrypoint));
        command
    }
}

/// `runtimeEnvYAML` as JSON.
pub fn runtime_env_json(yaml: &str) -> Result<Value, SubmissionError> {
    let value: Value = serde_yaml::from_str(yaml)
        .map_err(|error| SubmissionError::RuntimeEnv(error.to_string()))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(SubmissionError::RuntimeEnv(format!(
            "expected a mapping, found {value}"
        )))
    }
}

/// Go's `%q` for the shell line: double quotes, with `"` and `\` escaped, so the JSON
/// reaches the Ray CLI as one argument exactly as KubeRay passes it.
pub fn go_quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for ch in text.chars() {
        match ch {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            ch if ch.is_control() => quoted.push_str(&format!("\\x{:02x}", u32::from(ch))),
            ch => quoted.push(ch),
        }
    }
    quoted.push('"');
    quoted
}

/// "2.46.0" -> (2, 46, 0); a missing patch counts as 0. None if it is not a version.
pub fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    let text = text.trim().trim_start_matches('v');
    let mut parts = text.split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some((major, minor, patch))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> RayJobSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn runtime_env_yaml_becomes_sorted_json() {
        let request = JobRequest::from_spec(
            &spec(
                "entrypoint: python x.py\nruntimeEnvYAML: |\n  pip:\n    - requests==2.26.0\n  env_vars:\n    counter_name: \"test_counter\"\n",
            ),
            None,
        )
        .unwrap();
        assert_eq!(
            request.runtime_env.unwrap().to_string(),
            r#"{"env_vars":{"counter_name":"test_counter"},"pip":["requests==2.26.0"]}"#
        );
    }

    #[test]
    fn bad_runtime_env_and_resources_name_the_field() {
        let error =
            JobRequest::from_spec(&spec("runtimeEnvYAML: \"- a\\n- b\"\n"), None).unwrap_err();
        assert!(
            error.to_string().starts_with("spec.runtimeEnvYAML"),
            "{error}"
        );
        let error = JobRequest::from_spec(&spec("entrypointResources: '[1]'\n"), None).unwrap_err();
        assert!(
            error.to_string().starts_with("spec.entrypointResources"),
            "{error}"
        );
    }

    #[test]
    fn metadata_needs_ray_2_6() {
        let with_metadata = spec("metadata:\n  owner: team\n");
        assert_eq!(
            JobRequest::from_spec(&with_metadata, Some("2.5.1")).unwrap_err(),
            SubmissionError::MetadataNeedsNewerRay("2.5.1".into())
        );
        assert!(JobRequest::from_spec(&with_metadata, Some("2.46.0")).is_ok());
        assert!(JobRequest::from_spec(&spec("{}"), Some("2.5.1")).is_ok());
    }

    #[test]
    fn submit_command_has_kuberays_flags_in_order() {
        let request = JobRequest::from_spec(
            &spec(
                "entrypoint: python -c 'print(1)'\nruntimeEnvYAML: 'pip: [\"x\"]'\nmetadata: {owner: team}\nentrypointNumCpus: 1\nentrypointNumGpus: 0.5\nentrypointResources: '{\"r\": 1}'\n",
            ),
            Some("2.46.0"),
        )
        .unwrap();
        assert_eq!(
            request.submit_command("http://svc:8265", "job-1", true),
            r#"ray job submit --address http://svc:8265 --no-wait --runtime-env-json "{\"pip\":[\"x\"]}" --metadata-json "{\"owner\":\"team\"}" --submission-id job-1 --entrypoint-num-cpus 1.000000 --entrypoint-num-gpus 0.500000 --entrypoint-resources "{\"r\": 1}" -- python -c 'print(1)'"#
        );
        let plain = JobRequest::from_spec(&spec("entrypoint: echo hi\n"), None).unwrap();
        assert_eq!(
            plain.submit_command("http://a:1", "j", false),
            "ray job submit --address http://a:1 --submission-id j -- echo hi"
        );
    }

    #[test]
    fn submit_action_carries_the_same_job() {
        let request = JobRequest::from_spec(
            &spec(
                "entrypoint: python x.py\nruntimeEnvYAML: 'env_vars: {A: \"1\"}'\nmetadata: {k: v}\nentrypointNumCpus: 2\nentrypointResources: '{\"r\": 1}'\n",
            ),
            None,
        )
        .unwrap();
        let action = request.submit_action("job-1");
        assert_eq!(action.submission_id, "job-1");
        assert_eq!(action.entrypoint, "python x.py");
        assert_eq!(
            action.runtime_env.as_deref(),
            Some(r#"{"env_vars":{"A":"1"}}"#)
        );
        assert_eq!(action.metadata, vec![("k".to_owned(), "v".to_owned())]);
        assert_eq!(action.entrypoint_num_cpus, Some(2.0));
        assert_eq!(action.entrypoint_num_gpus, None);
        assert_eq!(action.entrypoint_resources.as_deref(), Some(r#"{"r": 1}"#));
    }

    #[test]
    fn go_quote_escapes_like_go() {
        assert_eq!(go_quote(r#"{"a":"b\"c"}"#), r#""{\"a\":\"b\\\"c\"}""#);
        assert_eq!(go_quote("x\ny"), r#""x\ny""#);
        assert_eq!(parse_version("v2.52.0-rc1"), Some((2, 52, 0)));
        assert_eq!(parse_version("2.9"), Some((2, 9, 0)));
        assert_eq!(parse_version("latest"), None);
    }
}
