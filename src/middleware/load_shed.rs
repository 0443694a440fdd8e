//! Load shedding: a limit on requests in flight across the whole process. A request over the
//! limit is rejected at once with 503 and `Retry-After`, never queued, so a replica under more
//! load than it can serve keeps its latency for the requests it admits.
//!
//! The limit is per replica. Static (LOAD_SHED=static), it is MAX_IN_FLIGHT: size that as the
//! throughput a replica sustains times the latency requests may wait in the worst case
//! (Little's law): 40,000 requests/s at 250 ms is 10,000 in flight. Adaptive
//! (LOAD_SHED=adaptive), the limit moves with the latency the admitted requests see, as in
//! Netflix's concurrency-limits AIMD: see [`Controller`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::http::problem::ApiError;

/// Length of the window over which the adaptive limit averages latency.
const WINDOW: Duration = Duration::from_millis(100);
/// Minimum samples in a window before it moves the limit.
const MIN_SAMPLES: u32 = 10;
/// Average latency, as a multiple of the unloaded latency, above which the limit shrinks.
const TOLERANCE: f64 = 2.0;
/// Factor the limit shrinks by when latency is over the tolerance.
const BACKOFF: f64 = 0.9;
/// Minimum of the adaptive limit.
const MIN_ADAPTIVE_LIMIT: f64 = 16.0;
/// Growth per window of the unloaded-latency estimate, so it follows a workload that became
/// slower for good instead of shedding forever.
const BASELINE_DRIFT: f64 = 1.01;

/// The in-flight limit, shared by every route it guards.
#[derive(Clone)]
pub struct InFlightLimit {
    current: Arc<AtomicUsize>,
    limit: Arc<AtomicUsize>,
    controller: Option<Arc<Mutex<Controller>>>,
    shed: Counter,
    limit_gauge: Gauge,
}

impl InFlightLimit {
    /// Creates a fixed limit of `max` requests in flight; `shed` counts the rejected ones and
    /// `limit_gauge` shows the limit.
    pub fn fixed(max: usize, shed: Counter, limit_gauge: Gauge) -> Self {
        InFlightLimit::new(max, None, shed, limit_gauge)
    }

    /// Creates an adaptive limit that starts low and moves between 16 and `max`.
    pub fn adaptive(max: usize, shed: Counter, limit_gauge: Gauge) -> Self {
        let controller = Controller::new(max as f64);
        let start = controller.limit as usize;
        InFlightLimit::new(
            start,
            Some(Arc::new(Mutex::new(controller))),
            shed,
            limit_gauge,
        )
    }

    fn new(
        start: usize,
        controller: Option<Arc<Mutex<Controller>>>,
        shed: Counter,
        limit_gauge: Gauge,
    ) -> Self {
        limit_gauge.set(i64::try_from(start).unwrap_or(i64::MAX));
        InFlightLimit {
            current: Arc::new(AtomicUsize::new(0)),
            limit: Arc::new(AtomicUsize::new(start)),
            controller,
            shed,
            limit_gauge,
        }
    }

    /// Admits a request when fewer than the limit are in flight, and otherwise counts it as
    /// shed and returns `Overloaded`.
    pub fn try_admit(&self) -> Result<Admitted<'_>, ApiError> {
        let in_flight = self.current.fetch_add(1, Ordering::AcqRel);
        if in_flight >= self.limit.load(Ordering::Relaxed) {
            self.current.fetch_sub(1, Ordering::AcqRel);
            self.shed.inc();
            return Err(ApiError::Overloaded);
        }
        Ok(Admitted {
            limit: self,
            in_flight: in_flight + 1,
            started: Instant::now(),
        })
    }

    /// Feeds an admitted request's latency to the adaptive controller. A sample that arrives
    /// while another request has the controller locked is dropped rather than waited for.
    fn record(&self, latency: Duration, in_flight: usize) {
        let Some(controller) = &self.controller else {
            return;
        };
        let Ok(mut controller) = controller.try_lock() else {
            return;
        };
        if let Some(limit) = controller.sample(Instant::now(), latency, in_flight) {
            self.limit.store(limit, Ordering::Relaxed);
            self.limit_gauge
                .set(i64::try_from(limit).unwrap_or(i64::MAX));
        }
    }
}

/// A request's place under the limit, released when dropped, also when the client goes away
/// mid-request.
pub struct Admitted<'a> {
    limit: &'a InFlightLimit,
    in_flight: usize,
    started: Instant,
}

impl Admitted<'_> {
    /// Releases the place and feeds the request's latency to the adaptive controller.
    pub fn complete(self) {
        self.limit.record(self.started.elapsed(), self.in_flight);
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.limit.current.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Additive-increase, multiplicative-decrease control of the in-flight limit.
///
/// Every 100 ms window compares the admitted requests' average latency with the unloaded
/// latency (the lowest window average seen, drifting up 1% a window). Over twice that, requests
/// are queueing somewhere (CPU, database), so the limit shrinks by a tenth. Otherwise, if the
/// window used at least half the limit, the limit grows by its square root. That probes for
/// capacity quickly at small limits and gently at large ones.
struct Controller {
    limit: f64,
    max: f64,
    baseline: Option<f64>,
    window_start: Option<Instant>,
    samples: u32,
    latency_sum: f64,
    peak_in_flight: usize,
}

impl Controller {
    fn new(max: f64) -> Self {
        let max = max.max(MIN_ADAPTIVE_LIMIT);
        Controller {
            limit: (max / 4.0).clamp(MIN_ADAPTIVE_LIMIT, 256.0).min(max),
            max,
            baseline: None,
            window_start: None,
            samples: 0,
            latency_sum: 0.0,
            peak_in_flight: 0,
        }
    }

    /// Adds one sample and returns the new limit when a window closed.
    fn sample(&mut self, now: Instant, latency: Duration, in_flight: usize) -> Option<usize> {
        let start = *self.window_start.get_or_insert(now);
        self.samples += 1;
        self.latency_sum += latency.as_secs_f64();
        self.peak_in_flight = self.peak_in_flight.max(in_flight);
        if now.duration_since(start) < WINDOW || self.samples < MIN_SAMPLES {
            return None;
        }

        let average = self.latency_sum / f64::from(self.samples);
        let baseline = self
            .baseline
            .map_or(average, |b| (b * BASELINE_DRIFT).min(average));
        self.baseline = Some(baseline);
        if average > TOLERANCE * baseline {
            self.limit = (self.limit * BACKOFF).max(MIN_ADAPTIVE_LIMIT);
        } else if self.peak_in_flight as f64 >= self.limit / 2.0 {
            self.limit = (self.limit + self.limit.sqrt()).min(self.max);
        }

        self.window_start = Some(now);
        self.samples = 0;
        self.latency_sum = 0.0;
        self.peak_in_flight = 0;
        Some(self.limit as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `windows` windows of 20 samples at `latency` with `in_flight` requests in flight
    /// and returns the limit after them.
    fn run(
        controller: &mut Controller,
        start: &mut Instant,
        windows: u32,
        latency_ms: u64,
        in_flight: usize,
    ) -> usize {
        let mut limit = controller.limit as usize;
        for _ in 0..windows {
            for i in 0..20u64 {
                let now = *start + Duration::from_millis(i * 6);
                if let Some(new) =
                    controller.sample(now, Duration::from_millis(latency_ms), in_flight)
                {
                    limit = new;
                }
            }
            *start += Duration::from_millis(120);
        }
        limit
    }

    #[test]
    fn limit_grows_while_latency_holds() {
        let mut controller = Controller::new(10_000.0);
        let mut now = Instant::now();
        let start = controller.limit as usize;

        let grown = run(&mut controller, &mut now, 20, 5, 10_000);

        assert!(grown > start, "{start} -> {grown}");
        assert!(grown <= 10_000);
    }

    #[test]
    fn limit_shrinks_when_latency_climbs() {
        let mut controller = Controller::new(10_000.0);
        let mut now = Instant::now();
        let before = run(&mut controller, &mut now, 20, 5, 10_000);

        let after = run(&mut controller, &mut now, 10, 50, 10_000);

        assert!(after < before, "{before} -> {after}");
        assert!(after >= MIN_ADAPTIVE_LIMIT as usize);
    }

    #[test]
    fn idle_limit_does_not_grow() {
        let mut controller = Controller::new(10_000.0);
        let mut now = Instant::now();
        let start = controller.limit as usize;

        let after = run(&mut controller, &mut now, 20, 5, 1);

        assert_eq!(after, start);
    }
}
