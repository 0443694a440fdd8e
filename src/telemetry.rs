//! Logging set-up: tracing with an EnvFilter, as text for people or JSON for log collectors,
//! written to standard output by a background thread.
//!
//! Request threads format each line; the writer thread in [`writer`] writes them to standard
//! output in batches.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{Config, ConfigError, LogFormat};

#[cfg(test)]
mod capture;
mod json;
pub mod request;
mod text;
mod writer;

pub use writer::{LineSender, WriterGuard};

/// Starts the writer thread on standard output.
///
/// Keep the returned guard until the process exits: dropping it writes the lines still queued.
pub fn start_writer() -> std::io::Result<(LineSender, WriterGuard)> {
    writer::spawn(std::io::stdout())
}

/// Installs the global subscriber, writing to `writer`. Fails only on an invalid RUST_LOG
/// filter.
pub fn init(config: &Config, writer: LineSender) -> Result<(), ConfigError> {
    let filter = EnvFilter::try_new(&config.rust_log).map_err(|err| ConfigError {
        variable: "RUST_LOG",
        reason: format!("{:?} is not a valid filter: {err}", config.rust_log),
    })?;
    let ansi = std::io::stdout().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match config.log_format {
        LogFormat::Text => builder.event_format(text::TextLines::new(ansi)).init(),
        LogFormat::Json => builder
            .fmt_fields(json::JsonFields)
            .event_format(json::JsonLines)
            .init(),
    }
    Ok(())
}
