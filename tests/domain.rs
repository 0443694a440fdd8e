//! Property tests of the domain types: parsing never panics, a parsed value parses again to
//! itself (normalizing twice is the same as once), and the text a value serializes to parses
//! back to an equal value.

use peregrine::domain::{Email, UserId, UserName};
use proptest::prelude::*;

/// Characters near the edges of the rules: ASCII, white space that trimming removes, control
/// and bidirectional formatting characters, combining marks, letters that NFC composes or
/// decomposes, and any other character.
fn tricky_character() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::char::range('a', 'z'),
        1 => proptest::char::range('A', 'Z'),
        2 => prop::sample::select(vec![' ', '\t', '\n', '\r', '\u{00A0}', '\u{2003}', '\u{3000}']),
        1 => prop::sample::select(vec![
            '\u{0000}', '\u{0007}', '\u{007F}', '\u{0085}', '\u{202A}', '\u{202E}', '\u{2066}',
            '\u{2069}', '\u{200B}', '\u{FEFF}',
        ]),
        2 => prop::sample::select(vec![
            '\u{0301}', '\u{0308}', '\u{0327}', 'e', 'u', 'é', 'ü', 'Å', '\u{212B}', '\u{2126}',
            '\u{0958}', '\u{FB2C}', 'ǅ', 'ß', 'İ',
        ]),
        1 => prop::sample::select(vec!['@', '.', '-', '+', '"', '<', '>', '[', ']', '\\']),
        1 => any::<char>(),
    ]
}

fn tricky_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(tricky_character(), 0..max).prop_map(String::from_iter)
}

/// Addresses the validation accepts, in mixed case, with characters that NFC changes and
/// with white space around them.
fn plausible_email() -> impl Strategy<Value = String> {
    let local = "[a-zA-Z0-9_+-]{1,8}(u\u{0308}|\u{00FC}|e\u{0301}|)(\\.[a-zA-Z0-9_+-]{1,8}){0,2}";
    let label = "[a-zA-Z0-9]{1,12}";
    let space = prop::sample::select(vec!["", " ", "\t"]);
    (local, label, label, space)
        .prop_map(|(local, domain, top, space)| format!("{space}{local}@{domain}.{top}{space}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn name_parse_never_panics(text in any::<String>()) {
        let _result = UserName::parse(&text);
    }

    #[test]
    fn name_normalizing_twice_is_once(text in tricky_text(120)) {
        if let Ok(name) = UserName::parse(&text) {
            prop_assert_eq!(UserName::parse(name.as_str()), Ok(name.clone()));
        }
    }

    #[test]
    fn name_round_trips_through_json(text in tricky_text(120)) {
        if let Ok(name) = UserName::parse(&text) {
            let json = serde_json::to_string(name.as_str()).unwrap();
            let back: String = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(UserName::parse(&back), Ok(name));
        }
    }

    #[test]
    fn email_parse_never_panics(text in any::<String>()) {
        let _result = Email::parse(&text);
    }

    #[test]
    fn email_parse_never_panics_near_addresses(text in tricky_text(80), local in "[a-z]{1,8}") {
        let _result = Email::parse(&format!("{local}@{text}"));
        let _result = Email::parse(&format!("{text}@example.com"));
    }

    #[test]
    fn email_parsed_once_parses_to_itself(text in tricky_text(40), local in "[a-z]{1,8}") {
        for candidate in [format!("{local}@{text}.com"), format!("{text}@example.com")] {
            if let Ok(email) = Email::parse(&candidate) {
                prop_assert_eq!(Email::parse(email.as_str()), Ok(email.clone()));
            }
        }
    }

    #[test]
    fn email_normalizing_twice_is_once(text in plausible_email()) {
        let email = Email::parse(&text);
        prop_assert!(email.is_ok(), "{:?}: {:?}", text, email);
        let email = email.unwrap();

        let again = Email::parse(email.as_str()).unwrap();

        prop_assert_eq!(again.as_str(), email.as_str());
        prop_assert_eq!(again.lowercase(), email.lowercase());
    }

    #[test]
    fn email_round_trips_through_json(text in plausible_email()) {
        let email = Email::parse(&text).unwrap();
        let json = serde_json::to_string(email.as_str()).unwrap();
        let back: String = serde_json::from_str(&json).unwrap();

        prop_assert_eq!(Email::parse(&back), Ok(email));
    }

    #[test]
    fn user_id_parse_never_panics(text in any::<String>()) {
        let _result = UserId::parse(&text);
    }

    #[test]
    fn user_id_round_trips(value in 1..=i64::MAX) {
        let id = UserId::parse(&value.to_string()).unwrap();
        let json = serde_json::to_string(&id).unwrap();

        prop_assert_eq!(id.get(), value);
        prop_assert_eq!(UserId::parse(&json), Ok(id));
        prop_assert_eq!(UserId::parse(&id.to_string()), Ok(id));
    }

    #[test]
    fn user_id_rejects_non_positive(value in i64::MIN..=0) {
        prop_assert!(UserId::parse(&value.to_string()).is_err());
    }
}
