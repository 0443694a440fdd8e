//! `/api/v1/users/{id}/preferences`: read and replace a user's preferences, with optimistic
//! concurrency through `ETag` and `If-Match`.
//!
//! The ETag is strong, `"N"` for version N (`"0"` for the defaults of a user who never saved
//! any): one version always has the same JSON body, and `If-Match` compares strongly, so a
//! weak tag (`W/"N"`) never matches. `PUT` requires `If-Match`, and without it the response is
//! 428, so no client overwrites a change it has not seen. A `PUT` whose document equals the
//! stored one returns 200 with the current ETag whatever its `If-Match`, as RFC 9110 section
//! 13.1.1 allows for a change that is already applied, so a retried `PUT` succeeds.

use std::borrow::Cow;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::extract::{JsonBody, UserIdPath};
use super::openapi::{UserIdParameter, time_zone_schema};
use super::orders::{check, missing, user_store_error};
use super::problem::{ApiError, Problem, ProblemDetails, problem_response};
use crate::auth::{Access, Principal};
use crate::domain::{
    LanguageTag, Notifications, Preferences, Theme, TimeZone, VersionedPreferences,
};
use crate::store::{ExpectedVersion, PutPreferences, StoreError};

/// The body of `PUT /api/v1/users/{id}/preferences`: the whole document, every field
/// required. The fields are optional here so that a missing one is reported as an invalid
/// field (422) rather than as malformed JSON (400).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(description = "The whole preferences document; every field is required.")]
pub struct PreferencesBody {
    /// A BCP 47 language tag registered with IANA, such as `en` or `pt-BR`, in any letter case.
    #[schema(value_type = String, required = true, format = "language-tag", min_length = 1, max_length = 64, example = "en-US")]
    language: Option<String>,
    /// A time zone name of the IANA tz database, spelled exactly.
    #[schema(required = true, schema_with = time_zone_schema)]
    time_zone: Option<String>,
    #[schema(value_type = NotificationsBody, required = true)]
    notifications: Option<NotificationsBody>,
    #[schema(value_type = Theme, required = true)]
    theme: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(description = "The channels on which the user accepts notifications; all are required.")]
pub struct NotificationsBody {
    #[schema(value_type = bool, required = true)]
    email: Option<bool>,
    #[schema(value_type = bool, required = true)]
    sms: Option<bool>,
    #[schema(value_type = bool, required = true)]
    push: Option<bool>,
}

#[utoipa::path(
    get,
    path = "/api/v1/users/{id}/preferences",
    tag = "preferences",
    operation_id = "get_preferences",
    params(UserIdParameter),
    responses(
        (status = 200, description = "The preferences, or the defaults at ETag \"0\" when none were saved",
            body = Preferences, headers(("etag" = String, description = "The version, such as `\"3\"`"))),
        (status = 404, description = "No user has this id", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    principal: Principal,
    State(state): State<AppState>,
    UserIdPath(user): UserIdPath,
) -> Result<Response, ApiError> {
    principal.authorize_owner(user, Access::Read, || {
        user_store_error(StoreError::NotFound, user)
    })?;
    let current = state
        .store
        .get_preferences(user)
        .await
        .map_err(|err| user_store_error(err, user))?;
    Ok(with_etag(StatusCode::OK, current))
}

#[utoipa::path(
    put,
    path = "/api/v1/users/{id}/preferences",
    tag = "preferences",
    operation_id = "put_preferences",
    params(
        UserIdParameter,
        ("if-match" = String, Header,
            pattern = r#"^[ \t]*(\*|(W/)?"[\x21\x23-\x7E]*"([ \t]*,[ \t]*(W/)?"[\x21\x23-\x7E]*")*)?[ \t]*$"#,
            description = "`*`, or the ETag of a GET (`\"0\"` before the first save)"),
    ),
    request_body = PreferencesBody,
    responses(
        (status = 200, description = "The preferences, saved", body = Preferences,
            headers(("etag" = String, description = "The new version"))),
        (status = 404, description = "No user has this id", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 412, description = "If-Match does not name the current version, which the `ETag` header carries", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "A field is missing or invalid; `errors` names each one", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 428, description = "The request has no If-Match header", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn put(
    principal: Principal,
    State(state): State<AppState>,
    UserIdPath(user): UserIdPath,
    headers: HeaderMap,
    JsonBody(body): JsonBody<PreferencesBody>,
) -> Result<Response, ApiError> {
    principal.authorize_owner(user, Access::Write, || {
        user_store_error(StoreError::NotFound, user)
    })?;
    let Some(expected) = expected_version(&headers)? else {
        return Ok(precondition_required());
    };
    let preferences = validate(body)?;

    let outcome = state
        .store
        .put_preferences(user, &expected, &preferences)
        .await
        .map_err(|err| user_store_error(err, user))?;
    Ok(match outcome {
        PutPreferences::Saved(saved) | PutPreferences::Unchanged(saved) => {
            with_etag(StatusCode::OK, saved)
        }
        PutPreferences::VersionMismatch(current) => precondition_failed(&current),
    })
}

/// Checks every field of the document, reporting each invalid or missing one.
fn validate(body: PreferencesBody) -> Result<Preferences, ApiError> {
    let mut errors = Vec::new();
    let language = match body.language {
        None => missing(&mut errors, "language"),
        Some(text) => check(&mut errors, "language", LanguageTag::parse(&text)),
    };
    let time_zone = match body.time_zone {
        None => missing(&mut errors, "time_zone"),
        Some(name) => check(&mut errors, "time_zone", TimeZone::parse(&name)),
    };
    let notifications = match body.notifications {
        None => missing(&mut errors, "notifications"),
        Some(channels) => {
            let email = channels
                .email
                .or_else(|| missing(&mut errors, "notifications.email"));
            let sms = channels
                .sms
                .or_else(|| missing(&mut errors, "notifications.sms"));
            let push = channels
                .push
                .or_else(|| missing(&mut errors, "notifications.push"));
            match (email, sms, push) {
                (Some(email), Some(sms), Some(push)) => Some(Notifications { email, sms, push }),
                _ => None,
            }
        }
    };
    let theme = match body.theme {
        None => missing(&mut errors, "theme"),
        Some(text) => check(&mut errors, "theme", Theme::parse(&text)),
    };
    match (language, time_zone, notifications, theme) {
        (Some(language), Some(time_zone), Some(notifications), Some(theme)) => Ok(Preferences {
            language,
            time_zone,
            notifications,
            theme,
        }),
        _ => Err(ApiError::Validation(errors)),
    }
}

/// Parses `If-Match`: `None` when absent, [`ExpectedVersion::Any`] for `*` alone, else the
/// versions of the strong ETags listed. Weak and foreign tags match no version. Anything else
/// is a 400, `"1", *` too, because RFC 9110 (section 13.1.1) allows `*` only as the whole field.
fn expected_version(headers: &HeaderMap) -> Result<Option<ExpectedVersion>, ApiError> {
    let mut values = headers.get_all(header::IF_MATCH).iter().peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    let mut items = Vec::new();
    for value in values {
        let text = value.to_str().map_err(|_| invalid_if_match("not ASCII"))?;
        items.extend(list_elements(text));
    }
    if items == ["*"] {
        return Ok(Some(ExpectedVersion::Any));
    }
    let mut versions = Vec::new();
    for &item in &items {
        if item == "*" {
            return Err(ApiError::BadRequest(format!(
                "invalid If-Match {:?}: * must be the whole value; send * alone or a list of ETags",
                items.join(", ")
            )));
        }
        let (weak, tag) = match item.strip_prefix("W/") {
            Some(tag) => (true, tag),
            None => (false, item),
        };
        let opaque = tag
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
            .filter(|opaque| opaque.bytes().all(is_entity_tag_byte))
            .ok_or_else(|| invalid_if_match(item))?;
        if !weak && let Ok(version) = opaque.parse::<i64>() {
            versions.push(version);
        }
    }
    Ok(Some(ExpectedVersion::OneOf(versions)))
}

/// Tells whether `byte` may appear between an entity tag's quotes (RFC 9110, section 8.8.3).
/// That is visible ASCII other than the quote, so no spaces or control characters.
fn is_entity_tag_byte(byte: u8) -> bool {
    byte == 0x21 || (0x23..=0x7e).contains(&byte)
}

/// Splits a list header's value at the commas outside quotes, because an entity tag may
/// contain commas (RFC 9110, section 8.8.3), and drops empty elements.
fn list_elements(text: &str) -> Vec<&str> {
    let mut elements = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (index, character) in text.char_indices() {
        match character {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                elements.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    elements.push(&text[start..]);
    elements
        .into_iter()
        .map(str::trim)
        .filter(|element| !element.is_empty())
        .collect()
}

fn invalid_if_match(item: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "invalid If-Match {item:?}: expected * or the ETag of a GET, such as \"3\""
    ))
}

fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\""))
        .expect("a quoted integer is a valid header value")
}

fn with_etag(status: StatusCode, current: VersionedPreferences) -> Response {
    (
        status,
        [(header::ETAG, etag(current.version))],
        Json(current.preferences),
    )
        .into_response()
}

fn precondition_required() -> Response {
    problem(
        StatusCode::PRECONDITION_REQUIRED,
        "/problems/precondition-required",
        "a PUT of preferences needs If-Match with the ETag of a GET (\"0\" before the first \
         save), or * to overwrite whatever is stored",
    )
}

/// Builds the 412 response, with the current ETag so the client can tell how far behind it is.
fn precondition_failed(current: &VersionedPreferences) -> Response {
    let mut response = problem(
        StatusCode::PRECONDITION_FAILED,
        "/problems/precondition-failed",
        &format!(
            "the preferences are at ETag \"{}\", which If-Match does not name; GET them, \
             apply the change again and send the new ETag",
            current.version
        ),
    );
    response
        .headers_mut()
        .insert(header::ETAG, etag(current.version));
    response
}

/// Builds a problem response for a status that [`ApiError`] has no variant for; the problem
/// middleware adds the request id, as for every other problem.
pub(super) fn problem(status: StatusCode, kind: &str, detail: &str) -> Response {
    #[derive(Serialize)]
    struct Fields<'a> {
        r#type: &'a str,
        title: &'a str,
        status: u16,
        detail: &'a str,
    }
    let title = status.canonical_reason().unwrap_or("Error");
    let fields = Fields {
        r#type: kind,
        title,
        status: status.as_u16(),
        detail,
    };
    let mut body = serde_json::to_string(&fields).expect("problem fields serialize to JSON");
    // The middleware appends `,"request_id":"..."}`.
    body.pop();
    problem_response(Problem {
        status,
        body_prefix: Cow::Owned(body),
        cause: Some(detail.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn if_match(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::IF_MATCH, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn if_match_absent_any_and_lists() {
        assert_eq!(expected_version(&HeaderMap::new()).unwrap(), None);
        assert_eq!(
            expected_version(&if_match(&["*"])).unwrap(),
            Some(ExpectedVersion::Any)
        );
        assert_eq!(
            expected_version(&if_match(&["\"1\", \"4\"", "\"7\""])).unwrap(),
            Some(ExpectedVersion::OneOf(vec![1, 4, 7]))
        );
    }

    #[test]
    fn if_match_tags_may_contain_commas() {
        assert_eq!(
            expected_version(&if_match(&["\"a,b\", \"2\""])).unwrap(),
            Some(ExpectedVersion::OneOf(vec![2]))
        );
    }

    #[test]
    fn if_match_weak_and_foreign_tags_match_nothing() {
        assert_eq!(
            expected_version(&if_match(&["W/\"1\", \"abc\""])).unwrap(),
            Some(ExpectedVersion::OneOf(Vec::new()))
        );
    }

    #[test]
    fn if_match_malformed_is_rejected() {
        for value in ["1", "\"1", "W/1", "\"a\"b\"", "\"a b\"", "\"a\tb\""] {
            assert!(expected_version(&if_match(&[value])).is_err(), "{value}");
        }
    }

    #[test]
    fn if_match_star_in_list_is_rejected() {
        let lists: [&[&str]; 4] = [&["\"1\", *"], &["*, \"0\""], &["*", "\"1\""], &["*", "*"]];
        for values in lists {
            assert!(expected_version(&if_match(values)).is_err(), "{values:?}");
        }
    }
}
