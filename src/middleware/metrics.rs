//! Records every request in the HTTP metrics: the count by method, route template and status,
//! the latency by method and route template, and the requests in flight.

use std::collections::HashSet;
use std::sync::{LazyLock, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::{HttpMetrics, RequestLabels, RouteLabels, UNMATCHED_ROUTE, method_label};

pub async fn record(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, |path| intern(path.as_str()));
    let _in_flight = InFlight::enter(&metrics.in_flight);
    let started = Instant::now();

    let response = next.run(request).await;

    let labels = RouteLabels { method, route };
    metrics
        .duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    let status = response.status().as_u16();
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status,
        })
        .inc();
    response
}

/// Counts a request in flight until dropped, also when the client goes away mid-request.
struct InFlight<'a>(&'a Gauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a Gauge) -> Self {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Returns a `'static` copy of a route template, made once per template. Templates come only
/// from the route table, so the set is small and fixed, and the copies live as long as the
/// process, as the metric series that use them do.
fn intern(template: &str) -> &'static str {
    static TEMPLATES: LazyLock<RwLock<HashSet<&'static str>>> = LazyLock::new(Default::default);

    if let Some(&known) = TEMPLATES
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(template)
    {
        return known;
    }
    let mut templates = TEMPLATES.write().unwrap_or_else(|p| p.into_inner());
    if let Some(&known) = templates.get(template) {
        return known;
    }
    let leaked: &'static str = Box::leak(template.to_owned().into_boxed_str());
    templates.insert(leaked);
    leaked
}
