-- Users. Email addresses are unique regardless of case: the service stores the lowercase
-- form beside the address as given, and the unique constraint on it decides duplicates.
CREATE TABLE users (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL,
    email       text        NOT NULL,
    email_lower text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_lower_key UNIQUE (email_lower)
);
