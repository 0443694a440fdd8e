//! Orders: a user's purchases, with an amount in minor units, an ISO 4217 currency and a
//! status from a closed set.

use std::fmt;

use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::UserId;

/// An order's id: a positive 64-bit integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct OrderId(i64);

/// The reason a string is not an order id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderIdError {
    #[error("must be a positive integer")]
    NotAnInteger,
    #[error("must be between 1 and {}", i64::MAX)]
    OutOfRange,
}

impl OrderId {
    /// Parses a decimal string of ASCII digits into an id between 1 and `i64::MAX`.
    pub fn parse(text: &str) -> Result<Self, OrderIdError> {
        if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(OrderIdError::NotAnInteger);
        }
        match text.parse::<i64>() {
            Ok(value) if value > 0 => Ok(OrderId(value)),
            _ => Err(OrderIdError::OutOfRange),
        }
    }

    /// Wraps an id read from the database, where the schema guarantees it is positive.
    pub fn from_database(value: i64) -> Self {
        debug_assert!(value > 0, "database ids start at 1");
        OrderId(value)
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An amount of money in the minor unit of its currency (cents for EUR, yen for JPY): an
/// integer from 1 to [`Amount::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Amount(i64);

/// The reason a JSON number is not a valid amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("must be an integer number of minor units (cents for EUR), got {0}")]
    NotAnInteger(String),
    #[error("must be at least 1, got {0}")]
    NotPositive(String),
    #[error("must be at most {max}, got {actual}")]
    TooLarge { max: i64, actual: String },
}

impl Amount {
    /// The largest amount: 10^12 minor units, ten billion in a currency with cents. It stays
    /// well below 2^53, so clients that read JSON numbers as doubles get it exactly.
    pub const MAX: i64 = 1_000_000_000_000;

    /// Checks that a JSON number is an integer from 1 to [`Amount::MAX`]. A number written
    /// with a fraction or an exponent counts when its value is an integer (`100.0` and `1e2`
    /// are 100), as for JSON Schema's `integer`, the type the OpenAPI document declares.
    pub fn parse(number: &serde_json::Number) -> Result<Self, AmountError> {
        let value = match number.as_i64() {
            Some(value) => value as f64,
            None => number.as_f64().unwrap_or(f64::NAN),
        };
        if value.fract() != 0.0 || !value.is_finite() {
            return Err(AmountError::NotAnInteger(number.to_string()));
        }
        if value < 1.0 {
            return Err(AmountError::NotPositive(number.to_string()));
        }
        if value > Self::MAX as f64 {
            return Err(AmountError::TooLarge {
                max: Self::MAX,
                actual: number.to_string(),
            });
        }
        // Every integer up to MAX (below 2^53) is exact as an f64, so the cast loses nothing.
        Ok(Amount(value as i64))
    }

    /// Wraps an amount read from the database, where a check constraint keeps it positive.
    pub fn from_database(value: i64) -> Self {
        Amount(value)
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// An active ISO 4217 currency that has a minor unit, written as its three-letter code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Currency(iso_currency::Currency);

/// The reason a string is not an accepted currency code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CurrencyError {
    #[error("must be an ISO 4217 currency code in capitals, such as EUR or USD, got {0:?}")]
    Unknown(String),
    #[error("{0} has no minor unit in ISO 4217, so an amount in minor units has no meaning")]
    NoMinorUnit(&'static str),
}

impl Currency {
    /// Looks `code` up in the ISO 4217 table of the `iso_currency` crate. Codes are matched
    /// exactly, so `usd` is rejected rather than guessed. Codes without a minor unit (XAU
    /// gold, XDR special drawing rights, XXX no currency) are rejected, because an amount in
    /// minor units cannot be read for them.
    pub fn parse(code: &str) -> Result<Self, CurrencyError> {
        let currency = iso_currency::Currency::from_code(code)
            .ok_or_else(|| CurrencyError::Unknown(code.to_owned()))?;
        if currency.exponent().is_none() {
            return Err(CurrencyError::NoMinorUnit(currency.code()));
        }
        Ok(Currency(currency))
    }

    pub fn code(self) -> &'static str {
        self.0.code()
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

/// The stage of an order. The set is closed, so any other value is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Pending,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
}

/// The reason a string is not an order status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be one of pending, paid, shipped, delivered, cancelled, got {0:?}")]
pub struct OrderStatusError(String);

impl OrderStatus {
    pub const ALL: [OrderStatus; 5] = [
        OrderStatus::Pending,
        OrderStatus::Paid,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
        OrderStatus::Cancelled,
    ];

    /// Parses the lowercase name of a status.
    pub fn parse(text: &str) -> Result<Self, OrderStatusError> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| OrderStatusError(text.to_owned()))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Paid => "paid",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Cancelled => "cancelled",
        }
    }
}

/// An order as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Order {
    #[schema(value_type = i64, minimum = 1, example = 1)]
    pub id: OrderId,
    #[schema(value_type = i64, minimum = 1, example = 1)]
    pub user_id: UserId,
    /// The amount in the minor unit of the currency (cents for EUR).
    #[schema(value_type = i64, minimum = 1, maximum = 1000000000000_i64, example = 1999)]
    pub amount: Amount,
    /// An ISO 4217 currency code.
    #[schema(value_type = String, pattern = "^[A-Z]{3}$", example = "EUR")]
    pub currency: Currency,
    pub status: OrderStatus,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime, example = "2026-12-04T15:53:18.089663Z")]
    pub created_at: OffsetDateTime,
}

/// A validated request to create an order for a user.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub amount: Amount,
    pub currency: Currency,
    pub status: OrderStatus,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(json: &str) -> serde_json::Number {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn order_id_rejects_non_positive_and_junk() {
        assert_eq!(OrderId::parse("42").map(OrderId::get), Ok(42));
        assert_eq!(OrderId::parse("0"), Err(OrderIdError::OutOfRange));
        assert_eq!(OrderId::parse("-1"), Err(OrderIdError::NotAnInteger));
        assert_eq!(OrderId::parse("1a"), Err(OrderIdError::NotAnInteger));
        assert_eq!(
            OrderId::parse("9223372036854775808"),
            Err(OrderIdError::OutOfRange)
        );
    }

    #[test]
    fn amount_accepts_one_to_max() {
        assert_eq!(Amount::parse(&number("1")).map(Amount::get), Ok(1));
        assert_eq!(Amount::parse(&number("100.0")).map(Amount::get), Ok(100));
        assert_eq!(Amount::parse(&number("1e2")).map(Amount::get), Ok(100));
        assert_eq!(
            Amount::parse(&number("1000000000000")).map(Amount::get),
            Ok(Amount::MAX)
        );
    }

    #[test]
    fn amount_rejects_zero_negative_fraction_and_huge() {
        assert_eq!(
            Amount::parse(&number("0")),
            Err(AmountError::NotPositive("0".to_owned()))
        );
        assert_eq!(
            Amount::parse(&number("-5")),
            Err(AmountError::NotPositive("-5".to_owned()))
        );
        assert_eq!(
            Amount::parse(&number("-1e300")),
            Err(AmountError::NotPositive("-1e+300".to_owned()))
        );
        assert!(matches!(
            Amount::parse(&number("1.5")),
            Err(AmountError::NotAnInteger(_))
        ));
        assert!(matches!(
            Amount::parse(&number("100.5")),
            Err(AmountError::NotAnInteger(_))
        ));
        assert!(matches!(
            Amount::parse(&number("1e13")),
            Err(AmountError::TooLarge { .. })
        ));
        assert!(matches!(
            Amount::parse(&number("1000000000001")),
            Err(AmountError::TooLarge { .. })
        ));
        assert!(matches!(
            Amount::parse(&number("18446744073709551615")),
            Err(AmountError::TooLarge { .. })
        ));
    }

    #[test]
    fn currency_accepts_iso_codes_with_minor_units() {
        assert_eq!(Currency::parse("EUR").map(Currency::code), Ok("EUR"));
        assert_eq!(Currency::parse("JPY").map(Currency::code), Ok("JPY"));
        assert_eq!(Currency::parse("BHD").map(Currency::code), Ok("BHD"));
    }

    #[test]
    fn currency_rejects_unknown_lowercase_and_no_minor_unit() {
        for code in ["", "usd", "US", "USDX", "ABC", "€"] {
            assert_eq!(
                Currency::parse(code),
                Err(CurrencyError::Unknown(code.to_owned())),
                "{code:?}"
            );
        }
        assert_eq!(
            Currency::parse("XAU"),
            Err(CurrencyError::NoMinorUnit("XAU"))
        );
        assert_eq!(
            Currency::parse("XXX"),
            Err(CurrencyError::NoMinorUnit("XXX"))
        );
    }

    #[test]
    fn status_is_a_closed_set() {
        for status in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(status.as_str()), Ok(status));
        }
        for text in ["", "Pending", "canceled", "refunded"] {
            assert!(OrderStatus::parse(text).is_err(), "{text:?}");
        }
    }
}
