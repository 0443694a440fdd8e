//! Prometheus metrics: the families the service records and their text rendering.
//!
//! Label values are bounded by construction: `route` is a route template or `unmatched`,
//! `method` is one of the standard methods or `other`, `status` is a status code, and the
//! store's labels are fixed names. No raw path, id or client value becomes a label.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// The route label of a request that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Latency buckets in seconds, from 0.5 ms to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: &'static str,
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShedLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    pub query: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    revision: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The metrics the HTTP middleware records.
#[derive(Clone)]
pub struct HttpMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub in_flight: Gauge,
    pub in_flight_limit: Gauge,
    pub shed: Family<ShedLabels, Counter>,
}

/// The metrics the store records.
#[derive(Clone)]
pub struct StoreMetrics {
    pub queries: Family<QueryLabels, Histogram, fn() -> Histogram>,
    pub pool_wait: Histogram,
    pub pool_connections: Family<StateLabels, Gauge>,
    pub pool_max: Gauge,
}

/// Figures read from `/proc` when metrics are scraped.
#[derive(Clone, Default)]
struct ProcessMetrics {
    resident_memory: Gauge,
    cpu_seconds: Counter<f64, AtomicU64>,
    open_fds: Gauge,
    threads: Gauge,
}

/// The registry and every metric in it.
pub struct Metrics {
    registry: Registry,
    pub http: HttpMetrics,
    pub store: StoreMetrics,
    process: ProcessMetrics,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();
        let http = HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            in_flight: Gauge::default(),
            in_flight_limit: Gauge::default(),
            shed: Family::default(),
        };
        registry.register(
            "http_server_requests",
            "HTTP requests answered, by method, route template and status",
            http.requests.clone(),
        );
        registry.register_with_unit(
            "http_server_request_duration",
            "Time from receiving a request to its response, by method and route template",
            Unit::Seconds,
            http.duration.clone(),
        );
        registry.register(
            "http_server_requests_in_flight",
            "HTTP requests being handled now",
            http.in_flight.clone(),
        );
        registry.register(
            "http_server_in_flight_limit",
            "Current limit on API requests in flight (fixed, or moved by adaptive shedding)",
            http.in_flight_limit.clone(),
        );
        registry.register(
            "http_server_requests_shed",
            "HTTP requests rejected without being handled, by reason",
            http.shed.clone(),
        );

        let store = StoreMetrics {
            queries: Family::new_with_constructor(latency_histogram),
            pool_wait: latency_histogram(),
            pool_connections: Family::default(),
            pool_max: Gauge::default(),
        };
        registry.register_with_unit(
            "db_query_duration",
            "Time of a store operation, by query name",
            Unit::Seconds,
            store.queries.clone(),
        );
        registry.register_with_unit(
            "db_pool_wait",
            "Time spent waiting for a pooled database connection",
            Unit::Seconds,
            store.pool_wait.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Pooled database connections, by state (idle or in_use)",
            store.pool_connections.clone(),
        );
        registry.register(
            "db_pool_max_connections",
            "Maximum size of the database connection pool",
            store.pool_max.clone(),
        );

        let process = ProcessMetrics::default();
        registry.register_with_unit(
            "process_resident_memory",
            "Resident memory of the process",
            Unit::Bytes,
            process.resident_memory.clone(),
        );
        registry.register_with_unit(
            "process_cpu",
            "User and system CPU time of the process",
            Unit::Seconds,
            process.cpu_seconds.clone(),
        );
        registry.register(
            "process_open_fds",
            "Open file descriptors of the process",
            process.open_fds.clone(),
        );
        registry.register(
            "process_threads",
            "Threads of the process",
            process.threads.clone(),
        );

        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                revision: env!("PEREGRINE_REVISION"),
            })
            .set(1);
        registry.register(
            "build_info",
            "The running build: version and source revision",
            build_info,
        );

        Arc::new(Metrics {
            registry,
            http,
            store,
            process,
        })
    }

    /// Reads the process figures and renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        self.process.refresh();
        let mut text = String::with_capacity(16 * 1024);
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

/// Maps a request method to a label value: the standard methods by name, anything else as
/// `other`, so a client cannot create series with made-up methods.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

impl ProcessMetrics {
    /// Sets the gauges from `/proc/self`; a figure that cannot be read keeps its last value.
    fn refresh(&self) {
        if let Some(stat) = read_stat() {
            // The counter moves by the difference; /proc only ever grows, and concurrent
            // scrapes can only make the difference smaller, never negative.
            let increase = stat.cpu_seconds - self.cpu_seconds.get();
            if increase > 0.0 {
                self.cpu_seconds.inc_by(increase);
            }
            self.threads.set(stat.threads);
            self.resident_memory.set(stat.resident_bytes);
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds
                .set(i64::try_from(entries.count()).unwrap_or(i64::MAX));
        }
    }
}

struct Stat {
    cpu_seconds: f64,
    threads: i64,
    resident_bytes: i64,
}

/// Parses `/proc/self/stat` (fields as in proc(5): utime 14, stime 15, num_threads 20,
/// rss 24 in pages).
fn read_stat() -> Option<Stat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name in field 2 may contain spaces, so count fields after its ')'.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |number: usize| fields.get(number - 3)?.parse::<i64>().ok();
    // SAFETY: sysconf has no preconditions.
    let (ticks, page_size) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let cpu_ticks = field(14)? + field(15)?;
    Some(Stat {
        cpu_seconds: cpu_ticks as f64 / ticks.max(1) as f64,
        threads: field(20)?,
        resident_bytes: field(24)? * page_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_names_every_family() {
        let metrics = Metrics::new();
        metrics.http.in_flight.inc();
        let route = RouteLabels {
            method: "GET",
            route: "/x",
        };
        metrics.http.duration.get_or_create(&route).observe(0.01);
        let request = RequestLabels {
            method: "GET",
            route: "/x",
            status: 200,
        };
        metrics.http.requests.get_or_create(&request).inc();
        metrics
            .store
            .queries
            .get_or_create(&QueryLabels { query: "get_user" })
            .observe(0.01);
        metrics.store.pool_wait.observe(0.001);
        let text = metrics.render();
        for name in [
            "http_server_requests_in_flight 1",
            "# TYPE http_server_requests counter",
            "# TYPE http_server_request_duration_seconds histogram",
            "# TYPE db_query_duration_seconds histogram",
            "# TYPE db_pool_wait_seconds histogram",
            "process_resident_memory_bytes ",
            "process_cpu_seconds_total ",
            "process_open_fds ",
            "process_threads ",
            "build_info{version=",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let made_up = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&made_up), "other");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
    }
}
