//! The controller's view of the plugin runtime: call the reconciler a parent is bound to,
//! and turn every way a call can fail into one [`CallFailure`] (reason, message naming the
//! plugin and its digest, retry hint).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::runtime::{
    CallError, Plugin, PluginId, ReconcileInput, ReconcileOutput, Role, Runtime, RuntimeConfig,
    ScheduleInput, ScheduleOutput,
};

/// Why a plugin call gave no usable answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CallFailure {
    /// CamelCase kind of failure, e.g. `PluginTrapped`, `PluginDeadlineExceeded`.
    pub reason: String,
    /// What failed, naming the plugin and its digest.
    pub message: String,
    /// When to retry, if the plugin said so.
    pub retry_after: Option<Duration>,
}

impl From<CallError> for CallFailure {
    fn from(error: CallError) -> Self {
        let retry_after = match &error {
            CallError::Refused { retry_after, .. } => *retry_after,
            _ => None,
        };
        CallFailure {
            reason: error.reason().to_owned(),
            message: error.to_string(),
            retry_after,
        }
    }
}

impl CallFailure {
    /// The answer of `plugin` is not carried out: part of it is malformed or breaks the
    /// host's write policy (the reason says which rule).
    pub fn refused_answer(
        plugins: &PluginHost,
        plugin: &str,
        refusal: &crate::controller::plan::MalformedAnswer,
    ) -> Self {
        let id = plugins
            .runtime
            .registry()
            .get(plugin)
            .map(|plugin| plugin.id().clone())
            .unwrap_or_else(|| PluginId {
                name: plugin.to_owned(),
                digest: "unknown digest".to_owned(),
            });
        use crate::controller::plan::AnswerRule;
        let message = match refusal.rule {
            AnswerRule::Contract => CallError::MalformedOutput {
                plugin: id,
                what: refusal.to_string(),
            }
            .to_string(),
            _ => format!("the answer of {id} was not carried out: {refusal}"),
        };
        CallFailure {
            reason: refusal.rule.reason().to_owned(),
            message,
            retry_after: None,
        }
    }
}

/// The plugins the controller calls.
#[derive(Clone)]
pub struct PluginHost {
    runtime: Arc<Runtime>,
}

impl PluginHost {
    pub fn new(runtime: Arc<Runtime>) -> Self {
        PluginHost { runtime }
    }

    /// A runtime with the default limits and every built-in plugin installed.
    pub async fn with_builtins(cache_dir: Option<&Path>) -> anyhow::Result<Self> {
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: cache_dir.map(Path::to_path_buf),
            ..RuntimeConfig::default()
        })
        .map_err(|error| anyhow::anyhow!("starting the plugin runtime: {error:#}"))?;
        runtime.install_builtins().await?;
        Ok(PluginHost::new(Arc::new(runtime)))
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// `name (digest)` of every installed plugin.
    pub fn describe(&self) -> Vec<String> {
        self.runtime
            .registry()
            .list()
            .iter()
            .map(|plugin| plugin.id().to_string())
            .collect()
    }

    /// Whether `plugin` may serve under its name: a reconciler serving every kind bound to
    /// the name (`bindings`: kind to plugin name), that accepts its configuration
    /// (`validate-config`). Checked when plugins are loaded and again on every reload, so
    /// a swap never installs a plugin that would fail every call. The error says why.
    pub async fn check_fit(
        &self,
        plugin: &Plugin,
        bindings: &BTreeMap<String, String>,
        config: Option<&str>,
    ) -> Result<(), String> {
        let name = &plugin.id().name;
        for (kind, bound) in bindings {
            if bound != name {
                continue;
            }
            if plugin.role() != Role::Reconciler {
                return Err(format!(
                    "{} is a {}, but {kind} is bound to it as a reconciler",
                    plugin.id(),
                    plugin.role()
                ));
            }
            if !plugin.kinds().iter().any(|served| served == kind) {
                return Err(format!(
                    "{} serves {:?}, but {kind} is bound to it",
                    plugin.id(),
                    plugin.kinds()
                ));
            }
        }
        if let Some(config) = config {
            self.runtime
                .validate_config(plugin, config)
                .await
                .map_err(|error| error.to_string())?;
        }
        Ok(())
    }

    /// Calls the reconciler `plugin` for a parent of `kind`.
    pub async fn reconcile(
        &self,
        plugin: &str,
        kind: &str,
        input: ReconcileInput,
    ) -> Result<ReconcileOutput, CallFailure> {
        let installed =
            self.runtime
                .registry()
                .get(plugin)
                .ok_or_else(|| CallError::UnknownPlugin {
                    name: plugin.to_owned(),
                })?;
        if !installed.kinds().iter().any(|served| served == kind) {
            return Err(CallFailure {
                reason: "PluginWrongKind".to_owned(),
                message: format!(
                    "{} serves {:?}, not {kind}",
                    installed.id(),
                    installed.kinds()
                ),
                retry_after: None,
            });
        }
        Ok(self.runtime.reconcile_with(&installed, &input).await?)
    }

    /// Calls the scheduler `plugin`.
    pub async fn schedule(
        &self,
        plugin: &str,
        input: &ScheduleInput,
    ) -> Result<ScheduleOutput, CallFailure> {
        Ok(self.runtime.schedule(plugin, input).await?)
    }
}
