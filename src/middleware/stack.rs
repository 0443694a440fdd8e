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
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt as _;
use tower::{Layer, Service};
use tracing::Instrument as _;

use super::client_ip::{ClientIp, TrustedProxies};
use super::load_shed::InFlightLimit;
use super::metrics::{InFlight, intern};
use super::rate_limit::RateLimit;
use super::request_id::{self, X_REQUEST_ID};
use super::{access_log, metrics, problem};
use crate::http::MiddlewareConfig;
use crate::http::problem::ApiError;
use crate::metrics::{HttpMetrics, UNMATCHED_ROUTE, method_label};

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
}

impl RequestLayer {
    /// Creates the layer. Requests to `guarded` routes are rate limited and shed.
    pub fn new(config: &MiddlewareConfig, guarded: bool) -> Self {
        let admission = guarded.then(|| Admission {
            in_flight: config.in_flight.clone(),
            rate_limit: config.rate_limit.clone(),
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

/// Runs one request through every concern. On the way in: request id, client address, the
/// access log's span, the in-flight gauge, rate limit and in-flight limit, then the handler
/// under the timeout and panic recovery. On the way out: problem rendering, metrics and the
/// access log.
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
    let span = access_log::request_span(request.method(), route, request_id.as_str(), peer, client);
    request.extensions_mut().insert(request_id.clone());
    if let Some(client) = client {
        request.extensions_mut().insert(ClientIp(client));
    }

    async move {
        let in_flight = InFlight::enter(&shared.metrics.in_flight);
        let response = match admit(shared, client) {
            Ok(admitted) => {
                let response = run(inner, request, shared.write_timeout).await;
                if let Some(admitted) = admitted {
                    admitted.complete();
                }
                response
            }
            Err(rejected) => rejected.into_response(),
        };
        drop(in_flight);

        let mut response = problem::render(response, &request_id);
        let latency = started.elapsed();
        metrics::record(&shared.metrics, method, route, response.status(), latency);
        access_log::log_response(&response, latency);
        response
            .headers_mut()
            .insert(X_REQUEST_ID.clone(), request_id.header_value());
        response
    }
    .instrument(span)
    .await
}

/// Applies the rate limit, then the in-flight limit, to a guarded route's request.
fn admit(
    shared: &Shared,
    client: Option<IpAddr>,
) -> Result<Option<super::load_shed::Admitted<'_>>, ApiError> {
    let Some(admission) = &shared.admission else {
        return Ok(None);
    };
    if let (Some(rate_limit), Some(client)) = (&admission.rate_limit, client) {
        rate_limit.check(client)?;
    }
    admission.in_flight.try_admit().map(Some)
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
