//! The HTTP surface: the route table, the state handlers share, and the middleware stack.

mod extract;
mod orders;
mod preferences;
mod probes;
pub mod problem;
mod profile;
mod users;

use std::time::Duration;

use crate::metrics::HttpMetrics;
use crate::middleware::client_ip::TrustedProxies;
use crate::middleware::load_shed::InFlightLimit;
use crate::middleware::rate_limit::RateLimit;
use crate::middleware::stack::RequestLayer;
use crate::shutdown::Readiness;
use crate::store::Store;
use axum::Router;
use axum::routing::get;
use problem::ApiError;

/// The state every handler can reach. It is cloned per request, so every field is cheap to
/// clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub readiness: Readiness,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
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
/// full stack. Load shedding guards the API only, so probes respond under any load.
pub fn router(state: AppState, config: MiddlewareConfig, extra: Router<AppState>) -> Router {
    let probes = Router::new()
        .route("/livez", get(probes::live))
        .route("/health", get(probes::live))
        .route("/readyz", get(probes::ready))
        .with_state(state.clone());
    let api = extra
        .route("/api/v1/users", get(users::list).post(users::create))
        .route(
            "/api/v1/users/{id}",
            get(users::get).patch(users::update).delete(users::delete),
        )
        .route(
            "/api/v1/users/{id}/orders",
            get(orders::list).post(orders::create),
        )
        .route("/api/v1/orders/{id}", get(orders::get))
        .route(
            "/api/v1/users/{id}/preferences",
            get(preferences::get).put(preferences::put),
        )
        .route("/api/v1/users/{id}/profile", get(profile::get))
        .fallback(|| async { ApiError::RouteNotFound })
        .with_state(state);

    Router::new()
        .route("/", get(probes::hello))
        .merge(with_middleware(probes, &config, false))
        .merge(with_middleware(api, &config, true))
}

/// Wraps `routes` in the middleware stack; `shed` routes are also rate limited and shed.
fn with_middleware(routes: Router, config: &MiddlewareConfig, shed: bool) -> Router {
    routes.layer(RequestLayer::new(config, shed))
}
