//! The process's open-file limit and the connection limit derived from it.

use std::io;

/// Descriptors kept free for everything but client connections: database connections, the
/// SQLite files, the side listeners, logs.
const RESERVED_DESCRIPTORS: u64 = 256;

/// Minimum of the derived connection limit.
const MIN_CONNECTIONS: u64 = 64;

/// Raises the soft open-file limit to the hard limit and returns the new soft limit.
pub fn raise_open_file_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads only the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

/// Derives the default connection limit from an open-file limit: all but a reserve, so that
/// accepting clients cannot starve the database pool of descriptors.
pub fn default_max_connections(open_file_limit: u64) -> usize {
    let connections = open_file_limit
        .saturating_sub(RESERVED_DESCRIPTORS)
        .max(MIN_CONNECTIONS);
    usize::try_from(connections).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_keeps_a_reserve() {
        assert_eq!(default_max_connections(20_000), 19_744);
        assert_eq!(default_max_connections(100), 64);
    }
}
