//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics.
//!
//! - A candidate takes the lease when it does not exist, has no holder, or its record has
//!   not changed for the lease duration *as observed locally* (no clock comparison across
//!   machines: a holder renewing proves itself alive by changing the record).
//! - Every write is a replace guarded by the resourceVersion read just before, so two
//!   candidates never both win: the second gets a conflict.
//! - The leader renews every retry period; if no renewal succeeds within the renew
//!   deadline it has lost the lease ([`Elector::hold`] returns) and the process must stop
//!   writing at once: the caller exits non-zero, as controller-runtime does, and Kubernetes
//!   restarts it as a standby.
//! - On a clean shutdown the leader releases the lease (no holder), so a standby takes over
//!   at its next retry instead of after the lease duration.
//!
//! Not kube-lease-manager (its newest release is built on kube 4 and k8s-openapi 0.28, a
//! second copy of both beside ours) nor kubert's lease (it needs the Lease created
//! beforehand; its claim has a renew grace period, not the renew deadline above).

use std::hash::{BuildHasher as _, Hasher as _};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;

/// The Lease KubeRay's operator uses is `ray-operator-leader`; WasmRay uses its own, so
/// both operators can run side by side during a migration (each watching its own
/// namespaces) without one standing by for the other.
pub const DEFAULT_LEASE_NAME: &str = "wasmray-operator-leader";

/// Timings (controller-runtime's defaults: 15 s, 10 s, 2 s).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTimings {
    /// How long a standby waits after the last observed change before taking over.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up the lead.
    pub renew_deadline: Duration,
    /// Time between attempts.
    pub retry_period: Duration,
}

impl Default for LeaseTimings {
    fn default() -> Self {
        LeaseTimings {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl LeaseTimings {
    /// client-go's rules: the lease outlives the renew deadline, which outlives a retry
    /// period (with jitter), so a live leader never loses its lease between renewals.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_duration <= self.renew_deadline {
            return Err(format!(
                "the lease duration ({:?}) must be longer than the renew deadline ({:?})",
                self.lease_duration, self.renew_deadline
            ));
        }
        if self.renew_deadline.as_secs_f64() <= 1.2 * self.retry_period.as_secs_f64() {
            return Err(format!(
                "the renew deadline ({:?}) must be longer than 1.2 x the retry period ({:?})",
                self.renew_deadline, self.retry_period
            ));
        }
        if self.retry_period.is_zero() {
            return Err("the retry period must be positive".to_owned());
        }
        Ok(())
    }
}

/// Why leadership ended.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error(
        "lost the leader lease {namespace}/{name}: no renewal succeeded within {deadline:?} (last error: {last_error})"
    )]
    Lost {
        namespace: String,
        name: String,
        deadline: Duration,
        last_error: String,
    },
}

/// A unique identity for this process: the pod name (or host name) and a random suffix,
/// as client-go makes it, so a restarted pod never mistakes the old lease for its own.
pub fn default_identity() -> String {
    let base = std::env::var("POD_NAME")
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_owned())
        })
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "wasmray".to_owned());
    // RandomState is seeded from the OS's randomness per process.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{base}_{:016x}", hasher.finish())
}

/// One candidate for one Lease.
pub struct Elector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    timings: LeaseTimings,
    /// The holder record last seen and when it was first seen so.
    observed: Option<(Record, Instant)>,
    /// When the lease was last acquired or renewed by this process.
    last_renewed: Option<Instant>,
}

/// The parts of a lease that show its holder alive.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    holder: String,
    renew_time: Option<String>,
    acquire_time: Option<String>,
    transitions: i32,
}

impl Record {
    fn of(spec: Option<&LeaseSpec>) -> Self {
        let spec = spec.cloned().unwrap_or_default();
        Record {
            holder: spec.holder_identity.unwrap_or_default(),
            renew_time: spec.renew_time.map(|time| time.0.to_string()),
            acquire_time: spec.acquire_time.map(|time| time.0.to_string()),
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }
}

fn now_micro() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl Elector {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: String,
        timings: LeaseTimings,
    ) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity,
            timings,
            observed: None,
            last_renewed: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// `namespace/name` of the lease.
    pub fn lease(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.timings.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// One attempt to take or renew the lease. Ok(true): this process holds it now.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = Instant::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.lease_seconds()),
                    acquire_time: Some(now_micro()),
                    renew_time: Some(now_micro()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observed = Some((Record::of(created.spec.as_ref()), now));
                    self.last_renewed = Some(now);
                    Ok(true)
                }
                // Another candidate created it first.
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error),
            };
        };
        let record = Record::of(lease.spec.as_ref());
        let changed_at = match &self.observed {
            Some((seen, at)) if *seen == record => *at,
            _ => now,
        };
        self.observed = Some((record.clone(), changed_at));
        let ours = record.holder == self.identity;
        let expired = now.duration_since(changed_at) >= self.timings.lease_duration;
        if !record.holder.is_empty() && !ours && !expired {
            return Ok(false);
        }
        let mut spec = lease.spec.take().unwrap_or_default();
        if !ours {
            spec.acquire_time = Some(now_micro());
            spec.lease_transitions = Some(record.transitions.saturating_add(1));
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(self.lease_seconds());
        spec.renew_time = Some(now_micro());
        lease.spec = Some(spec);
        // The resourceVersion read above is the precondition: a concurrent writer makes
        // this a 409 conflict.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.observed = Some((Record::of(written.spec.as_ref()), now));
                self.last_renewed = Some(now);
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Waits until this process holds the lease (Ok(true)) or `stop` turns true
    /// (Ok(false)). Errors reaching the API server are logged and retried.
    pub async fn acquire(&mut self, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
        let mut logged_holder = String::new();
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.lease(), identity = %self.identity, "acquired the leader lease");
                    return true;
                }
                Ok(false) => {
                    let holder = self
                        .observed
                        .as_ref()
                        .map(|(record, _)| record.holder.clone())
                        .unwrap_or_default();
                    if holder != logged_holder {
                        tracing::info!(lease = %self.lease(), %holder, "standing by: another replica holds the leader lease");
                        logged_holder = holder;
                    }
                }
                Err(error) => {
                    tracing::warn!(lease = %self.lease(), %error, "cannot read or take the leader lease")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.timings.retry_period) => {}
                _ = stop.wait_for(|stop| *stop) => return false,
            }
        }
    }

    /// Renews the lease every retry period while this process holds it; returns when a
    /// renewal failed for longer than the renew deadline or another holder took it.
    pub async fn hold(&mut self) -> LeaderError {
        loop {
            tokio::time::sleep(self.timings.retry_period).await;
            let since = self.last_renewed.unwrap_or_else(Instant::now);
            // A request hanging past the deadline (a partitioned network) must not keep a
            // leader that can no longer prove itself alive.
            let remaining = self.timings.renew_deadline.saturating_sub(since.elapsed());
            let attempt = tokio::time::timeout(remaining, self.try_acquire_or_renew()).await;
            let last_error = match attempt {
                Err(_) => "renewal timed out".to_owned(),
                Ok(Ok(true)) => continue,
                Ok(Ok(false)) => {
                    let holder = self
                        .observed
                        .as_ref()
                        .map(|(record, _)| record.holder.clone())
                        .unwrap_or_default();
                    if holder != self.identity {
                        // Only possible after our renewals stopped for the lease duration.
                        return self.lost(format!("the lease is held by {holder:?}"));
                    }
                    // A concurrent edit of our own lease: retry.
                    "conflicting update of the lease".to_owned()
                }
                Ok(Err(error)) => error.to_string(),
            };
            tracing::warn!(lease = %self.lease(), error = %last_error, "cannot renew the leader lease");
            if since.elapsed() >= self.timings.renew_deadline {
                return self.lost(last_error);
            }
        }
    }

    fn lost(&self, last_error: String) -> LeaderError {
        LeaderError::Lost {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            deadline: self.timings.renew_deadline,
            last_error,
        }
    }

    /// Gives the lease up (clean shutdown), if this process still holds it.
    pub async fn release(&mut self) {
        let result = async {
            let Some(mut lease) = self.api.get_opt(&self.name).await? else {
                return Ok(());
            };
            let mut spec = lease.spec.take().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(now_micro());
            lease.spec = Some(spec);
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
                .map(drop)
        }
        .await;
        match result {
            Ok(()) => tracing::info!(lease = %self.lease(), "released the leader lease"),
            Err(error) => {
                tracing::warn!(lease = %self.lease(), %error, "cannot release the leader lease")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_follow_client_go_rules() {
        assert_eq!(LeaseTimings::default().validate(), Ok(()));
        let too_short = LeaseTimings {
            lease_duration: Duration::from_secs(10),
            ..LeaseTimings::default()
        };
        assert!(too_short.validate().unwrap_err().contains("lease duration"));
        let slow_retry = LeaseTimings {
            retry_period: Duration::from_secs(9),
            ..LeaseTimings::default()
        };
        assert!(slow_retry.validate().unwrap_err().contains("retry period"));
    }

    #[test]
    fn identities_are_unique_per_process_start() {
        let first = default_identity();
        let second = default_identity();
        assert_ne!(first, second);
        assert!(first.contains('_'));
    }
}
