//! The write timeout: a handler that runs longer than SERVER_WRITE_TIMEOUT is dropped, which
//! cancels its database work, and the request answers 503.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::problem::ApiError;

pub async fn limit(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_elapsed) => ApiError::Timeout.into_response(),
    }
}
