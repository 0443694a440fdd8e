//! Renders problem+json bodies with the request id, and hands the error's cause or detail to
//! the access log.
//!
//! Handlers and the admission checks return responses that carry a [`Problem`] in their
//! extensions and an empty body, and [`render`] writes the body. An error status that arrives with an empty body
//! and no problem (axum's own 405, for one) gets a generic problem for its status.

use std::any::Any;

use axum::body::{Body, HttpBody as _};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::access_log::LoggedError;
use super::request_id::RequestId;
use crate::http::problem::{ApiError, Problem};

static PROBLEM_JSON: HeaderValue = HeaderValue::from_static("application/problem+json");

/// Writes the problem+json body of an error response that carries a [`Problem`], with the
/// request's id, and moves the error's cause to the extensions the access log reads.
pub fn render(response: Response, request_id: &RequestId) -> Response {
    let status = response.status();
    if !status.is_client_error() && !status.is_server_error() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let problem = match parts.extensions.remove::<Problem>() {
        Some(problem) => problem,
        None if body.size_hint().exact() == Some(0) => problem_for_bare_status(status),
        None => return Response::from_parts(parts, body),
    };

    if let Some(cause) = &problem.cause {
        parts.extensions.insert(LoggedError(cause.clone()));
    }
    parts
        .headers
        .insert(header::CONTENT_TYPE, PROBLEM_JSON.clone());
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(problem.body(request_id.as_str())))
}

fn problem_for_bare_status(status: StatusCode) -> Problem {
    match status {
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed.to_problem(),
        _ => Problem::for_status(status),
    }
}

/// Turns a handler's panic into a 500 problem; the panic message goes to the log only.
pub fn from_panic(payload: Box<dyn Any + Send + 'static>) -> Response {
    let message = payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-string payload".to_owned());
    ApiError::Internal(format!("handler panicked: {message}")).into_response()
}
