//! Connecting to PostgreSQL: the TLS modes with their certificate checks, waiting for a
//! database that comes up late, and giving up on one that never answers.

use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

use crate::harness::build_application as build;
use crate::harness::postgres::{self, Server};

/// Creates a fresh database and returns its URL on `host`, with the given TLS parameters.
async fn tls_url(server: &Server, host: &str, tls: &str) -> String {
    let plain = server.create_database().await;
    let name = plain.rsplit('/').next().unwrap().split('?').next().unwrap();
    format!("postgres://postgres@{host}:{}/{name}?{tls}", server.port)
}

#[tokio::test]
async fn tls_verify_full_accepts_right_ca() {
    let Some(server) = postgres::server() else {
        return;
    };
    let Some(tls) = &server.tls else {
        return eprintln!("skipped: TLS needs the harness's own cluster");
    };

    let url = tls_url(
        server,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", tls.ca_cert.display()),
    )
    .await;
    let app = build(&url, &[]).await;

    assert!(app.is_ok(), "{:#}", app.err().unwrap());
}

#[tokio::test]
async fn tls_verify_full_rejects_wrong_ca() {
    let Some(server) = postgres::server() else {
        return;
    };
    let Some(tls) = &server.tls else {
        return eprintln!("skipped: TLS needs the harness's own cluster");
    };

    let url = tls_url(
        server,
        "localhost",
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            tls.other_ca_cert.display()
        ),
    )
    .await;
    let started = Instant::now();
    let err = build(&url, &["--db-connect-timeout", "10s"])
        .await
        .err()
        .expect("a wrong CA is rejected");

    assert!(
        format!("{err:#}").to_lowercase().contains("certificate"),
        "{err:#}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a verification failure is not retried"
    );
}

#[tokio::test]
async fn tls_host_checked_by_full_only() {
    let Some(server) = postgres::server() else {
        return;
    };
    let Some(tls) = &server.tls else {
        return eprintln!("skipped: TLS needs the harness's own cluster");
    };
    let root = format!("sslrootcert={}", tls.ca_cert.display());

    // The certificate names localhost, not 127.0.0.1.
    let full = build(
        &tls_url(server, "127.0.0.1", &format!("sslmode=verify-full&{root}")).await,
        &[],
    )
    .await;
    let ca = build(
        &tls_url(server, "127.0.0.1", &format!("sslmode=verify-ca&{root}")).await,
        &[],
    )
    .await;

    assert!(full.is_err(), "verify-full must check the host name");
    assert!(ca.is_ok(), "{:#}", ca.err().unwrap());
}

#[tokio::test]
async fn tls_require_encrypts_without_ca() {
    let Some(server) = postgres::server() else {
        return;
    };
    let Some(_) = &server.tls else {
        return eprintln!("skipped: TLS needs the harness's own cluster");
    };

    let app = build(&tls_url(server, "127.0.0.1", "sslmode=require").await, &[]).await;

    assert!(app.is_ok(), "{:#}", app.err().unwrap());
}

#[tokio::test]
async fn verify_full_without_root_cert_is_rejected() {
    let Some(server) = postgres::server() else {
        return;
    };

    let err = build(
        &tls_url(server, "localhost", "sslmode=verify-full").await,
        &[],
    )
    .await
    .err()
    .unwrap();

    assert!(format!("{err:#}").contains("DB_SSLROOTCERT"), "{err:#}");
}

#[tokio::test]
async fn start_waits_for_late_database() {
    let Some(server) = postgres::server() else {
        return;
    };
    let database = server.create_database().await;
    let upstream = format!("{}:{}", server.host, server.port);
    // A port that accepts nothing for a second, then forwards to the real server, as a database
    // that comes up after the service would.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let mut server = TcpStream::connect(upstream).await.unwrap();
                let _closed = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    let url = database.replace(&format!(":{}/", server.port), &format!(":{port}/"));

    let started = Instant::now();
    let app = build(&url, &["--db-connect-timeout", "15s"]).await;

    assert!(app.is_ok(), "{:#}", app.err().unwrap());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "connected after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unreachable_database_fails_at_connect_timeout() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://postgres@127.0.0.1:{closed_port}/none?sslmode=disable");

    let started = Instant::now();
    let result = build(&url, &["--db-connect-timeout", "1s"]).await;

    assert!(result.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "gave up after {:?}",
        started.elapsed()
    );
}
