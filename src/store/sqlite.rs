//! The SQLite back end: rusqlite with the bundled library, in WAL mode, run on tokio's blocking
//! thread pool.
//!
//! All writes go through one writer connection, so two writes never contend for SQLite's
//! write lock inside the process and no request fails with "database is locked". Reads use a
//! few reader connections, which WAL lets run beside the writer. The busy timeout covers other
//! processes on the same file, such as `peregrine migrate`.

mod orders;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use prometheus_client::metrics::histogram::Histogram;
use rusqlite::{Connection, ErrorCode, Row, TransactionBehavior, params};
use time::OffsetDateTime;
use tokio::sync::Semaphore;

use super::{PoolSettings, PoolStatus, StoreError, migrations};
use crate::domain::{NewUser, User, UserId, UserPatch};

/// Maximum reader connections, opened as reads need them; WAL readers do not block each other
/// or the writer.
const READERS: usize = 4;

const USER_COLUMNS: &str = "id, name, email, created_at";

#[derive(Clone)]
pub struct SqliteStore {
    writer: Arc<ConnectionPool>,
    readers: Arc<ConnectionPool>,
    acquire_timeout: Duration,
    pool_wait: Histogram,
}

impl SqliteStore {
    /// Opens (or creates) the database file with its writer connection. Reader connections
    /// are opened on first use, which keeps the start fast.
    pub async fn open(
        path: &Path,
        limits: &PoolSettings,
        pool_wait: Histogram,
    ) -> anyhow::Result<Self> {
        let path = path.to_owned();
        let acquire_timeout = limits.acquire_timeout;
        tokio::task::spawn_blocking(move || {
            let writer = open_connection(&path, false, acquire_timeout).with_context(|| {
                format!("failed to open the SQLite database {}", path.display())
            })?;
            Ok(SqliteStore {
                writer: Arc::new(ConnectionPool::new(
                    &path,
                    false,
                    1,
                    Some(writer),
                    acquire_timeout,
                )),
                readers: Arc::new(ConnectionPool::new(
                    &path,
                    true,
                    READERS,
                    None,
                    acquire_timeout,
                )),
                acquire_timeout,
                pool_wait,
            })
        })
        .await
        .context("opening the SQLite database panicked")?
    }

    pub async fn migrate(&self) -> Result<usize, StoreError> {
        self.write(|connection| {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            transaction.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version INTEGER PRIMARY KEY,
                     name TEXT NOT NULL,
                     applied_at INTEGER NOT NULL)",
            )?;
            let applied: Vec<i64> = transaction
                .prepare("SELECT version FROM schema_migrations")?
                .query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()?;

            let mut count = 0;
            for migration in migrations::SQLITE
                .iter()
                .filter(|m| !applied.contains(&m.version))
            {
                transaction.execute_batch(migration.sql)?;
                transaction.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                    params![migration.version, migration.name, now_micros()],
                )?;
                tracing::info!(
                    version = migration.version,
                    name = migration.name,
                    "applied migration"
                );
                count += 1;
            }
            transaction.commit()?;
            Ok(count)
        })
        .await
    }

    /// Returns the versions recorded in `schema_migrations`, none when the table is missing.
    pub async fn applied_migrations(&self) -> Result<Vec<i64>, StoreError> {
        self.read(|connection| {
            let exists: bool = connection.query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations')",
                [],
                |row| row.get(0),
            )?;
            if !exists {
                return Ok(Vec::new());
            }
            connection
                .prepare("SELECT version FROM schema_migrations")?
                .query_map([], |row| row.get(0))?
                .collect()
        })
        .await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.read(|connection| connection.query_row("SELECT 1", [], |_| Ok(())))
            .await
    }

    pub async fn create_user(&self, user: &NewUser) -> Result<User, StoreError> {
        let (name, email, email_lower) = (
            user.name.as_str().to_owned(),
            user.email.as_str().to_owned(),
            user.email.lowercase().to_owned(),
        );
        self.write(move |connection| {
            let now = now_micros();
            connection
                .prepare_cached(&format!(
                    "INSERT INTO users (name, email, email_lower, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?4) RETURNING {USER_COLUMNS}"
                ))?
                .query_row(params![name, email, email_lower, now], user_from_row)
        })
        .await
    }

    pub async fn get_user(&self, id: UserId) -> Result<User, StoreError> {
        self.read(move |connection| {
            connection
                .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))?
                .query_row([id.get()], user_from_row)
        })
        .await
    }

    pub async fn list_users(
        &self,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<User>, StoreError> {
        let after = after.map_or(0, UserId::get);
        self.read(move |connection| {
            connection
                .prepare_cached(&format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE id > ?1 ORDER BY id LIMIT ?2"
                ))?
                .query_map(params![after, limit], user_from_row)?
                .collect()
        })
        .await
    }

    pub async fn update_user(&self, id: UserId, patch: &UserPatch) -> Result<User, StoreError> {
        let name = patch.name.as_ref().map(|name| name.as_str().to_owned());
        let email = patch.email.as_ref().map(|email| email.as_str().to_owned());
        let email_lower = patch
            .email
            .as_ref()
            .map(|email| email.lowercase().to_owned());
        self.write(move |connection| {
            connection
                .prepare_cached(&format!(
                    "UPDATE users SET name = COALESCE(?2, name), email = COALESCE(?3, email), \
                     email_lower = COALESCE(?4, email_lower), updated_at = ?5 \
                     WHERE id = ?1 RETURNING {USER_COLUMNS}"
                ))?
                .query_row(
                    params![id.get(), name, email, email_lower, now_micros()],
                    user_from_row,
                )
        })
        .await
    }

    pub async fn delete_user(&self, id: UserId) -> Result<(), StoreError> {
        let deleted = self
            .write(move |connection| {
                connection
                    .prepare_cached("DELETE FROM users WHERE id = ?1")?
                    .execute([id.get()])
            })
            .await?;
        match deleted {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    /// Returns the connections of both pools: the writer and the readers.
    pub fn pool_status(&self) -> PoolStatus {
        let (writer, readers) = (self.writer.status(), self.readers.status());
        PoolStatus {
            max: writer.max + readers.max,
            in_use: writer.in_use + readers.in_use,
            idle: writer.idle + readers.idle,
        }
    }

    /// Closes every connection once the operations in flight have returned theirs, waiting at
    /// most `wait` in all.
    pub async fn close(&self, wait: Duration) {
        let deadline = Instant::now() + wait;
        for pool in [&self.writer, &self.readers] {
            pool.close(deadline.saturating_duration_since(Instant::now()))
                .await;
        }
    }

    async fn read<T, F>(&self, operation: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.readers
            .run(self.acquire_timeout, &self.pool_wait, operation)
            .await
    }

    async fn write<T, F>(&self, operation: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.writer
            .run(self.acquire_timeout, &self.pool_wait, operation)
            .await
    }
}

/// Up to `size` connections to one file, each lent to one blocking task at a time.
///
/// Invariant: the semaphore has `size` permits and every open connection not in `idle` is
/// held by a permit holder, so a task with a permit finds an idle connection or may open one.
struct ConnectionPool {
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    size: usize,
    path: PathBuf,
    read_only: bool,
    busy_timeout: Duration,
}

impl ConnectionPool {
    fn new(
        path: &Path,
        read_only: bool,
        size: usize,
        first: Option<Connection>,
        busy_timeout: Duration,
    ) -> Self {
        ConnectionPool {
            idle: Mutex::new(first.into_iter().collect()),
            permits: Arc::new(Semaphore::new(size)),
            size,
            path: path.to_owned(),
            read_only,
            busy_timeout,
        }
    }

    /// Runs `operation` on a free connection on the blocking thread pool. The connection goes
    /// back to the pool inside the blocking task, so a caller that stops waiting (a request that
    /// timed out) cannot lose it.
    async fn run<T, F>(
        self: &Arc<Self>,
        acquire_timeout: Duration,
        wait: &Histogram,
        operation: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let started = Instant::now();
        let acquired =
            tokio::time::timeout(acquire_timeout, self.permits.clone().acquire_owned()).await;
        wait.observe(started.elapsed().as_secs_f64());
        let permit = match acquired {
            Ok(Ok(permit)) => permit,
            Ok(Err(_closed)) => {
                return Err(StoreError::Unavailable("the database is closed".into()));
            }
            Err(_elapsed) => {
                return Err(StoreError::Unavailable(
                    format!("no free SQLite connection within {acquire_timeout:?}").into(),
                ));
            }
        };

        let pool = Arc::clone(self);
        let task = tokio::task::spawn_blocking(move || {
            let mut connection = pool.take()?;
            let result = panic::catch_unwind(AssertUnwindSafe(|| operation(&mut connection)));
            pool.give_back(connection);
            drop(permit);
            result.unwrap_or_else(|payload| panic::resume_unwind(payload))
        });
        match task.await {
            Ok(result) => result.map_err(classify),
            Err(err) => Err(StoreError::Internal(err.into())),
        }
    }

    fn status(&self) -> PoolStatus {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len();
        let in_use = self.size.saturating_sub(self.permits.available_permits());
        PoolStatus {
            max: self.size,
            in_use,
            idle,
        }
    }

    /// Takes an idle connection, or opens one when none is idle.
    fn take(&self) -> rusqlite::Result<Connection> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        match idle {
            Some(connection) => Ok(connection),
            None => open_connection(&self.path, self.read_only, self.busy_timeout),
        }
    }

    fn give_back(&self, connection: Connection) {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(connection);
    }

    /// Waits up to `timeout` for every connection to come back, then closes them all.
    async fn close(&self, timeout: Duration) {
        let size = u32::try_from(self.size).unwrap_or(u32::MAX);
        let all = tokio::time::timeout(timeout, self.permits.acquire_many(size)).await;
        self.permits.close();
        let connections = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        drop(connections);
        if all.is_err() {
            tracing::warn!("closed the SQLite database with operations still running");
        }
    }
}

/// Opens a connection; `busy_timeout` bounds how long a statement waits for a lock that
/// another process holds.
fn open_connection(
    path: &Path,
    read_only: bool,
    busy_timeout: Duration,
) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(busy_timeout)?;
    if read_only {
        // WAL mode is a property of the file, set by the writer, which opens first.
        connection.pragma_update(None, "query_only", "ON")?;
    } else {
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
    }
    connection.pragma_update(None, "foreign_keys", "ON")?;
    Ok(connection)
}

fn now_micros() -> i64 {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(nanos / 1000).expect("microseconds since 1970 fit in i64 until year 294247")
}

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    let micros: i64 = row.get("created_at")?;
    let created_at =
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).map_err(|err| {
            rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Integer, err.into())
        })?;
    Ok(User {
        id: UserId::from_database(row.get("id")?),
        name: row.get("name")?,
        email: row.get("email")?,
        created_at,
    })
}

/// Sorts a rusqlite error: no row is not found, the email unique index is a conflict, a
/// lock held past the busy timeout is unavailable, and the rest is internal.
fn classify(err: rusqlite::Error) -> StoreError {
    match &err {
        rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
        rusqlite::Error::SqliteFailure(failure, message) => match failure.code {
            ErrorCode::ConstraintViolation
                if message
                    .as_deref()
                    .is_some_and(|m| m.contains("users.email_lower")) =>
            {
                StoreError::Conflict { field: "email" }
            }
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                StoreError::Unavailable(err.into())
            }
            _ => StoreError::Internal(err.into()),
        },
        _ => StoreError::Internal(err.into()),
    }
}
