//! Logging set-up: tracing with an EnvFilter, as text for people or JSON for log collectors,
//! written to standard output by a background thread.
//!
//! Request threads format each line and hand it to the writer thread over a bounded channel.
//! That thread writes whatever has queued in one system call, so under load a write serves
//! many lines rather than one. When the channel is full, request threads wait rather than
//! drop lines.

use std::io::{BufWriter, IsTerminal};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{Config, ConfigError, LogFormat};

mod json;

/// Size of the writer thread's buffer: lines queued while it writes are sent together.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// Installs the global subscriber. Fails only on an invalid RUST_LOG filter.
///
/// Keep the returned guard until the process exits: dropping it writes the lines still queued.
pub fn init(config: &Config) -> Result<WorkerGuard, ConfigError> {
    let filter = EnvFilter::try_new(&config.rust_log).map_err(|err| ConfigError {
        variable: "RUST_LOG",
        reason: format!("{:?} is not a valid filter: {err}", config.rust_log),
    })?;
    let ansi = std::io::stdout().is_terminal();
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("log-writer")
        .finish(BufWriter::with_capacity(
            WRITE_BUFFER_BYTES,
            std::io::stdout(),
        ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .fmt_fields(json::JsonFields)
            .event_format(json::JsonLines)
            .init(),
    }
    Ok(guard)
}
