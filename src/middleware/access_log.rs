//! The access log: a span per request that every event of the request is recorded in, and one
//! event when the response is ready (method, route template, status, latency, request id, peer
//! address and resolved client address).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::http::Method;
use axum::response::Response;
use tracing::Span;

/// Creates the span of one request, which every event of the request is recorded in.
pub fn request_span(
    method: &Method,
    route: &str,
    request_id: &str,
    peer: Option<SocketAddr>,
    client: Option<IpAddr>,
) -> Span {
    tracing::info_span!(
        "request",
        %method,
        route,
        request_id,
        peer = peer.map(tracing::field::display),
        client = client.map(tracing::field::display),
    )
}

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
