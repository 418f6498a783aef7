//! Caches of children, indexed by their controlling parent.
//!
//! A child watch is label-selected (e.g. pods with `ray.io/cluster`), so the cache holds Ray
//! pods, not every pod of the cluster. Each cache keeps only a projection of the object (for
//! pods and services, the typed record the plugin receives), never the full object, and only
//! children whose controller ownerReference points at the parent kind. Every change of a
//! child triggers a reconcile of its parent, after the cache holds the change, so the
//! reconcile sees it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use futures::StreamExt as _;
use futures::channel::mpsc::UnboundedSender;
use kube::api::{Api, ApiResource};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

/// The parent kind a cache indexes children by: a controller ownerReference matches when
/// its `kind` and the group of its `apiVersion` are these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentKindRef {
    pub group: String,
    pub kind: String,
}

impl ParentKindRef {
    pub fn of<P: Resource<DynamicType = ()>>() -> Self {
        ParentKindRef {
            group: P::group(&()).into_owned(),
            kind: P::kind(&()).into_owned(),
        }
    }

    /// The uid and name of the parent that controls `meta`, if it is of this kind.
    fn controller_of<'a>(&self, meta: &'a kube::api::ObjectMeta) -> Option<(&'a str, &'a str)> {
        meta.owner_references
            .iter()
            .flatten()
            .find(|owner| owner.controller == Some(true))
            .filter(|owner| {
                owner.kind == self.kind && api_version_group(&owner.api_version) == self.group
            })
            .map(|owner| (owner.uid.as_str(), owner.name.as_str()))
    }
}

/// The group of an `apiVersion` ("" for the core group's "v1").
fn api_version_group(api_version: &str) -> &str {
    api_version
        .rsplit_once('/')
        .map_or("", |(group, _version)| group)
}

/// One cached child.
#[derive(Debug)]
pub struct Entry<V> {
    pub name: String,
    pub uid: String,
    /// `metadata.deletionTimestamp` is set: the API server accepted its deletion.
    pub terminating: bool,
    /// What decisions need of the object.
    pub value: V,
}

/// The children of one parent.
#[derive(Debug)]
struct Bucket<V> {
    parent_name: String,
    namespace: String,
    children: BTreeMap<String, Arc<Entry<V>>>,
}

#[derive(Debug)]
struct IndexState<V> {
    /// Children by the uid of their controlling parent.
    by_parent: HashMap<String, Bucket<V>>,
    /// The parent uid of every cached child, by (namespace, name).
    parent_of: HashMap<(String, String), String>,
}

impl<V> Default for IndexState<V> {
    fn default() -> Self {
        IndexState {
            by_parent: HashMap::new(),
            parent_of: HashMap::new(),
        }
    }
}

/// Where an object belongs in the index.
struct Placement<V> {
    namespace: String,
    name: String,
    parent_uid: String,
    parent_name: String,
    entry: Arc<Entry<V>>,
}

impl<V> IndexState<V> {
    fn insert(&mut self, placement: Placement<V>) {
        let key = (placement.namespace.clone(), placement.name.clone());
        self.remove(&key);
        self.parent_of.insert(key, placement.parent_uid.clone());
        self.by_parent
            .entry(placement.parent_uid)
            .or_insert_with(|| Bucket {
                parent_name: placement.parent_name,
                namespace: placement.namespace,
                children: BTreeMap::new(),
            })
            .children
            .insert(placement.name, placement.entry);
    }

    /// Removes a child; returns the (parent uid, parent ref) it belonged to.
    fn remove(&mut self, key: &(String, String)) -> Option<(String, String)> {
        let parent_uid = self.parent_of.remove(key)?;
        let bucket = self.by_parent.get_mut(&parent_uid)?;
        bucket.children.remove(&key.1);
        let parent_name = bucket.parent_name.clone();
        if bucket.children.is_empty() {
            self.by_parent.remove(&parent_uid);
        }
        Some((parent_uid, parent_name))
    }
}

/// What the controller needs of any child cache, whatever it holds: its name for logs and
/// when its lists complete.
pub trait ListedIndex: Send + Sync {
    fn description(&self) -> &str;
    /// Full lists loaded so far.
    fn lists(&self) -> u64;
    /// Resolves once more than `count` full lists have been loaded.
    fn wait_lists_past(&self, count: u64) -> futures::future::BoxFuture<'_, ()>;
    /// Resolves once the first full list has been loaded.
    fn wait_synced(&self) -> futures::future::BoxFuture<'_, ()> {
        self.wait_lists_past(0)
    }
}

impl<V: Send + Sync> ListedIndex for OwnedIndex<V> {
    fn description(&self) -> &str {
        &self.description
    }
    fn lists(&self) -> u64 {
        OwnedIndex::lists(self)
    }
    fn wait_lists_past(&self, count: u64) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(OwnedIndex::wait_lists_past(self, count))
    }
}

/// A cache of one child kind (under one label selector), indexed by parent uid.
#[derive(Debug)]
pub struct OwnedIndex<V> {
    /// For logs: e.g. "pods (ray.io/cluster)".
    pub description: String,
    state: RwLock<IndexState<V>>,
    /// Buffer of a (re)list in progress.
    relist: RwLock<Option<IndexState<V>>>,
    /// Full lists loaded so far (the first one makes the cache synced).
    lists: AtomicU64,
    listed: Notify,
}

impl<V> OwnedIndex<V> {
    pub fn new(description: impl Into<String>) -> Self {
        OwnedIndex {
            description: description.into(),
            state: RwLock::new(IndexState::default()),
            relist: RwLock::new(None),
            lists: AtomicU64::new(0),
            listed: Notify::new(),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, IndexState<V>> {
        // A poisoned lock only means a panic elsewhere while holding it; the map is still
        // consistent (every mutation is a single insert/remove), so keep serving.
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The children of a parent, in name order.
    pub fn children_of(&self, parent_uid: &str) -> Vec<Arc<Entry<V>>> {
        self.read()
            .by_parent
            .get(parent_uid)
            .map(|bucket| bucket.children.values().cloned().collect())
            .unwrap_or_default()
    }

    /// A child of a parent by name.
    pub fn child(&self, parent_uid: &str, name: &str) -> Option<Arc<Entry<V>>> {
        self.read()
            .by_parent
            .get(parent_uid)
            .and_then(|bucket| bucket.children.get(name).cloned())
    }

    /// A child of a parent by uid.
    pub fn child_by_uid(&self, parent_uid: &str, uid: &str) -> Option<Arc<Entry<V>>> {
        self.read().by_parent.get(parent_uid).and_then(|bucket| {
            bucket
                .children
                .values()
                .find(|entry| entry.uid == uid)
                .cloned()
        })
    }

    /// The uid of the parent a cached object belongs to, whichever parent that is.
    pub fn parent_of(&self, namespace: &str, name: &str) -> Option<String> {
        self.read()
            .parent_of
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Number of cached children (all parents).
    pub fn len(&self) -> usize {
        self.read().parent_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Full lists loaded so far.
    pub fn lists(&self) -> u64 {
        self.lists.load(Ordering::Acquire)
    }

    /// Resolves once more than `count` full lists have been loaded.
    pub async fn wait_lists_past(&self, count: u64) {
        loop {
            let notified = self.listed.notified();
            if self.lists() > count {
                return;
            }
            notified.await;
        }
    }

    /// Resolves once the first full list has been loaded.
    pub async fn wait_synced(&self) {
        self.wait_lists_past(0).await;
    }

    /// Applies one watch event; returns the parents to reconcile as (namespace, name).
    fn apply_event(&self, event: watcher::Event<Placed<V>>) -> Vec<(String, String)> {
        let mut touched = Vec::new();
        match event {
            watcher::Event::Apply(placed) => {
                let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                let previous = state.remove(&placed.key);
                if let Some((_, parent_name)) = previous {
                    touched.push((placed.key.0.clone(), parent_name));
                }
                if let Some(placement) = placed.placement {
                    touched.push((placement.namespace.clone(), placement.parent_name.clone()));
                    state.insert(placement);
                }
            }
            watcher::Event::Delete(placed) => {
                let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                if let Some((_, parent_name)) = state.remove(&placed.key) {
                    touched.push((placed.key.0, parent_name));
                }
            }
            watcher::Event::Init => {
                *self.relist.write().unwrap_or_else(|e| e.into_inner()) =
                    Some(IndexState::default());
            }
            watcher::Event::InitApply(placed) => {
                let mut relist = self.relist.write().unwrap_or_else(|e| e.into_inner());
                if let (Some(buffer), Some(placement)) = (relist.as_mut(), placed.placement) {
                    buffer.insert(placement);
                }
            }
            watcher::Event::InitDone => {
                let fresh = self
                    .relist
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .unwrap_or_default();
                let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                // A relist after a gap may hide deletions and changes: reconcile every parent
                // seen before or after.
                let mut parents = HashSet::new();
                for bucket in state.by_parent.values().chain(fresh.by_parent.values()) {
                    parents.insert((bucket.namespace.clone(), bucket.parent_name.clone()));
                }
                *state = fresh;
                drop(state);
                touched.extend(parents);
                self.lists.fetch_add(1, Ordering::AcqRel);
                self.listed.notify_waiters();
            }
        }
        touched
    }
}

/// A watched object reduced to where it goes in the index.
struct Placed<V> {
    key: (String, String),
    /// None when it has no controller of the parent kind (it is then dropped from the cache).
    placement: Option<Placement<V>>,
}

/// Watches one child kind under a label selector and keeps `index` current; every change
/// sends its parent to `triggers`. Runs until the watch stream ends (never, normally).
pub async fn run_child_watch<K, V, P, F>(
    api: Api<K>,
    config: watcher::Config,
    index: Arc<OwnedIndex<V>>,
    parent: ParentKindRef,
    project: F,
    triggers: UnboundedSender<ObjectRef<P>>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    V: Send + Sync + 'static,
    F: Fn(&K) -> V,
    P: Resource<DynamicType = ()>,
{
    let place = |object: K| -> Placed<V> {
        let meta = object.meta();
        let namespace = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let placement = parent
            .controller_of(meta)
            .map(|(parent_uid, parent_name)| Placement {
                namespace: namespace.clone(),
                name: name.clone(),
                parent_uid: parent_uid.to_owned(),
                parent_name: parent_name.to_owned(),
                entry: Arc::new(Entry {
                    name: name.clone(),
                    uid: object.uid().unwrap_or_default(),
                    terminating: meta.deletion_timestamp.is_some(),
                    value: project(&object),
                }),
            });
        Placed {
            key: (namespace, name),
            placement,
        }
    };
    let mut events = watcher(api, config).backoff(watch_backoff()).boxed();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(cache = %index.description, %error, "child watch failed; retrying");
                continue;
            }
        };
        let placed = match event {
            watcher::Event::Apply(object) => watcher::Event::Apply(place(object)),
            watcher::Event::Delete(object) => watcher::Event::Delete(place(object)),
            watcher::Event::InitApply(object) => watcher::Event::InitApply(place(object)),
            watcher::Event::Init => watcher::Event::Init,
            watcher::Event::InitDone => watcher::Event::InitDone,
        };
        for (namespace, name) in index.apply_event(placed) {
            // The receiver lives as long as the controller; when it is gone we are shutting
            // down and the trigger no longer matters.
            let _ = triggers.unbounded_send(ObjectRef::new(&name).within(&namespace));
        }
    }
}

/// Backoff of the watches after an error: from 200 ms up to 2 s (kube's default grows to
/// 30 s, which would leave the caches that long behind an API server that answers again).
pub fn watch_backoff() -> impl kube::runtime::utils::Backoff {
    kube::runtime::utils::ResetTimerBackoff::new(
        kube::runtime::watcher::ExponentialBackoff::from(
            backon::ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(2))
                .with_jitter()
                .without_max_times(),
        ),
        Duration::from_secs(120),
    )
}

/// An [`ApiResource`] for a dynamic child kind, from `apiVersion` and `kind`.
pub fn api_resource(api_version: &str, kind: &str, plural: &str) -> ApiResource {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    ApiResource {
        group: group.to_owned(),
        version: version.to_owned(),
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        plural: plural.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::api::ObjectMeta;

    fn parent() -> ParentKindRef {
        ParentKindRef {
            group: "ray.io".into(),
            kind: "RayCluster".into(),
        }
    }

    fn pod(name: &str, owner: Option<(&str, &str)>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                owner_references: owner.map(|(uid, parent)| {
                    vec![OwnerReference {
                        api_version: "ray.io/v1".into(),
                        kind: "RayCluster".into(),
                        name: parent.into(),
                        uid: uid.into(),
                        controller: Some(true),
                        block_owner_deletion: Some(true),
                    }]
                }),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    fn placed(pod: Pod) -> Placed<String> {
        let kind = parent();
        let meta = &pod.metadata;
        let key = (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        );
        let placement = kind
            .controller_of(meta)
            .map(|(uid, parent_name)| Placement {
                namespace: key.0.clone(),
                name: key.1.clone(),
                parent_uid: uid.into(),
                parent_name: parent_name.into(),
                entry: Arc::new(Entry {
                    name: key.1.clone(),
                    uid: pod.uid().unwrap_or_default(),
                    terminating: meta.deletion_timestamp.is_some(),
                    value: key.1.clone(),
                }),
            });
        Placed { key, placement }
    }

    #[test]
    fn indexes_children_by_controlling_parent_and_reports_parents() {
        let index = OwnedIndex::<String>::new("pods");
        let touched =
            index.apply_event(watcher::Event::Apply(placed(pod("a", Some(("u1", "rc1"))))));
        assert_eq!(touched, vec![("ns".to_owned(), "rc1".to_owned())]);
        index.apply_event(watcher::Event::Apply(placed(pod("b", Some(("u1", "rc1"))))));
        index.apply_event(watcher::Event::Apply(placed(pod("c", Some(("u2", "rc2"))))));
        // Not controlled by a RayCluster: not cached, nobody to reconcile.
        assert!(
            index
                .apply_event(watcher::Event::Apply(placed(pod("d", None))))
                .is_empty()
        );
        let names: Vec<_> = index
            .children_of("u1")
            .iter()
            .map(|e| e.name.clone())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(index.len(), 3);
        assert!(index.child_by_uid("u1", "uid-b").is_some());
        assert!(index.child("u2", "a").is_none());

        let touched = index.apply_event(watcher::Event::Delete(placed(pod(
            "a",
            Some(("u1", "rc1")),
        ))));
        assert_eq!(touched, vec![("ns".to_owned(), "rc1".to_owned())]);
        assert_eq!(index.children_of("u1").len(), 1);
    }

    #[test]
    fn orphaned_child_leaves_the_index_and_triggers_its_old_parent() {
        let index = OwnedIndex::<String>::new("pods");
        index.apply_event(watcher::Event::Apply(placed(pod("a", Some(("u1", "rc1"))))));
        let touched = index.apply_event(watcher::Event::Apply(placed(pod("a", None))));
        assert_eq!(touched, vec![("ns".to_owned(), "rc1".to_owned())]);
        assert!(index.is_empty());
        assert!(index.children_of("u1").is_empty());
    }

    #[test]
    fn relist_replaces_contents_and_triggers_old_and_new_parents() {
        let index = OwnedIndex::<String>::new("pods");
        assert_eq!(index.lists(), 0);
        index.apply_event(watcher::Event::Apply(placed(pod("a", Some(("u1", "rc1"))))));
        index.apply_event(watcher::Event::Init);
        index.apply_event(watcher::Event::InitApply(placed(pod(
            "b",
            Some(("u2", "rc2")),
        ))));
        // Until the relist is done, readers see the old contents.
        assert_eq!(index.children_of("u1").len(), 1);
        let mut touched = index.apply_event(watcher::Event::InitDone);
        touched.sort();
        assert_eq!(
            touched,
            vec![
                ("ns".to_owned(), "rc1".to_owned()),
                ("ns".to_owned(), "rc2".to_owned())
            ]
        );
        assert!(index.children_of("u1").is_empty());
        assert_eq!(index.children_of("u2").len(), 1);
        assert_eq!(index.lists(), 1);
    }

    #[test]
    fn api_version_groups() {
        assert_eq!(api_version_group("v1"), "");
        assert_eq!(api_version_group("ray.io/v1"), "ray.io");
        let resource = api_resource("batch/v1", "Job", "jobs");
        assert_eq!(
            (resource.group.as_str(), resource.version.as_str()),
            ("batch", "v1")
        );
    }
}
