//! Request ids: taken from `X-Request-Id` when it is safe to log and echo, generated otherwise,
//! stored in the request's extensions and echoed in the response.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderMap, HeaderName, HeaderValue};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Maximum length of a request id accepted from a client.
const MAX_LENGTH: usize = 64;

/// A request's id, in the request's extensions for handlers and middleware.
#[derive(Debug, Clone)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// Returns the id as a header value, for echoing it in the response.
    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }

    pub fn as_str(&self) -> &str {
        self.0
            .to_str()
            .expect("request ids are checked or generated as ASCII")
    }
}

/// A random prefix per process and a counter: unique across replicas without a random number
/// per request.
static PREFIX: LazyLock<u64> = LazyLock::new(|| RandomState::new().hash_one(std::process::id()));
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Returns the request's id: the client's `X-Request-Id` when it is valid, a new id otherwise.
pub fn assign(headers: &HeaderMap) -> RequestId {
    match headers.get(&X_REQUEST_ID) {
        Some(value) if is_valid(value.as_bytes()) => RequestId(value.clone()),
        _ => RequestId(generate()),
    }
}

/// Accepts 1 to 64 characters of `[A-Za-z0-9._-]`, which is safe in logs, headers and JSON.
fn is_valid(id: &[u8]) -> bool {
    (1..=MAX_LENGTH).contains(&id.len())
        && id
            .iter()
            .all(|&byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

fn generate() -> HeaderValue {
    id_value(*PREFIX, COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Returns `prefix` in 16 hex digits, a dash and `sequence` in hex without leading zeros. The
/// digits are put in place by hand: `format!` cost about 1,200 instructions per request.
fn id_value(prefix: u64, sequence: u64) -> HeaderValue {
    let mut id = [0; 33];
    put_hex(&mut id[..16], prefix);
    id[16] = b'-';
    let digits = (u64::BITS - sequence.leading_zeros()).div_ceil(4).max(1) as usize;
    let end = 17 + digits;
    put_hex(&mut id[17..end], sequence);
    HeaderValue::from_bytes(&id[..end]).expect("hex digits and a dash form a valid header")
}

/// Writes the low digits of `value` in lowercase hex into `slot`, right-aligned.
fn put_hex(slot: &mut [u8], mut value: u64) {
    for byte in slot.iter_mut().rev() {
        *byte = b"0123456789abcdef"[(value & 0xf) as usize];
        value >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_prefix_dash_sequence() {
        let cases = [
            (0, 0, "0000000000000000-0"),
            (0xd70b_7f02_9f7c_65f0, 0x17b, "d70b7f029f7c65f0-17b"),
            (u64::MAX, u64::MAX, "ffffffffffffffff-ffffffffffffffff"),
        ];
        for (prefix, sequence, expected) in cases {
            assert_eq!(id_value(prefix, sequence), expected);
        }
    }

    #[test]
    fn valid_ids_pass() {
        assert!(is_valid(b"abc-123_X.y"));
        assert!(is_valid(&[b'a'; 64]));
    }

    #[test]
    fn unsafe_ids_rejected() {
        for id in [
            &b""[..],
            &[b'a'; 65],
            b"has space",
            b"quote\"",
            b"new\nline",
            "é".as_bytes(),
        ] {
            assert!(!is_valid(id), "{id:?}");
        }
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let (first, second) = (generate(), generate());
        assert!(is_valid(first.as_bytes()));
        assert_ne!(first, second);
    }
}
