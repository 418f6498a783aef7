//! A pod's status as the runner reports it, the way a kubelet does: phase, conditions with
//! their transition times, and one status per (init) container.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Timestamp,
    },
    Terminated {
        exit_code: i32,
        reason: String,
        message: Option<String>,
        started_at: Timestamp,
        finished_at: Timestamp,
    },
}

impl State {
    pub fn waiting(reason: &str, message: Option<String>) -> State {
        State::Waiting {
            reason: reason.to_owned(),
            message,
        }
    }

    /// A kubelet's reason for an exit code.
    pub fn exited(exit_code: i32, started_at: Timestamp, finished_at: Timestamp) -> State {
        State::Terminated {
            exit_code,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.to_owned(),
            message: None,
            started_at,
            finished_at,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            State::Waiting { reason, message } => {
                json!({"waiting": {"reason": reason, "message": message}})
            }
            State::Running { started_at } => {
                json!({"running": {"startedAt": started_at.to_string()}})
            }
            State::Terminated {
                exit_code,
                reason,
                message,
                started_at,
                finished_at,
            } => json!({"terminated": {
                "exitCode": exit_code,
                "reason": reason,
                "message": message,
                "startedAt": started_at.to_string(),
                "finishedAt": finished_at.to_string(),
            }}),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ContainerRecord {
    pub name: String,
    pub image: String,
    pub state: State,
    pub last_state: Option<State>,
    pub restart_count: i32,
    /// `pod-runner://<pid>` of its current or last process.
    pub container_id: Option<String>,
}

impl ContainerRecord {
    pub fn new(name: &str, image: &str, reason: &str) -> ContainerRecord {
        ContainerRecord {
            name: name.to_owned(),
            image: image.to_owned(),
            state: State::waiting(reason, None),
            last_state: None,
            restart_count: 0,
            container_id: None,
        }
    }

    pub fn running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    fn to_json(&self, ready: bool) -> Value {
        json!({
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "containerID": self.container_id,
            "ready": ready,
            "started": self.running(),
            "restartCount": self.restart_count,
            "state": self.state.to_json(),
            "lastState": self.last_state.as_ref().map_or_else(|| json!({}), State::to_json),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PodRecord {
    pub phase: Phase,
    pub pod_ip: String,
    pub host_ip: String,
    pub start_time: Timestamp,
    pub init_containers: Vec<ContainerRecord>,
    pub containers: Vec<ContainerRecord>,
    pub initialized: bool,
    /// Last value and transition time of each condition, so a rewrite keeps the times of
    /// conditions that did not change.
    transitions: BTreeMap<&'static str, (bool, Timestamp)>,
}

impl PodRecord {
    pub fn new(
        pod_ip: String,
        host_ip: String,
        init: &[(String, String)],
        main: &[(String, String)],
    ) -> PodRecord {
        let reason = if init.is_empty() {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        PodRecord {
            phase: Phase::Pending,
            pod_ip,
            host_ip,
            start_time: Timestamp::now(),
            init_containers: init
                .iter()
                .map(|(name, image)| ContainerRecord::new(name, image, "PodInitializing"))
                .collect(),
            containers: main
                .iter()
                .map(|(name, image)| ContainerRecord::new(name, image, reason))
                .collect(),
            initialized: init.is_empty(),
            transitions: BTreeMap::new(),
        }
    }

    /// Ready means every container runs: the runner does not run readiness probes.
    pub fn ready(&self) -> bool {
        self.phase == Phase::Running && self.containers.iter().all(ContainerRecord::running)
    }

    /// The phase from the containers, for the pod's restart policy, as a kubelet decides it.
    pub fn settle_phase(&mut self, restart_policy: &str) {
        if matches!(self.phase, Phase::Succeeded | Phase::Failed) {
            return;
        }
        if !self.initialized {
            return;
        }
        let terminated: Vec<i32> = self
            .containers
            .iter()
            .filter_map(|container| match container.state {
                State::Terminated { exit_code, .. } => Some(exit_code),
                _ => None,
            })
            .collect();
        let all_done = terminated.len() == self.containers.len();
        self.phase = match restart_policy {
            "Never" if all_done => {
                if terminated.iter().all(|code| *code == 0) {
                    Phase::Succeeded
                } else {
                    Phase::Failed
                }
            }
            "OnFailure" if all_done && terminated.iter().all(|code| *code == 0) => Phase::Succeeded,
            _ => Phase::Running,
        };
    }

    fn condition(
        &mut self,
        kind: &'static str,
        status: bool,
        now: Timestamp,
        reason: Option<&str>,
    ) -> Value {
        let entry = self.transitions.entry(kind).or_insert((status, now));
        if entry.0 != status {
            *entry = (status, now);
        }
        json!({
            "type": kind,
            "status": if status { "True" } else { "False" },
            "reason": reason,
            "lastTransitionTime": entry.1.to_string(),
        })
    }

    /// The whole `status` to write (a merge patch replaces its lists wholesale).
    pub fn status_at(&mut self, now: Timestamp) -> Value {
        let ready = self.ready();
        let terminal = matches!(self.phase, Phase::Succeeded | Phase::Failed);
        let unready_reason = if terminal {
            Some("PodCompleted")
        } else if ready {
            None
        } else {
            Some("ContainersNotReady")
        };
        let initialized = self.initialized;
        let conditions = vec![
            self.condition("PodReadyToStartContainers", !terminal, now, None),
            self.condition(
                "Initialized",
                initialized,
                now,
                (!initialized).then_some("ContainersNotInitialized"),
            ),
            self.condition("Ready", ready, now, unready_reason),
            self.condition("ContainersReady", ready, now, unready_reason),
            self.condition("PodScheduled", true, now, None),
        ];
        let init: Vec<Value> = self
            .init_containers
            .iter()
            .map(|container| {
                let done = matches!(container.state, State::Terminated { exit_code: 0, .. });
                container.to_json(done)
            })
            .collect();
        let main: Vec<Value> = self
            .containers
            .iter()
            .map(|container| container.to_json(container.running() && self.phase == Phase::Running))
            .collect();
        json!({
            "phase": self.phase.as_str(),
            "conditions": conditions,
            "hostIP": self.host_ip,
            "hostIPs": [{"ip": self.host_ip}],
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
            "startTime": self.start_time.to_string(),
            "initContainerStatuses": init,
            "containerStatuses": main,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> PodRecord {
        PodRecord::new(
            "127.129.0.2".into(),
            "127.0.0.1".into(),
            &[("wait-gcs-ready".into(), "ray".into())],
            &[("ray-worker".into(), "ray".into())],
        )
    }

    #[test]
    fn a_new_pod_is_pending_and_initializing() {
        let mut pod = record();
        let status = pod.status_at(Timestamp::now());
        assert_eq!(status["phase"], "Pending");
        assert_eq!(status["podIP"], "127.129.0.2");
        assert_eq!(status["conditions"][1]["status"], "False");
        assert_eq!(
            status["containerStatuses"][0]["state"]["waiting"]["reason"],
            "PodInitializing"
        );
    }

    #[test]
    fn running_containers_make_it_ready_and_an_exit_follows_the_restart_policy() {
        let now = Timestamp::now();
        let mut pod = record();
        pod.initialized = true;
        pod.init_containers[0].state = State::exited(0, now, now);
        pod.containers[0].state = State::Running { started_at: now };
        pod.settle_phase("Always");
        let status = pod.status_at(now);
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["conditions"][2]["type"], "Ready");
        assert_eq!(status["conditions"][2]["status"], "True");
        assert_eq!(status["containerStatuses"][0]["ready"], true);
        assert_eq!(status["initContainerStatuses"][0]["ready"], true);

        pod.containers[0].state = State::exited(1, now, now);
        pod.settle_phase("Always");
        assert_eq!(pod.phase, Phase::Running, "a kubelet restarts it");
        pod.settle_phase("Never");
        assert_eq!(pod.phase, Phase::Failed);
        let status = pod.status_at(now);
        assert_eq!(status["conditions"][2]["reason"], "PodCompleted");
        assert_eq!(
            status["containerStatuses"][0]["state"]["terminated"]["exitCode"],
            1
        );
    }
}
