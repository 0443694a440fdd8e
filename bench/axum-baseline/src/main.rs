//! The axum baseline of the benchmark: serves `GET /api/v1/users/{id}` from PostgreSQL through two
//! shared tokio-postgres clients, with no pool, logging, metrics or middleware.

use std::error::Error;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::{Client, NoTls, Statement};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const USER_BY_ID: &str = "SELECT id, name, email, created_at FROM users WHERE id = $1";

/// Number of database connections. Each `Client` pipelines the queries that callers issue
/// on it concurrently, so requests share connections instead of waiting for one.
const CLIENT_COUNT: usize = 2;

/// One connection's client with `USER_BY_ID` prepared on that connection.
struct Connection {
    client: Client,
    user_by_id: Statement,
}

struct AppState {
    connections: Vec<Connection>,
    next: AtomicUsize,
}

/// Response body. chrono serializes `DateTime<Utc>` as an RFC 3339 string.
#[derive(Serialize)]
struct User {
    id: i64,
    name: String,
    email: String,
    created_at: DateTime<Utc>,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("axum-baseline: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Connects the clients, binds 127.0.0.1:`PORT` and serves until the process is killed.
async fn run() -> Result<(), Box<dyn Error>> {
    let database_url = std::env::var("DATABASE_URL")
        .map_err(|_| "DATABASE_URL is missing: set it to a URL such as postgres://user@host/db")?;
    let port: u16 = std::env::var("PORT")
        .map_err(|_| "PORT is missing: set it to the TCP port to listen on")?
        .parse()
        .map_err(|err| format!("PORT is invalid, expected a number from 0 to 65535: {err}"))?;

    let mut connections = Vec::with_capacity(CLIENT_COUNT);
    for _ in 0..CLIENT_COUNT {
        // The error omits the URL because it may contain a password.
        let (client, connection) = tokio_postgres::connect(&database_url, NoTls)
            .await
            .map_err(|err| format!("failed to connect to DATABASE_URL: {err}"))?;

        // The connection task performs the socket I/O for its client. It ends when the
        // client is dropped or the connection fails, and a failed connection makes that
        // client's queries return errors (503), with no reconnect.
        tokio::spawn(connection);

        let user_by_id = client
            .prepare(USER_BY_ID)
            .await
            .map_err(|err| format!("failed to prepare {USER_BY_ID:?}: {err}"))?;
        connections.push(Connection { client, user_by_id });
    }

    let state = Arc::new(AppState {
        connections,
        next: AtomicUsize::new(0),
    });
    let app = Router::new()
        .route("/", get(|| async { "Hello, World!" }))
        .route("/api/v1/users/{id}", get(get_user))
        .with_state(state);

    let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
        .map_err(|err| format!("failed to bind 127.0.0.1:{port}: {err}"))?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// Returns the user as JSON: 400 if `id` is not an i64, 404 if no row matches, 503 if the
/// query fails.
async fn get_user(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return StatusCode::BAD_REQUEST.into_response();
    };

    // Round-robin over the clients. `fetch_add` wraps on overflow instead of panicking.
    let index = state.next.fetch_add(1, Ordering::Relaxed) % state.connections.len();
    let connection = &state.connections[index];

    match connection
        .client
        .query_opt(&connection.user_by_id, &[&id])
        .await
    {
        // `Row::get` panics on a NULL or a type mismatch. In the `bench` schema the four
        // columns are NOT NULL bigint, text, text and timestamptz, which match these fields.
        Ok(Some(row)) => Json(User {
            id: row.get(0),
            name: row.get(1),
            email: row.get(2),
            created_at: row.get(3),
        })
        .into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
