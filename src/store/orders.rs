//! The store's operations on orders and preferences, and the profile that reads a user with
//! both at once.

use std::time::{Duration, Instant};

use super::{Backend, Store, StoreError};
use crate::domain::{NewOrder, Order, OrderId, Preferences, User, UserId, VersionedPreferences};

/// The versions a preferences write may replace, from an `If-Match` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// `If-Match: *`: whatever version is stored.
    Any,
    /// One of these versions; an empty list matches nothing.
    OneOf(Vec<i64>),
}

impl ExpectedVersion {
    pub fn matches(&self, version: i64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::OneOf(versions) => versions.contains(&version),
        }
    }
}

/// The result of a preferences write that found its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutPreferences {
    /// The document was stored under a new version.
    Saved(VersionedPreferences),
    /// The stored document already equals the one sent, so nothing was written and the
    /// version stays. A retried write lands here, whatever its `If-Match`.
    Unchanged(VersionedPreferences),
    /// The stored version is not one the write expected; nothing was written.
    VersionMismatch(VersionedPreferences),
}

/// A user with their latest orders and their preferences.
#[derive(Debug, Clone)]
pub struct Profile {
    pub user: User,
    pub orders: Vec<Order>,
    pub preferences: VersionedPreferences,
}

/// A profile fetch that failed.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// One of the reads failed; the first failure stopped the others.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The reads did not finish within PROFILE_TIMEOUT and were cancelled.
    #[error("the profile reads did not finish within {0:?}")]
    TimedOut(Duration),
}

impl Store {
    /// Inserts an order for `user`; a missing user is [`StoreError::NotFound`].
    pub async fn create_order(&self, user: UserId, order: &NewOrder) -> Result<Order, StoreError> {
        self.timed("create_order", async {
            match &self.backend {
                Backend::Postgres(store) => store.create_order(user, order).await,
                Backend::Sqlite(store) => store.create_order(user, order).await,
            }
        })
        .await
    }

    pub async fn get_order(&self, id: OrderId) -> Result<Order, StoreError> {
        self.timed("get_order", async {
            match &self.backend {
                Backend::Postgres(store) => store.get_order(id).await,
                Backend::Sqlite(store) => store.get_order(id).await,
            }
        })
        .await
    }

    /// Returns up to `limit` of `user`'s orders with ids below `before`, newest first; a
    /// missing user is [`StoreError::NotFound`], a user without orders an empty list.
    pub async fn list_orders(
        &self,
        user: UserId,
        before: Option<OrderId>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        self.timed("list_orders", async {
            match &self.backend {
                Backend::Postgres(store) => store.list_orders(user, before, limit).await,
                Backend::Sqlite(store) => store.list_orders(user, before, limit).await,
            }
        })
        .await
    }

    /// Returns `user`'s preferences, or the defaults at version 0 when none were saved; a
    /// missing user is [`StoreError::NotFound`].
    pub async fn get_preferences(&self, user: UserId) -> Result<VersionedPreferences, StoreError> {
        self.timed("get_preferences", async {
            match &self.backend {
                Backend::Postgres(store) => store.get_preferences(user).await,
                Backend::Sqlite(store) => store.get_preferences(user).await,
            }
        })
        .await
    }

    /// Replaces `user`'s preferences if the stored version is one of `expected`, in one
    /// transaction that locks the user's row, so two writers cannot both succeed from one
    /// version. A missing user is [`StoreError::NotFound`].
    pub async fn put_preferences(
        &self,
        user: UserId,
        expected: &ExpectedVersion,
        preferences: &Preferences,
    ) -> Result<PutPreferences, StoreError> {
        self.timed("put_preferences", async {
            match &self.backend {
                Backend::Postgres(store) => {
                    store.put_preferences(user, expected, preferences).await
                }
                Backend::Sqlite(store) => store.put_preferences(user, expected, preferences).await,
            }
        })
        .await
    }

    /// Reads `user`, their latest `order_limit` orders and their preferences concurrently.
    /// The first read to fail ends the fetch with its error and drops the others. The whole
    /// fetch, the wait for a connection included, is bounded by PROFILE_TIMEOUT; past it the
    /// back end cancels the reads still running (see the PostgreSQL back end for how).
    pub async fn get_profile(
        &self,
        user: UserId,
        order_limit: u32,
    ) -> Result<Profile, ProfileError> {
        // Boxed, because the three reads make a large future, which every future around this
        // one, up to the connection's task, would otherwise copy whole each time it moves.
        let fetch = Box::pin(self.timed("get_profile", async {
            match &self.backend {
                Backend::Postgres(store) => store.get_profile(user, order_limit).await,
                Backend::Sqlite(store) => store.get_profile(user, order_limit).await,
            }
        }));
        let started = Instant::now();
        match tokio::time::timeout(self.profile_timeout, fetch).await {
            // The shared read connections' statement_timeout is at most PROFILE_TIMEOUT, so
            // PostgreSQL can cancel a stalled read just before the timer here fires. Any
            // unavailable database at the deadline, that cancel included, is the timeout.
            Ok(Err(StoreError::Unavailable(_))) if started.elapsed() >= self.profile_timeout => {
                Err(ProfileError::TimedOut(self.profile_timeout))
            }
            Ok(result) => Ok(result?),
            Err(_elapsed) => Err(ProfileError::TimedOut(self.profile_timeout)),
        }
    }
}
