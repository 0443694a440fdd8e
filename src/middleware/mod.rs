//! Cross-cutting concerns of the request path, one file each. The one layer in [`stack`] runs
//! them in this order: request id, client address, access log, metrics, rate limit and load
//! shedding (API routes only), timeout and panic recovery, problem rendering.

pub mod access_log;
pub mod client_ip;
pub mod load_shed;
pub mod metrics;
pub mod problem;
pub mod rate_limit;
pub mod request_id;
pub mod stack;
