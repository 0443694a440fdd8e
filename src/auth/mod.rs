//! Bearer-token authentication and the authorization policy of the API.
//!
//! A request to the API carries `Authorization: Bearer <JWT>`. The token is checked against
//! the keys of a JWKS document ([`jwks`]): its signature with one of RS256, ES256 or EdDSA
//! (never `none` or HS*), its `iss`, `aud`, `exp` and `nbf` claims ([`verify`]). What the token
//! grants, a subject and scopes, becomes a [`Principal`], which handlers take as an extractor
//! and ask before they touch a user's data ([`principal`]).
//!
//! This module decides who the caller is and what it may do. It never logs or returns the
//! token, and it does not know how users are stored.

pub mod jwks;
pub mod principal;
pub mod token;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, header};
use reqwest::Url;

use crate::http::problem::ApiError;
pub use principal::{Access, Principal, Scope};
use verify::Verifier;

/// The authentication mode of API requests, as configured.
#[derive(Debug, Clone)]
pub enum AuthSettings {
    /// Every request is served as an administrator. `explicit` is true when AUTH_MODE=none
    /// asked for it, false when it followed from a loopback SERVER_HOST with no JWKS source.
    Disabled { explicit: bool },
    /// Bearer tokens are required and verified.
    Jwt(JwtSettings),
}

/// The settings of token validation.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub source: JwksSource,
    /// The required `iss` claim.
    pub issuer: String,
    /// The value the `aud` claim must contain.
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// Interval between background refreshes of the key set.
    pub refresh_interval: Duration,
    /// Minimum time between two fetches of the key set, whatever triggers them.
    pub min_refresh_interval: Duration,
}

/// The source of the JWKS document.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// An https URL, or an http URL on a loopback host.
    Url(Url),
    /// A file, re-read at every refresh, so a mounted ConfigMap can rotate keys.
    File(PathBuf),
}

/// The authentication of the API routes, shared by every request. Cloning is cheap.
#[derive(Clone)]
pub struct Authenticator {
    verifier: Option<Arc<Verifier>>,
}

impl Authenticator {
    /// Loads the key set (when tokens are required) and starts its background refresh, which
    /// stops when the last clone of the authenticator is dropped. Fails when the first load of
    /// the key set fails or finds no usable key.
    pub async fn start(settings: &AuthSettings) -> anyhow::Result<Self> {
        match settings {
            AuthSettings::Disabled { explicit: true } => {
                tracing::warn!(
                    auth_mode = "none",
                    "authentication is off (AUTH_MODE=none): every API request is served as \
                     an administrator"
                );
                Ok(Authenticator::disabled())
            }
            AuthSettings::Disabled { explicit: false } => {
                tracing::info!(
                    auth_mode = "none",
                    "authentication is off because SERVER_HOST is a loopback address and no \
                     JWKS source is set"
                );
                Ok(Authenticator::disabled())
            }
            AuthSettings::Jwt(jwt) => {
                let verifier = Verifier::start(jwt).await?;
                tracing::info!(
                    auth_mode = "jwt",
                    jwks = %verifier.source_name(),
                    issuer = %jwt.issuer,
                    audience = %jwt.audience,
                    "bearer tokens required"
                );
                Ok(Authenticator {
                    verifier: Some(Arc::new(verifier)),
                })
            }
        }
    }

    /// Returns an authenticator that lets every request through as an administrator.
    pub fn disabled() -> Self {
        Authenticator { verifier: None }
    }

    /// Returns the principal of a request from its `Authorization` header.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let Some(verifier) = &self.verifier else {
            return Ok(Principal::unrestricted());
        };
        let token = bearer_token(headers)?;
        verifier
            .verify(token)
            .await
            .map_err(|err| ApiError::InvalidToken(err.description()))
    }
}

/// Extracts the token from `Authorization: Bearer <token>`. A missing header, or one with
/// another scheme, is a request without bearer credentials; an empty or non-ASCII token is an
/// invalid one.
fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::MissingToken);
    };
    let bytes = value.as_bytes();
    let scheme_len = "Bearer".len();
    let is_bearer = bytes.len() >= scheme_len
        && bytes[..scheme_len].eq_ignore_ascii_case(b"Bearer")
        && bytes.get(scheme_len).is_none_or(|&byte| byte == b' ');
    if !is_bearer {
        return Err(ApiError::MissingToken);
    }
    let token = std::str::from_utf8(&bytes[scheme_len..])
        .ok()
        .filter(|token| token.is_ascii())
        .ok_or(ApiError::InvalidToken(
            "the token contains bytes outside ASCII",
        ))?
        .trim_matches(' ');
    if token.is_empty() {
        return Err(ApiError::InvalidToken(
            "the Authorization header has no token after Bearer",
        ));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_authorization(value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(value).unwrap(),
        );
        headers
    }

    #[test]
    fn bearer_token_accepts_any_scheme_case() {
        for value in [
            "Bearer abc.def.ghi",
            "bearer abc.def.ghi",
            "BEARER  abc.def.ghi ",
        ] {
            let headers = with_authorization(value.as_bytes());
            assert_eq!(bearer_token(&headers).unwrap(), "abc.def.ghi", "{value}");
        }
    }

    #[test]
    fn bearer_token_missing_or_other_scheme() {
        assert!(matches!(
            bearer_token(&HeaderMap::new()),
            Err(ApiError::MissingToken)
        ));
        for value in ["Basic dXNlcjpwYXNz", "Bearerabc", "Token abc"] {
            let headers = with_authorization(value.as_bytes());
            assert!(
                matches!(bearer_token(&headers), Err(ApiError::MissingToken)),
                "{value}"
            );
        }
    }

    #[test]
    fn bearer_token_empty_or_binary_is_invalid() {
        for value in [&b"Bearer"[..], b"Bearer   ", b"Bearer \xff\xfe"] {
            let headers = with_authorization(value);
            assert!(
                matches!(bearer_token(&headers), Err(ApiError::InvalidToken(_))),
                "{value:?}"
            );
        }
    }
}
