//! Request ids: taken from `X-Request-Id` when it is safe to log and echo, generated otherwise,
//! stored in the request's extensions and echoed in the response.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Maximum length of a request id accepted from a client.
const MAX_LENGTH: usize = 64;

/// A request's id, in the request's extensions for handlers and middleware.
#[derive(Debug, Clone)]
pub struct RequestId(HeaderValue);

impl RequestId {
    pub fn as_str(&self) -> &str {
        self.0
            .to_str()
            .expect("request ids are checked or generated as ASCII")
    }
}

/// A random prefix per process and a counter: unique across replicas without a random number
/// per request.
static PREFIX: LazyLock<String> =
    LazyLock::new(|| format!("{:016x}", RandomState::new().hash_one(std::process::id())));
static COUNTER: AtomicU64 = AtomicU64::new(0);

pub async fn assign(mut request: Request, next: Next) -> Response {
    let id = match request.headers().get(&X_REQUEST_ID) {
        Some(value) if is_valid(value.as_bytes()) => value.clone(),
        _ => generate(),
    };
    request.extensions_mut().insert(RequestId(id.clone()));

    let mut response = next.run(request).await;
    response.headers_mut().insert(X_REQUEST_ID.clone(), id);
    response
}

/// Accepts 1 to 64 characters of `[A-Za-z0-9._-]`, which is safe in logs, headers and JSON.
fn is_valid(id: &[u8]) -> bool {
    (1..=MAX_LENGTH).contains(&id.len())
        && id
            .iter()
            .all(|&byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

fn generate() -> HeaderValue {
    let sequence = COUNTER.fetch_add(1, Ordering::Relaxed);
    HeaderValue::from_str(&format!("{}-{sequence:x}", *PREFIX))
        .expect("hex digits and a dash form a valid header")
}

#[cfg(test)]
mod tests {
    use super::*;

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
