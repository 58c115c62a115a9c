//! The two backends behind one small surface, so each query of `Store` is
//! written once. SQL uses `$1…$N` placeholders in both dialects: sqlx's
//! SQLite driver binds `$N` by number (sqlx-sqlite `arguments.rs`), exactly
//! like PostgreSQL, so no rewriting is needed. Rows are decoded by name
//! through [`Row::get`], which works for any type both drivers decode.
//! This module must never build SQL from values: everything is bound.

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};
use sqlx::{Postgres, Sqlite, Transaction};

use super::StoreError;

/// A bound value. Only the types the schema uses (see the migrations).
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    I64(i64),
    OptI64(Option<i64>),
    Text(String),
    OptText(Option<String>),
    Bytes(Vec<u8>),
    Bool(bool),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::I64(v)
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::OptI64(v)
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(v)
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(v.to_owned())
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::OptText(v)
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Arg::OptText(v.map(str::to_owned))
    }
}
impl From<Vec<u8>> for Arg {
    fn from(v: Vec<u8>) -> Self {
        Arg::Bytes(v)
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}

/// `args![a, b, c]` → `Vec<Arg>`.
macro_rules! args {
    ($($v:expr),* $(,)?) => { vec![$($crate::store::db::Arg::from($v)),*] };
}
pub(crate) use args;

macro_rules! bind_all {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                Arg::I64(v) => q.bind(v),
                Arg::OptI64(v) => q.bind(v),
                Arg::Text(v) => q.bind(v),
                Arg::OptText(v) => q.bind(v),
                Arg::Bytes(v) => q.bind(v),
                Arg::Bool(v) => q.bind(v),
            };
        }
        q
    }};
}

#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// One row from either backend.
pub(crate) enum Row {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

impl Row {
    /// A column by name; a type mismatch or NULL in a non-Option is `Corrupt`.
    pub(crate) fn get<T>(&self, col: &str) -> Result<T, StoreError>
    where
        T: for<'r> sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
        T: for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
    {
        use sqlx::Row as _;
        match self {
            Row::Sqlite(r) => r.try_get(col),
            Row::Postgres(r) => r.try_get(col),
        }
        .map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
    }
}

/// A borrowed connection of either backend (pooled or inside a transaction).
pub(crate) enum Conn<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

impl Conn<'_> {
    /// Runs a statement, returning the number of rows it touched.
    pub(crate) async fn execute(&mut self, sql: &str, args: Vec<Arg>) -> Result<u64, StoreError> {
        match self {
            Conn::Sqlite(c) => {
                Ok(bind_all!(sqlx::query(sql), args).execute(&mut **c).await.map_err(map_err)?.rows_affected())
            }
            Conn::Postgres(c) => {
                Ok(bind_all!(sqlx::query(sql), args).execute(&mut **c).await.map_err(map_err)?.rows_affected())
            }
        }
    }

    pub(crate) async fn fetch_optional(&mut self, sql: &str, args: Vec<Arg>) -> Result<Option<Row>, StoreError> {
        match self {
            Conn::Sqlite(c) => {
                Ok(bind_all!(sqlx::query(sql), args).fetch_optional(&mut **c).await.map_err(map_err)?.map(Row::Sqlite))
            }
            Conn::Postgres(c) => Ok(bind_all!(sqlx::query(sql), args)
                .fetch_optional(&mut **c)
                .await
                .map_err(map_err)?
                .map(Row::Postgres)),
        }
    }

    pub(crate) async fn fetch_all(&mut self, sql: &str, args: Vec<Arg>) -> Result<Vec<Row>, StoreError> {
        match self {
            Conn::Sqlite(c) => Ok(bind_all!(sqlx::query(sql), args)
                .fetch_all(&mut **c)
                .await
                .map_err(map_err)?
                .into_iter()
                .map(Row::Sqlite)
                .collect()),
            Conn::Postgres(c) => Ok(bind_all!(sqlx::query(sql), args)
                .fetch_all(&mut **c)
                .await
                .map_err(map_err)?
                .into_iter()
                .map(Row::Postgres)
                .collect()),
        }
    }
}

pub(crate) enum Pooled {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

impl Pooled {
    pub(crate) fn conn(&mut self) -> Conn<'_> {
        match self {
            Pooled::Sqlite(c) => Conn::Sqlite(c),
            Pooled::Postgres(c) => Conn::Postgres(c),
        }
    }
}

pub(crate) enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl Tx {
    pub(crate) fn conn(&mut self) -> Conn<'_> {
        match self {
            Tx::Sqlite(t) => Conn::Sqlite(t),
            Tx::Postgres(t) => Conn::Postgres(t),
        }
    }

    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(t) => t.commit().await,
            Tx::Postgres(t) => t.commit().await,
        }
        .map_err(map_err)
    }
}

impl Pool {
    pub(crate) fn backend_name(&self) -> &'static str {
        match self {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self, Pool::Postgres(_))
    }

    pub(crate) async fn acquire(&self) -> Result<Pooled, StoreError> {
        match self {
            Pool::Sqlite(p) => p.acquire().await.map(Pooled::Sqlite),
            Pool::Postgres(p) => p.acquire().await.map(Pooled::Postgres),
        }
        .map_err(map_err)
    }

    /// A transaction. On SQLite it is `BEGIN` (deferred): every transaction
    /// in the store writes first, which takes the write lock at once (waiting
    /// up to `busy_timeout`), so no snapshot can go stale under it.
    pub(crate) async fn begin(&self) -> Result<Tx, StoreError> {
        match self {
            Pool::Sqlite(p) => p.begin().await.map(Tx::Sqlite),
            Pool::Postgres(p) => p.begin().await.map(Tx::Postgres),
        }
        .map_err(map_err)
    }

    pub(crate) async fn execute(&self, sql: &str, args: Vec<Arg>) -> Result<u64, StoreError> {
        self.acquire().await?.conn().execute(sql, args).await
    }

    pub(crate) async fn fetch_optional(&self, sql: &str, args: Vec<Arg>) -> Result<Option<Row>, StoreError> {
        self.acquire().await?.conn().fetch_optional(sql, args).await
    }

    pub(crate) async fn fetch_all(&self, sql: &str, args: Vec<Arg>) -> Result<Vec<Row>, StoreError> {
        self.acquire().await?.conn().fetch_all(sql, args).await
    }

    pub(crate) async fn close(&self) {
        match self {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}

/// Sorts sqlx errors into "try again later" and "something is wrong". The
/// message is the driver's own (never our URL, never bound values).
pub(crate) fn map_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::Io(io) => StoreError::Unavailable(format!("i/o: {io}")),
        sqlx::Error::Tls(tls) => StoreError::Unavailable(format!("tls: {tls}")),
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            if is_transient(&code) {
                StoreError::Unavailable(format!("{} (code {code})", db.message()))
            } else if code.is_empty() {
                StoreError::Database(db.message().to_owned())
            } else {
                StoreError::Database(format!("{} (code {code})", db.message()))
            }
        }
        other => StoreError::Database(other.to_string()),
    }
}

/// SQLite BUSY/LOCKED (and their extended codes); PostgreSQL connection
/// exceptions (08…), shutdown (57P01–57P03) and too many connections.
fn is_transient(code: &str) -> bool {
    matches!(code, "5" | "6" | "261" | "262" | "517" | "773")
        || code.starts_with("08")
        || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
}
