//! `/api/v1/users/{id}/profile`: a user, their latest orders and their preferences in one
//! response, read concurrently by the store.
//!
//! The first read to fail decides the status: 404 for a missing user, 503 when the database
//! is unavailable. Past PROFILE_TIMEOUT the response is 504 and the reads are cancelled.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::UserIdPath;
use super::openapi::UserIdParameter;
use super::orders::user_store_error;
use super::preferences::problem;
use super::problem::ProblemDetails;
use super::{AppState, json_response};
use crate::auth::{Access, Principal};
use crate::domain::{Order, Preferences, User};
use crate::store::{ProfileError, StoreError};

/// Orders a profile shows: the newest ones.
pub const PROFILE_ORDERS: u32 = 10;

/// Bytes the response body's buffer starts with: a profile with 10 orders takes about 1.5 KiB.
const PROFILE_BODY_CAPACITY: usize = 2048;

/// A user with their newest orders (at most [`PROFILE_ORDERS`], newest first) and their
/// preferences.
#[derive(Debug, Serialize, ToSchema)]
#[schema(
    description = "A user with their newest orders (at most 10, newest first) and their preferences."
)]
pub struct ProfileBody {
    user: User,
    orders: Vec<Order>,
    preferences: Preferences,
}

#[utoipa::path(
    get,
    path = "/api/v1/users/{id}/profile",
    tag = "profile",
    operation_id = "get_profile",
    params(UserIdParameter),
    responses(
        (status = 200, description = "The user, their newest orders and their preferences", body = ProfileBody),
        (status = 404, description = "No user has this id", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 504, description = "The reads did not finish within `PROFILE_TIMEOUT`", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    principal: Principal,
    State(state): State<AppState>,
    UserIdPath(user): UserIdPath,
) -> Response {
    if let Err(denied) = principal.authorize_owner(user, Access::Read, || {
        user_store_error(StoreError::NotFound, user)
    }) {
        return denied.into_response();
    }
    match state.store.get_profile(user, PROFILE_ORDERS).await {
        Ok(profile) => json_response(
            &ProfileBody {
                user: profile.user,
                orders: profile.orders,
                preferences: profile.preferences.preferences,
            },
            PROFILE_BODY_CAPACITY,
        ),
        Err(ProfileError::Store(err)) => user_store_error(err, user).into_response(),
        Err(ProfileError::TimedOut(limit)) => problem(
            StatusCode::GATEWAY_TIMEOUT,
            "/problems/profile-timeout",
            &format!(
                "the profile's reads did not finish within PROFILE_TIMEOUT ({}); retry later",
                humantime::format_duration(limit)
            ),
        ),
    }
}
