//! The database selection, parsed from DATABASE_URL or the DB_* settings.

use std::path::PathBuf;
use std::str::FromStr;

use clap::ValueEnum;

use crate::config::ConfigError;

/// A database selected by the configuration.
#[derive(Debug, Clone)]
pub enum DatabaseConfig {
    Postgres(Box<PostgresSettings>),
    Sqlite { path: PathBuf },
}

/// Connection settings for PostgreSQL. `tokio_postgres::Config` redacts the password in
/// its `Debug` output.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    pub config: tokio_postgres::Config,
    pub ssl_mode: SslMode,
    pub ssl_root_cert: Option<PathBuf>,
}

/// TLS modes with the meaning libpq gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, without certificate checks; plain TCP otherwise.
    Prefer,
    /// TLS always; the certificate is checked like verify-ca when a root certificate is set.
    Require,
    /// TLS always, with a certificate signed by a trusted authority.
    VerifyCa,
    /// As verify-ca, and the certificate must name the host connected to.
    VerifyFull,
}

impl DatabaseConfig {
    /// Parses `postgres://`, `postgresql://` or `sqlite://` URLs. An `sslmode` or `sslrootcert`
    /// query parameter in a PostgreSQL URL takes precedence over DB_SSLMODE and DB_SSLROOTCERT.
    pub fn from_url(
        url: &str,
        default_ssl_mode: SslMode,
        default_root_cert: Option<PathBuf>,
    ) -> Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError {
            variable: "DATABASE_URL",
            reason,
        };

        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() || path == ":memory:" {
                return Err(invalid(format!(
                    "{url:?} names no database file; use sqlite://FILE, for example sqlite://peregrine.db"
                )));
            }
            return Ok(DatabaseConfig::Sqlite {
                path: PathBuf::from(path),
            });
        }
        if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(invalid(
                "expected a URL starting with postgres://, postgresql:// or sqlite://".to_owned(),
            ));
        }

        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut ssl_mode = default_ssl_mode;
        let mut ssl_root_cert = default_root_cert;
        let mut other_parameters = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            match pair.split_once('=') {
                Some(("sslmode", value)) => {
                    ssl_mode = <SslMode as ValueEnum>::from_str(value, false).map_err(|_| {
                        invalid(format!(
                            "sslmode={value} is not one of disable, prefer, require, verify-ca, verify-full"
                        ))
                    })?;
                }
                Some(("sslrootcert", value)) => ssl_root_cert = Some(PathBuf::from(value)),
                _ => other_parameters.push(pair),
            }
        }
        let remaining = if other_parameters.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", other_parameters.join("&"))
        };
        let config = tokio_postgres::Config::from_str(&remaining)
            .map_err(|err| invalid(format!("not a valid PostgreSQL URL: {err}")))?;

        Ok(DatabaseConfig::Postgres(Box::new(PostgresSettings {
            config,
            ssl_mode,
            ssl_root_cert,
        })))
    }

    /// Builds PostgreSQL settings from the separate DB_* values.
    pub fn postgres_from_parts(
        host: &str,
        port: u16,
        user: &str,
        password: Option<&str>,
        name: &str,
        ssl_mode: SslMode,
        ssl_root_cert: Option<PathBuf>,
    ) -> Self {
        let mut config = tokio_postgres::Config::new();
        config.host(host).port(port).user(user).dbname(name);
        if let Some(password) = password {
            config.password(password);
        }
        DatabaseConfig::Postgres(Box::new(PostgresSettings {
            config,
            ssl_mode,
            ssl_root_cert,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn postgres(url: &str) -> PostgresSettings {
        match DatabaseConfig::from_url(url, SslMode::Prefer, None).unwrap() {
            DatabaseConfig::Postgres(settings) => *settings,
            other => panic!("expected PostgreSQL, got {other:?}"),
        }
    }

    #[test]
    fn url_sslmode_overrides_default() {
        let settings = postgres("postgres://u@db:5433/app?sslmode=verify-full&sslrootcert=/ca.pem");
        assert_eq!(settings.ssl_mode, SslMode::VerifyFull);
        assert_eq!(settings.ssl_root_cert, Some(PathBuf::from("/ca.pem")));
        assert_eq!(settings.config.get_ports(), &[5433]);
        assert_eq!(settings.config.get_dbname(), Some("app"));
    }

    #[test]
    fn url_keeps_other_parameters() {
        let settings = postgres("postgresql://u@db/app?application_name=peregrine");
        assert_eq!(settings.config.get_application_name(), Some("peregrine"));
        assert_eq!(settings.ssl_mode, SslMode::Prefer);
    }

    #[test]
    fn url_rejects_unknown_sslmode() {
        let err =
            DatabaseConfig::from_url("postgres://db/app?sslmode=allow", SslMode::Prefer, None)
                .unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
        assert!(err.reason.contains("sslmode=allow"), "{}", err.reason);
    }

    #[test]
    fn url_rejects_other_schemes() {
        assert!(DatabaseConfig::from_url("mysql://db/app", SslMode::Prefer, None).is_err());
        assert!(DatabaseConfig::from_url("sqlite://", SslMode::Prefer, None).is_err());
    }

    #[test]
    fn sqlite_url_keeps_path() {
        match DatabaseConfig::from_url("sqlite:///var/lib/app.db", SslMode::Prefer, None).unwrap() {
            DatabaseConfig::Sqlite { path } => assert_eq!(path, PathBuf::from("/var/lib/app.db")),
            other => panic!("expected SQLite, got {other:?}"),
        }
    }
}
