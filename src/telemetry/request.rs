//! The request a log line belongs to.
//!
//! The access log runs each request's future inside [`scope`], and the line formatters add
//! the request's fields to every event logged there. This is a task-local rather than a
//! tracing span because a span per request cost about 12% of the user route's throughput.

use std::fmt::{self, Display, Write};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use axum::http::Method;

use crate::middleware::request_id::RequestId;

tokio::task_local! {
    static CURRENT: RequestContext;
}

/// The fields every log line of one request carries.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub method: Method,
    /// The route template, or `unmatched`.
    pub route: &'static str,
    pub request_id: RequestId,
    /// The TCP peer's address.
    pub peer: Option<SocketAddr>,
    /// The client's address, from forwarding headers when the peer is a trusted proxy.
    pub client: Option<IpAddr>,
}

/// Runs `future` with `context` as the request of every event it logs.
pub fn scope<F: Future>(context: RequestContext, future: F) -> impl Future<Output = F::Output> {
    CURRENT.scope(context, future)
}

/// Calls `visit` with the name and value of each field of the current request, or not at all
/// outside a request.
pub(super) fn visit_current(
    mut visit: impl FnMut(&'static str, &dyn Display) -> fmt::Result,
) -> fmt::Result {
    CURRENT
        .try_with(|context| {
            visit("method", &context.method)?;
            visit("route", &context.route)?;
            visit("request_id", &context.request_id.as_str())?;
            if let Some(peer) = &context.peer {
                visit("peer", peer)?;
            }
            if let Some(client) = &context.client {
                visit("client", client)?;
            }
            Ok(())
        })
        .unwrap_or(Ok(()))
}

/// Writes the current request's fields as ` name=value` pairs, for the text format.
pub(super) fn write_text(out: &mut impl Write) -> fmt::Result {
    visit_current(|name, value| write!(out, " {name}={value}"))
}
