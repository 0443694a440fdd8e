//! The access log: one event when the response is ready, with its status, latency and error.
//! The event is logged inside the request's [`crate::telemetry::request`] scope, which adds the
//! method, route template, request id, peer address and client address to it.

use std::time::Duration;

use axum::response::Response;

/// The cause or detail of an error response, put in the response's extensions for the access
/// log, so that one line per request carries it.
#[derive(Debug, Clone)]
pub struct LoggedError(pub String);

/// Logs the response: at ERROR for a server bug (500), at WARN for other server errors and
/// at INFO otherwise, with the error's cause or detail when there is one.
pub fn log_response(response: &Response, latency: Duration) {
    let status = response.status().as_u16();
    let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    let error = response
        .extensions()
        .get::<LoggedError>()
        .map(|logged| logged.0.as_str());
    match status {
        500 => tracing::error!(status, latency_us, error, "request failed"),
        501.. => tracing::warn!(status, latency_us, error, "request failed"),
        _ => tracing::info!(status, latency_us, error, "request completed"),
    }
}
