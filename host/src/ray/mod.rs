//! Talking to Ray: the dashboard's REST API ([`client`]), the GCS's autoscaler state
//! service ([`gcs`]) and where a cluster's head is ([`address`]). The host makes every Ray
//! call; plugins ask for them in their answers and get the results as observations (see
//! [`crate::controller::ray_io`]), or decide on what the host read (the autoscaler role).

pub mod address;
pub mod client;
pub mod gcs;

pub use address::{
    DASHBOARD_ADDRESS_ANNOTATION, DashboardTarget, GcsTarget, HeadAddress, dashboard_target,
    gcs_target,
};
pub use client::{
    DashboardAddress, DashboardClient, JobDetails, JobSubmission, RayError, RayVersion,
    SubmitOutcome,
};
