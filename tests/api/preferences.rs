//! The preferences API on both back ends: defaults, validation, and optimistic concurrency
//! with ETag and If-Match.

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::harness::{Backend, TestApp, problem};
use crate::on_both_backends;

on_both_backends!(
    get_returns_defaults_with_etag_0,
    get_for_missing_user_is_404,
    put_with_current_etag_saves,
    put_without_if_match_is_428,
    put_with_stale_etag_is_412,
    put_with_weak_etag_is_412,
    put_with_malformed_if_match_is_400,
    put_with_star_in_if_match_list_is_400,
    put_same_document_again_is_200,
    put_with_star_overwrites,
    put_for_missing_user_is_404,
    put_rejects_invalid_fields,
    concurrent_puts_have_one_winner,
    deleting_user_deletes_preferences,
);

fn document(language: &str, theme: &str) -> Value {
    json!({
        "language": language,
        "time_zone": "Europe/Berlin",
        "notifications": { "email": false, "sms": true, "push": true },
        "theme": theme,
    })
}

async fn put(
    app: &TestApp,
    user: &Value,
    if_match: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut request = app
        .client
        .put(app.url(&format!("/api/v1/users/{}/preferences", user["id"])))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(etag) = if_match {
        request = request.header("if-match", etag);
    }
    request.send().await.expect("send the request")
}

fn etag(response: &reqwest::Response) -> &str {
    response.headers()["etag"].to_str().unwrap()
}

async fn get_returns_defaults_with_etag_0(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let user = app.create_user("Ada", "ada@example.com").await;

    let response = app
        .get(&format!("/api/v1/users/{}/preferences", user["id"]))
        .await;

    assert_eq!(response.status(), 200);
    assert_eq!(etag(&response), "\"0\"");
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({
            "language": "en",
            "time_zone": "UTC",
            "notifications": { "email": true, "sms": false, "push": false },
            "theme": "system",
        })
    );
    app.stop().await;
}

async fn get_for_missing_user_is_404(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };

    let body = problem(app.get("/api/v1/users/777/preferences").await, 404).await;

    assert_eq!(body["detail"], "no user with id 777");
    app.stop().await;
}

async fn put_with_current_etag_saves(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let user = app.create_user("Ada", "ada@example.com").await;

    let first = put(&app, &user, Some("\"0\""), &document("pt-br", "dark")).await;
    let first_etag = etag(&first).to_owned();
    let first_body: Value = first.json().await.unwrap();
    let second = put(&app, &user, Some(&first_etag), &document("de", "light")).await;
    let second_etag = etag(&second).to_owned();
    let fetched = app
        .get(&format!("/api/v1/users/{}/preferences", user["id"]))
        .await;

    assert_eq!(first_etag, "\"1\"");
    assert_eq!(first_body["language"], "pt-BR", "stored in canonical case");
    assert_eq!(first_body["theme"], "dark");
    assert_eq!(second_etag, "\"2\"");
    assert_eq!(etag(&fetched), "\"2\"");
    assert_eq!(
        fetched.json::<Value>().await.unwrap(),
        document("de", "light")
    );
    app.stop().await;
}

async fn put_without_if_match_is_428(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let user = app.create_user("Ada", "ada@example.com").await;

    let response = put(&app, &user, None, &document("de", "dark")).await;

    let body = problem(response, 428).await;
    assert!(
        body["detail"].as_str().unwrap().contains("If-Match"),
        "{body}"
    );
    let stored = app
        .get(&format!("/api/v1/users/{}/preferences", user["id"]))
        .await;
    assert_eq!(etag(&stored), "\"0\"", "nothing was written");
    app.stop().await;
}

async fn put_with_stale_etag_is_412(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let user = app.create_user("Ada", "ada@example.com").await;
    let saved = put(&app, &user, Some("\"0\""), &document("de", "dark")).await;
    assert_eq!(saved.status(), 200);

    let stale = put(&app, &user, Some("\"0\""), &document("fr", "light")).await;

    assert_eq!(etag(&stale), "\"1\"", "the 412 names the current version");
    problem(stale, 412).await;
    let stored: Value = app
        .get(&format!("/api/v1/users/{}/preferences", user["id"]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stored["language"], "de");
    app.stop().await;
}

async fn put_with_weak_etag_is_412(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let user = app.create_user("Ada", "ada@example.com").await;

    let response = put(&app, &user, Some("W/\"0\""), &document("de", "dark")).await;

    problem(response, 412).await;
    app.stop().await;
}

async fn put_with_malformed_if_match_is_400(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let user = app.create_user("Ada", "ada@example.com").await;

    let response = put(&app, &user, Some("0"), &document("de", "dark")).await;

    let body = problem(response, 400).await;
    assert!(
        body["detail"].as_str().unwrap().contains("If-Match"),
        "{body}"
    );
    app.stop().await;
}

async fn put_with_star_in_if_match_list_is_400(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let user = app.create_user("Ada", "ada@example.com").await;
    let saved = put(&app, &user, Some("\"0\""), &document("de", "dark")).await;
    assert_eq!(saved.status(), 200);

    let response = put(&app, &user, Some("\"7\", *"), &document("fr", "light")).await;

    let body = problem(response, 400).await;
    assert!(body["detail"].as_str().unwrap().contains('*'), "{body}");
    let current = app
        .get(&format!("/api/v1/users/{}/preferences", user["id"]))
        .await;
    assert_eq!(etag(&current), "\"1\"", "the stored version is unchanged");
    let stored: Value = current.json().await.unwrap();
    assert_eq!(stored["language"], "de");
    app.stop().await;
}

async fn put_same_document_again_is_200(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let user = app.create_user("Ada", "ada@example.com").await;
    let body = document("de", "dark");

    let first = put(&app, &user, Some("\"0\""), &body).await;
    let retried = put(&app, &user, Some("\"0\""), &body).await;

    assert_eq!(first.status(), 200);
    assert_eq!(retried.status(), 200, "a retried PUT succeeds");
    assert_eq!(etag(&retried), "\"1\"", "and changes nothing");
    app.stop().await;
}

async fn put_with_star_overwrites(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let user = app.create_user("Ada", "ada@example.com").await;
    put(&app, &user, Some("\"0\""), &document("de", "dark")).await;

    let response = put(&app, &user, Some("*"), &document("fr", "light")).await;

    assert_eq!(response.status(), 200);
    assert_eq!(etag(&response), "\"2\"");
    app.stop().await;
}

async fn put_for_missing_user_is_404(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };

    let response = put(
        &app,
        &json!({ "id": 555 }),
        Some("*"),
        &document("de", "dark"),
    )
    .await;

    let body = problem(response, 404).await;
    assert_eq!(body["detail"], "no user with id 555");
    app.stop().await;
}

async fn put_rejects_invalid_fields(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let user = app.create_user("Ada", "ada@example.com").await;
    let mut bad_language = document("de", "dark");
    bad_language["language"] = json!("english");
    let mut bad_zone = document("de", "dark");
    bad_zone["time_zone"] = json!("Mars/Olympus");
    let mut lowercase_zone = document("de", "dark");
    lowercase_zone["time_zone"] = json!("europe/berlin");
    let mut bad_theme = document("de", "dark");
    bad_theme["theme"] = json!("blue");
    let mut missing_channel = document("de", "dark");
    missing_channel["notifications"] = json!({ "email": true, "push": false });
    let cases = [
        (bad_language, vec!["language"]),
        (bad_zone, vec!["time_zone"]),
        (lowercase_zone, vec!["time_zone"]),
        (bad_theme, vec!["theme"]),
        (missing_channel, vec!["notifications.sms"]),
        (
            json!({}),
            vec!["language", "time_zone", "notifications", "theme"],
        ),
    ];

    for (body, fields) in cases {
        let response = put(&app, &user, Some("*"), &body).await;
        let problem = problem(response, 422).await;
        let named: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|error| error["field"].as_str().unwrap())
            .collect();
        assert_eq!(named, fields, "{body}");
    }
    let wrong_type = put(&app, &user, Some("*"), &json!({ "theme": 3 })).await;
    problem(wrong_type, 400).await;
    let unknown = put(&app, &user, Some("*"), &json!({ "colour": "red" })).await;
    problem(unknown, 400).await;
    app.stop().await;
}

async fn concurrent_puts_have_one_winner(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let user = app.create_user("Ada", "ada@example.com").await;
    let languages = ["de", "fr", "es", "it", "nl", "sv", "pl", "pt", "fi", "da"];

    let statuses: Vec<u16> = join_all(languages.iter().map(|language| {
        let app = &app;
        let user = &user;
        async move {
            put(app, user, Some("\"0\""), &document(language, "dark"))
                .await
                .status()
                .as_u16()
        }
    }))
    .await;

    let won = statuses.iter().filter(|&&status| status == 200).count();
    let lost = statuses.iter().filter(|&&status| status == 412).count();
    assert_eq!(won, 1, "{statuses:?}");
    assert_eq!(lost, 9, "{statuses:?}");
    let stored = app
        .get(&format!("/api/v1/users/{}/preferences", user["id"]))
        .await;
    assert_eq!(etag(&stored), "\"1\"");
    app.stop().await;
}

async fn deleting_user_deletes_preferences(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let user = app.create_user("Gone", "gone@example.com").await;
    put(&app, &user, Some("\"0\""), &document("de", "dark")).await;
    let path = format!("/api/v1/users/{}", user["id"]);

    let deleted = app.client.delete(app.url(&path)).send().await.unwrap();

    assert_eq!(deleted.status(), 204);
    problem(app.get(&format!("{path}/preferences")).await, 404).await;
    app.stop().await;
}
