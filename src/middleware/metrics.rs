//! Records every request in the HTTP metrics: the count by method, route template and status,
//! the latency by method and route template, and the requests in flight.

use std::collections::HashSet;
use std::sync::{LazyLock, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::{HttpMetrics, RequestLabels, RouteLabels};

/// Records a finished request: its count by method, route template and status, and its
/// latency by method and route template.
pub fn record(
    metrics: &HttpMetrics,
    method: &'static str,
    route: &'static str,
    status: StatusCode,
    latency: Duration,
) {
    metrics
        .duration
        .get_or_create(&RouteLabels { method, route })
        .observe(latency.as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: status.as_u16(),
        })
        .inc();
}

/// Counts a request in flight until dropped, also when the client goes away mid-request.
pub struct InFlight<'a>(&'a Gauge);

impl<'a> InFlight<'a> {
    pub fn enter(gauge: &'a Gauge) -> Self {
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
pub fn intern(template: &str) -> &'static str {
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
