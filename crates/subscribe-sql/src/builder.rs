//! [`SqlBuilder`]: the connection settings and their defaults, the pool each backend gets,
//! and a SQLite file made private to its owner.

use std::fmt;
use std::time::Duration;

use crate::error::Kind;
use crate::{Pool, Sql, SqlError};

impl Sql {
    /// Settings for the database at `url`: `postgres://[user[:password]@]host[:port]/db`, or
    /// `sqlite:path/to/file.db` (created if missing) or `sqlite::memory:` (tests).
    pub fn builder(url: impl Into<String>) -> SqlBuilder {
        SqlBuilder {
            url: url.into(),
            schema: None,
            max_connections: 10,
            op_timeout: Duration::from_secs(5),
            migrate: true,
        }
    }
}

/// Connection settings.
#[derive(Clone)]
#[must_use = "a builder does nothing until `connect` is called"]
pub struct SqlBuilder {
    url: String,
    schema: Option<String>,
    max_connections: u32,
    op_timeout: Duration,
    migrate: bool,
}

impl fmt::Debug for SqlBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlBuilder")
            .field("url", &"<redacted>")
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("op_timeout", &self.op_timeout)
            .field("migrate", &self.migrate)
            .finish()
    }
}

impl SqlBuilder {
    /// PostgreSQL only: keep the tables in this schema (created if missing), for example one
    /// per environment or per test. Default: the connection's `search_path` (usually `public`).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// PostgreSQL connections kept open (default 10); SQLite always uses one. A dispatcher
    /// holds one per claim or batch of settlements, so a handful serves many concurrent sends.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Longest wait for one operation, waiting for a connection included (default 5 s). A slow
    /// or absent database then gives a [`SqlError`] that `is_timeout()` instead of a hung
    /// request.
    pub fn op_timeout(mut self, d: Duration) -> Self {
        self.op_timeout = d;
        self
    }

    /// Whether [`connect`](Self::connect) creates or migrates the schema (default `true`).
    /// Turn it off where the schema is migrated by a deployment step ([`Sql::migrate`]).
    pub fn migrate(mut self, on: bool) -> Self {
        self.migrate = on;
        self
    }

    /// Connects (and migrates, unless turned off).
    ///
    /// # Errors
    /// A [`SqlError`] that `is_configuration()`, a connection failure or timeout, or a
    /// migration failure.
    pub async fn connect(self) -> Result<Sql, SqlError> {
        let migrate = self.migrate;
        let sql = self.lazy()?;
        if migrate {
            sql.migrate().await?;
        } else {
            sql.run(async { on_pool!(&sql, |p, _q| sqlx::query("SELECT 1").execute(p).await.map(|_| ())) })
                .await?;
        }
        Ok(sql)
    }

    /// Builds the handle without connecting: connections are made on first use (and remade
    /// after a failure), so a service can start while the database is down. Does not migrate.
    ///
    /// A SQLite file is prepared here, since it holds the access token and the grants (on
    /// Unix): missing directories of its path are created `0700` (directories that exist are
    /// left alone), a missing file is created `0600`, and an existing file, WAL or
    /// shared-memory file that the group or others may use is tightened to its owner's bits,
    /// with a warning in the log. In-memory databases have no file.
    ///
    /// # Errors
    /// A [`SqlError`] that `is_configuration()` (also for a SQLite file others may read whose
    /// mode this process cannot change), or, for SQLite, that `is_connection()` when the file
    /// or its directory cannot be created.
    pub fn lazy(self) -> Result<Sql, SqlError> {
        let url = self.url.as_str();
        let pool = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            self.postgres()?
        } else if url.starts_with("sqlite:") {
            self.sqlite()?
        } else {
            return Err(SqlError::new(Kind::InvalidUrl));
        };
        Ok(Sql { pool, op_timeout: self.op_timeout, schema: self.schema })
    }

    #[cfg(feature = "postgres")]
    fn postgres(&self) -> Result<Pool, SqlError> {
        use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
        let mut options: PgConnectOptions = self.url.parse().map_err(|_| SqlError::new(Kind::InvalidUrl))?;
        if let Some(schema) = &self.schema {
            let valid = !schema.is_empty()
                && schema.len() <= 63
                && !schema.starts_with(|c: char| c.is_ascii_digit())
                && schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !valid {
                return Err(SqlError::new(Kind::InvalidSchema));
            }
            options = options.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.op_timeout)
            .before_acquire(|conn, _| Box::pin(async move { Ok(not_stuck(conn)) }))
            .connect_lazy_with(options);
        Ok(Pool::Pg(pool))
    }

    #[cfg(not(feature = "postgres"))]
    #[allow(clippy::unused_self)] // the signature of the one built with the feature
    fn postgres(&self) -> Result<Pool, SqlError> {
        Err(SqlError::new(Kind::NotBuilt("postgres")))
    }

    #[cfg(feature = "sqlite")]
    fn sqlite(&self) -> Result<Pool, SqlError> {
        use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
        if self.schema.is_some() {
            return Err(SqlError::new(Kind::InvalidSchema));
        }
        let options: SqliteConnectOptions = self.url.parse().map_err(|_| SqlError::new(Kind::InvalidUrl))?;
        if !sqlite_in_memory(&self.url) {
            private_file(options.get_filename())?;
        }
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL loses no committed transaction on a process crash; only a power
            // loss may roll back the last ones.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(self.op_timeout);
        // One connection: SQLite has one writer at a time, and a writer waiting for the lock
        // sleeps in SQLite's busy handler (milliseconds at a time); queueing for the one
        // connection in the pool costs microseconds instead.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(self.op_timeout)
            .before_acquire(|conn, _| Box::pin(async move { Ok(not_stuck(conn)) }))
            .connect_lazy_with(options);
        Ok(Pool::Lite(pool))
    }

    #[cfg(not(feature = "sqlite"))]
    #[allow(clippy::unused_self)] // the signature of the one built with the feature
    fn sqlite(&self) -> Result<Pool, SqlError> {
        Err(SqlError::new(Kind::NotBuilt("sqlite")))
    }
}

/// Whether a `sqlite:` URL names an in-memory database (no file), read as sqlx reads it.
#[cfg(feature = "sqlite")]
fn sqlite_in_memory(url: &str) -> bool {
    let rest = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || params.split('&').any(|p| p == "mode=memory")
}

/// Makes the SQLite file at `path` private to its owner (see [`SqlBuilder::lazy`]).
#[cfg(all(feature = "sqlite", unix))]
fn private_file(path: &std::path::Path) -> Result<(), SqlError> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
    let io = |e: std::io::Error| SqlError { kind: Kind::Connection, source: Some(sqlx::Error::Io(e)) };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
    }
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    // The file (new or old) and the WAL and shared-memory files SQLite keeps beside it, which
    // it creates with the file's mode.
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = std::path::Path::new(&name);
        let Ok(meta) = std::fs::metadata(file) else { continue };
        let mode = meta.permissions().mode() & 0o7777;
        // What the group and others may do with it.
        let shared = mode & 0o077;
        if shared == 0 {
            continue;
        }
        let tightened = mode & 0o700;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(tightened))
            .map_err(|e| SqlError { kind: Kind::Exposed, source: Some(sqlx::Error::Io(e)) })?;
        tracing::warn!(
            file = %file.display(),
            was = format_args!("{mode:04o}"),
            now = format_args!("{tightened:04o}"),
            "the SQLite file (it holds the access token) could be read by other users: its mode was tightened"
        );
    }
    Ok(())
}

/// Elsewhere than Unix, the file is left to the platform's defaults.
#[cfg(all(feature = "sqlite", not(unix)))]
fn private_file(_path: &std::path::Path) -> Result<(), SqlError> {
    Ok(())
}

/// Whether an idle connection may be handed out: not when sqlx still counts a transaction open
/// on it. Every transaction of this crate ends (committed, or rolled back when dropped) before
/// its connection goes back, so one still open is a rollback that failed: SQLite rolls a
/// transaction back by itself when its disk fills up (`SQLITE_FULL`), after which sqlx's own
/// `ROLLBACK` fails and its count never comes down, and every later `BEGIN` on the connection
/// would fail ("`begin_with` at non-zero transaction depth"). Such a connection is closed and
/// another opened: the process recovers without a restart.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn not_stuck<C: sqlx::Connection>(conn: &C) -> bool {
    let stuck = conn.is_in_transaction();
    if stuck {
        tracing::warn!(
            "a database connection was left inside a transaction: it is closed and another opened"
        );
    }
    !stuck
}
