//! The OpenAPI 3.1 document and the route that serves it, `GET /openapi.json`; `docs` serves
//! the Swagger UI under `/docs/`.
//!
//! Every route of the service is registered here through utoipa-axum's `routes!`, which takes
//! the path and the methods from the handler's `#[utoipa::path]` annotation, so a route cannot
//! be served without being documented. The extractors and the middleware produce some problem
//! responses for every operation of a kind: 400, 413 and 415 for a JSON body, 429 for the
//! API, 500 and 503 behind the middleware. [`add_problem_responses`] adds those to the
//! document, so no handler repeats them. The document is rendered once, at start.

use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{SecurityRequirement, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, Ref, RefOr, Schema};
use utoipa::{IntoParams, OpenApi, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::problem::ProblemDetails;
use super::users::{CreateUserBody, UpdateUserBody};
use super::{docs, orders, preferences, probes, profile, users};

#[derive(OpenApi)]
#[openapi(
    info(description = "A users API. Every error is `application/problem+json` (RFC 9457) with \
        `type`, `title`, `status`, `detail` and `request_id`. A request id is taken from the \
        `X-Request-Id` request header when it is 1 to 64 characters of `[A-Za-z0-9._-]`, is \
        generated otherwise, and is sent back in the `X-Request-Id` response header. A path \
        that matches no route gets 404 with type `/problems/route-not-found`, and a method the \
        route does not serve gets 405 with an `Allow` header."),
    tags(
        (name = "users", description = "User accounts"),
        (name = "orders", description = "A user's orders"),
        (name = "preferences", description = "A user's preferences, with optimistic concurrency"),
        (name = "profile", description = "A user with their newest orders and preferences"),
        (name = "probes", description = "The benchmark baseline and the Kubernetes probes"),
        (name = "reference", description = "This document and its interactive reference page"),
    ),
    components(schemas(ProblemDetails))
)]
struct ApiDoc;

/// The routers of the service, by the middleware they run behind, and their document.
pub struct Routes {
    /// `GET /`, served outside all middleware.
    pub root: Router<AppState>,
    /// The probes, the document and the reference page: behind the middleware, never shed.
    pub operational: Router<AppState>,
    /// The API under `/api/v1`, behind the middleware and load shedding.
    pub api: Router<AppState>,
    pub document: Document,
}

/// Builds every route of the service together with the OpenAPI document that describes it.
pub fn routes() -> Routes {
    let (root, root_document) = OpenApiRouter::new()
        .routes(routes!(probes::hello))
        .split_for_parts();
    let (operational, operational_document) = OpenApiRouter::new()
        .routes(routes!(probes::live))
        .routes(routes!(probes::health))
        .routes(routes!(probes::ready))
        .routes(routes!(serve_document))
        .routes(routes!(docs::redirect_to_docs))
        .routes(routes!(docs::serve_docs_page))
        .routes(routes!(docs::serve_docs_file))
        .split_for_parts();
    let (api, api_document) = OpenApiRouter::new()
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::get, users::update, users::delete))
        .routes(routes!(orders::list, orders::create))
        .routes(routes!(orders::get))
        .routes(routes!(preferences::get, preferences::put))
        .routes(routes!(profile::get))
        .split_for_parts();

    let mut document = ApiDoc::openapi();
    document.merge(root_document);
    document.merge(operational_document);
    document.merge(api_document);
    add_problem_responses(&mut document);
    Routes {
        root,
        operational,
        api,
        document,
    }
}

/// The document as served and as committed in `openapi.json`: pretty-printed, with a final
/// newline.
static DOCUMENT_JSON: LazyLock<String> = LazyLock::new(|| {
    let mut json = routes()
        .document
        .to_pretty_json()
        .expect("the OpenAPI document serializes to JSON");
    json.push('\n');
    json
});

/// Returns the rendered document, rendering it on the first call.
pub fn document_json() -> &'static str {
    &DOCUMENT_JSON
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "reference",
    operation_id = "openapi_document",
    responses((status = 200, description = "This document", body = Object, content_type = "application/json"))
)]
async fn serve_document() -> Response {
    let content_type = HeaderValue::from_static("application/json");
    ([(header::CONTENT_TYPE, content_type)], document_json()).into_response()
}
/// The `{id}` segment of the user routes.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UserIdParameter {
    /// The user's id.
    #[param(minimum = 1, example = 1)]
    pub id: i64,
}

/// The query of `GET /api/v1/users`; other parameters are ignored.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParameters {
    /// Users per page; 50 when absent.
    #[param(minimum = 1, maximum = 1000, nullable = false)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page; the first page when absent.
    #[param(minimum = 1, nullable = false)]
    pub after: Option<i64>,
}

/// The `{id}` segment of `/api/v1/orders/{id}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct OrderIdParameter {
    /// The order's id.
    #[param(minimum = 1, example = 1)]
    pub id: i64,
}

/// The query of `GET /api/v1/users/{id}/orders`; other parameters are ignored.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrderPageParameters {
    /// Orders per page; 50 when absent.
    #[param(minimum = 1, maximum = 1000, nullable = false)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page, whose orders are older; the newest page when
    /// absent.
    #[param(minimum = 1, nullable = false)]
    pub after: Option<i64>,
}

/// Builds the schema of a currency code: the ISO 4217 codes of the `iso_currency` crate that
/// have a minor unit, which are the ones `Currency::parse` accepts.
pub fn currency_schema() -> Schema {
    use iso_currency::IntoEnumIterator;

    let codes: Vec<&str> = iso_currency::Currency::iter()
        .filter(|currency| currency.exponent().is_some())
        .map(|currency| currency.code())
        .collect();
    let schema = json!({ "type": "string", "enum": codes, "example": "EUR" });
    serde_json::from_value(schema).expect("the currency schema is a valid schema")
}

/// Builds the schema of a time zone name: every name of the tz database compiled into
/// `chrono-tz`, which are the ones `TimeZone::parse` accepts.
pub fn time_zone_schema() -> Schema {
    let names: Vec<&str> = chrono_tz::TZ_VARIANTS
        .iter()
        .map(|zone| zone.name())
        .collect();
    let schema = json!({ "type": "string", "enum": names, "example": "Europe/Berlin" });
    serde_json::from_value(schema).expect("the time zone schema is a valid schema")
}

impl PartialSchema for UpdateUserBody {
    /// Builds the schema from the fields of `CreateUserBody`, each optional and nullable
    /// (null counts as absent), with at least one of them given as a string.
    fn schema() -> RefOr<Schema> {
        let create =
            serde_json::to_value(CreateUserBody::schema()).expect("a schema serializes to JSON");
        let nullable = |field: &str| {
            let mut property = create["properties"][field].clone();
            property["type"] = json!(["string", "null"]);
            property
        };
        let required_string = |field: &str| {
            json!({
                "type": "object",
                "required": [field],
                "properties": { field: { "type": "string" } }
            })
        };
        let schema = json!({
            "allOf": [
                {
                    "type": "object",
                    "properties": { "name": nullable("name"), "email": nullable("email") },
                    "additionalProperties": false
                },
                { "anyOf": [required_string("name"), required_string("email")] }
            ],
            "description": "The fields to change, at least one of them; a null field counts \
                as absent.",
            "example": { "name": "Ada King" }
        });
        serde_json::from_value(schema).expect("the update body schema is a valid schema")
    }
}

impl ToSchema for UpdateUserBody {}

/// Adds to each operation the problem responses its extractors and middleware can produce,
/// unless its annotation declares that status itself.
fn add_problem_responses(document: &mut Document) {
    let components = document.components.get_or_insert_with(Default::default);
    for (name, response) in problem_responses() {
        components.responses.insert(name.to_owned(), response);
    }
    components
        .security_schemes
        .insert(BEARER_SCHEME.to_owned(), RefOr::T(bearer_scheme()));

    for (path, item) in document.paths.paths.iter_mut() {
        // `GET /` is served outside all middleware.
        if path == "/" {
            continue;
        }
        for operation in operations(item) {
            let mut statuses = Vec::new();
            let has_parameters = operation
                .parameters
                .as_ref()
                .is_some_and(|parameters| !parameters.is_empty());
            // The API's extractors reject every path or query parameter out of its range.
            if has_parameters && path.starts_with("/api/") {
                statuses.push(("400", "BadRequest"));
            }
            if operation.request_body.is_some() {
                statuses.push(("400", "BadRequest"));
                statuses.push(("413", "PayloadTooLarge"));
                statuses.push(("415", "UnsupportedMediaType"));
            }
            if path.starts_with("/api/") {
                statuses.push(("401", "Unauthorized"));
                statuses.push(("403", "Forbidden"));
                statuses.push(("429", "RateLimited"));
                let requirement = SecurityRequirement::new(BEARER_SCHEME, Vec::<String>::new());
                operation
                    .security
                    .get_or_insert_with(Vec::new)
                    .push(requirement);
            }
            statuses.push(("500", "InternalError"));
            statuses.push(("503", "Unavailable"));

            for (status, name) in statuses {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// The name of the bearer token scheme in the document.
const BEARER_SCHEME: &str = "bearer";

/// Builds the bearer token scheme that every API operation requires.
fn bearer_scheme() -> SecurityScheme {
    let scheme = json!({
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A JWT that a key of the JWKS at `AUTH_JWKS_URL` or in `AUTH_JWKS_FILE` \
            signed, for `AUTH_ISSUER` and `AUTH_AUDIENCE`. Its `scope` claim grants \
            `users:read` (read the token's own user, `sub`, and what belongs to it), \
            `users:write` (create users, change or delete the token's own user and what \
            belongs to it) or `admin` (everything, listing users included). Another user's \
            resource gets 404, as a missing one does. With `AUTH_MODE=none` the API takes no \
            token."
    });
    serde_json::from_value(scheme).expect("the bearer scheme is a valid security scheme")
}

/// Builds the shared problem responses, by component name.
fn problem_responses() -> Vec<(&'static str, RefOr<utoipa::openapi::Response>)> {
    let retry_after = json!({
        "description": "Seconds to wait before retrying",
        "schema": { "type": "integer", "minimum": 0 }
    });
    let problem = |description: &str, retry: bool| {
        let mut response = json!({
            "description": description,
            "content": {
                "application/problem+json": {
                    "schema": { "$ref": "#/components/schemas/Problem" }
                }
            }
        });
        if retry {
            response["headers"] = json!({ "retry-after": retry_after });
        }
        serde_json::from_value(response).expect("a problem response is a valid response")
    };
    let bearer_challenge = json!({
        "description": "The RFC 6750 challenge: `Bearer realm=\"peregrine\"`, with `error` \
            and a reason or the missing scope when a token was sent",
        "schema": { "type": "string" }
    });
    let challenged = |description: &str| {
        let mut response: RefOr<utoipa::openapi::Response> = problem(description, false);
        if let RefOr::T(response) = &mut response {
            let header = serde_json::from_value(bearer_challenge.clone())
                .expect("the challenge header is a valid header");
            response
                .headers
                .insert("www-authenticate".to_owned(), header);
        }
        response
    };
    vec![
        (
            "Unauthorized",
            challenged(
                "No bearer token, or one that is malformed, expired, not yet valid, for \
                 another issuer or audience, or wrongly signed",
            ),
        ),
        (
            "Forbidden",
            challenged("The token lacks the scope the request needs, which `detail` names"),
        ),
        (
            "BadRequest",
            problem(
                "Malformed JSON (bad syntax, trailing data, a wrong type, a duplicate or \
                 unknown key, not an object), or a path or query parameter out of its range",
                false,
            ),
        ),
        (
            "PayloadTooLarge",
            problem(
                "The body is larger than `BODY_LIMIT` (64 KiB by default)",
                false,
            ),
        ),
        (
            "UnsupportedMediaType",
            problem(
                "The body is not sent as `application/json` (a `charset=utf-8` parameter \
                 is accepted)",
                false,
            ),
        ),
        (
            "RateLimited",
            problem(
                "The client is over `RATE_LIMIT` requests per second, when one is set",
                true,
            ),
        ),
        (
            "InternalError",
            problem(
                "A bug; the cause is in the server's log under the request id",
                false,
            ),
        ),
        (
            "Unavailable",
            problem(
                "The database is unreachable or busy, the request ran past \
                 `SERVER_WRITE_TIMEOUT`, `MAX_IN_FLIGHT` requests were already in flight, or \
                 the server is shutting down",
                true,
            ),
        ),
    ]
}
