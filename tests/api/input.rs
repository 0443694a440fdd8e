//! Bad input on both back ends: every case gets a problem with the right status that names
//! the field or value, and writes nothing.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Backend, Options, TestApp, problem};
use crate::on_both_backends;

on_both_backends!(
    invalid_ids_are_400,
    malformed_json_is_400_and_writes_nothing,
    deep_nesting_is_400_fast,
    invalid_fields_are_422,
    missing_fields_are_422,
    content_type_is_checked,
    declared_oversize_body_is_413,
    chunked_oversize_body_is_413,
    patch_without_fields_is_422,
    invalid_page_parameters_are_400,
);

async fn invalid_ids_are_400(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };

    for id in [
        "abc",
        "-1",
        "0",
        "1.5",
        "9223372036854775808",
        "%ff",
        "1%20",
        "%C3%A9",
    ] {
        let path = format!("/api/v1/users/{id}");
        let get = problem(app.get(&path).await, 400).await;
        let delete = app.client.delete(app.url(&path)).send().await.unwrap();

        assert!(
            get["detail"].as_str().unwrap().contains("invalid user id"),
            "{id}: {get}"
        );
        assert_eq!(delete.status(), 400, "DELETE {id}");
    }
    app.stop().await;
}

async fn malformed_json_is_400_and_writes_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let cases = [
        ("truncated", r#"{"name":"A","email":"a@example.com""#),
        (
            "trailing data",
            r#"{"name":"A","email":"a@example.com"} {}"#,
        ),
        (
            "trailing garbage",
            r#"{"name":"A","email":"a@example.com"}x"#,
        ),
        ("wrong type", r#"{"name":1,"email":"a@example.com"}"#),
        ("array body", r#"["A","a@example.com"]"#),
        (
            "duplicate key",
            r#"{"name":"A","name":"B","email":"a@example.com"}"#,
        ),
        (
            "unknown field",
            r#"{"name":"A","email":"a@example.com","admin":true}"#,
        ),
        ("empty body", ""),
    ];

    for (case, body) in cases {
        let response = app.post_json("/api/v1/users", body).await;
        let problem = problem(response, 400).await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .starts_with("invalid JSON body"),
            "{case}: {problem}"
        );
    }
    for (body, field) in [
        (r#"{"name":1,"email":"a@example.com"}"#, "'name'"),
        (r#"{"name":"A","email":["a@example.com"]}"#, "'email'"),
    ] {
        let problem = problem(app.post_json("/api/v1/users", body).await, 400).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("field {field}")),
            "{body}: {detail}"
        );
    }
    let invalid_utf8 = app
        .client
        .post(app.url("/api/v1/users"))
        .header("content-type", "application/json")
        .body(b"{\"name\":\"\xff\",\"email\":\"a@example.com\"}".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(invalid_utf8.status(), 400);

    let page: Value = app.get("/api/v1/users").await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 0, "no row written");
    app.stop().await;
}

async fn deep_nesting_is_400_fast(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let nested = format!("{{\"name\":{}", "[".repeat(60_000));

    let started = Instant::now();
    let response = app.post_json("/api/v1/users", &nested).await;

    problem(response, 400).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    app.stop().await;
}

async fn invalid_fields_are_422(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let long_name = "x".repeat(101);
    let long_email = format!("{}@{}.com", "a".repeat(64), "b".repeat(190));
    let cases = [
        (
            "name",
            serde_json::json!({ "name": "   ", "email": "ok@example.com" }),
        ),
        (
            "name",
            serde_json::json!({ "name": long_name, "email": "ok@example.com" }),
        ),
        (
            "name",
            serde_json::json!({ "name": "bell\u{0007}", "email": "ok@example.com" }),
        ),
        (
            "name",
            serde_json::json!({ "name": "evil\u{202E}txt", "email": "ok@example.com" }),
        ),
        (
            "email",
            serde_json::json!({ "name": "Ok", "email": "not-an-address" }),
        ),
        (
            "email",
            serde_json::json!({ "name": "Ok", "email": "Name <ok@example.com>" }),
        ),
        (
            "email",
            serde_json::json!({ "name": "Ok", "email": long_email }),
        ),
    ];

    for (field, body) in cases {
        let problem = problem(app.post_json("/api/v1/users", &body.to_string()).await, 422).await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "{problem}"
        );
    }
    let page: Value = app.get("/api/v1/users").await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 0, "no row written");
    app.stop().await;
}

async fn missing_fields_are_422(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };

    let both = problem(app.post_json("/api/v1/users", "{}").await, 422).await;
    let null_email = problem(
        app.post_json("/api/v1/users", r#"{"name":"A","email":null}"#)
            .await,
        422,
    )
    .await;

    let fields: Vec<&str> = both["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "email"]);
    assert_eq!(null_email["errors"][0]["field"], "email");
    assert_eq!(null_email["errors"][0]["message"], "is required");
    app.stop().await;
}

async fn content_type_is_checked(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let body = r#"{"name":"Type","email":"type@example.com"}"#;
    let send = |content_type: Option<&'static str>| {
        let mut request = app.client.post(app.url("/api/v1/users")).body(body);
        if let Some(value) = content_type {
            request = request.header("content-type", value);
        }
        request.send()
    };

    problem(send(None).await.unwrap(), 415).await;
    problem(send(Some("text/plain")).await.unwrap(), 415).await;
    problem(
        send(Some("application/json; charset=iso-8859-1"))
            .await
            .unwrap(),
        415,
    )
    .await;
    let named = problem(send(Some("text/csv")).await.unwrap(), 415).await;
    assert!(
        named["detail"].as_str().unwrap().contains("text/csv"),
        "{named}"
    );
    assert_eq!(
        send(Some("application/json; charset=utf-8"))
            .await
            .unwrap()
            .status(),
        201
    );
    app.stop().await;
}

async fn declared_oversize_body_is_413(backend: Backend) {
    let options = Options {
        args: vec!["--body-limit".into(), "1KiB".into()],
        ..Options::default()
    };
    let Some(app) = TestApp::spawn_with(backend, options).await else {
        return;
    };
    let padding = "x".repeat(2000);
    let body = format!(r#"{{"name":"{padding}","email":"big@example.com"}}"#);

    let problem = problem(app.post_json("/api/v1/users", &body).await, 413).await;

    assert!(
        problem["detail"].as_str().unwrap().contains("1024 bytes"),
        "{problem}"
    );
    app.stop().await;
}

async fn chunked_oversize_body_is_413(backend: Backend) {
    let options = Options {
        args: vec!["--body-limit".into(), "1KiB".into()],
        ..Options::default()
    };
    let Some(app) = TestApp::spawn_with(backend, options).await else {
        return;
    };
    // A chunked body has no Content-Length, so the server finds its size only by reading and
    // must stop at the limit. The client keeps sending 64 MiB on its own task while the test
    // reads the response, as a client that ignores an early response would.
    let stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let sender = tokio::spawn(async move {
        let head = "POST /api/v1/users HTTP/1.1\r\nHost: test\r\n\
                    Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        writer.write_all(head.as_bytes()).await?;
        let chunk = format!("10000\r\n{}\r\n", " ".repeat(0x10000));
        for _ in 0..1024 {
            writer.write_all(chunk.as_bytes()).await?;
        }
        Ok::<_, std::io::Error>(())
    });

    let mut response = Vec::new();
    let mut buffer = [0; 4096];
    while !response.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = reader.read(&mut buffer).await.unwrap();
        assert!(read > 0, "closed before the response head");
        response.extend_from_slice(&buffer[..read]);
    }
    let head = String::from_utf8_lossy(&response).to_lowercase();
    sender.abort();

    assert!(head.starts_with("http/1.1 413"), "{head}");
    assert!(
        head.contains("content-type: application/problem+json"),
        "{head}"
    );
    app.stop().await;
}

async fn patch_without_fields_is_422(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let user = app.create_user("Still", "still@example.com").await;

    let response = app
        .client
        .patch(app.url(&format!("/api/v1/users/{}", user["id"])))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();

    let problem = problem(response, 422).await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|error| error["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "email"], "{problem}");
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("at least one")
    );
    app.stop().await;
}

async fn invalid_page_parameters_are_400(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };

    for query in [
        "limit=0",
        "limit=1001",
        "limit=ten",
        "after=-5",
        "after=abc",
    ] {
        let problem = problem(app.get(&format!("/api/v1/users?{query}")).await, 400).await;
        let parameter = query.split('=').next().unwrap();
        assert!(
            problem["detail"].as_str().unwrap().contains(parameter),
            "{query}: {problem}"
        );
    }
    app.stop().await;
}
