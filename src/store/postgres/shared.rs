//! Shared read connections: a few clients that every request uses at once.
//!
//! tokio-postgres pipelines the queries of concurrent callers on one client: each query is
//! written as soon as it is polled, and the results come back in order. So one connection
//! carries many requests' reads without a checkout per request, and PostgreSQL serves a
//! stream of queries on a few busy backends instead of one query at a time on many.
//!
//! Each client prepares its read statements once, on first use (after migrations have made
//! the tables). When a connection breaks, its slot is emptied at once, requests go to the
//! other slots (or to the pool when none is left), and a new connection is made with backoff.
//! Only the queries in flight on the broken connection fail, and reads retry those on the
//! pool.
//!
//! Pipelining has head-of-line blocking: a read that waits on a lock holds up every read
//! queued behind it on the same connection, until PostgreSQL's statement_timeout
//! (DB_STATEMENT_TIMEOUT) cancels it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{Notify, OnceCell};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, Statement};

use super::{Connector, READS, Sql};

/// A shared client and the read statements prepared on its connection.
pub struct ReadClient {
    pub client: Client,
    statements: OnceCell<ReadStatements>,
}

/// The statements of [`READS`], prepared once per connection.
pub struct ReadStatements(Vec<(&'static str, Statement)>);

impl ReadStatements {
    /// Returns the prepared statement for `sql`, which must be one of [`READS`].
    pub fn get(&self, sql: &Sql) -> &Statement {
        self.0
            .iter()
            .find(|(text, _)| *text == sql.text)
            .map(|(_, statement)| statement)
            .expect("every read on a shared client is listed in READS")
    }
}

impl ReadClient {
    /// Returns the prepared read statements, preparing them on the first call.
    pub async fn statements(&self) -> Result<&ReadStatements, tokio_postgres::Error> {
        self.statements
            .get_or_try_init(|| async {
                let mut statements = Vec::with_capacity(READS.len());
                for sql in READS {
                    statements.push((
                        sql.text,
                        self.client.prepare_typed(sql.text, sql.types).await?,
                    ));
                }
                Ok(ReadStatements(statements))
            })
            .await
    }
}

/// The set of shared read clients.
pub struct SharedReads {
    slots: Vec<RwLock<Option<Arc<ReadClient>>>>,
    next: AtomicUsize,
    closed: AtomicBool,
    close_requested: Notify,
}

impl SharedReads {
    /// Opens `count` clients and starts the task that replaces each one when it breaks.
    pub async fn start(
        connector: Connector,
        count: usize,
    ) -> Result<Arc<Self>, tokio_postgres::Error> {
        let mut first = Vec::with_capacity(count);
        for _ in 0..count {
            first.push(open(&connector).await?);
        }
        let reads = Arc::new(SharedReads {
            slots: (0..count).map(|_| RwLock::new(None)).collect(),
            next: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            close_requested: Notify::new(),
        });
        for (index, (client, connection)) in first.into_iter().enumerate() {
            reads.set(index, Some(client));
            tokio::spawn(maintain(
                Arc::clone(&reads),
                connector.clone(),
                index,
                connection,
            ));
        }
        Ok(reads)
    }

    /// Returns an open client, taking the slots in turn, or `None` when every one is down.
    pub fn pick(&self) -> Option<Arc<ReadClient>> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..self.slots.len()).find_map(|offset| {
            let slot = &self.slots[(start + offset) % self.slots.len()];
            let client = slot
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone()?;
            (!client.client.is_closed()).then_some(client)
        })
    }

    /// Drops every client and stops replacing them.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.close_requested.notify_waiters();
        for index in 0..self.slots.len() {
            self.set(index, None);
        }
    }

    fn set(&self, index: usize, client: Option<Arc<ReadClient>>) {
        *self.slots[index]
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = client;
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// Connects a client and drives its connection on a task that finishes when it closes.
async fn open(
    connector: &Connector,
) -> Result<(Arc<ReadClient>, JoinHandle<()>), tokio_postgres::Error> {
    let (client, connection) = connector.connect().await?;
    Ok((
        Arc::new(ReadClient {
            client,
            statements: OnceCell::new(),
        }),
        connection,
    ))
}

/// Replaces the client in slot `index` each time its connection ends, until the reads close.
async fn maintain(
    reads: Arc<SharedReads>,
    connector: Connector,
    index: usize,
    mut connection: JoinHandle<()>,
) {
    loop {
        tokio::select! {
            _ended = &mut connection => {}
            () = reads.close_requested.notified() => return,
        }
        if reads.is_closed() {
            return;
        }
        reads.set(index, None);
        tracing::warn!(slot = index, "shared read connection closed; reconnecting");

        let mut pause = Duration::from_millis(100);
        connection = loop {
            match open(&connector).await {
                Ok((client, connection)) if !reads.is_closed() => {
                    reads.set(index, Some(client));
                    tracing::info!(slot = index, "shared read connection replaced");
                    break connection;
                }
                Ok(_) => return,
                Err(err) => {
                    tracing::warn!(slot = index, error = %err, retry_in = ?pause, "failed to reconnect a shared read connection");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = reads.close_requested.notified() => return,
            }
            pause = (pause * 2).min(Duration::from_secs(2));
        };
    }
}
