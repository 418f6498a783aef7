//! A client of the Ray dashboard's REST API (Jobs, Serve, version), as Ray 2.60 serves it.
//! Plain HTTP/1 on hyper; every request has a deadline; errors say what Ray answered.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The header KubeRay sends the cluster's token in (proxies leave it alone, unlike
/// `Authorization`); Ray's dashboard accepts both.
pub const AUTH_HEADER: &str = "x-ray-authorization";
/// What Ray's 500 answer to a submit says when the submission id exists already.
const DUPLICATE_SUBMISSION_TEXT: &str = "Please use a different submission_id";
/// Longest answer read: a job's whole log comes in one JSON body.
const MAX_BODY_BYTES: usize = 64 << 20;
/// Longest part of an error body kept in an error (Ray sends Python tracebacks).
const MAX_ERROR_BODY_CHARS: usize = 2000;

/// A failed dashboard call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RayError {
    #[error("invalid Ray dashboard address {address:?}: {message}")]
    InvalidAddress { address: String, message: String },
    #[error("cannot reach the Ray dashboard at {address}: {message}")]
    Unreachable { address: String, message: String },
    #[error("the Ray dashboard at {address} did not answer {method} {path} within {after:?}")]
    Timeout {
        address: String,
        method: Method,
        path: String,
        after: Duration,
    },
    /// Ray answered 404: the job (or route) does not exist.
    #[error("Ray answered 404 to {method} {path}: {body}")]
    NotFound {
        method: Method,
        path: String,
        body: String,
    },
    /// Ray answered with another error status; its body is usually a Python message.
    #[error("Ray answered {status} to {method} {path}: {body}")]
    Status {
        status: u16,
        method: Method,
        path: String,
        body: String,
    },
    #[error("Ray's answer to {method} {path} is not what Ray documents: {message}")]
    Decode {
        method: Method,
        path: String,
        message: String,
    },
}

impl RayError {
    /// Whether Ray answered that the thing asked about does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RayError::NotFound { .. })
    }
}

/// A job to submit (`POST /api/jobs/`). Only fields Ray 2.60 accepts; unset ones are left
/// out, as Ray refuses unknown keys and nulls for some.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobSubmission {
    pub entrypoint: String,
    pub submission_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_env: Option<Value>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint_num_cpus: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint_num_gpus: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint_memory: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint_resources: Option<Value>,
}

/// What a submit achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// Ray accepted the job; its submission id.
    Submitted { submission_id: String },
    /// Ray already has a job with this submission id (Ray's text): it was submitted before,
    /// which makes a repeated submit harmless.
    AlreadySubmitted { message: String },
}

/// Ray's view of a job (`JobDetails`); the fields an operator reads.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct JobDetails {
    /// `SUBMISSION` or `DRIVER`.
    #[serde(rename = "type")]
    pub job_type: Option<String>,
    /// Ray's core job id (hex), null until the driver starts.
    pub job_id: Option<String>,
    pub submission_id: Option<String>,
    /// `PENDING`, `RUNNING`, `STOPPED`, `SUCCEEDED` or `FAILED`.
    pub status: String,
    pub entrypoint: Option<String>,
    pub message: Option<String>,
    pub error_type: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub start_time: Option<u64>,
    pub end_time: Option<u64>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub runtime_env: Option<Value>,
    pub driver_exit_code: Option<i64>,
}

impl JobDetails {
    /// Whether Ray will not change the job's status any more.
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "STOPPED" | "SUCCEEDED" | "FAILED")
    }
}

/// `GET /api/version`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RayVersion {
    /// The dashboard API version, e.g. "4".
    pub version: String,
    pub ray_version: String,
    pub ray_commit: String,
    pub session_name: String,
}

/// Where one cluster's dashboard is and how to authenticate to it.
#[derive(Clone, PartialEq, Eq)]
pub struct DashboardAddress {
    /// `http://host:port`, without a trailing slash.
    pub base: String,
    /// The cluster's token when it uses token auth.
    pub token: Option<String>,
}

impl std::fmt::Debug for DashboardAddress {
    // The token is a credential: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardAddress")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl DashboardAddress {
    /// An address without a token. `base` may end with a slash.
    pub fn new(base: impl Into<String>) -> Self {
        let base: String = base.into();
        DashboardAddress {
            base: base.trim_end_matches('/').to_owned(),
            token: None,
        }
    }

    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }
}

/// The dashboard client: one connection pool shared by every cluster's dashboard.
#[derive(Clone, Debug)]
pub struct DashboardClient {
    http: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl DashboardClient {
    /// KubeRay gives each dashboard call 2 s; job logs can be larger, so the deadline is a
    /// setting.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

    /// A client whose every request (connect, send, read the whole answer) ends within
    /// `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        DashboardClient { http, timeout }
    }

    /// `GET /api/version`: whether the dashboard answers, and which Ray it is.
    pub async fn version(&self, at: &DashboardAddress) -> Result<RayVersion, RayError> {
        self.call_json(at, Method::GET, "/api/version", None).await
    }

    /// `POST /api/jobs/`. A submission id Ray already knows is [`SubmitOutcome::AlreadySubmitted`].
    pub async fn submit_job(
        &self,
        at: &DashboardAddress,
        job: &JobSubmission,
    ) -> Result<SubmitOutcome, RayError> {
        let body = serde_json::to_vec(job).map_err(|error| RayError::Decode {
            method: Method::POST,
            path: "/api/jobs/".into(),
            message: format!("cannot encode the submission: {error}"),
        })?;
        #[derive(Deserialize)]
        struct Submitted {
            submission_id: String,
        }
        match self
            .call_json::<Submitted>(at, Method::POST, "/api/jobs/", Some(body))
            .await
        {
            Ok(answer) => Ok(SubmitOutcome::Submitted {
                submission_id: answer.submission_id,
            }),
            Err(RayError::Status { body, .. }) if body.contains(DUPLICATE_SUBMISSION_TEXT) => {
                Ok(SubmitOutcome::AlreadySubmitted { message: body })
            }
            Err(error) => Err(error),
        }
    }

    /// `GET /api/jobs/<id>`; [`RayError::NotFound`] when Ray does not know the id.
    pub async fn job(
        &self,
        at: &DashboardAddress,
        submission_id: &str,
    ) -> Result<JobDetails, RayError> {
        let path = job_path(submission_id, "")?;
        self.call_json(at, Method::GET, &path, None).await
    }

    /// `GET /api/jobs/`: submitted jobs and drivers Ray knows.
    pub async fn list_jobs(&self, at: &DashboardAddress) -> Result<Vec<JobDetails>, RayError> {
        self.call_json(at, Method::GET, "/api/jobs/", None).await
    }

    /// `POST /api/jobs/<id>/stop`: true if Ray stopped it, false if it had ended already.
    pub async fn stop_job(
        &self,
        at: &DashboardAddress,
        submission_id: &str,
    ) -> Result<bool, RayError> {
        #[derive(Deserialize)]
        struct Stopped {
            stopped: bool,
        }
        let path = job_path(submission_id, "/stop")?;
        let answer: Stopped = self.call_json(at, Method::POST, &path, None).await?;
        Ok(answer.stopped)
    }

    /// `DELETE /api/jobs/<id>`: removes an ended job's info and logs (Ray refuses with 500
    /// while the job runs).
    pub async fn delete_job(
        &self,
        at: &DashboardAddress,
        submission_id: &str,
    ) -> Result<bool, RayError> {
        #[derive(Deserialize)]
        struct Deleted {
            deleted: bool,
        }
        let path = job_path(submission_id, "")?;
        let answer: Deleted = self.call_json(at, Method::DELETE, &path, None).await?;
        Ok(answer.deleted)
    }

    /// `GET /api/jobs/<id>/logs`: the job's whole log so far.
    pub async fn job_logs(
        &self,
        at: &DashboardAddress,
        submission_id: &str,
    ) -> Result<String, RayError> {
        #[derive(Deserialize)]
        struct Logs {
            logs: String,
        }
        let path = job_path(submission_id, "/logs")?;
        let answer: Logs = self.call_json(at, Method::GET, &path, None).await?;
        Ok(answer.logs)
    }

    /// `GET /api/serve/applications/?api_type=declarative`: Serve's status document.
    pub async fn serve_applications(&self, at: &DashboardAddress) -> Result<Value, RayError> {
        self.call_json(
            at,
            Method::GET,
            "/api/serve/applications/?api_type=declarative",
            None,
        )
        .await
    }

    /// `PUT /api/serve/applications/` with a whole Serve config; Ray answers with an empty
    /// body.
    pub async fn put_serve_config(
        &self,
        at: &DashboardAddress,
        config: &Value,
    ) -> Result<(), RayError> {
        let body = serde_json::to_vec(config).map_err(|error| RayError::Decode {
            method: Method::PUT,
            path: "/api/serve/applications/".into(),
            message: format!("cannot encode the Serve config: {error}"),
        })?;
        self.call(at, Method::PUT, "/api/serve/applications/", Some(body))
            .await
            .map(drop)
    }

    async fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        at: &DashboardAddress,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, RayError> {
        let answer = self.call(at, method.clone(), path, body).await?;
        serde_json::from_slice(&answer).map_err(|error| RayError::Decode {
            method,
            path: path.to_owned(),
            message: format!("{error}; body: {}", excerpt(&answer)),
        })
    }

    /// One request; a success status gives the body, any other an error carrying it.
    async fn call(
        &self,
        at: &DashboardAddress,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, RayError> {
        let uri: Uri =
            format!("{}{path}", at.base)
                .parse()
                .map_err(|error: http::uri::InvalidUri| RayError::InvalidAddress {
                    address: at.base.clone(),
                    message: error.to_string(),
                })?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(RayError::InvalidAddress {
                address: at.base.clone(),
                message: "expected http://host:port (TLS is not supported yet)".into(),
            });
        }
        let mut request = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(header::USER_AGENT, crate::controller::USER_AGENT);
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(token) = &at.token {
            request = request.header(AUTH_HEADER, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|error| RayError::InvalidAddress {
                address: at.base.clone(),
                message: error.to_string(),
            })?;
        let exchange = async {
            let response =
                self.http
                    .request(request)
                    .await
                    .map_err(|error| RayError::Unreachable {
                        address: at.base.clone(),
                        message: error_chain(&error),
                    })?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|error| RayError::Unreachable {
                    address: at.base.clone(),
                    message: format!("reading the answer: {error}"),
                })?
                .to_bytes();
            Ok::<_, RayError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| RayError::Timeout {
                address: at.base.clone(),
                method: method.clone(),
                path: path.to_owned(),
                after: self.timeout,
            })??;
        if status.is_success() {
            return Ok(bytes);
        }
        let body = excerpt(&bytes);
        let path = path.to_owned();
        Err(if status == StatusCode::NOT_FOUND {
            RayError::NotFound { method, path, body }
        } else {
            RayError::Status {
                status: status.as_u16(),
                method,
                path,
                body,
            }
        })
    }
}

impl Default for DashboardClient {
    fn default() -> Self {
        DashboardClient::new(Self::DEFAULT_TIMEOUT)
    }
}

/// `/api/jobs/<id><suffix>`; an id that is not a plain path segment is refused rather
/// than sent somewhere else.
fn job_path(submission_id: &str, suffix: &str) -> Result<String, RayError> {
    let plain = !submission_id.is_empty()
        && submission_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !plain {
        return Err(RayError::InvalidAddress {
            address: format!("/api/jobs/{submission_id}"),
            message: "a submission id holds only letters, digits, '-', '_' and '.'".into(),
        });
    }
    Ok(format!("/api/jobs/{submission_id}{suffix}"))
}

/// The body as text, trimmed to a readable length.
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().nth(MAX_ERROR_BODY_CHARS) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

/// An error and its sources ("client error (Connect): tcp connect error: Connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submissions_leave_out_unset_fields() {
        let job = JobSubmission {
            entrypoint: "python -c 'print(1)'".into(),
            submission_id: "rj-bcdfg".into(),
            entrypoint_num_cpus: Some(0.5),
            ..JobSubmission::default()
        };
        assert_eq!(
            serde_json::to_value(&job).unwrap(),
            serde_json::json!({"entrypoint": "python -c 'print(1)'", "submission_id": "rj-bcdfg", "entrypoint_num_cpus": 0.5})
        );
    }

    #[test]
    fn job_ids_stay_one_path_segment() {
        assert_eq!(
            job_path("rj-x_1.2", "/stop").unwrap(),
            "/api/jobs/rj-x_1.2/stop"
        );
        for bad in ["", "../version", "a/b", "a?b", "a b"] {
            assert!(job_path(bad, "").is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_stay_out_of_debug_output() {
        let at = DashboardAddress::new("http://127.0.0.1:8265/").with_token(Some("s3cret".into()));
        assert_eq!(at.base, "http://127.0.0.1:8265");
        assert!(!format!("{at:?}").contains("s3cret"));
    }

    #[test]
    fn error_bodies_are_trimmed() {
        let long = "x".repeat(MAX_ERROR_BODY_CHARS + 10);
        assert_eq!(excerpt(long.as_bytes()).len(), MAX_ERROR_BODY_CHARS + 3);
        assert_eq!(excerpt(b"  short \n"), "short");
    }
}
