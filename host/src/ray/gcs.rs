//! A client of a cluster's GCS `AutoscalerStateService` (gRPC on the GCS port): the
//! demand the autoscaler reads, the drains it asks for and the decisions it reports so that
//! `ray status` shows them. One HTTP/2 connection per GCS, kept between calls.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use wasmray_ray_proto::autoscaler::autoscaler_state_service_client::AutoscalerStateServiceClient;
use wasmray_ray_proto::autoscaler::{
    AutoscalingState, ClusterResourceState, DrainNodeReason, DrainNodeRequest,
    GetClusterResourceStateRequest, ReportAutoscalingStateRequest,
};

/// Largest reply accepted: a cluster of thousands of nodes with labels stays well below.
const MAX_REPLY_BYTES: usize = 64 << 20;

/// A failed GCS call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GcsError {
    #[error("invalid GCS address {address:?}: {message}")]
    InvalidAddress { address: String, message: String },
    #[error("cannot reach the GCS at {address}: {message}")]
    Unreachable { address: String, message: String },
    #[error("the GCS at {address} refused the token: {message}")]
    Unauthenticated { address: String, message: String },
    /// The GCS does not serve the autoscaler state service (a Ray without autoscaler v2's
    /// GCS side) or answered with bytes that are not its messages.
    #[error("the GCS at {address} does not speak Ray's autoscaler state service: {message}")]
    Incompatible { address: String, message: String },
    #[error("the GCS at {address} answered {code:?}: {message}")]
    Status {
        address: String,
        code: Code,
        message: String,
    },
}

/// What Ray said to a drain request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainOutcome {
    Accepted,
    /// Ray refuses (e.g. the node runs something); its reason.
    Rejected(String),
}

/// Clients of many clusters' GCSes.
pub struct GcsClient {
    timeout: Duration,
    channels: Mutex<HashMap<String, Channel>>,
}

impl GcsClient {
    /// Deadline of each call.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    pub fn new(timeout: Duration) -> Self {
        GcsClient {
            timeout,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// The channel to `address` (`host:port`), made on first use.
    fn channel(&self, address: &str) -> Result<Channel, GcsError> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|error| GcsError::InvalidAddress {
                address: address.to_owned(),
                message: error.to_string(),
            })?
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Drops the connection to `address` (its cluster is gone or moved).
    pub fn forget(&self, address: &str) {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(address);
    }

    fn client(&self, address: &str) -> Result<AutoscalerStateServiceClient<Channel>, GcsError> {
        Ok(AutoscalerStateServiceClient::new(self.channel(address)?)
            .max_decoding_message_size(MAX_REPLY_BYTES))
    }

    /// Ray's view of the cluster: nodes, pending requests, placement groups, constraints.
    pub async fn cluster_state(
        &self,
        address: &str,
        token: Option<&str>,
    ) -> Result<ClusterResourceState, GcsError> {
        let request = with_token(GetClusterResourceStateRequest::default(), token)?;
        let reply = self
            .client(address)?
            .get_cluster_resource_state(request)
            .await
            .map_err(|status| error(address, status))?;
        reply
            .into_inner()
            .cluster_resource_state
            .ok_or_else(|| GcsError::Incompatible {
                address: address.to_owned(),
                message: "the reply has no cluster_resource_state".to_owned(),
            })
    }

    /// Asks Ray to drain node `node_id` (raw id bytes) because it is idle, by `deadline_ms`
    /// (milliseconds since the epoch; 0 for none).
    pub async fn drain_idle_node(
        &self,
        address: &str,
        token: Option<&str>,
        node_id: &[u8],
        why: &str,
        deadline_ms: i64,
    ) -> Result<DrainOutcome, GcsError> {
        let request = with_token(
            DrainNodeRequest {
                node_id: node_id.to_vec(),
                reason: DrainNodeReason::IdleTermination.into(),
                reason_message: why.to_owned(),
                deadline_timestamp_ms: deadline_ms,
            },
            token,
        )?;
        let reply = self
            .client(address)?
            .drain_node(request)
            .await
            .map_err(|status| error(address, status))?
            .into_inner();
        Ok(if reply.is_accepted {
            DrainOutcome::Accepted
        } else {
            DrainOutcome::Rejected(reply.rejection_reason_message)
        })
    }

    /// Tells Ray what the autoscaler decided (`ray status` shows it).
    pub async fn report(
        &self,
        address: &str,
        token: Option<&str>,
        state: AutoscalingState,
    ) -> Result<(), GcsError> {
        let request = with_token(
            ReportAutoscalingStateRequest {
                autoscaling_state: Some(state),
            },
            token,
        )?;
        self.client(address)?
            .report_autoscaling_state(request)
            .await
            .map_err(|status| error(address, status))?;
        Ok(())
    }
}

/// A request with `authorization: Bearer <token>` when the cluster uses token auth.
fn with_token<T>(message: T, token: Option<&str>) -> Result<tonic::Request<T>, GcsError> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        let value: MetadataValue<_> =
            format!("Bearer {token}")
                .parse()
                .map_err(|_| GcsError::Unauthenticated {
                    address: String::new(),
                    message: "the token is not a valid header value".to_owned(),
                })?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(request)
}

fn error(address: &str, status: tonic::Status) -> GcsError {
    let address = address.to_owned();
    let message = status.message().to_owned();
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
            GcsError::Unreachable { address, message }
        }
        Code::Unauthenticated | Code::PermissionDenied => {
            GcsError::Unauthenticated { address, message }
        }
        Code::Unimplemented => GcsError::Incompatible { address, message },
        // tonic's own answer to bytes that are not the expected message.
        Code::Internal if message.contains("decode") => GcsError::Incompatible { address, message },
        code => GcsError::Status {
            address,
            code,
            message,
        },
    }
}
