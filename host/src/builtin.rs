//! Plugins compiled by `build.rs` from the workspace and embedded in the binary.

/// A plugin shipped inside the operator binary.
#[derive(Debug, Clone, Copy)]
pub struct BuiltinPlugin {
    /// The name it is registered under, e.g. "raycluster".
    pub name: &'static str,
    /// The component bytes.
    pub bytes: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// Plugins embedded in the operator binary; [`crate::runtime::Runtime::install_builtins`]
/// installs them.
pub const BUILTIN_PLUGINS: &[BuiltinPlugin] = SHIPPED_PLUGINS;

/// Components built from the workspace for tests (examples, hostile plugins); only their
/// paths are compiled in, never their bytes, so they are not part of the operator binary.
pub mod test_plugins {
    include!(concat!(env!("OUT_DIR"), "/test_plugins.rs"));
}
