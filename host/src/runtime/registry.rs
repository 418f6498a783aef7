//! Plugins by name. Resolution (which plugin serves a name) is kept apart from loading
//! (turning bytes into a [`Plugin`]), so that later sources (a registry CRD, per-object
//! annotations) only decide names.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::loaded::Plugin;

/// The set of installed plugins. Reads are lock-free; a swap is atomic: the next lookup
/// sees the new plugin, and calls that already hold the old one finish on it.
#[derive(Default)]
pub struct Registry {
    plugins: ArcSwap<HashMap<String, Arc<Plugin>>>,
}

impl Registry {
    /// The plugin installed under `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.plugins.load().get(name).cloned()
    }

    /// Installs `plugin` under its name, replacing any plugin of that name, which is
    /// returned.
    pub fn install(&self, plugin: Arc<Plugin>) -> Option<Arc<Plugin>> {
        let name = plugin.id().name.clone();
        let previous = self.plugins.rcu(|current| {
            let mut next = HashMap::clone(current);
            next.insert(name.clone(), Arc::clone(&plugin));
            next
        });
        previous.get(&name).cloned()
    }

    /// Removes the plugin of that name, returning it.
    pub fn remove(&self, name: &str) -> Option<Arc<Plugin>> {
        let previous = self.plugins.rcu(|current| {
            let mut next = HashMap::clone(current);
            next.remove(name);
            next
        });
        previous.get(name).cloned()
    }

    /// All installed plugins, sorted by name.
    pub fn list(&self) -> Vec<Arc<Plugin>> {
        let mut plugins: Vec<Arc<Plugin>> = self.plugins.load().values().cloned().collect();
        plugins.sort_by(|a, b| a.id().name.cmp(&b.id().name));
        plugins
    }
}
