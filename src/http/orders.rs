//! `/api/v1/users/{id}/orders` and `/api/v1/orders/{id}`: create a user's orders, list them
//! newest first, and read one.
//!
//! Each handler parses and validates its input, calls the store, and maps the store's error
//! kinds to statuses. No handler depends on which database is behind the store.

use axum::Json;
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::extract::{JsonBody, UserIdPath, page_parameters};
use super::openapi::{OrderIdParameter, OrderPageParameters, UserIdParameter, currency_schema};
use super::problem::{ApiError, FieldError, ProblemDetails};
use crate::auth::{Access, Principal};
use crate::domain::{Amount, Currency, NewOrder, Order, OrderId, OrderStatus, UserId};
use crate::store::StoreError;

/// The body of `POST /api/v1/users/{id}/orders`. `amount` and `currency` are required and
/// `status` defaults to `pending`. All are optional here so that a missing one is reported
/// as an invalid field (422) rather than as malformed JSON (400).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(description = "The new order; `amount` and `currency` are required.")]
pub struct CreateOrderBody {
    /// The amount in the minor unit of the currency (cents for EUR), as a plain integer.
    #[schema(value_type = i64, required = true, minimum = 1, maximum = 1000000000000_i64, example = 1999)]
    amount: Option<serde_json::Number>,
    /// An active ISO 4217 currency code with a minor unit, in capitals.
    #[schema(required = true, schema_with = currency_schema)]
    currency: Option<String>,
    /// The order's stage; `pending` when absent or null.
    #[schema(value_type = Option<OrderStatus>)]
    status: Option<String>,
}

/// One page of a user's orders, newest first, and the cursor that fetches the next page
/// (`null` on the last page).
#[derive(Debug, Serialize, ToSchema)]
#[schema(description = "One page of a user's orders, newest first.")]
pub struct OrderPage {
    items: Vec<Order>,
    /// The `after` value of the next page, or null on the last page.
    #[schema(pattern = "^[1-9][0-9]{0,18}$", example = "51")]
    next_cursor: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/users/{id}/orders",
    tag = "orders",
    operation_id = "create_order",
    params(UserIdParameter),
    request_body = CreateOrderBody,
    responses(
        (status = 201, description = "The order, created", body = Order,
            headers(("location" = String, description = "The path of the new order")),
            links(("GetOrder" = (operation_id = "get_order", parameters(("id" = "$response.body#/id")))))),
        (status = 404, description = "No user has this id", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "A field is missing or invalid; `errors` names each one", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    principal: Principal,
    State(state): State<AppState>,
    UserIdPath(user): UserIdPath,
    JsonBody(body): JsonBody<CreateOrderBody>,
) -> Result<Response, ApiError> {
    principal.authorize_owner(user, Access::Write, || {
        user_store_error(StoreError::NotFound, user)
    })?;
    let mut errors = Vec::new();
    let amount = match body.amount {
        None => missing(&mut errors, "amount"),
        Some(number) => check(&mut errors, "amount", Amount::parse(&number)),
    };
    let currency = match body.currency {
        None => missing(&mut errors, "currency"),
        Some(code) => check(&mut errors, "currency", Currency::parse(&code)),
    };
    let status = match body.status {
        None => Some(OrderStatus::Pending),
        Some(text) => check(&mut errors, "status", OrderStatus::parse(&text)),
    };
    let (Some(amount), Some(currency), Some(status)) = (amount, currency, status) else {
        return Err(ApiError::Validation(errors));
    };

    let order = NewOrder {
        amount,
        currency,
        status,
    };
    let order = state
        .store
        .create_order(user, &order)
        .await
        .map_err(|err| user_store_error(err, user))?;

    let location = HeaderValue::from_str(&format!("/api/v1/orders/{}", order.id))
        .expect("a path of ASCII digits is a valid header value");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(order),
    )
        .into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/orders/{id}",
    tag = "orders",
    operation_id = "get_order",
    params(OrderIdParameter),
    responses(
        (status = 200, description = "The order", body = Order),
        (status = 404, description = "No order has this id", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    principal: Principal,
    State(state): State<AppState>,
    OrderIdPath(id): OrderIdPath,
) -> Result<Json<Order>, ApiError> {
    let not_found = || ApiError::NotFound(format!("no order with id {id}"));
    match state.store.get_order(id).await {
        Ok(order) => {
            principal.authorize_owner(order.user_id, Access::Read, not_found)?;
            Ok(Json(order))
        }
        Err(StoreError::NotFound) => Err(not_found()),
        Err(err) => Err(store_failure(err)),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/users/{id}/orders",
    tag = "orders",
    operation_id = "list_orders",
    params(UserIdParameter, OrderPageParameters),
    responses(
        (status = 200, description = "One page of the user's orders, newest first", body = OrderPage),
        (status = 404, description = "No user has this id", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    principal: Principal,
    State(state): State<AppState>,
    UserIdPath(user): UserIdPath,
    RawQuery(query): RawQuery,
) -> Result<Json<OrderPage>, ApiError> {
    principal.authorize_owner(user, Access::Read, || {
        user_store_error(StoreError::NotFound, user)
    })?;
    let (before, limit) = page_parameters(query.as_deref().unwrap_or_default(), OrderId::parse)?;

    // One row more than the page shows whether a next page exists.
    let mut items = state
        .store
        .list_orders(user, before, limit + 1)
        .await
        .map_err(|err| user_store_error(err, user))?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|order| order.id.to_string())
    } else {
        None
    };
    Ok(Json(OrderPage { items, next_cursor }))
}

/// The `{id}` path segment of an order route, parsed as an [`OrderId`].
pub struct OrderIdPath(pub OrderId);

impl<S: Send + Sync> FromRequestParts<S> for OrderIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let invalid = |segment: &str, reason: &dyn std::fmt::Display| {
            ApiError::BadRequest(format!("invalid order id {segment:?}: {reason}"))
        };
        let Path(text) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| {
                // The segment is not UTF-8 once percent-decoded, so show it as sent.
                let raw = parts.uri.path().rsplit('/').next().unwrap_or_default();
                invalid(raw, &"must be a positive integer")
            })?;
        OrderId::parse(&text)
            .map(OrderIdPath)
            .map_err(|err| invalid(&text, &err))
    }
}

/// Records a missing required field in `errors`.
pub(super) fn missing<T>(errors: &mut Vec<FieldError>, field: &'static str) -> Option<T> {
    errors.push(FieldError {
        field,
        message: "is required".to_owned(),
    });
    None
}

/// Records an invalid value in `errors`.
pub(super) fn check<T, E: std::fmt::Display>(
    errors: &mut Vec<FieldError>,
    field: &'static str,
    parsed: Result<T, E>,
) -> Option<T> {
    match parsed {
        Ok(value) => Some(value),
        Err(err) => {
            errors.push(FieldError {
                field,
                message: err.to_string(),
            });
            None
        }
    }
}

/// Maps a store error of an operation on the user `id`: no row means no such user.
pub(super) fn user_store_error(err: StoreError, id: UserId) -> ApiError {
    match err {
        StoreError::NotFound => ApiError::NotFound(format!("no user with id {id}")),
        other => store_failure(other),
    }
}

/// Maps the store errors that do not depend on the resource.
pub(super) fn store_failure(err: StoreError) -> ApiError {
    match err {
        StoreError::Conflict { field } => ApiError::Conflict(format!("{field} is already taken")),
        StoreError::Unavailable(cause) => ApiError::Unavailable(cause.to_string()),
        StoreError::NotFound | StoreError::Internal(_) => ApiError::Internal(err.to_string()),
    }
}
