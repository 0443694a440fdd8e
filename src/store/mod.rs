//! Persistence: one interface, [`Store`], over two back ends that behave identically.
//!
//! The store deals in SQL and the domain types, never in HTTP. Every back-end error is classified
//! into a [`StoreError`] here, so handlers decide a status from the kind of failure alone.

mod config;
mod migrations;
mod orders;
mod postgres;
mod sqlite;
mod tls;

use std::future::Future;
use std::time::{Duration, Instant};

pub use config::{DatabaseConfig, SslMode};
pub use orders::{ExpectedVersion, Profile, ProfileError, PutPreferences};

use crate::domain::{NewUser, User, UserId, UserPatch};
use crate::metrics::{QueryLabels, StoreMetrics};
use postgres::PostgresStore;
use sqlite::SqliteStore;

/// Pool sizing and waiting limits shared by both back ends.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Connections in the PostgreSQL pool.
    pub max_connections: u32,
    /// Whether PostgreSQL statements are prepared and cached per connection (named), or sent
    /// unnamed, which PgBouncer's transaction pooling needs.
    pub prepared_statements: bool,
    /// Time after which PostgreSQL cancels a statement.
    pub statement_timeout: Duration,
    /// Shared, pipelined PostgreSQL connections for reads; 0 sends reads through the pool.
    pub read_clients: u32,
    /// Maximum wait for a free connection before the operation fails as unavailable (and, on
    /// SQLite, for a lock held by another process).
    pub acquire_timeout: Duration,
    /// Maximum time the start retries an unreachable database before it gives up.
    pub connect_timeout: Duration,
    /// Maximum time of a whole profile fetch ([`Store::get_profile`]).
    pub profile_timeout: Duration,
}

/// A failed store operation, classified by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No row matched.
    #[error("not found")]
    NotFound,
    /// A unique constraint rejected the write; the field is the one the constraint covers.
    #[error("{field} is already taken")]
    Conflict { field: &'static str },
    /// The database cannot be reached or has no free connection; a retry may succeed.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// Anything else: a bug or a schema mismatch.
    #[error("database error: {0}")]
    Internal(#[source] BoxError),
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The store, on one of its back ends. Handlers call its methods and never name a back end;
/// every operation's time is recorded under its name in `db_query_duration_seconds`.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    metrics: StoreMetrics,
    profile_timeout: Duration,
}

#[derive(Clone)]
enum Backend {
    Postgres(PostgresStore),
    Sqlite(SqliteStore),
}

/// Connections of the pool behind the store, for the pool gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    pub max: usize,
    pub in_use: usize,
    pub idle: usize,
}

impl Store {
    /// Opens the database `config` names, waiting for it up to the connect timeout.
    pub async fn connect(
        config: &DatabaseConfig,
        pool: &PoolSettings,
        metrics: StoreMetrics,
    ) -> anyhow::Result<Store> {
        let backend = match config {
            DatabaseConfig::Postgres(settings) => Backend::Postgres(
                PostgresStore::connect(settings, pool, metrics.pool_wait.clone()).await?,
            ),
            DatabaseConfig::Sqlite { path } => {
                Backend::Sqlite(SqliteStore::open(path, pool, metrics.pool_wait.clone()).await?)
            }
        };
        metrics
            .pool_max
            .set(i64::try_from(backend_pool_status(&backend).max).unwrap_or(i64::MAX));
        Ok(Store {
            backend,
            metrics,
            profile_timeout: pool.profile_timeout,
        })
    }

    /// Returns the back end's name, for logs.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Postgres(_) => "postgres",
            Backend::Sqlite(_) => "sqlite",
        }
    }

    /// Returns how many pooled connections exist and how many are in use.
    pub fn pool_status(&self) -> PoolStatus {
        backend_pool_status(&self.backend)
    }

    /// Sets the pool gauges from the pool's current state.
    pub fn record_pool_status(&self) {
        let status = self.pool_status();
        let set = |state, value: usize| {
            self.metrics
                .pool_connections
                .get_or_create(&crate::metrics::StateLabels { state })
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        set("in_use", status.in_use);
        set("idle", status.idle);
    }

    /// Applies pending migrations and returns how many ran.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        match &self.backend {
            Backend::Postgres(store) => store.migrate().await,
            Backend::Sqlite(store) => store.migrate().await,
        }
    }

    /// Returns how many migrations the database lacks.
    pub async fn pending_migrations(&self) -> Result<usize, StoreError> {
        let (applied, known) = match &self.backend {
            Backend::Postgres(store) => (store.applied_migrations().await?, migrations::POSTGRES),
            Backend::Sqlite(store) => (store.applied_migrations().await?, migrations::SQLITE),
        };
        Ok(known
            .iter()
            .filter(|migration| !applied.contains(&migration.version))
            .count())
    }

    /// Checks that the database responds to a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.timed("ping", async {
            match &self.backend {
                Backend::Postgres(store) => store.ping().await,
                Backend::Sqlite(store) => store.ping().await,
            }
        })
        .await
    }

    /// Inserts a user; a taken email address (compared case-insensitively) is a conflict.
    pub async fn create_user(&self, user: &NewUser) -> Result<User, StoreError> {
        self.timed("create_user", async {
            match &self.backend {
                Backend::Postgres(store) => store.create_user(user).await,
                Backend::Sqlite(store) => store.create_user(user).await,
            }
        })
        .await
    }

    pub async fn get_user(&self, id: UserId) -> Result<User, StoreError> {
        self.timed("get_user", async {
            match &self.backend {
                Backend::Postgres(store) => store.get_user(id).await,
                Backend::Sqlite(store) => store.get_user(id).await,
            }
        })
        .await
    }

    /// Returns up to `limit` users with ids above `after`, in id order.
    pub async fn list_users(
        &self,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<User>, StoreError> {
        self.timed("list_users", async {
            match &self.backend {
                Backend::Postgres(store) => store.list_users(after, limit).await,
                Backend::Sqlite(store) => store.list_users(after, limit).await,
            }
        })
        .await
    }

    /// Replaces the fields `patch` sets and returns the user as it is afterwards.
    pub async fn update_user(&self, id: UserId, patch: &UserPatch) -> Result<User, StoreError> {
        self.timed("update_user", async {
            match &self.backend {
                Backend::Postgres(store) => store.update_user(id, patch).await,
                Backend::Sqlite(store) => store.update_user(id, patch).await,
            }
        })
        .await
    }

    pub async fn delete_user(&self, id: UserId) -> Result<(), StoreError> {
        self.timed("delete_user", async {
            match &self.backend {
                Backend::Postgres(store) => store.delete_user(id).await,
                Backend::Sqlite(store) => store.delete_user(id).await,
            }
        })
        .await
    }

    /// Closes every connection, waiting at most `wait` for operations in flight; operations
    /// after this fail as unavailable.
    pub async fn close(&self, wait: Duration) {
        match &self.backend {
            Backend::Postgres(store) => store.close(),
            Backend::Sqlite(store) => store.close(wait).await,
        }
    }

    /// Runs `operation` and records its time under `query`, whatever its outcome.
    async fn timed<T>(&self, query: &'static str, operation: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let result = operation.await;
        self.metrics
            .queries
            .get_or_create(&QueryLabels { query })
            .observe(started.elapsed().as_secs_f64());
        result
    }
}

fn backend_pool_status(backend: &Backend) -> PoolStatus {
    match backend {
        Backend::Postgres(store) => store.pool_status(),
        Backend::Sqlite(store) => store.pool_status(),
    }
}
