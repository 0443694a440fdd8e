//! Bearer-token authentication: tokens minted with keys the tests generate, verified against
//! a JWKS served on loopback, and the 401 responses that RFC 6750 defines. The helpers here
//! serve the access policy's tests in auth_access.rs too.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::harness::auth::{JwksServer, SigningKey, claims, now};
use crate::harness::{Backend, Options, TestApp, problem};

pub(crate) const READ_WRITE: &str = "users:read users:write";

/// Starts a server on SQLite that verifies tokens against `jwks`.
pub(crate) async fn spawn(jwks: &JwksServer, min_refresh_interval: &str) -> TestApp {
    spawn_on(Backend::Sqlite, jwks, min_refresh_interval)
        .await
        .expect("SQLite is always available")
}

pub(crate) async fn spawn_on(
    backend: Backend,
    jwks: &JwksServer,
    min_refresh: &str,
) -> Option<TestApp> {
    let options = Options {
        args: jwks.server_args(min_refresh),
        ..Options::default()
    };
    TestApp::spawn_with(backend, options).await
}

pub(crate) async fn get(app: &TestApp, path: &str, token: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("send the request")
}

pub(crate) async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    request.send().await.expect("send the request")
}

/// Creates a user with an admin token and returns its id.
pub(crate) async fn create_user(app: &TestApp, admin: &str, email: &str) -> String {
    let body = json!({ "name": "Ada", "email": email });
    let response = send(
        app,
        reqwest::Method::POST,
        "/api/v1/users",
        admin,
        Some(body),
    )
    .await;
    assert_eq!(response.status(), 201, "create {email}");
    let user: Value = response.json().await.expect("a JSON user");
    user["id"].to_string()
}

pub(crate) fn challenge(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("www-authenticate")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Checks a 401 with `error="invalid_token"` whose description contains `reason`.
async fn assert_invalid_token(response: reqwest::Response, reason: &str) {
    let header = challenge(&response);
    assert!(header.starts_with("Bearer "), "{header}");
    assert!(header.contains("error=\"invalid_token\""), "{header}");
    assert!(header.contains(reason), "{header} lacks {reason:?}");
    let body = problem(response, 401).await;
    assert!(
        body["detail"].as_str().unwrap_or_default().contains(reason),
        "{body}"
    );
}

/// Signs a token with an arbitrary header, the way a forger would.
fn forge(header: &Value, claims: &Value, signature: &[u8]) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

#[tokio::test]
async fn missing_token_gets_bearer_challenge() {
    let key = SigningKey::ec("k1");
    let jwks = JwksServer::start(&[&key]).await;
    let app = spawn(&jwks, "0s").await;

    for request in [
        app.client.get(app.url("/api/v1/users/1")),
        app.client.get(app.url("/api/v1/users")),
        app.client
            .get(app.url("/api/v1/users/1"))
            .header("authorization", "Basic dXNlcjpwYXNz"),
    ] {
        let response = request.send().await.expect("send the request");
        let header = challenge(&response);
        assert_eq!(header, "Bearer realm=\"peregrine\"");
        problem(response, 401).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn token_checked_before_path() {
    let key = SigningKey::ec("k1");
    let jwks = JwksServer::start(&[&key]).await;
    let app = spawn(&jwks, "0s").await;

    let response = app.get("/api/v1/users/not-a-number").await;
    problem(response, 401).await;
    let response = app.post_json("/api/v1/users", "{").await;
    problem(response, 401).await;
    app.stop().await;
}

#[tokio::test]
async fn malformed_tokens_rejected() {
    let key = SigningKey::ec("k1");
    let jwks = JwksServer::start(&[&key]).await;
    let app = spawn(&jwks, "0s").await;

    for token in ["abc", "a.b.c", "..", "Bearer x.y.z"] {
        let response = get(&app, "/api/v1/users/1", token).await;
        assert_invalid_token(response, "not a well-formed JWT").await;
    }
    let response = app
        .client
        .get(app.url("/api/v1/users/1"))
        .header("authorization", "Bearer ")
        .send()
        .await
        .expect("send the request");
    assert_invalid_token(response, "no token after Bearer").await;

    let no_kid = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("1", READ_WRITE),
        &EncodingKey::from_secret(b"secret"),
    )
    .expect("sign");
    let response = get(&app, "/api/v1/users/1", &no_kid).await;
    assert_invalid_token(response, "no kid").await;
    app.stop().await;
}

#[tokio::test]
async fn claim_failures_rejected() {
    let key = SigningKey::rsa("k1");
    let jwks = JwksServer::start(&[&key]).await;
    let app = spawn(&jwks, "0s").await;

    let valid = claims("1", READ_WRITE);
    let with = |member: &str, value: Value| {
        let mut claims = valid.clone();
        claims[member] = value;
        claims
    };
    let without = |member: &str| {
        let mut claims = valid.clone();
        claims.as_object_mut().expect("an object").remove(member);
        claims
    };
    let cases = [
        (with("iss", json!("https://other.test/")), "issuer"),
        (with("aud", json!("someone-else")), "audience"),
        (with("aud", json!(["a", "b"])), "audience"),
        (with("exp", json!(now() - 120)), "expired"),
        (with("nbf", json!(now() + 120)), "not valid yet"),
        (without("exp"), "required claim"),
        (without("sub"), "required claim"),
        (without("iss"), "required claim"),
        (without("aud"), "required claim"),
    ];
    for (claims, reason) in cases {
        let response = get(&app, "/api/v1/users/1", &key.sign(&claims)).await;
        assert_invalid_token(response, reason).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn leeway_accepts_small_clock_skew() {
    let key = SigningKey::ec("k1");
    let jwks = JwksServer::start(&[&key]).await;
    let app = spawn(&jwks, "0s").await;
    let admin = key.token("admin-service", "admin");
    let id = create_user(&app, &admin, "skew@example.com").await;

    let mut skewed = claims(&id, READ_WRITE);
    skewed["exp"] = json!(now() - 5);
    skewed["nbf"] = json!(now() + 5);
    let response = get(&app, &format!("/api/v1/users/{id}"), &key.sign(&skewed)).await;
    assert_eq!(response.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn wrong_signature_rejected() {
    let key = SigningKey::ec("k1");
    let impostor = SigningKey::ec("k1");
    let jwks = JwksServer::start(&[&key]).await;
    let app = spawn(&jwks, "0s").await;

    let response = get(&app, "/api/v1/users/1", &impostor.token("1", READ_WRITE)).await;
    assert_invalid_token(response, "signature is invalid").await;

    let genuine = key.token("1", READ_WRITE);
    let (signed, _signature) = genuine.rsplit_once('.').expect("three parts");
    let tampered = format!("{signed}.AAAA");
    let response = get(&app, "/api/v1/users/1", &tampered).await;
    assert_invalid_token(response, "").await;
    app.stop().await;
}

#[tokio::test]
async fn algorithm_confusion_rejected() {
    let rsa = SigningKey::rsa("rsa");
    let ec = SigningKey::ec("ec");
    let jwks = JwksServer::start(&[&rsa, &ec]).await;
    let app = spawn(&jwks, "0s").await;
    let claims = claims("1", "admin");

    for kid in ["rsa", "ec"] {
        let header = json!({ "alg": "none", "typ": "JWT", "kid": kid });
        let response = get(&app, "/api/v1/users", &forge(&header, &claims, b"")).await;
        assert_invalid_token(response, "").await;
    }

    // HS256 keyed with the public key: accepted by libraries that let the token pick the
    // algorithm of a key.
    for key in [&rsa, &ec] {
        for secret in key.public_secrets() {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(key.kid.clone());
            let secret = EncodingKey::from_secret(&secret);
            let token = jsonwebtoken::encode(&header, &claims, &secret).expect("sign");
            let response = get(&app, "/api/v1/users", &token).await;
            assert_invalid_token(response, "alg is not the algorithm of its key").await;
        }
    }

    // An ES256 signature presented under the RSA key's kid.
    let token = SigningKey::ec("rsa").sign(&claims);
    let response = get(&app, "/api/v1/users", &token).await;
    assert_invalid_token(response, "alg is not the algorithm of its key").await;
    app.stop().await;
}

#[tokio::test]
async fn every_key_type_accepted() {
    let keys = [
        SigningKey::rsa("rsa"),
        SigningKey::ec("ec"),
        SigningKey::ed25519("ed"),
    ];
    let jwks = JwksServer::start(&keys.iter().collect::<Vec<_>>()).await;
    let app = spawn(&jwks, "0s").await;

    for key in &keys {
        let response = get(&app, "/api/v1/users", &key.token("ops", "admin")).await;
        assert_eq!(response.status(), 200, "{:?}", key.algorithm);
    }
    app.stop().await;
}

#[tokio::test]
async fn audience_list_containing_ours_accepted() {
    let key = SigningKey::ec("k1");
    let jwks = JwksServer::start(&[&key]).await;
    let app = spawn(&jwks, "0s").await;

    let mut claims = claims("ops", "admin");
    claims["aud"] = json!(["another-api", crate::harness::auth::AUDIENCE]);
    let response = get(&app, "/api/v1/users", &key.sign(&claims)).await;
    assert_eq!(response.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn unusable_jwks_entries_skipped() {
    let key = SigningKey::ec("good");
    let document = json!({ "keys": [
        { "kty": "oct", "kid": "hmac", "k": "c2VjcmV0" },
        { "kty": "EC", "crv": "secp256k1", "kid": "k1", "x": "AA", "y": "AA" },
        SigningKey::ec("enc").jwk_with("use", json!("enc")),
        key.jwk(),
    ]});
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, document.to_string()).expect("write the JWKS");
    let args = [
        "--auth-jwks-file",
        path.to_str().expect("a UTF-8 path"),
        "--auth-issuer",
        crate::harness::auth::ISSUER,
        "--auth-audience",
        crate::harness::auth::AUDIENCE,
    ];
    let options = Options {
        args: args.iter().map(|arg| arg.to_string()).collect(),
        ..Options::default()
    };
    let app = TestApp::spawn_with(Backend::Sqlite, options)
        .await
        .expect("SQLite is always available");

    let response = get(&app, "/api/v1/users", &key.token("ops", "admin")).await;
    assert_eq!(response.status(), 200);
    let hmac = jsonwebtoken::encode(
        &Header {
            kid: Some("hmac".to_owned()),
            ..Header::new(Algorithm::HS256)
        },
        &claims("ops", "admin"),
        &EncodingKey::from_secret(b"secret"),
    )
    .expect("sign");
    let response = get(&app, "/api/v1/users", &hmac).await;
    assert_invalid_token(response, "no key in the JWKS has the token's kid").await;
    app.stop().await;
}

#[tokio::test]
async fn unknown_kid_refetches_after_rotation() {
    let old = SigningKey::ec("2026-01");
    let new = SigningKey::rsa("2026-02");
    let jwks = JwksServer::start(&[&old]).await;
    let app = spawn(&jwks, "0s").await;
    assert_eq!(jwks.fetches(), 1, "one fetch at start");

    let response = get(&app, "/api/v1/users", &new.token("ops", "admin")).await;
    assert_invalid_token(response, "no key in the JWKS has the token's kid").await;
    assert_eq!(jwks.fetches(), 2, "an unknown kid triggers a fetch");

    jwks.publish(&[&old, &new]);
    let response = get(&app, "/api/v1/users", &new.token("ops", "admin")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(jwks.fetches(), 3);
    let response = get(&app, "/api/v1/users", &new.token("ops", "admin")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(jwks.fetches(), 3, "a known kid needs no fetch");

    jwks.publish(&[&new]);
    let response = get(&app, "/api/v1/users", &old.token("ops", "admin")).await;
    assert_eq!(
        response.status(),
        200,
        "the cached old key stays until a refresh"
    );
    app.stop().await;
}

#[tokio::test]
async fn unknown_kid_fetches_bounded() {
    let key = SigningKey::ec("k1");
    let jwks = JwksServer::start(&[&key]).await;
    let app = spawn(&jwks, "1h").await;

    for attempt in 0..20 {
        let stranger = SigningKey::ec(&format!("made-up-{attempt}"));
        let response = get(&app, "/api/v1/users", &stranger.token("ops", "admin")).await;
        assert_invalid_token(response, "no key in the JWKS has the token's kid").await;
    }
    assert_eq!(jwks.fetches(), 1, "no fetch within the minimum interval");
    app.stop().await;
}

#[tokio::test]
async fn background_refresh_picks_up_keys() {
    let old = SigningKey::ec("old");
    let new = SigningKey::ec("new");
    let jwks = JwksServer::start(&[&old]).await;
    let mut args = jwks.server_args("1h");
    args.extend(["--auth-jwks-refresh-interval".into(), "1s".into()]);
    let options = Options {
        args,
        ..Options::default()
    };
    let app = TestApp::spawn_with(Backend::Sqlite, options)
        .await
        .expect("SQLite is always available");

    jwks.publish(&[&new]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while jwks.fetches() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        jwks.fetches() >= 2,
        "the JWKS was refetched in the background"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let response = get(&app, "/api/v1/users", &new.token("ops", "admin")).await;
    assert_eq!(response.status(), 200);
    let response = get(&app, "/api/v1/users", &old.token("ops", "admin")).await;
    assert_invalid_token(response, "no key in the JWKS has the token's kid").await;
    app.stop().await;
}
