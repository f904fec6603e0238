//! Embedded schema migrations, one history per role (D43): a role's
//! database receives that role's tables only, and a database shared by
//! several roles (one PostgreSQL for a whole node) records each role's
//! versions apart in `duokey_migrations (role, version)`.
//!
//! Databases made before the split recorded one shared history in
//! `duokey_schema (version)`, every role's tables in every database. Such a
//! database is adopted on first open: each script whose statements the
//! shared history already ran (its `legacy` version) is recorded as
//! applied, not run again.

use crate::Result;
use sqlx::{AnyPool, Executor, Row};

/// The server role whose tables a migration creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    As,
    Gms,
    Cs,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::As => "as",
            Role::Gms => "gms",
            Role::Cs => "cs",
        }
    }
}

/// One migration: its role and version, the version of the shared history
/// (before D43) that ran the same statements, and its two scripts.
struct Migration {
    role: Role,
    version: i64,
    legacy: i64,
    sqlite: &'static str,
    postgres: &'static str,
}

macro_rules! migration {
    ($role:ident, $version:literal, $legacy:literal, $file:literal) => {
        Migration {
            role: Role::$role,
            version: $version,
            legacy: $legacy,
            sqlite: include_str!(concat!("../migrations/sqlite/", $file)),
            postgres: include_str!(concat!("../migrations/postgres/", $file)),
        }
    };
}

/// Every migration; each role applies its own in this order.
const MIGRATIONS: &[Migration] = &[
    migration!(As, 1, 1, "as/0001_tokens.sql"),
    migration!(As, 2, 4, "as/0002_certs.sql"),
    migration!(Gms, 1, 1, "gms/0001_groups.sql"),
    migration!(Gms, 2, 2, "gms/0002_changes.sql"),
    migration!(Cs, 1, 1, "cs/0001_relay.sql"),
    migration!(Cs, 2, 3, "cs/0002_departed.sql"),
    // Never part of the shared history (it ended at 4).
    migration!(Cs, 3, 5, "cs/0003_heads.sql"),
    migration!(Cs, 4, 5, "cs/0004_inbox_heads.sql"),
    migration!(Gms, 3, 5, "gms/0003_rotation_lease.sql"),
    migration!(Cs, 5, 5, "cs/0005_msg_ids.sql"),
    migration!(As, 3, 5, "as/0003_passwords.sql"),
    migration!(As, 4, 5, "as/0004_login_attempts.sql"),
];

/// Advisory lock key that serialises migrations of concurrent PostgreSQL clients.
const PG_LOCK: i64 = 0x6475_6f6b_6579;

/// Which script set a database uses.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// Applies `role`'s migrations that `pool`'s database lacks.
pub(crate) async fn run(pool: &AnyPool, backend: Backend, role: Role) -> Result<()> {
    let mut conn = pool.acquire().await?;
    if let Backend::Postgres = backend {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(PG_LOCK)
            .execute(&mut *conn)
            .await?;
    }
    let result = apply(&mut conn, backend, role).await;
    if let Backend::Postgres = backend {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(PG_LOCK)
            .execute(&mut *conn)
            .await?;
    }
    result
}

async fn apply(conn: &mut sqlx::AnyConnection, backend: Backend, role: Role) -> Result<()> {
    conn.execute(
        "CREATE TABLE IF NOT EXISTS duokey_migrations \
         (role TEXT NOT NULL, version BIGINT NOT NULL, PRIMARY KEY (role, version))",
    )
    .await?;
    adopt_legacy(conn, backend, role).await?;
    let row =
        sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM duokey_migrations WHERE role = $1")
            .bind(role.name())
            .fetch_one(&mut *conn)
            .await?;
    let current: i64 = row.try_get("v")?;
    for m in pending(role, current) {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        tx.execute(match backend {
            Backend::Sqlite => m.sqlite,
            Backend::Postgres => m.postgres,
        })
        .await?;
        record(&mut tx, m).await?;
        tx.commit().await?;
        tracing::info!(
            role = role.name(),
            version = m.version,
            "applied schema migration"
        );
    }
    Ok(())
}

/// `role`'s migrations above version `current`, in order.
fn pending(role: Role, current: i64) -> impl Iterator<Item = &'static Migration> {
    MIGRATIONS
        .iter()
        .filter(move |m| m.role == role && m.version > current)
}

/// Records `m` as applied (idempotent).
async fn record(conn: &mut sqlx::AnyConnection, m: &Migration) -> Result<()> {
    sqlx::query(
        "INSERT INTO duokey_migrations (role, version) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(m.role.name())
    .bind(m.version)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records as applied `role`'s migrations that a pre-split shared history
/// (`duokey_schema`) already ran.
async fn adopt_legacy(conn: &mut sqlx::AnyConnection, backend: Backend, role: Role) -> Result<()> {
    let exists = match backend {
        Backend::Sqlite => {
            "SELECT COUNT(*) AS n FROM sqlite_master \
             WHERE type = 'table' AND name = 'duokey_schema'"
        }
        Backend::Postgres => {
            "SELECT COUNT(*) AS n FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = 'duokey_schema'"
        }
    };
    let n: i64 = sqlx::query(exists)
        .fetch_one(&mut *conn)
        .await?
        .try_get("n")?;
    if n == 0 {
        return Ok(());
    }
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM duokey_schema")
        .fetch_one(&mut *conn)
        .await?;
    let legacy: i64 = row.try_get("v")?;
    for m in MIGRATIONS
        .iter()
        .filter(|m| m.role == role && m.legacy <= legacy)
    {
        record(conn, m).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_history_is_numbered_one_by_one() {
        for role in [Role::As, Role::Gms, Role::Cs] {
            let versions: Vec<i64> = pending(role, 0).map(|m| m.version).collect();
            let expected: Vec<i64> = (1..=i64::try_from(versions.len()).unwrap()).collect();
            assert_eq!(versions, expected, "{role:?}");
        }
    }

    #[test]
    fn each_pre_split_version_maps_to_scripts_of_the_tables_it_made() {
        // Shared history: 1 every role's first tables, 2 gms_changes,
        // 3 cs_departed, 4 as_certs.
        let legacy = |v: i64| -> Vec<(Role, i64)> {
            MIGRATIONS
                .iter()
                .filter(|m| m.legacy == v)
                .map(|m| (m.role, m.version))
                .collect()
        };
        assert_eq!(
            legacy(1),
            vec![(Role::As, 1), (Role::Gms, 1), (Role::Cs, 1)]
        );
        assert_eq!(legacy(2), vec![(Role::Gms, 2)]);
        assert_eq!(legacy(3), vec![(Role::Cs, 2)]);
        assert_eq!(legacy(4), vec![(Role::As, 2)]);
    }

    #[test]
    fn a_role_script_touches_only_its_role_tables() {
        for m in MIGRATIONS {
            let prefix = match m.role {
                Role::As => ["enrol_tokens", "as_"],
                Role::Gms => ["gms_", "gms_"],
                Role::Cs => ["cs_", "cs_"],
            };
            for script in [m.sqlite, m.postgres] {
                let names: Vec<String> = script
                    .lines()
                    .filter(|l| !l.starts_with("--"))
                    .flat_map(table_names)
                    .collect();
                assert!(!names.is_empty(), "{:?} v{}", m.role, m.version);
                for name in names {
                    assert!(
                        prefix.iter().any(|p| name.starts_with(p)),
                        "{:?} v{} names {name}",
                        m.role,
                        m.version
                    );
                }
            }
        }
    }

    /// The names a DDL line creates or alters: the word after `TABLE` or
    /// `ON`, skipping `IF NOT EXISTS`.
    fn table_names(line: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut words = line.split_whitespace().peekable();
        while let Some(w) = words.next() {
            if w == "TABLE" || w == "ON" {
                while words
                    .next_if(|n| ["IF", "NOT", "EXISTS"].contains(n))
                    .is_some()
                {}
                if let Some(n) = words.next() {
                    names.push(n.trim_end_matches(['(', ';']).to_owned());
                }
            }
        }
        names
    }
}
