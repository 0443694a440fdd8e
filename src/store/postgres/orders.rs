//! Orders and preferences on PostgreSQL. Reads go through [`PostgresStore::read`] (shared
//! clients or the pool), writes through the pool.

use deadpool_postgres::Transaction;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

use super::errors::classify;
use super::{PostgresStore, Sql};
use crate::domain::{
    Amount, Currency, LanguageTag, NewOrder, Notifications, Order, OrderId, OrderStatus,
    Preferences, Theme, TimeZone, UserId, VersionedPreferences,
};
use crate::store::{ExpectedVersion, PutPreferences, StoreError};

const CREATE_ORDER: Sql = Sql {
    text: "INSERT INTO orders (user_id, amount, currency, status) VALUES ($1, $2, $3, $4) \
           RETURNING id, user_id, amount, currency, status, created_at",
    types: &[Type::INT8, Type::INT8, Type::TEXT, Type::TEXT],
};
pub const GET_ORDER: Sql = Sql {
    text: "SELECT id, user_id, amount, currency, status, created_at FROM orders WHERE id = $1",
    types: &[Type::INT8],
};
/// A user's orders below an id, newest first. The user's row comes first in the join, so a
/// missing user returns no row and a user without orders one row of nulls.
pub const LIST_ORDERS: Sql = Sql {
    text: "SELECT o.id, o.user_id, o.amount, o.currency, o.status, o.created_at \
           FROM users u LEFT JOIN LATERAL ( \
               SELECT * FROM orders WHERE user_id = u.id AND id < $2 ORDER BY id DESC LIMIT $3 \
           ) o ON true \
           WHERE u.id = $1 ORDER BY o.id DESC",
    types: &[Type::INT8, Type::INT8, Type::INT8],
};
/// A user's preferences: no row for a missing user, a row of nulls for a user without
/// preferences.
pub const GET_PREFERENCES: Sql = Sql {
    text: "SELECT p.language, p.time_zone, p.notify_email, p.notify_sms, p.notify_push, \
           p.theme, p.version \
           FROM users u LEFT JOIN preferences p ON p.user_id = u.id WHERE u.id = $1",
    types: &[Type::INT8],
};
/// Locks the user's row until the transaction ends, so writers of one user's preferences
/// take turns and a concurrent delete of the user waits. No row means no such user.
const LOCK_USER: Sql = Sql {
    text: "SELECT id FROM users WHERE id = $1 FOR NO KEY UPDATE",
    types: &[Type::INT8],
};
const UPSERT_PREFERENCES: Sql = Sql {
    text: "INSERT INTO preferences (user_id, language, time_zone, notify_email, notify_sms, \
           notify_push, theme, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
           ON CONFLICT (user_id) DO UPDATE SET language = EXCLUDED.language, \
           time_zone = EXCLUDED.time_zone, notify_email = EXCLUDED.notify_email, \
           notify_sms = EXCLUDED.notify_sms, notify_push = EXCLUDED.notify_push, \
           theme = EXCLUDED.theme, version = EXCLUDED.version, updated_at = now()",
    types: &[
        Type::INT8,
        Type::TEXT,
        Type::TEXT,
        Type::BOOL,
        Type::BOOL,
        Type::BOOL,
        Type::TEXT,
        Type::INT8,
    ],
};

impl PostgresStore {
    pub async fn create_order(&self, user: UserId, order: &NewOrder) -> Result<Order, StoreError> {
        let params: [&(dyn ToSql + Sync); 4] = [
            &user.get(),
            &order.amount.get(),
            &order.currency.code(),
            &order.status.as_str(),
        ];
        let connection = self.pooled_connection().await?;
        let rows = connection
            .query(&CREATE_ORDER, &params)
            .await
            .map_err(|err| match err.as_db_error() {
                // The foreign key on orders.user_id: the user does not exist (any more).
                Some(db) if *db.code() == SqlState::FOREIGN_KEY_VIOLATION => StoreError::NotFound,
                _ => classify(err),
            })?;
        rows.first()
            .map_or(Err(StoreError::NotFound), order_from_row)
    }

    pub async fn get_order(&self, id: OrderId) -> Result<Order, StoreError> {
        let rows = self.read(&GET_ORDER, &[&id.get()]).await?;
        rows.first()
            .map_or(Err(StoreError::NotFound), order_from_row)
    }

    pub async fn list_orders(
        &self,
        user: UserId,
        before: Option<OrderId>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        let before = before.map_or(i64::MAX, OrderId::get);
        let rows = self
            .read(&LIST_ORDERS, &[&user.get(), &before, &i64::from(limit)])
            .await?;
        orders_from_rows(&rows)
    }

    pub async fn get_preferences(&self, user: UserId) -> Result<VersionedPreferences, StoreError> {
        let rows = self.read(&GET_PREFERENCES, &[&user.get()]).await?;
        preferences_from_rows(&rows)
    }

    pub async fn put_preferences(
        &self,
        user: UserId,
        expected: &ExpectedVersion,
        preferences: &Preferences,
    ) -> Result<PutPreferences, StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(classify)?;
        let id = user.get();
        let prepared = self.prepared_statements;
        let locked = run(&transaction, prepared, &LOCK_USER, &[&id])
            .await
            .map_err(classify)?;
        if locked.is_empty() {
            return Err(StoreError::NotFound);
        }
        // A statement of its own, after the lock: under READ COMMITTED each statement sees
        // what was committed before it started, so this one sees the previous writer's
        // version. Joined into the locking statement, it would see the older snapshot.
        let rows = run(&transaction, prepared, &GET_PREFERENCES, &[&id]).await;
        let current = preferences_from_rows(&rows.map_err(classify)?)?;
        if current.preferences == *preferences {
            return Ok(PutPreferences::Unchanged(current));
        }
        if !expected.matches(current.version) {
            return Ok(PutPreferences::VersionMismatch(current));
        }

        let saved = VersionedPreferences {
            preferences: preferences.clone(),
            version: current.version + 1,
        };
        let notifications = &preferences.notifications;
        let params: [&(dyn ToSql + Sync); 8] = [
            &id,
            &preferences.language.as_str(),
            &preferences.time_zone.name(),
            &notifications.email,
            &notifications.sms,
            &notifications.push,
            &preferences.theme.as_str(),
            &saved.version,
        ];
        let written = run(&transaction, prepared, &UPSERT_PREFERENCES, &params).await;
        written.map_err(classify)?;
        transaction.commit().await.map_err(classify)?;
        Ok(PutPreferences::Saved(saved))
    }
}

/// Runs `sql` in `transaction`: prepared and cached on the connection, or unnamed.
async fn run(
    transaction: &Transaction<'_>,
    prepared: bool,
    sql: &Sql,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    if prepared {
        let statement = transaction
            .prepare_typed_cached(sql.text, sql.types)
            .await?;
        transaction.query(&statement, params).await
    } else {
        transaction.query_typed(sql.text, &sql.typed(params)).await
    }
}

/// Reads the rows of [`LIST_ORDERS`]: none means no such user, a row of nulls no orders.
pub fn orders_from_rows(rows: &[Row]) -> Result<Vec<Order>, StoreError> {
    if rows.is_empty() {
        return Err(StoreError::NotFound);
    }
    let mut orders = Vec::with_capacity(rows.len());
    for row in rows {
        if column::<Option<i64>>(row, "id")?.is_some() {
            orders.push(order_from_row(row)?);
        }
    }
    Ok(orders)
}

pub fn order_from_row(row: &Row) -> Result<Order, StoreError> {
    let currency: String = column(row, "currency")?;
    let status: String = column(row, "status")?;
    Ok(Order {
        id: OrderId::from_database(column(row, "id")?),
        user_id: UserId::from_database(column(row, "user_id")?),
        amount: Amount::from_database(column(row, "amount")?),
        currency: Currency::parse(&currency).map_err(invalid_column)?,
        status: OrderStatus::parse(&status).map_err(invalid_column)?,
        created_at: column(row, "created_at")?,
    })
}

/// Reads the row of [`GET_PREFERENCES`]: no row means no such user,
/// a row of nulls the defaults.
pub fn preferences_from_rows(rows: &[Row]) -> Result<VersionedPreferences, StoreError> {
    rows.first()
        .map_or(Err(StoreError::NotFound), preferences_from_row)
}

/// Reads the preferences from a row of their columns. A null version means the user saved
/// none, so the defaults.
pub fn preferences_from_row(row: &Row) -> Result<VersionedPreferences, StoreError> {
    let Some(version) = column::<Option<i64>>(row, "version")? else {
        return Ok(VersionedPreferences::defaults());
    };
    let time_zone: String = column(row, "time_zone")?;
    let theme: String = column(row, "theme")?;
    Ok(VersionedPreferences {
        preferences: Preferences {
            language: LanguageTag::from_database(column(row, "language")?),
            time_zone: TimeZone::parse(&time_zone).map_err(invalid_column)?,
            notifications: Notifications {
                email: column(row, "notify_email")?,
                sms: column(row, "notify_sms")?,
                push: column(row, "notify_push")?,
            },
            theme: Theme::parse(&theme).map_err(invalid_column)?,
        },
        version,
    })
}

/// Reads one column, a type mismatch being a schema bug.
fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    name: &str,
) -> Result<T, StoreError> {
    row.try_get(name)
        .map_err(|err| StoreError::Internal(err.into()))
}

/// Classifies a stored value that fails its domain check (a time zone that a newer tz
/// database renamed, for one) as internal: the row cannot be served as it is.
fn invalid_column(err: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Internal(Box::new(err))
}
