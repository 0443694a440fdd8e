//! Plain value types with validating constructors. Nothing here does I/O or depends on HTTP
//! or SQL, and a value that exists has passed its checks.

mod order;
mod preferences;
mod user;

pub use order::{
    Amount, AmountError, Currency, CurrencyError, NewOrder, Order, OrderId, OrderIdError,
    OrderStatus, OrderStatusError,
};
pub use preferences::{
    LanguageTag, LanguageTagError, Notifications, Preferences, Theme, ThemeError, TimeZone,
    TimeZoneError, VersionedPreferences,
};
pub use user::{
    Email, EmailError, NameError, NewUser, User, UserId, UserIdError, UserName, UserPatch,
};
