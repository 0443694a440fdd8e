//! The HTTP surface: the route table, the state handlers share, and the middleware stack.

mod extract;
mod probes;
pub mod problem;
mod users;

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

use crate::middleware;
use crate::shutdown::Readiness;
use crate::store::Store;
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

/// Builds the route table with its middleware, with `extra` routes added to the API.
///
/// `GET /` is the bare baseline the benchmarks measure, so it sits outside the middleware.
/// Every other route, `extra` included, and the fallback for unknown paths run through the
/// full stack.
pub fn router(state: AppState, write_timeout: Duration, extra: Router<AppState>) -> Router {
    let api = extra
        .route("/livez", get(probes::live))
        .route("/health", get(probes::live))
        .route("/readyz", get(probes::ready))
        .route("/api/v1/users", get(users::list).post(users::create))
        .route(
            "/api/v1/users/{id}",
            get(users::get).patch(users::update).delete(users::delete),
        )
        .fallback(|| async { ApiError::RouteNotFound })
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn(middleware::request_id::assign))
                .layer(middleware::access_log::layer())
                .layer(axum::middleware::from_fn(middleware::problem::render))
                .layer(CatchPanicLayer::custom(middleware::problem::from_panic))
                .layer(axum::middleware::from_fn_with_state(
                    write_timeout,
                    middleware::timeout::limit,
                )),
        );

    Router::new().route("/", get(probes::hello)).merge(api)
}
