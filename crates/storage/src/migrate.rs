//! Embedded schema migrations, applied in order once each.

use crate::Result;
use sqlx::{AnyPool, Executor, Row};

/// (version, SQLite script).
const SQLITE: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../migrations/sqlite/0002_membership.sql")),
    (3, include_str!("../migrations/sqlite/0003_departed.sql")),
    (4, include_str!("../migrations/sqlite/0004_certs.sql")),
];
/// (version, PostgreSQL script): the same tables with PostgreSQL's type names.
const POSTGRES: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (
        2,
        include_str!("../migrations/postgres/0002_membership.sql"),
    ),
    (3, include_str!("../migrations/postgres/0003_departed.sql")),
    (4, include_str!("../migrations/postgres/0004_certs.sql")),
];
/// Advisory lock key that serialises migrations of concurrent PostgreSQL clients.
const PG_LOCK: i64 = 0x6475_6f6b_6579;

/// Which script set a database uses.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

pub(crate) async fn run(pool: &AnyPool, backend: Backend) -> Result<()> {
    let mut conn = pool.acquire().await?;
    let scripts = match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => {
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(PG_LOCK)
                .execute(&mut *conn)
                .await?;
            POSTGRES
        }
    };
    let result = apply(&mut conn, scripts).await;
    if let Backend::Postgres = backend {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(PG_LOCK)
            .execute(&mut *conn)
            .await?;
    }
    result
}

async fn apply(
    conn: &mut sqlx::AnyConnection,
    scripts: &'static [(i64, &'static str)],
) -> Result<()> {
    conn.execute("CREATE TABLE IF NOT EXISTS duokey_schema (version BIGINT PRIMARY KEY)")
        .await?;
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM duokey_schema")
        .fetch_one(&mut *conn)
        .await?;
    let current: i64 = row.try_get("v")?;
    for (version, script) in scripts.iter().filter(|(v, _)| *v > current) {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        tx.execute(*script).await?;
        sqlx::query("INSERT INTO duokey_schema (version) VALUES ($1)")
            .bind(*version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version, "applied schema migration");
    }
    Ok(())
}
