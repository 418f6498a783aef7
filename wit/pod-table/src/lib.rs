//! The pod table of the `wasmray:plugin` contract (`observed-pods` in `wit/types.wit`):
//! its word layout, an encoder from owned [`record`]s, concatenation, and a reader. The
//! host encodes with it and the guest SDK reads with it, so both sides share one
//! definition of the layout.
//!
//! Why words: wasmtime lowers a list of integers into the guest with one copy, but a list
//! of records field by field, each field a separate bounds-checked store (about 100 ns a
//! row here). A RayCluster's 100 pods carry some 1 700 rows (pods, label pairs,
//! conditions, container statuses), so typed rows cost more than most decisions.
//!
//! Encodings, in 32-bit words:
//! - text: 2 words, byte offset and length in `text`; absent: [`NONE`], 0;
//! - timestamp: 3 words, seconds (low, high half of an `i64`), nanoseconds; absent: the
//!   nanoseconds word is [`NONE`];
//! - rows: 2 words, first row and count, in one of the table's lists;
//! - bool: 0 or 1, optional bool: [`NONE`] when absent; `s32`: its bits; optional `s32`:
//!   2 words, 1 and the value, or 0 and 0.

/// The word that marks an absent value.
pub const NONE: u32 = u32::MAX;

/// Word offsets within each kind of row; `*_WORDS` is the row length.
pub mod layout {
    /// Pod row: name, uid, resource version (text); labels, annotations (rows of
    /// `pairs`); creation and deletion timestamps; node name, restart policy, scheduler
    /// name, phase, reason, message, pod IP, host IP (optional text); start time;
    /// conditions (rows of `conditions`); init container statuses, container statuses
    /// (rows of `container-statuses`).
    pub const POD_WORDS: usize = 41;
    /// `metadata.name`.
    pub const POD_NAME: usize = 0;
    /// `metadata.uid`.
    pub const POD_UID: usize = 2;
    /// `metadata.resourceVersion`.
    pub const POD_RESOURCE_VERSION: usize = 4;
    /// `metadata.labels`.
    pub const POD_LABELS: usize = 6;
    /// `metadata.annotations`.
    pub const POD_ANNOTATIONS: usize = 8;
    /// `metadata.creationTimestamp`.
    pub const POD_CREATION_TIMESTAMP: usize = 10;
    /// `metadata.deletionTimestamp`.
    pub const POD_DELETION_TIMESTAMP: usize = 13;
    /// `spec.nodeName`.
    pub const POD_NODE_NAME: usize = 16;
    /// `spec.restartPolicy`.
    pub const POD_RESTART_POLICY: usize = 18;
    /// `spec.schedulerName`.
    pub const POD_SCHEDULER_NAME: usize = 20;
    /// `status.phase`.
    pub const POD_PHASE: usize = 22;
    /// `status.reason`.
    pub const POD_REASON: usize = 24;
    /// `status.message`.
    pub const POD_MESSAGE: usize = 26;
    /// `status.podIP`.
    pub const POD_POD_IP: usize = 28;
    /// `status.hostIP`.
    pub const POD_HOST_IP: usize = 30;
    /// `status.startTime`.
    pub const POD_START_TIME: usize = 32;
    /// `status.conditions`.
    pub const POD_CONDITIONS: usize = 35;
    /// `status.initContainerStatuses`.
    pub const POD_INIT_CONTAINER_STATUSES: usize = 37;
    /// `status.containerStatuses`.
    pub const POD_CONTAINER_STATUSES: usize = 39;

    /// Pair row: key, value (text).
    pub const PAIR_WORDS: usize = 4;

    /// Condition row: type, status (text); reason, message (optional text); last
    /// transition time.
    pub const CONDITION_WORDS: usize = 11;
    /// Condition's `lastTransitionTime`.
    pub const CONDITION_LAST_TRANSITION: usize = 8;

    /// Container state, within a container status row: a tag word ([`STATE_UNKNOWN`],
    /// [`STATE_WAITING`]: reason, message; [`STATE_RUNNING`]: started at;
    /// [`STATE_TERMINATED`]: exit code, optional signal, reason, message, started at,
    /// finished at), then the payload; unused words are 0.
    pub const STATE_WORDS: usize = 14;
    /// No state reported.
    pub const STATE_UNKNOWN: u32 = 0;
    /// Waiting to start.
    pub const STATE_WAITING: u32 = 1;
    /// Running.
    pub const STATE_RUNNING: u32 = 2;
    /// Ended.
    pub const STATE_TERMINATED: u32 = 3;

    /// Container status row: name (text), ready (bool), started (optional bool), restart
    /// count (`s32`), state, last state.
    pub const CONTAINER_WORDS: usize = 5 + 2 * STATE_WORDS;
    /// Offset of the current state.
    pub const CONTAINER_STATE: usize = 5;
    /// Offset of the state before the last restart.
    pub const CONTAINER_LAST_STATE: usize = 5 + STATE_WORDS;
}

use layout::*;

/// An instant: seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z.
    pub seconds: i64,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

/// Owned pods: what the host observed, before encoding.
pub mod record {
    pub use super::Timestamp;

    /// A pod condition.
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct PodCondition {
        /// Condition type, e.g. "Ready".
        pub condition_type: String,
        /// "True", "False" or "Unknown".
        pub status: String,
        /// Reason, if any.
        pub reason: Option<String>,
        /// Message, if any.
        pub message: Option<String>,
        /// When the status last changed.
        pub last_transition_time: Option<Timestamp>,
    }

    /// A container that has not started yet.
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct ContainerWaiting {
        /// Reason, if any.
        pub reason: Option<String>,
        /// Message, if any.
        pub message: Option<String>,
    }

    /// A container that ended.
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct ContainerTerminated {
        /// The process exit code.
        pub exit_code: i32,
        /// The signal that ended it, if any.
        pub signal: Option<i32>,
        /// Reason, if any.
        pub reason: Option<String>,
        /// Message, if any.
        pub message: Option<String>,
        /// When it started.
        pub started_at: Option<Timestamp>,
        /// When it ended.
        pub finished_at: Option<Timestamp>,
    }

    /// The state of a container.
    #[derive(Debug, Clone, Default, PartialEq)]
    pub enum ContainerState {
        /// No state reported.
        #[default]
        Unknown,
        /// Waiting to start.
        Waiting(ContainerWaiting),
        /// Running since the given time, if known.
        Running(Option<Timestamp>),
        /// Ended.
        Terminated(ContainerTerminated),
    }

    /// The status of one container.
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct ContainerStatus {
        /// Container name.
        pub name: String,
        /// Whether the readiness probe passes.
        pub ready: bool,
        /// Whether the container has started.
        pub started: Option<bool>,
        /// Restarts so far.
        pub restart_count: i32,
        /// Current state.
        pub state: ContainerState,
        /// The state before the last restart.
        pub last_state: ContainerState,
    }

    impl ContainerStatus {
        /// A container that exited with `exit_code` ("Completed" for 0, else "Error").
        pub fn terminated(name: &str, exit_code: i32) -> Self {
            let reason = if exit_code == 0 { "Completed" } else { "Error" };
            ContainerStatus {
                name: name.to_owned(),
                started: Some(false),
                state: ContainerState::Terminated(ContainerTerminated {
                    exit_code,
                    reason: Some(reason.to_owned()),
                    ..ContainerTerminated::default()
                }),
                ..ContainerStatus::default()
            }
        }
    }

    /// A pod as the host observes it: only the fields decisions read.
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct Pod {
        /// `metadata.name`.
        pub name: String,
        /// `metadata.uid`.
        pub uid: String,
        /// `metadata.resourceVersion`.
        pub resource_version: String,
        /// `metadata.labels`.
        pub labels: Vec<(String, String)>,
        /// `metadata.annotations`.
        pub annotations: Vec<(String, String)>,
        /// `metadata.creationTimestamp`.
        pub creation_timestamp: Option<Timestamp>,
        /// `metadata.deletionTimestamp`.
        pub deletion_timestamp: Option<Timestamp>,
        /// `spec.nodeName`.
        pub node_name: Option<String>,
        /// `spec.restartPolicy`.
        pub restart_policy: Option<String>,
        /// `spec.schedulerName`.
        pub scheduler_name: Option<String>,
        /// `status.phase`.
        pub phase: Option<String>,
        /// `status.reason`.
        pub reason: Option<String>,
        /// `status.message`.
        pub message: Option<String>,
        /// `status.podIP`.
        pub pod_ip: Option<String>,
        /// `status.hostIP`.
        pub host_ip: Option<String>,
        /// `status.startTime`.
        pub start_time: Option<Timestamp>,
        /// `status.conditions`.
        pub conditions: Vec<PodCondition>,
        /// `status.initContainerStatuses`.
        pub init_container_statuses: Vec<ContainerStatus>,
        /// `status.containerStatuses`.
        pub container_statuses: Vec<ContainerStatus>,
    }
}

/// A table offset. Tables stay far below 4 GiB (a plugin's memory is capped well below),
/// so this saturates rather than fails.
fn word(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(NONE - 1)
}

/// A pod table, owned: the fields of `observed-pods`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// The text of every string, back to back.
    pub text: String,
    /// Pod rows of [`layout::POD_WORDS`] words.
    pub pods: Vec<u32>,
    /// Pair rows of [`layout::PAIR_WORDS`] words.
    pub pairs: Vec<u32>,
    /// Condition rows of [`layout::CONDITION_WORDS`] words.
    pub conditions: Vec<u32>,
    /// Container status rows of [`layout::CONTAINER_WORDS`] words.
    pub container_statuses: Vec<u32>,
}

impl Table {
    /// The table of these pods.
    pub fn of(pods: &[record::Pod]) -> Table {
        let mut table = Table::default();
        for pod in pods {
            table.push(pod);
        }
        table
    }

    /// Number of pods.
    pub fn len(&self) -> usize {
        self.pods.len() / POD_WORDS
    }

    /// Whether the table has no pods.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    fn text_words(&mut self, value: Option<&str>) -> [u32; 2] {
        match value {
            Some(value) => {
                let start = word(self.text.len());
                self.text.push_str(value);
                [start, word(value.len())]
            }
            None => [NONE, 0],
        }
    }

    /// Pairs are written sorted by key (as bytes): the table of a pod does not depend on
    /// the order its maps were read in, and readers may binary-search.
    fn push_pairs(&mut self, pairs: &[(String, String)]) -> [u32; 2] {
        let first = word(self.pairs.len() / PAIR_WORDS);
        let mut sorted: Vec<&(String, String)> = pairs.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, value) in sorted {
            let key = self.text_words(Some(key));
            let value = self.text_words(Some(value));
            self.pairs.extend(key.into_iter().chain(value));
        }
        [first, word(pairs.len())]
    }

    fn push_conditions(&mut self, conditions: &[record::PodCondition]) -> [u32; 2] {
        let first = word(self.conditions.len() / CONDITION_WORDS);
        for condition in conditions {
            let mut row = [0; CONDITION_WORDS];
            row[0..2].copy_from_slice(&self.text_words(Some(&condition.condition_type)));
            row[2..4].copy_from_slice(&self.text_words(Some(&condition.status)));
            row[4..6].copy_from_slice(&self.text_words(condition.reason.as_deref()));
            row[6..8].copy_from_slice(&self.text_words(condition.message.as_deref()));
            row[CONDITION_LAST_TRANSITION..]
                .copy_from_slice(&time_words(condition.last_transition_time));
            self.conditions.extend(row);
        }
        [first, word(conditions.len())]
    }

    fn state_words(&mut self, state: &record::ContainerState) -> [u32; STATE_WORDS] {
        let mut words = [0; STATE_WORDS];
        match state {
            record::ContainerState::Unknown => words[0] = STATE_UNKNOWN,
            record::ContainerState::Waiting(waiting) => {
                words[0] = STATE_WAITING;
                words[1..3].copy_from_slice(&self.text_words(waiting.reason.as_deref()));
                words[3..5].copy_from_slice(&self.text_words(waiting.message.as_deref()));
            }
            record::ContainerState::Running(since) => {
                words[0] = STATE_RUNNING;
                words[1..4].copy_from_slice(&time_words(*since));
            }
            record::ContainerState::Terminated(ended) => {
                words[0] = STATE_TERMINATED;
                words[1] = ended.exit_code as u32;
                if let Some(signal) = ended.signal {
                    words[2] = 1;
                    words[3] = signal as u32;
                }
                words[4..6].copy_from_slice(&self.text_words(ended.reason.as_deref()));
                words[6..8].copy_from_slice(&self.text_words(ended.message.as_deref()));
                words[8..11].copy_from_slice(&time_words(ended.started_at));
                words[11..14].copy_from_slice(&time_words(ended.finished_at));
            }
        }
        words
    }

    fn push_containers(&mut self, statuses: &[record::ContainerStatus]) -> [u32; 2] {
        let first = word(self.container_statuses.len() / CONTAINER_WORDS);
        for status in statuses {
            let mut row = [0; CONTAINER_WORDS];
            row[0..2].copy_from_slice(&self.text_words(Some(&status.name)));
            row[2] = u32::from(status.ready);
            row[3] = status.started.map_or(NONE, u32::from);
            row[4] = status.restart_count as u32;
            row[CONTAINER_STATE..CONTAINER_LAST_STATE]
                .copy_from_slice(&self.state_words(&status.state));
            row[CONTAINER_LAST_STATE..].copy_from_slice(&self.state_words(&status.last_state));
            self.container_statuses.extend(row);
        }
        [first, word(statuses.len())]
    }

    /// Adds a pod.
    pub fn push(&mut self, pod: &record::Pod) {
        let mut row = [0; POD_WORDS];
        let mut put = |offset: usize, words: &[u32]| {
            row[offset..offset + words.len()].copy_from_slice(words);
        };
        put(POD_NAME, &self.text_words(Some(&pod.name)));
        put(POD_UID, &self.text_words(Some(&pod.uid)));
        put(
            POD_RESOURCE_VERSION,
            &self.text_words(Some(&pod.resource_version)),
        );
        put(POD_LABELS, &self.push_pairs(&pod.labels));
        put(POD_ANNOTATIONS, &self.push_pairs(&pod.annotations));
        put(POD_CREATION_TIMESTAMP, &time_words(pod.creation_timestamp));
        put(POD_DELETION_TIMESTAMP, &time_words(pod.deletion_timestamp));
        for (offset, value) in [
            (POD_NODE_NAME, &pod.node_name),
            (POD_RESTART_POLICY, &pod.restart_policy),
            (POD_SCHEDULER_NAME, &pod.scheduler_name),
            (POD_PHASE, &pod.phase),
            (POD_REASON, &pod.reason),
            (POD_MESSAGE, &pod.message),
            (POD_POD_IP, &pod.pod_ip),
            (POD_HOST_IP, &pod.host_ip),
        ] {
            put(offset, &self.text_words(value.as_deref()));
        }
        put(POD_START_TIME, &time_words(pod.start_time));
        put(POD_CONDITIONS, &self.push_conditions(&pod.conditions));
        put(
            POD_INIT_CONTAINER_STATUSES,
            &self.push_containers(&pod.init_container_statuses),
        );
        put(
            POD_CONTAINER_STATUSES,
            &self.push_containers(&pod.container_statuses),
        );
        self.pods.extend(row);
    }

    /// Appends every pod of `other`, moving its references past what this table holds.
    pub fn append(&mut self, other: &Table) {
        let text_base = word(self.text.len());
        let pair_base = word(self.pairs.len() / PAIR_WORDS);
        let condition_base = word(self.conditions.len() / CONDITION_WORDS);
        let container_base = word(self.container_statuses.len() / CONTAINER_WORDS);
        self.text.push_str(&other.text);
        let text_at = |row: &mut [u32], offset: usize| {
            if row[offset] != NONE {
                row[offset] = row[offset].saturating_add(text_base);
            }
        };
        let rebase = |rows: &mut Vec<u32>, from: &[u32], width: usize, fix: &dyn Fn(&mut [u32])| {
            let start = rows.len();
            rows.extend_from_slice(from);
            for row in rows[start..].chunks_exact_mut(width) {
                fix(row);
            }
        };
        rebase(&mut self.pairs, &other.pairs, PAIR_WORDS, &|row| {
            text_at(row, 0);
            text_at(row, 2);
        });
        rebase(
            &mut self.conditions,
            &other.conditions,
            CONDITION_WORDS,
            &|row| {
                for offset in [0, 2, 4, 6] {
                    text_at(row, offset);
                }
            },
        );
        let state = |state: &mut [u32]| match state[0] {
            STATE_WAITING => {
                text_at(state, 1);
                text_at(state, 3);
            }
            STATE_TERMINATED => {
                text_at(state, 4);
                text_at(state, 6);
            }
            _ => {}
        };
        rebase(
            &mut self.container_statuses,
            &other.container_statuses,
            CONTAINER_WORDS,
            &|row| {
                text_at(row, 0);
                state(&mut row[CONTAINER_STATE..CONTAINER_LAST_STATE]);
                state(&mut row[CONTAINER_LAST_STATE..]);
            },
        );
        rebase(&mut self.pods, &other.pods, POD_WORDS, &|row| {
            for offset in [POD_NAME, POD_UID, POD_RESOURCE_VERSION]
                .into_iter()
                .chain((POD_NODE_NAME..=POD_HOST_IP).step_by(2))
            {
                text_at(row, offset);
            }
            for (offset, base) in [
                (POD_LABELS, pair_base),
                (POD_ANNOTATIONS, pair_base),
                (POD_CONDITIONS, condition_base),
                (POD_INIT_CONTAINER_STATUSES, container_base),
                (POD_CONTAINER_STATUSES, container_base),
            ] {
                row[offset] = row[offset].saturating_add(base);
            }
        });
    }

    /// The pods of several tables, in order, in one table sized once.
    pub fn concat<'a, I>(tables: I) -> Table
    where
        I: IntoIterator<Item = &'a Table>,
        I::IntoIter: Clone,
    {
        let tables = tables.into_iter();
        let mut all = Table::default();
        all.text
            .reserve(tables.clone().map(|table| table.text.len()).sum());
        all.pods
            .reserve(tables.clone().map(|table| table.pods.len()).sum());
        all.pairs
            .reserve(tables.clone().map(|table| table.pairs.len()).sum());
        all.conditions
            .reserve(tables.clone().map(|table| table.conditions.len()).sum());
        all.container_statuses.reserve(
            tables
                .clone()
                .map(|table| table.container_statuses.len())
                .sum(),
        );
        for table in tables {
            all.append(table);
        }
        all
    }

    /// A reader over this table.
    pub fn reader(&self) -> Reader<'_> {
        Reader {
            text: &self.text,
            pods: &self.pods,
            pairs: &self.pairs,
            conditions: &self.conditions,
            container_statuses: &self.container_statuses,
        }
    }
}

fn time_words(time: Option<Timestamp>) -> [u32; 3] {
    match time {
        // The two halves of the seconds, as the layout says.
        Some(time) => [time.seconds as u32, (time.seconds >> 32) as u32, time.nanos],
        None => [0, 0, NONE],
    }
}

/// Reads a table without copying it. Every read is bounds-checked: words or references
/// that fall outside the table read as absent or empty, never as a panic.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    /// The table's text.
    pub text: &'a str,
    /// Pod rows.
    pub pods: &'a [u32],
    /// Pair rows.
    pub pairs: &'a [u32],
    /// Condition rows.
    pub conditions: &'a [u32],
    /// Container status rows.
    pub container_statuses: &'a [u32],
}

impl<'a> Reader<'a> {
    /// Number of pods.
    pub fn len(&self) -> usize {
        self.pods.len() / POD_WORDS
    }

    /// Whether there are no pods.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pod rows, in order.
    pub fn pod_rows(&self) -> std::slice::ChunksExact<'a, u32> {
        self.pods.chunks_exact(POD_WORDS)
    }

    /// The text at `row[offset..offset + 2]`: none when absent, empty when the reference
    /// does not fall on the table's text and its character boundaries.
    #[inline]
    pub fn text(&self, row: &[u32], offset: usize) -> Option<&'a str> {
        let (start, len) = (*row.get(offset)?, *row.get(offset + 1)?);
        if start == NONE {
            return None;
        }
        Some(self.slice(start, len))
    }

    /// Like [`Reader::text`], for text that is always present.
    #[inline]
    pub fn required_text(&self, row: &[u32], offset: usize) -> &'a str {
        self.text(row, offset).unwrap_or_default()
    }

    #[inline]
    fn slice(&self, start: u32, len: u32) -> &'a str {
        let start = start as usize;
        self.text
            .get(start..start.saturating_add(len as usize))
            .unwrap_or_default()
    }

    /// The value of `key` among pair rows.
    ///
    /// A scan that compares bytes only for keys of the same length: a pod has few labels,
    /// their lengths mostly differ, and Ray's keys share the `ray.io/` prefix, which made
    /// every ordering comparison of a binary search walk it (in wasm, a byte-by-byte
    /// `memcmp`, about a fifth of the RayCluster plugin's 100-pod call).
    #[inline]
    pub fn pair_value(&self, pairs: &[u32], key: &str) -> Option<&'a str> {
        let len = u32::try_from(key.len()).ok()?;
        pairs
            .chunks_exact(PAIR_WORDS)
            .find(|pair| pair[1] == len && self.slice(pair[0], len) == key)
            .map(|pair| self.required_text(pair, 2))
    }

    /// The timestamp at `row[offset..offset + 3]`.
    #[inline]
    pub fn time(&self, row: &[u32], offset: usize) -> Option<Timestamp> {
        let words = row.get(offset..offset + 3)?;
        if words[2] == NONE {
            return None;
        }
        let seconds = (u64::from(words[1]) << 32 | u64::from(words[0])) as i64;
        Some(Timestamp {
            seconds,
            nanos: words[2],
        })
    }

    /// The rows of `list` (of `width` words each) referenced at `row[offset..offset + 2]`.
    #[inline]
    pub fn rows(&self, row: &[u32], offset: usize, list: &'a [u32], width: usize) -> &'a [u32] {
        let (Some(&first), Some(&count)) = (row.get(offset), row.get(offset + 1)) else {
            return &[];
        };
        let start = (first as usize).saturating_mul(width);
        let end = start.saturating_add((count as usize).saturating_mul(width));
        list.get(start..end).unwrap_or_default()
    }

    /// The word at `row[offset]`, or [`NONE`].
    #[inline]
    pub fn word(&self, row: &[u32], offset: usize) -> u32 {
        row.get(offset).copied().unwrap_or(NONE)
    }
}

#[cfg(test)]
mod tests {
    use super::record::*;
    use super::*;

    fn pod(name: &str) -> Pod {
        Pod {
            name: name.to_owned(),
            uid: format!("uid-{name}"),
            labels: ["team", "ray.io/group", "app", "ray.io/cluster"]
                .iter()
                .map(|key| {
                    let value = if *key == "ray.io/group" { "small" } else { "x" };
                    ((*key).to_owned(), value.to_owned())
                })
                .collect(),
            creation_timestamp: Some(Timestamp {
                seconds: -5,
                nanos: 7,
            }),
            phase: Some("Running".to_owned()),
            conditions: vec![PodCondition {
                condition_type: "Ready".to_owned(),
                status: "True".to_owned(),
                ..PodCondition::default()
            }],
            container_statuses: vec![
                ContainerStatus::terminated("ray", 137),
                ContainerStatus {
                    name: "side".to_owned(),
                    state: ContainerState::Waiting(ContainerWaiting {
                        reason: Some("CrashLoopBackOff".to_owned()),
                        message: None,
                    }),
                    ..ContainerStatus::default()
                },
            ],
            ..Pod::default()
        }
    }

    /// Reads back the fields the tests set, through the reader.
    fn summary(table: &Table) -> Vec<String> {
        let reader = table.reader();
        reader
            .pod_rows()
            .map(|row| {
                let labels = reader.rows(row, POD_LABELS, reader.pairs, PAIR_WORDS);
                let conditions =
                    reader.rows(row, POD_CONDITIONS, reader.conditions, CONDITION_WORDS);
                let containers = reader.rows(
                    row,
                    POD_CONTAINER_STATUSES,
                    reader.container_statuses,
                    CONTAINER_WORDS,
                );
                let second = &containers[CONTAINER_WORDS..];
                format!(
                    "{} {} {} ray.io/group={:?} {:?} {:?} {} {} {}",
                    reader.required_text(row, POD_NAME),
                    reader.required_text(row, POD_UID),
                    reader.required_text(labels, 0),
                    reader.pair_value(labels, "ray.io/group"),
                    reader.text(row, POD_PHASE),
                    reader.time(row, POD_CREATION_TIMESTAMP),
                    reader.required_text(conditions, 2),
                    reader.word(containers, CONTAINER_STATE + 1),
                    reader.required_text(second, CONTAINER_STATE + 1),
                )
            })
            .collect()
    }

    #[test]
    fn concatenated_tables_read_like_one_table() {
        let parts = [Table::of(&[pod("a")]), Table::of(&[pod("b"), pod("c")])];
        let joined = Table::concat(&parts);
        assert_eq!(joined, Table::of(&[pod("a"), pod("b"), pod("c")]));
        assert_eq!(joined.len(), 3);
        let expected = "b uid-b app ray.io/group=Some(\"small\") Some(\"Running\") Some(Timestamp { seconds: -5, nanos: 7 }) True 137 CrashLoopBackOff";
        assert_eq!(summary(&joined)[1], expected);
    }

    #[test]
    fn absent_and_broken_references_read_as_absent_or_empty() {
        let mut table = Table::of(&[pod("a")]);
        let reader = table.reader();
        let row = &table.pods[..POD_WORDS];
        assert_eq!(reader.text(row, POD_NODE_NAME), None);
        assert_eq!(reader.time(row, POD_DELETION_TIMESTAMP), None);
        let labels = reader.rows(row, POD_LABELS, reader.pairs, PAIR_WORDS);
        assert_eq!(reader.pair_value(labels, "ray.io/group"), Some("small"));
        assert_eq!(reader.pair_value(labels, "ray.io/grou"), None);
        assert_eq!(
            reader.pair_value(labels, "ray.io/groux"),
            None,
            "same length"
        );
        assert_eq!(
            reader.pair_value(&labels[..3], "ray.io/group"),
            None,
            "a cut row"
        );
        table.pods[POD_NAME] = 1 << 20;
        table.pods[POD_LABELS] = 1 << 30;
        table.text.push('é');
        table.pods[POD_UID] = word(table.text.len() - 1);
        table.pods[POD_UID + 1] = 1;
        let reader = table.reader();
        let row = &table.pods[..POD_WORDS];
        assert_eq!(reader.text(row, POD_NAME), Some(""));
        assert_eq!(reader.text(row, POD_UID), Some(""), "splits a character");
        assert!(
            reader
                .rows(row, POD_LABELS, reader.pairs, PAIR_WORDS)
                .is_empty()
        );
        assert_eq!(reader.word(row, POD_WORDS), NONE);
        assert_eq!(reader.time(row, POD_WORDS - 1), None);
    }
}
