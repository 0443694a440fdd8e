//! The client's address: the TCP peer, or, when the peer is a trusted proxy, the address the
//! proxy headers name.
//!
//! `Forwarded` (RFC 7239), `X-Forwarded-For` and `X-Real-IP` are read only when the TCP peer is
//! in TRUSTED_PROXIES; from any other peer they are ignored, so a client cannot forge its
//! address into logs or rate limits. In a chain of addresses the right-most one that is not a
//! trusted proxy is the client: every hop appends, so only the left part can be forged.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The client's address, in the request's extensions for the access log and the rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// The networks whose proxy headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<Vec<IpNet>>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> Self {
        TrustedProxies(Arc::new(networks))
    }

    fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.iter().any(|network| network.contains(&address))
    }

    /// Resolves the client address of a request that came from `peer`.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let chain = forwarded_chain(headers);
        chain
            .iter()
            .rev()
            .find(|&&address| !self.contains(address))
            .or(chain.first())
            .copied()
            .unwrap_or(peer)
    }
}

/// Collects the addresses the proxy headers list, left (farthest) to right (nearest): `Forwarded` when
/// present, else `X-Forwarded-For`, else `X-Real-IP`. Entries that are not addresses (`unknown`,
/// obfuscated identifiers) are skipped.
fn forwarded_chain(headers: &HeaderMap) -> Vec<IpAddr> {
    let values = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect::<Vec<_>>()
    };

    let forwarded: Vec<IpAddr> = values("forwarded")
        .into_iter()
        .flat_map(|element| element.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(key, _)| key.eq_ignore_ascii_case("for"))
        .filter_map(|(_, value)| parse_node(value.trim_matches('"')))
        .collect();
    if !forwarded.is_empty() {
        return forwarded;
    }
    let forwarded_for: Vec<IpAddr> = values("x-forwarded-for")
        .into_iter()
        .filter_map(parse_node)
        .collect();
    if !forwarded_for.is_empty() {
        return forwarded_for;
    }
    values("x-real-ip")
        .into_iter()
        .filter_map(parse_node)
        .collect()
}

/// Parses `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1` or `[2001:db8::1]:80`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(address) = node.parse::<IpAddr>() {
        return Some(address);
    }
    if let Ok(socket) = node.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    node.strip_prefix('[')?.split(']').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn trusted(networks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(networks.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_headers_ignored() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4"), ("x-real-ip", "5.6.7.8")]);
        assert_eq!(
            proxies.client_address(ip("203.0.113.9"), &spoofed),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn rightmost_untrusted_address_wins() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let chain = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.1.1")]);
        assert_eq!(
            proxies.client_address(ip("10.0.0.2"), &chain),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn forwarded_header_preferred() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let both = headers(&[
            (
                "forwarded",
                r#"for=192.0.2.60;proto=http, for="[2001:db8::7]:4711""#,
            ),
            ("x-forwarded-for", "1.1.1.1"),
        ]);
        assert_eq!(
            proxies.client_address(ip("10.0.0.2"), &both),
            ip("2001:db8::7")
        );
    }

    #[test]
    fn all_trusted_chain_gives_leftmost() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let chain = headers(&[("x-real-ip", "10.9.9.9")]);
        assert_eq!(
            proxies.client_address(ip("10.0.0.2"), &chain),
            ip("10.9.9.9")
        );
    }

    #[test]
    fn garbage_entries_skipped() {
        let proxies = trusted(&["127.0.0.1/32"]);
        let chain = headers(&[("x-forwarded-for", "unknown, not-an-ip, 192.0.2.1:8080")]);
        assert_eq!(
            proxies.client_address(ip("127.0.0.1"), &chain),
            ip("192.0.2.1")
        );
    }
}
