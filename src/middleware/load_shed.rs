//! Load shedding: a limit on requests in flight across the whole process. A request over the
//! limit is rejected at once with 503 and `Retry-After`, never queued, so a replica under more
//! load than it can serve keeps its latency for the requests it admits.
//!
//! The limit is per replica. Size it as the throughput a replica sustains times the latency
//! that requests may wait in the worst case (Little's law): 40,000 requests/s at 250 ms is
//! 10,000 in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;

use crate::http::problem::ApiError;

/// The in-flight limit, shared by every route it guards.
#[derive(Clone)]
pub struct InFlightLimit {
    max: usize,
    current: Arc<AtomicUsize>,
    shed: Counter,
}

impl InFlightLimit {
    /// Creates a limit of `max` requests in flight; `shed` counts the rejected ones.
    pub fn new(max: usize, shed: Counter) -> Self {
        InFlightLimit {
            max,
            current: Arc::new(AtomicUsize::new(0)),
            shed,
        }
    }
}

pub async fn limit(State(limit): State<InFlightLimit>, request: Request, next: Next) -> Response {
    if limit.current.fetch_add(1, Ordering::AcqRel) >= limit.max {
        limit.current.fetch_sub(1, Ordering::AcqRel);
        limit.shed.inc();
        return ApiError::Overloaded.into_response();
    }
    let _admitted = Admitted(&limit.current);
    next.run(request).await
}

/// Releases a request's place when dropped, also when the client goes away mid-request.
struct Admitted<'a>(&'a AtomicUsize);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
