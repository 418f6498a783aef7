//! Expectations: a plugin must see its own writes. After the host creates or deletes
//! children (or writes the status) for a parent, it does not call the plugin for that parent
//! again until the caches reflect those writes, or until a timeout passes (KubeRay waits
//! 30 s). Without this, a reconcile that runs before the watch delivers a new pod would
//! create the pod a second time.

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use super::parent_state::Expectation;
use super::parent_state::ParentStates;

/// Answers whether a cache reflects a write.
pub trait Lookup {
    /// A child of the parent with this name is cached.
    fn has_name(&self, parent_uid: &str, name: &str) -> bool;
    /// A child of the parent with this uid is cached and not terminating.
    fn has_live_uid(&self, parent_uid: &str, uid: &str) -> bool;
}

impl<V> Lookup for super::child_index::OwnedIndex<V> {
    fn has_name(&self, parent_uid: &str, name: &str) -> bool {
        self.child(parent_uid, name).is_some()
    }

    fn has_live_uid(&self, parent_uid: &str, uid: &str) -> bool {
        self.child_by_uid(parent_uid, uid)
            .is_some_and(|entry| !entry.terminating)
    }
}

/// How often a parent waiting for its own write to show in the cache looks again.
pub const PARENT_VERSION_POLL: Duration = Duration::from_millis(200);

/// Whether the plugin may be called for a parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Writes are not visible yet; check again at the latest after this long.
    Waiting(Duration),
}

/// Outstanding expectations, kept in each parent's state.
#[derive(Debug)]
pub struct Expectations {
    timeout: Duration,
    states: Arc<ParentStates>,
}

impl Expectations {
    pub fn new(timeout: Duration, states: Arc<ParentStates>) -> Self {
        Expectations { timeout, states }
    }

    /// Records writes made for a parent. The timeout counts from the latest write.
    pub fn expect(&self, parent_uid: &str, items: impl IntoIterator<Item = Expectation>) {
        let mut items = items.into_iter().peekable();
        if items.peek().is_none() {
            return;
        }
        self.states.with(parent_uid, |state| {
            let expected = state
                .expected
                .get_or_insert_with(|| (Instant::now(), Vec::new()));
            expected.0 = Instant::now();
            expected.1.extend(items);
        });
    }

    /// Drops what is satisfied and says whether the parent may be reconciled.
    /// `parent_version` is the resourceVersion of the parent as the controller sees it.
    pub fn check(
        &self,
        parent_uid: &str,
        parent_version: Option<&str>,
        caches: &[&dyn Lookup],
    ) -> Readiness {
        let timeout = self.timeout;
        self.states
            .with_existing(parent_uid, |state| {
                let Some((since, items)) = &mut state.expected else {
                    return Readiness::Ready;
                };
                items.retain(|item| !satisfied(item, parent_uid, parent_version, caches));
                let waited = since.elapsed();
                if items.is_empty() {
                    state.expected = None;
                    return Readiness::Ready;
                }
                if waited >= timeout {
                    tracing::warn!(
                        parent_uid,
                        unmet = ?items,
                        "writes not visible in the caches after {timeout:?}; reconciling anyway",
                    );
                    state.expected = None;
                    return Readiness::Ready;
                }
                let remaining = timeout - waited;
                // The parent watch drops the host's own status writes (only spec, label,
                // annotation, finalizer and deletion changes trigger), so no event says
                // when an awaited parent version arrives: look again shortly.
                if items
                    .iter()
                    .any(|item| matches!(item, Expectation::ParentVersion(_)))
                {
                    return Readiness::Waiting(remaining.min(PARENT_VERSION_POLL));
                }
                Readiness::Waiting(remaining)
            })
            .unwrap_or(Readiness::Ready)
    }

    /// Number of parents with outstanding expectations.
    pub fn len(&self) -> usize {
        self.states.count(|state| state.expected.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn satisfied(
    item: &Expectation,
    parent_uid: &str,
    parent_version: Option<&str>,
    caches: &[&dyn Lookup],
) -> bool {
    match item {
        // An unknown cache cannot confirm anything: do not wait for it.
        Expectation::Created { cache, name } => caches
            .get(*cache)
            .is_none_or(|lookup| lookup.has_name(parent_uid, name)),
        Expectation::Deleted { cache, uid } => caches
            .get(*cache)
            .is_none_or(|lookup| !lookup.has_live_uid(parent_uid, uid)),
        Expectation::ParentVersion(written) => {
            parent_version.is_some_and(|seen| version_at_least(seen, written))
        }
    }
}

/// resourceVersions are opaque, but the API server derives them from etcd revisions,
/// which only grow: compare as numbers when both are numbers, else require equality.
fn version_at_least(seen: &str, written: &str) -> bool {
    match (seen.parse::<u64>(), written.parse::<u64>()) {
        (Ok(seen), Ok(written)) => seen >= written,
        _ => seen == written,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[derive(Default)]
    struct FakeCache {
        names: HashSet<String>,
        live_uids: HashSet<String>,
    }

    impl Lookup for FakeCache {
        fn has_name(&self, _parent: &str, name: &str) -> bool {
            self.names.contains(name)
        }
        fn has_live_uid(&self, _parent: &str, uid: &str) -> bool {
            self.live_uids.contains(uid)
        }
    }

    #[test]
    fn waits_until_creates_and_deletes_are_visible() {
        let expectations = Expectations::new(Duration::from_secs(30), Arc::default());
        let mut pods = FakeCache::default();
        pods.live_uids.insert("old".into());
        expectations.expect(
            "p",
            [
                Expectation::Created {
                    cache: 0,
                    name: "new".into(),
                },
                Expectation::Deleted {
                    cache: 0,
                    uid: "old".into(),
                },
            ],
        );
        assert!(matches!(
            expectations.check("p", None, &[&pods]),
            Readiness::Waiting(_)
        ));
        // Other parents are unaffected.
        assert_eq!(expectations.check("q", None, &[&pods]), Readiness::Ready);
        pods.names.insert("new".into());
        assert!(matches!(
            expectations.check("p", None, &[&pods]),
            Readiness::Waiting(_)
        ));
        pods.live_uids.clear();
        assert_eq!(expectations.check("p", None, &[&pods]), Readiness::Ready);
        assert!(expectations.is_empty());
    }

    #[test]
    fn gives_up_after_the_timeout() {
        let expectations = Expectations::new(Duration::ZERO, Arc::default());
        expectations.expect(
            "p",
            [Expectation::Created {
                cache: 0,
                name: "never".into(),
            }],
        );
        assert_eq!(
            expectations.check("p", None, &[&FakeCache::default()]),
            Readiness::Ready
        );
    }

    #[test]
    fn parent_version_must_catch_up() {
        let expectations = Expectations::new(Duration::from_secs(30), Arc::default());
        expectations.expect("p", [Expectation::ParentVersion("120".into())]);
        assert!(matches!(
            expectations.check("p", Some("119"), &[]),
            Readiness::Waiting(_)
        ));
        assert_eq!(expectations.check("p", Some("125"), &[]), Readiness::Ready);
        expectations.expect("p", [Expectation::ParentVersion("abc".into())]);
        assert!(matches!(
            expectations.check("p", Some("125"), &[]),
            Readiness::Waiting(_)
        ));
        assert_eq!(expectations.check("p", Some("abc"), &[]), Readiness::Ready);
    }

    #[test]
    fn nothing_expected_means_ready() {
        let expectations = Expectations::new(Duration::from_secs(30), Arc::default());
        expectations.expect("p", []);
        assert!(expectations.is_empty());
        expectations.expect("p", [Expectation::ParentVersion("1".into())]);
        expectations.states.forget("p");
        assert!(expectations.is_empty());
    }
}
