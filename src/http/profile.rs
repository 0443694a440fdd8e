//! `/api/v1/users/{id}/profile`: a user, their latest orders and their preferences in one
//! response, read concurrently by the store.
//!
//! The first read to fail decides the status: 404 for a missing user, 503 when the database
//! is unavailable. Past PROFILE_TIMEOUT the response is 504 and the reads are cancelled.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::extract::UserIdPath;
use super::orders::user_store_error;
use super::preferences::problem;
use crate::domain::{Order, Preferences, User};
use crate::store::ProfileError;

/// Orders a profile shows: the newest ones.
pub const PROFILE_ORDERS: u32 = 10;

/// A user with their newest orders (at most [`PROFILE_ORDERS`], newest first) and their
/// preferences.
#[derive(Debug, Serialize)]
pub struct ProfileBody {
    user: User,
    orders: Vec<Order>,
    preferences: Preferences,
}

pub async fn get(State(state): State<AppState>, UserIdPath(user): UserIdPath) -> Response {
    match state.store.get_profile(user, PROFILE_ORDERS).await {
        Ok(profile) => Json(ProfileBody {
            user: profile.user,
            orders: profile.orders,
            preferences: profile.preferences.preferences,
        })
        .into_response(),
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
