//! Cross-cutting layers of the request path, one file each. The route table in
//! [`crate::http`] stacks them in this order, outermost first: request id, client address,
//! access log, problem rendering, metrics, rate limit and load shedding (API routes only),
//! panic recovery, timeout.

pub mod access_log;
pub mod client_ip;
pub mod load_shed;
pub mod metrics;
pub mod problem;
pub mod rate_limit;
pub mod request_id;
pub mod timeout;
