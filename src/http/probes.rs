//! The baseline route and the Kubernetes probes.
//!
//! Liveness never looks at the database: a liveness probe that failed during a database
//! outage would make Kubernetes restart every replica at once.

use std::time::Duration;

use axum::extract::State;

use super::AppState;
use super::problem::ApiError;

/// Maximum time readiness waits for the database to respond.
const READY_PING_TIMEOUT: Duration = Duration::from_secs(1);

pub async fn hello() -> &'static str {
    "Hello, World!"
}

pub async fn live() -> &'static str {
    "ok"
}

/// Returns 200 while the database responds and the server is not shutting down.
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
