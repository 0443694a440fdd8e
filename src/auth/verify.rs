//! Token verification against the cached key set, and the refreshes that keep the set current.
//!
//! The key set is refreshed in the background every AUTH_JWKS_REFRESH_INTERVAL, and at once
//! when a token names a `kid` the set lacks (a key rotation). A fetch for an unknown `kid`
//! happens only when the last fetch of either kind is AUTH_JWKS_MIN_REFRESH_INTERVAL old, so
//! tokens with made-up `kid`s cannot turn the service into a load generator against the
//! identity provider. A failed refresh keeps the keys that were loaded before.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::JwtSettings;
use super::jwks::{Fetcher, KeySet, VerificationKey};
use super::principal::{Principal, Scopes};
use crate::domain::UserId;

/// Shortest wait before retrying a failed background refresh.
const MIN_RETRY_DELAY: Duration = Duration::from_secs(1);

/// The reason a token was rejected. The descriptions are fixed ASCII text without quotes, so they can
/// go into a `WWW-Authenticate` header; none of them contains any part of the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    MissingKid,
    UnknownKid,
    AlgorithmMismatch,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    MissingClaim,
}

impl TokenError {
    /// Returns the reason, as sent in the problem detail and in `error_description`.
    pub fn description(self) -> &'static str {
        match self {
            TokenError::Malformed => "the token is not a well-formed JWT",
            TokenError::MissingKid => "the token's header has no kid",
            TokenError::UnknownKid => "no key in the JWKS has the token's kid",
            TokenError::AlgorithmMismatch => "the token's alg is not the algorithm of its key",
            TokenError::BadSignature => "the token's signature is invalid",
            TokenError::Expired => "the token has expired",
            TokenError::NotYetValid => "the token is not valid yet (nbf)",
            TokenError::WrongIssuer => "the token's issuer is not accepted",
            TokenError::WrongAudience => "the token's audience is not accepted",
            TokenError::MissingClaim => "the token lacks a required claim (exp, iss, aud or sub)",
        }
    }
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.description())
    }
}

/// The claims peregrine reads; jsonwebtoken checks `exp`, `nbf`, `iss` and `aud` itself.
#[derive(Deserialize)]
struct Claims {
    /// Optional here because jsonwebtoken deserializes the claims before it checks that the
    /// required ones are present; a missing `sub` must fail that check, not parsing.
    #[serde(default)]
    sub: Option<String>,
    /// Space-separated scopes, as RFC 8693 defines the `scope` claim.
    #[serde(default)]
    scope: Option<String>,
}

/// Verifies tokens against a key set that it keeps current.
pub struct Verifier {
    shared: Arc<Shared>,
    refresher: JoinHandle<()>,
}

/// The state the request path and the background refresh share.
struct Shared {
    fetcher: Fetcher,
    settings: JwtSettings,
    /// Replaced whole on a refresh; readers clone one key's `Arc` and release the lock at once.
    keys: RwLock<KeySet>,
    /// The time of the last fetch. Held across a fetch, so concurrent refreshes coalesce.
    last_fetch: Mutex<Instant>,
}

impl Verifier {
    /// Loads the key set and starts the background refresh.
    pub async fn start(settings: &JwtSettings) -> anyhow::Result<Self> {
        let fetcher = Fetcher::new(settings.source.clone())?;
        let document = fetcher.fetch().await?;
        let keys = KeySet::parse(&document, settings)?;
        anyhow::ensure!(
            !keys.is_empty(),
            "the JWKS from {} has no usable key: expected RSA, EC P-256 or Ed25519 signing keys \
             with a kid",
            fetcher.source_name()
        );
        tracing::info!(keys = keys.len(), "JWKS loaded");

        let shared = Arc::new(Shared {
            fetcher,
            settings: settings.clone(),
            keys: RwLock::new(keys),
            last_fetch: Mutex::new(Instant::now()),
        });
        let refresher = tokio::spawn(refresh_periodically(Arc::clone(&shared)));
        Ok(Verifier { shared, refresher })
    }

    /// Returns the URL or path of the JWKS, for logs.
    pub fn source_name(&self) -> String {
        self.shared.fetcher.source_name()
    }

    /// Verifies `token` and returns what it grants.
    pub async fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let kid = header.kid.as_deref().ok_or(TokenError::MissingKid)?;
        let key = match self.shared.key(kid) {
            Some(key) => key,
            None => self
                .shared
                .refresh_for(kid)
                .await
                .ok_or(TokenError::UnknownKid)?,
        };
        if header.alg != key.algorithm {
            return Err(TokenError::AlgorithmMismatch);
        }

        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &key.validation)
            .map_err(|err| token_error(err.kind()))?;
        let claims = data.claims;
        Ok(Principal::new(
            claims.sub.and_then(|sub| UserId::parse(&sub).ok()),
            Scopes::parse(claims.scope.as_deref().unwrap_or_default()),
        ))
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

impl Shared {
    fn key(&self, kid: &str) -> Option<Arc<VerificationKey>> {
        let keys = self
            .keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.get(kid).cloned()
    }

    /// Fetches the key set for a `kid` it lacks, unless the last fetch was less than the
    /// minimum interval ago, and returns the key if the new set has it.
    async fn refresh_for(&self, kid: &str) -> Option<Arc<VerificationKey>> {
        let mut last_fetch = self.last_fetch.lock().await;
        // A request that waited for the lock may find the key loaded by the one before it.
        if let Some(key) = self.key(kid) {
            return Some(key);
        }
        if last_fetch.elapsed() < self.settings.min_refresh_interval {
            return None;
        }
        *last_fetch = Instant::now();
        if let Err(err) = self.reload().await {
            tracing::warn!(error = format!("{err:#}"), "failed to refresh the JWKS");
        }
        self.key(kid)
    }

    /// Fetches and parses the key set, and replaces the current one unless the new one has
    /// no usable key.
    async fn reload(&self) -> anyhow::Result<()> {
        let document = self.fetcher.fetch().await?;
        let keys = KeySet::parse(&document, &self.settings)?;
        anyhow::ensure!(
            !keys.is_empty(),
            "the JWKS has no usable key; the previous keys stay in use"
        );
        let count = keys.len();
        *self
            .keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = keys;
        tracing::debug!(keys = count, "JWKS refreshed");
        Ok(())
    }
}

/// Refreshes the key set every refresh interval, and retries a failed refresh sooner. Runs
/// until the [`Verifier`] that spawned it is dropped.
async fn refresh_periodically(shared: Arc<Shared>) {
    let mut delay = shared.settings.refresh_interval;
    loop {
        tokio::time::sleep(delay).await;
        let mut last_fetch = shared.last_fetch.lock().await;
        *last_fetch = Instant::now();
        delay = match shared.reload().await {
            Ok(()) => shared.settings.refresh_interval,
            Err(err) => {
                tracing::warn!(error = format!("{err:#}"), "failed to refresh the JWKS");
                shared
                    .settings
                    .min_refresh_interval
                    .max(MIN_RETRY_DELAY)
                    .min(shared.settings.refresh_interval)
            }
        };
        drop(last_fetch);
    }
}

/// Maps a jsonwebtoken error to the reason sent to the client.
fn token_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::MissingRequiredClaim(_) => TokenError::MissingClaim,
        ErrorKind::InvalidAlgorithm => TokenError::AlgorithmMismatch,
        _ => TokenError::Malformed,
    }
}
