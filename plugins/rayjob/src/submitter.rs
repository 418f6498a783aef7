//! The process that submits the job in K8sJobMode (a batch/v1 Job) and SidecarMode (a
//! container of the head pod), and what its state says about the job.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, PodSpec, PodTemplateSpec, ResourceRequirements,
    SecretKeySelector,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use wasmray_crds::RayJob;
use wasmray_crds::constants::{
    COMPONENT_NAME, DEFAULT_DASHBOARD_PORT, KUBERNETES_CREATED_BY_LABEL_KEY, RAY_AUTH_MODE_ENV,
    RAY_AUTH_TOKEN_ENV, RAY_AUTH_TOKEN_SECRET_KEY, RAY_ORIGINATED_FROM_CR_NAME_LABEL_KEY,
    RAY_ORIGINATED_FROM_CRD_LABEL_KEY, SUBMITTER_SIDECAR_CONTAINER_NAME,
};
use wasmray_plugin_sdk::{ContainerState, Pod, Timestamp};

use crate::submission::JobRequest;

/// KubeRay's default `submitterConfig.backoffLimit`.
const DEFAULT_SUBMITTER_BACKOFF_LIMIT: i32 = 2;

/// Everything a submitter needs to know.
#[derive(Clone, Copy, Debug)]
pub struct SubmitterContext<'a> {
    pub job: &'a RayJob,
    pub request: &'a JobRequest,
    pub job_id: &'a str,
    /// `status.dashboardURL` (`host:port`), or `127.0.0.1:<port>` for the sidecar.
    pub dashboard_url: &'a str,
    /// The head container's image, for the default submitter container.
    pub head_image: Option<&'a str>,
    /// The cluster's name when it uses token auth: the Secret holding the token.
    pub auth_secret: Option<&'a str>,
    /// `ENABLE_LOGIN_SHELL`.
    pub login_shell: bool,
}

impl SubmitterContext<'_> {
    fn shell(&self) -> Vec<String> {
        let flags = if self.login_shell { "-cel" } else { "-ce" };
        ["/bin/bash", flags, "--"].map(str::to_owned).to_vec()
    }

    /// K8sJobMode: submit unless Ray already knows the id (a retried pod must not submit
    /// twice), then follow the logs until the job ends.
    pub fn k8s_job_command(&self) -> String {
        let address = format!("http://{}", self.dashboard_url);
        format!(
            "if ! ray job status --address {address} {id} >/dev/null 2>&1 ; then {submit} ; fi ; ray job logs --address {address} --follow {id}",
            id = self.job_id,
            submit = self.request.submit_command(&address, self.job_id, true),
        )
    }

    /// SidecarMode: wait until the head's dashboard answers, then submit and wait for the
    /// job, so the container's exit code is the job's outcome.
    pub fn sidecar_command(&self) -> String {
        let address = format!("http://{}", self.dashboard_url);
        format!(
            "until ray job list --address {address} >/dev/null 2>&1 ; do echo \"Waiting for the Ray dashboard at {address}\" ; sleep 2 ; done ; {submit}",
            submit = self.request.submit_command(&address, self.job_id, false),
        )
    }

    fn env(&self) -> Vec<EnvVar> {
        let mut env = vec![
            env_value("PYTHONUNBUFFERED", "1"),
            env_value("RAY_DASHBOARD_ADDRESS", self.dashboard_url),
            env_value("RAY_JOB_SUBMISSION_ID", self.job_id),
        ];
        if let Some(secret) = self.auth_secret {
            env.push(env_value(RAY_AUTH_MODE_ENV, "token"));
            env.push(EnvVar {
                name: RAY_AUTH_TOKEN_ENV.to_owned(),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.to_owned(),
                        key: RAY_AUTH_TOKEN_SECRET_KEY.to_owned(),
                        optional: None,
                    }),
                    ..EnvVarSource::default()
                }),
            });
        }
        env
    }

    fn default_container(&self, command: String) -> Container {
        Container {
            name: SUBMITTER_SIDECAR_CONTAINER_NAME.to_owned(),
            image: self.head_image.map(str::to_owned),
            command: Some(self.shell()),
            args: Some(vec![command]),
            env: Some(self.env()),
            resources: Some(default_resources()),
            ..Container::default()
        }
    }

    /// The submitter batch Job of K8sJobMode, named after the RayJob.
    pub fn submitter_job(&self) -> Job {
        let spec = &self.job.spec;
        let mut template = spec
            .submitter_pod_template
            .clone()
            .unwrap_or_else(|| PodTemplateSpec {
                metadata: None,
                spec: Some(PodSpec {
                    containers: vec![self.default_container(self.k8s_job_command())],
                    ..PodSpec::default()
                }),
            });
        let pod = template.spec.get_or_insert_with(PodSpec::default);
        if pod.containers.is_empty() {
            pod.containers
                .push(self.default_container(self.k8s_job_command()));
        } else {
            // A user's template keeps its own command; KubeRay fills in only a missing one.
            let container = &mut pod.containers[0];
            if container.command.as_ref().is_none_or(Vec::is_empty) {
                container.command = Some(self.shell());
                container.args = Some(vec![self.k8s_job_command()]);
            }
            if spec.submitter_pod_template.is_some() {
                container
                    .env
                    .get_or_insert_with(Vec::new)
                    .extend(self.env());
            }
        }
        if pod.restart_policy.as_deref().is_none_or(str::is_empty) {
            pod.restart_policy = Some("Never".to_owned());
        }
        let name = self.job.metadata.name.clone().unwrap_or_default();
        Job {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: self.job.metadata.namespace.clone(),
                labels: Some(BTreeMap::from([
                    (RAY_ORIGINATED_FROM_CR_NAME_LABEL_KEY.to_owned(), name),
                    (
                        RAY_ORIGINATED_FROM_CRD_LABEL_KEY.to_owned(),
                        "RayJob".to_owned(),
                    ),
                    (
                        KUBERNETES_CREATED_BY_LABEL_KEY.to_owned(),
                        COMPONENT_NAME.to_owned(),
                    ),
                ])),
                ..ObjectMeta::default()
            },
            spec: Some(JobSpec {
                backoff_limit: Some(
                    spec.submitter_config
                        .as_ref()
                        .and_then(|config| config.backoff_limit)
                        .unwrap_or(DEFAULT_SUBMITTER_BACKOFF_LIMIT),
                ),
                template,
                ..JobSpec::default()
            }),
            status: None,
        }
    }

    /// The `ray-job-submitter` container SidecarMode appends to the head pod.
    pub fn sidecar_container(&self) -> Container {
        self.default_container(self.sidecar_command())
    }
}

/// The dashboard address the sidecar uses: the head's own dashboard port on loopback.
pub fn sidecar_dashboard_url(head_dashboard_port: Option<i32>) -> String {
    format!(
        "127.0.0.1:{}",
        head_dashboard_port.unwrap_or(DEFAULT_DASHBOARD_PORT)
    )
}

fn env_value(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

/// KubeRay's submitter resources: requests 500m CPU / 200Mi, limits 1 CPU / 1Gi.
fn default_resources() -> ResourceRequirements {
    let amounts = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])
    };
    ResourceRequirements {
        requests: Some(amounts("500m", "200Mi")),
        limits: Some(amounts("1", "1Gi")),
        ..ResourceRequirements::default()
    }
}

/// Where the submitter is, as far as the job's outcome goes.
#[derive(Clone, Debug, PartialEq)]
pub enum SubmitterState {
    /// Still running (or not started).
    Running,
    /// It ended well: the job was submitted and followed to its end.
    Finished { at: Option<Timestamp> },
    /// It gave up; `message` says why, in KubeRay's words.
    Failed {
        at: Option<Timestamp>,
        message: String,
    },
    /// SidecarMode only: the head pod is gone, so the submitter is too.
    HeadPodMissing,
}

impl SubmitterState {
    /// When it ended, if it did.
    pub fn finished_at(&self) -> Option<Timestamp> {
        match self {
            SubmitterState::Finished { at } | SubmitterState::Failed { at, .. } => *at,
            _ => None,
        }
    }

    pub fn has_ended(&self) -> bool {
        matches!(
            self,
            SubmitterState::Finished { .. } | SubmitterState::Failed { .. }
        )
    }
}

/// The submitter Job's state from its final condition (`Failed` or `Complete`).
pub fn job_state(job: &Job) -> SubmitterState {
    let conditions = job
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_ref());
    for condition in conditions.into_iter().flatten() {
        if condition.status != "True" {
            continue;
        }
        let at = condition
            .last_transition_time
            .as_ref()
            .map(Timestamp::from_kube_time);
        match condition.type_.as_str() {
            "Failed" => {
                return SubmitterState::Failed {
                    at,
                    message: format!(
                        "Job submission has failed. Reason: {}. Message: {}",
                        condition.reason.as_deref().unwrap_or_default(),
                        condition.message.as_deref().unwrap_or_default()
                    ),
                };
            }
            "Complete" => return SubmitterState::Finished { at },
            _ => {}
        }
    }
    SubmitterState::Running
}

/// The sidecar's state from the head pod of the cluster (the host passes it in SidecarMode).
pub fn sidecar_state(head_pod: Option<&Pod<'_>>) -> SubmitterState {
    let Some(pod) = head_pod else {
        return SubmitterState::HeadPodMissing;
    };
    let sidecar = pod
        .container_statuses
        .iter()
        .find(|status| status.name == SUBMITTER_SIDECAR_CONTAINER_NAME);
    match sidecar.map(|status| status.state) {
        Some(ContainerState::Terminated(terminated)) => {
            let at = terminated.finished_at;
            if terminated.exit_code == 0 {
                SubmitterState::Finished { at }
            } else {
                SubmitterState::Failed {
                    at,
                    message: format!(
                        "Ray head pod container {SUBMITTER_SIDECAR_CONTAINER_NAME} terminated with exit code {}: {}",
                        terminated.exit_code,
                        terminated.reason.unwrap_or_default()
                    ),
                }
            }
        }
        _ => SubmitterState::Running,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{head_pod, job_from_yaml};
    use wasmray_plugin_sdk::record::ContainerStatus;

    const JOB: &str = r#"
metadata: {name: rayjob-sample, namespace: ns, uid: uid-1}
spec:
  entrypoint: python /home/ray/samples/sample_code.py
  runtimeEnvYAML: |
    env_vars:
      counter_name: "test_counter"
  rayClusterSpec:
    headGroupSpec:
      template:
        spec:
          containers: [{name: ray-head, image: "rayproject/ray:2.46.0"}]
"#;

    fn context<'a>(job: &'a RayJob, request: &'a JobRequest) -> SubmitterContext<'a> {
        SubmitterContext {
            job,
            request,
            job_id: "rayjob-sample-abcde",
            dashboard_url: "rayjob-sample-xyz-head-svc.ns.svc.cluster.local:8265",
            head_image: Some("rayproject/ray:2.46.0"),
            auth_secret: None,
            login_shell: false,
        }
    }

    #[test]
    fn default_submitter_job_is_kuberays() {
        let job = job_from_yaml(JOB);
        let request = JobRequest::from_spec(&job.spec, None).unwrap();
        let submitter = context(&job, &request).submitter_job();
        assert_eq!(submitter.metadata.name.as_deref(), Some("rayjob-sample"));
        let labels = submitter.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["ray.io/originated-from-cr-name"], "rayjob-sample");
        assert_eq!(labels["ray.io/originated-from-crd"], "RayJob");
        assert_eq!(labels["app.kubernetes.io/created-by"], "kuberay-operator");
        let spec = submitter.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(2));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let container = &pod.containers[0];
        assert_eq!(container.name, "ray-job-submitter");
        assert_eq!(container.image.as_deref(), Some("rayproject/ray:2.46.0"));
        assert_eq!(
            container.command.as_deref().unwrap(),
            ["/bin/bash", "-ce", "--"]
        );
        let address = "http://rayjob-sample-xyz-head-svc.ns.svc.cluster.local:8265";
        assert_eq!(
            container.args.as_deref().unwrap(),
            [format!(
                "if ! ray job status --address {address} rayjob-sample-abcde >/dev/null 2>&1 ; then ray job submit --address {address} --no-wait --runtime-env-json \"{{\\\"env_vars\\\":{{\\\"counter_name\\\":\\\"test_counter\\\"}}}}\" --submission-id rayjob-sample-abcde -- python /home/ray/samples/sample_code.py ; fi ; ray job logs --address {address} --follow rayjob-sample-abcde"
            )]
        );
        let env: BTreeMap<_, _> = container
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|var| (var.name.as_str(), var.value.as_deref().unwrap_or_default()))
            .collect();
        assert_eq!(env["PYTHONUNBUFFERED"], "1");
        assert_eq!(
            env["RAY_DASHBOARD_ADDRESS"],
            "rayjob-sample-xyz-head-svc.ns.svc.cluster.local:8265"
        );
        assert_eq!(env["RAY_JOB_SUBMISSION_ID"], "rayjob-sample-abcde");
        let resources = container.resources.as_ref().unwrap();
        assert_eq!(resources.requests.as_ref().unwrap()["cpu"].0, "500m");
        assert_eq!(resources.requests.as_ref().unwrap()["memory"].0, "200Mi");
        assert_eq!(resources.limits.as_ref().unwrap()["cpu"].0, "1");
        assert_eq!(resources.limits.as_ref().unwrap()["memory"].0, "1Gi");
    }

    #[test]
    fn user_template_keeps_its_command_and_gets_env_backoff_and_auth() {
        let job = job_from_yaml(&format!(
            "{JOB}  submitterConfig: {{backoffLimit: 5}}\n  submitterPodTemplate:\n    spec:\n      containers:\n      - {{name: mine, image: my/submitter, command: [/submit]}}\n"
        ));
        let request = JobRequest::from_spec(&job.spec, None).unwrap();
        let mut ctx = context(&job, &request);
        ctx.auth_secret = Some("rayjob-sample-xyz");
        ctx.login_shell = true;
        let submitter = ctx.submitter_job();
        let spec = submitter.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(5));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let container = &pod.containers[0];
        assert_eq!(container.command.as_deref().unwrap(), ["/submit"]);
        assert!(container.args.is_none());
        let env = container.env.as_ref().unwrap();
        assert!(env.iter().any(|var| var.name == "RAY_JOB_SUBMISSION_ID"));
        let token = env.iter().find(|var| var.name == "RAY_AUTH_TOKEN").unwrap();
        let secret = token
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (secret.name.as_str(), secret.key.as_str()),
            ("rayjob-sample-xyz", "auth_token")
        );

        // A template without a command gets KubeRay's, in a login shell when asked.
        let job = job_from_yaml(&format!(
            "{JOB}  submitterPodTemplate:\n    spec:\n      containers:\n      - {{name: mine, image: my/submitter}}\n"
        ));
        let mut ctx = context(&job, &request);
        ctx.login_shell = true;
        let pod = ctx.submitter_job().spec.unwrap().template.spec.unwrap();
        assert_eq!(
            pod.containers[0].command.as_deref().unwrap(),
            ["/bin/bash", "-cel", "--"]
        );
        assert!(pod.containers[0].args.as_ref().unwrap()[0].contains("ray job logs"));
    }

    #[test]
    fn sidecar_waits_for_the_dashboard_and_submits_blocking() {
        let job = job_from_yaml(JOB);
        let request = JobRequest::from_spec(&job.spec, None).unwrap();
        let url = sidecar_dashboard_url(None);
        let mut ctx = context(&job, &request);
        ctx.dashboard_url = &url;
        let container = ctx.sidecar_container();
        assert_eq!(container.name, "ray-job-submitter");
        let command = &container.args.as_ref().unwrap()[0];
        assert!(command.starts_with("until ray job list --address http://127.0.0.1:8265 "));
        assert!(
            command.contains("ray job submit --address http://127.0.0.1:8265 --runtime-env-json")
        );
        assert!(!command.contains("--no-wait"));
    }

    #[test]
    fn job_conditions_give_the_state() {
        let mut job: Job = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "j"},
            "status": {"conditions": [
                {"type": "FailureTarget", "status": "True"},
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit",
                 "lastTransitionTime": "2026-11-23T03:53:02Z"}
            ]}
        }))
        .unwrap();
        let state = job_state(&job);
        assert_eq!(
            state,
            SubmitterState::Failed {
                at: Some(Timestamp { seconds: 1_795_405_982, nanos: 0 }),
                message: "Job submission has failed. Reason: BackoffLimitExceeded. Message: Job has reached the specified backoff limit".into(),
            }
        );
        job.status = serde_json::from_value(serde_json::json!({"conditions": [
            {"type": "Complete", "status": "True", "lastTransitionTime": "2026-11-23T03:53:02Z"}
        ]}))
        .unwrap();
        assert!(matches!(
            job_state(&job),
            SubmitterState::Finished { at: Some(_) }
        ));
        job.status = None;
        assert_eq!(job_state(&job), SubmitterState::Running);
    }

    #[test]
    fn sidecar_state_from_the_head_pod() {
        assert_eq!(sidecar_state(None), SubmitterState::HeadPodMissing);
        let state_of = |pod: &wasmray_plugin_sdk::record::Pod| {
            let table = wasmray_plugin_sdk::ObservedPods::from_records(std::slice::from_ref(pod));
            sidecar_state(table.views().first())
        };
        let mut pod = head_pod("c");
        assert_eq!(state_of(&pod), SubmitterState::Running);
        pod.container_statuses
            .push(ContainerStatus::terminated("ray-job-submitter", 1));
        assert_eq!(
            state_of(&pod),
            SubmitterState::Failed {
                at: None,
                message:
                    "Ray head pod container ray-job-submitter terminated with exit code 1: Error"
                        .into()
            }
        );
        pod.container_statuses[0] = ContainerStatus::terminated("ray-job-submitter", 0);
        assert_eq!(state_of(&pod), SubmitterState::Finished { at: None });
    }
}
