//! Kubernetes events leave the reconcile path. A reconcile queues its events and goes on;
//! one task per controller scope publishes them in order. As with KubeRay (client-go's
//! event broadcaster on its own clientset), events go through their own client and rate
//! limiter, so a burst of events never holds back the pod and status writes, and a full
//! queue drops events (counted in `wasmray_events_dropped_total`) instead of blocking.
//!
//! The task publishes `events.k8s.io/v1` Events itself rather than through kube's
//! `Recorder`: that one counts an event as a repeat of an earlier one when the type,
//! reason, action and object match, whatever the note, so the second `CreatedWorkerPod`
//! of a cluster only bumped the first one's count and its pod's name was never shown.
//! client-go's recorder, which KubeRay uses, counts events together only when their
//! message is the same too, and so does this one: each pod and Service gets its own
//! event. (client-go also folds the 11th and later events that differ only in message
//! within ten minutes into one "combined from similar events"; that is not copied, so a
//! large cluster keeps one event per pod.)

use std::collections::HashMap;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// Events waiting to be published, per controller scope. Enough for the five events each
/// of a thousand new RayClusters at once; about 0.5 kB each.
const EVENT_QUEUE_CAPACITY: usize = 5000;

/// Kubernetes caps event reasons at 128 characters and notes at 1 kB.
const REASON_MAX_CHARS: usize = 128;
const NOTE_MAX_BYTES: usize = 1024;

/// How long a published event can still be counted again, as kube's and client-go's
/// recorders keep theirs.
const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);
/// Events remembered for counting at most; past it a repeat starts a new event, which
/// costs the same one write.
const SERIES_CAPACITY: usize = 10_000;
/// Expired entries are dropped at most this often, not on every event.
const SERIES_SWEEP: SignedDuration = SignedDuration::from_mins(1);

struct Queued {
    event: Event,
    reference: ObjectReference,
}

/// The sending end; cheap to share. Dropping it ends the publishing task once the queue
/// is empty.
pub struct EventSink {
    queue: mpsc::Sender<Queued>,
    metrics: Arc<Metrics>,
}

impl EventSink {
    /// Starts the task that publishes as `reporter` through `client`.
    pub fn start(client: Client, reporter: Reporter, metrics: Arc<Metrics>) -> EventSink {
        let (queue, mut queued) = mpsc::channel::<Queued>(EVENT_QUEUE_CAPACITY);
        tokio::spawn(async move {
            let mut series = Series::default();
            while let Some(Queued { event, reference }) = queued.recv().await {
                if let Err(error) =
                    publish(&client, &reporter, &mut series, &event, &reference).await
                {
                    tracing::warn!(
                        object = ?reference.name,
                        namespace = ?reference.namespace,
                        reason = %event.reason,
                        %error,
                        "cannot record event"
                    );
                }
            }
        });
        EventSink { queue, metrics }
    }

    /// Queues events about `reference`, in order.
    pub fn publish(&self, reference: &ObjectReference, events: Vec<(EventType, String, String)>) {
        for (type_, reason, note) in events {
            let event = Event {
                type_,
                reason: reason.chars().take(REASON_MAX_CHARS).collect(),
                note: Some(truncate_bytes(&note, NOTE_MAX_BYTES)),
                action: "Reconcile".to_owned(),
                secondary: None,
            };
            let queued = Queued {
                event,
                reference: reference.clone(),
            };
            if let Err(error) = self.queue.try_send(queued) {
                let (why, Queued { event, .. }) = match error {
                    mpsc::error::TrySendError::Full(queued) => ("queue full", queued),
                    mpsc::error::TrySendError::Closed(queued) => ("publisher stopped", queued),
                };
                self.metrics.event_dropped();
                tracing::warn!(object = ?reference.name, reason = %event.reason, why, "event dropped");
            }
        }
    }
}

/// Creates the event, or counts it on the earlier one with the same message.
async fn publish(
    client: &Client,
    reporter: &Reporter,
    series: &mut Series,
    event: &Event,
    reference: &ObjectReference,
) -> Result<(), kube::Error> {
    let now = Timestamp::now();
    let namespace = reference.namespace.as_deref().unwrap_or("default");
    let events: Api<K8sEvent> = Api::namespaced(client.clone(), namespace);
    let key = SeriesKey::new(reporter, event, reference);
    let (name, count) = match series.repeat_of(&key, now) {
        Some((name, count)) => {
            let patch = serde_json::json!({
                "series": {"count": count, "lastObservedTime": MicroTime(now)}
            });
            events
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            (name, count)
        }
        None => {
            let new = new_event(reporter, event, reference, now);
            let name = new.metadata.name.clone().unwrap_or_default();
            events.create(&PostParams::default(), &new).await?;
            (name, 1)
        }
    };
    series.published(key, name, count, now);
    Ok(())
}

fn new_event(
    reporter: &Reporter,
    event: &Event,
    reference: &ObjectReference,
    now: Timestamp,
) -> K8sEvent {
    let object = reference
        .name
        .as_deref()
        .unwrap_or(reporter.controller.as_str());
    K8sEvent {
        metadata: ObjectMeta {
            // client-go's naming: the object's name and the time in hex, unique enough.
            name: Some(format!("{object}.{:x}", now.as_nanosecond())),
            namespace: reference.namespace.clone(),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some(
            match event.type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .to_owned(),
        ),
        reason: Some(event.reason.clone()),
        note: event.note.clone(),
        action: Some(event.action.clone()),
        regarding: Some(reference.clone()),
        related: event.secondary.clone(),
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(
            reporter
                .instance
                .clone()
                .unwrap_or_else(|| reporter.controller.clone()),
        ),
        ..K8sEvent::default()
    }
}

/// Everything that makes two events the same, the note included.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    type_: EventType,
    reason: String,
    note: Option<String>,
    action: String,
    reporter: Reporter,
    /// The object's kind, API version, namespace, name and uid.
    regarding: [Option<String>; 5],
    related: Option<[Option<String>; 5]>,
}

impl SeriesKey {
    fn new(reporter: &Reporter, event: &Event, reference: &ObjectReference) -> Self {
        let object = |r: &ObjectReference| {
            [
                r.kind.clone(),
                r.api_version.clone(),
                r.namespace.clone(),
                r.name.clone(),
                r.uid.clone(),
            ]
        };
        SeriesKey {
            type_: event.type_,
            reason: event.reason.clone(),
            note: event.note.clone(),
            action: event.action.clone(),
            reporter: reporter.clone(),
            regarding: object(reference),
            related: event.secondary.as_ref().map(object),
        }
    }
}

/// The events published lately, to count repeats on the first one.
#[derive(Default)]
struct Series {
    /// Event name, count so far and when last seen.
    seen: HashMap<SeriesKey, (String, i32, Timestamp)>,
    swept: Option<Timestamp>,
}

impl Series {
    /// The name of the earlier event this one repeats and the count to give it.
    fn repeat_of(&mut self, key: &SeriesKey, now: Timestamp) -> Option<(String, i32)> {
        if self.swept.is_none_or(|swept| swept + SERIES_SWEEP <= now) {
            self.seen.retain(|_, (_, _, last)| *last + SERIES_TTL > now);
            self.swept = Some(now);
        }
        let (name, count, last) = self.seen.get(key)?;
        (*last + SERIES_TTL > now).then(|| (name.clone(), count.saturating_add(1)))
    }

    /// Remembers a published event (created with count 1, or counted to `count`).
    fn published(&mut self, key: SeriesKey, name: String, count: i32, now: Timestamp) {
        if self.seen.len() < SERIES_CAPACITY || self.seen.contains_key(&key) {
            self.seen.insert(key, (name, count, now));
        }
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
fn truncate_bytes(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_created(pod: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: "CreatedWorkerPod".to_owned(),
            note: Some(format!("Created worker Pod ns/{pod}")),
            action: "Reconcile".to_owned(),
            secondary: None,
        }
    }

    fn cluster() -> ObjectReference {
        ObjectReference {
            api_version: Some("ray.io/v1".to_owned()),
            kind: Some("RayCluster".to_owned()),
            namespace: Some("ns".to_owned()),
            name: Some("rc".to_owned()),
            uid: Some("u".to_owned()),
            ..ObjectReference::default()
        }
    }

    /// Publishes `event` into `series` as the task does after a successful write, and
    /// says whether it was a new event or a count on which earlier one.
    fn publish_at(series: &mut Series, event: &Event, at: Timestamp) -> Option<(String, i32)> {
        let reporter = Reporter::from("raycluster-controller".to_owned());
        let key = SeriesKey::new(&reporter, event, &cluster());
        let repeat = series.repeat_of(&key, at);
        let (name, count) = repeat.clone().unwrap_or_else(|| {
            let new = new_event(&reporter, event, &cluster(), at);
            (new.metadata.name.unwrap_or_default(), 1)
        });
        series.published(key, name, count, at);
        repeat
    }

    #[test]
    fn only_events_with_the_same_note_are_counted_together() {
        let mut series = Series::default();
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let later = |secs: i64| t0 + SignedDuration::from_secs(secs);
        // Two pods of one group: two events, as client-go's recorder makes them.
        assert_eq!(
            publish_at(&mut series, &pod_created("rc-g-worker-a"), t0),
            None
        );
        assert_eq!(
            publish_at(&mut series, &pod_created("rc-g-worker-b"), later(1)),
            None
        );
        // The same message again is a repeat of the first: count 2, then 3.
        let first = format!("rc.{:x}", t0.as_nanosecond());
        assert_eq!(
            publish_at(&mut series, &pod_created("rc-g-worker-a"), later(2)),
            Some((first.clone(), 2))
        );
        assert_eq!(
            publish_at(&mut series, &pod_created("rc-g-worker-a"), later(300)),
            Some((first, 3))
        );
        // Six minutes after it was last seen, it is a new event again.
        assert_eq!(
            publish_at(&mut series, &pod_created("rc-g-worker-a"), later(300 + 360)),
            None
        );
        // A Warning with the same text is another event.
        let mut warning = pod_created("rc-g-worker-b");
        warning.type_ = EventType::Warning;
        assert_eq!(publish_at(&mut series, &warning, later(661)), None);
    }

    #[test]
    fn the_series_memory_is_bounded() {
        let mut series = Series::default();
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        for i in 0..SERIES_CAPACITY + 5 {
            publish_at(&mut series, &pod_created(&format!("p{i}")), t0);
        }
        assert_eq!(series.seen.len(), SERIES_CAPACITY);
        // Expired entries go at the next sweep.
        let later = t0 + SERIES_TTL + SERIES_SWEEP;
        publish_at(&mut series, &pod_created("new"), later);
        assert_eq!(series.seen.len(), 1);
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_bytes("abc", 5), "abc");
        assert_eq!(truncate_bytes("abcdef", 3), "abc");
        // "é" is two bytes: cutting inside it backs off to before it.
        assert_eq!(truncate_bytes("aé", 2), "a");
    }
}
