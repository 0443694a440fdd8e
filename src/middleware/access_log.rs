//! The access log: a span per request that every event of the request is recorded in, and one
//! event when the response is ready (method, route template, status, latency, request id, peer
//! address and resolved client address).

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::response::Response;
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::TraceLayer;
use tracing::Span;

use super::client_ip::ClientIp;
use super::request_id::RequestId;

/// The route label of a request that matched no route.
const UNMATCHED: &str = "unmatched";

pub type AccessLogLayer = TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    fn(&Request<Body>) -> Span,
    (),
    fn(&Response<Body>, Duration, &Span),
    (),
    (),
    (),
>;

pub fn layer() -> AccessLogLayer {
    TraceLayer::new_for_http()
        .make_span_with(request_span as fn(&Request<Body>) -> Span)
        .on_request(())
        .on_response(log_response as fn(&Response<Body>, Duration, &Span))
        .on_body_chunk(())
        .on_eos(())
        .on_failure(())
}

fn request_span(request: &Request<Body>) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str);
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map_or("", RequestId::as_str);
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let client = request
        .extensions()
        .get::<ClientIp>()
        .map(|client| client.0);
    tracing::info_span!(
        "request",
        method = %request.method(),
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
fn log_response(response: &Response<Body>, latency: Duration, _span: &Span) {
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
