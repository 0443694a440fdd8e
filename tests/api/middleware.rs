//! The middleware on both back ends: request ids, problem bodies for routing errors, panic
//! recovery, the write timeout, and the probes.

use std::time::Duration;

use axum::Router;
use axum::routing::get;

use crate::harness::{Backend, Options, TestApp, problem};
use crate::on_both_backends;

on_both_backends!(
    hello_is_plain_text,
    probes_answer_200,
    request_id_is_echoed_when_valid,
    request_id_is_replaced_when_invalid,
    unknown_path_is_404_problem,
    wrong_method_is_405_problem,
    panic_is_500_and_server_survives,
    slow_handler_times_out_with_503,
);

async fn hello_is_plain_text(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };

    let response = app.get("/").await;

    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(response.text().await.unwrap(), "Hello, World!");
    app.stop().await;
}

async fn probes_answer_200(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };

    for path in ["/livez", "/readyz", "/health"] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
    app.stop().await;
}

async fn request_id_is_echoed_when_valid(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };

    let response = app
        .client
        .get(app.url("/api/v1/users/999"))
        .header("x-request-id", "trace.abc_123-XYZ")
        .send()
        .await
        .unwrap();

    assert_eq!(response.headers()["x-request-id"], "trace.abc_123-XYZ");
    let body = problem(response, 404).await;
    assert_eq!(body["request_id"], "trace.abc_123-XYZ");
    app.stop().await;
}

async fn request_id_is_replaced_when_invalid(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let too_long = "a".repeat(65);

    for sent in ["has space", "quote\"d", too_long.as_str(), ""] {
        let response = app
            .client
            .get(app.url("/livez"))
            .header("x-request-id", sent)
            .send()
            .await
            .unwrap();
        let echoed = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();

        assert_ne!(echoed, sent);
        assert!(!echoed.is_empty());
        assert!(
            echoed
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
            "{echoed}"
        );
    }
    app.stop().await;
}

async fn unknown_path_is_404_problem(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };

    problem(app.get("/api/v2/users").await, 404).await;
    problem(app.get("/api/v1/users/1/extra").await, 404).await;
    app.stop().await;
}

async fn wrong_method_is_405_problem(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };

    let response = app
        .client
        .put(app.url("/api/v1/users/1"))
        .send()
        .await
        .unwrap();

    let allow = response.headers()["allow"].to_str().unwrap().to_owned();
    problem(response, 405).await;
    assert!(allow.contains("PATCH"), "{allow}");
    app.stop().await;
}

async fn panic_is_500_and_server_survives(backend: Backend) {
    async fn panicking() -> &'static str {
        panic!("handler bug for the test")
    }
    let routes = Router::new().route("/test/panic", get(panicking));
    let options = Options {
        routes: Some(routes),
        ..Options::default()
    };
    let Some(app) = TestApp::spawn_with(backend, options).await else {
        return;
    };

    let body = problem(app.get("/test/panic").await, 500).await;

    assert!(
        !body.to_string().contains("handler bug"),
        "the panic message stays in the log: {body}"
    );
    assert_eq!(app.get("/livez").await.status(), 200);
    app.stop().await;
}

async fn slow_handler_times_out_with_503(backend: Backend) {
    let routes = Router::new().route(
        "/test/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "too late"
        }),
    );
    let options = Options {
        args: vec!["--server-write-timeout".into(), "200ms".into()],
        routes: Some(routes),
        ..Options::default()
    };
    let Some(app) = TestApp::spawn_with(backend, options).await else {
        return;
    };

    let response = app.get("/test/slow").await;

    assert_eq!(response.headers()["retry-after"], "1");
    problem(response, 503).await;
    app.stop().await;
}
