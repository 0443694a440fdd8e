//! Behaviour that only PostgreSQL has once connected: the bounded wait for a pooled
//! connection, recovery from lost connections and restarts, readiness, statement timeouts and
//! unnamed statements.

use std::time::{Duration, Instant};

use crate::harness::postgres;
use crate::harness::{Backend, Options, TestApp, problem};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_pool_answers_503_with_retry_after() {
    let options = Options {
        args: [
            "--db-max-conns",
            "1",
            "--db-acquire-timeout",
            "200ms",
            "--db-read-clients",
            "0",
        ]
        .map(String::from)
        .to_vec(),
        ..Options::default()
    };
    let Some(app) = TestApp::spawn_with(Backend::Postgres, options).await else {
        return;
    };
    let user = app.create_user("Held", "held@example.com").await;
    let path = format!("/api/v1/users/{}", user["id"]);

    // Hold a lock that the read waits on, so the pool's only connection stays busy.
    let (locker, connection) = tokio_postgres::connect(&app.database_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    locker
        .batch_execute("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let blocked = tokio::spawn({
        let request = app.client.get(app.url(&path));
        async move { request.send().await.unwrap().status() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let response = app.get(&path).await;
    let waited = started.elapsed();
    locker.batch_execute("COMMIT").await.unwrap();

    assert_eq!(response.headers()["retry-after"], "1");
    problem(response, 503).await;
    assert!(waited < Duration::from_secs(2), "waited {waited:?}");
    assert_eq!(blocked.await.unwrap(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_after_connections_are_killed() {
    let Some(server) = postgres::server() else {
        return;
    };
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let user = app.create_user("Survivor", "survivor@example.com").await;
    let path = format!("/api/v1/users/{}", user["id"]);
    for _ in 0..5 {
        assert_eq!(app.get(&path).await.status(), 200);
    }
    let name = app
        .database_url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();

    let killed = server
        .admin()
        .await
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&name],
        )
        .await
        .unwrap();
    // A request sent in the instant of the kill may still meet a connection whose end the
    // server has not read yet. Such requests count as in flight, so the test waits first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(app.get(&path).await.status().as_u16());
    }

    assert!(!killed.is_empty(), "the pool had connections to kill");
    let deadline = Instant::now() + Duration::from_secs(5);
    let reconnected = loop {
        let rows = server
            .admin()
            .await
            .query(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                &[&name],
            )
            .await
            .unwrap();
        let count: i64 = rows[0].get(0);
        if count >= 2 || Instant::now() > deadline {
            break count;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        reconnected >= 2,
        "the shared read connections were replaced: {reconnected}"
    );
    // No request was in flight when the connections died, so none may fail. The pool drops
    // broken connections at checkout, and the shared ones were replaced.
    assert!(statuses.iter().all(|&status| status == 200), "{statuses:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_database_is_gone() {
    let Some(server) = postgres::server() else {
        return;
    };
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    assert_eq!(app.get("/readyz").await.status(), 200);
    let name = app
        .database_url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();

    server
        .admin()
        .await
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap();
    let ready = app.get("/readyz").await;
    let live = app.get("/livez").await;

    let body = problem(ready, 503).await;
    assert!(
        body["detail"].as_str().unwrap().contains("database"),
        "{body}"
    );
    assert_eq!(live.status(), 200, "liveness ignores the database");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_query_is_cancelled_by_statement_timeout() {
    let Some(server) = postgres::server() else {
        return;
    };
    let options = Options {
        args: ["--db-statement-timeout", "300ms"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    };
    let Some(app) = TestApp::spawn_with(Backend::Postgres, options).await else {
        return;
    };
    let user = app.create_user("Locked", "locked@example.com").await;
    let (locker, connection) = tokio_postgres::connect(&app.database_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    locker
        .batch_execute("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    let started = Instant::now();
    let response = app.get(&format!("/api/v1/users/{}", user["id"])).await;
    let waited = started.elapsed();
    let name = app
        .database_url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let waiting: i64 = server
        .admin()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    locker.batch_execute("COMMIT").await.unwrap();

    problem(response, 503).await;
    assert!(
        waited < Duration::from_secs(2),
        "cancelled on the server, not at the write timeout: {waited:?}"
    );
    assert_eq!(
        waiting, 0,
        "no query of the request still waits on the server"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_postgres_restart() {
    let Some(cluster) = postgres::private_cluster() else {
        return;
    };
    let options = Options {
        database_url: Some(cluster.create_database().await),
        ..Options::default()
    };
    let Some(app) = TestApp::spawn_with(Backend::Postgres, options).await else {
        return;
    };
    let user = app.create_user("Before", "before@example.com").await;
    let path = format!("/api/v1/users/{}", user["id"]);
    assert_eq!(app.get(&path).await.status(), 200);

    tokio::task::spawn_blocking(move || {
        cluster.restart();
        cluster
    })
    .await
    .unwrap();
    let mut statuses = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let status = app.get(&path).await.status().as_u16();
        statuses.push(status);
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let created = app
        .post_json(
            "/api/v1/users",
            r#"{"name":"After","email":"after@example.com"}"#,
        )
        .await
        .status();

    assert_eq!(
        statuses.last(),
        Some(&200),
        "reads recover without a restart: {statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|&status| status == 200 || status == 503),
        "{statuses:?}"
    );
    assert_eq!(created, 201, "writes recover too");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_statements_serve_every_route() {
    let options = Options {
        args: ["--db-prepared-statements", "false"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    };
    let Some(app) = TestApp::spawn_with(Backend::Postgres, options).await else {
        return;
    };

    let user = app.create_user("Unnamed", "unnamed@example.com").await;
    let path = format!("/api/v1/users/{}", user["id"]);
    let read = app.get(&path).await.status();
    let listed: serde_json::Value = app.get("/api/v1/users").await.json().await.unwrap();
    let patched = app
        .client
        .patch(app.url(&path))
        .header("content-type", "application/json")
        .body(r#"{"name":"Renamed"}"#)
        .send()
        .await
        .unwrap()
        .status();
    let deleted = app
        .client
        .delete(app.url(&path))
        .send()
        .await
        .unwrap()
        .status();

    assert_eq!(read, 200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(patched, 200);
    assert_eq!(deleted, 204);
    app.stop().await;
}
