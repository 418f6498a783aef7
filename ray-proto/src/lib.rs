//! Ray's GCS `AutoscalerStateService` as WasmRay speaks it: the messages and the tonic
//! client (the host reads demand, drains nodes and reports its decisions) and server (a
//! stand-in GCS in benchmarks and tests). Generated at build time from `proto/`, which
//! holds only what WasmRay uses, numbered as Ray 2.60.0 numbers it.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// `ray.rpc`: the shared types the autoscaler messages use.
pub mod rpc {
    tonic::include_proto!("ray.rpc");

    /// `ray.rpc.autoscaler`.
    pub mod autoscaler {
        tonic::include_proto!("ray.rpc.autoscaler");
    }
}

pub use rpc::autoscaler;
