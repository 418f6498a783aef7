//! From the host's cached Kubernetes objects to the contract's typed observation records.
//! Only what decisions read crosses into the plugin; the full objects stay in the cache.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerState as K8sContainerState, ContainerStatus as K8sContainerStatus, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff;

use super::bindings::types::{
    ContainerState, ContainerStatus, ContainerTerminated, ContainerWaiting, ObservedPod,
    ObservedService, PodCondition, ServicePort, Timestamp,
};

/// A contract timestamp from a jiff timestamp.
pub fn timestamp(instant: jiff::Timestamp) -> Timestamp {
    Timestamp {
        seconds: instant.as_second(),
        nanos: u32::try_from(instant.subsec_nanosecond()).unwrap_or(0),
    }
}

fn time(value: Option<&Time>) -> Option<Timestamp> {
    value.map(|time| timestamp(time.0))
}

fn string_map(map: Option<&BTreeMap<String, String>>) -> Vec<(String, String)> {
    map.map(|map| {
        map.iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    })
    .unwrap_or_default()
}

fn container_state(state: Option<&K8sContainerState>) -> ContainerState {
    let Some(state) = state else {
        return ContainerState::Unknown;
    };
    if let Some(terminated) = &state.terminated {
        ContainerState::Terminated(ContainerTerminated {
            exit_code: terminated.exit_code,
            signal: terminated.signal,
            reason: terminated.reason.clone(),
            message: terminated.message.clone(),
            started_at: time(terminated.started_at.as_ref()),
            finished_at: time(terminated.finished_at.as_ref()),
        })
    } else if let Some(running) = &state.running {
        ContainerState::Running(time(running.started_at.as_ref()))
    } else if let Some(waiting) = &state.waiting {
        ContainerState::Waiting(ContainerWaiting {
            reason: waiting.reason.clone(),
            message: waiting.message.clone(),
        })
    } else {
        ContainerState::Unknown
    }
}

fn container_statuses(statuses: Option<&Vec<K8sContainerStatus>>) -> Vec<ContainerStatus> {
    statuses
        .map(|statuses| {
            statuses
                .iter()
                .map(|status| ContainerStatus {
                    name: status.name.clone(),
                    ready: status.ready,
                    started: status.started,
                    restart_count: status.restart_count,
                    state: container_state(status.state.as_ref()),
                    last_state: container_state(status.last_state.as_ref()),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What a plugin sees of a pod.
pub fn observed_pod(pod: &Pod) -> ObservedPod {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    ObservedPod {
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        resource_version: meta.resource_version.clone().unwrap_or_default(),
        labels: string_map(meta.labels.as_ref()),
        annotations: string_map(meta.annotations.as_ref()),
        creation_timestamp: time(meta.creation_timestamp.as_ref()),
        deletion_timestamp: time(meta.deletion_timestamp.as_ref()),
        node_name: spec.and_then(|spec| spec.node_name.clone()),
        restart_policy: spec.and_then(|spec| spec.restart_policy.clone()),
        scheduler_name: spec.and_then(|spec| spec.scheduler_name.clone()),
        phase: status.and_then(|status| status.phase.clone()),
        reason: status.and_then(|status| status.reason.clone()),
        message: status.and_then(|status| status.message.clone()),
        pod_ip: status.and_then(|status| status.pod_ip.clone()),
        host_ip: status.and_then(|status| status.host_ip.clone()),
        start_time: time(status.and_then(|status| status.start_time.as_ref())),
        conditions: status
            .and_then(|status| status.conditions.as_ref())
            .map(|conditions| {
                conditions
                    .iter()
                    .map(|condition| PodCondition {
                        condition_type: condition.type_.clone(),
                        status: condition.status.clone(),
                        reason: condition.reason.clone(),
                        message: condition.message.clone(),
                        last_transition_time: time(condition.last_transition_time.as_ref()),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        init_container_statuses: container_statuses(
            status.and_then(|status| status.init_container_statuses.as_ref()),
        ),
        container_statuses: container_statuses(
            status.and_then(|status| status.container_statuses.as_ref()),
        ),
    }
}

/// What a plugin sees of a service.
pub fn observed_service(service: &Service) -> ObservedService {
    let meta = &service.metadata;
    let spec = service.spec.as_ref();
    ObservedService {
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        labels: string_map(meta.labels.as_ref()),
        annotations: string_map(meta.annotations.as_ref()),
        creation_timestamp: time(meta.creation_timestamp.as_ref()),
        deletion_timestamp: time(meta.deletion_timestamp.as_ref()),
        service_type: spec.and_then(|spec| spec.type_.clone()),
        cluster_ip: spec.and_then(|spec| spec.cluster_ip.clone()),
        selector: string_map(spec.and_then(|spec| spec.selector.as_ref())),
        ports: spec
            .and_then(|spec| spec.ports.as_ref())
            .map(|ports| {
                ports
                    .iter()
                    .map(|port| ServicePort {
                        name: port.name.clone(),
                        port: port.port,
                        protocol: port.protocol.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}
