//! Extractors that turn every malformed input into an [`ApiError`] with a clear detail, in
//! place of axum's plain-text rejections.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::{HeaderMap, header, request::Parts};
use serde::de::DeserializeOwned;

use super::AppState;
use super::problem::ApiError;
use crate::domain::UserId;

/// A JSON request body: `Content-Type: application/json` (charset, if given, utf-8), at most
/// the configured body limit, one JSON value with no trailing data, parsed into `T`. A value
/// of the wrong type is reported with the path of its field, such as `field 'name'`.
///
/// serde_json stops at 128 levels of nesting, and the body types reject unknown fields, so
/// deeply nested input is refused after reading at most the body limit.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            let sent = request.headers().get(header::CONTENT_TYPE);
            let content_type =
                sent.map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
            return Err(ApiError::UnsupportedMediaType(content_type));
        }
        let limit = state.body_limit;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(ApiError::PayloadTooLarge { limit });
        }

        let bytes = read_body(request.into_body(), limit).await?;
        // RFC 8259 lets a parser ignore a byte order mark, and some clients send one.
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
        // serde reads a struct from a JSON array too, by position; every body here is an object.
        if bytes
            .iter()
            .find(|byte| !byte.is_ascii_whitespace())
            .is_some_and(|&byte| byte != b'{')
        {
            return Err(ApiError::BadRequest(
                "invalid JSON body: expected a JSON object".to_owned(),
            ));
        }
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
            let path = err.path().to_string();
            let err = err.into_inner();
            if path == "." {
                ApiError::BadRequest(format!("invalid JSON body: {err}"))
            } else {
                ApiError::BadRequest(format!("invalid JSON body: field '{path}': {err}"))
            }
        })?;
        deserializer
            .end()
            .map_err(|err| ApiError::BadRequest(format!("invalid JSON body: {err}")))?;
        Ok(JsonBody(value))
    }
}

/// Reads at most `limit` bytes; a longer body, chunked or not, stops the read at the limit.
async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|err| {
        let too_long = std::error::Error::source(&err)
            .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if too_long {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::BadRequest(format!("failed to read the request body: {err}"))
        }
    })
}

/// Accepts `application/json`, with at most a `charset=utf-8` parameter, in any letter case.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut parts = value.split(';').map(str::trim);
    let media_type = parts.next().unwrap_or_default();
    media_type.eq_ignore_ascii_case("application/json")
        && parts.all(|parameter| {
            let normalized = parameter.replace(' ', "").to_ascii_lowercase();
            normalized == "charset=utf-8" || normalized == "charset=\"utf-8\""
        })
}

/// The `{id}` path segment of a user route, parsed as a [`UserId`].
pub struct UserIdPath(pub UserId);

impl<S: Send + Sync> FromRequestParts<S> for UserIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let invalid = |segment: &str, reason: &dyn std::fmt::Display| {
            ApiError::BadRequest(format!("invalid user id {segment:?}: {reason}"))
        };
        let Path(text) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| {
                // The segment is not UTF-8 once percent-decoded, so show it as sent.
                let raw = parts.uri.path().rsplit('/').next().unwrap_or_default();
                invalid(raw, &"must be a positive integer")
            })?;
        UserId::parse(&text)
            .map(UserIdPath)
            .map_err(|err| invalid(&text, &err))
    }
}

/// Items per page when a list request gives no `limit`.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// The largest `limit` a list request may give.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Parses `after` (the `next_cursor` of a previous page, an id that `parse_cursor` reads)
/// and `limit` from a list request's query string. Other parameters are ignored.
pub fn page_parameters<Cursor, E>(
    query: &str,
    parse_cursor: impl Fn(&str) -> Result<Cursor, E>,
) -> Result<(Option<Cursor>, u32), ApiError> {
    let mut after = None;
    let mut limit = DEFAULT_PAGE_SIZE;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "after" => {
                let cursor = parse_cursor(&value).map_err(|_| {
                    ApiError::BadRequest(format!(
                        "invalid after {value:?}: expected the next_cursor of a previous page"
                    ))
                })?;
                after = Some(cursor);
            }
            "limit" => {
                limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|limit| (1..=MAX_PAGE_SIZE).contains(limit))
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "invalid limit {value:?}: expected an integer from 1 to {MAX_PAGE_SIZE}"
                        ))
                    })?;
            }
            _ => {}
        }
    }
    Ok((after, limit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    use crate::domain::OrderId;

    fn headers(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap(),
        );
        headers
    }

    #[test]
    fn json_content_types_accepted() {
        for value in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=UTF-8",
        ] {
            assert!(is_json(&headers(value)), "{value}");
        }
    }

    #[test]
    fn other_content_types_rejected() {
        for value in [
            "text/plain",
            "application/json; charset=latin1",
            "application/jsonx",
            "application/x-www-form-urlencoded",
            "",
        ] {
            assert!(!is_json(&headers(value)), "{value}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn page_defaults_and_bounds() {
        assert_eq!(
            page_parameters("", UserId::parse).unwrap(),
            (None, DEFAULT_PAGE_SIZE)
        );
        assert_eq!(
            page_parameters("limit=1000&after=7", UserId::parse).unwrap(),
            (Some(UserId::parse("7").unwrap()), 1000)
        );
        assert_eq!(
            page_parameters("limit=3&after=9", OrderId::parse).unwrap(),
            (Some(OrderId::parse("9").unwrap()), 3)
        );
        for query in [
            "limit=0",
            "limit=1001",
            "limit=abc",
            "limit=-1",
            "after=0",
            "after=-2",
            "after=x",
        ] {
            assert!(page_parameters(query, UserId::parse).is_err(), "{query}");
            assert!(page_parameters(query, OrderId::parse).is_err(), "{query}");
        }
    }
}
