//! The write timeout: a handler that runs longer than SERVER_WRITE_TIMEOUT is dropped and the
//! request gets a 503. Dropping a handler does not stop a statement already sent to the
//! database; PostgreSQL's statement_timeout, set below this timeout, cancels those.

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
