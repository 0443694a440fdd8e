//! Signing keys that tests generate (RSA, EC P-256, Ed25519), tokens minted with them, and a
//! JWKS server on loopback whose key set a test can rotate.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// The `iss` the test servers require.
pub const ISSUER: &str = "https://issuer.test/";
/// The `aud` the test servers require.
pub const AUDIENCE: &str = "peregrine-tests";

/// A private key with its `kid`, and its public half as a JWK.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub algorithm: Algorithm,
    /// The private key as PKCS#8 PEM.
    pub pem: String,
    encoding: EncodingKey,
    public: Value,
}

/// Returns the RSA key of the test process. Generating one takes far longer than the EC and
/// Ed25519 keys, so every RSA [`SigningKey`] shares it under its own `kid`.
fn rsa_key() -> &'static (String, Value) {
    static KEY: OnceLock<(String, Value)> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut rng = rsa::rand_core::OsRng;
        let key = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("generate an RSA key");
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .expect("encode the RSA key")
            .to_string();
        let public = json!({
            "kty": "RSA",
            "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
        });
        (pem, public)
    })
}

impl SigningKey {
    /// Returns the process's RSA key under `kid`, for RS256.
    pub fn rsa(kid: &str) -> Self {
        let (pem, public) = rsa_key().clone();
        let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("load the RSA key");
        SigningKey::new(kid, Algorithm::RS256, pem, encoding, public)
    }

    /// Generates an EC P-256 key, for ES256.
    pub fn ec(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generate an EC key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("parse the EC key");
        let point = pair.public_key().as_ref();
        let public = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        let encoding = EncodingKey::from_ec_der(pkcs8.as_ref());
        SigningKey::new(kid, Algorithm::ES256, pem(pkcs8.as_ref()), encoding, public)
    }

    /// Generates an Ed25519 key, for EdDSA.
    pub fn ed25519(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("generate an Ed25519 key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("parse the Ed25519 key");
        let public = json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        });
        let encoding = EncodingKey::from_ed_der(pkcs8.as_ref());
        SigningKey::new(kid, Algorithm::EdDSA, pem(pkcs8.as_ref()), encoding, public)
    }

    fn new(
        kid: &str,
        algorithm: Algorithm,
        pem: String,
        encoding: EncodingKey,
        public: Value,
    ) -> Self {
        SigningKey {
            kid: kid.to_owned(),
            algorithm,
            pem,
            encoding,
            public,
        }
    }

    /// Returns the public JWK, with `kid`, `use` and `alg`.
    pub fn jwk(&self) -> Value {
        let mut jwk = self.public.clone();
        jwk["kid"] = json!(self.kid);
        jwk["use"] = json!("sig");
        jwk["alg"] = json!(format!("{:?}", self.algorithm));
        jwk
    }

    /// Returns the public JWK with `member` set to `value`.
    pub fn jwk_with(&self, member: &str, value: Value) -> Value {
        let mut jwk = self.jwk();
        jwk[member] = value;
        jwk
    }

    /// Returns the public JWK without `member`.
    pub fn jwk_without(&self, member: &str) -> Value {
        let mut jwk = self.jwk();
        jwk.as_object_mut().expect("a JSON object").remove(member);
        jwk
    }

    /// Returns the forms of the public key that an HS256 forgery uses as its secret: the
    /// modulus or point, and for RSA also the PEM public key a server might hold.
    pub fn public_secrets(&self) -> Vec<Vec<u8>> {
        let member = if self.public["kty"] == "RSA" {
            "n"
        } else {
            "x"
        };
        let text = self.public[member].as_str().expect("a base64url member");
        let mut secrets = vec![URL_SAFE_NO_PAD.decode(text).expect("valid base64url")];
        if self.algorithm == Algorithm::RS256 {
            let key = rsa::RsaPrivateKey::from_pkcs8_pem(&self.pem).expect("parse the RSA key");
            let public = key
                .to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .expect("encode the RSA public key");
            secrets.push(public.into_bytes());
        }
        secrets
    }

    /// Signs `claims` with this key, with its `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign the token")
    }

    /// Signs a token for user `sub` with `scope`, valid from now for ten minutes.
    pub fn token(&self, sub: &str, scope: &str) -> String {
        self.sign(&claims(sub, scope))
    }
}

/// Wraps PKCS#8 DER in PEM.
fn pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

/// Returns the current Unix time in seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// Returns claims the test servers accept: the right issuer and audience, valid from a
/// second ago for ten minutes.
pub fn claims(sub: &str, scope: &str) -> Value {
    let now = now();
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub,
        "scope": scope,
        "iat": now,
        "nbf": now - 1,
        "exp": now + 600,
    })
}

/// Returns the JWKS document of `keys`.
pub fn jwks(keys: &[&SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|key| key.jwk()).collect::<Vec<_>>() })
}

/// A JWKS server on 127.0.0.1 that counts its fetches; it stops when dropped.
pub struct JwksServer {
    /// `http://127.0.0.1:PORT/jwks.json`
    pub url: String,
    document: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
    _shutdown: oneshot::Sender<()>,
}

impl JwksServer {
    pub async fn start(keys: &[&SigningKey]) -> Self {
        let document = Arc::new(Mutex::new(jwks(keys)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let router = Router::new().route(
            "/jwks.json",
            get({
                let document = Arc::clone(&document);
                let fetches = Arc::clone(&fetches);
                move || async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let body = document.lock().expect("the JWKS lock").to_string();
                    ([("content-type", "application/json")], body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the JWKS server");
        let url = format!(
            "http://{}/jwks.json",
            listener.local_addr().expect("the JWKS server's address")
        );
        let (shutdown, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _sender_dropped = stopped.await;
                })
                .await
                .expect("serve the JWKS");
        });
        JwksServer {
            url,
            document,
            fetches,
            _shutdown: shutdown,
        }
    }

    /// Replaces the published key set, as a key rotation at the identity provider does.
    pub fn publish(&self, keys: &[&SigningKey]) {
        *self.document.lock().expect("the JWKS lock") = jwks(keys);
    }

    /// Returns how many times the JWKS was fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Returns the flags of a server that verifies tokens against this JWKS and fetches it
    /// at most once per `min_refresh_interval` (such as `0s` or `1h`).
    pub fn server_args(&self, min_refresh_interval: &str) -> Vec<String> {
        [
            "--auth-jwks-url",
            &self.url,
            "--auth-issuer",
            ISSUER,
            "--auth-audience",
            AUDIENCE,
            "--auth-jwks-min-refresh-interval",
            min_refresh_interval,
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect()
    }
}
