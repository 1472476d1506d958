//! SQL implementations of `subscribe-client`'s [`GrantLedger`](subscribe_client::GrantLedger),
//! [`TokenStore`](subscribe_client::TokenStore) and [`UsedStates`](subscribe_client::UsedStates),
//! on PostgreSQL (a fleet of instances on one database) or SQLite (one host, a file): grants
//! survive restarts, every transition of every grant is kept for audit, a used authorization
//! state is refused by every instance and after a restart, and one database can serve a fleet
//! that has no Redis.
//!
//! ```no_run
//! use std::sync::Arc;
//! use subscribe_client::Client;
//! use subscribe_sql::{Sql, SqlGrantLedger, SqlTokenStore, SqlUsedStates};
//! use subscribe_types::{AppId, AppSecret};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Or "sqlite:/var/lib/shop/grants.db". The schema is created or migrated on connect.
//! let sql = Sql::builder("postgres://shop@db.internal/shop").connect().await?;
//! let client = Client::builder(AppId::new("wx0123456789abcdef")?, AppSecret::new("…")?)
//!     .token_store(SqlTokenStore::new(sql.clone()))
//!     .used_states(SqlUsedStates::new(sql.clone()))
//!     .build()?;
//! let ledger = Arc::new(SqlGrantLedger::new(sql));
//! # let _ = (client, ledger); Ok(()) }
//! ```
//!
//! Lease times (grant reservations, the refresh lease, hold-offs) come from the database's
//! clock, never the caller's: two instances whose clocks disagree cannot both hold a live
//! reservation. A used state's mark lives the lifetime the client gives it (or until the
//! state's own expiry, when that is later), counted on the database's clock, so a client clock
//! behind the database's cannot shorten it. Each change is one transaction; the schema, its
//! indexes and the reasons for them are in the crate's `migrations/` directory, applied by
//! [`sqlx::migrate!`] and recorded in `_sqlx_migrations` (the schema version table).
//!
//! [`SqlReplayCache`] is `subscribe-events`' [`ReplayCache`](subscribe_events::replay::ReplayCache)
//! in the database: an event push replayed to any instance, or after a restart, is refused,
//! not applied again.
//!
//! A SQLite file holds the access token and the grants: the crate creates it `0600` and the
//! directories it creates for it `0700` (on Unix), and tightens an existing file that others
//! may read (see [`SqlBuilder::lazy`]).

#[cfg(not(any(feature = "postgres", feature = "sqlite")))]
compile_error!("subscribe-sql needs at least one of its `postgres` and `sqlite` features");

/// Runs `$body` with `$p` bound to the handle's pool and `$q` to its backend's [`Queries`]:
/// one body, type-checked once per backend.
macro_rules! on_pool {
    ($sql:expr, |$p:ident, $q:ident| $body:expr) => {
        match &$sql.pool {
            #[cfg(feature = "postgres")]
            $crate::Pool::Pg($p) => {
                let $q: &$crate::Queries = &$crate::PG;
                $body
            }
            #[cfg(feature = "sqlite")]
            $crate::Pool::Lite($p) => {
                let $q: &$crate::Queries = &$crate::LITE;
                $body
            }
        }
    };
}

mod ledger;
mod replay;
#[cfg(feature = "events")]
mod results;
mod token;
mod used_states;

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

pub use crate::ledger::{EventKind, GrantEvent, Resolution, ReviewItem, SqlGrantLedger};
pub use crate::replay::SqlReplayCache;
#[cfg(feature = "events")]
pub use crate::results::SqlNotificationResults;
pub use crate::token::SqlTokenStore;
pub use crate::used_states::SqlUsedStates;

/// A database operation failed, or the handle could not be built. Never contains the database
/// URL (it may hold a password) nor a token.
///
/// Opaque: ask it what happened with the predicates; the driver's own error, when there is
/// one, is the [`source`](std::error::Error::source).
///
/// ```
/// use subscribe_sql::Sql;
/// let e = Sql::builder("mysql://db/shop").lazy().unwrap_err();
/// assert!(e.is_configuration());
/// assert_eq!(e.to_string(), "invalid database URL (expected postgres://… or sqlite:…)");
/// ```
#[derive(Debug)]
pub struct SqlError {
    kind: Kind,
    source: Option<sqlx::Error>,
}

#[derive(Debug)]
enum Kind {
    InvalidUrl,
    #[cfg_attr(all(feature = "postgres", feature = "sqlite"), allow(dead_code))]
    NotBuilt(&'static str),
    InvalidSchema,
    Timeout(Duration),
    Connection,
    Authentication,
    Database,
    Migration,
    Corrupt {
        what: &'static str,
    },
    /// A SQLite file others may read, whose mode could not be tightened.
    #[cfg_attr(not(all(feature = "sqlite", unix)), allow(dead_code))]
    Exposed,
}

impl SqlError {
    fn new(kind: Kind) -> Self {
        Self { kind, source: None }
    }

    pub(crate) fn corrupt(what: &'static str) -> Self {
        Self::new(Kind::Corrupt { what })
    }

    /// No answer within the operation timeout (or no free connection in time).
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, Kind::Timeout(_))
    }

    /// The connection could not be made or was lost.
    pub fn is_connection(&self) -> bool {
        matches!(self.kind, Kind::Connection)
    }

    /// The database refused the credentials: a wrong password, an unknown user, or no rule of
    /// the server's (`pg_hba.conf`) that admits them (PostgreSQL's SQLSTATE class 28). Fix the
    /// configuration; retrying does not help.
    pub fn is_authentication(&self) -> bool {
        matches!(self.kind, Kind::Authentication)
    }

    /// The URL, the schema name or the crate's features do not fit, or a SQLite file that
    /// others may read could not be made private: fix the configuration.
    pub fn is_configuration(&self) -> bool {
        matches!(self.kind, Kind::InvalidUrl | Kind::NotBuilt(_) | Kind::InvalidSchema | Kind::Exposed)
    }

    /// The schema could not be created or migrated.
    pub fn is_migration(&self) -> bool {
        matches!(self.kind, Kind::Migration)
    }

    /// A stored value is not in the format this crate writes.
    pub fn is_corrupt(&self) -> bool {
        matches!(self.kind, Kind::Corrupt { .. })
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::InvalidUrl => f.write_str("invalid database URL (expected postgres://… or sqlite:…)"),
            Kind::NotBuilt(feature) => {
                write!(
                    f,
                    "this build of subscribe-sql has no {feature} support (its `{feature}` feature is off)"
                )
            }
            Kind::InvalidSchema => f.write_str(
                "invalid schema: 1 to 63 characters of [a-z0-9_], not starting with a digit, PostgreSQL only",
            ),
            Kind::Timeout(d) => write!(f, "the database did not answer within {d:?}"),
            Kind::Connection => f.write_str("the connection to the database failed"),
            Kind::Authentication => f.write_str("the database refused the credentials"),
            Kind::Database => f.write_str("the database answered with an error"),
            Kind::Migration => f.write_str("the database schema could not be migrated"),
            Kind::Corrupt { what } => write!(f, "corrupt value in the database at {what}"),
            Kind::Exposed => f.write_str(
                "the SQLite file can be read by other users and its mode could not be set to 0600: \
                 it holds the access token, fix its owner or mode",
            ),
        }
    }
}

impl std::error::Error for SqlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<sqlx::Error> for SqlError {
    fn from(e: sqlx::Error) -> Self {
        Self { kind: kind_of(&e), source: Some(e) }
    }
}

fn kind_of(e: &sqlx::Error) -> Kind {
    use sqlx::Error as E;
    match e {
        E::PoolTimedOut => Kind::Timeout(Duration::ZERO),
        E::Io(_) | E::Tls(_) | E::PoolClosed | E::WorkerCrashed | E::Protocol(_) => Kind::Connection,
        E::Configuration(_) => Kind::InvalidUrl,
        E::Migrate(_) => Kind::Migration,
        E::ColumnDecode { .. } | E::Decode(_) | E::ColumnNotFound(_) | E::TypeNotFound { .. } => {
            Kind::Corrupt { what: "a column" }
        }
        E::Database(db) if refused_credentials(&**db) => Kind::Authentication,
        _ => Kind::Database,
    }
}

/// Whether PostgreSQL refused to let the connection in: SQLSTATE class 28, "invalid
/// authorization specification" (28P01 a wrong password, 28000 an unknown role or no
/// `pg_hba.conf` rule). SQLite has no login.
#[cfg_attr(not(feature = "postgres"), allow(unused_variables))] // SQLite alone: nothing to refuse
fn refused_credentials(db: &dyn sqlx::error::DatabaseError) -> bool {
    #[cfg(feature = "postgres")]
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        return pg.code().starts_with("28");
    }
    false
}

/// Which database a [`Sql`] handle talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
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

#[derive(Clone, Debug)]
enum Pool {
    #[cfg(feature = "postgres")]
    Pg(sqlx::PgPool),
    #[cfg(feature = "sqlite")]
    Lite(sqlx::SqlitePool),
}

/// A shared pool of connections to the database (cheap to clone). Give the same handle to an
/// [`SqlGrantLedger`] and an [`SqlTokenStore`].
#[derive(Clone)]
pub struct Sql {
    pool: Pool,
    op_timeout: Duration,
    schema: Option<String>,
}

impl fmt::Debug for Sql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sql")
            .field("backend", &self.backend())
            .field("schema", &self.schema)
            .field("op_timeout", &self.op_timeout)
            .finish_non_exhaustive()
    }
}

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

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        match &self.pool {
            #[cfg(feature = "postgres")]
            Pool::Pg(_) => Backend::Postgres,
            #[cfg(feature = "sqlite")]
            Pool::Lite(_) => Backend::Sqlite,
        }
    }

    /// Creates the schema or brings it to this version of the crate (idempotent; safe to run
    /// from several instances at once: PostgreSQL serializes them with an advisory lock).
    ///
    /// # Errors
    /// A [`SqlError`] that `is_migration()`, or a connection failure or timeout.
    pub async fn migrate(&self) -> Result<(), SqlError> {
        match &self.pool {
            #[cfg(feature = "postgres")]
            Pool::Pg(p) => {
                if let Some(schema) = &self.schema {
                    // Validated by the builder: [a-z0-9_] only.
                    let create = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
                    self.run(async { sqlx::query(&create).execute(p).await.map(|_| ()) }).await?;
                }
                let migrator = sqlx::migrate!("./migrations/postgres");
                self.run_migration(migrator.run(p)).await
            }
            #[cfg(feature = "sqlite")]
            Pool::Lite(p) => self.run_migration(sqlx::migrate!("./migrations/sqlite").run(p)).await,
        }
    }

    /// The schema versions applied, oldest first.
    ///
    /// # Errors
    /// A connection failure or timeout; an error when the schema was never migrated.
    pub async fn schema_versions(&self) -> Result<Vec<i64>, SqlError> {
        let sql = "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version";
        self.run(async { on_pool!(self, |p, _q| sqlx::query_scalar(sql).fetch_all(p).await) }).await
    }

    async fn run_migration(
        &self,
        op: impl Future<Output = Result<(), sqlx::migrate::MigrateError>>,
    ) -> Result<(), SqlError> {
        // Creating a schema can take longer than one operation: allow it more.
        match tokio::time::timeout(self.op_timeout * 6, op).await {
            Ok(Ok(())) => Ok(()),
            // The migrator's first step is a connection: a refused login or an unreachable
            // server is that, not a migration that went wrong.
            Ok(Err(sqlx::migrate::MigrateError::Execute(e)))
                if matches!(kind_of(&e), Kind::Authentication | Kind::Connection | Kind::Timeout(_)) =>
            {
                Err(self.timed(e.into()))
            }
            Ok(Err(e)) => Err(SqlError { kind: Kind::Migration, source: Some(e.into()) }),
            Err(_) => Err(SqlError::new(Kind::Timeout(self.op_timeout * 6))),
        }
    }

    /// Runs one operation under the operation timeout.
    async fn run<T>(&self, op: impl Future<Output = Result<T, sqlx::Error>>) -> Result<T, SqlError> {
        match tokio::time::timeout(self.op_timeout, op).await {
            Ok(r) => r.map_err(|e| self.timed(e.into())),
            Err(_) => Err(SqlError::new(Kind::Timeout(self.op_timeout))),
        }
    }

    /// A pool's timeout (which does not say how long it waited) as the operation timeout.
    fn timed(&self, e: SqlError) -> SqlError {
        match e {
            SqlError { kind: Kind::Timeout(_), source } => {
                SqlError { kind: Kind::Timeout(self.op_timeout), source }
            }
            other => other,
        }
    }
}

/// The statements that differ between the backends, with `NOW_MS` (the database's clock in
/// milliseconds since the Unix epoch) filled in.
#[derive(Debug)]
struct Queries {
    /// What starts a write transaction. SQLite's `IMMEDIATE` takes the write lock first (waiting
    /// for it under the busy timeout), so a transaction never fails upgrading a read lock.
    begin: &'static str,
    /// Locks the selected rows until the transaction ends (PostgreSQL).
    for_update: &'static str,
    /// Locks the selected rows, skipping those another transaction holds (PostgreSQL).
    skip_locked: &'static str,
    /// The larger of two values: `GREATEST` (PostgreSQL), the two-argument `MAX` (SQLite).
    greatest: &'static str,
    now_ms: &'static str,
}

#[cfg(feature = "postgres")]
static PG: LazyLock<Queries> = LazyLock::new(|| Queries {
    begin: "BEGIN",
    for_update: " FOR UPDATE",
    skip_locked: " FOR UPDATE SKIP LOCKED",
    greatest: "GREATEST(",
    now_ms: "(floor(extract(epoch from now()) * 1000)::bigint)",
});

#[cfg(feature = "sqlite")]
static LITE: LazyLock<Queries> = LazyLock::new(|| Queries {
    begin: "BEGIN IMMEDIATE",
    for_update: "",
    skip_locked: "",
    greatest: "MAX(",
    // julianday is a double: round, or a whole millisecond can come out as …999.
    now_ms: "(CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER))",
});

impl Queries {
    /// `sql` with `NOW_MS`, `FOR_UPDATE`, `SKIP_LOCKED` and `GREATEST(` filled in.
    fn sql(&self, sql: &str) -> String {
        sql.replace("NOW_MS", self.now_ms)
            .replace(" FOR_UPDATE", self.for_update)
            .replace(" SKIP_LOCKED", self.skip_locked)
            .replace("GREATEST(", self.greatest)
    }
}

/// Milliseconds since the Unix epoch, as the tables keep times.
fn from_millis(ms: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A duration in milliseconds, for adding to the database's clock.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2).max(1)
}
