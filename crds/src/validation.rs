//! Validation of RayCluster, RayJob and RayService with KubeRay's rules and messages: one pure
//! function per kind, used by the host and by plugins alike.
//!
//! Every function reports all the errors it finds, not only the first one as KubeRay does, so a
//! user fixes an object in one round; each error names the field it is about.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::{Container, EnvVar, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::constants::{self as c, FeatureGates};
use crate::messages as m;
use crate::raycluster::{AuthMode, RayCluster, RayClusterSpec, RayClusterStatus};
use crate::rayjob::{
    DeletionPolicyType, JobDeploymentStatus, JobSubmissionMode, RayJob, RayJobSpec,
};
use crate::rayservice::{RayService, RayServiceSpec, RayServiceUpgradeType};

/// One broken rule: the field it concerns (`spec.workerGroupSpecs[1].minReplicas`) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every rule an object breaks, in the order of the fields; never empty.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Collects errors while walking an object.
#[derive(Default)]
struct Report(Vec<ValidationError>);

impl Report {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(ValidationError {
            field: field.into(),
            message: message.into(),
        });
    }

    fn finish(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(self.0))
        }
    }
}

/// Validates a RayCluster: metadata, spec and status.
pub fn validate_ray_cluster(
    cluster: &RayCluster,
    gates: &FeatureGates,
) -> Result<(), ValidationErrors> {
    let mut report = Report::default();
    validate_name(
        &mut report,
        &cluster.metadata,
        "RayCluster",
        c::MAX_RAY_CLUSTER_NAME_LENGTH,
    );
    validate_cluster_spec(
        &mut report,
        "spec",
        &cluster.spec,
        annotations(&cluster.metadata),
        gates,
    );
    if let Some(status) = &cluster.status {
        validate_cluster_status(&mut report, "status", status);
    }
    report.finish()
}

/// Validates a RayJob: metadata, spec (with its embedded cluster spec) and status.
pub fn validate_ray_job(job: &RayJob, gates: &FeatureGates) -> Result<(), ValidationErrors> {
    let mut report = Report::default();
    validate_name(
        &mut report,
        &job.metadata,
        "RayJob",
        c::MAX_RAY_JOB_NAME_LENGTH,
    );
    validate_job_spec(&mut report, &job.spec, annotations(&job.metadata), gates);
    if let Some(status) = &job.status
        && status.job_deployment_status == Some(JobDeploymentStatus::Waiting)
        && job.spec.submission_mode() != JobSubmissionMode::InteractiveMode
    {
        report.add("status.jobDeploymentStatus", m::JOB_WAITING_NOT_INTERACTIVE);
    }
    report.finish()
}

/// Validates a RayService: metadata and spec (with its embedded cluster spec).
pub fn validate_ray_service(
    service: &RayService,
    gates: &FeatureGates,
) -> Result<(), ValidationErrors> {
    let mut report = Report::default();
    validate_name(
        &mut report,
        &service.metadata,
        "RayService",
        c::MAX_RAY_SERVICE_NAME_LENGTH,
    );
    let annotations = annotations(&service.metadata);
    if let Some(timeout) = annotations.get(c::RAY_SERVICE_INITIALIZING_TIMEOUT_ANNOTATION_KEY)
        && !is_positive_timeout(timeout)
    {
        report.add(
            format!(
                "metadata.annotations[{}]",
                c::RAY_SERVICE_INITIALIZING_TIMEOUT_ANNOTATION_KEY
            ),
            m::initializing_timeout_invalid(timeout),
        );
    }
    validate_service_spec(&mut report, &service.spec, annotations, gates);
    report.finish()
}

/// Why an object could not be validated at all.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error(
        "not a ray.io/v1 RayCluster, RayJob or RayService: apiVersion {api_version:?}, kind {kind:?}"
    )]
    UnknownKind { api_version: String, kind: String },
    #[error("the {kind} does not match the ray.io/v1 schema: {source}")]
    Malformed {
        kind: String,
        source: serde_json::Error,
    },
}

/// Parses any of the three kinds from JSON (by `apiVersion` and `kind`) and validates it.
/// The outer error says the object could not be read; the inner result is the validation.
pub fn validate_value(
    object: &serde_json::Value,
    gates: &FeatureGates,
) -> Result<Result<(), ValidationErrors>, ObjectError> {
    let text = |key: &str| {
        object
            .get(key)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    let malformed = |source| ObjectError::Malformed {
        kind: kind.clone(),
        source,
    };
    if api_version != format!("{}/{}", c::GROUP, c::VERSION) {
        return Err(ObjectError::UnknownKind { api_version, kind });
    }
    match kind.as_str() {
        "RayCluster" => Ok(validate_ray_cluster(
            &serde_json::from_value(object.clone()).map_err(malformed)?,
            gates,
        )),
        "RayJob" => Ok(validate_ray_job(
            &serde_json::from_value(object.clone()).map_err(malformed)?,
            gates,
        )),
        "RayService" => Ok(validate_ray_service(
            &serde_json::from_value(object.clone()).map_err(malformed)?,
            gates,
        )),
        _ => Err(ObjectError::UnknownKind { api_version, kind }),
    }
}

fn annotations(metadata: &ObjectMeta) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    metadata.annotations.as_ref().unwrap_or(&EMPTY)
}

/// Name length and DNS-1035 form. An object without a name yet (generateName) has nothing to check.
fn validate_name(report: &mut Report, metadata: &ObjectMeta, kind: &str, max_length: usize) {
    let Some(name) = metadata.name.as_deref() else {
        return;
    };
    if name.len() > max_length {
        report.add("metadata.name", m::name_too_long(kind, max_length));
    }
    let errors = dns1035_label_errors(name);
    if !errors.is_empty() {
        report.add("metadata.name", m::name_not_dns1035(kind, &errors));
    }
}

const DNS1035_LABEL_MAX_LENGTH: usize = 63;

/// Kubernetes' IsDNS1035Label, with its messages.
pub fn dns1035_label_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1035_LABEL_MAX_LENGTH {
        errors.push(format!(
            "must be no more than {DNS1035_LABEL_MAX_LENGTH} characters"
        ));
    }
    let bytes = value.as_bytes();
    let well_formed = bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if !well_formed {
        errors.push(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an \
             alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', \
             regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
                .to_owned(),
        );
    }
    errors
}

/// Kubernetes' IsDNS1123Label, with its messages.
pub fn dns1123_label_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1035_LABEL_MAX_LENGTH {
        errors.push(format!(
            "must be no more than {DNS1035_LABEL_MAX_LENGTH} characters"
        ));
    }
    let alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = value.as_bytes();
    let well_formed = bytes.first().is_some_and(alphanumeric)
        && bytes.last().is_some_and(alphanumeric)
        && bytes.iter().all(|b| alphanumeric(b) || *b == b'-');
    if !well_formed {
        errors.push(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must \
             start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for \
             validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                .to_owned(),
        );
    }
    errors
}

/// Kubernetes' qualified-name rule for label keys: `[prefix/]name`.
fn label_key_errors(key: &str) -> Vec<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let mut errors = Vec::new();
    if let Some(prefix) = prefix
        && !is_dns1123_subdomain(prefix)
    {
        errors.push(format!(
            "invalid label key {key:?}: prefix part must be a lowercase RFC 1123 subdomain"
        ));
    }
    if name.is_empty() || name.len() > 63 || !is_label_token(name) {
        errors.push(format!(
            "invalid label key {key:?}: name part must be no more than 63 characters, consist of alphanumeric \
             characters, '-', '_' or '.', and start and end with an alphanumeric character"
        ));
    }
    errors
}

/// Kubernetes' label value rule: empty, or up to 63 characters of the qualified-name alphabet.
fn label_value_errors(key: &str, value: &str) -> Vec<String> {
    if value.is_empty() || (value.len() <= 63 && is_label_token(value)) {
        return Vec::new();
    }
    vec![format!(
        "invalid label value {value:?} for key {key:?}: must be no more than 63 characters, consist of \
         alphanumeric characters, '-', '_' or '.', and start and end with an alphanumeric character"
    )]
}

fn is_label_token(token: &str) -> bool {
    let bytes = token.as_bytes();
    bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_dns1123_subdomain(value: &str) -> bool {
    value.len() <= 253
        && value.split('.').all(|part| {
            let bytes = part.as_bytes();
            bytes
                .first()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && bytes
                    .last()
                    .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        })
}

fn ray_container(template: &PodTemplateSpec) -> Option<&Container> {
    template
        .spec
        .as_ref()
        .and_then(|spec| spec.containers.first())
}

fn ray_container_env<'a>(template: &'a PodTemplateSpec, name: &str) -> Option<&'a EnvVar> {
    ray_container(template)?
        .env
        .as_ref()?
        .iter()
        .find(|env| env.name == name)
}

fn restart_policy_allows_ray_restart_control(template: &PodTemplateSpec) -> bool {
    template
        .spec
        .as_ref()
        .and_then(|spec| spec.restart_policy.as_deref())
        .is_none_or(|policy| policy.is_empty() || policy == "Never")
}

fn head_env_path(prefix: &str) -> String {
    format!("{prefix}.headGroupSpec.template.spec.containers[0].env")
}

/// The cluster part, shared by RayCluster `spec`, RayJob `spec.rayClusterSpec` and RayService
/// `spec.rayClusterConfig`; `annotations` are the owning object's.
fn validate_cluster_spec(
    report: &mut Report,
    prefix: &str,
    spec: &RayClusterSpec,
    annotations: &BTreeMap<String, String>,
    gates: &FeatureGates,
) {
    validate_managed_by(report, prefix, spec.managed_by.as_deref());
    let head = &spec.head_group_spec;
    let head_path = format!("{prefix}.headGroupSpec");
    if ray_container(&head.template).is_none() {
        report.add(
            format!("{head_path}.template.spec.containers"),
            m::HEAD_NO_CONTAINER,
        );
    }
    validate_group_params(
        report,
        &head_path,
        "Head",
        head.resources.as_ref(),
        head.labels.as_ref(),
        head.ray_start_params.as_ref(),
    );

    let mut seen_names = BTreeSet::new();
    for (index, group) in spec.worker_groups().iter().enumerate() {
        let path = format!("{prefix}.workerGroupSpecs[{index}]");
        if ray_container(&group.template).is_none() {
            report.add(
                format!("{path}.template.spec.containers"),
                m::WORKER_NO_CONTAINER,
            );
        }
        if !seen_names.insert(group.group_name.as_str()) {
            report.add(format!("{path}.groupName"), m::DUPLICATE_GROUP_NAME);
        }
        // The name goes into the pods' names (lower-cased, as KubeRay does) and into a
        // NetworkPolicy's: a name that is no DNS label fails only at pod creation otherwise.
        let errors = dns1123_label_errors(&group.group_name.to_lowercase());
        if !errors.is_empty() {
            report.add(
                format!("{path}.groupName"),
                m::group_name_not_dns1123(&group.group_name, &errors),
            );
        }
        if group.replicas.is_some_and(|replicas| replicas < 0) {
            report.add(format!("{path}.replicas"), m::REPLICAS_NEGATIVE);
        }
        if group.min_replicas() < 0 {
            report.add(format!("{path}.minReplicas"), m::MIN_REPLICAS_NEGATIVE);
        }
        if group.max_replicas() < 0 {
            report.add(format!("{path}.maxReplicas"), m::MAX_REPLICAS_NEGATIVE);
        }
        if group.min_replicas() > group.max_replicas() {
            report.add(
                format!("{path}.minReplicas"),
                m::MIN_REPLICAS_GREATER_THAN_MAX,
            );
        }
        if group.num_of_hosts() <= 0 {
            report.add(format!("{path}.numOfHosts"), m::NUM_OF_HOSTS_NOT_POSITIVE);
        }
        validate_group_params(
            report,
            &path,
            &group.group_name,
            group.resources.as_ref(),
            group.labels.as_ref(),
            group.ray_start_params.as_ref(),
        );
        if group.is_suspended() {
            if !gates.ray_job_deletion_policy {
                report.add(
                    format!("{path}.suspend"),
                    m::worker_suspend_needs_gate(&group.group_name),
                );
            }
            if spec.autoscaling_enabled() {
                report.add(
                    format!("{path}.suspend"),
                    m::worker_suspend_with_autoscaler(&group.group_name),
                );
            }
        }
    }

    validate_gcs_fault_tolerance(report, prefix, spec, annotations);
    validate_autoscaling(report, prefix, spec);

    if spec.auth_options.as_ref().and_then(|auth| auth.mode) == Some(AuthMode::Token) {
        let path = format!("{prefix}.rayVersion");
        match spec
            .ray_version
            .as_deref()
            .filter(|version| !version.is_empty())
        {
            None => report.add(path, m::AUTH_TOKEN_NO_RAY_VERSION),
            Some(version) => match parse_version(version) {
                None => report.add(path, m::auth_token_bad_ray_version(version)),
                Some(parsed) if parsed < c::MIN_RAY_VERSION_FOR_TOKEN_AUTH => {
                    report.add(path, m::auth_token_old_ray_version(version))
                }
                Some(_) => {}
            },
        }
    }
}

/// The API server enforces this with a CEL rule; checked here too so plugins see the same answer.
fn validate_managed_by(report: &mut Report, prefix: &str, managed_by: Option<&str>) {
    if let Some(value) = managed_by
        && value != c::MANAGED_BY_KUBERAY
        && value != c::MANAGED_BY_MULTIKUEUE
    {
        report.add(format!("{prefix}.managedBy"), m::MANAGED_BY_VALUE);
    }
}

/// Rules on a group's `resources`, `labels` and `rayStartParams`.
fn validate_group_params(
    report: &mut Report,
    path: &str,
    group: &str,
    resources: Option<&BTreeMap<String, String>>,
    labels: Option<&BTreeMap<String, String>>,
    params: Option<&BTreeMap<String, String>>,
) {
    let params_have_resources = params.is_some_and(|params| {
        [
            c::RAY_START_PARAM_NUM_CPUS,
            c::RAY_START_PARAM_NUM_GPUS,
            c::RAY_START_PARAM_MEMORY,
            c::RAY_START_PARAM_RESOURCES,
        ]
        .iter()
        .any(|key| params.contains_key(*key))
    });
    if resources.is_some_and(|resources| !resources.is_empty()) && params_have_resources {
        report.add(format!("{path}.resources"), m::resources_in_both(group));
    }
    if params.is_some_and(|params| params.contains_key(c::RAY_START_PARAM_LABELS)) {
        report.add(
            format!("{path}.rayStartParams[labels]"),
            m::labels_in_ray_start_params(group),
        );
    }
    if let Some(labels) = labels {
        let errors: Vec<String> = labels
            .iter()
            .flat_map(|(key, value)| {
                label_key_errors(key)
                    .into_iter()
                    .chain(label_value_errors(key, value))
            })
            .collect();
        if !errors.is_empty() {
            report.add(format!("{path}.labels"), errors.join("; "));
        }
    }
    if params.is_some_and(|params| params.contains_key(c::RAY_START_PARAM_REDIS_USERNAME)) {
        report.add(
            format!(
                "{path}.rayStartParams[{}]",
                c::RAY_START_PARAM_REDIS_USERNAME
            ),
            m::REDIS_USERNAME_PARAM,
        );
    }
}

fn validate_gcs_fault_tolerance(
    report: &mut Report,
    prefix: &str,
    spec: &RayClusterSpec,
    annotations: &BTreeMap<String, String>,
) {
    let head = &spec.head_group_spec;
    let options_set = spec.gcs_fault_tolerance_options.is_some();
    let annotation_set = annotations.contains_key(c::RAY_FT_ENABLED_ANNOTATION_KEY);
    let annotation_enabled = annotations
        .get(c::RAY_FT_ENABLED_ANNOTATION_KEY)
        .is_some_and(|value| value.eq_ignore_ascii_case("true"));
    let ft_annotation_path = format!("metadata.annotations[{}]", c::RAY_FT_ENABLED_ANNOTATION_KEY);
    let head_env = |name| ray_container_env(&head.template, name).is_some();

    if options_set && annotation_set {
        report.add(ft_annotation_path, m::FT_ANNOTATION_AND_OPTIONS);
    }
    if !options_set && !annotation_enabled && head_env(c::RAY_REDIS_ADDRESS_ENV) {
        report.add(head_env_path(prefix), m::REDIS_ADDRESS_WITHOUT_FT);
    }
    if options_set {
        let head_params = head.ray_start_params.as_ref();
        if head_params.is_some_and(|params| params.contains_key(c::RAY_START_PARAM_REDIS_PASSWORD))
        {
            report.add(
                format!(
                    "{prefix}.headGroupSpec.rayStartParams[{}]",
                    c::RAY_START_PARAM_REDIS_PASSWORD
                ),
                m::FT_REDIS_PASSWORD_PARAM,
            );
        }
        if head_env(c::REDIS_PASSWORD_ENV) {
            report.add(head_env_path(prefix), m::FT_REDIS_PASSWORD_ENV);
        }
        if head_env(c::RAY_REDIS_ADDRESS_ENV) {
            report.add(head_env_path(prefix), m::FT_REDIS_ADDRESS_ENV);
        }
        if annotations.contains_key(c::RAY_EXTERNAL_STORAGE_NS_ANNOTATION_KEY) {
            report.add(
                format!(
                    "metadata.annotations[{}]",
                    c::RAY_EXTERNAL_STORAGE_NS_ANNOTATION_KEY
                ),
                m::FT_EXTERNAL_STORAGE_NAMESPACE_ANNOTATION,
            );
        }
    }
    if head_env(c::REDIS_USERNAME_ENV) {
        report.add(head_env_path(prefix), m::REDIS_USERNAME_ENV);
    }
}

fn validate_autoscaling(report: &mut Report, prefix: &str, spec: &RayClusterSpec) {
    let head = &spec.head_group_spec;
    let v2_env = ray_container_env(&head.template, c::RAY_ENABLE_AUTOSCALER_V2_ENV);
    if !spec.autoscaling_enabled() {
        let v2_env_on = v2_env
            .and_then(|env| env.value.as_deref())
            .is_some_and(|value| value == "1" || value.eq_ignore_ascii_case("true"));
        if v2_env_on {
            report.add(
                head_env_path(prefix),
                m::AUTOSCALER_V2_ENV_WITHOUT_AUTOSCALING,
            );
        }
        return;
    }
    let version = spec
        .autoscaler_options
        .as_ref()
        .and_then(|options| options.version);
    if version.is_some() && v2_env.is_some() {
        report.add(
            format!("{prefix}.autoscalerOptions.version"),
            m::AUTOSCALER_VERSION_AND_ENV,
        );
    }
    if version == Some(crate::raycluster::AutoscalerVersion::V2) {
        if !restart_policy_allows_ray_restart_control(&head.template) {
            report.add(
                format!("{prefix}.headGroupSpec.template.spec.restartPolicy"),
                m::HEAD_RESTART_POLICY_AUTOSCALER_V2,
            );
        }
        for (index, group) in spec.worker_groups().iter().enumerate() {
            if !restart_policy_allows_ray_restart_control(&group.template) {
                report.add(
                    format!("{prefix}.workerGroupSpecs[{index}].template.spec.restartPolicy"),
                    m::worker_restart_policy_autoscaler_v2(&group.group_name),
                );
            }
        }
    }
}

fn validate_cluster_status(report: &mut Report, prefix: &str, status: &RayClusterStatus) {
    let is_true = |kind: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .any(|condition| condition.type_ == kind && condition.status == "True")
    };
    if is_true(c::RAY_CLUSTER_SUSPENDING) && is_true(c::RAY_CLUSTER_SUSPENDED) {
        report.add(format!("{prefix}.conditions"), m::SUSPENDING_AND_SUSPENDED);
    }
}

/// `major.minor.patch` with optional leading `v` and pre-release/build suffix; missing parts are 0.
fn parse_version(version: &str) -> Option<(u64, u64, u64)> {
    let core = version.strip_prefix('v').unwrap_or(version);
    let core = core.split(['-', '+']).next()?;
    let mut parts = core.split('.');
    let mut next = || -> Option<u64> {
        match parts.next() {
            None => Some(0),
            Some(part) => part.parse().ok(),
        }
    };
    let parsed = (next()?, next()?, next()?);
    parts.next().is_none().then_some(parsed)
}

fn validate_job_spec(
    report: &mut Report,
    spec: &RayJobSpec,
    annotations: &BTreeMap<String, String>,
    gates: &FeatureGates,
) {
    validate_managed_by(report, "spec", spec.managed_by.as_deref());
    let mode = spec.submission_mode();
    let selector = spec.cluster_selector();
    let autoscaling = spec
        .ray_cluster_spec
        .as_ref()
        .is_some_and(RayClusterSpec::autoscaling_enabled);

    if spec.is_suspended() && !spec.shutdown_after_job_finishes() {
        report.add("spec.suspend", m::JOB_SUSPEND_WITHOUT_SHUTDOWN);
    }
    if spec.ttl_seconds_after_finished() < 0 {
        report.add("spec.ttlSecondsAfterFinished", m::JOB_TTL_NEGATIVE);
    }
    if !spec.shutdown_after_job_finishes() && spec.ttl_seconds_after_finished() > 0 {
        report.add("spec.ttlSecondsAfterFinished", m::JOB_TTL_WITHOUT_SHUTDOWN);
    }
    validate_deletion_strategy(report, spec, selector.is_some(), autoscaling, gates);

    if spec.is_suspended() && selector.is_some() {
        report.add("spec.suspend", m::JOB_SUSPEND_WITH_CLUSTER_SELECTOR);
    }
    match selector {
        None if spec.ray_cluster_spec.is_none() => report.add("spec", m::JOB_NO_CLUSTER),
        None => {}
        Some(selector) => {
            if selector
                .get(c::RAY_CLUSTER_LABEL_KEY)
                .is_none_or(String::is_empty)
            {
                report.add("spec.clusterSelector", m::JOB_CLUSTER_SELECTOR_NAME_EMPTY);
            }
            if mode == JobSubmissionMode::SidecarMode {
                report.add("spec.clusterSelector", m::JOB_CLUSTER_SELECTOR_SIDECAR);
            }
        }
    }
    if mode == JobSubmissionMode::InteractiveMode && spec.backoff_limit() > 0 {
        report.add("spec.backoffLimit", m::JOB_BACKOFF_LIMIT_INTERACTIVE);
    }
    if mode == JobSubmissionMode::SidecarMode {
        if spec.submitter_pod_template.is_some() {
            report.add(
                "spec.submitterPodTemplate",
                m::JOB_SUBMITTER_TEMPLATE_SIDECAR,
            );
        }
        if spec.submitter_config.is_some() {
            report.add("spec.submitterConfig", m::JOB_SUBMITTER_CONFIG_SIDECAR);
        }
        if let Some(cluster) = &spec.ray_cluster_spec
            && !restart_policy_allows_ray_restart_control(&cluster.head_group_spec.template)
        {
            report.add(
                "spec.rayClusterSpec.headGroupSpec.template.spec.restartPolicy",
                m::JOB_HEAD_RESTART_POLICY_SIDECAR,
            );
        }
    }
    if selector.is_none()
        && let Some(cluster) = &spec.ray_cluster_spec
    {
        validate_cluster_spec(report, "spec.rayClusterSpec", cluster, annotations, gates);
    }
    if let Some(runtime_env) = spec
        .runtime_env_yaml
        .as_deref()
        .filter(|text| !text.is_empty())
        && let Err(error) = serde_yaml::from_str::<serde_yaml::Mapping>(runtime_env)
    {
        report.add(
            "spec.runtimeEnvYAML",
            m::runtime_env_yaml_invalid(&error.to_string()),
        );
    }
    if spec
        .active_deadline_seconds
        .is_some_and(|seconds| seconds <= 0)
    {
        report.add(
            "spec.activeDeadlineSeconds",
            m::JOB_ACTIVE_DEADLINE_NOT_POSITIVE,
        );
    }
    if spec.backoff_limit() < 0 {
        report.add("spec.backoffLimit", m::JOB_BACKOFF_LIMIT_NEGATIVE);
    }
}

fn policy_name(policy: DeletionPolicyType) -> &'static str {
    match policy {
        DeletionPolicyType::DeleteCluster => "DeleteCluster",
        DeletionPolicyType::DeleteWorkers => "DeleteWorkers",
        DeletionPolicyType::DeleteSelf => "DeleteSelf",
        DeletionPolicyType::DeleteNone => "DeleteNone",
    }
}

fn validate_deletion_strategy(
    report: &mut Report,
    spec: &RayJobSpec,
    has_selector: bool,
    autoscaling: bool,
    gates: &FeatureGates,
) {
    use crate::rayjob::DeletionJobStatus;
    let Some(strategy) = &spec.deletion_strategy else {
        return;
    };
    let path = "spec.deletionStrategy";
    if !gates.ray_job_deletion_policy {
        report.add(path, m::JOB_DELETION_STRATEGY_GATE);
        return;
    }
    // Rules on one policy that hold in both the legacy and the rules form.
    let check_policy = |report: &mut Report, field: String, policy: DeletionPolicyType| {
        if has_selector
            && matches!(
                policy,
                DeletionPolicyType::DeleteCluster | DeletionPolicyType::DeleteWorkers
            )
        {
            report.add(
                field.clone(),
                m::deletion_policy_with_cluster_selector(policy_name(policy)),
            );
        }
        if autoscaling && policy == DeletionPolicyType::DeleteWorkers {
            report.add(field, m::DELETION_WORKERS_WITH_AUTOSCALING);
        }
    };
    let legacy = strategy.on_success.is_some() || strategy.on_failure.is_some();
    match &strategy.deletion_rules {
        Some(rules) => {
            if legacy {
                report.add(path, m::DELETION_STRATEGY_MIXED);
            }
            if spec.shutdown_after_job_finishes() {
                report.add(
                    "spec.shutdownAfterJobFinishes",
                    m::DELETION_RULES_WITH_SHUTDOWN,
                );
            }
            let mut seen = BTreeSet::new();
            let mut ttls: BTreeMap<(DeletionJobStatus, DeletionPolicyType), i32> = BTreeMap::new();
            for (index, rule) in rules.iter().enumerate() {
                let rule_path = format!("{path}.deletionRules[{index}]");
                let status = rule.condition.job_status;
                let status_name = match status {
                    DeletionJobStatus::Succeeded => "SUCCEEDED",
                    DeletionJobStatus::Failed => "FAILED",
                };
                if rule.condition.ttl_seconds() < 0 {
                    report.add(
                        format!("{rule_path}.condition.ttlSeconds"),
                        m::DELETION_TTL_NEGATIVE,
                    );
                }
                check_policy(report, format!("{rule_path}.policy"), rule.policy);
                if !seen.insert((status, rule.policy)) {
                    report.add(
                        rule_path,
                        m::duplicate_deletion_rule(status_name, policy_name(rule.policy)),
                    );
                    continue;
                }
                ttls.insert((status, rule.policy), rule.condition.ttl_seconds());
            }
            // Deleting more must not come before deleting less: Workers <= Cluster <= Self.
            for status in [DeletionJobStatus::Succeeded, DeletionJobStatus::Failed] {
                let status_name = if status == DeletionJobStatus::Succeeded {
                    "SUCCEEDED"
                } else {
                    "FAILED"
                };
                let order = [
                    DeletionPolicyType::DeleteWorkers,
                    DeletionPolicyType::DeleteCluster,
                    DeletionPolicyType::DeleteSelf,
                ];
                for (i, earlier) in order.iter().enumerate() {
                    for later in &order[i + 1..] {
                        if let (Some(&earlier_ttl), Some(&later_ttl)) =
                            (ttls.get(&(status, *earlier)), ttls.get(&(status, *later)))
                            && later_ttl < earlier_ttl
                        {
                            report.add(
                                format!("{path}.deletionRules"),
                                m::deletion_ttl_order(
                                    status_name,
                                    policy_name(*later),
                                    later_ttl,
                                    policy_name(*earlier),
                                    earlier_ttl,
                                ),
                            );
                        }
                    }
                }
            }
        }
        None if !legacy => report.add(path, m::DELETION_STRATEGY_INCOMPLETE),
        None => {
            let success = strategy
                .on_success
                .as_ref()
                .and_then(|policy| policy.policy);
            let failure = strategy
                .on_failure
                .as_ref()
                .and_then(|policy| policy.policy);
            let (Some(success), Some(failure)) = (success, failure) else {
                report.add(path, m::DELETION_LEGACY_POLICY_MISSING);
                return;
            };
            for (field, policy) in [("onSuccess", success), ("onFailure", failure)] {
                let field = format!("{path}.{field}.policy");
                check_policy(report, field.clone(), policy);
                if spec.shutdown_after_job_finishes() && policy == DeletionPolicyType::DeleteNone {
                    report.add(field, m::DELETION_NONE_WITH_SHUTDOWN);
                }
            }
        }
    }
}

fn validate_service_spec(
    report: &mut Report,
    spec: &RayServiceSpec,
    annotations: &BTreeMap<String, String>,
    gates: &FeatureGates,
) {
    let cluster = &spec.ray_cluster_config;
    validate_cluster_spec(report, "spec.rayClusterConfig", cluster, annotations, gates);
    let head_service_name = cluster
        .head_group_spec
        .head_service
        .as_ref()
        .and_then(|service| service.metadata.name.as_deref());
    if head_service_name.is_some_and(|name| !name.is_empty()) {
        report.add(
            "spec.rayClusterConfig.headGroupSpec.headService.metadata.name",
            m::SERVICE_HEAD_SERVICE_NAME_SET,
        );
    }
    if spec
        .ray_cluster_deletion_delay_seconds
        .is_some_and(|seconds| seconds < 0)
    {
        report.add(
            "spec.rayClusterDeletionDelaySeconds",
            m::SERVICE_DELETION_DELAY_NEGATIVE,
        );
    }
    if let Some(config) = spec
        .serve_config_v2
        .as_deref()
        .filter(|text| !text.is_empty())
        && let Err(error) = serde_yaml::from_str::<serde_yaml::Mapping>(config)
    {
        report.add(
            "spec.serveConfigV2",
            m::serve_config_invalid(&error.to_string()),
        );
    }
    if spec.upgrade_type() != RayServiceUpgradeType::NewClusterWithIncrementalUpgrade {
        return;
    }
    let path = "spec.upgradeStrategy";
    if !gates.ray_service_incremental_upgrade {
        report.add(format!("{path}.type"), m::SERVICE_INCREMENTAL_UPGRADE_GATE);
        return;
    }
    if !cluster.autoscaling_enabled() {
        report.add(
            "spec.rayClusterConfig.enableInTreeAutoscaling",
            m::SERVICE_INCREMENTAL_UPGRADE_AUTOSCALING,
        );
    }
    let Some(options) = spec
        .upgrade_strategy
        .as_ref()
        .and_then(|strategy| strategy.cluster_upgrade_options.as_ref())
    else {
        report.add(
            format!("{path}.clusterUpgradeOptions"),
            m::SERVICE_INCREMENTAL_UPGRADE_OPTIONS,
        );
        return;
    };
    let options_path = format!("{path}.clusterUpgradeOptions");
    if options
        .max_surge_percent
        .is_some_and(|percent| !(0..=100).contains(&percent))
    {
        report.add(
            format!("{options_path}.maxSurgePercent"),
            m::SERVICE_MAX_SURGE_RANGE,
        );
    }
    if !(0..=100).contains(&options.step_size_percent) {
        report.add(
            format!("{options_path}.stepSizePercent"),
            m::SERVICE_STEP_SIZE_RANGE,
        );
    }
    if options.interval_seconds <= 0 {
        report.add(
            format!("{options_path}.intervalSeconds"),
            m::SERVICE_INTERVAL_NOT_POSITIVE,
        );
    }
    if options.gateway_class_name.is_empty() {
        report.add(
            format!("{options_path}.gatewayClassName"),
            m::SERVICE_GATEWAY_CLASS_EMPTY,
        );
    }
}

/// The `ray.io/initializing-timeout` annotation's value in whole seconds, if it is valid.
pub fn initializing_timeout_seconds(value: &str) -> Option<u64> {
    if let Ok(seconds) = value.parse::<u64>() {
        return (seconds > 0).then_some(seconds);
    }
    go_duration_nanos(value)
        .filter(|nanos| *nanos > 0.0)
        .map(|nanos| (nanos / 1e9).ceil() as u64)
}

/// `ray.io/initializing-timeout`: a positive Go duration (`30m`, `1h30m`, `90s`) or a positive
/// integer number of seconds.
fn is_positive_timeout(value: &str) -> bool {
    if let Ok(seconds) = value.parse::<i64>() {
        return seconds > 0;
    }
    go_duration_nanos(value).is_some_and(|nanos| nanos > 0.0)
}

/// Parses Go's time.ParseDuration syntax (unsigned): decimal numbers each followed by a unit.
fn go_duration_nanos(value: &str) -> Option<f64> {
    const UNITS: [(&str, f64); 7] = [
        ("ns", 1.0),
        ("us", 1e3),
        ("µs", 1e3),
        ("ms", 1e6),
        ("s", 1e9),
        ("m", 60e9),
        ("h", 3600e9),
    ];
    let mut rest = value.strip_prefix('+').unwrap_or(value);
    if rest == "0" {
        return Some(0.0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|ch: char| !(ch.is_ascii_digit() || ch == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        // Longest unit first so "ms" is not read as "m".
        let (unit, scale) = UNITS
            .iter()
            .filter(|(unit, _)| rest.starts_with(unit))
            .max_by_key(|(unit, _)| unit.len())?;
        rest = &rest[unit.len()..];
        total += number * scale;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns1035_accepts_and_rejects_like_kubernetes() {
        assert!(dns1035_label_errors("raycluster-sample").is_empty());
        assert_eq!(dns1035_label_errors("1abc").len(), 1);
        assert_eq!(dns1035_label_errors("abc-").len(), 1);
        assert_eq!(dns1035_label_errors("Abc").len(), 1);
        assert_eq!(dns1035_label_errors(&"a".repeat(64)).len(), 1);
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(parse_version("2.52.0"), Some((2, 52, 0)));
        assert_eq!(parse_version("2.9"), Some((2, 9, 0)));
        assert_eq!(parse_version("v2.53.1rc1"), None);
        assert_eq!(parse_version("2.53.1-rc1"), Some((2, 53, 1)));
        assert!(parse_version("2.9.3") < Some(c::MIN_RAY_VERSION_FOR_TOKEN_AUTH));
        assert_eq!(parse_version("latest"), None);
    }

    #[test]
    fn initializing_timeout_accepts_go_durations_and_seconds() {
        for valid in ["30m", "1h30m", "90s", "1.5h", "120", "500ms"] {
            assert!(is_positive_timeout(valid), "{valid}");
        }
        for invalid in ["0", "-5", "0s", "abc", "", "10x", "m"] {
            assert!(!is_positive_timeout(invalid), "{invalid}");
        }
    }

    #[test]
    fn label_keys_follow_qualified_name_rules() {
        assert!(label_key_errors("ray.io/accelerator").is_empty());
        assert!(label_key_errors("zone").is_empty());
        assert_eq!(label_key_errors("Bad_Prefix/x").len(), 1);
        assert_eq!(label_key_errors("-x").len(), 1);
        assert_eq!(label_value_errors("k", "bad value").len(), 1);
        assert!(label_value_errors("k", "").is_empty());
    }
}
