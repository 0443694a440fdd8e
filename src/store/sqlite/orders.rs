//! Orders, preferences and the profile on SQLite.
//!
//! Writes run on the single writer connection, so the existence check of a user and the
//! write that follows it cannot interleave with another write of this process.

use rusqlite::{Connection, Row, TransactionBehavior, params};
use time::OffsetDateTime;

use super::{SqliteStore, now_micros};
use crate::domain::{
    Amount, Currency, LanguageTag, NewOrder, Notifications, Order, OrderId, OrderStatus,
    Preferences, Theme, TimeZone, UserId, VersionedPreferences,
};
use crate::store::{ExpectedVersion, Profile, PutPreferences, StoreError};

const ORDER_COLUMNS: &str = "id, user_id, amount, currency, status, created_at";

/// A user's preferences: no row for a missing user, a row of nulls for a user without
/// preferences.
const GET_PREFERENCES: &str = "SELECT p.language, p.time_zone, p.notify_email, p.notify_sms, \
     p.notify_push, p.theme, p.version \
     FROM users u LEFT JOIN preferences p ON p.user_id = u.id WHERE u.id = ?1";

impl SqliteStore {
    pub async fn create_order(&self, user: UserId, order: &NewOrder) -> Result<Order, StoreError> {
        let (amount, currency, status) = (
            order.amount.get(),
            order.currency.code(),
            order.status.as_str(),
        );
        self.write(move |connection| {
            require_user(connection, user)?;
            connection
                .prepare_cached(&format!(
                    "INSERT INTO orders (user_id, amount, currency, status, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5) RETURNING {ORDER_COLUMNS}"
                ))?
                .query_row(
                    params![user.get(), amount, currency, status, now_micros()],
                    order_from_row,
                )
        })
        .await?
    }

    pub async fn get_order(&self, id: OrderId) -> Result<Order, StoreError> {
        self.read(move |connection| {
            connection
                .prepare_cached(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1"))?
                .query_row([id.get()], order_from_row)
        })
        .await?
    }

    pub async fn list_orders(
        &self,
        user: UserId,
        before: Option<OrderId>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        let before = before.map_or(i64::MAX, OrderId::get);
        self.read(move |connection| {
            require_user(connection, user)?;
            let orders: Vec<Result<Order, StoreError>> = connection
                .prepare_cached(&format!(
                    "SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = ?1 AND id < ?2 \
                     ORDER BY id DESC LIMIT ?3"
                ))?
                .query_map(params![user.get(), before, limit], order_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(orders)
        })
        .await?
        .into_iter()
        .collect()
    }

    pub async fn get_preferences(&self, user: UserId) -> Result<VersionedPreferences, StoreError> {
        self.read(move |connection| {
            connection
                .prepare_cached(GET_PREFERENCES)?
                .query_row([user.get()], preferences_from_row)
        })
        .await?
    }

    pub async fn put_preferences(
        &self,
        user: UserId,
        expected: &ExpectedVersion,
        preferences: &Preferences,
    ) -> Result<PutPreferences, StoreError> {
        let expected = expected.clone();
        let preferences = preferences.clone();
        self.write(move |connection| {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current = match transaction
                .prepare_cached(GET_PREFERENCES)?
                .query_row([user.get()], preferences_from_row)?
            {
                Ok(current) => current,
                Err(err) => return Ok(Err(err)),
            };
            if current.preferences == preferences {
                return Ok(Ok(PutPreferences::Unchanged(current)));
            }
            if !expected.matches(current.version) {
                return Ok(Ok(PutPreferences::VersionMismatch(current)));
            }

            let version = current.version + 1;
            let notifications = preferences.notifications;
            transaction
                .prepare_cached(
                    "INSERT INTO preferences (user_id, language, time_zone, notify_email, \
                     notify_sms, notify_push, theme, version, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                     ON CONFLICT (user_id) DO UPDATE SET language = excluded.language, \
                     time_zone = excluded.time_zone, notify_email = excluded.notify_email, \
                     notify_sms = excluded.notify_sms, notify_push = excluded.notify_push, \
                     theme = excluded.theme, version = excluded.version, \
                     updated_at = excluded.updated_at",
                )?
                .execute(params![
                    user.get(),
                    preferences.language.as_str(),
                    preferences.time_zone.name(),
                    notifications.email,
                    notifications.sms,
                    notifications.push,
                    preferences.theme.as_str(),
                    version,
                    now_micros(),
                ])?;
            transaction.commit()?;
            Ok(Ok(PutPreferences::Saved(VersionedPreferences {
                preferences,
                version,
            })))
        })
        .await?
    }

    /// Runs the three reads at once, each on a reader connection that it takes only for the
    /// read itself. The first to fail ends the fetch and the others are dropped.
    /// SQLite runs in this process, so a dropped read runs to its end on its blocking thread
    /// (bounded by the busy timeout when it waits for a lock) and nothing needs cancelling.
    pub async fn get_profile(&self, user: UserId, order_limit: u32) -> Result<Profile, StoreError> {
        let (user, orders, preferences) = tokio::try_join!(
            self.get_user(user),
            self.list_orders(user, None, order_limit),
            self.get_preferences(user),
        )?;
        Ok(Profile {
            user,
            orders,
            preferences,
        })
    }
}

/// Fails with no rows, which the store reports as not found, when `user` does not exist.
fn require_user(connection: &Connection, user: UserId) -> rusqlite::Result<()> {
    connection
        .prepare_cached("SELECT 1 FROM users WHERE id = ?1")?
        .query_row([user.get()], |_| Ok(()))
}

/// Reads an order. A stored value that fails its domain check makes the inner result an
/// internal error, because the row cannot be served as it is.
fn order_from_row(row: &Row<'_>) -> rusqlite::Result<Result<Order, StoreError>> {
    let currency: String = row.get("currency")?;
    let status: String = row.get("status")?;
    let created_at = time_from_micros(row.get("created_at")?)?;
    let id = OrderId::from_database(row.get("id")?);
    let user_id = UserId::from_database(row.get("user_id")?);
    let amount = Amount::from_database(row.get("amount")?);
    Ok((|| {
        Ok(Order {
            id,
            user_id,
            amount,
            currency: Currency::parse(&currency).map_err(invalid_value)?,
            status: OrderStatus::parse(&status).map_err(invalid_value)?,
            created_at,
        })
    })())
}

/// Reads the row of [`GET_PREFERENCES`]: a row of nulls means the defaults.
fn preferences_from_row(
    row: &Row<'_>,
) -> rusqlite::Result<Result<VersionedPreferences, StoreError>> {
    let Some(version) = row.get::<_, Option<i64>>("version")? else {
        return Ok(Ok(VersionedPreferences::defaults()));
    };
    let language: String = row.get("language")?;
    let time_zone: String = row.get("time_zone")?;
    let theme: String = row.get("theme")?;
    let notifications = Notifications {
        email: row.get("notify_email")?,
        sms: row.get("notify_sms")?,
        push: row.get("notify_push")?,
    };
    Ok((|| {
        Ok(VersionedPreferences {
            preferences: Preferences {
                language: LanguageTag::from_database(language),
                time_zone: TimeZone::parse(&time_zone).map_err(invalid_value)?,
                notifications,
                theme: Theme::parse(&theme).map_err(invalid_value)?,
            },
            version,
        })
    })())
}

fn time_from_micros(micros: i64) -> rusqlite::Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).map_err(|err| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Integer, err.into())
    })
}

fn invalid_value(err: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Internal(Box::new(err))
}
