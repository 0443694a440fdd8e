//! Schema migrations, embedded in the binary: one ordered list per back end.
//!
//! Each back end records applied versions in `schema_migrations` and applies the rest in
//! order, each in its own transaction. Versions are never renumbered or edited once released.

/// One schema change.
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "create users",
        sql: include_str!("migrations/postgres/0001_create_users.sql"),
    },
    Migration {
        version: 2,
        name: "create orders and preferences",
        sql: include_str!("migrations/postgres/0002_create_orders_and_preferences.sql"),
    },
];

pub const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "create users",
        sql: include_str!("migrations/sqlite/0001_create_users.sql"),
    },
    Migration {
        version: 2,
        name: "create orders and preferences",
        sql: include_str!("migrations/sqlite/0002_create_orders_and_preferences.sql"),
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_and_back_ends_match() {
        for list in [POSTGRES, SQLITE] {
            assert!(
                list.windows(2)
                    .all(|pair| pair[0].version < pair[1].version)
            );
        }
        let names =
            |list: &[Migration]| list.iter().map(|m| (m.version, m.name)).collect::<Vec<_>>();
        assert_eq!(names(POSTGRES), names(SQLITE));
    }
}
