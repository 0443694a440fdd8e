//! The OpenAPI document: the served copy equals the committed `openapi.json`, every operation
//! it lists is served, its limits are the real boundaries of the validation code, and the
//! reference page under `/docs/` is served from the binary.
//!
//! After a change to a route or a type, `PEREGRINE_WRITE_OPENAPI=1 cargo test --test api
//! contract` rewrites `openapi.json`.

use std::io::Read;
use std::sync::LazyLock;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use peregrine::domain::UserName;
use proptest::prelude::*;
use serde_json::{Value, json};
use unicode_normalization::UnicodeNormalization;

use crate::harness::{Backend, Options, TestApp, problem};

/// Set to 1 to write the served document to `openapi.json` instead of comparing.
const WRITE_VARIABLE: &str = "PEREGRINE_WRITE_OPENAPI";

fn committed_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json")
}

fn document() -> Value {
    serde_json::from_str(peregrine::http::openapi::document_json()).expect("the document is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_document_matches_committed_file() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();

    let response = app.get("/openapi.json").await;
    let status = response.status();
    let content_type = response.headers()["content-type"].clone();
    let served = response.text().await.unwrap();

    assert_eq!(status, 200);
    assert_eq!(content_type, "application/json");
    if std::env::var(WRITE_VARIABLE).as_deref() == Ok("1") {
        std::fs::write(committed_path(), &served).expect("write openapi.json");
    }
    let committed = std::fs::read_to_string(committed_path()).unwrap_or_default();
    assert!(
        served == committed,
        "openapi.json differs from the served document; run \
         `{WRITE_VARIABLE}=1 cargo test --test api contract` and commit openapi.json"
    );
    app.stop().await;
}

#[test]
fn document_is_openapi_3_1_with_ids() {
    let document = document();

    assert_eq!(document["openapi"], "3.1.0");
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            assert!(
                operation["operationId"].is_string(),
                "{method} {path} has no operationId"
            );
            assert!(
                operation["tags"][0].is_string(),
                "{method} {path} has no tag"
            );
        }
    }
}

/// Every response link names an existing operation by `operationId`: utoipa 5.5 wrote
/// `operation_id`, which schemathesis rejected as a link without a target.
#[test]
fn links_name_existing_operations() {
    let document = document();
    let mut operation_ids = Vec::new();
    let mut links = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operation_ids.push(operation["operationId"].clone());
            for (status, response) in operation["responses"].as_object().unwrap() {
                for (name, link) in response["links"].as_object().into_iter().flatten() {
                    links.push((format!("{method} {path} {status} {name}"), link.clone()));
                }
            }
        }
    }

    assert!(links.len() >= 5, "links: {links:?}");
    for (name, link) in links {
        assert!(
            operation_ids.contains(&link["operationId"]),
            "{name} names no operation: {link}"
        );
        assert!(link["parameters"]["id"].is_string(), "{name}: {link}");
    }
}

/// Sends each documented operation once, with `{id}` 1 and a JSON body of `{}`, and checks
/// that the route exists and the status is one the document lists for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_operations_are_served() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let document = document();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let url = app.url(
                &path
                    .replace("{id}", "1")
                    .replace("{file}", "swagger-ui.css"),
            );
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut request = client.request(method.clone(), url);
            if operation.get("requestBody").is_some() {
                request = request
                    .header("content-type", "application/json")
                    .body("{}");
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();

            assert!(
                operation["responses"].get(status.to_string()).is_some(),
                "{method} {path}: status {status} is not documented: {body}"
            );
            let problem_type = serde_json::from_str::<Value>(&body)
                .map(|body| body["type"].clone())
                .unwrap_or_default();
            assert_ne!(
                problem_type, "/problems/route-not-found",
                "{method} {path} is not routed"
            );
        }
    }
    app.stop().await;
}

/// The bounds the document states, read from it, are where the server starts to reject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_limits_are_real_boundaries() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let document = document();
    let schemas = &document["components"]["schemas"];
    let list = &document["paths"]["/api/v1/users"]["get"];
    let limit = list["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|parameter| parameter["name"] == "limit")
        .unwrap()["schema"]
        .clone();
    let max_limit = limit["maximum"].as_u64().unwrap();
    let min_limit = limit["minimum"].as_u64().unwrap();
    let max_email = schemas["CreateUserBody"]["properties"]["email"]["maxLength"]
        .as_u64()
        .unwrap() as usize;
    let max_name = schemas["User"]["properties"]["name"]["maxLength"]
        .as_u64()
        .unwrap() as usize;

    let page = |limit: u64| format!("/api/v1/users?limit={limit}");
    assert_eq!(app.get(&page(max_limit)).await.status(), 200);
    assert_eq!(app.get(&page(min_limit)).await.status(), 200);
    problem(app.get(&page(max_limit + 1)).await, 400).await;
    problem(app.get(&page(min_limit - 1)).await, 400).await;

    // A local part has at most 64 characters and a domain label at most 63, so the last
    // label takes up the rest.
    let address = |length: usize| {
        let last = length - 64 - 1 - 2 * 64;
        format!(
            "{}@{}.{}.{}",
            "a".repeat(64),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(last)
        )
    };
    let longest = address(max_email);
    let too_long = address(max_email + 1);
    assert_eq!(longest.len(), max_email);
    app.create_user("Longest Email", &longest).await;
    let body = json!({ "name": "Too Long", "email": too_long }).to_string();
    problem(app.post_json("/api/v1/users", &body).await, 422).await;

    app.create_user(&"é".repeat(max_name), "longest-name@example.com")
        .await;
    let body = json!({ "name": "é".repeat(max_name + 1), "email": "n@example.com" }).to_string();
    problem(app.post_json("/api/v1/users", &body).await, 422).await;
    app.stop().await;
}

/// White space that trimming removes: Unicode's White_Space characters.
fn white_space() -> impl Strategy<Value = char> {
    prop::sample::select(vec![
        '\t', '\n', '\u{000B}', '\u{000C}', '\r', ' ', '\u{0085}', '\u{00A0}', '\u{1680}',
        '\u{2000}', '\u{200A}', '\u{2028}', '\u{2029}', '\u{202F}', '\u{205F}', '\u{3000}',
    ])
}

/// Characters around the edges of the name rules: white space, control and bidirectional
/// formatting characters, combining marks, other planes, and any character.
fn tricky_character() -> impl Strategy<Value = char> {
    prop_oneof![
        2 => white_space(),
        2 => prop::sample::select(vec![
            '\u{0000}', '\u{0007}', '\u{001F}', '\u{007F}', '\u{009F}', '\u{202A}', '\u{202E}',
            '\u{2066}', '\u{2069}', '\u{200B}', '\u{FEFF}', '\u{180E}', '\u{001C}',
        ]),
        1 => prop::sample::select(vec!['é', 'ß', '中', '\u{0301}', '😀', '\u{10FFFF}']),
        1 => any::<char>(),
    ]
}

/// Names of every length up to past the maximum: white space around plain characters, with
/// at most one tricky character somewhere.
fn name_candidate() -> impl Strategy<Value = String> {
    let plain = prop_oneof![
        6 => proptest::char::range('a', 'z'),
        2 => Just(' '),
        1 => prop::sample::select(vec!['é', '中', '😀']),
    ];
    let leading = prop::collection::vec(white_space(), 0..3);
    let trailing = prop::collection::vec(white_space(), 0..3);
    let body = prop::collection::vec(plain, 0..104);
    let tricky = prop::option::of((any::<prop::sample::Index>(), tricky_character()));
    (leading, body, tricky, trailing).prop_map(|(leading, mut body, tricky, trailing)| {
        if let Some((index, character)) = tricky {
            body.insert(index.index(body.len() + 1), character);
        }
        leading.into_iter().chain(body).chain(trailing).collect()
    })
}

/// The documented pattern of a name, compiled once.
static NAME_PATTERN: LazyLock<regex::Regex> = LazyLock::new(|| {
    let document = document();
    let pattern =
        document["components"]["schemas"]["CreateUserBody"]["properties"]["name"]["pattern"]
            .as_str()
            .expect("the name has a pattern");
    regex::Regex::new(pattern).expect("the name pattern compiles")
});

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The documented pattern accepts exactly the names `UserName::parse` accepts, for
    /// strings in NFC: normalization can change the length that the pattern counts.
    #[test]
    fn name_pattern_matches_validation(candidate in name_candidate()) {
        let text: String = candidate.nfc().collect();

        prop_assert_eq!(
            NAME_PATTERN.is_match(&text),
            UserName::parse(&text).is_ok(),
            "{:?}",
            text
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_page_is_served_from_binary() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let redirect = no_redirects.get(app.url("/docs")).send().await.unwrap();
    let page = app.get("/docs/").await;
    let page_type = page.headers()["content-type"].clone();
    let html = page.text().await.unwrap();
    let initializer = app
        .get("/docs/swagger-initializer.js")
        .await
        .text()
        .await
        .unwrap();

    assert_eq!(redirect.status(), 308);
    assert_eq!(redirect.headers()["location"], "/docs/");
    assert_eq!(page_type, "text/html");
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("://"),
        "the page names no other host: {html}"
    );
    assert!(
        initializer.contains(r#""url": "/openapi.json""#),
        "{initializer}"
    );
    assert!(
        initializer.contains(r#""validatorUrl": "none""#),
        "{initializer}"
    );
    for asset in referenced_files(&html) {
        let response = app.get(&format!("/docs/{asset}")).await;
        assert_eq!(response.status(), 200, "/docs/{asset}");
    }
    let missing = problem(app.get("/docs/missing.js").await, 404).await;
    assert_eq!(missing["type"], "/problems/not-found");
    app.stop().await;
}

#[tokio::test]
async fn docs_files_gzip_when_accepted() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let plain = app.get("/docs/swagger-ui.css").await;
    assert_eq!(plain.headers().get("content-encoding"), None);
    let plain = plain.bytes().await.unwrap();

    for accept in ["gzip", "deflate, gzip;q=0.5", "*"] {
        let response = app
            .client
            .get(app.url("/docs/swagger-ui.css"))
            .header("accept-encoding", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["content-encoding"], "gzip", "{accept}");
        assert_eq!(response.headers()["vary"], "accept-encoding", "{accept}");
        let compressed = response.bytes().await.unwrap();
        let mut decompressed = Vec::new();
        flate2::read::GzDecoder::new(compressed.as_ref())
            .read_to_end(&mut decompressed)
            .unwrap();
        assert_eq!(decompressed, plain, "{accept}");
        assert!(compressed.len() < plain.len() / 2, "{accept}");
    }
    for without_gzip in ["identity", "gzip;q=0", "br, GZIP; q=0.0"] {
        let response = app
            .client
            .get(app.url("/docs/swagger-ui.css"))
            .header("accept-encoding", without_gzip)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers().get("content-encoding"),
            None,
            "{without_gzip}"
        );
        assert_eq!(response.bytes().await.unwrap(), plain, "{without_gzip}");
    }
    assert!(
        String::from_utf8_lossy(&plain).contains(".swagger-ui"),
        "a style sheet"
    );
    app.stop().await;
}

/// Collects the relative `src` and `href` targets of the page, such as `./swagger-ui.css`.
fn referenced_files(html: &str) -> Vec<String> {
    let attribute = regex::Regex::new(r#"(?:src|href)="\./([^"]+)""#).unwrap();
    let files: Vec<String> = attribute
        .captures_iter(html)
        .map(|captures| captures[1].to_owned())
        .collect();
    assert!(files.len() >= 4, "scripts and style sheets in {html}");
    files
}

async fn hold() -> &'static str {
    tokio::time::sleep(Duration::from_secs(2)).await;
    "done"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_routes_are_not_shed() {
    let options = Options {
        args: vec!["--max-in-flight".into(), "1".into()],
        routes: Some(Router::new().route("/test/hold", get(hold))),
        ..Options::default()
    };
    let app = TestApp::spawn_with(Backend::Sqlite, options).await.unwrap();
    let holding = tokio::spawn(app.client.get(app.url("/test/hold")).send());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let shed = app.get("/api/v1/users").await.status();
    let document = app.get("/openapi.json").await.status();
    let page = app.get("/docs/").await.status();

    assert_eq!(shed, 503);
    assert_eq!(document, 200);
    assert_eq!(page, 200);
    assert_eq!(holding.await.unwrap().unwrap().status(), 200);
    app.stop().await;
}

/// schemathesis sent `"amount": 1353.0`, which JSON Schema's `integer` accepts, and got 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integral_amount_with_fraction_accepted() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let user = app.create_user("Ada Lovelace", "ada@example.com").await;
    let path = format!("/api/v1/users/{}/orders", user["id"]);

    for amount in ["1353.0", "1e2"] {
        let body = format!(r#"{{"amount":{amount},"currency":"EUR"}}"#);
        let response = app.post_json(&path, &body).await;
        assert_eq!(response.status(), 201, "amount {amount}");
    }
    let body = r#"{"amount":1.5,"currency":"EUR"}"#;
    problem(app.post_json(&path, body).await, 422).await;
    app.stop().await;
}

/// schemathesis sent `If-Match: "l07q%{l;N,", W/"R"`, whose first entity tag contains a
/// comma, as RFC 9110 allows, and got 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_tag_with_comma_parsed() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let user = app.create_user("Ada Lovelace", "ada@example.com").await;
    let url = app.url(&format!("/api/v1/users/{}/preferences", user["id"]));
    let preferences = json!({
        "language": "en",
        "time_zone": "UTC",
        "notifications": { "email": true, "sms": false, "push": false },
        "theme": "dark",
    });
    let put = |if_match: &'static str| {
        app.client
            .put(url.clone())
            .header("if-match", if_match)
            .json(&preferences)
            .send()
    };

    let stale = put(r#""a,b", W/"0""#).await.unwrap();
    let current = put(r#""a,b", "0""#).await.unwrap();

    problem(stale, 412).await;
    assert_eq!(current.status(), 200);
    app.stop().await;
}
