//! Black-box tests of peregrine: the real server on an ephemeral port, against SQLite and
//! PostgreSQL, with a real HTTP client.

mod harness;

mod access_log;
mod auth;
mod auth_access;
mod auth_process;
mod cli;
mod connections;
mod contract;
mod input;
mod middleware;
mod operations;
mod orders;
mod pooler;
mod postgres;
mod postgres_connect;
mod preferences;
mod profile;
mod shutdown;
mod users;
