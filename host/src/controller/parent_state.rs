//! What the host remembers about each parent between reconciles, in one map under one lock,
//! dropped by one [`ParentStates::forget`] when the parent is deleted. Nothing here survives
//! a restart: a plugin decides from Kubernetes state and fresh Ray queries alone.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::wit::{ActionResult, FailedWrite, RayQuery};

/// One write that the caches must reflect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expectation {
    /// A child created under this name shows in cache `cache`.
    Created { cache: usize, name: String },
    /// A deleted child is gone from cache `cache` or shows as terminating.
    Deleted { cache: usize, uid: String },
    /// The parent in the controller's cache has at least this resourceVersion.
    ParentVersion(String),
}

/// The host's memory of one parent.
#[derive(Debug, Default)]
pub struct ParentState {
    /// Writes the caches must show before the plugin is called again, since the latest.
    pub expected: Option<(Instant, Vec<Expectation>)>,
    /// Consecutive failed reconciles, for backoff.
    pub failures: u32,
    /// The failed writes of the last call, for the next.
    pub failed_writes: Vec<FailedWrite>,
    /// The Ray queries of the last answer, made before the next call.
    pub ray_queries: Vec<RayQuery>,
    /// Results of Ray actions not yet passed to the plugin.
    pub ray_results: Vec<ActionResult>,
    /// Clusters whose ignored dashboard-address annotation was logged already.
    pub warned_overrides: BTreeSet<String>,
    /// Generated Secrets known to exist.
    pub secrets_known: BTreeSet<String>,
    /// The writes of the reconcile in flight, and whether it began after the deletion.
    pub writing: Option<(CancellationToken, bool)>,
    /// Consecutive answers that asked to be called again sooner than the requeue floor.
    pub requeue_floor_hits: u32,
    /// Consecutive write rounds held back by the per-object write rate.
    pub rate_limited: u32,
    /// Consecutive answers whose status the host wrote.
    pub status_rounds: u32,
}

/// Every parent's state, by uid.
#[derive(Debug, Default)]
pub struct ParentStates {
    states: Mutex<HashMap<String, ParentState>>,
}

impl ParentStates {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ParentState>> {
        // Updates are single assignments or pushes: a panic elsewhere cannot leave a state
        // half-written, so a poisoned lock is still usable.
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the state of parent `uid`, made empty if there is none.
    pub fn with<T>(&self, uid: &str, f: impl FnOnce(&mut ParentState) -> T) -> T {
        let mut states = self.lock();
        match states.get_mut(uid) {
            Some(state) => f(state),
            None => f(states.entry(uid.to_owned()).or_default()),
        }
    }

    /// Runs `f` on the state of parent `uid` if there is one (a read that must not create
    /// an entry for every parent it looks at).
    pub fn with_existing<T>(&self, uid: &str, f: impl FnOnce(&mut ParentState) -> T) -> Option<T> {
        self.lock().get_mut(uid).map(f)
    }

    /// Forgets a deleted parent: everything the host remembered of it. Its writes in
    /// flight stop.
    pub fn forget(&self, uid: &str) {
        if let Some(state) = self.lock().remove(uid)
            && let Some((writes, _)) = state.writing
        {
            writes.cancel();
        }
    }

    /// A token for the writes of a reconcile that starts now (cancelled with `root`).
    pub fn start_writes(
        &self,
        uid: &str,
        root: &CancellationToken,
        deleting: bool,
    ) -> CancellationToken {
        let token = root.child_token();
        self.with(uid, |state| state.writing = Some((token.clone(), deleting)));
        token
    }

    /// The parent is being deleted: the writes of a reconcile that began before stop (those
    /// of one that began after are the plugin's cleanup).
    pub fn deletion_started(&self, uid: &str) {
        self.with_existing(uid, |state| {
            if let Some((writes, false)) = &state.writing {
                writes.cancel();
            }
        });
    }

    /// Every parent's failure count back to zero (their backoff starts over).
    pub fn reset_failures(&self) {
        for state in self.lock().values_mut() {
            state.failures = 0;
        }
    }

    /// How many parents the host remembers something of.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many parents satisfy `predicate`.
    pub fn count(&self, predicate: impl Fn(&ParentState) -> bool) -> usize {
        self.lock()
            .values()
            .filter(|state| predicate(state))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_forget_drops_everything_of_a_parent() {
        let states = ParentStates::default();
        states.with("p", |state| {
            state.failures = 2;
            state.warned_overrides.insert("rc".into());
            state.secrets_known.insert("rc".into());
            state.ray_queries.push(RayQuery::Dashboard("rc".into()));
        });
        states.with("q", |state| state.failures = 1);
        assert_eq!(states.with_existing("absent", |_| ()), None);
        assert_eq!(
            states.len(),
            2,
            "a read of an absent parent creates nothing"
        );
        states.forget("p");
        assert_eq!(states.len(), 1);
        assert_eq!(states.with("p", |state| state.failures), 0);
        assert!(states.with("p", |state| state.warned_overrides.is_empty()));
    }

    #[test]
    fn writes_stop_on_deletion_forget_and_shutdown_but_not_cleanup_writes() {
        let states = ParentStates::default();
        let root = CancellationToken::new();
        let before = states.start_writes("p", &root, false);
        states.deletion_started("p");
        assert!(
            before.is_cancelled(),
            "writes begun before the deletion stop"
        );
        let cleanup = states.start_writes("p", &root, true);
        states.deletion_started("p");
        assert!(!cleanup.is_cancelled(), "the plugin's cleanup writes go on");
        states.forget("p");
        assert!(cleanup.is_cancelled(), "a forgotten parent's writes stop");
        let other = states.start_writes("q", &root, false);
        root.cancel();
        assert!(other.is_cancelled(), "shutdown stops every parent's writes");
    }
}
