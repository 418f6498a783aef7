//! A loaded plugin: its identity, role, and pre-linked instance.

use std::fmt;
use std::time::Duration;

use wasmtime::Engine;
use wasmtime::component::{Component, InstancePre};

use super::bindings::autoscaler::AutoscalerPre;
use super::bindings::reconciler::ReconcilerPre;
use super::bindings::scheduler::SchedulerPre;
use super::bindings::v0_2::ReconcilerPre as ReconcilerPre0_2;
use super::code_cache::CodeSource;
use super::error::{LoadError, PluginId};
use super::sandbox::CallState;

/// The newest version of the `wasmray:plugin` package, the one the SDK builds against
/// (see `wit/`).
pub const CONTRACT_VERSION: &str = "0.3.0";
/// Older versions still served, and for which roles.
const OLDER_CONTRACTS: &[(&str, Role)] = &[("0.2.0", Role::Reconciler)];

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

    /// The role of a component and the contract version it was built against, from its
    /// exports.
    pub(super) fn of(
        engine: &Engine,
        component: &Component,
        plugin: &PluginId,
    ) -> Result<(Role, &'static str), LoadError> {
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
                role.served(version)
                    .map(|served| (*role, served))
                    .ok_or_else(|| LoadError::ContractVersion {
                        plugin: plugin.clone(),
                        role: role.as_str(),
                        found: version.to_owned(),
                        served: role.served_versions().join(" or "),
                    })
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

    /// The served contract version equal to `version`, for this role.
    fn served(self, version: &str) -> Option<&'static str> {
        self.served_versions()
            .into_iter()
            .find(|served| *served == version)
    }

    /// Every contract version served for this role, newest first.
    fn served_versions(self) -> Vec<&'static str> {
        std::iter::once(CONTRACT_VERSION)
            .chain(
                OLDER_CONTRACTS
                    .iter()
                    .filter(|(_, role)| *role == self)
                    .map(|(version, _)| *version),
            )
            .collect()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The pre-linked instance, typed by role and contract version.
pub(super) enum RolePre {
    Reconciler(ReconcilerPre<CallState>),
    /// A reconciler built against contract 0.2.0 (`runtime/contract_0_2.rs`).
    Reconciler0_2(ReconcilerPre0_2<CallState>),
    Scheduler(SchedulerPre<CallState>),
    Autoscaler(AutoscalerPre<CallState>),
}

impl RolePre {
    pub(super) fn new(
        role: Role,
        contract: &str,
        pre: InstancePre<CallState>,
    ) -> wasmtime::Result<RolePre> {
        Ok(match role {
            Role::Reconciler if contract != CONTRACT_VERSION => {
                RolePre::Reconciler0_2(ReconcilerPre0_2::new(pre)?)
            }
            Role::Reconciler => RolePre::Reconciler(ReconcilerPre::new(pre)?),
            Role::Scheduler => RolePre::Scheduler(SchedulerPre::new(pre)?),
            Role::Autoscaler => RolePre::Autoscaler(AutoscalerPre::new(pre)?),
        })
    }

    /// The untyped pre-linked instance, whatever the role.
    pub(super) fn instance_pre(&self) -> &InstancePre<CallState> {
        match self {
            RolePre::Reconciler(pre) => pre.instance_pre(),
            RolePre::Reconciler0_2(pre) => pre.instance_pre(),
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
    /// The `wasmray:plugin` version it was built against.
    pub(super) contract: &'static str,
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

    /// The `wasmray:plugin` version it was built against, e.g. "0.3.0".
    pub fn contract(&self) -> &'static str {
        self.contract
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
            .field("contract", &self.contract)
            .field("kinds", &self.kinds)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}
