//! `/api/v1/users`: create, read, list, update and delete users.
//!
//! Each handler checks what the caller's token allows, parses and validates its input, calls
//! the store, and maps the store's error kinds to statuses. No handler depends on which
//! database is behind the store. [`crate::auth::principal`] states the access policy.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::extract::{JsonBody, UserIdPath, page_parameters};
use super::openapi::{PageParameters, UserIdParameter};
use super::problem::{ApiError, FieldError, ProblemDetails};
use crate::auth::{Access, Principal, Scope};
use crate::domain::{Email, NewUser, User, UserId, UserName, UserPatch};
use crate::store::StoreError;

/// The body of `POST /api/v1/users`. Both fields are required, but they are optional here so
/// that a missing one is reported as an invalid field (422) rather than as malformed JSON (400).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(description = "The new user; both fields are required.")]
pub struct CreateUserBody {
    /// Normalized to Unicode NFC and trimmed of white space before the checks: 1 to 100
    /// characters (counted after normalization), with no control characters and no
    /// bidirectional formatting characters (U+202A to U+202E, U+2066 to U+2069).
    // The pattern: optional white space, then 1 to 100 characters that contain no control or
    // bidirectional formatting character and neither start nor end with white space, then
    // optional white space. `name_pattern_matches_validation` checks it against UserName::parse.
    #[schema(
        value_type = String,
        required = true,
        pattern = r"^[\t-\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028-\u202F\u205F\u2066-\u2069\u3000](?:[^\u0000-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]{0,98}[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028-\u202F\u205F\u2066-\u2069\u3000])?[\t-\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$",
        example = "Ada Lovelace"
    )]
    name: Option<String>,
    /// A plain address with a dotted domain, at most 254 bytes once trimmed. Letter case is
    /// kept, but two addresses that differ only in case belong to one user.
    #[schema(
        value_type = String,
        required = true,
        format = Email,
        max_length = 254,
        example = "ada@example.com"
    )]
    email: Option<String>,
}

/// The body of `PATCH /api/v1/users/{id}`: the fields to change, at least one of them. A field
/// that is null counts as absent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserBody {
    name: Option<String>,
    email: Option<String>,
}

/// One page of users, and the cursor that fetches the next page (`null` on the last page).
#[derive(Debug, Serialize, ToSchema)]
#[schema(description = "One page of users in id order.")]
pub struct UserPage {
    items: Vec<User>,
    /// The `after` value of the next page, or null on the last page.
    #[schema(pattern = "^[1-9][0-9]{0,18}$", example = "51")]
    next_cursor: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "users",
    operation_id = "create_user",
    request_body = CreateUserBody,
    responses(
        (status = 201, description = "The user, created", body = User,
            headers(("location" = String, description = "The path of the new user")),
            links(
                ("GetUser" = (operation_id = "get_user", parameters(("id" = "$response.body#/id")))),
                ("UpdateUser" = (operation_id = "update_user", parameters(("id" = "$response.body#/id")))),
                ("DeleteUser" = (operation_id = "delete_user", parameters(("id" = "$response.body#/id")))),
            )),
        (status = 409, description = "Another user has this email address",
            body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "A field is missing or invalid; `errors` names each one",
            body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    principal: Principal,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateUserBody>,
) -> Result<Response, ApiError> {
    principal.require(Scope::UsersWrite)?;

    let mut errors = Vec::new();
    let name = required(&mut errors, "name", body.name, UserName::parse);
    let email = required(&mut errors, "email", body.email, Email::parse);
    let (Some(name), Some(email)) = (name, email) else {
        return Err(ApiError::Validation(errors));
    };

    let user = state
        .store
        .create_user(&NewUser {
            name,
            email: email.clone(),
        })
        .await
        .map_err(|err| match err {
            StoreError::Conflict { .. } => conflict(&email),
            other => store_failure(other),
        })?;

    let location = HeaderValue::from_str(&format!("/api/v1/users/{}", user.id))
        .expect("a path of ASCII digits is a valid header value");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(user),
    )
        .into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/users/{id}",
    tag = "users",
    operation_id = "get_user",
    params(UserIdParameter),
    responses(
        (status = 200, description = "The user", body = User),
        (status = 404, description = "No user has this id",
            body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    principal: Principal,
    State(state): State<AppState>,
    UserIdPath(id): UserIdPath,
) -> Result<Json<User>, ApiError> {
    principal.authorize_owner(id, Access::Read, || user_not_found(id))?;
    match state.store.get_user(id).await {
        Ok(user) => Ok(Json(user)),
        Err(err) => Err(store_error_for_id(err, id)),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "users",
    operation_id = "list_users",
    params(PageParameters),
    responses(
        (status = 200, description = "One page of users in id order", body = UserPage),
    )
)]
pub async fn list(
    principal: Principal,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<UserPage>, ApiError> {
    principal.require(Scope::Admin)?;
    let (after, limit) = page_parameters(query.as_deref().unwrap_or_default(), UserId::parse)?;

    // One row more than the page shows whether a next page exists.
    let mut items = state
        .store
        .list_users(after, limit + 1)
        .await
        .map_err(store_failure)?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|user| user.id.to_string())
    } else {
        None
    };
    Ok(Json(UserPage { items, next_cursor }))
}

#[utoipa::path(
    patch,
    path = "/api/v1/users/{id}",
    tag = "users",
    operation_id = "update_user",
    params(UserIdParameter),
    request_body = UpdateUserBody,
    responses(
        (status = 200, description = "The user, changed", body = User,
            links(("GetUser" = (operation_id = "get_user", parameters(("id" = "$request.path.id")))))),
        (status = 404, description = "No user has this id",
            body = ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "Another user has this email address",
            body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "Neither field is given, or a field is invalid; `errors` names each one",
            body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn update(
    principal: Principal,
    State(state): State<AppState>,
    UserIdPath(id): UserIdPath,
    JsonBody(body): JsonBody<UpdateUserBody>,
) -> Result<Json<User>, ApiError> {
    principal.authorize_owner(id, Access::Write, || user_not_found(id))?;

    if body.name.is_none() && body.email.is_none() {
        let message = "at least one of name and email is required";
        return Err(ApiError::Validation(
            ["name", "email"]
                .map(|field| FieldError {
                    field,
                    message: message.to_owned(),
                })
                .to_vec(),
        ));
    }
    let mut errors = Vec::new();
    let name = optional(&mut errors, "name", body.name, UserName::parse);
    let email = optional(&mut errors, "email", body.email, Email::parse);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }

    let patch = UserPatch {
        name,
        email: email.clone(),
    };
    match state.store.update_user(id, &patch).await {
        Ok(user) => Ok(Json(user)),
        Err(StoreError::Conflict { .. }) if email.is_some() => {
            Err(conflict(email.as_ref().expect("checked by the guard")))
        }
        Err(err) => Err(store_error_for_id(err, id)),
    }
}

#[utoipa::path(
    delete,
    path = "/api/v1/users/{id}",
    tag = "users",
    operation_id = "delete_user",
    params(UserIdParameter),
    responses(
        (status = 204, description = "The user is deleted",
            links(("GetUser" = (operation_id = "get_user", parameters(("id" = "$request.path.id")))))),
        (status = 404, description = "No user has this id",
            body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn delete(
    principal: Principal,
    State(state): State<AppState>,
    UserIdPath(id): UserIdPath,
) -> Result<StatusCode, ApiError> {
    principal.authorize_owner(id, Access::Write, || user_not_found(id))?;
    match state.store.delete_user(id).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(err) => Err(store_error_for_id(err, id)),
    }
}

/// Validates a required field, recording a missing or invalid value in `errors`.
fn required<T, E: std::fmt::Display>(
    errors: &mut Vec<FieldError>,
    field: &'static str,
    value: Option<String>,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Option<T> {
    match value {
        None => {
            errors.push(FieldError {
                field,
                message: "is required".to_owned(),
            });
            None
        }
        Some(text) => optional(errors, field, Some(text), parse),
    }
}

/// Validates a field that may be absent, recording an invalid value in `errors`.
fn optional<T, E: std::fmt::Display>(
    errors: &mut Vec<FieldError>,
    field: &'static str,
    value: Option<String>,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Option<T> {
    match parse(&value?) {
        Ok(parsed) => Some(parsed),
        Err(err) => {
            errors.push(FieldError {
                field,
                message: err.to_string(),
            });
            None
        }
    }
}

fn conflict(email: &Email) -> ApiError {
    ApiError::Conflict(format!(
        "a user with email {:?} already exists",
        email.as_str()
    ))
}

/// Maps a store error on the user `id`: no row means no such user.
fn store_error_for_id(err: StoreError, id: UserId) -> ApiError {
    match err {
        StoreError::NotFound => user_not_found(id),
        other => store_failure(other),
    }
}

/// Returns the error of a user id that does not exist, which is also the error of another
/// user's id, so that a token cannot tell the two apart.
fn user_not_found(id: UserId) -> ApiError {
    ApiError::NotFound(format!("no user with id {id}"))
}

/// Maps the store errors that do not depend on the resource.
fn store_failure(err: StoreError) -> ApiError {
    match err {
        StoreError::Conflict { field } => ApiError::Conflict(format!("{field} is already taken")),
        StoreError::Unavailable(cause) => ApiError::Unavailable(cause.to_string()),
        StoreError::NotFound | StoreError::Internal(_) => ApiError::Internal(err.to_string()),
    }
}
