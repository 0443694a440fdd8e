//! The PostgreSQL back end: tokio-postgres, with a deadpool pool for writes and transactions
//! and a few shared, pipelined clients for reads (see [`shared`]).
//!
//! A pooled connection that broke (the server restarted, the network was cut) is dropped when
//! it is next checked out and a new one is opened, so the service recovers without a restart.
//! Only the requests in flight on a broken connection fail, and they fail as unavailable.

mod errors;
mod shared;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use prometheus_client::metrics::histogram::Histogram;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls, Row};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::config::PostgresSettings;
use super::{PoolSettings, PoolStatus, StoreError, migrations, tls};
use crate::domain::{NewUser, User, UserId, UserPatch};
use errors::{classify, classify_pool_error, is_unavailable};
use shared::SharedReads;

/// Serializes migrations across replicas that start at once (an arbitrary constant key).
const MIGRATION_LOCK_KEY: i64 = 0x7065_7265_6772_696e;

/// Maximum time of one connection attempt; the start retries attempts up to the connect
/// timeout.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

const USER_COLUMNS: &str = "id, name, email, created_at";
const GET_USER: &str = "SELECT id, name, email, created_at FROM users WHERE id = $1";
const LIST_USERS: &str =
    "SELECT id, name, email, created_at FROM users WHERE id > $1 ORDER BY id LIMIT $2";

#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    pool_wait: Histogram,
    /// `None` when reads use the pool (DB_READ_CLIENTS=0).
    reads: Option<Arc<SharedReads>>,
}

/// Makes connections with the service's settings and TLS, for the shared read clients.
#[derive(Clone)]
pub struct Connector {
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
}

impl Connector {
    /// Opens a connection and drives it on its own task, which finishes when it closes.
    async fn connect(&self) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
        match &self.tls {
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                Ok((client, tokio::spawn(drive(connection))))
            }
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                Ok((client, tokio::spawn(drive(connection))))
            }
        }
    }
}

async fn drive<F: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(connection: F) {
    if let Err(err) = connection.await {
        tracing::warn!(error = %err, "PostgreSQL connection failed");
    }
}

impl PostgresStore {
    /// Builds the pool, waits with backoff until the server responds to a ping, and opens
    /// the shared read clients.
    pub async fn connect(
        settings: &PostgresSettings,
        limits: &PoolSettings,
        pool_wait: Histogram,
    ) -> anyhow::Result<Self> {
        let mut config = settings.config.clone();
        config.ssl_mode(tls::postgres_ssl_mode(settings.ssl_mode));
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(ATTEMPT_TIMEOUT.min(limits.connect_timeout));
        }
        if config.get_application_name().is_none() {
            config.application_name("peregrine");
        }
        // Sent at connection start, so it holds on every connection without a round trip.
        let timeout_ms = limits.statement_timeout.as_millis().max(1);
        let options = config.get_options().map(str::to_owned).unwrap_or_default();
        config.options(format!("{options} -c statement_timeout={timeout_ms}").trim_start());
        let tls = tls::client_config(settings.ssl_mode, settings.ssl_root_cert.as_deref())?
            .map(MakeRustlsConnect::new);
        let connector = Connector {
            config: config.clone(),
            tls: tls.clone(),
        };

        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls {
            None => Manager::from_config(config, NoTls, manager_config),
            Some(tls) => Manager::from_config(config, tls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(limits.max_connections as usize)
            .wait_timeout(Some(limits.acquire_timeout))
            .create_timeout(Some(ATTEMPT_TIMEOUT.min(limits.connect_timeout)))
            .recycle_timeout(Some(limits.acquire_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .context("failed to build the PostgreSQL pool")?;

        let mut store = PostgresStore {
            pool,
            pool_wait,
            reads: None,
        };
        store.wait_until_reachable(limits.connect_timeout).await?;
        if limits.read_clients > 0 {
            let reads = SharedReads::start(connector, limits.read_clients as usize)
                .await
                .context("failed to open the shared read connections")?;
            store.reads = Some(reads);
        }
        Ok(store)
    }

    /// Pings until the server responds, doubling the pause between attempts up to 2 s.
    async fn wait_until_reachable(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(100);
        for attempt in 1.. {
            let err = match self.ping().await {
                Ok(()) => return Ok(()),
                Err(err) => err,
            };
            if !matches!(err, StoreError::Unavailable(_)) || Instant::now() + pause > deadline {
                return Err(anyhow::Error::new(err))
                    .with_context(|| format!("PostgreSQL did not answer within {timeout:?}"));
            }
            tracing::warn!(attempt, error = %err, retry_in = ?pause, "database not reachable yet");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
        unreachable!("the retry loop returns")
    }

    /// Checks a connection out of the pool, recording the wait.
    async fn client(&self) -> Result<Object, StoreError> {
        let started = Instant::now();
        let client = self.pool.get().await;
        self.pool_wait.observe(started.elapsed().as_secs_f64());
        client.map_err(classify_pool_error)
    }

    pub fn pool_status(&self) -> PoolStatus {
        let status = self.pool.status();
        PoolStatus {
            max: status.max_size,
            in_use: status.size.saturating_sub(status.available),
            idle: status.available,
        }
    }

    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(classify)?;
        transaction
            .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
            .await
            .map_err(classify)?;
        transaction
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version bigint PRIMARY KEY,
                     name text NOT NULL,
                     applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .await
            .map_err(classify)?;
        let applied: Vec<i64> = transaction
            .query("SELECT version FROM schema_migrations", &[])
            .await
            .map_err(classify)?
            .iter()
            .map(|row| row.get(0))
            .collect();

        let mut count = 0;
        for migration in migrations::POSTGRES
            .iter()
            .filter(|m| !applied.contains(&m.version))
        {
            transaction
                .batch_execute(migration.sql)
                .await
                .map_err(classify)?;
            transaction
                .execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    &[&migration.version, &migration.name],
                )
                .await
                .map_err(classify)?;
            tracing::info!(
                version = migration.version,
                name = migration.name,
                "applied migration"
            );
            count += 1;
        }
        transaction.commit().await.map_err(classify)?;
        Ok(count)
    }

    /// Returns the versions recorded in `schema_migrations`, none when the table is missing.
    pub async fn applied_migrations(&self) -> Result<Vec<i64>, StoreError> {
        let client = self.client().await?;
        let exists: bool = client
            .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
            .await
            .map_err(classify)?
            .get(0);
        if !exists {
            return Ok(Vec::new());
        }
        let rows = client
            .query("SELECT version FROM schema_migrations", &[])
            .await
            .map_err(classify)?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.map_err(classify)?;
        Ok(())
    }

    pub async fn create_user(&self, user: &NewUser) -> Result<User, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "INSERT INTO users (name, email, email_lower) VALUES ($1, $2, $3) \
                 RETURNING {USER_COLUMNS}"
            ))
            .await
            .map_err(classify)?;
        let row = client
            .query_one(
                &statement,
                &[
                    &user.name.as_str(),
                    &user.email.as_str(),
                    &user.email.lowercase(),
                ],
            )
            .await
            .map_err(classify)?;
        user_from_row(&row)
    }

    pub async fn get_user(&self, id: UserId) -> Result<User, StoreError> {
        if let Some(shared) = self.reads.as_ref().and_then(|reads| reads.pick()) {
            let row = match shared.statements().await {
                Ok(statements) => {
                    shared
                        .client
                        .query_opt(&statements.get_user, &[&id.get()])
                        .await
                }
                Err(err) => Err(err),
            };
            match row {
                Ok(row) => return row.map_or(Err(StoreError::NotFound), |row| user_from_row(&row)),
                Err(err) if is_unavailable(&err) => log_shared_read_retry(&err),
                Err(err) => return Err(classify(err)),
            }
        }

        let client = self.client().await?;
        let statement = client.prepare_cached(GET_USER).await.map_err(classify)?;
        match client
            .query_opt(&statement, &[&id.get()])
            .await
            .map_err(classify)?
        {
            Some(row) => user_from_row(&row),
            None => Err(StoreError::NotFound),
        }
    }

    pub async fn list_users(
        &self,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<User>, StoreError> {
        let after = after.map_or(0, UserId::get);
        let limit = i64::from(limit);
        if let Some(shared) = self.reads.as_ref().and_then(|reads| reads.pick()) {
            let rows = match shared.statements().await {
                Ok(statements) => {
                    shared
                        .client
                        .query(&statements.list_users, &[&after, &limit])
                        .await
                }
                Err(err) => Err(err),
            };
            match rows {
                Ok(rows) => return rows.iter().map(user_from_row).collect(),
                Err(err) if is_unavailable(&err) => log_shared_read_retry(&err),
                Err(err) => return Err(classify(err)),
            }
        }

        let client = self.client().await?;
        let statement = client.prepare_cached(LIST_USERS).await.map_err(classify)?;
        let rows = client
            .query(&statement, &[&after, &limit])
            .await
            .map_err(classify)?;
        rows.iter().map(user_from_row).collect()
    }

    pub async fn update_user(&self, id: UserId, patch: &UserPatch) -> Result<User, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "UPDATE users SET name = COALESCE($2, name), email = COALESCE($3, email), \
                 email_lower = COALESCE($4, email_lower), updated_at = now() \
                 WHERE id = $1 RETURNING {USER_COLUMNS}"
            ))
            .await
            .map_err(classify)?;
        let name = patch.name.as_ref().map(|name| name.as_str());
        let email = patch.email.as_ref().map(|email| email.as_str());
        let email_lower = patch.email.as_ref().map(|email| email.lowercase());
        match client
            .query_opt(&statement, &[&id.get(), &name, &email, &email_lower])
            .await
            .map_err(classify)?
        {
            Some(row) => user_from_row(&row),
            None => Err(StoreError::NotFound),
        }
    }

    pub async fn delete_user(&self, id: UserId) -> Result<(), StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("DELETE FROM users WHERE id = $1")
            .await
            .map_err(classify)?;
        match client
            .execute(&statement, &[&id.get()])
            .await
            .map_err(classify)?
        {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    pub fn close(&self) {
        if let Some(reads) = &self.reads {
            reads.close();
        }
        self.pool.close();
    }
}

fn user_from_row(row: &Row) -> Result<User, StoreError> {
    let read = || -> Result<User, tokio_postgres::Error> {
        Ok(User {
            id: UserId::from_database(row.try_get("id")?),
            name: row.try_get("name")?,
            email: row.try_get("email")?,
            created_at: row.try_get("created_at")?,
        })
    };
    read().map_err(|err| StoreError::Internal(err.into()))
}

/// Reads are idempotent, so a read whose shared connection was lost is retried once on the
/// pool; the shared slot is being replaced meanwhile.
fn log_shared_read_retry(err: &tokio_postgres::Error) {
    tracing::warn!(error = %err, "shared read connection lost; retrying the read on the pool");
}
