//! A loaded plugin: its identity, role, and pre-linked instance.

use std::fmt;
use std::time::Duration;

use wasmtime::Engine;
use wasmtime::component::{Component, InstancePre};

use super::bindings::autoscaler::AutoscalerPre;
use super::bindings::reconciler::ReconcilerPre;
use super::bindings::scheduler::SchedulerPre;
use super::cache::CodeSource;
use super::error::{LoadError, PluginId};
use super::sandbox::CallState;

/// The version of the `wasmray:plugin` package this host serves (see `wit/`).
pub const CONTRACT_VERSION: &str = "0.2.0";

/// The role a plugin plays: which world of the contract it exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Exports `wasmray:plugin/reconcile`.
    Reconciler,
    /// Exports `wasmray:plugin/schedule`.
    Scheduler,
    /// Exports `wasmray:plugin/autoscale`.
    Autoscaler,
}

impl Role {
    const ALL: [Role; 3] = [Role::Reconciler, Role::Scheduler, Role::Autoscaler];

    /// The exported interface that identifies the role, without its version.
    fn interface(self) -> &'static str {
        match self {
            Role::Reconciler => "wasmray:plugin/reconcile@",
            Role::Scheduler => "wasmray:plugin/schedule@",
            Role::Autoscaler => "wasmray:plugin/autoscale@",
        }
    }

    /// "reconciler", "scheduler" or "autoscaler".
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reconciler => "reconciler",
            Role::Scheduler => "scheduler",
            Role::Autoscaler => "autoscaler",
        }
    }

    /// The role of a component, from its exports.
    pub(super) fn of(
        engine: &Engine,
        component: &Component,
        plugin: &PluginId,
    ) -> Result<Role, LoadError> {
        let exports: Vec<String> = component
            .component_type()
            .exports(engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let roles: Vec<Role> = Role::ALL
            .into_iter()
            .filter(|role| {
                exports
                    .iter()
                    .any(|name| name.starts_with(role.interface()))
            })
            .collect();
        match roles.as_slice() {
            [role] => {
                let version = exports
                    .iter()
                    .find_map(|name| name.strip_prefix(role.interface()))
                    .unwrap_or_default();
                if version == CONTRACT_VERSION {
                    Ok(*role)
                } else {
                    Err(LoadError::ContractVersion {
                        plugin: plugin.clone(),
                        found: version.to_owned(),
                        served: CONTRACT_VERSION,
                    })
                }
            }
            [] => Err(LoadError::NotAPlugin {
                plugin: plugin.clone(),
                message: format!(
                    "exports none of wasmray:plugin/reconcile, schedule or autoscale (exports: {exports:?})"
                ),
            }),
            _ => Err(LoadError::NotAPlugin {
                plugin: plugin.clone(),
                message: format!("exports more than one role: {exports:?}"),
            }),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The pre-linked instance, typed by role.
pub(super) enum RolePre {
    Reconciler(ReconcilerPre<CallState>),
    Scheduler(SchedulerPre<CallState>),
    Autoscaler(AutoscalerPre<CallState>),
}

impl RolePre {
    pub(super) fn new(role: Role, pre: InstancePre<CallState>) -> wasmtime::Result<RolePre> {
        Ok(match role {
            Role::Reconciler => RolePre::Reconciler(ReconcilerPre::new(pre)?),
            Role::Scheduler => RolePre::Scheduler(SchedulerPre::new(pre)?),
            Role::Autoscaler => RolePre::Autoscaler(AutoscalerPre::new(pre)?),
        })
    }

    /// The untyped pre-linked instance, whatever the role.
    pub(super) fn instance_pre(&self) -> &InstancePre<CallState> {
        match self {
            RolePre::Reconciler(pre) => pre.instance_pre(),
            RolePre::Scheduler(pre) => pre.instance_pre(),
            RolePre::Autoscaler(pre) => pre.instance_pre(),
        }
    }
}

/// Limits of every call into one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    /// Wall-clock time a call may take.
    pub deadline: Duration,
    /// Linear memory a call may use, in bytes.
    pub memory_limit: usize,
}

/// A compiled, linked plugin, ready to be called. Cheap to share (`Arc<Plugin>`); every
/// call gets a fresh store and instance.
pub struct Plugin {
    pub(super) id: PluginId,
    pub(super) role: Role,
    pub(super) pre: RolePre,
    pub(super) kinds: Vec<String>,
    pub(super) limits: CallLimits,
    pub(super) code_source: CodeSource,
}

impl Plugin {
    /// Name and digest.
    pub fn id(&self) -> &PluginId {
        &self.id
    }

    /// The role it plays.
    pub fn role(&self) -> Role {
        self.role
    }

    /// For a reconciler, the kinds it serves (e.g. `["RayCluster"]`); empty otherwise.
    pub fn kinds(&self) -> &[String] {
        &self.kinds
    }

    /// The limits its calls run under.
    pub fn limits(&self) -> CallLimits {
        self.limits
    }

    /// Where its compiled code came from when it was loaded.
    pub fn code_source(&self) -> CodeSource {
        self.code_source
    }
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("kinds", &self.kinds)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}
