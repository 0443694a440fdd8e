//! Persistence: one interface, [`Store`], over two back ends that behave identically.
//!
//! The store deals in SQL and the domain types, never in HTTP. Every back-end error is classified
//! into a [`StoreError`] here, so handlers decide a status from the kind of failure alone.

mod config;
mod migrations;
mod postgres;
mod sqlite;
mod tls;

use std::time::Duration;

pub use config::{DatabaseConfig, SslMode};

use crate::domain::{NewUser, User, UserId, UserPatch};
use postgres::PostgresStore;
use sqlite::SqliteStore;

/// Pool sizing and waiting limits shared by both back ends.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Connections in the PostgreSQL pool.
    pub max_connections: u32,
    /// Shared, pipelined PostgreSQL connections for reads; 0 sends reads through the pool.
    pub read_clients: u32,
    /// Maximum wait for a free connection before the operation fails as unavailable.
    pub acquire_timeout: Duration,
    /// Maximum time the start retries an unreachable database before it gives up.
    pub connect_timeout: Duration,
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

/// The store, on one of its back ends. Handlers call its methods and never name a back end.
#[derive(Clone)]
pub enum Store {
    Postgres(PostgresStore),
    Sqlite(SqliteStore),
}

impl Store {
    /// Opens the database `config` names, waiting for it up to the connect timeout.
    pub async fn connect(config: &DatabaseConfig, pool: &PoolSettings) -> anyhow::Result<Store> {
        match config {
            DatabaseConfig::Postgres(settings) => Ok(Store::Postgres(
                PostgresStore::connect(settings, pool).await?,
            )),
            DatabaseConfig::Sqlite { path } => {
                Ok(Store::Sqlite(SqliteStore::open(path, pool).await?))
            }
        }
    }

    /// Returns the back end's name, for logs.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgres",
            Store::Sqlite(_) => "sqlite",
        }
    }

    /// Applies pending migrations and returns how many ran.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        match self {
            Store::Postgres(store) => store.migrate().await,
            Store::Sqlite(store) => store.migrate().await,
        }
    }

    /// Checks that the database responds to a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(store) => store.ping().await,
            Store::Sqlite(store) => store.ping().await,
        }
    }

    /// Inserts a user; a taken email address (compared case-insensitively) is a conflict.
    pub async fn create_user(&self, user: &NewUser) -> Result<User, StoreError> {
        match self {
            Store::Postgres(store) => store.create_user(user).await,
            Store::Sqlite(store) => store.create_user(user).await,
        }
    }

    pub async fn get_user(&self, id: UserId) -> Result<User, StoreError> {
        match self {
            Store::Postgres(store) => store.get_user(id).await,
            Store::Sqlite(store) => store.get_user(id).await,
        }
    }

    /// Returns up to `limit` users with ids above `after`, in id order.
    pub async fn list_users(
        &self,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<User>, StoreError> {
        match self {
            Store::Postgres(store) => store.list_users(after, limit).await,
            Store::Sqlite(store) => store.list_users(after, limit).await,
        }
    }

    /// Replaces the fields `patch` sets and returns the user as it is afterwards.
    pub async fn update_user(&self, id: UserId, patch: &UserPatch) -> Result<User, StoreError> {
        match self {
            Store::Postgres(store) => store.update_user(id, patch).await,
            Store::Sqlite(store) => store.update_user(id, patch).await,
        }
    }

    pub async fn delete_user(&self, id: UserId) -> Result<(), StoreError> {
        match self {
            Store::Postgres(store) => store.delete_user(id).await,
            Store::Sqlite(store) => store.delete_user(id).await,
        }
    }

    /// Closes every connection; operations after this fail as unavailable.
    pub async fn close(&self) {
        match self {
            Store::Postgres(store) => store.close(),
            Store::Sqlite(store) => store.close().await,
        }
    }
}
