//! The access policy: which records and operations a token's subject and scopes reach, with
//! 404 for another user's records and 403 for a missing scope, and probes open to all.

use serde_json::{Value, json};

use crate::auth::{READ_WRITE, challenge, create_user, get, send, spawn, spawn_on};
use crate::harness::auth::{JwksServer, SigningKey};
use crate::harness::{Backend, problem};

async fn other_users_record_is_not_found(backend: Backend) {
    let key = SigningKey::ec("k1");
    let jwks = JwksServer::start(&[&key]).await;
    let Some(app) = spawn_on(backend, &jwks, "0s").await else {
        return;
    };
    let admin = key.token("ops", "admin");
    let alice = create_user(&app, &admin, "alice@example.com").await;
    let bob = create_user(&app, &admin, "bob@example.com").await;
    let alice_token = key.token(&alice, READ_WRITE);

    let response = get(&app, &format!("/api/v1/users/{alice}"), &alice_token).await;
    assert_eq!(response.status(), 200);

    let hidden = problem(
        get(&app, &format!("/api/v1/users/{bob}"), &alice_token).await,
        404,
    )
    .await;
    let missing = "999999";
    let absent = problem(
        get(&app, &format!("/api/v1/users/{missing}"), &admin).await,
        404,
    )
    .await;
    assert_eq!(hidden["type"], absent["type"]);
    assert_eq!(hidden["title"], absent["title"]);
    assert_eq!(
        hidden["detail"],
        json!(format!("no user with id {bob}")),
        "the same detail as a missing id: {absent}"
    );

    let patch = json!({ "name": "Mallory" });
    let path = format!("/api/v1/users/{bob}");
    let response = send(
        &app,
        reqwest::Method::PATCH,
        &path,
        &alice_token,
        Some(patch),
    )
    .await;
    problem(response, 404).await;
    let response = send(&app, reqwest::Method::DELETE, &path, &alice_token, None).await;
    problem(response, 404).await;

    let bob_now: Value = get(&app, &path, &admin).await.json().await.expect("JSON");
    assert_eq!(bob_now["name"], "Ada", "bob is unchanged");
    app.stop().await;
}

async fn owner_changes_own_user(backend: Backend) {
    let key = SigningKey::ed25519("k1");
    let jwks = JwksServer::start(&[&key]).await;
    let Some(app) = spawn_on(backend, &jwks, "0s").await else {
        return;
    };
    let admin = key.token("ops", "admin");
    let id = create_user(&app, &admin, "own@example.com").await;
    let token = key.token(&id, READ_WRITE);
    let path = format!("/api/v1/users/{id}");

    let patch = json!({ "name": "Grace" });
    let response = send(&app, reqwest::Method::PATCH, &path, &token, Some(patch)).await;
    assert_eq!(response.status(), 200);
    let response = send(&app, reqwest::Method::DELETE, &path, &token, None).await;
    assert_eq!(response.status(), 204);
    problem(get(&app, &path, &token).await, 404).await;
    app.stop().await;
}

async fn other_users_orders_are_not_found(backend: Backend) {
    let key = SigningKey::ec("k1");
    let jwks = JwksServer::start(&[&key]).await;
    let Some(app) = spawn_on(backend, &jwks, "0s").await else {
        return;
    };
    let admin = key.token("ops", "admin");
    let alice = create_user(&app, &admin, "alice@example.com").await;
    let bob = create_user(&app, &admin, "bob@example.com").await;
    let alice_token = key.token(&alice, READ_WRITE);
    let order = json!({ "amount": 1999, "currency": "EUR" });

    use reqwest::Method;
    let path = format!("/api/v1/users/{alice}/orders");
    let response = send(&app, Method::POST, &path, &alice_token, Some(order.clone())).await;
    assert_eq!(response.status(), 201, "alice orders for herself");
    let path = format!("/api/v1/users/{bob}/orders");
    let response = send(&app, Method::POST, &path, &admin, Some(order.clone())).await;
    assert_eq!(response.status(), 201, "admin orders for bob");
    let bob_order: Value = response.json().await.expect("a JSON order");
    let bob_order = format!("/api/v1/orders/{}", bob_order["id"]);

    for path in [
        format!("/api/v1/users/{alice}/orders"),
        format!("/api/v1/users/{alice}/preferences"),
        format!("/api/v1/users/{alice}/profile"),
    ] {
        assert_eq!(get(&app, &path, &alice_token).await.status(), 200, "{path}");
    }
    for path in [
        format!("/api/v1/users/{bob}/orders"),
        format!("/api/v1/users/{bob}/preferences"),
        format!("/api/v1/users/{bob}/profile"),
        bob_order.clone(),
    ] {
        problem(get(&app, &path, &alice_token).await, 404).await;
        assert_eq!(
            get(&app, &path, &admin).await.status(),
            200,
            "admin reads {path}"
        );
    }
    let hidden = problem(get(&app, &bob_order, &alice_token).await, 404).await;
    let bob_id = bob_order.rsplit('/').next().unwrap_or_default().to_owned();
    assert_eq!(
        hidden["detail"],
        json!(format!("no order with id {bob_id}"))
    );

    let path = format!("/api/v1/users/{bob}/orders");
    let response = send(&app, Method::POST, &path, &alice_token, Some(order)).await;
    problem(response, 404).await;
    let path = format!("/api/v1/users/{bob}/preferences");
    let response = send(&app, Method::PUT, &path, &alice_token, Some(json!({}))).await;
    problem(response, 404).await;

    let writer_only = key.token(&alice, "users:write");
    let response = get(
        &app,
        &format!("/api/v1/users/{alice}/profile"),
        &writer_only,
    )
    .await;
    problem(response, 403).await;
    app.stop().await;
}

crate::on_both_backends!(
    other_users_record_is_not_found,
    owner_changes_own_user,
    other_users_orders_are_not_found
);

#[tokio::test]
async fn missing_scopes_forbidden() {
    let key = SigningKey::ec("k1");
    let jwks = JwksServer::start(&[&key]).await;
    let app = spawn(&jwks, "0s").await;
    let admin = key.token("ops", "admin");
    let id = create_user(&app, &admin, "scoped@example.com").await;
    let path = format!("/api/v1/users/{id}");
    let reader = key.token(&id, "users:read");
    let writer = key.token(&id, "users:write");
    let nothing = key.token(&id, "openid profile");
    let body = json!({ "name": "Ada", "email": "new@example.com" });

    use reqwest::Method;
    let cases = [
        (
            Method::GET,
            "/api/v1/users".to_owned(),
            &reader,
            None,
            "admin",
        ),
        (
            Method::GET,
            "/api/v1/users".to_owned(),
            &writer,
            None,
            "admin",
        ),
        (Method::GET, path.clone(), &writer, None, "users:read"),
        (Method::GET, path.clone(), &nothing, None, "users:read"),
        (
            Method::PATCH,
            path.clone(),
            &reader,
            Some(json!({"name": "X"})),
            "users:write",
        ),
        (Method::DELETE, path.clone(), &reader, None, "users:write"),
        (
            Method::POST,
            "/api/v1/users".to_owned(),
            &reader,
            Some(body.clone()),
            "users:write",
        ),
    ];
    for (method, path, token, body, scope) in cases {
        let label = format!("{method} {path} needs {scope}");
        let response = send(&app, method, &path, token, body).await;
        let header = challenge(&response);
        assert!(
            header.contains("error=\"insufficient_scope\""),
            "{label}: {header}"
        );
        assert!(
            header.contains(&format!("scope=\"{scope}\"")),
            "{label}: {header}"
        );
        let problem = problem(response, 403).await;
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(scope), "{label}: {problem}");
    }

    let response = send(&app, Method::POST, "/api/v1/users", &writer, Some(body)).await;
    assert_eq!(response.status(), 201, "users:write creates users");
    let response = get(&app, &path, &reader).await;
    assert_eq!(response.status(), 200, "users:read reads its own user");
    app.stop().await;
}

#[tokio::test]
async fn probes_need_no_token() {
    let key = SigningKey::ec("k1");
    let jwks = JwksServer::start(&[&key]).await;
    let app = spawn(&jwks, "0s").await;

    for path in ["/", "/livez", "/readyz", "/health"] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
    let metrics = app
        .client
        .get(format!("{}/metrics", app.metrics_address))
        .send()
        .await
        .expect("scrape the metrics");
    assert_eq!(metrics.status(), 200);
    app.stop().await;
}
