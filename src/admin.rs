//! The listeners beside the public one: metrics for Prometheus (METRICS_ADDR) and CPU and
//! heap profiles (ADMIN_ADDR, loopback by default, reachable in Kubernetes by port-forward).
//!
//! Neither is on the public port, and neither goes through the public middleware: a scrape or
//! a profile is never shed, logged per request or counted in the request metrics.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use pprof::protos::Message;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::allocator::{self, HeapProfileError};
use crate::metrics::Metrics;
use crate::store::Store;

/// Longest CPU profile a request may ask for.
const MAX_PROFILE_SECONDS: u64 = 300;

/// Samples per second of a CPU profile; 99 rather than 100, so sampling does not run in
/// lockstep with work scheduled at round intervals.
const PROFILE_FREQUENCY: i32 = 99;

#[derive(Clone)]
struct MetricsState {
    metrics: Arc<Metrics>,
    store: Store,
}

/// Routes of the metrics listener.
pub fn metrics_router(metrics: Arc<Metrics>, store: Store) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .with_state(MetricsState { metrics, store })
}

async fn render_metrics(State(state): State<MetricsState>) -> Response {
    state.store.record_pool_status();
    let body = state.metrics.render();
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Routes of the profiling listener.
pub fn admin_router() -> Router {
    Router::new()
        .route("/debug/pprof/profile", get(cpu_profile))
        .route("/debug/pprof/heap", get(heap_profile))
        .with_state(Arc::new(Mutex::new(())))
}

#[derive(Deserialize)]
struct ProfileParameters {
    seconds: Option<u64>,
}

/// Samples the CPU for `seconds` (default 30) and returns the profile in pprof's protobuf
/// format, which `go tool pprof` reads. One profile runs at a time.
async fn cpu_profile(
    State(running): State<Arc<Mutex<()>>>,
    parameters: Result<Query<ProfileParameters>, QueryRejection>,
) -> Response {
    let seconds = match parameters {
        Ok(Query(parameters)) => parameters.seconds.unwrap_or(30),
        Err(err) => return problem(StatusCode::BAD_REQUEST, err.body_text()),
    };
    if !(1..=MAX_PROFILE_SECONDS).contains(&seconds) {
        let detail = format!("seconds must be from 1 to {MAX_PROFILE_SECONDS}, got {seconds}");
        return problem(StatusCode::BAD_REQUEST, detail);
    }
    let Ok(_only_one) = running.try_lock() else {
        let detail = "a CPU profile is already running".to_owned();
        return problem(StatusCode::CONFLICT, detail);
    };

    let guard = match pprof::ProfilerGuardBuilder::default()
        .frequency(PROFILE_FREQUENCY)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
    {
        Ok(guard) => guard,
        Err(err) => return profile_failed(&err),
    };
    tokio::time::sleep(Duration::from_secs(seconds)).await;

    let encoded = guard
        .report()
        .build()
        .and_then(|report| report.pprof())
        .map(|profile| profile.encode_to_vec());
    match encoded {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Err(err) => profile_failed(&err),
    }
}

/// Returns a heap profile of the live sampled allocations in gzipped pprof protobuf, which
/// `go tool pprof` reads.
async fn heap_profile() -> Response {
    match allocator::heap_profile().await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Err(err @ (HeapProfileError::Unsupported | HeapProfileError::NotEnabled)) => {
            problem(StatusCode::NOT_IMPLEMENTED, err.to_string())
        }
        Err(err) => {
            tracing::error!(error = %err, "heap profile failed");
            problem(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
        }
    }
}

fn profile_failed(err: &pprof::Error) -> Response {
    tracing::error!(error = %err, "CPU profile failed");
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("CPU profile failed: {err}"),
    )
}

/// Renders an error of the profiling listener as problem+json. The listener is for operators on
/// loopback, so a failed profile's cause is sent in full.
fn problem(status: StatusCode, detail: String) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}
