//! Parsers of setting values that clap does not know: durations, byte sizes, network lists
//! and secrets.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

/// A secret setting. Its `Debug` output never shows the value, and it has no `Display`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Returns the secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Secret(value.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A list of networks, parsed from TRUSTED_PROXIES.
#[derive(Debug, Clone, Default)]
pub struct Networks(pub Vec<IpNet>);

/// Parses comma-separated networks; a bare address is a network of one.
pub(super) fn parse_networks(value: &str) -> Result<Networks, String> {
    let mut networks = Vec::new();
    for item in value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let network = match item.parse::<IpNet>() {
            Ok(network) => network,
            Err(_) => item.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
                format!("{item:?} is not a network such as 10.0.0.0/8 or an address")
            })?,
        };
        networks.push(network);
    }
    Ok(Networks(networks))
}

/// Parses a duration such as `5s`, `250ms` or `2m`; a bare number is rejected because its unit
/// would be a guess.
pub(super) fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value)
        .map_err(|err| format!("{err}; expected a duration such as 5s, 250ms or 2m"))
}

/// Parses a byte size: a number of bytes, or a number with a KiB or MiB suffix.
pub(super) fn parse_byte_size(value: &str) -> Result<usize, String> {
    let trimmed = value.trim();
    let (digits, multiplier) = if let Some(number) = trimmed.strip_suffix("KiB") {
        (number, 1024)
    } else if let Some(number) = trimmed.strip_suffix("MiB") {
        (number, 1024 * 1024)
    } else {
        (trimmed.strip_suffix('B').unwrap_or(trimmed), 1)
    };
    let expected = "expected a byte count such as 65536, 64KiB or 1MiB";
    let count: usize = digits.trim().parse().map_err(|_| expected.to_owned())?;
    match count.checked_mul(multiplier) {
        Some(0) => Err("must be at least 1 byte".to_owned()),
        Some(bytes) => Ok(bytes),
        None => Err(format!("too large; {expected}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_size_accepts_units() {
        assert_eq!(parse_byte_size("65536"), Ok(65536));
        assert_eq!(parse_byte_size("64KiB"), Ok(65536));
        assert_eq!(parse_byte_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_byte_size("10B"), Ok(10));
    }

    #[test]
    fn byte_size_rejects_garbage_and_zero() {
        assert!(parse_byte_size("lots").is_err());
        assert!(parse_byte_size("0").is_err());
        assert!(parse_byte_size("-1KiB").is_err());
    }

    #[test]
    fn duration_rejects_bare_numbers() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn networks_accept_cidrs_and_addresses() {
        let Networks(networks) = parse_networks(" 10.0.0.0/8, 127.0.0.1 ,::1").unwrap();
        assert_eq!(networks.len(), 3);
        assert!(parse_networks("").unwrap().0.is_empty());
        assert!(parse_networks("10.0.0.0/33").is_err());
        assert!(parse_networks("proxy.example").is_err());
    }

    #[test]
    fn secret_debug_hides_value() {
        let secret: Secret = "hunter2".parse().unwrap();
        assert_eq!(format!("{secret:?}"), "Secret(***)");
    }
}
