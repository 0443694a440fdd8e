//! A user's preferences: language, time zone, notification channels and theme, each
//! validated, with defaults for a user who has never saved any.

use std::str::FromStr;

use serde::Serialize;
use utoipa::ToSchema;

/// A language tag, well-formed and valid per BCP 47 (RFC 5646) as the `language-tags` crate
/// checks it against the IANA subtag registry, stored in its canonical letter case (`en-US`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct LanguageTag(String);

/// The reason a string is not an accepted language tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LanguageTagError {
    #[error("must be at most {max} characters, got {actual}")]
    TooLong { max: usize, actual: usize },
    #[error("is not a BCP 47 language tag such as en or pt-BR: {0}")]
    Invalid(String),
}

impl LanguageTag {
    /// Maximum length of a tag, in characters: room for a language, script, region, variant
    /// and a few extensions.
    pub const MAX_CHARS: usize = 64;

    /// Parses and validates `text`, and normalizes its letter case (`EN-us` becomes `en-US`).
    pub fn parse(text: &str) -> Result<Self, LanguageTagError> {
        let actual = text.chars().count();
        if actual > Self::MAX_CHARS {
            return Err(LanguageTagError::TooLong {
                max: Self::MAX_CHARS,
                actual,
            });
        }
        let invalid = |err: &dyn std::fmt::Display| LanguageTagError::Invalid(err.to_string());
        let tag = language_tags::LanguageTag::parse(text)
            .map_err(|err| invalid(&err))?
            .canonicalize()
            .map_err(|err| invalid(&err))?;
        tag.validate().map_err(|err| invalid(&err))?;
        Ok(LanguageTag(tag.to_string()))
    }

    /// Wraps a tag read from the database, which only stores tags that passed [`Self::parse`].
    pub fn from_database(text: String) -> Self {
        LanguageTag(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A time zone name of the IANA tz database (`Europe/Berlin`, `UTC`), as compiled into the
/// `chrono-tz` crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(chrono_tz::Tz);

/// The reason a string is not a time zone name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "must be a time zone name of the IANA tz database, such as Europe/Berlin or UTC, got {0:?}"
)]
pub struct TimeZoneError(String);

impl TimeZone {
    /// Looks `name` up exactly, letter case included, as the tz database spells it.
    pub fn parse(name: &str) -> Result<Self, TimeZoneError> {
        chrono_tz::Tz::from_str(name)
            .map(TimeZone)
            .map_err(|_| TimeZoneError(name.to_owned()))
    }

    pub fn name(self) -> &'static str {
        self.0.name()
    }
}

impl Serialize for TimeZone {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// The colour scheme of the user's interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Theme {
    /// Follows the device's setting.
    System,
    Light,
    Dark,
}

/// The reason a string is not a theme.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be one of system, light, dark, got {0:?}")]
pub struct ThemeError(String);

impl Theme {
    pub fn parse(text: &str) -> Result<Self, ThemeError> {
        match text {
            "system" => Ok(Theme::System),
            "light" => Ok(Theme::Light),
            "dark" => Ok(Theme::Dark),
            _ => Err(ThemeError(text.to_owned())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Theme::System => "system",
            Theme::Light => "light",
            Theme::Dark => "dark",
        }
    }
}

/// The channels on which the user accepts notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Notifications {
    pub email: bool,
    pub sms: bool,
    pub push: bool,
}

/// A user's preferences document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Preferences {
    /// A BCP 47 language tag in its canonical letter case.
    #[schema(value_type = String, min_length = 1, max_length = 64, example = "en-US")]
    pub language: LanguageTag,
    /// A time zone name of the IANA tz database.
    #[schema(value_type = String, example = "Europe/Berlin")]
    pub time_zone: TimeZone,
    pub notifications: Notifications,
    pub theme: Theme,
}

impl Default for Preferences {
    /// Returns the preferences of a user who has saved none: English, UTC, email
    /// notifications only, and the device's theme.
    fn default() -> Self {
        Preferences {
            language: LanguageTag("en".to_owned()),
            time_zone: TimeZone(chrono_tz::UTC),
            notifications: Notifications {
                email: true,
                sms: false,
                push: false,
            },
            theme: Theme::System,
        }
    }
}

/// Preferences with the version that optimistic concurrency compares. Version 0 means the
/// user has never saved preferences and gets the defaults. Each change adds 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionedPreferences {
    pub preferences: Preferences,
    pub version: i64,
}

impl VersionedPreferences {
    /// Returns the defaults at version 0.
    pub fn defaults() -> Self {
        VersionedPreferences {
            preferences: Preferences::default(),
            version: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_tag_is_canonicalized() {
        assert_eq!(LanguageTag::parse("EN-us").unwrap().as_str(), "en-US");
        assert_eq!(
            LanguageTag::parse("zh-hant-tw").unwrap().as_str(),
            "zh-Hant-TW"
        );
        assert_eq!(LanguageTag::parse("de").unwrap().as_str(), "de");
    }

    #[test]
    fn language_tag_rejects_malformed_and_unregistered() {
        for text in ["", "english", "en_US", "en--US", "xq", "en-ZZZZZZZZZ"] {
            assert!(
                matches!(LanguageTag::parse(text), Err(LanguageTagError::Invalid(_))),
                "{text:?}"
            );
        }
        assert!(matches!(
            LanguageTag::parse(&format!("en-{}", "a".repeat(70))),
            Err(LanguageTagError::TooLong { max: 64, .. })
        ));
    }

    #[test]
    fn time_zone_accepts_tz_names_only() {
        assert_eq!(
            TimeZone::parse("Europe/Berlin").unwrap().name(),
            "Europe/Berlin"
        );
        assert_eq!(TimeZone::parse("UTC").unwrap().name(), "UTC");
        for name in ["", "europe/berlin", "Mars/Olympus", "+02:00", "CEST"] {
            assert!(TimeZone::parse(name).is_err(), "{name:?}");
        }
    }

    #[test]
    fn theme_is_a_closed_set() {
        for theme in [Theme::System, Theme::Light, Theme::Dark] {
            assert_eq!(Theme::parse(theme.as_str()), Ok(theme));
        }
        assert!(Theme::parse("Dark").is_err());
        assert!(Theme::parse("blue").is_err());
    }

    #[test]
    fn defaults_serialize_as_documented() {
        let json = serde_json::to_value(Preferences::default()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "language": "en",
                "time_zone": "UTC",
                "notifications": { "email": true, "sms": false, "push": false },
                "theme": "system",
            })
        );
    }
}
