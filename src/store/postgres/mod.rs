//! The PostgreSQL back end: tokio-postgres, with a deadpool pool for writes and transactions
//! and a few shared, pipelined clients for reads (see [`shared`]).
//!
//! A pooled connection that broke (the server restarted, the network was cut) is dropped when
//! it is next checked out and a new one is opened, so the service recovers without a restart.
//! Only the requests in flight on a broken connection fail, and they fail as unavailable.

mod errors;
mod orders;
mod profile;
mod shared;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use prometheus_client::metrics::histogram::Histogram;
use tokio::task::JoinHandle;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{CancelToken, Client, NoTls, Row};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::config::PostgresSettings;
use super::{PoolSettings, PoolStatus, StoreError, migrations, tls};
use crate::domain::{NewUser, User, UserId, UserPatch};
use errors::{classify, classify_pool_error, is_unavailable};
use shared::{ReadClient, SharedReads};

/// Serializes migrations across replicas that start at once (an arbitrary constant key).
const MIGRATION_LOCK_KEY: i64 = 0x7065_7265_6772_696e;

/// Maximum time of one connection attempt; the start retries attempts up to the connect
/// timeout.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// A statement and its parameter types, so that it can run prepared or unnamed.
pub struct Sql {
    pub text: &'static str,
    pub types: &'static [Type],
}

impl Sql {
    /// Pairs each parameter with its type, as unnamed statements need.
    fn typed<'a>(&self, params: &[&'a (dyn ToSql + Sync)]) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
        params
            .iter()
            .copied()
            .zip(self.types.iter().cloned())
            .collect()
    }
}

const CREATE_USER: Sql = Sql {
    text: "INSERT INTO users (name, email, email_lower) VALUES ($1, $2, $3) \
           RETURNING id, name, email, created_at",
    types: &[Type::TEXT, Type::TEXT, Type::TEXT],
};
const GET_USER: Sql = Sql {
    text: "SELECT id, name, email, created_at FROM users WHERE id = $1",
    types: &[Type::INT8],
};
const LIST_USERS: Sql = Sql {
    text: "SELECT id, name, email, created_at FROM users WHERE id > $1 ORDER BY id LIMIT $2",
    types: &[Type::INT8, Type::INT8],
};
/// The reads that run on the shared clients.
const READS: &[&Sql] = &[
    &GET_USER,
    &LIST_USERS,
    &orders::GET_ORDER,
    &orders::LIST_ORDERS,
    &orders::GET_PREFERENCES,
    &profile::NEWEST_ORDERS,
    &profile::SAVED_PREFERENCES,
];
const UPDATE_USER: Sql = Sql {
    text: "UPDATE users SET name = COALESCE($2, name), email = COALESCE($3, email), \
           email_lower = COALESCE($4, email_lower), updated_at = now() \
           WHERE id = $1 RETURNING id, name, email, created_at",
    types: &[Type::INT8, Type::TEXT, Type::TEXT, Type::TEXT],
};
const DELETE_USER: Sql = Sql {
    text: "DELETE FROM users WHERE id = $1 RETURNING id",
    types: &[Type::INT8],
};

#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// Whether statements are prepared (named, cached per connection) or sent unnamed, as
    /// PgBouncer's transaction pooling needs.
    prepared_statements: bool,
    pool_wait: Histogram,
    /// `None` when reads use the pool (DB_READ_CLIENTS=0).
    reads: Option<Arc<SharedReads>>,
    /// Sends cancel requests for the statements of a pooled connection.
    connector: Arc<Connector>,
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

    /// Asks the server to cancel the statement that `token`'s connection is running, over a
    /// new connection with the same TLS settings.
    async fn cancel(&self, token: &CancelToken) -> Result<(), tokio_postgres::Error> {
        match &self.tls {
            None => token.cancel_query(NoTls).await,
            Some(tls) => token.cancel_query(tls.clone()).await,
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
        let base_options = config.get_options().map(str::to_owned).unwrap_or_default();
        let with_timeout = |timeout: Duration| {
            let timeout_ms = timeout.as_millis().max(1);
            format!("{base_options} -c statement_timeout={timeout_ms}")
                .trim_start()
                .to_owned()
        };
        config.options(with_timeout(limits.statement_timeout));
        let tls = tls::client_config(settings.ssl_mode, settings.ssl_root_cert.as_deref())?
            .map(MakeRustlsConnect::new);
        let connector = Connector {
            config: config.clone(),
            tls: tls.clone(),
        };
        // A cancel request stops whatever statement a connection runs, and on a shared
        // connection that may be another request's. So the shared connections bound every
        // statement by PROFILE_TIMEOUT too, and the server itself cancels a profile's reads
        // there. Pooled connections get cancel requests instead (see `profile`).
        let mut read_config = config.clone();
        read_config.options(with_timeout(
            limits.statement_timeout.min(limits.profile_timeout),
        ));
        let read_connector = Connector {
            config: read_config,
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
            prepared_statements: limits.prepared_statements,
            pool,
            pool_wait,
            reads: None,
            connector: Arc::new(connector),
        };
        store.wait_until_reachable(limits.connect_timeout).await?;
        if limits.read_clients > 0 {
            let reads = SharedReads::start(read_connector, limits.read_clients as usize)
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
        let params: [&(dyn ToSql + Sync); 3] = [
            &user.name.as_str(),
            &user.email.as_str(),
            &user.email.lowercase(),
        ];
        let rows = self.pooled(&CREATE_USER, &params).await?;
        rows.first()
            .map_or(Err(StoreError::NotFound), user_from_row)
    }

    pub async fn get_user(&self, id: UserId) -> Result<User, StoreError> {
        let rows = self.read(&GET_USER, &[&id.get()]).await?;
        rows.first()
            .map_or(Err(StoreError::NotFound), user_from_row)
    }

    pub async fn list_users(
        &self,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<User>, StoreError> {
        let after = after.map_or(0, UserId::get);
        let rows = self.read(&LIST_USERS, &[&after, &i64::from(limit)]).await?;
        rows.iter().map(user_from_row).collect()
    }

    pub async fn update_user(&self, id: UserId, patch: &UserPatch) -> Result<User, StoreError> {
        let name = patch.name.as_ref().map(|name| name.as_str());
        let email = patch.email.as_ref().map(|email| email.as_str());
        let email_lower = patch.email.as_ref().map(|email| email.lowercase());
        let rows = self
            .pooled(&UPDATE_USER, &[&id.get(), &name, &email, &email_lower])
            .await?;
        rows.first()
            .map_or(Err(StoreError::NotFound), user_from_row)
    }

    pub async fn delete_user(&self, id: UserId) -> Result<(), StoreError> {
        match self.pooled(&DELETE_USER, &[&id.get()]).await?.len() {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    /// Runs a read on a shared client, or on the pool when reads use the pool or every shared
    /// client is down. Reads are idempotent, so a read whose shared connection was lost is
    /// retried once on the pool while the shared slot is replaced.
    async fn read(
        &self,
        sql: &Sql,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        if let Some(shared) = self.shared_client() {
            match shared.query(sql, params).await {
                Ok(rows) => return Ok(rows),
                Err(err) if is_unavailable(&err) => {
                    tracing::warn!(error = %err, "shared read connection lost; retrying the read on the pool");
                }
                Err(err) => return Err(classify(err)),
            }
        }
        self.pooled(sql, params).await
    }

    /// Returns an open shared read client, or `None` when reads use the pool or every shared
    /// client is down.
    fn shared_client(&self) -> Option<QueryConnection> {
        let client = self.reads.as_ref()?.pick()?;
        Some(QueryConnection::Shared {
            client,
            prepared_statements: self.prepared_statements,
        })
    }

    /// Checks a connection out of the pool.
    async fn pooled_connection(&self) -> Result<QueryConnection, StoreError> {
        Ok(QueryConnection::Pooled {
            client: Box::new(self.client().await?),
            prepared_statements: self.prepared_statements,
        })
    }

    /// Runs a statement on a pooled connection: prepared and cached on that connection, or,
    /// with DB_PREPARED_STATEMENTS=false, as an unnamed statement.
    async fn pooled(
        &self,
        sql: &Sql,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let connection = self.pooled_connection().await?;
        connection.query(sql, params).await.map_err(classify)
    }

    pub fn close(&self) {
        if let Some(reads) = &self.reads {
            reads.close();
        }
        self.pool.close();
    }
}

/// A connection that runs one request's statements: a shared client, or one checked out of
/// the pool. Statements polled at once on one connection go out pipelined.
enum QueryConnection {
    Shared {
        client: Arc<ReadClient>,
        prepared_statements: bool,
    },
    Pooled {
        client: Box<Object>,
        prepared_statements: bool,
    },
}

impl QueryConnection {
    /// Tells whether the connection has closed, as it does when the server goes away.
    fn is_closed(&self) -> bool {
        match self {
            QueryConnection::Shared { client, .. } => client.client.is_closed(),
            QueryConnection::Pooled { client, .. } => client.is_closed(),
        }
    }

    /// Runs `sql`: prepared (once per shared client, cached per pooled connection) or, with
    /// DB_PREPARED_STATEMENTS=false, unnamed.
    async fn query(
        &self,
        sql: &Sql,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        match self {
            QueryConnection::Shared {
                client,
                prepared_statements: true,
            } => {
                let statements = client.statements().await?;
                client.client.query(statements.get(sql), params).await
            }
            QueryConnection::Pooled {
                client,
                prepared_statements: true,
            } => {
                let statement = client.prepare_typed_cached(sql.text, sql.types).await?;
                client.query(&statement, params).await
            }
            QueryConnection::Shared { client, .. } => {
                client
                    .client
                    .query_typed(sql.text, &sql.typed(params))
                    .await
            }
            QueryConnection::Pooled { client, .. } => {
                client.query_typed(sql.text, &sql.typed(params)).await
            }
        }
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
