//! The operations surface: Prometheus metrics with bounded labels, load shedding that spares
//! the probes, and CPU and heap profiles from the admin listener.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use pprof::protos::Message;

use crate::harness::{Backend, Options, Process, TestApp, get_status, problem};

async fn scrape(app: &TestApp) -> String {
    let response = app
        .client
        .get(format!("{}/metrics", app.metrics_address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// Counts the sample lines (series) of the HTTP metric families.
fn http_series(text: &str) -> usize {
    text.lines()
        .filter(|line| line.starts_with("http_server_request"))
        .count()
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let user = app.create_user("Metered", "metered@example.com").await;
    app.get(&format!("/api/v1/users/{}", user["id"])).await;

    let text = scrape(&app).await;

    assert!(
        text.contains(
            r#"http_server_requests_total{method="GET",route="/api/v1/users/{id}",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(
        r#"http_server_requests_total{method="POST",route="/api/v1/users",status="201"} 1"#
    ));
    assert!(text.contains(
        r#"http_server_request_duration_seconds_count{method="GET",route="/api/v1/users/{id}"} 1"#
    ));
    assert!(text.contains(r#"db_query_duration_seconds_count{query="get_user"} 1"#));
    assert!(text.contains(r#"db_pool_connections{state="in_use"}"#));
    assert!(text.contains("build_info{"));
    assert!(
        !text.contains("/api/v1/users/1\""),
        "no raw path is a label"
    );
    app.stop().await;
}

#[tokio::test]
async fn random_paths_and_methods_add_no_series() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let client = &app.client;
    let send = |method: &str, path: String| {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        client.request(method, app.url(&path)).send()
    };
    // One request per route and per kind of miss: an unknown path, an unknown method.
    for (method, path) in [
        ("GET", "/livez"),
        ("GET", "/readyz"),
        ("GET", "/health"),
        ("GET", "/api/v1/users"),
        ("GET", "/api/v1/users/1"),
        ("GET", "/no/such/path"),
        ("BREW", "/api/v1/users"),
        ("BREW", "/no/such/path"),
        ("DELETE", "/no/such/path"),
        ("PUT", "/api/v1/users/1"),
    ] {
        send(method, path.to_owned()).await.unwrap();
    }
    let baseline = http_series(&scrape(&app).await);

    let methods = ["GET", "BREW", "PROPFIND", "X-RANDOM", "DELETE"];
    for i in 0..3000u32 {
        let path = format!("/random/{i}/{}", i.wrapping_mul(2_654_435_761));
        send(methods[i as usize % methods.len()], path)
            .await
            .unwrap();
    }
    let after = http_series(&scrape(&app).await);

    assert_eq!(after, baseline, "series grew from {baseline} to {after}");
    app.stop().await;
}

async fn wait_for_release() -> &'static str {
    tokio::time::sleep(Duration::from_secs(2)).await;
    "done"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_limit_is_shed_but_probes_are_not() {
    let options = Options {
        args: vec!["--max-in-flight".into(), "1".into()],
        routes: Some(Router::new().route("/test/hold", get(wait_for_release))),
        ..Options::default()
    };
    let app = TestApp::spawn_with(Backend::Sqlite, options).await.unwrap();
    let holding = tokio::spawn(app.client.get(app.url("/test/hold")).send());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = std::time::Instant::now();
    let shed = app.get("/api/v1/users").await;
    let waited = started.elapsed();
    let live = app.get("/livez").await.status();
    let ready = app.get("/readyz").await.status();
    let text = scrape(&app).await;

    assert_eq!(shed.headers()["retry-after"], "1");
    let body = problem(shed, 503).await;
    assert_eq!(body["type"], "/problems/overloaded");
    assert!(
        waited < Duration::from_millis(500),
        "answered at once, not queued: {waited:?}"
    );
    assert_eq!(live, 200);
    assert_eq!(ready, 200);
    assert!(
        text.contains(r#"http_server_requests_shed_total{reason="in_flight_limit"} 1"#),
        "{text}"
    );
    assert_eq!(holding.await.unwrap().unwrap().status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_profile_names_service_functions() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    for i in 0..200 {
        app.create_user("Profiled", &format!("profiled{i}@example.com"))
            .await;
    }
    // The load runs until the profile is back (at most 30 s), so the profile samples a busy
    // server however slowly the machine runs.
    let done = Arc::new(AtomicBool::new(false));
    let load = {
        let (client, url) = (app.client.clone(), app.url("/api/v1/users?limit=1000"));
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while !done.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                let _status = client
                    .get(&url)
                    .send()
                    .await
                    .map(|response| response.status());
            }
        })
    };

    let response = app
        .client
        .get(format!(
            "{}/debug/pprof/profile?seconds=2",
            app.admin_address
        ))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.bytes().await.unwrap();
    done.store(true, Ordering::Relaxed);
    load.await.unwrap();

    assert_eq!(status, 200);
    let profile = pprof::protos::Profile::decode(bytes.as_ref()).expect("a pprof protobuf");
    assert!(!profile.sample.is_empty(), "the profile has samples");
    let names: Vec<&String> = profile
        .function
        .iter()
        .filter_map(|f| profile.string_table.get(f.name as usize))
        .collect();
    assert!(
        names.iter().any(|name| name.contains("peregrine")),
        "no peregrine function among {} names",
        names.len()
    );
    app.stop().await;
}

#[test]
fn heap_profile_of_the_binary_has_samples() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("heap.db").display());
    // No access log, because nothing reads the log until the end and a full pipe would stall
    // the server. MALLOC_CONF overrides the compiled-in sampling interval of 512 KiB with
    // 4 KiB, so the few MiB a fresh server has allocated leave many samples, not a handful.
    let server = Process::start(&[
        ("DATABASE_URL", url.as_str()),
        ("RUST_LOG", "info,peregrine::middleware::access_log=warn"),
        ("MALLOC_CONF", "lg_prof_sample:12"),
    ]);
    for _ in 0..50 {
        assert_eq!(get_status(&server.address, "/api/v1/users?limit=100"), 200);
    }

    let admin = server.admin_address.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(admin).unwrap();
    write!(
        stream,
        "GET /debug/pprof/heap HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&response[..split]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.contains("chunked"), "{head}");

    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&response[split + 4..])
        .read_to_end(&mut decoded)
        .expect("a gzipped body");
    let profile = pprof::protos::Profile::decode(decoded.as_slice()).expect("a pprof protobuf");
    let sample_types: Vec<&String> = profile
        .sample_type
        .iter()
        .filter_map(|kind| profile.string_table.get(kind.ty as usize))
        .collect();
    assert!(
        sample_types.contains(&&"inuse_space".to_owned()),
        "{sample_types:?}"
    );
    assert!(!profile.sample.is_empty(), "the heap profile has samples");
    assert!(
        profile
            .sample
            .iter()
            .any(|sample| sample.value.iter().any(|&v| v > 0)),
        "a sample with live bytes"
    );
    let binary = profile
        .mapping
        .iter()
        .filter_map(|mapping| profile.string_table.get(mapping.filename as usize))
        .any(|file| file.ends_with("/peregrine"));
    assert!(binary, "a mapping of the peregrine binary");
}

#[tokio::test]
async fn invalid_profile_seconds_are_400() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();

    for seconds in ["0", "301", "abc", "-1"] {
        let url = format!(
            "{}/debug/pprof/profile?seconds={seconds}",
            app.admin_address
        );
        let response = app.client.get(url).send().await.unwrap();
        assert_eq!(response.status(), 400, "{seconds}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{seconds}"
        );
        let body: serde_json::Value = response.json().await.unwrap();
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("seconds"), "{seconds}: {detail}");
    }
    app.stop().await;
}

/// Sends `GET /api/v1/users` with an `X-Forwarded-For` header and returns the status.
async fn list_as(app: &TestApp, forwarded_for: &str) -> u16 {
    app.client
        .get(app.url("/api/v1/users"))
        .header("x-forwarded-for", forwarded_for)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn spawn_rate_limited(trusted: &str) -> TestApp {
    let args = [
        "--rate-limit",
        "1",
        "--rate-limit-burst",
        "1",
        "--trusted-proxies",
        trusted,
    ];
    let options = Options {
        args: args.map(String::from).to_vec(),
        ..Options::default()
    };
    TestApp::spawn_with(Backend::Sqlite, options).await.unwrap()
}

#[tokio::test]
async fn untrusted_peer_cannot_spoof_address() {
    // The test client's peer address is 127.0.0.1, which is not trusted here.
    let app = spawn_rate_limited("10.0.0.0/8").await;

    let first = list_as(&app, "198.51.100.1").await;
    let second = list_as(&app, "198.51.100.2").await;

    assert_eq!(first, 200);
    assert_eq!(second, 429, "both requests count against the peer address");
    app.stop().await;
}

#[tokio::test]
async fn trusted_proxy_names_the_client() {
    let app = spawn_rate_limited("127.0.0.1/32").await;

    let first_client = list_as(&app, "198.51.100.1").await;
    let second_client = list_as(&app, "198.51.100.2").await;
    let prepended = app
        .client
        .get(app.url("/api/v1/users"))
        .header("x-forwarded-for", "203.0.113.66, 198.51.100.1")
        .send()
        .await
        .unwrap();

    assert_eq!(first_client, 200);
    assert_eq!(second_client, 200, "another client has its own budget");
    assert_eq!(
        prepended.status(),
        429,
        "a forged left part does not change the client"
    );
    let retry_after: u64 = prepended.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body = problem(prepended, 429).await;
    assert_eq!(body["type"], "/problems/rate-limited");
    assert_eq!(
        app.get("/livez").await.status(),
        200,
        "probes are not rate limited"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_limit_starts_low_and_is_exported() {
    let options = Options {
        args: ["--load-shed", "adaptive", "--max-in-flight", "64"]
            .map(String::from)
            .to_vec(),
        routes: Some(Router::new().route("/test/hold", get(wait_for_release))),
        ..Options::default()
    };
    let app = TestApp::spawn_with(Backend::Sqlite, options).await.unwrap();
    let limit_line = scrape(&app)
        .await
        .lines()
        .find(|line| line.starts_with("http_server_in_flight_limit "))
        .map(str::to_owned);

    let holding_requests: Vec<_> = (0..16)
        .map(|_| tokio::spawn(app.client.get(app.url("/test/hold")).send()))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let over = app.get("/api/v1/users").await;

    assert_eq!(
        limit_line.as_deref(),
        Some("http_server_in_flight_limit 16")
    );
    problem(over, 503).await;
    for request in holding_requests {
        assert_eq!(request.await.unwrap().unwrap().status(), 200);
    }
    app.stop().await;
}
