//! The operator's HTTP endpoints: `/metrics` (Prometheus), `/healthz` (the process serves)
//! and `/readyz` (the controllers' caches are synced).
//!
//! Readiness: every controller scope registers its caches with [`Readiness::register`]
//! before its first await and reports them synced once the child caches and the parent
//! cache hold a full list. `/readyz` answers 200 only when at least one scope registered
//! and none is pending. A standby replica (leader election on, lease held elsewhere)
//! starts no caches and is ready as a standby: it is healthy and able to take over, and a
//! Deployment with several replicas must be able to finish its rollout.
//!
//! Three fixed GET paths on hyper, which the Ray dashboard client already needs: axum
//! (three more crates) would save about twenty lines and turn the direct `answer` tests
//! into requests through a router.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::metrics::{self, Metrics};

/// Where the process is in leader election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// No election: the controllers start at once.
    Sole = 0,
    /// Waiting for the lease; no caches, no writes.
    Standby = 1,
    /// Holds the lease and runs the controllers.
    Leader = 2,
}

/// Whether the controllers can serve.
#[derive(Debug)]
pub struct Readiness {
    /// Cache scopes not yet synced, by name, with how many registered under that name.
    pending: Mutex<BTreeMap<String, usize>>,
    registered: AtomicBool,
    role: AtomicU8,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            pending: Mutex::new(BTreeMap::new()),
            registered: AtomicBool::new(false),
            role: AtomicU8::new(Role::Sole as u8),
        }
    }
}

/// A registered cache scope; [`SyncToken::synced`] reports it synced. Dropping it unsynced
/// (the controller stopped) leaves the scope pending.
#[must_use = "report the scope synced with SyncToken::synced"]
pub struct SyncToken {
    readiness: Arc<Readiness>,
    name: String,
}

impl SyncToken {
    pub fn synced(self) {
        let mut pending = self.readiness.lock_pending();
        if let Some(count) = pending.get_mut(&self.name) {
            *count -= 1;
            if *count == 0 {
                pending.remove(&self.name);
            }
        }
    }
}

/// What `/readyz` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyState {
    Ready,
    Standby,
    /// Not ready; the reason names the pending caches.
    NotReady(String),
}

impl Readiness {
    fn lock_pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, usize>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a cache scope (e.g. `RayCluster in all namespaces`) that must sync before
    /// the process is ready.
    pub fn register(self: &Arc<Self>, name: impl Into<String>) -> SyncToken {
        let name = name.into();
        *self.lock_pending().entry(name.clone()).or_insert(0) += 1;
        self.registered.store(true, Ordering::SeqCst);
        SyncToken {
            readiness: Arc::clone(self),
            name,
        }
    }

    pub fn set_role(&self, role: Role) {
        self.role.store(role as u8, Ordering::SeqCst);
    }

    pub fn role(&self) -> Role {
        match self.role.load(Ordering::SeqCst) {
            1 => Role::Standby,
            2 => Role::Leader,
            _ => Role::Sole,
        }
    }

    pub fn state(&self) -> ReadyState {
        if self.role() == Role::Standby {
            return ReadyState::Standby;
        }
        let pending = self.lock_pending();
        if !self.registered.load(Ordering::SeqCst) {
            return ReadyState::NotReady("the controllers have not started".to_owned());
        }
        if pending.is_empty() {
            ReadyState::Ready
        } else {
            let names: Vec<&str> = pending.keys().map(String::as_str).collect();
            ReadyState::NotReady(format!("caches not synced: {}", names.join(", ")))
        }
    }
}

/// What the endpoints read.
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

const TEXT: &str = "text/plain; charset=utf-8";

impl Endpoints {
    /// Answers one request.
    pub fn answer(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        if method != Method::GET && method != Method::HEAD {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                TEXT,
                "only GET\n".to_owned(),
            );
        }
        match path {
            "/metrics" => match self.metrics.encode() {
                Ok(text) => reply(StatusCode::OK, metrics::CONTENT_TYPE, text),
                Err(error) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    TEXT,
                    format!("encoding the metrics failed: {error}\n"),
                ),
            },
            "/healthz" => reply(StatusCode::OK, TEXT, "ok\n".to_owned()),
            "/readyz" => match self.readiness.state() {
                ReadyState::Ready => reply(StatusCode::OK, TEXT, "ok\n".to_owned()),
                ReadyState::Standby => reply(
                    StatusCode::OK,
                    TEXT,
                    "standby: another replica holds the leader lease\n".to_owned(),
                ),
                ReadyState::NotReady(reason) => {
                    reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{reason}\n"))
                }
            },
            _ => reply(StatusCode::NOT_FOUND, TEXT, format!("no endpoint {path}\n")),
        }
    }
}

/// Parses a listen address as KubeRay's flags take it: `:8080` (all interfaces),
/// `host:port`, or `0` to disable the endpoint.
pub fn parse_listen_address(text: &str) -> Result<Option<SocketAddr>, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(None);
    }
    let full = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_owned()
    };
    full.parse()
        .map(Some)
        .map_err(|_| format!("{text:?} is not an address like :8080, 127.0.0.1:8080 or 0"))
}

/// Serves the endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, endpoints: Endpoints) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accepting an HTTP connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let response = endpoints.answer(request.method(), request.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_registered_scope_synced() {
        let readiness = Arc::new(Readiness::default());
        assert!(matches!(readiness.state(), ReadyState::NotReady(_)));
        let clusters = readiness.register("RayCluster in all namespaces");
        let jobs = readiness.register("RayJob in all namespaces");
        clusters.synced();
        assert_eq!(
            readiness.state(),
            ReadyState::NotReady("caches not synced: RayJob in all namespaces".to_owned())
        );
        jobs.synced();
        assert_eq!(readiness.state(), ReadyState::Ready);
        readiness.set_role(Role::Standby);
        assert_eq!(readiness.state(), ReadyState::Standby);
    }

    #[test]
    fn two_scopes_of_one_name_both_count() {
        let readiness = Arc::new(Readiness::default());
        let first = readiness.register("same");
        let second = readiness.register("same");
        first.synced();
        assert!(matches!(readiness.state(), ReadyState::NotReady(_)));
        second.synced();
        assert_eq!(readiness.state(), ReadyState::Ready);
    }

    #[test]
    fn listen_addresses_as_kuberay_writes_them() {
        assert_eq!(
            parse_listen_address(":8080").unwrap(),
            Some("0.0.0.0:8080".parse().unwrap())
        );
        assert_eq!(
            parse_listen_address("127.0.0.1:9").unwrap(),
            Some("127.0.0.1:9".parse().unwrap())
        );
        assert_eq!(parse_listen_address("0").unwrap(), None);
        assert!(parse_listen_address("8080").is_err());
    }

    #[test]
    fn endpoints_answer() {
        let endpoints = Endpoints {
            metrics: Arc::new(Metrics::default()),
            readiness: Arc::new(Readiness::default()),
        };
        assert_eq!(
            endpoints.answer(&Method::GET, "/healthz").status(),
            StatusCode::OK
        );
        assert_eq!(
            endpoints.answer(&Method::GET, "/readyz").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            endpoints.answer(&Method::GET, "/metrics").status(),
            StatusCode::OK
        );
        assert_eq!(
            endpoints.answer(&Method::POST, "/metrics").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            endpoints.answer(&Method::GET, "/nope").status(),
            StatusCode::NOT_FOUND
        );
    }
}
