//! The request a log line belongs to.
//!
//! The access log runs each request's future inside [`scope`], and the line formatters add
//! the request's fields to every event logged there. This is a task-local rather than a
//! tracing span because a span per request cost about 12% of the user route's throughput.

use std::fmt::{self, Display, Write};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

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
    mut visit: impl FnMut(&'static str, &str) -> fmt::Result,
) -> fmt::Result {
    CURRENT
        .try_with(|context| {
            visit("method", context.method.as_str())?;
            visit("route", context.route)?;
            visit("request_id", context.request_id.as_str())?;
            if let Some(peer) = &context.peer {
                visit("peer", AddressText::socket(peer).as_str())?;
            }
            if let Some(client) = context.client {
                visit("client", AddressText::ip(client).as_str())?;
            }
            Ok(())
        })
        .unwrap_or(Ok(()))
}

/// Writes the current request's fields as ` name=value` pairs, for the text format.
pub(super) fn write_text(out: &mut impl Write) -> fmt::Result {
    visit_current(|name, value| {
        out.write_char(' ')?;
        out.write_str(name)?;
        out.write_char('=')?;
        out.write_str(value)
    })
}

/// The text of an IP or socket address in a buffer on the stack, which a log line takes as one
/// string. IPv4 addresses skip `Display`, whose formatter call per octet took a quarter of the
/// access log's instructions under callgrind.
struct AddressText {
    bytes: [u8; Self::CAPACITY],
    len: usize,
}

impl AddressText {
    /// Room for the longest socket address as `Display` writes it: eight groups of four hex
    /// digits with a scope id and a port, `[ffff:...:ffff%4294967295]:65535`, 58 bytes.
    const CAPACITY: usize = 64;

    fn ip(address: IpAddr) -> Self {
        let mut text = AddressText {
            bytes: [0; Self::CAPACITY],
            len: 0,
        };
        match address {
            IpAddr::V4(v4) => text.push_ipv4(v4),
            IpAddr::V6(v6) => text.push_display(&v6),
        }
        text
    }

    fn socket(address: &SocketAddr) -> Self {
        let mut text = AddressText {
            bytes: [0; Self::CAPACITY],
            len: 0,
        };
        match address {
            SocketAddr::V4(v4) => {
                text.push_ipv4(*v4.ip());
                text.push_str(":");
                text.push_str(itoa::Buffer::new().format(v4.port()));
            }
            SocketAddr::V6(v6) => text.push_display(v6),
        }
        text
    }

    fn push_ipv4(&mut self, address: Ipv4Addr) {
        let mut digits = itoa::Buffer::new();
        for (index, octet) in address.octets().into_iter().enumerate() {
            if index > 0 {
                self.push_str(".");
            }
            self.push_str(digits.format(octet));
        }
    }

    fn push_display(&mut self, value: &dyn Display) {
        // CAPACITY fits every address, so the write cannot run out of room.
        let _ = write!(self, "{value}");
    }

    fn push_str(&mut self, text: &str) {
        let _ = self.write_str(text);
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).expect("addresses are written as ASCII")
    }
}

impl Write for AddressText {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let end = self.len + text.len();
        let slot = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        slot.copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv6Addr, SocketAddrV6};

    use super::*;

    #[test]
    fn ipv4_addresses_match_display() {
        for address in ["0.0.0.0:0", "127.0.0.1:46004", "255.255.255.255:65535"] {
            let socket: SocketAddr = address.parse().unwrap();
            assert_eq!(AddressText::socket(&socket).as_str(), address);
            assert_eq!(
                AddressText::ip(socket.ip()).as_str(),
                socket.ip().to_string()
            );
        }
    }

    #[test]
    fn ipv6_addresses_match_display() {
        let loopback = SocketAddr::from((Ipv6Addr::LOCALHOST, 8080));
        assert_eq!(AddressText::socket(&loopback).as_str(), "[::1]:8080");
        assert_eq!(AddressText::ip(loopback.ip()).as_str(), "::1");
    }

    #[test]
    fn longest_socket_address_fits() {
        let longest = Ipv6Addr::from([0xffff; 8]);
        let socket = SocketAddr::V6(SocketAddrV6::new(longest, 65535, 0, u32::MAX));
        let expected = socket.to_string();

        assert_eq!(expected.len(), 58, "{expected}");
        assert_eq!(AddressText::socket(&socket).as_str(), expected);
    }
}
