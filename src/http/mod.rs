//! The HTTP surface: the route table, the state handlers share, and the middleware stack.

mod docs;
mod extract;
pub mod openapi;
mod orders;
mod preferences;
mod probes;
pub mod problem;
mod profile;
mod users;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, BytesMut};
use serde::Serialize;

use crate::metrics::HttpMetrics;
use crate::middleware::client_ip::TrustedProxies;
use crate::middleware::load_shed::InFlightLimit;
use crate::middleware::rate_limit::RateLimit;
use crate::middleware::stack::RequestLayer;
use crate::shutdown::Readiness;
use crate::store::Store;
use axum::Router;
use problem::ApiError;

/// The state every handler can reach. axum clones it for every request, so it is one `Arc`
/// around [`AppContext`] rather than a clone of each field.
#[derive(Clone)]
pub struct AppState(Arc<AppContext>);

impl AppState {
    pub fn new(context: AppContext) -> Self {
        AppState(Arc::new(context))
    }
}

impl Deref for AppState {
    type Target = AppContext;

    fn deref(&self) -> &AppContext {
        &self.0
    }
}

/// The store, readiness, body limit and authenticator that handlers use.
pub struct AppContext {
    pub store: Store,
    pub readiness: Readiness,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// Turns a request's bearer token into the [`crate::auth::Principal`] handlers take.
    pub auth: crate::auth::Authenticator,
}

/// Settings and shared state of the middleware stack.
#[derive(Clone)]
pub struct MiddlewareConfig {
    /// Maximum time a handler may run.
    pub write_timeout: Duration,
    pub metrics: HttpMetrics,
    /// The limit on requests in flight, applied to the API routes but not to the probes.
    pub in_flight: InFlightLimit,
    /// Networks whose proxy headers name the client.
    pub trusted_proxies: TrustedProxies,
    /// The per-client rate limit of the API routes, when configured.
    pub rate_limit: Option<RateLimit>,
}

/// Builds the route table with its middleware, with `extra` routes added to the API.
///
/// `GET /` is the bare baseline the benchmarks measure, so it sits outside the middleware.
/// Every other route, `extra` included, and the fallback for unknown paths run through the
/// full stack. Load shedding guards the API only, so probes and the API reference respond
/// under any load. The routes come from [`openapi::routes`], with their documentation.
pub fn router(state: AppState, config: MiddlewareConfig, extra: Router<AppState>) -> Router {
    let routes = openapi::routes();
    let operational = routes.operational.with_state(state.clone());
    let api = extra
        .merge(routes.api)
        .fallback(|| async { ApiError::RouteNotFound })
        .with_state(state.clone());

    Router::new()
        .merge(routes.root.with_state(state))
        .merge(with_middleware(operational, &config, false))
        .merge(with_middleware(api, &config, true))
}

/// Wraps `routes` in the middleware stack; `shed` routes are also rate limited and shed.
fn with_middleware(routes: Router, config: &MiddlewareConfig, shed: bool) -> Router {
    routes.layer(RequestLayer::new(config, shed))
}

/// Serializes `value` as an `application/json` response into a buffer of `capacity` bytes to
/// start with. axum's `Json` starts at 128 bytes and doubles the buffer, copying the body each
/// time (four copies for a 1.5 KiB profile), so routes with large bodies use this instead.
pub fn json_response(value: &impl Serialize, capacity: usize) -> Response {
    let mut body = BytesMut::with_capacity(capacity).writer();
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body.into_inner().freeze(),
        )
            .into_response(),
        Err(err) => {
            ApiError::Internal(format!("failed to serialize the response: {err}")).into_response()
        }
    }
}
