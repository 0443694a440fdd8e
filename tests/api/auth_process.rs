//! Authentication seen from the process: start-up checks of the token settings, the access
//! log's silence about tokens, and the `peregrine token` subcommand.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::auth::{SigningKey, claims, now};
use crate::harness::{Process, binary, get_status_with};

#[tokio::test]
async fn unreachable_jwks_stops_start() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let url = format!("http://{}/jwks.json", closed.local_addr().expect("address"));
    drop(closed);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let database = format!("sqlite://{}", dir.path().join("test.db").display());

    let flags = [
        "--auth-jwks-url",
        &url,
        "--auth-issuer",
        "i",
        "--auth-audience",
        "a",
    ];
    let err = crate::harness::build_application(&database, &flags)
        .await
        .err()
        .expect("the start fails");
    let message = format!("{err:#}");
    assert!(message.contains("failed to fetch the JWKS"), "{message}");
}

#[tokio::test]
async fn jwks_without_usable_keys_stops_start() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let database = format!("sqlite://{}", dir.path().join("test.db").display());
    let path = dir.path().join("jwks.json");
    let documents = [
        json!({ "keys": [{ "kty": "oct", "kid": "hmac", "k": "c2VjcmV0" }] }),
        json!({ "keys": [{ "kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA" }] }),
        json!({ "keys": [SigningKey::ec("enc").jwk_with("use", json!("enc"))] }),
        json!({ "keys": [SigningKey::ec("hs").jwk_with("alg", json!("HS256"))] }),
        json!({ "keys": [SigningKey::ec("").jwk_without("kid")] }),
        json!({ "keys": [] }),
        json!([]),
    ];
    for document in documents {
        std::fs::write(&path, document.to_string()).expect("write the JWKS");
        let flags = [
            "--auth-jwks-file",
            path.to_str().expect("a UTF-8 path"),
            "--auth-issuer",
            "i",
            "--auth-audience",
            "a",
        ];
        let result = crate::harness::build_application(&database, &flags).await;
        assert!(result.is_err(), "{document} is rejected");
    }
}

#[test]
fn public_bind_without_auth_refused() {
    let output = binary(&[("SERVER_HOST", "0.0.0.0")])
        .output()
        .expect("run peregrine");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("SERVER_HOST"), "{stderr}");
    assert!(stderr.contains("AUTH_JWKS_URL"), "{stderr}");
    assert!(stderr.contains("AUTH_MODE=none"), "{stderr}");
}

#[test]
fn auth_mode_none_warns_at_start() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let database = format!("sqlite://{}", dir.path().join("test.db").display());
    let process = Process::start(&[("AUTH_MODE", "none"), ("DATABASE_URL", &database)]);

    let warning = process
        .startup_log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|event| event["auth_mode"] == "none");
    let warning = warning.expect("an event with auth_mode=none before listening");
    assert_eq!(warning["level"], "WARN", "{warning}");
}

#[test]
fn token_and_header_stay_out_of_logs() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let key = SigningKey::ec("k1");
    let jwks_path = dir.path().join("jwks.json");
    let jwks = crate::harness::auth::jwks(&[&key]);
    std::fs::write(&jwks_path, jwks.to_string()).expect("write the JWKS");
    let database = format!("sqlite://{}", dir.path().join("test.db").display());
    let mut process = Process::start(&[
        ("DATABASE_URL", &database),
        ("AUTH_JWKS_FILE", jwks_path.to_str().expect("a UTF-8 path")),
        ("AUTH_ISSUER", crate::harness::auth::ISSUER),
        ("AUTH_AUDIENCE", crate::harness::auth::AUDIENCE),
        ("RUST_LOG", "trace"),
    ]);

    let valid = key.token("ops", "admin");
    let mut expired = claims("1", "admin");
    expired["exp"] = json!(now() - 3600);
    let expired = key.sign(&expired);
    let forged = SigningKey::ec("k1").token("1", "admin");
    let tokens = [valid, expired, forged, "garbage-token-value".to_owned()];
    for token in &tokens {
        let status = bearer_status(&process.address, "/api/v1/users", token);
        assert!(status == 200 || status == 401, "status {status}");
    }
    process.signal(libc::SIGTERM);
    let exit = process.wait_for_exit(Duration::from_secs(10));
    assert!(exit.is_some_and(|status| status.success()), "{exit:?}");

    let rest = process.remaining_log();
    let log = format!("{}{rest}", process.startup_log);
    assert!(
        log.contains("request completed"),
        "the requests were logged"
    );
    for token in &tokens {
        let signature = token.rsplit('.').next().unwrap_or(token);
        assert!(!log.contains(signature), "a token reached the log");
    }
    assert!(!log.to_ascii_lowercase().contains("authorization"), "{log}");
}

/// Sends `GET path` with a bearer token on a plain blocking socket and returns the status.
fn bearer_status(address: &str, path: &str, token: &str) -> u16 {
    get_status_with(address, path, &format!("Authorization: Bearer {token}\r\n"))
}

#[test]
fn token_subcommand_mints_accepted_tokens() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rsa_path = dir.path().join("rsa.pem");
    std::fs::write(&rsa_path, SigningKey::rsa("unused").pem).expect("write the RSA key");
    let ed_path = dir.path().join("ed25519.pem");
    std::fs::write(&ed_path, SigningKey::ed25519("unused").pem).expect("write the Ed25519 key");
    let generated = dir.path().join("generated.pem");

    for (index, key_path) in [&generated, &rsa_path, &ed_path].into_iter().enumerate() {
        let jwks_path = dir.path().join(format!("jwks-{index}.json"));
        let key = key_path.to_str().expect("a UTF-8 path");
        let jwks = jwks_path.to_str().expect("a UTF-8 path");
        let mint = |sub: &str, scope: &str| {
            let args = [
                "token",
                "--key",
                key,
                "--generate-key",
                "--jwks",
                jwks,
                "--sub",
                sub,
                "--scope",
                scope,
                "--issuer",
                "dev-issuer",
                "--audience",
                "dev-audience",
            ];
            let output = binary(&[])
                .args(args)
                .output()
                .expect("run peregrine token");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success(), "{key}: {stderr}");
            String::from_utf8(output.stdout)
                .expect("a UTF-8 token")
                .trim()
                .to_owned()
        };
        let admin = mint("ops", "admin");
        let reader = mint("1", "users:read");

        let database = format!(
            "sqlite://{}",
            dir.path().join(format!("{index}.db")).display()
        );
        let mut process = Process::start(&[
            ("DATABASE_URL", &database),
            ("AUTH_JWKS_FILE", jwks),
            ("AUTH_ISSUER", "dev-issuer"),
            ("AUTH_AUDIENCE", "dev-audience"),
        ]);
        assert_eq!(
            bearer_status(&process.address, "/api/v1/users", &admin),
            200,
            "{key}"
        );
        assert_eq!(
            bearer_status(&process.address, "/api/v1/users", &reader),
            403,
            "{key}"
        );
        assert_eq!(
            bearer_status(&process.address, "/api/v1/users/1", &reader),
            404,
            "{key}"
        );
        process.signal(libc::SIGTERM);
        process.wait_for_exit(Duration::from_secs(10));
    }
}

#[test]
fn token_subcommand_rejects_bad_keys() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a key").expect("write the file");
    for path in [&missing, &garbage] {
        let key = path.to_str().expect("a UTF-8 path");
        let output = binary(&[])
            .args(["token", "--key", key, "--sub", "1"])
            .output()
            .expect("run peregrine token");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(key), "{stderr}");
        assert!(output.stdout.is_empty(), "no token for {key}");
    }
}

/// Prints the time one token verification takes, per algorithm, on a warm key cache. Run it
/// with `cargo test --test api verify_cost -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a timing, not a check"]
async fn verify_cost_per_token() {
    use peregrine::auth::verify::Verifier;
    use peregrine::auth::{JwksSource, JwtSettings};

    const ROUNDS: u32 = 2_000;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let keys = [
        SigningKey::rsa("rsa"),
        SigningKey::ec("ec"),
        SigningKey::ed25519("ed"),
    ];
    let path = dir.path().join("jwks.json");
    let document = crate::harness::auth::jwks(&keys.iter().collect::<Vec<_>>());
    std::fs::write(&path, document.to_string()).expect("write the JWKS");
    let settings = JwtSettings {
        source: JwksSource::File(path),
        issuer: crate::harness::auth::ISSUER.to_owned(),
        audience: crate::harness::auth::AUDIENCE.to_owned(),
        leeway: Duration::from_secs(30),
        refresh_interval: Duration::from_secs(300),
        min_refresh_interval: Duration::from_secs(10),
    };
    let verifier = Verifier::start(&settings).await.expect("load the JWKS");

    for key in &keys {
        let token = key.token("42", "users:read");
        verifier.verify(&token).await.expect("a valid token");
        let started = std::time::Instant::now();
        for _ in 0..ROUNDS {
            verifier.verify(&token).await.expect("a valid token");
        }
        let per_token = started.elapsed() / ROUNDS;
        println!("{:?}: {per_token:?} per verification", key.algorithm);
    }
}
