//! WasmRay: a KubeRay-compatible operator whose decisions run in sandboxed WebAssembly
//! components.
//!
//! [`runtime`] loads plugins (components of the `wasmray:plugin` WIT package) and calls
//! them under a deadline and a memory cap; [`builtin`] lists the plugins embedded in
//! this binary.

pub mod builtin;
pub mod controller;
pub mod runtime;
