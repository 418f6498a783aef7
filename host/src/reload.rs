//! Reloading plugin files at runtime (`--watch-plugin-files`): a changed file is loaded and
//! swapped in through the registry's atomic install, so the next call uses the new code and
//! calls already running finish on the old. A file that fails to load, plays another role
//! than the running plugin, does not serve the kinds bound to its name or refuses its
//! configuration leaves the running plugin in place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::controller::plugin_host::PluginHost;
use crate::runtime::digest_of;

/// How often the files are checked. Polling needs no platform file-watch API and costs one
/// stat per file per period.
pub const POLL_PERIOD: Duration = Duration::from_secs(2);

/// What a reloaded plugin must fit, as at start: the bindings and each plugin's
/// configuration.
#[derive(Clone, Debug, Default)]
pub struct Fit {
    /// Kind to plugin name.
    pub bindings: BTreeMap<String, String>,
    /// Plugin name to configuration text.
    pub configs: BTreeMap<String, String>,
}

/// Watches `files` (plugin name to path) until `stop` turns true.
pub async fn watch_plugin_files(
    plugins: PluginHost,
    files: BTreeMap<String, PathBuf>,
    fit: Fit,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut stamps: BTreeMap<String, Option<std::time::SystemTime>> = BTreeMap::new();
    for (name, path) in &files {
        stamps.insert(name.clone(), modified(path).await);
    }
    loop {
        tokio::select! {
            () = tokio::time::sleep(POLL_PERIOD) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        for (name, path) in &files {
            let stamp = modified(path).await;
            if stamps.get(name) == Some(&stamp) {
                continue;
            }
            stamps.insert(name.clone(), stamp);
            reload(&plugins, name, path, &fit).await;
        }
    }
}

async fn modified(path: &Path) -> Option<std::time::SystemTime> {
    tokio::fs::metadata(path)
        .await
        .and_then(|metadata| metadata.modified())
        .ok()
}

/// Loads `path` and installs it under `name` unless its bytes are those already installed.
pub async fn reload(plugins: &PluginHost, name: &str, path: &Path, fit: &Fit) {
    let bytes = match tokio::fs::read(path).await {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::warn!(plugin = name, path = %path.display(), %error, "cannot read the changed plugin file; keeping the running plugin");
            return;
        }
    };
    let runtime = plugins.runtime();
    let digest = digest_of(&bytes);
    if runtime
        .registry()
        .get(name)
        .is_some_and(|running| running.id().digest == digest)
    {
        return;
    }
    let loaded = match runtime.load(name, &bytes).await {
        Ok(plugin) => plugin,
        Err(error) => {
            tracing::warn!(plugin = name, path = %path.display(), error = %format!("{error:#}"), "the changed plugin file does not load; keeping the running plugin");
            return;
        }
    };
    let running_role = runtime.registry().get(name).map(|running| running.role());
    let fits = match running_role {
        Some(role) if role != loaded.role() => Err(format!(
            "{} is a {}, the running plugin a {role}",
            loaded.id(),
            loaded.role()
        )),
        _ => {
            plugins
                .check_fit(
                    &loaded,
                    &fit.bindings,
                    fit.configs.get(name).map(String::as_str),
                )
                .await
        }
    };
    if let Err(reason) = fits {
        tracing::warn!(plugin = name, path = %path.display(), %reason, "the changed plugin does not fit its bindings or configuration; keeping the running plugin");
        return;
    }
    let previous = runtime.registry().install(loaded);
    tracing::info!(
        plugin = name,
        digest = %digest,
        previous = ?previous.map(|plugin| plugin.id().digest.clone()),
        "reloaded a changed plugin file"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::{BUILTIN_PLUGINS, test_plugins};

    /// A built-in plugin's bytes, or an example's read from its test build.
    fn bytes_of(name: &str) -> Vec<u8> {
        if let Some(builtin) = BUILTIN_PLUGINS.iter().find(|plugin| plugin.name == name) {
            return builtin.bytes.to_vec();
        }
        let (_, path) = test_plugins::EXAMPLES
            .iter()
            .find(|(example, _)| *example == name)
            .unwrap();
        std::fs::read(path).unwrap()
    }

    #[tokio::test]
    async fn a_changed_file_is_swapped_in_and_a_broken_one_is_not() {
        let plugins = PluginHost::with_builtins(None).await.unwrap();
        let dir = std::env::temp_dir().join(format!("wasmray-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy.wasm");
        let digest = |plugins: &PluginHost| {
            plugins
                .runtime()
                .registry()
                .get("policy")
                .map(|plugin| plugin.id().digest.clone())
        };

        let fit = Fit {
            bindings: BTreeMap::from([("RayCluster".to_owned(), "policy".to_owned())]),
            configs: BTreeMap::new(),
        };
        std::fs::write(&path, bytes_of("example-reconciler")).unwrap();
        reload(&plugins, "policy", &path, &fit).await;
        assert_eq!(
            digest(&plugins),
            Some(digest_of(&bytes_of("example-reconciler")))
        );

        std::fs::write(&path, b"not a component").unwrap();
        reload(&plugins, "policy", &path, &fit).await;
        assert_eq!(
            digest(&plugins),
            Some(digest_of(&bytes_of("example-reconciler"))),
            "a file that does not load keeps the running plugin"
        );

        std::fs::write(&path, bytes_of("raycluster")).unwrap();
        reload(&plugins, "policy", &path, &fit).await;
        assert_eq!(digest(&plugins), Some(digest_of(&bytes_of("raycluster"))));

        // Bound to RayCluster: a RayJob-only plugin does not fit, nor does a scheduler.
        std::fs::write(&path, bytes_of("rayjob")).unwrap();
        reload(&plugins, "policy", &path, &fit).await;
        assert_eq!(digest(&plugins), Some(digest_of(&bytes_of("raycluster"))));
        std::fs::write(&path, bytes_of("example-scheduler")).unwrap();
        reload(&plugins, "policy", &path, &fit).await;
        assert_eq!(digest(&plugins), Some(digest_of(&bytes_of("raycluster"))));

        // A plugin that refuses its configuration does not replace the running one.
        let hostile = std::fs::read(crate::builtin::test_plugins::HOSTILE).unwrap();
        let refusing = Fit {
            configs: BTreeMap::from([("policy".to_owned(), "invalid-config".to_owned())]),
            ..fit.clone()
        };
        std::fs::write(&path, &hostile).unwrap();
        reload(&plugins, "policy", &path, &refusing).await;
        assert_eq!(digest(&plugins), Some(digest_of(&bytes_of("raycluster"))));
        reload(&plugins, "policy", &path, &fit).await;
        assert_eq!(digest(&plugins), Some(digest_of(&hostile)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
