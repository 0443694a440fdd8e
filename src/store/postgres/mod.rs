//! The PostgreSQL back end: tokio-postgres behind a deadpool pool, with a statement cache per
//! connection.
//!
//! A connection that broke (the server restarted, the network was cut) is dropped when it is
//! next checked out and a new one is opened, so the service recovers without a restart; only
//! the requests in flight on the broken connection fail, as unavailable.

use std::time::{Duration, Instant};

use anyhow::Context;
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Row};

use super::config::PostgresSettings;
use super::{PoolSettings, StoreError, migrations, tls};
use crate::domain::{NewUser, User, UserId, UserPatch};

/// Serializes migrations across replicas that start at once (an arbitrary constant key).
const MIGRATION_LOCK_KEY: i64 = 0x7065_7265_6772_696e;

/// Longest single connection attempt; the start retries attempts up to the connect timeout.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

const USER_COLUMNS: &str = "id, name, email, created_at";

#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
}

impl PostgresStore {
    /// Builds the pool and waits, with backoff, until the server answers a ping.
    pub async fn connect(
        settings: &PostgresSettings,
        limits: &PoolSettings,
    ) -> anyhow::Result<Self> {
        let mut config = settings.config.clone();
        config.ssl_mode(tls::postgres_ssl_mode(settings.ssl_mode));
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(ATTEMPT_TIMEOUT.min(limits.connect_timeout));
        }
        if config.get_application_name().is_none() {
            config.application_name("peregrine");
        }

        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager =
            match tls::client_config(settings.ssl_mode, settings.ssl_root_cert.as_deref())? {
                None => Manager::from_config(config, NoTls, manager_config),
                Some(tls_config) => Manager::from_config(
                    config,
                    tokio_postgres_rustls::MakeRustlsConnect::new(tls_config),
                    manager_config,
                ),
            };
        let pool = Pool::builder(manager)
            .max_size(limits.max_connections as usize)
            .wait_timeout(Some(limits.acquire_timeout))
            .create_timeout(Some(ATTEMPT_TIMEOUT.min(limits.connect_timeout)))
            .recycle_timeout(Some(limits.acquire_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .context("failed to build the PostgreSQL pool")?;

        let store = PostgresStore { pool };
        store.wait_until_reachable(limits.connect_timeout).await?;
        Ok(store)
    }

    /// Pings until the server answers, doubling the pause between attempts up to 2 s.
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

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(classify_pool_error)
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
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .await
            .map_err(classify)?;
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
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2"
            ))
            .await
            .map_err(classify)?;
        let after = after.map_or(0, UserId::get);
        let rows = client
            .query(&statement, &[&after, &i64::from(limit)])
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

fn classify_pool_error(err: PoolError) -> StoreError {
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
fn classify(err: tokio_postgres::Error) -> StoreError {
    if let Some(db) = err.as_db_error() {
        let code = db.code();
        if *code == SqlState::UNIQUE_VIOLATION && db.constraint() == Some("users_email_lower_key") {
            return StoreError::Conflict { field: "email" };
        }
        let unavailable = code.code().starts_with("08")
            || [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::TOO_MANY_CONNECTIONS,
                SqlState::QUERY_CANCELED,
            ]
            .contains(code);
        return if unavailable {
            StoreError::Unavailable(err.into())
        } else {
            StoreError::Internal(err.into())
        };
    }
    let io_failure =
        std::error::Error::source(&err).is_some_and(|source| source.is::<std::io::Error>());
    if caused_by_tls(&err) {
        // A certificate that fails verification will fail again: retrying cannot help.
        StoreError::Internal(err.into())
    } else if err.is_closed() || io_failure {
        StoreError::Unavailable(err.into())
    } else {
        StoreError::Internal(err.into())
    }
}

/// Whether a rustls error is in `err`'s cause chain, directly or inside an I/O error.
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
