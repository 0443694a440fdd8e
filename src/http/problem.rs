//! Error responses: [`ApiError`] and its rendering as `application/problem+json` (RFC 9457).
//!
//! Converting an error into a response has no side effects: it stores a [`Problem`] in the
//! response's extensions and leaves the body empty. The problem middleware then writes the
//! body with the request id and logs the cause, in one place for every route. Bodies of fixed
//! errors are rendered once, at start; only the request id is appended per response.

use std::borrow::Cow;
use std::sync::LazyLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Seconds a client should wait before retrying a 503.
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// One invalid field of a request body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldError {
    /// The field's name in the request body.
    #[schema(example = "email")]
    pub field: &'static str,
    /// The reason the value is invalid.
    #[schema(example = "is required")]
    pub message: String,
}

/// The body of every error response: RFC 9457 problem details with the request id.
// This type only describes, for the OpenAPI document, the JSON that `Problem::body` writes.
#[derive(ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDetails {
    /// The kind of problem, a URI reference: `/problems/` and a name such as `not-found`,
    /// `validation` or `rate-limited`, or `about:blank` for a status with no kind of its own.
    #[schema(example = "/problems/not-found")]
    pub r#type: String,
    /// The reason phrase of the status.
    #[schema(example = "Not Found")]
    pub title: String,
    /// The HTTP status code of the response.
    #[schema(minimum = 400, maximum = 599, example = 404)]
    pub status: u16,
    /// The failure, as it applies to this request.
    #[schema(example = "no user with id 7")]
    pub detail: String,
    /// Each invalid field, on 422 responses only.
    #[schema(required = false)]
    pub errors: Vec<FieldError>,
    /// The request id, also sent in the `X-Request-Id` response header.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$", example = "6c1f0e94a1d3b2c7-4")]
    pub request_id: String,
}

/// Every error a handler or middleware can respond with.
#[derive(Debug)]
pub enum ApiError {
    /// A resource that does not exist; the detail names it.
    NotFound(String),
    /// A path that matches no route.
    RouteNotFound,
    /// A route that exists, with a method it does not serve.
    MethodNotAllowed,
    /// A malformed request: bad JSON, a bad path or query parameter, described in the detail.
    BadRequest(String),
    /// A body without `Content-Type: application/json`; the content type sent, if any.
    UnsupportedMediaType(Option<String>),
    /// A body larger than the limit, in bytes.
    PayloadTooLarge { limit: usize },
    /// Well-formed JSON whose fields fail validation.
    Validation(Vec<FieldError>),
    /// A write that a unique constraint rejected; the detail names the taken value.
    Conflict(String),
    /// The database cannot serve the request now; the cause goes to the log only.
    Unavailable(String),
    /// The handler ran past the write timeout.
    Timeout,
    /// The server is draining before it stops.
    ShuttingDown,
    /// Too many requests in flight: the request was shed without being handled.
    Overloaded,
    /// The client is over its rate limit; it may retry after this many seconds.
    RateLimited { retry_after: u64 },
    /// A request without bearer credentials to a route that needs them.
    MissingToken,
    /// A bearer token that failed validation, with the reason; the reason never contains
    /// the token and has no quotes, so it fits in `WWW-Authenticate`.
    InvalidToken(&'static str),
    /// A valid token without the scope the request needs, which is named.
    InsufficientScope(&'static str),
    /// A bug: the cause goes to the log, the client gets a generic body.
    Internal(String),
}

/// A rendered error waiting for its request id: the JSON object up to, and without, the
/// `request_id` member and the closing brace.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub body_prefix: Cow<'static, str>,
    /// The text the access log records: the cause of a server error, which is never sent to
    /// the client, or the detail of a client error.
    pub cause: Option<String>,
}

impl Problem {
    /// Renders the full body, with `request_id` as the last member. Request ids contain only
    /// `[A-Za-z0-9._-]`, so they need no JSON escaping.
    pub fn body(&self, request_id: &str) -> String {
        let mut body = String::with_capacity(self.body_prefix.len() + request_id.len() + 18);
        body.push_str(&self.body_prefix);
        body.push_str(",\"request_id\":\"");
        body.push_str(request_id);
        body.push_str("\"}");
        body
    }

    /// Builds a generic problem for a status that arrived without one, such as axum's own 405.
    pub fn for_status(status: StatusCode) -> Problem {
        let title = status.canonical_reason().unwrap_or("Error");
        Problem {
            status,
            body_prefix: Cow::Owned(render(status, "about:blank", title, title, None)),
            cause: None,
        }
    }
}

#[derive(Serialize)]
struct Fields<'a> {
    r#type: &'a str,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
}

/// Serializes the problem members and drops the closing brace, so the request id can follow.
fn render(
    status: StatusCode,
    kind: &str,
    title: &str,
    detail: &str,
    errors: Option<&[FieldError]>,
) -> String {
    let fields = Fields {
        r#type: kind,
        title,
        status: status.as_u16(),
        detail,
        errors,
    };
    let mut json = serde_json::to_string(&fields).expect("problem fields serialize to JSON");
    json.pop();
    json
}

macro_rules! fixed_problem {
    ($name:ident, $status:expr, $kind:literal, $title:literal, $detail:literal) => {
        static $name: LazyLock<String> =
            LazyLock::new(|| render($status, concat!("/problems/", $kind), $title, $detail, None));
    };
}

fixed_problem!(
    ROUTE_NOT_FOUND,
    StatusCode::NOT_FOUND,
    "route-not-found",
    "Not Found",
    "no route matches this path; the API is under /api/v1"
);
fixed_problem!(
    METHOD_NOT_ALLOWED,
    StatusCode::METHOD_NOT_ALLOWED,
    "method-not-allowed",
    "Method Not Allowed",
    "this route does not serve this method; the Allow header lists those it does"
);
fixed_problem!(
    UNSUPPORTED_MEDIA_TYPE,
    StatusCode::UNSUPPORTED_MEDIA_TYPE,
    "unsupported-media-type",
    "Unsupported Media Type",
    "the request body must be sent with Content-Type: application/json"
);
fixed_problem!(
    TIMEOUT,
    StatusCode::SERVICE_UNAVAILABLE,
    "timeout",
    "Service Unavailable",
    "the request did not complete within the server's time limit; retry later"
);
fixed_problem!(
    RATE_LIMITED,
    StatusCode::TOO_MANY_REQUESTS,
    "rate-limited",
    "Too Many Requests",
    "this client is over its request rate; retry after the time in Retry-After"
);
fixed_problem!(
    OVERLOADED,
    StatusCode::SERVICE_UNAVAILABLE,
    "overloaded",
    "Service Unavailable",
    "the server is handling as many requests as it can; retry later"
);
fixed_problem!(
    SHUTTING_DOWN,
    StatusCode::SERVICE_UNAVAILABLE,
    "shutting-down",
    "Service Unavailable",
    "the server is shutting down"
);
fixed_problem!(
    MISSING_TOKEN,
    StatusCode::UNAUTHORIZED,
    "unauthorized",
    "Unauthorized",
    "this route needs a bearer token: send Authorization: Bearer <token>"
);
fixed_problem!(
    INTERNAL,
    StatusCode::INTERNAL_SERVER_ERROR,
    "internal",
    "Internal Server Error",
    "the server failed to handle the request; the request id identifies it in the server's log"
);

/// Renders every fixed problem body now, so that no request pays for it.
pub fn render_fixed_problems() {
    for problem in [
        &ROUTE_NOT_FOUND,
        &METHOD_NOT_ALLOWED,
        &UNSUPPORTED_MEDIA_TYPE,
        &TIMEOUT,
        &SHUTTING_DOWN,
        &OVERLOADED,
        &RATE_LIMITED,
        &MISSING_TOKEN,
        &INTERNAL,
    ] {
        LazyLock::force(problem);
    }
}

impl ApiError {
    /// Returns the status and rendered body of this error, and its cause for the log.
    pub fn to_problem(&self) -> Problem {
        let fixed = |status, body: &'static LazyLock<String>, cause: Option<&String>| Problem {
            status,
            body_prefix: Cow::Borrowed(body.as_str()),
            cause: cause.cloned(),
        };
        let dynamic = |status, kind: &str, title: &str, detail: &str, errors| Problem {
            status,
            body_prefix: Cow::Owned(render(status, kind, title, detail, errors)),
            cause: Some(detail.to_owned()),
        };
        match self {
            ApiError::NotFound(detail) => dynamic(
                StatusCode::NOT_FOUND,
                "/problems/not-found",
                "Not Found",
                detail,
                None,
            ),
            ApiError::RouteNotFound => fixed(StatusCode::NOT_FOUND, &ROUTE_NOT_FOUND, None),
            ApiError::MethodNotAllowed => {
                fixed(StatusCode::METHOD_NOT_ALLOWED, &METHOD_NOT_ALLOWED, None)
            }
            ApiError::BadRequest(detail) => dynamic(
                StatusCode::BAD_REQUEST,
                "/problems/bad-request",
                "Bad Request",
                detail,
                None,
            ),
            ApiError::UnsupportedMediaType(None) => fixed(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &UNSUPPORTED_MEDIA_TYPE,
                None,
            ),
            ApiError::UnsupportedMediaType(Some(sent)) => dynamic(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "/problems/unsupported-media-type",
                "Unsupported Media Type",
                &format!(
                    "the request body must be sent with Content-Type: application/json, not {sent:?}"
                ),
                None,
            ),
            ApiError::PayloadTooLarge { limit } => dynamic(
                StatusCode::PAYLOAD_TOO_LARGE,
                "/problems/payload-too-large",
                "Content Too Large",
                &format!("the request body exceeds the limit of {limit} bytes"),
                None,
            ),
            ApiError::Validation(errors) => {
                let fields: Vec<&str> = errors.iter().map(|error| error.field).collect();
                dynamic(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "/problems/validation",
                    "Unprocessable Content",
                    &format!("invalid fields: {}", fields.join(", ")),
                    Some(errors),
                )
            }
            ApiError::Conflict(detail) => dynamic(
                StatusCode::CONFLICT,
                "/problems/conflict",
                "Conflict",
                detail,
                None,
            ),
            ApiError::Unavailable(cause) => Problem {
                cause: Some(cause.clone()),
                ..dynamic(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "/problems/unavailable",
                    "Service Unavailable",
                    "the database is unavailable; retry later",
                    None,
                )
            },
            ApiError::Timeout => fixed(StatusCode::SERVICE_UNAVAILABLE, &TIMEOUT, None),
            ApiError::ShuttingDown => fixed(StatusCode::SERVICE_UNAVAILABLE, &SHUTTING_DOWN, None),
            ApiError::Overloaded => fixed(StatusCode::SERVICE_UNAVAILABLE, &OVERLOADED, None),
            ApiError::RateLimited { .. } => {
                fixed(StatusCode::TOO_MANY_REQUESTS, &RATE_LIMITED, None)
            }
            ApiError::MissingToken => fixed(StatusCode::UNAUTHORIZED, &MISSING_TOKEN, None),
            ApiError::InvalidToken(reason) => dynamic(
                StatusCode::UNAUTHORIZED,
                "/problems/invalid-token",
                "Unauthorized",
                &format!("invalid bearer token: {reason}"),
                None,
            ),
            ApiError::InsufficientScope(scope) => dynamic(
                StatusCode::FORBIDDEN,
                "/problems/insufficient-scope",
                "Forbidden",
                &format!("this request needs a token with the {scope} scope"),
                None,
            ),
            ApiError::Internal(cause) => {
                fixed(StatusCode::INTERNAL_SERVER_ERROR, &INTERNAL, Some(cause))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = problem_response(self.to_problem());
        let headers = response.headers_mut();
        match self {
            ApiError::RateLimited { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            ApiError::MissingToken => {
                headers.insert(header::WWW_AUTHENTICATE, BEARER_CHALLENGE.clone());
            }
            ApiError::InvalidToken(reason) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    bearer_error("invalid_token", "error_description", reason),
                );
            }
            ApiError::InsufficientScope(scope) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    bearer_error("insufficient_scope", "scope", scope),
                );
            }
            _ => {}
        }
        response
    }
}

/// The `WWW-Authenticate` challenge of a request without a token (RFC 6750, section 3).
static BEARER_CHALLENGE: HeaderValue = HeaderValue::from_static("Bearer realm=\"peregrine\"");

/// Builds a Bearer challenge with an `error` code and one more parameter. `value` is one of
/// the fixed reasons or scope names, which contain no quotes or control characters.
fn bearer_error(error: &str, parameter: &str, value: &str) -> HeaderValue {
    let challenge =
        format!("Bearer realm=\"peregrine\", error=\"{error}\", {parameter}=\"{value}\"");
    HeaderValue::from_str(&challenge).unwrap_or_else(|_| BEARER_CHALLENGE.clone())
}

/// Builds an empty-bodied response that carries `problem` for the problem middleware to render.
pub fn problem_response(problem: Problem) -> Response {
    let mut response = problem.status.into_response();
    if problem.status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    }
    response.extensions_mut().insert(problem);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_valid_json_with_request_id() {
        let problem = ApiError::Validation(vec![FieldError {
            field: "name",
            message: "must not be empty".into(),
        }])
        .to_problem();
        let body: serde_json::Value = serde_json::from_str(&problem.body("abc-1")).unwrap();
        assert_eq!(body["status"], 422);
        assert_eq!(body["request_id"], "abc-1");
        assert_eq!(body["errors"][0]["field"], "name");
        assert_eq!(body["detail"], "invalid fields: name");
    }

    #[test]
    fn fixed_problem_is_rendered_once() {
        let first = ApiError::RouteNotFound.to_problem();
        let second = ApiError::RouteNotFound.to_problem();
        assert!(matches!(first.body_prefix, Cow::Borrowed(_)));
        assert!(std::ptr::eq(
            first.body_prefix.as_ptr(),
            second.body_prefix.as_ptr()
        ));
    }

    #[test]
    fn internal_cause_stays_out_of_body() {
        let problem = ApiError::Internal("secret table broke".into()).to_problem();
        assert!(!problem.body("id").contains("secret"));
        assert_eq!(problem.cause.as_deref(), Some("secret table broke"));
    }
}
