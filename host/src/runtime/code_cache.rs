//! Compiled code: a small in-process cache by the digest of the component bytes, in front
//! of wasmtime's own on-disk compilation cache (optional) so that a restart skips
//! compilation. The disk cache is wasmtime's: it keys entries by the bytes and the
//! engine's settings, checks what it reads back, and trims itself in the background.

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Mutex;

use lru::LruCache;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Cache, CacheConfig, Engine};

use super::error::{LoadError, PluginId};

/// Components kept compiled in memory. Only the plugins installed now and the ones just
/// replaced are worth keeping (a reload back to them is then free); every hot reload with
/// new bytes would otherwise add an entry that is never freed.
const MEMORY_ENTRIES: NonZeroUsize = NonZeroUsize::new(16).expect("non-zero");

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

/// The sha256 of some bytes as `sha256:<hex>`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// wasmtime's disk cache under `dir`, for the engine's `Config` and for [`CodeCache`]
/// (whose hit counter tells where a load's code came from). A directory that cannot be
/// used only costs compilation time, so it is reported and the cache left off.
pub fn disk_cache(dir: &Path) -> Option<Cache> {
    // wasmtime wants an absolute path; the flag may be relative to the working directory.
    let cache = std::path::absolute(dir)
        .map_err(wasmtime::Error::from)
        .and_then(|dir| {
            let mut settings = CacheConfig::new();
            settings.with_directory(dir);
            Cache::new(settings)
        });
    match cache {
        Ok(cache) => Some(cache),
        Err(err) => {
            tracing::warn!(dir = %dir.display(), error = %format!("{err:#}"), "compiled-code disk cache unavailable; plugins are compiled at every start");
            None
        }
    }
}

/// The code cache.
pub struct CodeCache {
    memory: Mutex<LruCache<String, Component>>,
    /// The engine's disk cache, if any (the same one the engine's `Config` holds).
    disk: Option<Cache>,
    /// Held across a compile: one compile at a time already uses every core, and it
    /// makes the disk cache's hit counter, read before and after, this load's alone.
    compiling: tokio::sync::Mutex<()>,
}

impl CodeCache {
    /// A cache; `disk` is the cache the engine was configured with, if any.
    pub fn new(disk: Option<Cache>) -> Self {
        CodeCache {
            memory: Mutex::new(LruCache::new(MEMORY_ENTRIES)),
            disk,
            compiling: tokio::sync::Mutex::new(()),
        }
    }

    /// The compiled component for these bytes. Compilation runs on a blocking thread, so
    /// the async workers keep serving while a plugin compiles.
    pub async fn component(
        &self,
        engine: &Engine,
        plugin: &PluginId,
        bytes: &[u8],
    ) -> Result<(Component, CodeSource), LoadError> {
        if let Some(component) = self.cached(plugin) {
            return Ok((component, CodeSource::Memory));
        }
        let _compiling = self.compiling.lock().await;
        // A concurrent load of the same bytes may have compiled them while this one waited.
        if let Some(component) = self.cached(plugin) {
            return Ok((component, CodeSource::Memory));
        }
        let hits_before = self.disk.as_ref().map(Cache::cache_hits);
        let engine = engine.clone();
        let owned = bytes.to_vec();
        let compiled = tokio::task::spawn_blocking(move || Component::new(&engine, owned))
            .await
            .map_err(|err| LoadError::Compile {
                plugin: plugin.clone(),
                message: format!("the compiler thread failed: {err}"),
            })?;
        let component = compiled.map_err(|err| LoadError::Compile {
            plugin: plugin.clone(),
            message: format!("{err:#}"),
        })?;
        let disk_hit = self
            .disk
            .as_ref()
            .map(Cache::cache_hits)
            .is_some_and(|hits| Some(hits) > hits_before);
        let source = if disk_hit {
            CodeSource::Disk
        } else {
            CodeSource::Compiled
        };
        self.lock().put(plugin.digest.clone(), component.clone());
        Ok((component, source))
    }

    fn cached(&self, plugin: &PluginId) -> Option<Component> {
        self.lock().get(&plugin.digest).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, Component>> {
        // A panic while holding this lock cannot leave the map half-updated (each use is
        // a single call), so a poisoned lock is still usable.
        self.memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(bytes: &[u8]) -> PluginId {
        PluginId {
            name: "p".to_owned(),
            digest: digest_of(bytes),
        }
    }

    #[tokio::test]
    async fn memory_keeps_the_recent_components_only() {
        let engine = Engine::default();
        let cache = CodeCache::new(None);
        // Distinct bytes: one more component than the memory keeps.
        let components: Vec<Vec<u8>> = (0..=MEMORY_ENTRIES.get())
            .map(|i| format!("(component (core module (func (export \"f{i}\"))))").into_bytes())
            .collect();
        for bytes in &components {
            let (_, source) = cache.component(&engine, &id(bytes), bytes).await.unwrap();
            assert_eq!(source, CodeSource::Compiled);
        }
        let newest = components.last().unwrap();
        let (_, source) = cache.component(&engine, &id(newest), newest).await.unwrap();
        assert_eq!(source, CodeSource::Memory);
        let oldest = &components[0];
        let (_, source) = cache.component(&engine, &id(oldest), oldest).await.unwrap();
        assert_eq!(source, CodeSource::Compiled);
    }
}
