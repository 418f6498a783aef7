//! KubeRay-compatible `ray.io/v1` API: the RayCluster, RayJob and RayService types, their
//! validation, and the CRDs generated from them. Shared by the host and the wasm32-wasip2
//! plugins, so both read and judge objects with one definition.

pub mod cel;
pub mod constants;
pub mod crd;
mod embedded;
pub mod messages;
pub mod names;
pub mod parent_services;
pub mod quantity;
pub mod ray_resources;
pub mod raycluster;
pub mod rayjob;
pub mod rayservice;
pub mod samples;
pub mod serve_api;
pub mod validation;

pub use constants::FeatureGates;
pub use raycluster::{RayCluster, RayClusterSpec, RayClusterStatus, WorkerGroupSpec};
pub use rayjob::{RayJob, RayJobSpec, RayJobStatus};
pub use rayservice::{RayService, RayServiceSpec, RayServiceStatuses};
pub use validation::{
    ObjectError, ValidationError, ValidationErrors, validate_ray_cluster, validate_ray_job,
    validate_ray_service, validate_value,
};
