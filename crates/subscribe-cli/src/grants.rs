//! `wxsub grants`: the grant ledger in a SQL database or in Redis (`--database`, or
//! `DATABASE_URL`): every subcommand works on each, through the `GrantLedger` trait.

use std::io::Write as _;
use std::sync::Arc;

use clap::{Subcommand, ValueEnum};
use subscribe_client::{
    Client, DispatchObserver, Dispatcher, GrantKey, GrantLedger, GrantScope, OutcomeKind, RecipientOutcome,
    Resolution, ReviewItem, SharedUsedStates,
};
use subscribe_redis::{Redis, RedisGrantLedger, RedisUsedStates};
use subscribe_sql::{Sql, SqlGrantLedger, SqlUsedStates};
use subscribe_types::{AuthorizationAnswer, OneTimeMessage, OpenId, Scene, TemplateId};

use crate::options::{Cli, Usage, parse};
use crate::output::{Exit, one_line};

/// What `wxsub grants` does.
#[derive(Debug, Subcommand)]
pub(crate) enum GrantsCommand {
    /// Record the grant a confirmed authorization gives (from WeChat's redirect: a URL, a path
    /// and query, or `?` and the query string), once its state is verified: signed with --secret for this app, template
    /// and scene (as `auth-url --signed` makes it), bound to --session, not expired, and not
    /// used by another answer (the used states are kept in the database or Redis, so a replay
    /// is refused in any later run).
    Record {
        /// The callback URL or query.
        url_or_query: String,
        /// The session id the signed state is bound to (`auth-url --signed --session`); not
        /// empty, and required unless --unverified.
        #[arg(
            long,
            conflicts_with = "unverified",
            required_unless_present = "unverified",
            value_parser = crate::secrets::session
        )]
        session: Option<subscribe_client::Session>,
        /// Record the grant without checking the state at all (a callback of an `auth-url`
        /// without --signed, or of another system): anyone who can make up a callback can then
        /// add a grant.
        #[arg(long)]
        unverified: bool,
    },
    /// List the users of a template and scene with a pending grant (or one under review), as
    /// JSON lines, in openid order.
    List {
        #[arg(long)]
        template_id: String,
        #[arg(long)]
        scene: String,
        /// Which grants.
        #[arg(long, value_enum, default_value_t = Listed::Pending)]
        state: Listed,
        /// Start after this openid (the last one of the previous page).
        #[arg(long)]
        after: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Grants of a template and scene by state, as one JSON line.
    Counts {
        #[arg(long)]
        template_id: String,
        #[arg(long)]
        scene: String,
    },
    /// Send one message to every pending grant of a template and scene: one JSON line per
    /// recipient, a summary on stderr.
    Dispatch {
        #[command(flatten)]
        message: crate::send::MessageArgs,
        #[command(flatten)]
        pacing: crate::batch::Pacing,
        /// How long, in seconds, a claimed grant is held before another dispatcher may take it.
        #[arg(long, default_value_t = 120.0, value_parser = crate::options::positive_secs)]
        lease: f64,
    },
    /// Grants under review: list them, or decide one.
    Review {
        #[command(subcommand)]
        action: ReviewCommand,
    },
    /// Create or migrate the database's tables (also done by every other subcommand). SQL
    /// only: Redis has no schema.
    Migrate,
}

/// `wxsub grants review …`.
#[derive(Debug, Subcommand)]
pub(crate) enum ReviewCommand {
    /// The grants under review, as JSON lines.
    List {
        #[arg(long)]
        template_id: String,
        #[arg(long)]
        scene: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Decide one grant under review.
    Resolve {
        #[arg(long)]
        template_id: String,
        #[arg(long)]
        scene: String,
        /// The user.
        #[arg(long)]
        to: String,
        /// What happened to the message.
        #[arg(long, value_enum)]
        decision: Decision,
        /// Who decided, on what evidence (kept in the grant's audit trail on SQL; on Redis, as
        /// the reason of a dropped grant only).
        #[arg(long)]
        note: String,
    },
}

/// Which grants `list` shows.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Listed {
    /// Pending (lapsed reservations included).
    Pending,
    /// Under review.
    Review,
}

/// A review's decision.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Decision {
    /// The user has the message: the grant is used.
    Delivered,
    /// It did not arrive: pending again, the next dispatch sends it.
    Release,
    /// The grant cannot be used.
    Drop,
}

fn scope(cli: &Cli, template_id: &str, scene: &str) -> Result<GrantScope, Usage> {
    Ok(GrantScope {
        appid: crate::options::appid(cli)?,
        template_id: parse("--template-id", TemplateId::new(template_id))?,
        scene: parse("--scene", scene.parse::<Scene>())?,
    })
}

/// Where `--database` keeps the grants and the used states: a SQL database or Redis.
struct Store {
    ledger: Arc<dyn GrantLedger>,
    used_states: SharedUsedStates,
    /// The SQL database, for `migrate`; `None` on Redis.
    sql: Option<Sql>,
}

impl Store {
    /// Opens the store `url` names: `redis://` or `rediss://` for Redis (keys under `prefix`),
    /// anything else for SQL. Never prints the URL.
    async fn open(url: &str, prefix: &str) -> Result<Self, Usage> {
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            let redis = Redis::builder(url)
                .prefix(prefix)
                .connect()
                .await
                .map_err(|e| format!("database: {}", one_line(&e)))?;
            return Ok(Self {
                ledger: Arc::new(RedisGrantLedger::new(redis.clone())),
                used_states: Arc::new(RedisUsedStates::new(redis)),
                sql: None,
            });
        }
        let sql = Sql::builder(url).connect().await.map_err(|e| format!("database: {}", one_line(&e)))?;
        Ok(Self {
            ledger: Arc::new(SqlGrantLedger::new(sql.clone())),
            used_states: Arc::new(SqlUsedStates::new(sql.clone())),
            sql: Some(sql),
        })
    }
}

/// Runs `wxsub grants …` on the database (or Redis) at `url`.
pub(crate) async fn run(cli: &Cli, args: &Args, url: &str) -> Result<Exit, Usage> {
    let command = &args.command;
    // A dispatch's input is checked before the database is opened (and a SQLite file created):
    // a typo never leaves a file behind or waits on a database.
    if let GrantsCommand::Dispatch { message, pacing, lease } = command {
        let scope = scope(cli, &message.template_id, &message.scene)?;
        let crate::batch::Pacing { concurrency, rate } = pacing.checked()?;
        // The message is checked once, before any grant is touched.
        let build = message.per_recipient()?;
        let client = crate::options::client(cli)?;
        let store = Store::open(url, &args.redis_prefix).await?;
        return dispatch(client, store.ledger, &scope, build, concurrency, rate, *lease).await;
    }
    let store = Store::open(url, &args.redis_prefix).await?;
    let ledger = &*store.ledger;
    let db = |e: subscribe_client::LedgerError| format!("database: {}", one_line(&e));
    #[allow(clippy::disallowed_methods)] // a CLI reads the wall clock; the SQL ledger uses the database's
    let now = std::time::SystemTime::now();
    match command {
        GrantsCommand::Migrate => {
            let sql = store.sql.as_ref().ok_or("migrate: Redis has no tables to create or migrate")?;
            let versions = sql.schema_versions().await.map_err(|e| format!("database: {e}"))?;
            println!("{}", serde_json::json!({ "schema_versions": versions }));
        }
        GrantsCommand::Record { url_or_query, session, unverified } => {
            let recorded = if *unverified {
                record_unverified(cli, ledger, url_or_query, now).await?
            } else {
                let session = session.as_ref().ok_or("--session is required without --unverified")?;
                record_verified(cli, ledger, &store.used_states, url_or_query, session).await?
            };
            print_recorded(&recorded);
        }
        GrantsCommand::List { template_id, scene, state, after, limit } => {
            let scope = scope(cli, template_id, scene)?;
            let after = after.as_deref().map(|a| parse("--after", OpenId::new(a))).transpose()?;
            let mut out = std::io::stdout().lock();
            match state {
                Listed::Pending => {
                    for openid in
                        ledger.pending_page(&scope, after.as_ref(), *limit, now).await.map_err(db)?
                    {
                        let _ = writeln!(out, "{}", serde_json::json!({ "openid": openid.as_str() }));
                    }
                }
                Listed::Review => {
                    for item in ledger.reviews(&scope, after.as_ref(), *limit).await.map_err(db)? {
                        let _ = writeln!(out, "{}", review_json(&item));
                    }
                }
            }
        }
        GrantsCommand::Counts { template_id, scene } => {
            let c = ledger.counts(&scope(cli, template_id, scene)?, now).await.map_err(db)?;
            println!(
                "{}",
                serde_json::json!({
                    "pending": c.pending, "reserved": c.reserved, "delivered": c.delivered,
                    "review": c.review, "dropped": c.dropped,
                })
            );
        }
        GrantsCommand::Review { action: ReviewCommand::List { template_id, scene, limit } } => {
            let scope = scope(cli, template_id, scene)?;
            let mut out = std::io::stdout().lock();
            for item in ledger.reviews(&scope, None, *limit).await.map_err(db)? {
                let _ = writeln!(out, "{}", review_json(&item));
            }
        }
        GrantsCommand::Review {
            action: ReviewCommand::Resolve { template_id, scene, to, decision, note },
        } => {
            let key = scope(cli, template_id, scene)?.key(parse("--to", OpenId::new(to.as_str()))?);
            let resolution = match decision {
                Decision::Delivered => Resolution::Delivered,
                Decision::Release => Resolution::Release,
                Decision::Drop => Resolution::Drop,
            };
            if !ledger.resolve(&key, resolution, note, now).await.map_err(db)? {
                return Err(format!("{to} has no grant under review for this template and scene"));
            }
            println!("{}", serde_json::json!({ "status": "resolved", "openid": to }));
        }
        // Run above, its input checked before the database is opened.
        GrantsCommand::Dispatch { .. } => {}
    }
    Ok(Exit::Ok)
}

/// What `record` says about a cancellation.
const CANCELLATION: &str = "the answer is a cancellation: there is no grant to record";

/// `wxsub grants record`: the callback's state verified and used up (in `used_states`, beside
/// the grants), then its grant recorded.
async fn record_verified(
    cli: &Cli,
    ledger: &dyn GrantLedger,
    used_states: &SharedUsedStates,
    url_or_query: &str,
    session: &subscribe_client::Session,
) -> Result<(GrantKey, subscribe_client::Recorded), Usage> {
    let client = crate::options::signing_client_with(cli, Some(Arc::clone(used_states))).map_err(|e| {
        if cli.secret.is_none() {
            "--secret (or WXSUB_SECRET) is required to verify the callback's state; \
             pass --unverified to record it without checking"
                .to_owned()
        } else {
            e
        }
    })?;
    let recorded = async {
        client.complete(subscribe_client::Answer::Redirect(url_or_query), session).await?.record(ledger).await
    };
    match recorded.await {
        Ok((AuthorizationAnswer::Confirmed(grant), Some(recorded))) => {
            Ok((GrantKey::confirmed(crate::options::appid(cli)?, &grant), recorded))
        }
        Ok(_) => Err(CANCELLATION.into()),
        Err(subscribe_client::RecordError::Authorization(
            subscribe_client::AuthorizationError::AlreadyAccepted,
        )) => {
            Err("answer already accepted: this callback's grant was recorded before; nothing recorded again"
                .into())
        }
        Err(e) if e.kind() == subscribe_client::ErrorKind::Retryable => {
            Err(format!("nothing recorded, retry the same callback: {}", one_line(&e)))
        }
        Err(e) => Err(format!("answer rejected: {}", one_line(&e))),
    }
}

/// `wxsub grants record --unverified`: the grant of a confirmed answer, its state unchecked.
async fn record_unverified(
    cli: &Cli,
    ledger: &dyn GrantLedger,
    url_or_query: &str,
    now: std::time::SystemTime,
) -> Result<(GrantKey, subscribe_client::Recorded), Usage> {
    let answer = AuthorizationAnswer::parse(url_or_query).map_err(|e| format!("invalid callback: {e}"))?;
    let AuthorizationAnswer::Confirmed(grant) = answer else {
        return Err(CANCELLATION.into());
    };
    let key = GrantKey::confirmed(crate::options::appid(cli)?, &grant);
    let recorded = ledger.record(&key, now).await.map_err(|e| format!("database: {}", one_line(&e)))?;
    Ok((key, recorded))
}

/// What `record` did, as one JSON line.
fn print_recorded((key, recorded): &(GrantKey, subscribe_client::Recorded)) {
    let status = match recorded {
        subscribe_client::Recorded::Added => "added",
        subscribe_client::Recorded::AlreadyPending => "already_pending",
        _ => "renewed",
    };
    println!(
        "{}",
        serde_json::json!({
            "status": status,
            "openid": key.openid.as_str(),
            "template_id": key.template_id.as_str(),
            "scene": key.scene.get(),
        })
    );
}

/// A grant under review as one JSON line.
fn review_json(item: &ReviewItem) -> serde_json::Value {
    let since = item.since.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    serde_json::json!({
        "openid": item.openid.as_str(),
        "reason": item.reason,
        "attempts": item.attempts,
        "since_ms": u64::try_from(since).unwrap_or(u64::MAX),
    })
}

/// Writes each recipient's outcome as one JSON line.
struct Lines;

impl DispatchObserver for Lines {
    fn on_outcome(&mut self, o: &RecipientOutcome) {
        let status = match o.kind {
            OutcomeKind::Delivered => "delivered",
            OutcomeKind::Failed => "failed",
            OutcomeKind::Unknown => "unknown",
            OutcomeKind::Dropped => "dropped",
            _ => "other",
        };
        let mut line = serde_json::json!({ "touser": o.openid.as_str(), "status": status });
        if let Some(code) = o.errcode {
            line["errcode"] = code.get().into();
        }
        if let Some(d) = &o.detail {
            line["detail"] = d.as_str().into();
        }
        if let Some(e) = &o.ledger_error {
            line["ledger_error"] = e.as_str().into();
        }
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
}

async fn dispatch(
    client: Client,
    ledger: Arc<dyn GrantLedger>,
    scope: &GrantScope,
    build: impl Fn(&OpenId) -> Result<OneTimeMessage, subscribe_types::ValidationError> + Send + Sync + 'static,
    concurrency: usize,
    rate: Option<f64>,
    lease: f64,
) -> Result<Exit, Usage> {
    let started = std::time::Instant::now();
    let mut dispatcher = Dispatcher::one_time(client, ledger, scope.template_id.clone(), scope.scene, build)
        .concurrency(concurrency)
        .lease(std::time::Duration::from_secs_f64(lease))
        .keep_outcomes(false)
        .observer(Lines);
    if let Some(r) = rate {
        dispatcher = dispatcher.rate_limit(r);
    }
    let report = dispatcher.run().await;
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wxsub: the dispatch stopped: {}", one_line(&e));
            return Ok(Exit::Failed);
        }
    };
    let p = report.progress;
    eprintln!(
        "wxsub: {} grant(s): {} delivered, {} failed, {} unknown, {} dropped in {:.1?}",
        p.sent,
        p.delivered,
        p.failed,
        p.unknown,
        p.dropped,
        started.elapsed()
    );
    Ok(if p.delivered == p.sent { Exit::Ok } else { Exit::Failed })
}

/// The arguments of `wxsub grants`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The database: `sqlite:path/to/grants.db` (created if missing),
    /// `postgres://user@host/db`, or Redis, `redis://host:port[/db]` (the keys of
    /// `subscribe-redis`, under --redis-prefix). The URL is never printed. A URL with a
    /// password belongs in `DATABASE_URL` (or the password in `PGPASSWORD`): as an argument it
    /// shows in `ps` and in shell history, and draws a warning.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value = "sqlite:grants.db")]
    pub(crate) database: crate::secrets::DatabaseUrl,
    /// With a Redis --database: the key prefix of the service's Redis stores.
    #[arg(long, env = "WXSUB_REDIS_PREFIX", default_value = "wxsub")]
    pub(crate) redis_prefix: String,
    #[command(subcommand)]
    pub(crate) command: GrantsCommand,
}
