//! The users API on both back ends: create, read, list, update, delete, and the uniqueness
//! of email addresses under concurrent writes.

use std::collections::HashSet;

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::harness::{Backend, TestApp, problem};
use crate::on_both_backends;

on_both_backends!(
    create_answers_201_with_location,
    get_returns_created_user,
    get_unknown_id_is_404,
    list_pages_with_cursor,
    list_defaults_to_50,
    patch_changes_fields,
    patch_unknown_id_is_404,
    patch_to_taken_email_is_409,
    delete_then_get_is_404,
    duplicate_email_race_has_one_winner,
    concurrent_creates_all_succeed,
    name_is_stored_normalized,
    email_spellings_are_one_address,
    body_with_byte_order_mark_is_accepted,
);

async fn create_answers_201_with_location(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };

    let response = app
        .post_json(
            "/api/v1/users",
            r#"{"name":"Ada","email":"ada@example.com"}"#,
        )
        .await;

    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let user: Value = response.json().await.unwrap();
    assert_eq!(location, format!("/api/v1/users/{}", user["id"]));
    assert_eq!(user["name"], "Ada");
    assert_eq!(user["email"], "ada@example.com");
    let created_at = user["created_at"].as_str().unwrap();
    assert!(created_at.ends_with('Z'), "UTC RFC 3339: {created_at}");
    assert!(
        time::OffsetDateTime::parse(created_at, &time::format_description::well_known::Rfc3339)
            .is_ok()
    );
    app.stop().await;
}

async fn get_returns_created_user(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let created = app.create_user("Grace", "grace@example.com").await;

    let response = app.get(&format!("/api/v1/users/{}", created["id"])).await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.json::<Value>().await.unwrap(), created);
    app.stop().await;
}

async fn get_unknown_id_is_404(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };

    let body = problem(app.get("/api/v1/users/424242").await, 404).await;

    assert_eq!(body["detail"], "no user with id 424242");
    app.stop().await;
}

async fn list_pages_with_cursor(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(
            app.create_user(&format!("User {i}"), &format!("user{i}@example.com"))
                .await["id"]
                .clone(),
        );
    }

    let mut seen = Vec::new();
    let mut path = "/api/v1/users?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let page: Value = app.get(&path).await.json().await.unwrap();
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|user| user["id"].clone()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/users?limit=2&after={cursor}"),
            None => break,
        }
    }

    assert_eq!(seen, created, "every user once, in id order");
    assert_eq!(pages, 3);
    app.stop().await;
}

async fn list_defaults_to_50(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let shared = &app;
    join_all((0..51).map(|i| async move {
        shared
            .create_user("Many", &format!("many{i}@example.com"))
            .await
    }))
    .await;

    let page: Value = app.get("/api/v1/users").await.json().await.unwrap();

    assert_eq!(page["items"].as_array().unwrap().len(), 50);
    assert!(page["next_cursor"].is_string());
    app.stop().await;
}

async fn patch_changes_fields(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let user = app.create_user("Alan", "alan@example.com").await;
    let path = format!("/api/v1/users/{}", user["id"]);

    let renamed: Value = patch(&app, &path, r#"{"name":"Alan T."}"#)
        .await
        .json()
        .await
        .unwrap();
    let moved: Value = patch(&app, &path, r#"{"email":"ALAN@example.org"}"#)
        .await
        .json()
        .await
        .unwrap();

    assert_eq!(renamed["name"], "Alan T.");
    assert_eq!(renamed["email"], "alan@example.com");
    assert_eq!(moved["name"], "Alan T.");
    assert_eq!(moved["email"], "ALAN@example.org");
    assert_eq!(moved["created_at"], user["created_at"]);
    assert_eq!(app.get(&path).await.json::<Value>().await.unwrap(), moved);
    app.stop().await;
}

async fn patch_unknown_id_is_404(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };

    let response = patch(&app, "/api/v1/users/77", r#"{"name":"Nobody"}"#).await;

    problem(response, 404).await;
    app.stop().await;
}

async fn patch_to_taken_email_is_409(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_user("First", "first@example.com").await;
    let second = app.create_user("Second", "second@example.com").await;
    let path = format!("/api/v1/users/{}", second["id"]);

    let response = patch(&app, &path, r#"{"email":"First@Example.com"}"#).await;
    let same_address_new_case = patch(&app, &path, r#"{"email":"SECOND@example.com"}"#).await;

    let body = problem(response, 409).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("First@Example.com"),
        "{body}"
    );
    assert_eq!(
        same_address_new_case.status(),
        200,
        "a user may change the case of its own address"
    );
    app.stop().await;
}

async fn delete_then_get_is_404(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let user = app.create_user("Temp", "temp@example.com").await;
    let path = format!("/api/v1/users/{}", user["id"]);

    let first = app.client.delete(app.url(&path)).send().await.unwrap();
    let second = app.client.delete(app.url(&path)).send().await.unwrap();

    assert_eq!(first.status(), 204);
    assert_eq!(first.content_length(), Some(0));
    problem(second, 404).await;
    problem(app.get(&path).await, 404).await;
    app.stop().await;
}

async fn duplicate_email_race_has_one_winner(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let addresses = [
        "race@example.com",
        "RACE@example.com",
        "Race@Example.Com",
        "race@EXAMPLE.COM",
    ];

    let statuses: Vec<u16> = join_all((0..20).map(|i| {
        let body = json!({ "name": format!("Racer {i}"), "email": addresses[i % addresses.len()] })
            .to_string();
        let app = &app;
        async move {
            app.post_json("/api/v1/users", &body)
                .await
                .status()
                .as_u16()
        }
    }))
    .await;

    assert_eq!(
        statuses.iter().filter(|&&status| status == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&status| status == 409).count(),
        19,
        "{statuses:?}"
    );
    let page: Value = app.get("/api/v1/users").await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    app.stop().await;
}

async fn concurrent_creates_all_succeed(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };

    let responses = join_all((0..50).map(|i| {
        let body =
            json!({ "name": format!("Writer {i}"), "email": format!("writer{i}@example.com") })
                .to_string();
        let app = &app;
        async move {
            let response = app.post_json("/api/v1/users", &body).await;
            (response.status().as_u16(), response.text().await.unwrap())
        }
    }))
    .await;

    for (status, body) in &responses {
        assert_eq!(*status, 201, "{body}");
    }
    let page: Value = app
        .get("/api/v1/users?limit=100")
        .await
        .json()
        .await
        .unwrap();
    let ids: HashSet<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 50);
    app.stop().await;
}

async fn name_is_stored_normalized(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };

    let user = app
        .create_user("  Jose\u{0301}  ", "  jose@example.com ")
        .await;

    assert_eq!(user["name"], "Jos\u{00E9}");
    assert_eq!(user["email"], "jose@example.com");
    app.stop().await;
}

async fn patch(app: &TestApp, path: &str, body: &str) -> reqwest::Response {
    app.client
        .patch(app.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn email_spellings_are_one_address(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_user("Composed", "\u{00FC}@ex\u{00E4}mple.com")
        .await;

    let decomposed = json!({ "name": "Decomposed", "email": "U\u{0308}@EXA\u{0308}MPLE.com" });
    let response = app
        .post_json("/api/v1/users", &decomposed.to_string())
        .await;

    assert_eq!(
        response.status(),
        409,
        "NFC and case folding make these one address"
    );
    app.stop().await;
}

async fn body_with_byte_order_mark_is_accepted(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };

    let body = "\u{FEFF}{\"name\":\"Bom\",\"email\":\"bom@example.com\"}";
    let response = app.post_json("/api/v1/users", body).await;

    assert_eq!(response.status(), 201);
    app.stop().await;
}
