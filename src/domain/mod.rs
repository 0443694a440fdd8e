//! Plain value types with validating constructors. Nothing here does I/O or depends on HTTP
//! or SQL, and a value that exists has passed its checks.

mod user;

pub use user::{
    Email, EmailError, NameError, NewUser, User, UserId, UserIdError, UserName, UserPatch,
};
