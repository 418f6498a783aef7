//! The operator's Kubernetes client: kube's default stack plus one middleware that rate
//! limits requests client-side (client-go's token bucket: `--qps` refill, `--burst`
//! capacity) and counts them by method and status code.
//!
//! The bucket is governor's GCRA limiter, which is a token bucket without the floating
//! point bookkeeping; it runs on tokio's clock (so tests can pause time) and the layer
//! sleeps with tokio for the time governor says, instead of governor's own timer.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use http::{Request, Response};
// tokio's clock, so that tests can pause time.
use tokio::time::{Instant, Sleep};

use crate::metrics::Metrics;

/// Time since the limiter was made, on tokio's clock.
#[derive(Clone, Debug)]
struct TokioClock {
    start: Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

/// A token bucket: `burst` tokens at most, refilled at `qps` per second.
#[derive(Debug)]
pub struct TokenBucket {
    clock: TokioClock,
    limiter: RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>,
}

impl TokenBucket {
    /// None when `qps` is not positive: no limit, as client-go with a negative QPS.
    pub fn new(qps: f32, burst: u32) -> Option<Self> {
        if qps.is_nan() || qps <= 0.0 {
            return None;
        }
        // One token every 1/qps; a rate above a token per nanosecond is one per nanosecond.
        let period = Duration::try_from_secs_f64(1.0 / f64::from(qps))
            .unwrap_or(Duration::MAX)
            .max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)?
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        let clock = TokioClock {
            start: Instant::now(),
        };
        Some(TokenBucket {
            limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
        })
    }

    /// Takes a token, or says how long until one is available.
    pub fn try_take(&self) -> Result<(), Duration> {
        self.limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// The middleware as a tower layer.
#[derive(Clone, Debug)]
pub struct ApiLayer {
    limiter: Option<Arc<TokenBucket>>,
    metrics: Arc<Metrics>,
}

impl ApiLayer {
    pub fn new(limiter: Option<TokenBucket>, metrics: Arc<Metrics>) -> Self {
        ApiLayer {
            limiter: limiter.map(Arc::new),
            metrics,
        }
    }
}

impl<S> tower::Layer<S> for ApiLayer {
    type Service = ApiService<S>;

    fn layer(&self, inner: S) -> ApiService<S> {
        ApiService {
            inner,
            limiter: self.limiter.clone(),
            metrics: Arc::clone(&self.metrics),
            wait: None,
            holds_token: false,
        }
    }
}

/// See [`ApiLayer`]. kube's client drives it through a buffer, so requests wait for a
/// token in order, as client-go's rate limiter makes them.
pub struct ApiService<S> {
    inner: S,
    limiter: Option<Arc<TokenBucket>>,
    metrics: Arc<Metrics>,
    wait: Option<Pin<Box<Sleep>>>,
    /// A token taken in `poll_ready` for the next `call`.
    holds_token: bool,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for ApiService<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        if let Some(limiter) = &self.limiter {
            while !self.holds_token {
                if let Some(wait) = &mut self.wait {
                    if wait.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    self.wait = None;
                }
                match limiter.try_take() {
                    Ok(()) => self.holds_token = true,
                    Err(delay) => self.wait = Some(Box::pin(tokio::time::sleep(delay))),
                }
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        self.holds_token = false;
        let method = request.method().as_str().to_owned();
        let metrics = Arc::clone(&self.metrics);
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            let code = result
                .as_ref()
                .ok()
                .map(|response| response.status().as_u16());
            metrics.api_request(&method, code);
            result
        })
    }
}

/// A client for `config` with the rate limit and request metrics.
pub fn build(
    config: kube::Config,
    limiter: Option<TokenBucket>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<kube::Client> {
    let auth = config.auth_info.clone();
    let builder = match kube::client::ClientBuilder::try_from(config) {
        Ok(builder) => builder,
        Err(error) if client_certificate_version(&auth) == Some(1) => {
            return Err(anyhow::Error::new(error).context(X509_V1_CLIENT_CERTIFICATE));
        }
        Err(error) => return Err(error.into()),
    };
    Ok(builder.with_layer(&ApiLayer::new(limiter, metrics)).build())
}

/// rustls checks that the client's key matches its certificate by parsing the certificate
/// with webpki, which takes only X.509 v3, and kube reports the refusal as "invalid private
/// key". Go's TLS stack takes v1, so a kubeconfig that works with kubectl can fail here;
/// this says why and what to do.
const X509_V1_CLIENT_CERTIFICATE: &str = "the kubeconfig's client certificate is an X.509 v1 \
certificate, which rustls (the TLS library of the operator) refuses, although Go clients \
such as kubectl accept it; re-issue it as an X.509 v3 certificate (with openssl: \
`openssl x509 -req ... -extfile <file>` where the file has at least one extension, such as \
`extendedKeyUsage = clientAuth`), or authenticate with a token";

/// The X.509 version of the kubeconfig user's client certificate (the first of its PEM
/// certificates), if it has one that can be read.
fn client_certificate_version(auth: &kube::config::AuthInfo) -> Option<u8> {
    use base64::Engine as _;
    let pem = match (&auth.client_certificate_data, &auth.client_certificate) {
        (Some(data), _) => base64::engine::general_purpose::STANDARD
            .decode(data)
            .ok()?,
        (None, Some(path)) => std::fs::read(path).ok()?,
        (None, None) => return None,
    };
    let pem = String::from_utf8(pem).ok()?;
    let body = pem
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)?
        .split("-----END CERTIFICATE-----")
        .next()?;
    let body: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    x509_version(&der)
}

/// The version of a DER certificate: its `tbsCertificate` starts with an explicit `[0]`
/// version (0 for v1, 2 for v3), which v1 certificates may leave out.
fn x509_version(der: &[u8]) -> Option<u8> {
    const SEQUENCE: u8 = 0x30;
    const INTEGER: u8 = 0x02;
    const VERSION: u8 = 0xa0;
    let (SEQUENCE, certificate, _) = der_element(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = der_element(certificate)? else {
        return None;
    };
    match der_element(tbs)? {
        (VERSION, version, _) => match der_element(version)? {
            (INTEGER, &[version], _) => version.checked_add(1),
            _ => None,
        },
        // The serial number: no version field, so v1.
        (INTEGER, _, _) => Some(1),
        _ => None,
    }
}

/// One DER element: (tag, contents, what follows).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let (bytes, rest) = rest.split_at_checked(usize::from(first & 0x7f))?;
        if bytes.is_empty() || bytes.len() > 4 {
            return None;
        }
        let length = bytes
            .iter()
            .fold(0usize, |length, byte| length << 8 | usize::from(*byte));
        (length, rest)
    };
    let (contents, rest) = rest.split_at_checked(length)?;
    Some((tag, contents, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x509_versions_are_read_from_der() {
        // Certificate { tbsCertificate { [0] { INTEGER 2 }, serial INTEGER 1 } }: v3.
        let v3 = [
            0x30, 0x0a, 0x30, 0x08, 0xa0, 0x03, 0x02, 0x01, 0x02, 0x02, 0x01, 0x01,
        ];
        assert_eq!(x509_version(&v3), Some(3));
        // No version field: v1.
        let v1 = [0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x01];
        assert_eq!(x509_version(&v1), Some(1));
        // The explicit (non-DER) encoding of v1.
        let v1_explicit = [
            0x30, 0x0a, 0x30, 0x08, 0xa0, 0x03, 0x02, 0x01, 0x00, 0x02, 0x01, 0x01,
        ];
        assert_eq!(x509_version(&v1_explicit), Some(1));
        // Long-form lengths.
        let long = [0x30, 0x81, 0x07, 0x30, 0x82, 0x00, 0x03, 0x02, 0x01, 0x01];
        assert_eq!(x509_version(&long), Some(1));
        // Truncated or not a certificate: no answer, no panic.
        for bad in [
            &v3[..6],
            &[0x30, 0x85, 1, 1, 1, 1, 1][..],
            &[0x02, 0x01, 0x01][..],
            &[][..],
        ] {
            assert_eq!(x509_version(bad), None, "{bad:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_a_burst_then_the_rate() {
        let bucket = TokenBucket::new(10.0, 3).unwrap();
        for _ in 0..3 {
            assert_eq!(bucket.try_take(), Ok(()));
        }
        let wait = bucket.try_take().unwrap_err();
        assert!(wait > Duration::from_millis(99) && wait <= Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(bucket.try_take(), Ok(()));
        // Refill stops at the burst size.
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..3 {
            assert_eq!(bucket.try_take(), Ok(()));
        }
        assert!(bucket.try_take().is_err());
        assert!(TokenBucket::new(0.0, 10).is_none());
        assert!(TokenBucket::new(-1.0, 10).is_none());
        assert!(TokenBucket::new(f32::NAN, 10).is_none());
        // A burst of 0 still lets one request through, as before.
        let bucket = TokenBucket::new(1.0, 0).unwrap();
        assert_eq!(bucket.try_take(), Ok(()));
        assert!(bucket.try_take().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn requests_wait_for_tokens_and_are_counted() {
        use tower::{Layer as _, Service as _};
        let metrics = Arc::new(Metrics::default());
        let layer = ApiLayer::new(TokenBucket::new(2.0, 1), Arc::clone(&metrics));
        let mut service = layer.layer(tower::service_fn(|request: Request<()>| async move {
            let status: u16 = if request.uri().path() == "/missing" {
                404
            } else {
                200
            };
            Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(()).unwrap())
        }));
        let start = Instant::now();
        for path in ["/a", "/missing", "/b"] {
            std::future::poll_fn(|cx| service.poll_ready(cx))
                .await
                .unwrap();
            let request = Request::get(path).body(()).unwrap();
            service.call(request).await.unwrap();
        }
        // One token at once, then two more at 2 per second.
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(r#"rest_client_requests_total{code="200",method="GET"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"rest_client_requests_total{code="404",method="GET"} 1"#),
            "{text}"
        );
    }
}
