-- Orders and preferences belong to a user: deleting the user deletes them (ON DELETE
-- CASCADE, which needs PRAGMA foreign_keys = ON on every connection), so no order or
-- preferences row outlives its user.
-- Amounts are in the currency's minor unit; the service accepts 1 to 10^12.
-- Times are microseconds since the Unix epoch, UTC.
CREATE TABLE orders (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    amount     INTEGER NOT NULL CHECK (amount > 0),
    currency   TEXT    NOT NULL CHECK (length(currency) = 3),
    status     TEXT    NOT NULL
        CHECK (status IN ('pending', 'paid', 'shipped', 'delivered', 'cancelled')),
    created_at INTEGER NOT NULL
);

-- A user's orders, newest first: the keyset pagination walks this index backwards by id.
CREATE INDEX orders_user_id_id_idx ON orders (user_id, id);

-- One row per user who saved preferences; a user without a row has the defaults. version
-- starts at 1 and grows by 1 on each change, for optimistic concurrency (ETag, If-Match).
CREATE TABLE preferences (
    user_id      INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    language     TEXT    NOT NULL,
    time_zone    TEXT    NOT NULL,
    notify_email INTEGER NOT NULL,
    notify_sms   INTEGER NOT NULL,
    notify_push  INTEGER NOT NULL,
    theme        TEXT    NOT NULL CHECK (theme IN ('system', 'light', 'dark')),
    version      INTEGER NOT NULL CHECK (version > 0),
    updated_at   INTEGER NOT NULL
);
