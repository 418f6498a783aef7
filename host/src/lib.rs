//! WasmRay: a KubeRay-compatible operator whose decisions run in sandboxed WebAssembly
//! components.
//!
//! [`runtime`] loads plugins (components of the `wasmray:plugin` WIT package) and calls
//! them under a deadline and a memory cap; [`builtin`] lists the plugins embedded in
//! this binary; [`controller`] runs the controllers; [`ray`] talks to Ray's dashboard.

pub mod builtin;
pub mod controller;
pub mod ray;
pub mod runtime;
