//! From the host's cached Kubernetes objects to the contract's observations: the pod
//! table (encoded by `wasmray-pod-table`, the layout the guest SDK reads) and the service
//! records. Only what decisions read crosses into the plugin; the full objects stay in
//! the cache.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerState as K8sContainerState, ContainerStatus as K8sContainerStatus, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff;

use wasmray_pod_table::{Table as PodTable, layout, record};

use super::bindings::types::{ObservedPods, ObservedService, ServicePort, Timestamp};

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

fn record_time(value: Option<&Time>) -> Option<record::Timestamp> {
    value.map(|time| {
        let Timestamp { seconds, nanos } = timestamp(time.0);
        record::Timestamp { seconds, nanos }
    })
}

fn record_state(state: Option<&K8sContainerState>) -> record::ContainerState {
    let Some(state) = state else {
        return record::ContainerState::Unknown;
    };
    if let Some(terminated) = &state.terminated {
        record::ContainerState::Terminated(record::ContainerTerminated {
            exit_code: terminated.exit_code,
            signal: terminated.signal,
            reason: terminated.reason.clone(),
            message: terminated.message.clone(),
            started_at: record_time(terminated.started_at.as_ref()),
            finished_at: record_time(terminated.finished_at.as_ref()),
        })
    } else if let Some(running) = &state.running {
        record::ContainerState::Running(record_time(running.started_at.as_ref()))
    } else if let Some(waiting) = &state.waiting {
        record::ContainerState::Waiting(record::ContainerWaiting {
            reason: waiting.reason.clone(),
            message: waiting.message.clone(),
        })
    } else {
        record::ContainerState::Unknown
    }
}

fn record_statuses(statuses: Option<&Vec<K8sContainerStatus>>) -> Vec<record::ContainerStatus> {
    statuses
        .into_iter()
        .flatten()
        .map(|status| record::ContainerStatus {
            name: status.name.clone(),
            ready: status.ready,
            started: status.started,
            restart_count: status.restart_count,
            state: record_state(status.state.as_ref()),
            last_state: record_state(status.last_state.as_ref()),
        })
        .collect()
}

/// What a plugin sees of a pod, before it joins a table.
pub fn pod_record(pod: &Pod) -> record::Pod {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    record::Pod {
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        resource_version: meta.resource_version.clone().unwrap_or_default(),
        labels: string_map(meta.labels.as_ref()),
        annotations: string_map(meta.annotations.as_ref()),
        creation_timestamp: record_time(meta.creation_timestamp.as_ref()),
        deletion_timestamp: record_time(meta.deletion_timestamp.as_ref()),
        node_name: spec.and_then(|spec| spec.node_name.clone()),
        restart_policy: spec.and_then(|spec| spec.restart_policy.clone()),
        scheduler_name: spec.and_then(|spec| spec.scheduler_name.clone()),
        phase: status.and_then(|status| status.phase.clone()),
        reason: status.and_then(|status| status.reason.clone()),
        message: status.and_then(|status| status.message.clone()),
        pod_ip: status.and_then(|status| status.pod_ip.clone()),
        host_ip: status.and_then(|status| status.host_ip.clone()),
        start_time: record_time(status.and_then(|status| status.start_time.as_ref())),
        conditions: status
            .and_then(|status| status.conditions.as_ref())
            .into_iter()
            .flatten()
            .map(|condition| record::PodCondition {
                condition_type: condition.type_.clone(),
                status: condition.status.clone(),
                reason: condition.reason.clone(),
                message: condition.message.clone(),
                last_transition_time: record_time(condition.last_transition_time.as_ref()),
            })
            .collect(),
        init_container_statuses: record_statuses(
            status.and_then(|status| status.init_container_statuses.as_ref()),
        ),
        container_statuses: record_statuses(
            status.and_then(|status| status.container_statuses.as_ref()),
        ),
    }
}

/// The table of one pod: what the host caches per pod, so that a call only concatenates
/// tables.
pub fn pod_table(pod: &Pod) -> PodTable {
    PodTable::of(&[pod_record(pod)])
}

/// The labels of the first pod of a table.
pub fn first_pod_labels(table: &PodTable) -> BTreeMap<String, String> {
    let reader = table.reader();
    let Some(row) = reader.pod_rows().next() else {
        return BTreeMap::new();
    };
    reader
        .rows(row, layout::POD_LABELS, reader.pairs, layout::PAIR_WORDS)
        .chunks_exact(layout::PAIR_WORDS)
        .map(|pair| {
            (
                reader.required_text(pair, 0).to_owned(),
                reader.required_text(pair, 2).to_owned(),
            )
        })
        .collect()
}

impl From<PodTable> for ObservedPods {
    fn from(table: PodTable) -> Self {
        ObservedPods {
            text: table.text,
            pods: table.pods,
            pairs: table.pairs,
            conditions: table.conditions,
            container_statuses: table.container_statuses,
        }
    }
}

impl From<ObservedPods> for PodTable {
    fn from(pods: ObservedPods) -> Self {
        PodTable {
            text: pods.text,
            pods: pods.pods,
            pairs: pods.pairs,
            conditions: pods.conditions,
            container_statuses: pods.container_statuses,
        }
    }
}

impl ObservedPods {
    /// A table without pods.
    pub fn empty() -> Self {
        ObservedPods::from(PodTable::default())
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
