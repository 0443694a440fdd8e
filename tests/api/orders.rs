//! The orders API on both back ends: create, read, list newest first with a cursor, input
//! checks, and what deleting the user does to its orders.

use serde_json::{Value, json};

use crate::harness::{Backend, TestApp, problem};
use crate::on_both_backends;

on_both_backends!(
    create_order_answers_201_with_location,
    create_order_defaults_to_pending,
    create_order_for_missing_user_is_404,
    create_order_rejects_invalid_fields,
    create_order_rejects_malformed_json,
    get_unknown_order_is_404,
    get_order_with_bad_id_is_400,
    list_orders_newest_first_with_cursor,
    list_orders_only_of_that_user,
    list_orders_of_missing_user_is_404,
    list_orders_rejects_bad_parameters,
    deleting_user_deletes_its_orders,
);

/// Creates an order and returns its JSON, failing the test unless the status is 201.
pub async fn create_order(app: &TestApp, user: &Value, body: Value) -> Value {
    let path = format!("/api/v1/users/{}/orders", user["id"]);
    let response = app.post_json(&path, &body.to_string()).await;
    assert_eq!(response.status(), 201, "create order {body}");
    response.json().await.expect("a JSON order")
}

async fn create_order_answers_201_with_location(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let user = app.create_user("Ada", "ada@example.com").await;

    let response = app
        .post_json(
            &format!("/api/v1/users/{}/orders", user["id"]),
            r#"{"amount":1999,"currency":"EUR","status":"paid"}"#,
        )
        .await;

    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let order: Value = response.json().await.unwrap();
    assert_eq!(location, format!("/api/v1/orders/{}", order["id"]));
    assert_eq!(order["user_id"], user["id"]);
    assert_eq!(order["amount"], 1999);
    assert_eq!(order["currency"], "EUR");
    assert_eq!(order["status"], "paid");
    assert!(order["created_at"].as_str().unwrap().ends_with('Z'));
    let fetched: Value = app.get(&location).await.json().await.unwrap();
    assert_eq!(fetched, order);
    app.stop().await;
}

async fn create_order_defaults_to_pending(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let user = app.create_user("Ada", "ada@example.com").await;

    let order = create_order(&app, &user, json!({ "amount": 1, "currency": "JPY" })).await;

    assert_eq!(order["status"], "pending");
    assert_eq!(order["amount"], 1);
    app.stop().await;
}

async fn create_order_for_missing_user_is_404(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };

    let response = app
        .post_json(
            "/api/v1/users/4242/orders",
            r#"{"amount":100,"currency":"USD"}"#,
        )
        .await;

    let body = problem(response, 404).await;
    assert_eq!(body["detail"], "no user with id 4242");
    app.stop().await;
}

async fn create_order_rejects_invalid_fields(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let user = app.create_user("Ada", "ada@example.com").await;
    let path = format!("/api/v1/users/{}/orders", user["id"]);
    let cases = [
        (json!({ "currency": "EUR" }), vec!["amount"]),
        (json!({ "amount": 0, "currency": "EUR" }), vec!["amount"]),
        (json!({ "amount": -5, "currency": "EUR" }), vec!["amount"]),
        (json!({ "amount": 1.5, "currency": "EUR" }), vec!["amount"]),
        (
            json!({ "amount": 1000000000001_i64, "currency": "EUR" }),
            vec!["amount"],
        ),
        (json!({ "amount": 1 }), vec!["currency"]),
        (json!({ "amount": 1, "currency": "eur" }), vec!["currency"]),
        (json!({ "amount": 1, "currency": "ABC" }), vec!["currency"]),
        (json!({ "amount": 1, "currency": "XAU" }), vec!["currency"]),
        (
            json!({ "amount": 1, "currency": "EUR", "status": "refunded" }),
            vec!["status"],
        ),
        (
            json!({ "status": "Paid" }),
            vec!["amount", "currency", "status"],
        ),
    ];

    for (body, fields) in cases {
        let response = app.post_json(&path, &body.to_string()).await;
        let problem = problem(response, 422).await;
        let named: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|error| error["field"].as_str().unwrap())
            .collect();
        assert_eq!(named, fields, "{body}");
    }
    let listed: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(listed["items"], json!([]), "no invalid order was stored");
    app.stop().await;
}

async fn create_order_rejects_malformed_json(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let user = app.create_user("Ada", "ada@example.com").await;
    let path = format!("/api/v1/users/{}/orders", user["id"]);

    let as_string = app
        .post_json(&path, r#"{"amount":"100","currency":"EUR"}"#)
        .await;
    let unknown_field = app
        .post_json(&path, r#"{"amount":100,"currency":"EUR","note":"x"}"#)
        .await;
    let bad_user_id = app
        .post_json(
            "/api/v1/users/abc/orders",
            r#"{"amount":1,"currency":"EUR"}"#,
        )
        .await;

    problem(as_string, 400).await;
    let body = problem(unknown_field, 400).await;
    assert!(body["detail"].as_str().unwrap().contains("note"), "{body}");
    problem(bad_user_id, 400).await;
    app.stop().await;
}

async fn get_unknown_order_is_404(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };

    let body = problem(app.get("/api/v1/orders/99").await, 404).await;

    assert_eq!(body["detail"], "no order with id 99");
    app.stop().await;
}

async fn get_order_with_bad_id_is_400(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };

    for id in ["0", "-1", "abc", "9223372036854775808"] {
        let body = problem(app.get(&format!("/api/v1/orders/{id}")).await, 400).await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("invalid order id"),
            "{body}"
        );
    }
    app.stop().await;
}

async fn list_orders_newest_first_with_cursor(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let user = app.create_user("Ada", "ada@example.com").await;
    let mut created = Vec::new();
    for amount in 1..=5 {
        let order = create_order(&app, &user, json!({ "amount": amount, "currency": "EUR" })).await;
        created.push(order["id"].clone());
    }
    created.reverse();

    let base = format!("/api/v1/users/{}/orders?limit=2", user["id"]);
    let mut path = base.clone();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page: Value = app.get(&path).await.json().await.unwrap();
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|order| order["id"].clone()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("{base}&after={cursor}"),
            None => break,
        }
    }

    assert_eq!(seen, created, "every order once, newest first");
    assert_eq!(pages, 3);
    app.stop().await;
}

async fn list_orders_only_of_that_user(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let ada = app.create_user("Ada", "ada@example.com").await;
    let bob = app.create_user("Bob", "bob@example.com").await;
    create_order(&app, &ada, json!({ "amount": 10, "currency": "EUR" })).await;
    let bobs = create_order(&app, &bob, json!({ "amount": 20, "currency": "GBP" })).await;

    let page: Value = app
        .get(&format!("/api/v1/users/{}/orders", bob["id"]))
        .await
        .json()
        .await
        .unwrap();
    let empty = app.create_user("Eve", "eve@example.com").await;
    let none: Value = app
        .get(&format!("/api/v1/users/{}/orders", empty["id"]))
        .await
        .json()
        .await
        .unwrap();

    assert_eq!(page["items"], json!([bobs]));
    assert_eq!(page["next_cursor"], Value::Null);
    assert_eq!(none["items"], json!([]));
    assert_eq!(none["next_cursor"], Value::Null);
    app.stop().await;
}

async fn list_orders_of_missing_user_is_404(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };

    let body = problem(app.get("/api/v1/users/31337/orders").await, 404).await;

    assert_eq!(body["detail"], "no user with id 31337");
    app.stop().await;
}

async fn list_orders_rejects_bad_parameters(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let user = app.create_user("Ada", "ada@example.com").await;

    for query in [
        "after=0",
        "after=abc",
        "after=-3",
        "limit=0",
        "limit=1001",
        "limit=x",
    ] {
        let path = format!("/api/v1/users/{}/orders?{query}", user["id"]);
        let body = problem(app.get(&path).await, 400).await;
        let name = query.split('=').next().unwrap();
        assert!(
            body["detail"].as_str().unwrap().contains(name),
            "{query}: {body}"
        );
    }
    app.stop().await;
}

async fn deleting_user_deletes_its_orders(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let user = app.create_user("Gone", "gone@example.com").await;
    let order = create_order(&app, &user, json!({ "amount": 5, "currency": "EUR" })).await;
    let user_path = format!("/api/v1/users/{}", user["id"]);

    let deleted = app.client.delete(app.url(&user_path)).send().await.unwrap();

    assert_eq!(deleted.status(), 204);
    problem(
        app.get(&format!("/api/v1/orders/{}", order["id"])).await,
        404,
    )
    .await;
    problem(app.get(&format!("{user_path}/orders")).await, 404).await;
    let recreate = app
        .post_json(
            &format!("{user_path}/orders"),
            r#"{"amount":5,"currency":"EUR"}"#,
        )
        .await;
    problem(recreate, 404).await;
    app.stop().await;
}
