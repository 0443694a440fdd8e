//! The database selection, parsed from DATABASE_URL or the DB_* settings.

use std::path::{Path, PathBuf};
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

    /// Sets the PostgreSQL password to the contents of `path` (DB_PASSWORD_FILE), as
    /// Kubernetes mounts a key of a Secret as a file. SQLite needs no password and ignores it.
    pub fn with_password_file(self, path: &Path) -> Result<Self, ConfigError> {
        let DatabaseConfig::Postgres(mut settings) = self else {
            return Ok(self);
        };
        if settings.config.get_password().is_some() {
            return Err(ConfigError {
                variable: "DB_PASSWORD_FILE",
                reason: "is set, and DATABASE_URL contains a password too; remove one of them"
                    .to_owned(),
            });
        }
        settings.config.password(read_password_file(path)?);
        Ok(DatabaseConfig::Postgres(settings))
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

/// Reads a password file. One trailing line break is removed, because a file written with
/// `echo` ends with one.
fn read_password_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let invalid = |reason: String| ConfigError {
        variable: "DB_PASSWORD_FILE",
        reason,
    };
    let mut password = std::fs::read(path)
        .map_err(|err| invalid(format!("cannot read {}: {err}", path.display())))?;
    if password.ends_with(b"\n") {
        password.pop();
        if password.ends_with(b"\r") {
            password.pop();
        }
    }
    if password.is_empty() {
        return Err(invalid(format!(
            "{} is empty; write the PostgreSQL password into it",
            path.display()
        )));
    }
    Ok(password)
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

    fn password_file(contents: &[u8]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), contents).unwrap();
        file
    }

    fn with_file(url: &str, path: &Path) -> Result<PostgresSettings, ConfigError> {
        match DatabaseConfig::from_url(url, SslMode::Prefer, None)?.with_password_file(path)? {
            DatabaseConfig::Postgres(settings) => Ok(*settings),
            other => panic!("expected PostgreSQL, got {other:?}"),
        }
    }

    #[test]
    fn password_file_sets_password() {
        let file = password_file(b"s3cret");
        let settings = with_file("postgres://u@db/app", file.path()).unwrap();
        assert_eq!(settings.config.get_password(), Some(&b"s3cret"[..]));
    }

    #[test]
    fn password_file_drops_one_line_break() {
        for (contents, expected) in [
            (&b"s3cret\n"[..], &b"s3cret"[..]),
            (b"s3cret\r\n", b"s3cret"),
            (b"s3cret\n\n", b"s3cret\n"),
            (b" s3cret ", b" s3cret "),
        ] {
            let file = password_file(contents);
            let settings = with_file("postgres://u@db/app", file.path()).unwrap();
            assert_eq!(
                settings.config.get_password(),
                Some(expected),
                "{contents:?}"
            );
        }
    }

    #[test]
    fn password_file_rejects_empty_file() {
        for contents in [&b""[..], b"\n"] {
            let file = password_file(contents);
            let err = with_file("postgres://u@db/app", file.path()).unwrap_err();
            assert_eq!(err.variable, "DB_PASSWORD_FILE");
            assert!(err.reason.contains("is empty"), "{}", err.reason);
        }
    }

    #[test]
    fn password_file_missing_names_path() {
        let err =
            with_file("postgres://u@db/app", Path::new("/nonexistent/db-password")).unwrap_err();
        assert_eq!(err.variable, "DB_PASSWORD_FILE");
        assert!(
            err.reason.contains("/nonexistent/db-password"),
            "{}",
            err.reason
        );
    }

    #[test]
    fn password_file_conflicts_with_url_password() {
        let file = password_file(b"s3cret");
        let err = with_file("postgres://u:other@db/app", file.path()).unwrap_err();
        assert_eq!(err.variable, "DB_PASSWORD_FILE");
        assert!(err.reason.contains("DATABASE_URL"), "{}", err.reason);
    }

    #[test]
    fn password_file_ignored_for_sqlite() {
        let sqlite = DatabaseConfig::from_url("sqlite://app.db", SslMode::Prefer, None).unwrap();
        let unchanged = sqlite.with_password_file(Path::new("/nonexistent/db-password"));
        assert!(matches!(unchanged, Ok(DatabaseConfig::Sqlite { .. })));
    }

    #[test]
    fn sqlite_url_keeps_path() {
        match DatabaseConfig::from_url("sqlite:///var/lib/app.db", SslMode::Prefer, None).unwrap() {
            DatabaseConfig::Sqlite { path } => assert_eq!(path, PathBuf::from("/var/lib/app.db")),
            other => panic!("expected SQLite, got {other:?}"),
        }
    }
}
