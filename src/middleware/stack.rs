//! The middleware of every route but `/`, run as one tower layer.
//!
//! Each concern lives in its own module as plain functions; this layer calls them in order
//! around the handler. One layer costs one boxed future per request, where a stack of
//! `from_fn` layers cost a boxed future and a clone of the inner service for each layer.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt as _;
use tower::{Layer, Service};

use super::client_ip::{ClientIp, TrustedProxies};
use super::load_shed::InFlightLimit;
use super::metrics::{InFlight, intern};
use super::rate_limit::RateLimit;
use super::request_id::{self, RequestId, X_REQUEST_ID};
use super::{access_log, metrics, problem};
use crate::http::MiddlewareConfig;
use crate::http::problem::ApiError;
use crate::metrics::{HttpMetrics, UNMATCHED_ROUTE, method_label};
use crate::telemetry::{self, request::RequestContext};

/// The layer, built once per group of routes.
#[derive(Clone)]
pub struct RequestLayer {
    shared: Arc<Shared>,
}

struct Shared {
    write_timeout: Duration,
    metrics: HttpMetrics,
    trusted_proxies: TrustedProxies,
    /// The in-flight limit and rate limit, or `None` for routes that are never shed (probes).
    admission: Option<Admission>,
}

struct Admission {
    in_flight: InFlightLimit,
    rate_limit: Option<RateLimit>,
    rejections: Arc<RejectionLog>,
}

impl RequestLayer {
    /// Creates the layer. Requests to `guarded` routes are rate limited and shed.
    pub fn new(config: &MiddlewareConfig, guarded: bool) -> Self {
        let admission = guarded.then(|| Admission {
            in_flight: config.in_flight.clone(),
            rate_limit: config.rate_limit.clone(),
            rejections: RejectionLog::start(),
        });
        RequestLayer {
            shared: Arc::new(Shared {
                write_timeout: config.write_timeout,
                metrics: config.metrics.clone(),
                trusted_proxies: config.trusted_proxies.clone(),
                admission,
            }),
        }
    }
}

impl<S> Layer<S> for RequestLayer {
    type Service = RequestService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service [`RequestLayer`] wraps around a route.
#[derive(Clone)]
pub struct RequestService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request> for RequestService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // `poll_ready` readied `self.inner`, so that instance serves this request and a clone
        // stays for the next one.
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        let shared = Arc::clone(&self.shared);
        Box::pin(async move { Ok(handle(&shared, inner, request).await) })
    }
}

/// Runs one request through every concern. On the way in: request id, client address, rate
/// limit and in-flight limit, the request's log context and the in-flight gauge, then the handler
/// under the timeout and panic recovery. On the way out: problem rendering, metrics and the
/// access log.
///
/// A request rejected by the rate limit or the in-flight limit gets no line of its
/// own: under overload those lines would cost the CPU the admitted requests need, so
/// [`RejectionLog`] counts them in one warning a second.
async fn handle<S>(shared: &Shared, inner: S, mut request: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let started = Instant::now();
    let request_id = request_id::assign(request.headers());
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let client = peer.map(|peer| {
        shared
            .trusted_proxies
            .client_address(peer.ip(), request.headers())
    });
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, |path| intern(path.as_str()));
    let admitted = match admit(shared, client) {
        Ok(admitted) => admitted,
        Err(rejected) => {
            let latency = started.elapsed();
            return finish(
                shared,
                rejected.into_response(),
                &request_id,
                method,
                route,
                latency,
            );
        }
    };
    request.extensions_mut().insert(request_id.clone());
    if let Some(client) = client {
        request.extensions_mut().insert(ClientIp(client));
    }
    let context = RequestContext {
        method: request.method().clone(),
        route,
        request_id: request_id.clone(),
        peer,
        client,
    };

    telemetry::request::scope(context, async move {
        let in_flight = InFlight::enter(&shared.metrics.in_flight);
        let response = run(inner, request, shared.write_timeout).await;
        if let Some(admitted) = admitted {
            admitted.complete();
        }
        drop(in_flight);

        let latency = started.elapsed();
        let response = finish(shared, response, &request_id, method, route, latency);
        access_log::log_response(&response, latency);
        response
    })
    .await
}

/// Renders the response's problem body, records its metrics and adds the request id header.
fn finish(
    shared: &Shared,
    response: Response,
    request_id: &RequestId,
    method: &'static str,
    route: &'static str,
    latency: Duration,
) -> Response {
    let mut response = problem::render(response, request_id);
    metrics::record(&shared.metrics, method, route, response.status(), latency);
    response
        .headers_mut()
        .insert(X_REQUEST_ID.clone(), request_id.header_value());
    response
}

/// Applies the rate limit, then the in-flight limit, to a guarded route's request, and counts
/// a rejection in the rejection log.
fn admit(
    shared: &Shared,
    client: Option<IpAddr>,
) -> Result<Option<super::load_shed::Admitted<'_>>, ApiError> {
    let Some(admission) = &shared.admission else {
        return Ok(None);
    };
    let rate_limited = match (&admission.rate_limit, client) {
        (Some(rate_limit), Some(client)) => rate_limit.check(client),
        _ => Ok(()),
    };
    let admitted = rate_limited.and_then(|()| admission.in_flight.try_admit());
    if let Err(rejection) = &admitted {
        admission.rejections.record(rejection);
    }
    admitted.map(Some)
}

/// Runs the handler under the write timeout, turning a panic into a 500 problem. A handler
/// past the timeout is dropped and the request gets a 503. Dropping a handler does not stop a
/// statement already sent to the database; PostgreSQL's statement_timeout, set below the
/// write timeout, cancels those.
async fn run<S>(mut inner: S, request: Request, timeout: Duration) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let handler = AssertUnwindSafe(inner.call(request)).catch_unwind();
    match tokio::time::timeout(timeout, handler).await {
        Ok(Ok(Ok(response))) => response,
        Ok(Ok(Err(infallible))) => match infallible {},
        Ok(Err(panic)) => problem::from_panic(panic),
        Err(_elapsed) => ApiError::Timeout.into_response(),
    }
}

/// How often [`RejectionLog`] writes its warning while requests are rejected.
const REJECTION_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// The log of requests rejected at admission: while requests are rejected, one warning a
/// second with how many each limit rejected since the previous warning.
#[derive(Default)]
struct RejectionLog {
    shed: AtomicU64,
    rate_limited: AtomicU64,
}

impl RejectionLog {
    /// Creates the log with a task that writes the warning every [`REJECTION_LOG_INTERVAL`].
    /// The task ends when the log is dropped, and dropping the log writes what is left.
    fn start() -> Arc<Self> {
        let log = Arc::new(RejectionLog::default());
        // Outside a runtime (no server runs) there is no task, and the drop writes the rest.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&log);
            runtime.spawn(async move {
                let mut ticks = tokio::time::interval(REJECTION_LOG_INTERVAL);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    let Some(log) = weak.upgrade() else {
                        return;
                    };
                    log.write();
                }
            });
        }
        log
    }

    /// Counts one rejection.
    fn record(&self, rejection: &ApiError) {
        let counter = match rejection {
            ApiError::RateLimited { .. } => &self.rate_limited,
            _ => &self.shed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes the warning when requests were rejected since the previous one.
    fn write(&self) {
        let shed = self.shed.swap(0, Ordering::Relaxed);
        let rate_limited = self.rate_limited.swap(0, Ordering::Relaxed);
        if shed + rate_limited > 0 {
            tracing::warn!(
                shed,
                rate_limited,
                "requests rejected since the previous warning"
            );
        }
    }
}

impl Drop for RejectionLog {
    fn drop(&mut self) {
        self.write();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use super::*;

    /// A log destination for one test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        fn lines(&self) -> Vec<String> {
            let bytes = self.0.lock().unwrap().clone();
            String::from_utf8(bytes)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn rejection_log_writes_one_warning_a_second() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let log = RejectionLog::start();

        for _ in 0..1000 {
            log.record(&ApiError::Overloaded);
        }
        log.record(&ApiError::RateLimited { retry_after: 1 });
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let after_burst = captured.lines();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let after_quiet_second = captured.lines();
        log.record(&ApiError::Overloaded);
        drop(log);
        let after_drop = captured.lines();

        assert_eq!(after_burst.len(), 1, "{after_burst:?}");
        assert!(
            after_burst[0].contains("shed=1000 rate_limited=1"),
            "{after_burst:?}"
        );
        assert_eq!(after_quiet_second.len(), 1, "{after_quiet_second:?}");
        assert_eq!(after_drop.len(), 2, "{after_drop:?}");
        assert!(
            after_drop[1].contains("shed=1 rate_limited=0"),
            "{after_drop:?}"
        );
    }
}
