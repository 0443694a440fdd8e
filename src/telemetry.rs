//! Logging set-up: tracing with an EnvFilter, as text for people or JSON for log collectors.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{Config, ConfigError, LogFormat};

/// Installs the global subscriber. Fails only on an invalid RUST_LOG filter.
pub fn init(config: &Config) -> Result<(), ConfigError> {
    let filter = EnvFilter::try_new(&config.rust_log).map_err(|err| ConfigError {
        variable: "RUST_LOG",
        reason: format!("{:?} is not a valid filter: {err}", config.rust_log),
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal());
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
    Ok(())
}
