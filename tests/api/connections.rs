//! Connection handling: the header read timeout, the idle keep-alive timeout, and h2c.

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Backend, Options, TestApp};

async fn spawn(read_timeout: &str, idle_timeout: &str) -> TestApp {
    let args = [
        "--server-read-timeout",
        read_timeout,
        "--server-idle-timeout",
        idle_timeout,
    ];
    // A route slower than the idle timeouts of the tests below.
    let routes = Router::new().route(
        "/test/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(900)).await;
            "slow"
        }),
    );
    let options = Options {
        args: args.iter().map(|s| s.to_string()).collect(),
        routes: Some(routes),
        ..Options::default()
    };
    TestApp::spawn_with(Backend::Sqlite, options)
        .await
        .expect("SQLite is always available")
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection, and returns how long that took.
async fn time_until_closed(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut buffer = [0; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the connection stayed open for 10 s"),
        }
    }
}

async fn request(stream: &mut TcpStream, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buffer = vec![0; 4096];
    let read = stream.read(&mut buffer).await.unwrap();
    String::from_utf8_lossy(&buffer[..read]).into_owned()
}

#[tokio::test]
async fn stalled_headers_are_cut_at_read_timeout() {
    let app = spawn("300ms", "30s").await;
    let mut stream = connect(&app).await;

    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: te")
        .await
        .unwrap();
    let open_for = time_until_closed(&mut stream).await;

    assert!(
        open_for >= Duration::from_millis(250),
        "closed after {open_for:?}"
    );
    assert!(
        open_for < Duration::from_secs(3),
        "closed after {open_for:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn silent_connection_is_cut_at_read_timeout() {
    let app = spawn("300ms", "30s").await;
    let mut stream = connect(&app).await;

    let open_for = time_until_closed(&mut stream).await;

    assert!(
        open_for < Duration::from_secs(3),
        "closed after {open_for:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn keep_alive_outlives_read_timeout_until_idle_timeout() {
    let app = spawn("300ms", "1500ms").await;
    let mut stream = connect(&app).await;

    let first = request(&mut stream, "/livez").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let second = request(&mut stream, "/livez").await;
    let open_for = time_until_closed(&mut stream).await;

    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(
        second.starts_with("HTTP/1.1 200"),
        "idle past the read timeout: {second}"
    );
    assert!(
        open_for >= Duration::from_millis(1200),
        "closed after {open_for:?}"
    );
    assert!(
        open_for < Duration::from_secs(5),
        "closed after {open_for:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn idle_timeout_shorter_than_read_timeout() {
    let app = spawn("5s", "600ms").await;
    let mut stream = connect(&app).await;

    let response = request(&mut stream, "/test/slow").await;
    let open_for = time_until_closed(&mut stream).await;

    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        open_for >= Duration::from_millis(450),
        "closed after {open_for:?}"
    );
    assert!(
        open_for < Duration::from_secs(3),
        "closed after {open_for:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn idle_timeout_counts_from_the_response() {
    let app = spawn("300ms", "600ms").await;
    let mut stream = connect(&app).await;

    let response = request(&mut stream, "/test/slow").await;
    let open_for = time_until_closed(&mut stream).await;

    assert!(
        response.starts_with("HTTP/1.1 200"),
        "closed while the request ran: {response}"
    );
    assert!(
        open_for >= Duration::from_millis(450),
        "closed after {open_for:?}"
    );
    assert!(
        open_for < Duration::from_secs(3),
        "closed after {open_for:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let app = spawn("5s", "120s").await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();

    let response = client.get(app.url("/livez")).send().await.unwrap();

    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn connection_limit_defers_new_connections() {
    let options = Options {
        args: ["--max-connections", "2"].map(String::from).to_vec(),
        ..Options::default()
    };
    let app = TestApp::spawn_with(Backend::Sqlite, options).await.unwrap();
    let mut first = connect(&app).await;
    let mut second = connect(&app).await;
    assert!(
        request(&mut first, "/livez")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        request(&mut second, "/livez")
            .await
            .starts_with("HTTP/1.1 200")
    );

    // The kernel completes the handshake, but the server does not accept a third connection.
    let mut third = connect(&app).await;
    third
        .write_all(b"GET /livez HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0; 1024];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buffer)).await;
    drop(first);
    let later = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buffer)).await;

    assert!(
        early.is_err(),
        "the third connection was served while two were open"
    );
    let read = later.expect("served once a slot freed").unwrap();
    assert!(String::from_utf8_lossy(&buffer[..read]).starts_with("HTTP/1.1 200"));
    app.stop().await;
}
