//! Typed errors of the plugin runtime. Every error about a plugin names it and its digest.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A plugin's identity: the name it is registered under and the sha256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PluginId {
    /// Registered name, e.g. "raycluster".
    pub name: String,
    /// `sha256:<64 hex digits>` of the component bytes.
    pub digest: String,
}

impl fmt::Display for PluginId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plugin {:?} ({})", self.name, self.digest)
    }
}

/// Why loading a plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("plugin {name:?}: cannot read {}: {source}", path.display())]
    Read {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The bytes are not a component wasmtime can compile.
    #[error("{plugin}: does not compile: {message}")]
    Compile { plugin: PluginId, message: String },
    /// The component exports none of the contract's roles, or more than one.
    #[error("{plugin}: {message}")]
    NotAPlugin { plugin: PluginId, message: String },
    /// The component was built against another version of the contract.
    #[error(
        "{plugin}: built against wasmray:plugin@{found} as a {role}, but this host serves a {role} of {served}; rebuild it with the plugin SDK of a served version"
    )]
    ContractVersion {
        plugin: PluginId,
        role: &'static str,
        found: String,
        served: String,
    },
    /// The plugin refused its configuration (`validate-config`).
    #[error("{plugin}: refuses its configuration: {reason}: {message}")]
    Config {
        plugin: PluginId,
        reason: String,
        message: String,
    },
    /// The component imports something the sandbox does not provide (e.g. a socket
    /// interface it cannot have, or an incompatible contract version).
    #[error("{plugin}: cannot be linked against the sandbox: {message}")]
    Link { plugin: PluginId, message: String },
    /// The plugin failed when asked what it serves.
    #[error("{plugin}: failed to describe itself: {source}")]
    Describe {
        plugin: PluginId,
        source: Box<CallError>,
    },
}

/// Why one call into a plugin failed. The host keeps serving; the caller records the
/// error on the object.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No plugin is registered under this name.
    #[error("no plugin is registered under the name {name:?}")]
    UnknownPlugin { name: String },
    /// The plugin does not implement the role that was called.
    #[error("{plugin} is a {actual} plugin, not a {expected} plugin")]
    WrongRole {
        plugin: PluginId,
        expected: &'static str,
        actual: &'static str,
    },
    /// The plugin trapped (a panic, an `unreachable`, an out-of-bounds access...).
    /// `message` carries the trap and what the plugin wrote to stderr (the panic message).
    #[error("{plugin} trapped: {message}")]
    Trap { plugin: PluginId, message: String },
    /// The call ran past its deadline and was interrupted.
    #[error("{plugin} exceeded its deadline of {deadline:?}")]
    DeadlineExceeded {
        plugin: PluginId,
        deadline: Duration,
    },
    /// The plugin tried to grow its memory past the cap.
    #[error("{plugin} exceeded its memory limit of {limit_bytes} bytes")]
    MemoryLimit {
        plugin: PluginId,
        limit_bytes: usize,
    },
    /// The plugin answered something that does not fit the contract.
    #[error("{plugin} returned malformed output: {what}")]
    MalformedOutput { plugin: PluginId, what: String },
    /// The plugin declined to decide and said why (its `plugin-error`).
    #[error("{plugin} refused: {reason}: {message}")]
    Refused {
        plugin: PluginId,
        reason: String,
        message: String,
        retry_after: Option<Duration>,
    },
    /// Instantiation failed (e.g. the instance pool is exhausted).
    #[error("{plugin} could not be instantiated: {message}")]
    Instantiate { plugin: PluginId, message: String },
}

impl CallError {
    /// The plugin the error is about, if any.
    pub fn plugin(&self) -> Option<&PluginId> {
        match self {
            CallError::UnknownPlugin { .. } => None,
            CallError::WrongRole { plugin, .. }
            | CallError::Trap { plugin, .. }
            | CallError::DeadlineExceeded { plugin, .. }
            | CallError::MemoryLimit { plugin, .. }
            | CallError::MalformedOutput { plugin, .. }
            | CallError::Refused { plugin, .. }
            | CallError::Instantiate { plugin, .. } => Some(plugin),
        }
    }

    /// A short CamelCase reason for conditions, events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            CallError::UnknownPlugin { .. } => "PluginNotFound",
            CallError::WrongRole { .. } => "PluginWrongRole",
            CallError::Trap { .. } => "PluginTrapped",
            CallError::DeadlineExceeded { .. } => "PluginDeadlineExceeded",
            CallError::MemoryLimit { .. } => "PluginMemoryLimit",
            CallError::MalformedOutput { .. } => "PluginMalformedOutput",
            CallError::Refused { .. } => "PluginRefused",
            CallError::Instantiate { .. } => "PluginInstantiationFailed",
        }
    }
}
