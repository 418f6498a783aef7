//! The operator's Kubernetes client: kube's default stack plus one middleware that rate
//! limits requests client-side (client-go's token bucket: `--qps` refill, `--burst`
//! capacity) and counts them by method and status code.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
// tokio's clock, so that tests can pause time.
use tokio::time::{Instant, Sleep};

use crate::metrics::Metrics;

/// A token bucket: `burst` tokens at most, refilled at `qps` per second.
#[derive(Debug)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// None when `qps` is not positive: no limit, as client-go with a negative QPS.
    pub fn new(qps: f32, burst: u32) -> Option<Self> {
        (qps > 0.0).then(|| {
            let burst = f64::from(burst.max(1));
            TokenBucket {
                qps: f64::from(qps),
                burst,
                state: Mutex::new((burst, Instant::now())),
            }
        })
    }

    /// Takes a token, or says how long until one is available.
    pub fn try_take(&self, now: Instant) -> Result<(), Duration> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (tokens, last) = &mut *state;
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.qps).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.qps))
        }
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
                match limiter.try_take(Instant::now()) {
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
) -> Result<kube::Client, kube::Error> {
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&ApiLayer::new(limiter, metrics))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let bucket = TokenBucket::new(10.0, 3).unwrap();
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(bucket.try_take(start), Ok(()));
        }
        let wait = bucket.try_take(start).unwrap_err();
        assert!(wait > Duration::from_millis(99) && wait <= Duration::from_millis(100));
        assert_eq!(bucket.try_take(start + Duration::from_millis(100)), Ok(()));
        // Refill stops at the burst size.
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(bucket.try_take(later), Ok(()));
        }
        assert!(bucket.try_take(later).is_err());
        assert!(TokenBucket::new(0.0, 10).is_none());
        assert!(TokenBucket::new(-1.0, 10).is_none());
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
