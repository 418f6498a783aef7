//! WasmRay: a KubeRay-compatible operator whose decisions run in sandboxed WebAssembly
//! components.
//!
//! [`runtime`] loads plugins (components of the `wasmray:plugin` WIT package) and calls
//! them under a deadline and a memory cap; [`builtin`] lists the plugins embedded in
//! this binary; [`controller`] runs the controllers; [`ray`] talks to Ray's dashboard;
//! [`cli`] is the `wasmray` command around them ([`client`], [`health`] endpoints,
//! [`metrics`], [`leader`] election, plugin file [`reload`]).

pub mod builtin;
pub mod cli;
pub mod client;
pub mod controller;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod ray;
pub mod reload;
pub mod runtime;
