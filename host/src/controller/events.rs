//! Kubernetes events leave the reconcile path. A reconcile queues its events and goes on;
//! one task per controller scope publishes them in order. As with KubeRay (client-go's
//! event broadcaster on its own clientset), events go through their own client and rate
//! limiter, so a burst of events never holds back the pod and status writes, and a full
//! queue drops events (counted in `wasmray_events_dropped_total`) instead of blocking.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// Events waiting to be published, per controller scope. Enough for the five events each
/// of a thousand new RayClusters at once; about 0.5 kB each.
const EVENT_QUEUE_CAPACITY: usize = 5000;

/// Kubernetes caps event reasons at 128 characters and notes at 1 kB.
const REASON_MAX_CHARS: usize = 128;
const NOTE_MAX_BYTES: usize = 1024;

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
        let recorder = Recorder::new(client, reporter);
        tokio::spawn(async move {
            while let Some(Queued { event, reference }) = queued.recv().await {
                if let Err(error) = recorder.publish(&event, &reference).await {
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
    use super::truncate_bytes;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_bytes("abc", 5), "abc");
        assert_eq!(truncate_bytes("abcdef", 3), "abc");
        // "é" is two bytes: cutting inside it backs off to before it.
        assert_eq!(truncate_bytes("aé", 2), "a");
    }
}
