-- Users. Email addresses are unique regardless of case: the service stores the lowercase
-- form beside the address as given, and the unique constraint on it decides duplicates.
-- AUTOINCREMENT keeps the ids of deleted users from being handed out again.
-- Times are microseconds since the Unix epoch, UTC.
CREATE TABLE users (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL,
    email       TEXT    NOT NULL,
    email_lower TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
