//! The profile on PostgreSQL: a user, their latest orders and their preferences, read by
//! three statements pipelined on one connection.
//!
//! The three statements are sent together and the server returns their results in order, so
//! the fetch costs one round trip on one connection, and never waits for a second connection
//! while it has one. Only the user's statement tells whether the user exists. So the orders
//! and preferences statements read their own tables, without the join to users that the
//! orders and preferences routes use to tell a missing user from an empty result.
//! On a shared client that connection is also carrying other requests' reads.
//!
//! Cancellation when the caller stops waiting (PROFILE_TIMEOUT, the write timeout): on a
//! pooled connection, the statements still running are stopped with the connection's cancel
//! token (a PostgreSQL CancelRequest), and the connection is closed rather than returned to
//! the pool, so a cancel that arrives late cannot hit the next borrower's statement. A shared
//! client cannot be cancelled that way, because the statement it runs may be another
//! request's; its connections start with statement_timeout at most PROFILE_TIMEOUT instead,
//! so the server stops a profile's statement by itself.

use std::sync::Arc;

use deadpool_postgres::Object;

use tokio_postgres::types::Type;

use super::orders::{order_from_row, preferences_from_row};
use super::{
    Connector, GET_USER, PostgresStore, QueryConnection, Sql, errors::classify, user_from_row,
};
use crate::domain::{UserId, VersionedPreferences};
use crate::store::{Profile, StoreError};

/// A user's newest orders. No row means no orders, or no such user.
pub const NEWEST_ORDERS: Sql = Sql {
    text: "SELECT id, user_id, amount, currency, status, created_at FROM orders \
           WHERE user_id = $1 ORDER BY id DESC LIMIT $2",
    types: &[Type::INT8, Type::INT8],
};
/// A user's saved preferences. No row means the defaults, or no such user.
pub const SAVED_PREFERENCES: Sql = Sql {
    text: "SELECT language, time_zone, notify_email, notify_sms, notify_push, theme, version \
           FROM preferences WHERE user_id = $1",
    types: &[Type::INT8],
};

impl PostgresStore {
    pub async fn get_profile(&self, user: UserId, order_limit: u32) -> Result<Profile, StoreError> {
        if let Some(shared) = self.shared_client() {
            match read_profile(&shared, user, order_limit).await {
                Err(StoreError::Unavailable(err)) if shared.is_closed() => {
                    tracing::warn!(error = %err, "shared read connection lost; retrying the profile on the pool");
                }
                result => return result,
            }
        }

        let mut guard = CancelOnDrop {
            connection: Some(self.pooled_connection().await?),
            connector: self.connector.clone(),
        };
        let connection = guard.connection.as_ref().expect("set just above");
        let result = read_profile(connection, user, order_limit).await;
        guard.release();
        result
    }
}

/// Sends the three reads at once and waits for all of them. The first to fail ends the wait
/// with its error, and the others are dropped.
async fn read_profile(
    connection: &QueryConnection,
    user: UserId,
    order_limit: u32,
) -> Result<Profile, StoreError> {
    let id = user.get();
    let limit = i64::from(order_limit);
    let read_user = async {
        let rows = connection
            .query(&GET_USER, &[&id])
            .await
            .map_err(classify)?;
        rows.first()
            .map_or(Err(StoreError::NotFound), user_from_row)
    };
    let read_orders = async {
        let rows = connection
            .query(&NEWEST_ORDERS, &[&id, &limit])
            .await
            .map_err(classify)?;
        rows.iter()
            .map(order_from_row)
            .collect::<Result<Vec<_>, _>>()
    };
    let read_preferences = async {
        let rows = connection
            .query(&SAVED_PREFERENCES, &[&id])
            .await
            .map_err(classify)?;
        rows.first().map_or_else(
            || Ok(VersionedPreferences::defaults()),
            preferences_from_row,
        )
    };

    let (user, orders, preferences) = tokio::try_join!(read_user, read_orders, read_preferences)?;
    Ok(Profile {
        user,
        orders,
        preferences,
    })
}

/// A pooled connection that, dropped before [`CancelOnDrop::release`], cancels its running
/// statements and closes instead of going back to the pool.
struct CancelOnDrop {
    connection: Option<QueryConnection>,
    connector: Arc<Connector>,
}

impl CancelOnDrop {
    /// Returns the connection to the pool: its statements have all finished.
    fn release(&mut self) {
        self.connection = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(QueryConnection::Pooled { client, .. }) = self.connection.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // Taken out of the pool for good: dropped at the end of the task, it closes.
        let client = Object::take(*client);
        let connector = self.connector.clone();
        runtime.spawn(async move {
            let token = client.cancel_token();
            match connector.cancel(&token).await {
                Ok(()) => tracing::info!("cancelled the statements of an abandoned profile read"),
                Err(err) => {
                    tracing::warn!(error = %err, "failed to cancel the statements of an abandoned profile read");
                }
            }
            drop(client);
        });
    }
}
