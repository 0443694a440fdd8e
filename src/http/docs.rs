//! The interactive API reference: Swagger UI on `/openapi.json`, served from files embedded
//! in the binary under `/docs/`.

use std::io::Read;
use std::sync::{Arc, LazyLock};

use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use utoipa_swagger_ui::Config as SwaggerConfig;

use super::problem::{ApiError, ProblemDetails};

/// Swagger UI's settings: the document's URL, "Try it out" open, and no online validator, so
/// the page sends no request to any host but this server.
static SWAGGER_CONFIG: LazyLock<Arc<SwaggerConfig<'static>>> = LazyLock::new(|| {
    Arc::new(
        SwaggerConfig::from("/openapi.json")
            .try_it_out_enabled(true)
            .display_request_duration(true)
            .validator_url("none"),
    )
});

#[utoipa::path(
    get,
    path = "/docs",
    tag = "reference",
    operation_id = "docs_redirect",
    responses((status = 308, description = "The reference page is at `/docs/`",
        headers(("location" = String, description = "`/docs/`"))))
)]
pub(super) async fn redirect_to_docs() -> Redirect {
    // The page loads its scripts by relative paths, which resolve under /docs/ only.
    Redirect::permanent("/docs/")
}

#[utoipa::path(
    get,
    path = "/docs/",
    tag = "reference",
    operation_id = "docs_page",
    responses((status = 200, description = "The interactive API reference (Swagger UI)",
        body = String, content_type = "text/html"))
)]
pub(super) async fn serve_docs_page(headers: HeaderMap) -> Result<Response, ApiError> {
    serve_swagger_file("index.html", &headers)
}

#[utoipa::path(
    get,
    path = "/docs/{file}",
    tag = "reference",
    operation_id = "docs_file",
    params(("file" = String, Path, example = "swagger-ui.css",
        description = "A file of the Swagger UI distribution")),
    responses(
        (status = 200, description = "The file: a script, a style sheet or an image",
            content(
                (String = "text/html"),
                (String = "text/javascript"),
                (String = "text/css"),
                (String = "image/png"),
                (String = "application/octet-stream"),
            )),
        (status = 404, description = "The Swagger UI has no such file",
            body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(super) async fn serve_docs_file(uri: Uri, headers: HeaderMap) -> Result<Response, ApiError> {
    // Read from the raw path: the file names contain nothing that needs percent-decoding.
    let file = uri.path().strip_prefix("/docs/").unwrap_or_default();
    serve_swagger_file(file, &headers)
}

/// Serves one file of the Swagger UI embedded in the binary. The files are embedded
/// gzip-compressed (the 4.3 MB distribution takes 1.1 MB), sent as they are to a client that
/// accepts gzip, as every browser does, and decompressed for one that does not.
fn serve_swagger_file(file: &str, request: &HeaderMap) -> Result<Response, ApiError> {
    match utoipa_swagger_ui::serve(file, Arc::clone(&SWAGGER_CONFIG)) {
        Ok(Some(found)) => {
            let content_type = HeaderValue::from_str(&found.content_type)
                .map_err(|err| ApiError::Internal(format!("content type of {file:?}: {err}")))?;
            let vary = (header::VARY, HeaderValue::from_static("accept-encoding"));
            if !found.gzpipped {
                let body = found.bytes.into_owned();
                return Ok(([(header::CONTENT_TYPE, content_type), vary], body).into_response());
            }
            if accepts_gzip(request) {
                let encoding = (header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                let headers = [(header::CONTENT_TYPE, content_type), encoding, vary];
                return Ok((headers, found.bytes.into_owned()).into_response());
            }
            let mut body = Vec::new();
            flate2::read::GzDecoder::new(found.bytes.as_ref())
                .read_to_end(&mut body)
                .map_err(|err| ApiError::Internal(format!("decompressing {file:?}: {err}")))?;
            Ok(([(header::CONTENT_TYPE, content_type), vary], body).into_response())
        }
        Ok(None) => Err(ApiError::NotFound(format!(
            "no file {file:?} in the API reference"
        ))),
        Err(err) => Err(ApiError::Internal(format!(
            "failed to render the API reference file {file:?}: {err}"
        ))),
    }
}

/// Returns whether `Accept-Encoding` lists gzip (or `*`) without `q=0` (RFC 9110, 12.5.3).
fn accepts_gzip(request: &HeaderMap) -> bool {
    request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let excluded = parts.any(|parameter| {
                let parameter = parameter.replace(' ', "");
                let Some(weight) = parameter
                    .strip_prefix("q=")
                    .or(parameter.strip_prefix("Q="))
                else {
                    return false;
                };
                weight.parse::<f32>().is_ok_and(|weight| weight == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !excluded
        })
}
