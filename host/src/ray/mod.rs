//! Talking to Ray: the dashboard's REST API ([`client`]) and where a cluster's dashboard
//! is ([`address`]). The host makes every Ray call; plugins ask for them in their answers
//! and get the results as observations (see [`crate::controller::ray_io`]).

pub mod address;
pub mod client;

pub use address::{DASHBOARD_ADDRESS_ANNOTATION, DashboardTarget, HeadAddress, dashboard_target};
pub use client::{
    DashboardAddress, DashboardClient, JobDetails, JobSubmission, RayError, RayVersion,
    SubmitOutcome,
};
