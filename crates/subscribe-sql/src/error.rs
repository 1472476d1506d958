//! [`SqlError`]: why a database operation failed or the handle could not be built, and the
//! driver's errors sorted into its kinds.

use std::fmt;
use std::time::Duration;

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
/// assert_eq!(e.kind(), subscribe_client::ErrorKind::Configuration);
/// assert_eq!(e.to_string(), "invalid database URL (expected postgres://… or sqlite:…)");
/// ```
#[derive(Debug)]
pub struct SqlError {
    pub(crate) kind: Kind,
    pub(crate) source: Option<sqlx::Error>,
}

#[derive(Debug)]
pub(crate) enum Kind {
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
    pub(crate) fn new(kind: Kind) -> Self {
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

    /// What to do about it, as every error of the client says: `Configuration` when someone
    /// must act (credentials, the URL, the schema, a failed migration, a corrupt value, a file
    /// others may read), `Retryable` otherwise (the database is out, slow or refused the
    /// statement for now). The ledger's and the stores' errors are sorted the same way.
    ///
    /// ```
    /// use subscribe_client::ErrorKind;
    /// let e = subscribe_sql::Sql::builder("mysql://db/shop").lazy().unwrap_err();
    /// assert_eq!(e.kind(), ErrorKind::Configuration);
    /// ```
    pub fn kind(&self) -> subscribe_client::ErrorKind {
        if self.is_authentication() || self.is_configuration() || self.is_migration() || self.is_corrupt() {
            subscribe_client::ErrorKind::Configuration
        } else {
            subscribe_client::ErrorKind::Retryable
        }
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

pub(crate) fn kind_of(e: &sqlx::Error) -> Kind {
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
