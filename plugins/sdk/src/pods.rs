//! Observed pods: views over the contract's pod table.
//!
//! The host passes a parent's pods as one table (`observed-pods` in the WIT): all text in
//! one string, every row a run of 32-bit words (the layout is `wasmray-pod-table`'s).
//! [`ObservedPods::views`] turns the rows into [`Pod`] views whose fields borrow the
//! table's text, so reading a pod copies nothing. [`record`] holds owned pods to build a
//! table, e.g. in unit tests.

use wasmray_pod_table::layout::*;
pub use wasmray_pod_table::record;
use wasmray_pod_table::{Reader, Table};

use crate::Timestamp;
use crate::bindings::types::ObservedPods;

fn time(time: Option<wasmray_pod_table::Timestamp>) -> Option<Timestamp> {
    time.map(|time| Timestamp {
        seconds: time.seconds,
        nanos: time.nanos,
    })
}

impl From<Timestamp> for record::Timestamp {
    fn from(time: Timestamp) -> Self {
        record::Timestamp {
            seconds: time.seconds,
            nanos: time.nanos,
        }
    }
}

/// Key/value pairs of a pod: its labels or annotations, sorted by key.
#[derive(Debug, Clone, Copy)]
pub struct Pairs<'a> {
    reader: Reader<'a>,
    rows: &'a [u32],
}

impl<'a> Pairs<'a> {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.reader.pair_value(self.rows, key)
    }

    /// Every pair, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        let reader = self.reader;
        self.rows
            .chunks_exact(PAIR_WORDS)
            .map(move |pair| (reader.required_text(pair, 0), reader.required_text(pair, 2)))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.rows.len() / PAIR_WORDS
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl PartialEq for Pairs<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

/// The condition of a pod, as in `status.conditions`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodCondition<'a> {
    /// Condition type, e.g. "Ready", "PodScheduled".
    pub condition_type: &'a str,
    /// "True", "False" or "Unknown".
    pub status: &'a str,
    /// CamelCase reason, if any.
    pub reason: Option<&'a str>,
    /// Message, if any.
    pub message: Option<&'a str>,
    /// When the status last changed.
    pub last_transition_time: Option<Timestamp>,
}

/// A container that has not started yet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContainerWaiting<'a> {
    /// e.g. "ContainerCreating", "ImagePullBackOff", "CrashLoopBackOff".
    pub reason: Option<&'a str>,
    /// Message, if any.
    pub message: Option<&'a str>,
}

/// A container that ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContainerTerminated<'a> {
    /// The process exit code.
    pub exit_code: i32,
    /// The signal that ended it, if any.
    pub signal: Option<i32>,
    /// e.g. "Completed", "Error", "OOMKilled".
    pub reason: Option<&'a str>,
    /// Message, if any.
    pub message: Option<&'a str>,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
}

/// The state of a container, as in `containerStatuses[].state`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ContainerState<'a> {
    /// The API server reported no state.
    Unknown,
    /// Waiting to start.
    Waiting(ContainerWaiting<'a>),
    /// Running since the given time, if known.
    Running(Option<Timestamp>),
    /// Ended.
    Terminated(ContainerTerminated<'a>),
}

/// The status of one container of a pod.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContainerStatus<'a> {
    /// Container name.
    pub name: &'a str,
    /// Whether the readiness probe passes.
    pub ready: bool,
    /// Whether the container has started (startup probe passed).
    pub started: Option<bool>,
    /// How many times it restarted.
    pub restart_count: i32,
    /// Current state.
    pub state: ContainerState<'a>,
    /// The state before the last restart.
    pub last_state: ContainerState<'a>,
}

/// The conditions of a pod, read as views on demand.
#[derive(Debug, Clone, Copy)]
pub struct Conditions<'a> {
    reader: Reader<'a>,
    rows: &'a [u32],
}

impl<'a> Conditions<'a> {
    /// The conditions, in order.
    pub fn iter(&self) -> impl Iterator<Item = PodCondition<'a>> + use<'a> {
        let reader = self.reader;
        self.rows
            .chunks_exact(CONDITION_WORDS)
            .map(move |row| PodCondition {
                condition_type: reader.required_text(row, 0),
                status: reader.required_text(row, 2),
                reason: reader.text(row, 4),
                message: reader.text(row, 6),
                last_transition_time: time(reader.time(row, CONDITION_LAST_TRANSITION)),
            })
    }

    /// The condition of type `condition_type`, if present.
    pub fn get(&self, condition_type: &str) -> Option<PodCondition<'a>> {
        self.iter()
            .find(|condition| condition.condition_type == condition_type)
    }

    /// Number of conditions.
    pub fn len(&self) -> usize {
        self.rows.len() / CONDITION_WORDS
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl PartialEq for Conditions<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

/// The container statuses of a pod, read as views on demand.
#[derive(Debug, Clone, Copy)]
pub struct ContainerStatuses<'a> {
    reader: Reader<'a>,
    rows: &'a [u32],
}

impl<'a> ContainerStatuses<'a> {
    /// The container statuses, in order.
    pub fn iter(&self) -> impl Iterator<Item = ContainerStatus<'a>> + use<'a> {
        let reader = self.reader;
        self.rows
            .chunks_exact(CONTAINER_WORDS)
            .map(move |row| ContainerStatus {
                name: reader.required_text(row, 0),
                ready: reader.word(row, 2) == 1,
                started: match reader.word(row, 3) {
                    0 => Some(false),
                    1 => Some(true),
                    _ => None,
                },
                restart_count: reader.word(row, 4) as i32,
                state: container_state(reader, &row[CONTAINER_STATE..CONTAINER_LAST_STATE]),
                last_state: container_state(reader, &row[CONTAINER_LAST_STATE..]),
            })
    }

    /// The status of the container named `name`, if present.
    pub fn get(&self, name: &str) -> Option<ContainerStatus<'a>> {
        self.iter().find(|status| status.name == name)
    }

    /// The first container's status, if any.
    pub fn first(&self) -> Option<ContainerStatus<'a>> {
        self.iter().next()
    }

    /// Number of containers.
    pub fn len(&self) -> usize {
        self.rows.len() / CONTAINER_WORDS
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl PartialEq for ContainerStatuses<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

fn container_state<'a>(reader: Reader<'a>, words: &[u32]) -> ContainerState<'a> {
    match reader.word(words, 0) {
        STATE_WAITING => ContainerState::Waiting(ContainerWaiting {
            reason: reader.text(words, 1),
            message: reader.text(words, 3),
        }),
        STATE_RUNNING => ContainerState::Running(time(reader.time(words, 1))),
        STATE_TERMINATED => ContainerState::Terminated(ContainerTerminated {
            exit_code: reader.word(words, 1) as i32,
            signal: (reader.word(words, 2) == 1).then(|| reader.word(words, 3) as i32),
            reason: reader.text(words, 4),
            message: reader.text(words, 6),
            started_at: time(reader.time(words, 8)),
            finished_at: time(reader.time(words, 11)),
        }),
        _ => ContainerState::Unknown,
    }
}

/// What the host observed about a pod the parent owns: only the fields a decision reads.
/// Text borrows the table it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pod<'a> {
    /// `metadata.name`.
    pub name: &'a str,
    /// `metadata.uid`; pass it back as the precondition of a deletion.
    pub uid: &'a str,
    /// `metadata.resourceVersion`.
    pub resource_version: &'a str,
    /// `metadata.labels`.
    pub labels: Pairs<'a>,
    /// `metadata.annotations`.
    pub annotations: Pairs<'a>,
    /// `metadata.creationTimestamp`.
    pub creation_timestamp: Option<Timestamp>,
    /// `metadata.deletionTimestamp`: set while the pod terminates.
    pub deletion_timestamp: Option<Timestamp>,
    /// `spec.nodeName`, once scheduled.
    pub node_name: Option<&'a str>,
    /// `spec.restartPolicy`, e.g. "Never", "Always".
    pub restart_policy: Option<&'a str>,
    /// `spec.schedulerName`.
    pub scheduler_name: Option<&'a str>,
    /// `status.phase`: "Pending", "Running", "Succeeded", "Failed", "Unknown".
    pub phase: Option<&'a str>,
    /// `status.reason`, e.g. "Evicted".
    pub reason: Option<&'a str>,
    /// `status.message`.
    pub message: Option<&'a str>,
    /// `status.podIP`.
    pub pod_ip: Option<&'a str>,
    /// `status.hostIP`.
    pub host_ip: Option<&'a str>,
    /// `status.startTime`.
    pub start_time: Option<Timestamp>,
    /// `status.conditions`.
    pub conditions: Conditions<'a>,
    /// `status.initContainerStatuses`.
    pub init_container_statuses: ContainerStatuses<'a>,
    /// `status.containerStatuses`.
    pub container_statuses: ContainerStatuses<'a>,
}

impl ObservedPods {
    /// A table without pods.
    pub fn empty() -> Self {
        ObservedPods::from(Table::default())
    }

    /// The table of these pods.
    pub fn from_records(pods: &[record::Pod]) -> Self {
        ObservedPods::from(Table::of(pods))
    }

    /// Number of pods.
    pub fn len(&self) -> usize {
        self.reader().len()
    }

    /// Whether the table has no pods.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// A reader over the raw table.
    pub fn reader(&self) -> Reader<'_> {
        Reader {
            text: &self.text,
            pods: &self.pods,
            pairs: &self.pairs,
            conditions: &self.conditions,
            container_statuses: &self.container_statuses,
        }
    }

    /// A view of every pod, in the host's order. Cheap: nothing is copied.
    pub fn views(&self) -> Vec<Pod<'_>> {
        let reader = self.reader();
        reader.pod_rows().map(|row| view(reader, row)).collect()
    }
}

impl From<Table> for ObservedPods {
    fn from(table: Table) -> Self {
        ObservedPods {
            text: table.text,
            pods: table.pods,
            pairs: table.pairs,
            conditions: table.conditions,
            container_statuses: table.container_statuses,
        }
    }
}

fn view<'a>(reader: Reader<'a>, row: &'a [u32]) -> Pod<'a> {
    let pairs = |offset| Pairs {
        reader,
        rows: reader.rows(row, offset, reader.pairs, PAIR_WORDS),
    };
    let containers = |offset| ContainerStatuses {
        reader,
        rows: reader.rows(row, offset, reader.container_statuses, CONTAINER_WORDS),
    };
    Pod {
        name: reader.required_text(row, POD_NAME),
        uid: reader.required_text(row, POD_UID),
        resource_version: reader.required_text(row, POD_RESOURCE_VERSION),
        labels: pairs(POD_LABELS),
        annotations: pairs(POD_ANNOTATIONS),
        creation_timestamp: time(reader.time(row, POD_CREATION_TIMESTAMP)),
        deletion_timestamp: time(reader.time(row, POD_DELETION_TIMESTAMP)),
        node_name: reader.text(row, POD_NODE_NAME),
        restart_policy: reader.text(row, POD_RESTART_POLICY),
        scheduler_name: reader.text(row, POD_SCHEDULER_NAME),
        phase: reader.text(row, POD_PHASE),
        reason: reader.text(row, POD_REASON),
        message: reader.text(row, POD_MESSAGE),
        pod_ip: reader.text(row, POD_POD_IP),
        host_ip: reader.text(row, POD_HOST_IP),
        start_time: time(reader.time(row, POD_START_TIME)),
        conditions: Conditions {
            reader,
            rows: reader.rows(row, POD_CONDITIONS, reader.conditions, CONDITION_WORDS),
        },
        init_container_statuses: containers(POD_INIT_CONTAINER_STATUSES),
        container_statuses: containers(POD_CONTAINER_STATUSES),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ready: bool) -> record::Pod {
        record::Pod {
            name: name.to_owned(),
            uid: format!("uid-{name}"),
            labels: vec![
                ("ray.io/node-type".to_owned(), "worker".to_owned()),
                ("ray.io/group".to_owned(), "small".to_owned()),
            ],
            creation_timestamp: Some(record::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            phase: Some("Running".to_owned()),
            conditions: vec![record::PodCondition {
                condition_type: "Ready".to_owned(),
                status: if ready { "True" } else { "False" }.to_owned(),
                ..Default::default()
            }],
            container_statuses: vec![record::ContainerStatus {
                name: "ray-worker".to_owned(),
                restart_count: 2,
                started: Some(true),
                state: record::ContainerState::Terminated(record::ContainerTerminated {
                    exit_code: 137,
                    signal: Some(9),
                    reason: Some("OOMKilled".to_owned()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn views_read_back_what_the_records_held() {
        let table = ObservedPods::from_records(&[pod("a", true), pod("b", false)]);
        let pods = table.views();
        assert_eq!((pods.len(), table.len()), (2, 2));
        let b = pods[1];
        assert_eq!((b.name, b.uid, b.phase), ("b", "uid-b", Some("Running")));
        assert_eq!(b.node_name, None);
        assert_eq!(
            b.creation_timestamp,
            Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 5
            })
        );
        assert_eq!(b.labels.get("ray.io/group"), Some("small"));
        assert_eq!(b.labels.get("ray.io/grou"), None);
        assert_eq!(
            b.labels.iter().collect::<Vec<_>>(),
            [("ray.io/group", "small"), ("ray.io/node-type", "worker")]
        );
        assert_eq!(b.conditions.get("Ready").map(|c| c.status), Some("False"));
        assert_eq!(
            pods[0].conditions.get("Ready").map(|c| c.status),
            Some("True")
        );
        let Some(container) = b.container_statuses.first() else {
            panic!("no container status");
        };
        assert_eq!(
            (container.name, container.restart_count, container.started),
            ("ray-worker", 2, Some(true))
        );
        assert_eq!(
            container.state,
            ContainerState::Terminated(ContainerTerminated {
                exit_code: 137,
                signal: Some(9),
                reason: Some("OOMKilled"),
                message: None,
                started_at: None,
                finished_at: None,
            })
        );
        assert_eq!(container.last_state, ContainerState::Unknown);
        assert!(b.annotations.is_empty() && b.init_container_statuses.is_empty());
        assert!(ObservedPods::empty().views().is_empty());
    }

    #[test]
    fn a_truncated_table_reads_what_is_whole() {
        let mut table = ObservedPods::from_records(&[pod("a", true), pod("b", true)]);
        table.pods.truncate(table.pods.len() - 1);
        table.pairs.truncate(3);
        let pods = table.views();
        assert_eq!(pods.len(), 1);
        assert!(pods[0].labels.is_empty(), "its pair rows are cut");
        assert_eq!(pods[0].name, "a");
    }
}
