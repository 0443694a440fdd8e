//! The caller of a request, as its token describes it, and the authorization policy.
//!
//! The policy, for every route under /api/v1:
//!
//! - `admin` grants every operation on every user and on what belongs to users.
//! - Without `admin`, a token reads only the user whose id is its `sub` (and what belongs to
//!   that user) with `users:read`, and changes or deletes them only with `users:write`.
//!   `users:write` does not imply `users:read`.
//! - Listing users needs `admin`; creating a user needs `users:write` (or `admin`).
//!
//! A missing scope is a 403 naming the scope. A request with the right scope for another
//! user's resource gets the same 404 as an id that does not exist, so a token cannot
//! probe which ids exist.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::domain::UserId;
use crate::http::AppState;
use crate::http::problem::ApiError;

/// A scope of the `scope` claim that the policy uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `users:read`: read the token's own user and what belongs to it.
    UsersRead,
    /// `users:write`: create users, change or delete the token's own user and what belongs
    /// to it.
    UsersWrite,
    /// `admin`: every operation on every user.
    Admin,
}

impl Scope {
    /// Returns the scope's name in the `scope` claim.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::UsersRead => "users:read",
            Scope::UsersWrite => "users:write",
            Scope::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::UsersRead => 1,
            Scope::UsersWrite => 2,
            Scope::Admin => 4,
        }
    }
}

/// The set of known scopes a token carries; unknown scopes are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    /// Parses a space-separated `scope` claim.
    pub fn parse(claim: &str) -> Scopes {
        let mut bits = 0;
        for name in claim.split(' ') {
            let scope = match name {
                "users:read" => Scope::UsersRead,
                "users:write" => Scope::UsersWrite,
                "admin" => Scope::Admin,
                _ => continue,
            };
            bits |= scope.bit();
        }
        Scopes(bits)
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }
}

/// Whether an operation reads or changes a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// The caller of a request: the user its token acts for and its scopes. Handlers take it as
/// an extractor, which rejects a request without a valid token with 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    /// The `sub` claim as a user id, or `None` when it is not one (a service account).
    subject: Option<UserId>,
    scopes: Scopes,
}

impl Principal {
    pub fn new(subject: Option<UserId>, scopes: Scopes) -> Self {
        Principal { subject, scopes }
    }

    /// Returns the principal of every request when authentication is off: an administrator.
    pub fn unrestricted() -> Self {
        Principal {
            subject: None,
            scopes: Scopes(Scope::Admin.bit()),
        }
    }

    pub fn subject(&self) -> Option<UserId> {
        self.subject
    }

    /// Checks that the token carries `scope`, or `admin`, which implies every scope.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(scope) || self.scopes.contains(Scope::Admin) {
            Ok(())
        } else {
            Err(ApiError::InsufficientScope(scope.as_str()))
        }
    }

    /// Checks that the token may read or change a resource of the user `owner`: with `admin`,
    /// or with `users:read` (to read) or `users:write` (to change) when `owner` is its subject.
    /// Another user's resource gets the error `not_found` returns, the one a missing resource
    /// gets.
    pub fn authorize_owner(
        &self,
        owner: UserId,
        access: Access,
        not_found: impl FnOnce() -> ApiError,
    ) -> Result<(), ApiError> {
        if self.scopes.contains(Scope::Admin) {
            return Ok(());
        }
        self.require(match access {
            Access::Read => Scope::UsersRead,
            Access::Write => Scope::UsersWrite,
        })?;
        if self.subject == Some(owner) {
            Ok(())
        } else {
            Err(not_found())
        }
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        state.auth.authenticate(&parts.headers).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(value: &str) -> UserId {
        UserId::parse(value).unwrap()
    }

    fn principal(subject: &str, scope: &str) -> Principal {
        Principal::new(UserId::parse(subject).ok(), Scopes::parse(scope))
    }

    fn missing() -> ApiError {
        ApiError::NotFound("missing".to_owned())
    }

    #[test]
    fn scopes_parse_known_names_only() {
        let scopes = Scopes::parse("openid users:read  profile admin");
        assert!(scopes.contains(Scope::UsersRead));
        assert!(scopes.contains(Scope::Admin));
        assert!(!scopes.contains(Scope::UsersWrite));
        assert_eq!(Scopes::parse("users:reader ADMIN"), Scopes::default());
    }

    #[test]
    fn owner_reads_own_user_with_read_scope() {
        let reader = principal("7", "users:read");
        assert!(
            reader
                .authorize_owner(id("7"), Access::Read, missing)
                .is_ok()
        );
        let denied = reader.authorize_owner(id("7"), Access::Write, missing);
        assert!(matches!(
            denied,
            Err(ApiError::InsufficientScope("users:write"))
        ));
    }

    #[test]
    fn other_user_is_not_found() {
        let reader = principal("7", "users:read users:write");
        let denied = reader.authorize_owner(id("8"), Access::Read, missing);
        assert!(matches!(denied, Err(ApiError::NotFound(_))));
        let denied = reader.authorize_owner(id("8"), Access::Write, missing);
        assert!(matches!(denied, Err(ApiError::NotFound(_))));
    }

    #[test]
    fn missing_scope_is_checked_before_subject() {
        let writer = principal("7", "users:write");
        let denied = writer.authorize_owner(id("8"), Access::Read, missing);
        assert!(matches!(
            denied,
            Err(ApiError::InsufficientScope("users:read"))
        ));
    }

    #[test]
    fn admin_reaches_every_user() {
        let admin = principal("service-account", "admin");
        assert!(
            admin
                .authorize_owner(id("8"), Access::Write, missing)
                .is_ok()
        );
        assert!(admin.require(Scope::UsersWrite).is_ok());
        assert!(Principal::unrestricted().require(Scope::Admin).is_ok());
    }

    #[test]
    fn non_numeric_subject_owns_nothing() {
        let service = principal("service-account", "users:read");
        let denied = service.authorize_owner(id("1"), Access::Read, missing);
        assert!(matches!(denied, Err(ApiError::NotFound(_))));
    }
}
