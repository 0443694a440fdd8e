//! An optional per-client rate limit: GCRA from the `governor` crate, keyed by the client
//! address that [`super::client_ip`] resolved. A client over its rate gets 429 with
//! `Retry-After`.
//!
//! The limit is per replica: with N replicas behind a balancer a client may reach N times the
//! rate. Idle clients' state is dropped every minute, so memory follows the active clients.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use prometheus_client::metrics::counter::Counter;

use crate::http::problem::ApiError;

/// How often the state of clients that have been idle long enough to be at full burst again
/// is dropped.
const FORGET_INTERVAL: Duration = Duration::from_secs(60);

/// The shared limiter and the counter of rejected requests.
#[derive(Clone)]
pub struct RateLimit {
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    limited: Counter,
}

impl RateLimit {
    /// Allows `per_second` requests per second per client, with bursts of up to `burst`, and
    /// starts the task that drops the state of idle clients.
    pub fn start(per_second: NonZeroU32, burst: NonZeroU32, limited: Counter) -> Self {
        let limiter = Arc::new(DefaultKeyedRateLimiter::keyed(
            Quota::per_second(per_second).allow_burst(burst),
        ));
        let weak = Arc::downgrade(&limiter);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(FORGET_INTERVAL);
            loop {
                interval.tick().await;
                let Some(limiter) = weak.upgrade() else {
                    return;
                };
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        });
        RateLimit { limiter, limited }
    }

    /// Counts a request from `client` against its rate. A client over its rate gets
    /// `RateLimited` with the seconds until its next request would be allowed.
    pub fn check(&self, client: IpAddr) -> Result<(), ApiError> {
        let Err(not_until) = self.limiter.check_key(&client) else {
            return Ok(());
        };
        self.limited.inc();
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Err(ApiError::RateLimited {
            retry_after: retry_after.max(1),
        })
    }
}
