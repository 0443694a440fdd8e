//! peregrine: a users API over PostgreSQL or an embedded SQLite database.
//!
//! The binary is a thin wrapper around [`serve`] and [`migrate`]; tests start the same
//! server through [`server::Application`] on an ephemeral port.

pub mod admin;
pub mod allocator;
pub mod config;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod middleware;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod telemetry;

use std::future::Future;
use std::time::Duration;

use config::Config;
use server::Application;

/// Opens the database, applies migrations (unless turned off), and serves until `shutdown`
/// completes, then drains and closes.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    app.run_until(shutdown).await
}

/// Applies every pending migration and returns.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let database = config.database()?;
    // Migrations write through the pool; shared read connections would sit unused.
    let pool = store::PoolSettings {
        read_clients: 0,
        ..config.pool_settings()
    };
    let store =
        store::Store::connect(&database, &pool, metrics::Metrics::new().store.clone()).await?;
    let applied = store.migrate().await?;
    tracing::info!(
        applied,
        backend = store.backend_name(),
        "migrations applied"
    );
    store.close(Duration::ZERO).await;
    Ok(())
}
