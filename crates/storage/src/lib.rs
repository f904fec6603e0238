//! # duokey-storage — server storage (SPEC §6)
//!
//! Each role has a store with only its own methods: [`AsStore`] (tokens,
//! certificates issued), [`GmsStore`] (groups, the membership log, grants),
//! [`CsStore`] (directory, inboxes, group logs) — a CS cannot call
//! `create_group` — and its own tables, made by its own migration history
//! (a CS database holds no AS or GMS table), on SQLite files or
//! PostgreSQL by the same code: every query goes through sqlx's
//! `Any` driver with `$n` placeholders, which both databases accept. The
//! database is chosen by its URL (`sqlite://…` or `postgres://…`).
//!
//! SQLite runs in WAL mode with `synchronous = FULL`: a transaction that
//! returned is on disk, so a crash loses nothing that was acknowledged
//! (SPEC §5). Writes go through a single connection, reads through a pool,
//! so writers never fail with "database is locked".
#![forbid(unsafe_code)]

pub mod accounts;
pub mod cs;
pub mod gms;
mod migrate;
pub mod scratch;

pub use accounts::AsStore;
pub use cs::CsStore;
pub use gms::GmsStore;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};
use std::time::Duration;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database refused or failed an operation.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored value does not decode (corruption or a bug).
    #[error("corrupt stored value: {0}")]
    Corrupt(&'static str),
    /// The database file could not be created.
    #[error("cannot create the database file: {0}")]
    Io(#[from] std::io::Error),
    /// A number from a request is above what the database stores (2^63 − 1):
    /// the request is wrong, not the database.
    #[error("a number in the request is out of range (at most 2^63 - 1)")]
    OutOfRange,
    /// The database URL names an unsupported backend.
    #[error("unsupported database URL (use sqlite://PATH or postgres://…): {0}")]
    UnsupportedUrl(String),
}

/// How a server answers a storage failure (one rule for every role): a
/// number out of range is the request's fault (`OUT_OF_RANGE`); anything
/// else is logged here and answered `UNAVAILABLE` ("retry"), without the
/// database's own words, which are for the operator's log only.
impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        if let Error::OutOfRange = e {
            return tonic::Status::out_of_range(e.to_string());
        }
        tracing::error!(error = %e, "storage failure");
        tonic::Status::unavailable("storage unavailable, retry")
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Defines a role's store: its database ([`Db`], reached through `Deref`
/// for `checkpoint` and `close`) with only that role's methods, so that one
/// role's code cannot touch another's tables.
macro_rules! role_store {
    ($(#[$doc:meta])* $name:ident, $role:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(crate::Db);

        impl $name {
            /// Opens (creating if needed) the database at `url` and applies
            /// this role's schema migrations.
            pub async fn open(url: &str) -> crate::Result<Self> {
                Self::on(crate::Db::open(url).await?).await
            }

            /// Opens the SQLite file at `path`, as [`Self::open`].
            pub async fn open_sqlite(path: &std::path::Path) -> crate::Result<Self> {
                Self::on(crate::Db::open_sqlite(path).await?).await
            }

            /// This role's view of an open database, after applying this
            /// role's migrations to it (a database several roles share).
            pub async fn on(db: crate::Db) -> crate::Result<Self> {
                db.migrate(crate::migrate::Role::$role).await?;
                Ok(Self(db))
            }
        }

        impl std::ops::Deref for $name {
            type Target = crate::Db;
            fn deref(&self) -> &crate::Db {
                &self.0
            }
        }
    };
}
pub(crate) use role_store;

/// A role's database: a writer and a reader pool on the same database.
#[derive(Debug, Clone)]
pub struct Db {
    write: AnyPool,
    read: AnyPool,
    sqlite: bool,
}

impl Db {
    /// Opens (creating if needed) the database at `url`; a role's store
    /// (`AsStore::on`…) then applies that role's migrations.
    pub async fn open(url: &str) -> Result<Db> {
        install_default_drivers();
        let db = if let Some(path) = url.strip_prefix("sqlite://") {
            create_private(path.split('?').next().unwrap_or(path))?;
            let url = if url.contains('?') {
                url.to_owned()
            } else {
                format!("{url}?mode=rwc")
            };
            let write = sqlite_pool(&url, 1).await?;
            let read = sqlite_pool(&url, 4).await?;
            Db {
                write,
                read,
                sqlite: true,
            }
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = AnyPoolOptions::new()
                .max_connections(16)
                // No idle reaper: see `sqlite_pool`.
                .idle_timeout(None)
                .max_lifetime(None)
                .connect(url)
                .await?;
            Db {
                write: pool.clone(),
                read: pool,
                sqlite: false,
            }
        } else {
            return Err(Error::UnsupportedUrl(url.to_owned()));
        };
        Ok(db)
    }

    /// Opens the SQLite file at `path`.
    pub async fn open_sqlite(path: &std::path::Path) -> Result<Db> {
        Db::open(&format!("sqlite://{}", path.display())).await
    }

    /// Applies `role`'s migrations that this database lacks.
    async fn migrate(&self, role: migrate::Role) -> Result<()> {
        let backend = if self.sqlite {
            migrate::Backend::Sqlite
        } else {
            migrate::Backend::Postgres
        };
        migrate::run(self.w(), backend, role).await
    }

    /// Whether this is SQLite (else PostgreSQL).
    pub(crate) fn is_sqlite(&self) -> bool {
        self.sqlite
    }

    /// The pool that writes.
    pub(crate) fn w(&self) -> &AnyPool {
        &self.write
    }

    /// The pool that reads.
    pub(crate) fn r(&self) -> &AnyPool {
        &self.read
    }

    /// After erasing secrets (SPEC §7 P5): moves the WAL's pages into the
    /// database file and empties the WAL, so that the erased rows — already
    /// overwritten in their pages by `secure_delete` — survive in no file.
    /// PostgreSQL: nothing to do here (its files are the operator's to
    /// protect; see docs/SECURITY.md).
    pub async fn checkpoint(&self) -> Result<()> {
        if self.sqlite {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(self.w())
                .await?;
        }
        Ok(())
    }

    /// Closes both pools, waiting for running queries.
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

/// Creates an absent SQLite file with mode 0600 so that the database (and its
/// WAL and shared-memory files, which SQLite creates with the same mode) are
/// readable by the server's user only.
fn create_private(path: &str) -> Result<()> {
    let p = std::path::Path::new(path);
    if p.exists() || path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(p) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::Io(e)),
    }
}

async fn sqlite_pool(url: &str, max: u32) -> Result<AnyPool> {
    let pool = AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(30))
        // No idle reaper: sqlx's pool maintenance task can spin at 100 % CPU
        // for ever after a rare race in its idle count (sqlx issue 3645, seen
        // here once in a test run); local connections need no reaping.
        .idle_timeout(None)
        .max_lifetime(None)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; \
                     PRAGMA secure_delete = ON;",
                )
                .await?;
                Ok(())
            })
        })
        .connect(url)
        .await?;
    Ok(pool)
}

/// Converts a stored integer to `u64`, refusing negatives.
pub(crate) fn to_u64(v: i64, what: &'static str) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::Corrupt(what))
}

/// Reads the integer column `col` of `r` as `u64`, refusing negatives.
pub(crate) fn get_u64(r: &sqlx::any::AnyRow, col: &'static str) -> Result<u64> {
    to_u64(sqlx::Row::try_get(r, col)?, col)
}

/// A `(group_id, rn2_version)` row: which version of a group.
pub(crate) fn group_version(r: &sqlx::any::AnyRow) -> Result<(Vec<u8>, u64)> {
    Ok((
        sqlx::Row::try_get(r, "group_id")?,
        get_u64(r, "rn2_version")?,
    ))
}

/// Converts a `u64` to the database's `i64`; values above `i64::MAX` are refused.
pub(crate) fn to_i64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::OutOfRange)
}

/// A certificate chain as stored, framed by the one rule of
/// [`duokey_crypto::chain`].
pub(crate) fn encode_chain(chain: &[Vec<u8>]) -> Result<Vec<u8>> {
    duokey_crypto::chain::encode_chain(chain).map_err(|_| Error::Corrupt("certificate chain"))
}

/// Reads a chain [`encode_chain`] stored.
pub(crate) fn decode_chain(bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    duokey_crypto::chain::decode_chain(bytes).map_err(|_| Error::Corrupt("certificate chain"))
}
