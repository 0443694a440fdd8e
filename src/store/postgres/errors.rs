//! Sorting driver and pool errors into [`StoreError`] kinds.

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

use crate::store::StoreError;

pub fn classify_pool_error(err: PoolError) -> StoreError {
    match err {
        PoolError::Backend(err) => classify(err),
        PoolError::Timeout(_) | PoolError::Closed => StoreError::Unavailable(err.into()),
        PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {
            StoreError::Internal(err.into())
        }
    }
}

/// Sorts a driver error by what the caller can do: a unique violation is a conflict, a lost
/// or refused connection is unavailable, and the rest is internal.
pub fn classify(err: tokio_postgres::Error) -> StoreError {
    if let Some(db) = err.as_db_error()
        && *db.code() == SqlState::UNIQUE_VIOLATION
        && db.constraint() == Some("users_email_lower_key")
    {
        return StoreError::Conflict { field: "email" };
    }
    // A statement cancelled by statement_timeout ran out of time: retrying cannot help the
    // request, but the database itself is fine, so it is unavailable rather than a bug.
    let timed_out = err
        .as_db_error()
        .is_some_and(|db| *db.code() == SqlState::QUERY_CANCELED);
    if timed_out || is_unavailable(&err) {
        StoreError::Unavailable(err.into())
    } else {
        StoreError::Internal(err.into())
    }
}

/// Tells whether `err` comes from a connection that was lost, refused or shut down, where
/// another connection may succeed. A certificate that fails verification is not: it will
/// fail again.
pub fn is_unavailable(err: &tokio_postgres::Error) -> bool {
    if let Some(db) = err.as_db_error() {
        let code = db.code();
        return code.code().starts_with("08")
            || [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::TOO_MANY_CONNECTIONS,
            ]
            .contains(code);
    }
    let io_failure =
        std::error::Error::source(err).is_some_and(|source| source.is::<std::io::Error>());
    !caused_by_tls(err) && (err.is_closed() || io_failure)
}

/// Tells whether a rustls error is in `err`'s cause chain, directly or inside an I/O error.
fn caused_by_tls(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(error) = current {
        let inside_io = error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .is_some_and(|inner| inner.is::<rustls::Error>());
        if error.is::<rustls::Error>() || inside_io {
            return true;
        }
        current = error.source();
    }
    false
}
