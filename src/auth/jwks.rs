//! The JWKS document: reading it from a URL or a file, and turning it into decoded keys by
//! `kid`, each with the only algorithm it may verify.
//!
//! Keys are decoded once per load, never per request. A key that cannot verify tokens here
//! (a symmetric key, an encryption key, an unsupported curve or algorithm, no `kid`) is
//! skipped with a warning, so one odd entry does not take the whole set down.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::{JwksSource, JwtSettings};

/// Largest JWKS document accepted, in bytes; real ones are a few KiB.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Maximum time one fetch of the JWKS URL may take, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A decoded public key and the validation rules of the tokens it signs.
pub struct VerificationKey {
    pub key: DecodingKey,
    pub algorithm: Algorithm,
    /// Issuer, audience, leeway, required claims and this key's algorithm, built once.
    pub validation: Validation,
}

/// The usable keys of one JWKS document, by `kid`.
#[derive(Default)]
pub struct KeySet {
    keys: HashMap<String, Arc<VerificationKey>>,
}

impl KeySet {
    /// Returns the key with this `kid`.
    pub fn get(&self, kid: &str) -> Option<&Arc<VerificationKey>> {
        self.keys.get(kid)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Parses a JWKS document, keeping the keys that can verify RS256, ES256 or EdDSA tokens.
    pub fn parse(document: &[u8], settings: &JwtSettings) -> anyhow::Result<KeySet> {
        #[derive(Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document = serde_json::from_slice(document)
            .context("invalid JWKS document: expected a JSON object with a keys array")?;

        let mut keys = HashMap::new();
        for (index, value) in document.keys.into_iter().enumerate() {
            match decode_key(value, settings) {
                Ok((kid, key)) => {
                    keys.insert(kid, Arc::new(key));
                }
                Err(reason) => {
                    tracing::warn!(index, reason, "skipped a key of the JWKS document");
                }
            }
        }
        Ok(KeySet { keys })
    }
}

/// Decodes one JWK, or returns why it cannot verify tokens here.
fn decode_key(
    value: serde_json::Value,
    settings: &JwtSettings,
) -> Result<(String, VerificationKey), &'static str> {
    let jwk: Jwk = serde_json::from_value(value)
        .map_err(|_| "not a JWK of a supported type (RSA, EC P-256 or OKP Ed25519)")?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("its use is enc, not sig");
    }
    let Some(kid) = jwk.common.key_id.clone() else {
        return Err("it has no kid, and tokens name their key by kid");
    };
    let algorithm = key_algorithm(&jwk)?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| "its key material is invalid")?;

    let mut validation = Validation::new(algorithm);
    validation.set_issuer(&[&settings.issuer]);
    validation.set_audience(&[&settings.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = settings.leeway.as_secs();
    validation.validate_nbf = true;
    Ok((
        kid,
        VerificationKey {
            key,
            algorithm,
            validation,
        },
    ))
}

/// Returns the one algorithm a key verifies: its `alg` when given, which must match the key
/// type, otherwise the algorithm its type implies.
fn key_algorithm(jwk: &Jwk) -> Result<Algorithm, &'static str> {
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        AlgorithmParameters::OctetKey(_) => return Err("it is a symmetric key"),
        _ => return Err("its curve is not P-256 or Ed25519"),
    };
    let declared = match jwk.common.key_algorithm {
        None => return Ok(implied),
        Some(KeyAlgorithm::RS256) => Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => Algorithm::ES256,
        Some(KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
        Some(_) => return Err("its alg is not RS256, ES256 or EdDSA"),
    };
    if declared != implied {
        return Err("its alg does not match its key type");
    }
    Ok(declared)
}

/// Reads JWKS documents from their source.
pub struct Fetcher {
    source: JwksSource,
    client: reqwest::Client,
}

impl Fetcher {
    pub fn new(source: JwksSource) -> anyhow::Result<Self> {
        // A redirect could lead from the checked https URL to a host that was never checked.
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("failed to build the JWKS HTTP client")?;
        Ok(Fetcher { source, client })
    }

    /// Returns the URL or path of the source, for logs.
    pub fn source_name(&self) -> String {
        match &self.source {
            JwksSource::Url(url) => url.to_string(),
            JwksSource::File(path) => path.display().to_string(),
        }
    }

    /// Reads the document, at most [`MAX_JWKS_BYTES`] of it.
    pub async fn fetch(&self) -> anyhow::Result<Vec<u8>> {
        match &self.source {
            JwksSource::File(path) => {
                let document = tokio::fs::read(path)
                    .await
                    .with_context(|| format!("failed to read AUTH_JWKS_FILE {}", path.display()))?;
                anyhow::ensure!(
                    document.len() <= MAX_JWKS_BYTES,
                    "AUTH_JWKS_FILE {} is larger than {MAX_JWKS_BYTES} bytes",
                    path.display()
                );
                Ok(document)
            }
            JwksSource::Url(url) => self.fetch_url(url).await,
        }
    }

    async fn fetch_url(&self, url: &reqwest::Url) -> anyhow::Result<Vec<u8>> {
        let mut response = self
            .client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .with_context(|| format!("failed to fetch the JWKS from {url}"))?;
        let status = response.status();
        anyhow::ensure!(
            status.is_success(),
            "failed to fetch the JWKS from {url}: status {status}"
        );

        let mut document = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .with_context(|| format!("failed to read the JWKS from {url}"))?
        {
            anyhow::ensure!(
                document.len() + chunk.len() <= MAX_JWKS_BYTES,
                "the JWKS at {url} is larger than {MAX_JWKS_BYTES} bytes"
            );
            document.extend_from_slice(&chunk);
        }
        Ok(document)
    }
}
