//! The baseline route and the Kubernetes probes.
//!
//! Liveness never looks at the database: a liveness probe that failed during a database
//! outage would make Kubernetes restart every replica at once.

use std::time::Duration;

use axum::extract::State;

use super::AppState;
use super::problem::{ApiError, ProblemDetails};

/// Maximum time readiness waits for the database to respond.
const READY_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// The baseline of the benchmarks, served outside all middleware.
#[utoipa::path(
    get,
    path = "/",
    tag = "probes",
    operation_id = "hello",
    responses((status = 200, description = "Always `Hello, World!`", body = String, content_type = "text/plain"))
)]
pub async fn hello() -> &'static str {
    "Hello, World!"
}

#[utoipa::path(
    get,
    path = "/livez",
    tag = "probes",
    operation_id = "live",
    responses((status = 200, description = "The process serves; the database is not consulted", body = String, content_type = "text/plain"))
)]
pub async fn live() -> &'static str {
    "ok"
}

/// The liveness probe under its older name.
#[utoipa::path(
    get,
    path = "/health",
    tag = "probes",
    operation_id = "health",
    responses((status = 200, description = "The same as `GET /livez`", body = String, content_type = "text/plain"))
)]
pub async fn health() -> &'static str {
    live().await
}

/// Returns 200 while the database responds and the server is not shutting down.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "probes",
    operation_id = "ready",
    responses(
        (status = 200, description = "The database responds and the server is not shutting down", body = String, content_type = "text/plain"),
        (status = 503, description = "The database does not respond within a second, or the server is shutting down",
            body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn ready(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    if state.readiness.is_draining() {
        return Err(ApiError::ShuttingDown);
    }
    match tokio::time::timeout(READY_PING_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok("ready"),
        Ok(Err(err)) => Err(ApiError::Unavailable(err.to_string())),
        Err(_elapsed) => Err(ApiError::Unavailable(format!(
            "the database did not respond to a ping within {READY_PING_TIMEOUT:?}"
        ))),
    }
}
