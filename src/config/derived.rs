//! The settings the rest of the service takes, derived from the parsed [`Config`]: the checks
//! across settings, the database and pool settings, and the authentication settings.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

use super::{AuthMode, Config, ConfigError, Secret};
use crate::auth::{AuthSettings, JwksSource, JwtSettings};
use crate::store::{DatabaseConfig, PoolSettings, SslMode};

impl Config {
    /// Checks what clap cannot check alone: the database settings taken together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let DatabaseConfig::Postgres(settings) = self.database()? {
            let verifies = matches!(settings.ssl_mode, SslMode::VerifyCa | SslMode::VerifyFull);
            if verifies && settings.ssl_root_cert.is_none() {
                return Err(ConfigError {
                    variable: "DB_SSLROOTCERT",
                    reason:
                        "is missing, and DB_SSLMODE (or sslmode= in DATABASE_URL) is verify-ca \
                             or verify-full, which needs the PEM file of the authority that signed \
                             the server's certificate"
                            .to_owned(),
                });
            }
        }
        if self.profile_timeout.is_zero() {
            return Err(ConfigError {
                variable: "PROFILE_TIMEOUT",
                reason: "is 0s, which would fail every profile request; set a positive \
                         duration such as 3s"
                    .to_owned(),
            });
        }
        self.auth_settings()?;
        Ok(())
    }

    /// Returns the authentication these settings select, or why they are inconsistent.
    pub fn auth_settings(&self) -> Result<AuthSettings, ConfigError> {
        let error = |variable, reason: String| ConfigError { variable, reason };
        let source = match (&self.auth_jwks_url, &self.auth_jwks_file) {
            (Some(_), Some(_)) => {
                let reason = "is set together with AUTH_JWKS_URL; set only one of them";
                return Err(error("AUTH_JWKS_FILE", reason.to_owned()));
            }
            (Some(url), None) => Some(JwksSource::Url(parse_jwks_url(url)?)),
            (None, Some(path)) => Some(JwksSource::File(path.clone())),
            (None, None) => None,
        };

        let Some(source) = source else {
            return match self.auth_mode {
                Some(AuthMode::None) => Ok(AuthSettings::Disabled { explicit: true }),
                Some(AuthMode::Jwt) => Err(error(
                    "AUTH_JWKS_URL",
                    "is missing, and AUTH_MODE is jwt: set AUTH_JWKS_URL or AUTH_JWKS_FILE"
                        .to_owned(),
                )),
                None if self.server_host.is_loopback() => {
                    Ok(AuthSettings::Disabled { explicit: false })
                }
                None => Err(error(
                    "SERVER_HOST",
                    format!(
                        "{} is not a loopback address, and no token validation is configured: \
                         set AUTH_JWKS_URL (or AUTH_JWKS_FILE), AUTH_ISSUER and AUTH_AUDIENCE, \
                         or set AUTH_MODE=none to serve the API without authentication",
                        self.server_host
                    ),
                )),
            };
        };
        if self.auth_mode == Some(AuthMode::None) {
            let reason = "is none, but AUTH_JWKS_URL or AUTH_JWKS_FILE is set: unset the JWKS \
                          source, or set AUTH_MODE=jwt";
            return Err(error("AUTH_MODE", reason.to_owned()));
        }
        let required = |variable, value: &Option<String>| match value.as_deref().map(str::trim) {
            Some(value) if !value.is_empty() => Ok(value.to_owned()),
            _ => Err(error(
                variable,
                "is missing, and token validation needs both AUTH_ISSUER and AUTH_AUDIENCE"
                    .to_owned(),
            )),
        };
        if self.auth_jwks_refresh_interval < Duration::from_secs(1) {
            let reason = format!(
                "{:?} is shorter than the minimum of 1s",
                self.auth_jwks_refresh_interval
            );
            return Err(error("AUTH_JWKS_REFRESH_INTERVAL", reason));
        }
        Ok(AuthSettings::Jwt(JwtSettings {
            source,
            issuer: required("AUTH_ISSUER", &self.auth_issuer)?,
            audience: required("AUTH_AUDIENCE", &self.auth_audience)?,
            leeway: self.auth_leeway,
            refresh_interval: self.auth_jwks_refresh_interval,
            min_refresh_interval: self.auth_jwks_min_refresh_interval,
        }))
    }

    /// Returns the public listener's address.
    pub fn server_addr(&self) -> SocketAddr {
        SocketAddr::new(self.server_host, self.server_port)
    }

    /// Returns the database this configuration selects, with DATABASE_URL taking precedence
    /// over DB_*, and the password of DB_PASSWORD_FILE when it is set.
    pub fn database(&self) -> Result<DatabaseConfig, ConfigError> {
        let database = self.database_without_password_file()?;
        match &self.db_password_file {
            Some(path) => database.with_password_file(path),
            None => Ok(database),
        }
    }

    fn database_without_password_file(&self) -> Result<DatabaseConfig, ConfigError> {
        if let Some(url) = &self.database_url {
            return DatabaseConfig::from_url(
                url.expose(),
                self.db_sslmode,
                self.db_sslrootcert.clone(),
            );
        }
        match &self.db_host {
            Some(host) => Ok(DatabaseConfig::postgres_from_parts(
                host,
                self.db_port,
                &self.db_user,
                self.db_password.as_ref().map(Secret::expose),
                &self.db_name,
                self.db_sslmode,
                self.db_sslrootcert.clone(),
            )),
            None => Ok(DatabaseConfig::Sqlite {
                path: PathBuf::from("peregrine.db"),
            }),
        }
    }

    /// Returns the pool settings shared by both back ends.
    pub fn pool_settings(&self) -> PoolSettings {
        PoolSettings {
            max_connections: self.db_max_conns,
            prepared_statements: self.db_prepared_statements,
            statement_timeout: self
                .db_statement_timeout
                .unwrap_or(self.server_write_timeout.mul_f64(0.9)),
            read_clients: self.db_read_clients,
            acquire_timeout: self.db_acquire_timeout,
            connect_timeout: self.db_connect_timeout,
            profile_timeout: self.profile_timeout,
        }
    }
}

/// Parses AUTH_JWKS_URL: https, or http when the host is loopback, where no one else can
/// see or change the keys in transit.
fn parse_jwks_url(value: &str) -> Result<Url, ConfigError> {
    let error = |reason: String| ConfigError {
        variable: "AUTH_JWKS_URL",
        reason,
    };
    let url = Url::parse(value).map_err(|err| error(format!("{value:?} is not a URL: {err}")))?;
    let Some(host) = url.host_str() else {
        return Err(error(format!("{value:?} has no host")));
    };
    // An IPv6 host keeps its brackets in host_str.
    let loopback = match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(address) => address.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err(error(format!(
            "{value:?} uses http on a host that is not loopback; use https, so that the keys \
             cannot be changed in transit"
        ))),
        scheme => Err(error(format!(
            "{value:?} has the scheme {scheme}; expected https (or http on a loopback host)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn config(args: &[&str]) -> Config {
        Config::try_parse_from([&["peregrine"], args].concat()).expect("settings parse")
    }

    #[test]
    fn zero_profile_timeout_rejected() {
        let err = config(&["--profile-timeout", "0s"]).validate().unwrap_err();
        assert_eq!(err.variable, "PROFILE_TIMEOUT");
        assert!(config(&["--profile-timeout", "1ms"]).validate().is_ok());
    }

    #[test]
    fn auth_off_on_loopback_without_jwks() {
        let settings = config(&["--server-host", "127.0.0.1"]).auth_settings();
        assert!(matches!(
            settings,
            Ok(AuthSettings::Disabled { explicit: false })
        ));
        let settings = config(&["--server-host", "::1"]).auth_settings();
        assert!(matches!(
            settings,
            Ok(AuthSettings::Disabled { explicit: false })
        ));
    }

    #[test]
    fn auth_required_on_other_addresses() {
        let err = config(&["--server-host", "0.0.0.0"])
            .auth_settings()
            .unwrap_err();
        assert_eq!(err.variable, "SERVER_HOST");
        assert!(err.reason.contains("AUTH_JWKS_URL"), "{}", err.reason);
        assert!(err.reason.contains("AUTH_MODE=none"), "{}", err.reason);
        let settings = config(&["--server-host", "0.0.0.0", "--auth-mode", "none"]).auth_settings();
        assert!(matches!(
            settings,
            Ok(AuthSettings::Disabled { explicit: true })
        ));
    }

    #[test]
    fn auth_jwt_implied_by_jwks_source() {
        let settings = config(&[
            "--server-host",
            "0.0.0.0",
            "--auth-jwks-url",
            "https://idp.example/jwks.json",
            "--auth-issuer",
            "https://idp.example/",
            "--auth-audience",
            "peregrine",
        ])
        .auth_settings();
        let Ok(AuthSettings::Jwt(jwt)) = settings else {
            panic!("expected jwt settings, got {settings:?}");
        };
        assert_eq!(jwt.issuer, "https://idp.example/");
        assert_eq!(jwt.audience, "peregrine");
        assert!(matches!(jwt.source, JwksSource::Url(_)));
    }

    #[test]
    fn auth_settings_rejected() {
        let jwks = ["--auth-jwks-file", "/keys/jwks.json"];
        let claims = ["--auth-issuer", "iss", "--auth-audience", "aud"];
        let cases: [(Vec<&str>, &str); 9] = [
            (vec!["--auth-mode", "jwt"], "AUTH_JWKS_URL"),
            (
                [&jwks[..], &["--auth-audience", "aud"]].concat(),
                "AUTH_ISSUER",
            ),
            (
                [&jwks[..], &["--auth-issuer", "iss"]].concat(),
                "AUTH_AUDIENCE",
            ),
            (
                [&jwks[..], &claims[..], &["--auth-mode", "none"]].concat(),
                "AUTH_MODE",
            ),
            (
                [&jwks[..], &claims[..], &["--auth-jwks-url", "https://a/"]].concat(),
                "AUTH_JWKS_FILE",
            ),
            (
                [&claims[..], &["--auth-jwks-url", "http://idp.example/jwks"]].concat(),
                "AUTH_JWKS_URL",
            ),
            (
                [&claims[..], &["--auth-jwks-url", "ftp://127.0.0.1/jwks"]].concat(),
                "AUTH_JWKS_URL",
            ),
            (
                [&claims[..], &["--auth-jwks-url", "not a url"]].concat(),
                "AUTH_JWKS_URL",
            ),
            (
                [
                    &jwks[..],
                    &claims[..],
                    &["--auth-jwks-refresh-interval", "0s"],
                ]
                .concat(),
                "AUTH_JWKS_REFRESH_INTERVAL",
            ),
        ];
        for (args, variable) in cases {
            let err = config(&args).auth_settings().unwrap_err();
            assert_eq!(err.variable, variable, "{args:?}: {err}");
        }
    }

    #[test]
    fn jwks_url_http_only_on_loopback() {
        for url in [
            "http://127.0.0.1:8000/jwks.json",
            "http://[::1]/jwks",
            "http://localhost/jwks",
            "https://idp.example/jwks",
        ] {
            assert!(parse_jwks_url(url).is_ok(), "{url}");
        }
        for url in ["http://10.0.0.1/jwks", "http://idp.example/jwks"] {
            assert!(parse_jwks_url(url).is_err(), "{url}");
        }
    }

    #[test]
    fn password_file_conflicts_with_db_password() {
        let parsed = Config::try_parse_from([
            "peregrine",
            "--db-password",
            "s3cret",
            "--db-password-file",
            "/run/secrets/db-password",
        ]);
        let err = parsed.unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn password_file_read_for_db_host() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "s3cret\n").unwrap();
        let path = file.path().to_str().unwrap();
        let config =
            Config::try_parse_from(["peregrine", "--db-host", "db", "--db-password-file", path])
                .unwrap();
        let DatabaseConfig::Postgres(settings) = config.database().unwrap() else {
            panic!("DB_HOST selects PostgreSQL");
        };
        assert_eq!(settings.config.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(settings.config.get_hosts().len(), 1);
    }
}
