//! Compiled code cached by the digest of the component bytes: in memory for the life of
//! the process, and optionally on disk so that a restart skips compilation.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::error::{LoadError, PluginId};

/// Where a plugin's compiled code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeSource {
    /// Already compiled in this process.
    Memory,
    /// Read from the on-disk cache.
    Disk,
    /// Compiled now.
    Compiled,
}

/// The code cache.
pub struct CodeCache {
    memory: Mutex<HashMap<String, Component>>,
    /// `<cache dir>/<engine compatibility hash>`, if a disk cache is configured.
    disk_dir: Option<PathBuf>,
}

/// The sha256 of some bytes as `sha256:<hex>`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl CodeCache {
    /// A cache; `disk_root` enables the disk cache under a directory namespaced by the
    /// engine's compatibility hash (wasmtime version and code-generation settings).
    pub fn new(engine: &Engine, disk_root: Option<&Path>) -> Self {
        let disk_dir = disk_root.map(|root| {
            let mut hasher = DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut hasher);
            root.join(format!("{:016x}", hasher.finish()))
        });
        CodeCache {
            memory: Mutex::new(HashMap::new()),
            disk_dir,
        }
    }

    /// The compiled component for these bytes.
    pub fn component(
        &self,
        engine: &Engine,
        plugin: &PluginId,
        bytes: &[u8],
    ) -> Result<(Component, CodeSource), LoadError> {
        if let Some(component) = self.lock().get(&plugin.digest) {
            return Ok((component.clone(), CodeSource::Memory));
        }
        let (component, source) = match self.read_disk(engine, plugin) {
            Some(component) => (component, CodeSource::Disk),
            None => {
                let component =
                    Component::new(engine, bytes).map_err(|err| LoadError::Compile {
                        plugin: plugin.clone(),
                        message: format!("{err:#}"),
                    })?;
                self.write_disk(plugin, &component);
                (component, CodeSource::Compiled)
            }
        };
        self.lock().insert(plugin.digest.clone(), component.clone());
        Ok((component, source))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Component>> {
        // A panic while holding this lock cannot leave the map half-updated (inserts are
        // single calls), so a poisoned lock is still usable.
        self.memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn disk_path(&self, plugin: &PluginId) -> Option<PathBuf> {
        let hex = plugin
            .digest
            .strip_prefix("sha256:")
            .unwrap_or(&plugin.digest);
        Some(self.disk_dir.as_ref()?.join(format!("{hex}.cwasm")))
    }

    /// File layout: the sha256 of the artifact (32 bytes), then the artifact.
    fn read_disk(&self, engine: &Engine, plugin: &PluginId) -> Option<Component> {
        let path = self.disk_path(plugin)?;
        let file = std::fs::read(&path).ok()?;
        let (recorded, artifact) = file.split_at_checked(32)?;
        if Sha256::digest(artifact).as_slice() != recorded {
            tracing::warn!(path = %path.display(), "corrupt compiled-code cache entry; recompiling");
            return None;
        }
        // SAFETY: `Component::deserialize` trusts its input to be code wasmtime produced,
        // since it maps it as executable. These bytes are: this cache only holds
        // artifacts that `Component::serialize` wrote (atomically, via rename) into an
        // operator-owned directory namespaced by this engine's compatibility hash, and
        // they are checked against their recorded sha256 above, so a torn or corrupted
        // write is never loaded. wasmtime additionally rejects artifacts from another
        // version or configuration. Whoever can write this directory can already replace
        // the operator binary, so trusting it adds no new authority.
        match unsafe { Component::deserialize(engine, artifact) } {
            Ok(component) => Some(component),
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "unusable compiled-code cache entry; recompiling");
                None
            }
        }
    }

    fn write_disk(&self, plugin: &PluginId, component: &Component) {
        let Some(path) = self.disk_path(plugin) else {
            return;
        };
        let result = component
            .serialize()
            .map_err(std::io::Error::other)
            .and_then(|artifact| {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let mut file = Sha256::digest(&artifact).to_vec();
                file.extend_from_slice(&artifact);
                let partial = path.with_extension(format!("partial-{}", std::process::id()));
                std::fs::write(&partial, &file)?;
                std::fs::rename(&partial, &path)
            });
        if let Err(err) = result {
            // The cache only speeds up restarts; failing to fill it is not fatal.
            tracing::warn!(path = %path.display(), error = %err, "cannot write compiled-code cache entry");
        }
    }
}
