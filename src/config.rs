//! Every setting of the service: its flag, environment variable, default and validation.
//!
//! Settings come only from flags and environment variables. A value that does not parse
//! stops the start with exit code 2 and a message naming the variable and the value. No
//! setting falls back silently to its default.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::store::SslMode;

mod derived;
mod values;

pub use values::{Networks, Secret};
use values::{parse_byte_size, parse_duration, parse_networks};

/// The service's configuration, parsed once at start.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "peregrine",
    version,
    about = "A high-throughput users API service"
)]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address the public HTTP listener binds to. Any address other than loopback needs
    /// token validation (AUTH_JWKS_URL or AUTH_JWKS_FILE) or AUTH_MODE=none.
    #[arg(
        long,
        env = "SERVER_HOST",
        value_name = "SERVER_HOST",
        default_value = "127.0.0.1"
    )]
    pub server_host: IpAddr,

    /// Port of the public HTTP listener; 0 picks a free port.
    #[arg(
        long,
        env = "SERVER_PORT",
        value_name = "SERVER_PORT",
        default_value_t = 8080
    )]
    pub server_port: u16,

    /// Maximum time a client may take to send a request's headers before it is disconnected.
    #[arg(long, env = "SERVER_READ_TIMEOUT", value_name = "SERVER_READ_TIMEOUT",
          default_value = "5s", value_parser = parse_duration)]
    pub server_read_timeout: Duration,

    /// Maximum time a handler may run; past it the request gets a 503.
    #[arg(long, env = "SERVER_WRITE_TIMEOUT", value_name = "SERVER_WRITE_TIMEOUT",
          default_value = "10s", value_parser = parse_duration)]
    pub server_write_timeout: Duration,

    /// Maximum time an idle keep-alive connection is kept open.
    #[arg(long, env = "SERVER_IDLE_TIMEOUT", value_name = "SERVER_IDLE_TIMEOUT",
          default_value = "120s", value_parser = parse_duration)]
    pub server_idle_timeout: Duration,

    /// Address of the metrics listener, which serves /metrics to Prometheus.
    #[arg(
        long,
        env = "METRICS_ADDR",
        value_name = "METRICS_ADDR",
        default_value = "0.0.0.0:9090"
    )]
    pub metrics_addr: SocketAddr,

    /// Address of the profiling listener (/debug/pprof/profile); keep it on loopback.
    #[arg(
        long,
        env = "ADMIN_ADDR",
        value_name = "ADMIN_ADDR",
        default_value = "127.0.0.1:6060"
    )]
    pub admin_addr: SocketAddr,

    /// Maximum API requests in flight in this replica; more are rejected at once with 503.
    #[arg(long, env = "MAX_IN_FLIGHT", value_name = "MAX_IN_FLIGHT", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,

    /// Mode of the in-flight limit: static (MAX_IN_FLIGHT) or adaptive (moved with the latency
    /// admitted requests see, up to MAX_IN_FLIGHT).
    #[arg(
        long,
        env = "LOAD_SHED",
        value_name = "LOAD_SHED",
        default_value = "static"
    )]
    pub load_shed: LoadShedMode,

    /// Maximum open client connections; past it the server stops accepting until one closes.
    /// Defaults to the open-file limit (raised to its hard limit at start) less 256.
    #[arg(long, env = "MAX_CONNECTIONS", value_name = "MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,

    /// Whether PostgreSQL statements are prepared and cached per connection (true), or sent as
    /// unnamed statements (false), which PgBouncer in transaction pooling mode needs.
    #[arg(long, env = "DB_PREPARED_STATEMENTS", value_name = "DB_PREPARED_STATEMENTS",
          default_value_t = true, action = clap::ArgAction::Set)]
    pub db_prepared_statements: bool,

    /// Maximum time a database statement may run before PostgreSQL cancels it; defaults to
    /// nine tenths of SERVER_WRITE_TIMEOUT, so a query never outlives its request.
    #[arg(long, env = "DB_STATEMENT_TIMEOUT", value_name = "DB_STATEMENT_TIMEOUT",
          value_parser = parse_duration)]
    pub db_statement_timeout: Option<Duration>,

    /// Comma-separated networks (CIDRs or addresses) of the proxies whose X-Forwarded-For,
    /// X-Real-IP and Forwarded headers are believed; from other peers they are ignored.
    #[arg(long, env = "TRUSTED_PROXIES", value_name = "TRUSTED_PROXIES", default_value = "",
          value_parser = parse_networks)]
    pub trusted_proxies: Networks,

    /// Requests per second each client may send to the API; unset means no limit.
    #[arg(long, env = "RATE_LIMIT", value_name = "RATE_LIMIT")]
    pub rate_limit: Option<NonZeroU32>,

    /// Requests a client may send at once above RATE_LIMIT; defaults to RATE_LIMIT.
    #[arg(long, env = "RATE_LIMIT_BURST", value_name = "RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<NonZeroU32>,

    /// Largest request body accepted, in bytes or with a KiB or MiB suffix.
    #[arg(long, env = "BODY_LIMIT", value_name = "BODY_LIMIT", default_value = "64KiB",
          value_parser = parse_byte_size)]
    pub body_limit: usize,

    /// Database to use: postgres://user@host:port/name or sqlite://path. Takes precedence over
    /// the DB_* settings; without either, a SQLite file peregrine.db in the working directory.
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<Secret>,

    /// PostgreSQL host; when set (and DATABASE_URL is not), the DB_* settings select PostgreSQL.
    #[arg(long, env = "DB_HOST", value_name = "DB_HOST")]
    pub db_host: Option<String>,

    /// PostgreSQL port.
    #[arg(long, env = "DB_PORT", value_name = "DB_PORT", default_value_t = 5432)]
    pub db_port: u16,

    /// PostgreSQL user.
    #[arg(
        long,
        env = "DB_USER",
        value_name = "DB_USER",
        default_value = "postgres"
    )]
    pub db_user: String,

    /// PostgreSQL password (never logged or shown).
    #[arg(
        long,
        env = "DB_PASSWORD",
        value_name = "DB_PASSWORD",
        hide_env_values = true
    )]
    pub db_password: Option<Secret>,

    /// File that contains the PostgreSQL password, such as a mounted Kubernetes Secret. It
    /// replaces DB_PASSWORD or a password in DATABASE_URL, which must then be unset.
    #[arg(
        long,
        env = "DB_PASSWORD_FILE",
        value_name = "DB_PASSWORD_FILE",
        conflicts_with = "db_password"
    )]
    pub db_password_file: Option<PathBuf>,

    /// PostgreSQL database name.
    #[arg(
        long,
        env = "DB_NAME",
        value_name = "DB_NAME",
        default_value = "peregrine"
    )]
    pub db_name: String,

    /// TLS to PostgreSQL, as libpq's sslmode: disable, prefer, require, verify-ca, verify-full.
    #[arg(
        long,
        env = "DB_SSLMODE",
        value_name = "DB_SSLMODE",
        default_value = "prefer"
    )]
    pub db_sslmode: SslMode,

    /// PEM file of the certificate authorities that verify-ca and verify-full trust.
    #[arg(long, env = "DB_SSLROOTCERT", value_name = "DB_SSLROOTCERT")]
    pub db_sslrootcert: Option<PathBuf>,

    /// Size of the PostgreSQL connection pool.
    #[arg(long, env = "DB_MAX_CONNS", value_name = "DB_MAX_CONNS", default_value_t = 25,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub db_max_conns: u32,

    /// Shared PostgreSQL connections that pipeline the reads of all requests; 0 makes reads
    /// check a connection out of the pool like writes.
    #[arg(long, env = "DB_READ_CLIENTS", value_name = "DB_READ_CLIENTS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(0..=64))]
    pub db_read_clients: u32,

    /// Maximum wait for a free pooled connection before a request gets a 503.
    #[arg(long, env = "DB_ACQUIRE_TIMEOUT", value_name = "DB_ACQUIRE_TIMEOUT",
          default_value = "2s", value_parser = parse_duration)]
    pub db_acquire_timeout: Duration,

    /// Maximum time the start waits for the database to respond, retrying with backoff.
    #[arg(long, env = "DB_CONNECT_TIMEOUT", value_name = "DB_CONNECT_TIMEOUT",
          default_value = "30s", value_parser = parse_duration)]
    pub db_connect_timeout: Duration,

    /// Maximum time of a profile request's reads (user, orders, preferences); past it the
    /// request gets a 504 and the reads are cancelled on the database.
    #[arg(long, env = "PROFILE_TIMEOUT", value_name = "PROFILE_TIMEOUT", default_value = "3s",
          value_parser = parse_duration)]
    pub profile_timeout: Duration,

    /// Whether pending migrations are applied at start (true or false).
    #[arg(long, env = "DB_MIGRATE", value_name = "DB_MIGRATE", default_value_t = true,
          action = clap::ArgAction::Set)]
    pub db_migrate: bool,

    /// Maximum time in-flight requests get to finish after the listener stops.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", value_name = "SHUTDOWN_TIMEOUT", default_value = "30s",
          value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Time the server keeps serving after a stop signal while /readyz fails, so that load
    /// balancers remove it first.
    #[arg(long, env = "SHUTDOWN_DRAIN_DELAY", value_name = "SHUTDOWN_DRAIN_DELAY",
          default_value = "0s", value_parser = parse_duration)]
    pub shutdown_drain_delay: Duration,

    /// Authentication of API requests: jwt (bearer tokens checked against the JWKS) or none.
    /// Unset means jwt when AUTH_JWKS_URL or AUTH_JWKS_FILE is set, otherwise none, which is
    /// allowed only with a loopback SERVER_HOST.
    #[arg(long, env = "AUTH_MODE", value_name = "AUTH_MODE")]
    pub auth_mode: Option<AuthMode>,

    /// URL of the JWKS document with the token signing keys: https, or http on a loopback
    /// host.
    #[arg(long, env = "AUTH_JWKS_URL", value_name = "AUTH_JWKS_URL")]
    pub auth_jwks_url: Option<String>,

    /// File with the JWKS document, in place of AUTH_JWKS_URL; re-read at every refresh.
    #[arg(long, env = "AUTH_JWKS_FILE", value_name = "AUTH_JWKS_FILE")]
    pub auth_jwks_file: Option<PathBuf>,

    /// The iss claim every token must carry; required with token validation.
    #[arg(long, env = "AUTH_ISSUER", value_name = "AUTH_ISSUER")]
    pub auth_issuer: Option<String>,

    /// The value the aud claim of every token must contain; required with token validation.
    #[arg(long, env = "AUTH_AUDIENCE", value_name = "AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,

    /// Clock skew allowed when checking a token's exp and nbf claims, in whole seconds.
    #[arg(long, env = "AUTH_LEEWAY", value_name = "AUTH_LEEWAY", default_value = "30s",
          value_parser = parse_duration)]
    pub auth_leeway: Duration,

    /// Interval between background refreshes of the JWKS.
    #[arg(long, env = "AUTH_JWKS_REFRESH_INTERVAL", value_name = "AUTH_JWKS_REFRESH_INTERVAL",
          default_value = "5m", value_parser = parse_duration)]
    pub auth_jwks_refresh_interval: Duration,

    /// Minimum time between two fetches of the JWKS; a token with an unknown kid triggers a
    /// fetch at most this often.
    #[arg(long, env = "AUTH_JWKS_MIN_REFRESH_INTERVAL",
          value_name = "AUTH_JWKS_MIN_REFRESH_INTERVAL", default_value = "10s",
          value_parser = parse_duration)]
    pub auth_jwks_min_refresh_interval: Duration,

    /// Log format: text or json.
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_name = "LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Log filter in tracing's EnvFilter syntax, for example info or peregrine=debug.
    #[arg(
        long,
        env = "RUST_LOG",
        value_name = "RUST_LOG",
        default_value = "info"
    )]
    pub rust_log: String,
}

/// A subcommand; without one the server runs.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Apply pending database migrations and exit.
    Migrate,
    /// Mint a bearer token from a local private key, for development and tests.
    Token(crate::auth::token::TokenArgs),
}

/// The authentication of API requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Bearer tokens verified against AUTH_JWKS_URL or AUTH_JWKS_FILE.
    Jwt,
    /// No authentication: every request is served as an administrator.
    None,
}

/// The way the in-flight limit is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoadShedMode {
    Static,
    Adaptive,
}

/// Format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A configuration error that names the setting and the rejected value.
#[derive(Debug, thiserror::Error)]
#[error("invalid {variable}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub reason: String,
}
