-- Orders and preferences belong to a user: deleting the user deletes them (ON DELETE
-- CASCADE), so no order or preferences row outlives its user.
-- Amounts are in the currency's minor unit; the service accepts 1 to 10^12.
CREATE TABLE orders (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    amount     bigint      NOT NULL CHECK (amount > 0),
    currency   text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status     text        NOT NULL
        CHECK (status IN ('pending', 'paid', 'shipped', 'delivered', 'cancelled')),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A user's orders, newest first: the keyset pagination walks this index backwards by id.
CREATE INDEX orders_user_id_id_idx ON orders (user_id, id);

-- One row per user who saved preferences; a user without a row has the defaults. version
-- starts at 1 and grows by 1 on each change, for optimistic concurrency (ETag, If-Match).
CREATE TABLE preferences (
    user_id      bigint      PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    language     text        NOT NULL,
    time_zone    text        NOT NULL,
    notify_email boolean     NOT NULL,
    notify_sms   boolean     NOT NULL,
    notify_push  boolean     NOT NULL,
    theme        text        NOT NULL CHECK (theme IN ('system', 'light', 'dark')),
    version      bigint      NOT NULL CHECK (version > 0),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
