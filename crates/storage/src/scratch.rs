//! Throw-away PostgreSQL schemas: `duokey demo --cluster` and the tests run
//! a whole cluster in a schema of their own, so that they never meet
//! another run's tables in a shared database, and leave nothing behind.

use crate::{Db, Error, Result};
use sqlx::Row;

/// A schema created for one run, and the URL whose connections use it.
#[derive(Debug)]
pub struct Schema {
    /// `url` with this schema as the connections' search path: what the
    /// nodes of the run are given.
    pub url: String,
    /// The schema's name.
    pub name: String,
    admin: String,
}

impl Schema {
    /// Creates a schema named `prefix` + a unique suffix in the PostgreSQL
    /// database at `url`.
    pub async fn create(url: &str, prefix: &str) -> Result<Schema> {
        if !(url.starts_with("postgres:") || url.starts_with("postgresql:")) {
            return Err(Error::UnsupportedUrl(format!(
                "{url} (a postgres:// URL is needed)"
            )));
        }
        let name = format!("{prefix}{}", unique_suffix());
        let db = Db::open(url).await?;
        let made = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(db.w())
            .await;
        db.close().await;
        made?;
        let sep = if url.contains('?') { '&' } else { '?' };
        Ok(Schema {
            url: format!("{url}{sep}options=-c%20search_path%3D{name}"),
            name,
            admin: url.to_owned(),
        })
    }

    /// Drops the schema and everything in it.
    pub async fn drop(self) -> Result<()> {
        let db = Db::open(&self.admin).await?;
        let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            self.name
        )))
        .execute(db.w())
        .await;
        db.close().await;
        dropped.map(drop).map_err(Error::from)
    }
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}_{:x}", std::process::id(), nanos)
}

impl Db {
    /// Whether any row of any table in this PostgreSQL database's current
    /// schema holds one of `secrets` (every column in PostgreSQL's text
    /// form, where bytes are hex): what a database operator can read.
    /// SQLite databases are files: scan those instead.
    pub async fn rows_hold_any(&self, secrets: &[[u8; 32]]) -> Result<bool> {
        if self.is_sqlite() {
            return Err(Error::UnsupportedUrl(
                "sqlite (scan the database files instead)".into(),
            ));
        }
        let tables: Vec<String> = sqlx::query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
        )
        .fetch_all(self.r())
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?;
        let hexes: Vec<String> = secrets
            .iter()
            .map(|s| s.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        for table in tables {
            let sql = format!("SELECT t::text FROM \"{table}\" t");
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(self.r())
                .await?;
            for row in rows {
                let text = row.try_get::<String, _>(0)?;
                if hexes.iter().any(|h| text.contains(h.as_str())) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}
