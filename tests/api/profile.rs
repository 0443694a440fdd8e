//! The profile route, which reads a user with their newest orders and preferences at once.
//! Tested here: its statuses (404, 503, 504), the cancellation of its reads on the database,
//! and its behaviour with a pool smaller than the number of requests.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::harness::postgres as test_postgres;
use crate::harness::{Backend, Options, TestApp, problem};
use crate::on_both_backends;
use crate::orders::create_order;

on_both_backends!(
    profile_has_user_orders_and_preferences,
    profile_of_user_without_data_has_defaults,
    profile_of_missing_user_is_404,
    profile_with_bad_id_is_400,
    small_pool_serves_ten_concurrent_profiles,
);

async fn profile_has_user_orders_and_preferences(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let user = app.create_user("Ada", "ada@example.com").await;
    let mut orders = Vec::new();
    for amount in 1..=12 {
        orders
            .push(create_order(&app, &user, json!({ "amount": amount, "currency": "EUR" })).await);
    }
    // Another user's newer order stays out of Ada's profile.
    let other_user = app.create_user("Bob", "bob@example.com").await;
    create_order(
        &app,
        &other_user,
        json!({ "amount": 99, "currency": "USD" }),
    )
    .await;
    let preferences = json!({
        "language": "fr-CA",
        "time_zone": "America/Montreal",
        "notifications": { "email": false, "sms": false, "push": true },
        "theme": "dark",
    });
    let saved = app
        .client
        .put(app.url(&format!("/api/v1/users/{}/preferences", user["id"])))
        .header("content-type", "application/json")
        .header("if-match", "\"0\"")
        .body(preferences.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 200);

    let response = app
        .get(&format!("/api/v1/users/{}/profile", user["id"]))
        .await;

    assert_eq!(response.status(), 200);
    let profile: Value = response.json().await.unwrap();
    assert_eq!(profile["user"], user);
    let newest: Vec<Value> = orders.iter().rev().take(10).cloned().collect();
    assert_eq!(
        profile["orders"],
        json!(newest),
        "the 10 newest, newest first"
    );
    assert_eq!(profile["preferences"], preferences);
    app.stop().await;
}

async fn profile_of_user_without_data_has_defaults(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let user = app.create_user("New", "new@example.com").await;

    let profile: Value = app
        .get(&format!("/api/v1/users/{}/profile", user["id"]))
        .await
        .json()
        .await
        .unwrap();

    assert_eq!(profile["orders"], json!([]));
    assert_eq!(profile["preferences"]["language"], "en");
    assert_eq!(profile["preferences"]["time_zone"], "UTC");
    app.stop().await;
}

async fn profile_of_missing_user_is_404(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };

    let body = problem(app.get("/api/v1/users/8080/profile").await, 404).await;

    assert_eq!(body["detail"], "no user with id 8080");
    app.stop().await;
}

async fn profile_with_bad_id_is_400(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };

    let body = problem(app.get("/api/v1/users/x1/profile").await, 400).await;

    assert!(
        body["detail"].as_str().unwrap().contains("invalid user id"),
        "{body}"
    );
    app.stop().await;
}

/// With three connections (PostgreSQL pool, reads through it) and ten profiles at once, a
/// profile that held one connection while it waited for another would run into the
/// acquire timeout and get 503. Each profile takes one connection at a time, so all succeed.
async fn small_pool_serves_ten_concurrent_profiles(backend: Backend) {
    let options = Options {
        args: [
            "--db-max-conns",
            "3",
            "--db-read-clients",
            "0",
            "--db-acquire-timeout",
            "1s",
        ]
        .map(String::from)
        .to_vec(),
        ..Options::default()
    };
    let Some(app) = TestApp::spawn_with(backend, options).await else {
        return;
    };
    let user = app.create_user("Busy", "busy@example.com").await;
    for amount in 1..=3 {
        create_order(&app, &user, json!({ "amount": amount, "currency": "USD" })).await;
    }
    let path = format!("/api/v1/users/{}/profile", user["id"]);

    let results = join_all((0..10).map(|_| {
        let app = &app;
        let path = &path;
        async move {
            let started = Instant::now();
            let status = app.get(path).await.status().as_u16();
            (status, started.elapsed())
        }
    }))
    .await;

    for (status, elapsed) in &results {
        assert_eq!(*status, 200, "{results:?}");
        assert!(*elapsed < Duration::from_secs(1), "{results:?}");
    }
    app.stop().await;
}

/// Returns the database name of a test server's URL.
fn database_name(url: &str) -> String {
    let path = url.rsplit('/').next().unwrap();
    path.split('?').next().unwrap().to_owned()
}

/// Counts the statements of `database` that wait on a lock, polling until none is left or
/// `within` has passed.
async fn lock_waiters_after(
    server: &test_postgres::Server,
    database: &str,
    within: Duration,
) -> i64 {
    let admin = server.admin().await;
    let deadline = Instant::now() + within;
    loop {
        let waiting: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = $1 AND wait_event_type = 'Lock'",
                &[&database],
            )
            .await
            .unwrap()
            .get(0);
        if waiting == 0 || Instant::now() > deadline {
            return waiting;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks that a profile whose orders read waits on a lock gets 504 past PROFILE_TIMEOUT, and
/// that the server cancels the statement well before DB_STATEMENT_TIMEOUT.
async fn profile_timeout_cancels_reads(read_clients: &str) {
    let Some(server) = test_postgres::server() else {
        return;
    };
    let options = Options {
        args: [
            "--profile-timeout",
            "300ms",
            "--db-statement-timeout",
            "30s",
            "--db-read-clients",
            read_clients,
        ]
        .map(String::from)
        .to_vec(),
        ..Options::default()
    };
    let Some(app) = TestApp::spawn_with(Backend::Postgres, options).await else {
        return;
    };
    let user = app.create_user("Slow", "slow@example.com").await;
    let (locker, connection) = tokio_postgres::connect(&app.database_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    locker
        .batch_execute("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    let started = Instant::now();
    let response = app
        .get(&format!("/api/v1/users/{}/profile", user["id"]))
        .await;
    let waited = started.elapsed();
    let waiting = lock_waiters_after(
        server,
        &database_name(&app.database_url),
        Duration::from_secs(2),
    )
    .await;
    locker.batch_execute("COMMIT").await.unwrap();

    let body = problem(response, 504).await;
    assert_eq!(body["type"], "/problems/profile-timeout");
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    assert_eq!(waiting, 0, "the stalled read was cancelled on the server");
    let after = app
        .get(&format!("/api/v1/users/{}/profile", user["id"]))
        .await;
    assert_eq!(after.status(), 200, "the service serves profiles again");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_timeout_cancels_pooled_reads() {
    profile_timeout_cancels_reads("0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_timeout_cancels_shared_reads() {
    profile_timeout_cancels_reads("2").await;
}

/// One pooled connection, held by a profile stalled on a lock: the next profile cannot get
/// a connection within DB_ACQUIRE_TIMEOUT and gets 503 with Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_without_connection_is_503() {
    let options = Options {
        args: [
            "--db-max-conns",
            "1",
            "--db-read-clients",
            "0",
            "--db-acquire-timeout",
            "200ms",
            "--profile-timeout",
            "5s",
        ]
        .map(String::from)
        .to_vec(),
        ..Options::default()
    };
    let Some(app) = TestApp::spawn_with(Backend::Postgres, options).await else {
        return;
    };
    let user = app.create_user("Held", "held@example.com").await;
    let path = format!("/api/v1/users/{}/profile", user["id"]);
    let (locker, connection) = tokio_postgres::connect(&app.database_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    locker
        .batch_execute("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let blocked = tokio::spawn({
        let request = app.client.get(app.url(&path));
        async move { request.send().await.unwrap().status() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let response = app.get(&path).await;
    locker.batch_execute("COMMIT").await.unwrap();

    assert_eq!(response.headers()["retry-after"], "1");
    let body = problem(response, 503).await;
    assert_eq!(body["type"], "/problems/unavailable");
    assert_eq!(blocked.await.unwrap(), 200, "the first profile finishes");
    app.stop().await;
}

/// Killing every connection of the database: the shared read connections are replaced and
/// the pool drops its broken ones, so profiles sent afterwards all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_recovers_after_connections_are_killed() {
    let Some(server) = test_postgres::server() else {
        return;
    };
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let user = app.create_user("Survivor", "survivor@example.com").await;
    create_order(&app, &user, json!({ "amount": 7, "currency": "EUR" })).await;
    let path = format!("/api/v1/users/{}/profile", user["id"]);
    assert_eq!(app.get(&path).await.status(), 200);

    let killed = server
        .admin()
        .await
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&database_name(&app.database_url)],
        )
        .await
        .unwrap();
    // As in the users test: a request sent in the instant of the kill counts as in flight.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(app.get(&path).await.status().as_u16());
    }

    assert!(!killed.is_empty(), "there were connections to kill");
    assert!(statuses.iter().all(|&status| status == 200), "{statuses:?}");
    app.stop().await;
}

/// Profiles in flight on the shared read connections when those are killed get 200, because
/// the read is retried on the pool, or 503, never another status. Later profiles all get 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connection_profiles_get_200_or_503() {
    let Some(server) = test_postgres::server() else {
        return;
    };
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let user = app.create_user("Caught", "caught@example.com").await;
    let path = format!("/api/v1/users/{}/profile", user["id"]);
    let (locker, connection) = tokio_postgres::connect(&app.database_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    locker
        .batch_execute("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let in_flight: Vec<_> = (0..4)
        .map(|_| {
            let request = app.client.get(app.url(&path));
            tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let killed = server
        .admin()
        .await
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND application_name = 'peregrine'",
            &[&database_name(&app.database_url)],
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    locker.batch_execute("COMMIT").await.unwrap();
    let mut caught = Vec::new();
    for request in in_flight {
        caught.push(request.await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut after = Vec::new();
    for _ in 0..10 {
        after.push(app.get(&path).await.status().as_u16());
    }

    assert!(!killed.is_empty(), "there were connections to kill");
    assert!(
        caught.iter().all(|&status| status == 200 || status == 503),
        "{caught:?}"
    );
    assert!(after.iter().all(|&status| status == 200), "{after:?}");
    app.stop().await;
}

/// With DB_PREPARED_STATEMENTS=false (PgBouncer in transaction mode) every statement of the
/// orders, preferences and profile routes goes out unnamed, on both read modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_statements_serve_orders_and_profile() {
    for read_clients in ["0", "2"] {
        let options = Options {
            args: [
                "--db-prepared-statements",
                "false",
                "--db-read-clients",
                read_clients,
            ]
            .map(String::from)
            .to_vec(),
            ..Options::default()
        };
        let Some(app) = TestApp::spawn_with(Backend::Postgres, options).await else {
            return;
        };
        let user = app.create_user("Unnamed", "unnamed@example.com").await;
        let order = create_order(&app, &user, json!({ "amount": 3, "currency": "CHF" })).await;
        let saved = app
            .client
            .put(app.url(&format!("/api/v1/users/{}/preferences", user["id"])))
            .header("content-type", "application/json")
            .header("if-match", "\"0\"")
            .body(
                json!({
                    "language": "it",
                    "time_zone": "Europe/Rome",
                    "notifications": { "email": true, "sms": true, "push": true },
                    "theme": "light",
                })
                .to_string(),
            )
            .send()
            .await
            .unwrap();

        let fetched = app.get(&format!("/api/v1/orders/{}", order["id"])).await;
        let profile: Value = app
            .get(&format!("/api/v1/users/{}/profile", user["id"]))
            .await
            .json()
            .await
            .unwrap();

        assert_eq!(saved.status(), 200, "read clients {read_clients}");
        assert_eq!(fetched.status(), 200, "read clients {read_clients}");
        assert_eq!(
            profile["orders"],
            json!([order]),
            "read clients {read_clients}"
        );
        assert_eq!(
            profile["preferences"]["time_zone"], "Europe/Rome",
            "read clients {read_clients}"
        );
        app.stop().await;
    }
}
