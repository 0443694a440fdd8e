//! Users: their id, name and email address, and the checks each must pass.

use std::fmt;

use email_address::{EmailAddress, Options};
use serde::Serialize;
use time::OffsetDateTime;
use unicode_normalization::UnicodeNormalization;
use utoipa::ToSchema;

/// A user's id: a positive 64-bit integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct UserId(i64);

/// The reason a string is not a user id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    #[error("must be a positive integer")]
    NotAnInteger,
    #[error("must be between 1 and {}", i64::MAX)]
    OutOfRange,
}

impl UserId {
    /// Parses a decimal string of ASCII digits into an id between 1 and `i64::MAX`.
    pub fn parse(text: &str) -> Result<Self, UserIdError> {
        if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(UserIdError::NotAnInteger);
        }
        match text.parse::<i64>() {
            Ok(value) if value > 0 => Ok(UserId(value)),
            _ => Err(UserIdError::OutOfRange),
        }
    }

    /// Wraps an id read from the database, where the schema guarantees it is positive.
    pub fn from_database(value: i64) -> Self {
        debug_assert!(value > 0, "database ids start at 1");
        UserId(value)
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A user's display name: trimmed, in Unicode NFC, 1 to 100 characters, with no control or
/// bidirectional formatting characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

/// The reason a string is not a valid user name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters, got {actual}")]
    TooLong { max: usize, actual: usize },
    #[error("must not contain the control or formatting character U+{:04X}", u32::from(*.0))]
    ForbiddenCharacter(char),
}

impl UserName {
    pub const MAX_CHARS: usize = 100;

    /// Normalizes `text` to NFC, trims surrounding whitespace and checks length and characters.
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let normalized: String = text.nfc().collect();
        let trimmed = normalized.trim();
        if trimmed.is_empty() {
            return Err(NameError::Empty);
        }
        if let Some(forbidden) = trimmed.chars().find(|&c| is_forbidden_in_name(c)) {
            return Err(NameError::ForbiddenCharacter(forbidden));
        }
        let actual = trimmed.chars().count();
        if actual > Self::MAX_CHARS {
            return Err(NameError::TooLong {
                max: Self::MAX_CHARS,
                actual,
            });
        }
        Ok(UserName(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Control characters, and the bidirectional embeddings, overrides and isolates
/// (U+202A to U+202E, U+2066 to U+2069) that can make a name display as another.
fn is_forbidden_in_name(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// An email address, validated by the `email_address` crate and at most 254 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    address: String,
    lowercase: String,
}

/// The reason a string is not a valid email address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} bytes, got {actual}")]
    TooLong { max: usize, actual: usize },
    #[error("is not a valid email address: {0}")]
    Invalid(String),
}

impl Email {
    /// Maximum length of an address that fits in an SMTP forward path (RFC 5321, section 4.5.3.1.3).
    pub const MAX_BYTES: usize = 254;

    /// Normalizes `text` to NFC, trims it and checks it is a plain address (no display name)
    /// with a dotted domain. NFC makes the composed and decomposed spellings of one address
    /// equal, as case folding makes `A` and `a` equal.
    pub fn parse(text: &str) -> Result<Self, EmailError> {
        let normalized: String = text.nfc().collect();
        let trimmed = normalized.trim();
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        if trimmed.len() > Self::MAX_BYTES {
            return Err(EmailError::TooLong {
                max: Self::MAX_BYTES,
                actual: trimmed.len(),
            });
        }
        let options = Options {
            minimum_sub_domains: 2,
            allow_domain_literal: false,
            allow_display_text: false,
            ..Options::default()
        };
        EmailAddress::parse_with_options(trimmed, options)
            .map_err(|err| EmailError::Invalid(lowercase_sentence(&err.to_string())))?;
        Ok(Email {
            address: trimmed.to_owned(),
            lowercase: trimmed.to_lowercase(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.address
    }

    /// Returns the address in lowercase, because two addresses that differ only in case belong
    /// to one user.
    pub fn lowercase(&self) -> &str {
        &self.lowercase
    }
}

/// Turns the `email_address` crate's messages ("Missing separator character '@'.") into the
/// lowercase clause the rest of the service's messages use.
fn lowercase_sentence(message: &str) -> String {
    let trimmed = message.trim().trim_end_matches('.');
    let mut characters = trimmed.chars();
    match characters.next() {
        Some(first) => first.to_lowercase().chain(characters).collect(),
        None => String::new(),
    }
}

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct User {
    #[schema(value_type = i64, minimum = 1, example = 1)]
    pub id: UserId,
    /// The name as validated: trimmed and in Unicode NFC.
    #[schema(min_length = 1, max_length = 100, example = "Ada Lovelace")]
    pub name: String,
    /// The address as sent, trimmed and in NFC, with its letter case kept.
    #[schema(format = Email, min_length = 3, max_length = 254, example = "ada@example.com")]
    pub email: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime, example = "2026-12-04T15:53:18.089663Z")]
    pub created_at: OffsetDateTime,
}

/// A validated request to create a user.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub name: UserName,
    pub email: Email,
}

/// A validated change to a user: the fields that are `Some` are replaced.
#[derive(Debug, Clone)]
pub struct UserPatch {
    pub name: Option<UserName>,
    pub email: Option<Email>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_accepts_positive_integers() {
        assert_eq!(UserId::parse("1").map(UserId::get), Ok(1));
        assert_eq!(
            UserId::parse("9223372036854775807").map(UserId::get),
            Ok(i64::MAX)
        );
    }

    #[test]
    fn user_id_rejects_everything_else() {
        for text in ["", "abc", "-1", "+1", "1.5", " 1", "1e3", "\u{0661}"] {
            assert_eq!(
                UserId::parse(text),
                Err(UserIdError::NotAnInteger),
                "{text:?}"
            );
        }
        for text in ["0", "9223372036854775808", "99999999999999999999999"] {
            assert_eq!(
                UserId::parse(text),
                Err(UserIdError::OutOfRange),
                "{text:?}"
            );
        }
    }

    #[test]
    fn name_is_trimmed_and_normalized() {
        let name = UserName::parse("  Cafe\u{0301}  ").unwrap();
        assert_eq!(name.as_str(), "Caf\u{00E9}");
    }

    #[test]
    fn name_length_counts_characters() {
        assert!(UserName::parse(&"é".repeat(100)).is_ok());
        assert_eq!(
            UserName::parse(&"é".repeat(101)),
            Err(NameError::TooLong {
                max: 100,
                actual: 101
            })
        );
    }

    #[test]
    fn name_rejects_blank_control_and_bidi() {
        assert_eq!(UserName::parse(" \t "), Err(NameError::Empty));
        assert_eq!(
            UserName::parse("a\u{0007}b"),
            Err(NameError::ForbiddenCharacter('\u{0007}'))
        );
        assert_eq!(
            UserName::parse("a\u{202E}b"),
            Err(NameError::ForbiddenCharacter('\u{202E}'))
        );
        assert_eq!(
            UserName::parse("a\u{2067}b"),
            Err(NameError::ForbiddenCharacter('\u{2067}'))
        );
    }

    #[test]
    fn email_keeps_case_and_lowercases_key() {
        let email = Email::parse(" Ada@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "Ada@Example.COM");
        assert_eq!(email.lowercase(), "ada@example.com");
    }

    #[test]
    fn email_rejects_invalid_addresses() {
        for text in [
            "",
            "plain",
            "a@b",
            "Ada <ada@example.com>",
            "a@[127.0.0.1]",
            "a@@example.com",
        ] {
            assert!(Email::parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn email_is_nfc_normalized() {
        let decomposed = Email::parse("u\u{0308}@exa\u{0308}mple.com").unwrap();
        let composed = Email::parse("\u{00FC}@ex\u{00E4}mple.com").unwrap();
        assert_eq!(decomposed.lowercase(), composed.lowercase());
    }

    #[test]
    fn email_messages_read_as_clauses() {
        let Err(EmailError::Invalid(message)) = Email::parse("plain") else {
            panic!("invalid")
        };
        assert!(message.starts_with(char::is_lowercase), "{message}");
        assert!(!message.ends_with('.'), "{message}");
    }

    #[test]
    fn email_rejects_over_254_bytes() {
        let long = format!("{}@{}.com", "a".repeat(64), "b".repeat(190));
        assert!(matches!(
            Email::parse(&long),
            Err(EmailError::TooLong { max: 254, .. })
        ));
    }
}
