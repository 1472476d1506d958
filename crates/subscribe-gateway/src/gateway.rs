//! [`Gateway`]: the apps' clients on one token store, the keys, and the router that serves
//! them (and the metrics' router); [`StartError`]: why it could not start.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use subscribe_client::transport::ReqwestTransport;
use subscribe_client::{
    Client, GrantLedger, InMemoryGrantLedger, InMemoryNotificationResults, InMemoryUsedStates,
    NotificationResults, SharedTokenStore, SharedUsedStates,
};
use subscribe_events::replay::{MemoryReplayCache, ReplayCache};
use subscribe_redis::{
    Redis, RedisGrantLedger, RedisNotificationResults, RedisReplayCache, RedisTokenStore, RedisUsedStates,
};
use subscribe_sql::{
    Sql, SqlGrantLedger, SqlNotificationResults, SqlReplayCache, SqlTokenStore, SqlUsedStates,
};
use subscribe_types::{AppId, RedirectUrl};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};
use tracing::warn;

use crate::config::{Config, ServerConfig, StoreConfig};
use crate::consent::Consent;
use crate::dispatch::Jobs;
use crate::health::Readiness;
use crate::idempotency::{
    Idempotency, MemoryIdempotencyStore, RedisIdempotencyStore, SharedIdempotencyStore, SqlIdempotencyStore,
};
use crate::jobs::{MemoryJobStore, RedisJobStore, SharedJobStore, SqlJobStore};
use crate::keys::Keys;
use crate::metered::Metered;
use crate::metrics::{self, Metrics};
use crate::openapi;
use crate::outbox::{MemoryOutbox, RedisOutbox, SharedOutbox, SqlOutbox};
use crate::push::{Feeds, Pushes};
use crate::ratelimit::{self, PeerLimits};
use crate::reports::ReportGate;

/// The token service for every configured app, ready to be served ([`Gateway::router`]).
/// Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    /// One client per appid, all on the same token store.
    pub(crate) apps: HashMap<String, Client>,
    /// Each app's reports of a rejected token.
    pub(crate) reports: HashMap<String, ReportGate>,
    pub(crate) keys: Keys,
    pub(crate) ready: Readiness,
    pub(crate) metrics: Metrics,
    /// The peers' rate of failed authentications.
    pub(crate) peers: PeerLimits,
    /// The send API's idempotency records.
    pub(crate) idempotency: Idempotency,
    /// The longest a send may take: four fifths of the request timeout, so that a caller gets
    /// the outcome `unknown` rather than the timeout's 408.
    pub(crate) send_budget: Duration,
    /// The grants the consent routes record.
    pub(crate) grants: Arc<dyn GrantLedger>,
    /// Per app with `consent_return_url`: where WeChat answers, and where the browser goes on.
    pub(crate) consent: HashMap<String, Consent>,
    /// The dispatch jobs: their store, and the ones running here.
    pub(crate) jobs: Jobs,
    /// The apps' push endpoints.
    pub(crate) pushes: Pushes,
    /// The events kept for the webhooks.
    pub(crate) outbox: SharedOutbox,
    /// The webhooks' client.
    pub(crate) webhook_http: reqwest::Client,
    /// Each app's webhook.
    pub(crate) webhooks: HashMap<String, crate::config::Webhook>,
    /// The access tokens (the status page reads them; the clients keep their own).
    pub(crate) tokens: SharedTokenStore,
    /// The status page's figures per app, with when they were read.
    pub(crate) status_views:
        std::sync::Mutex<HashMap<String, (tokio::time::Instant, crate::status::AppView)>>,
    server: ServerConfig,
}

/// Every store the gateway keeps its state in: the access tokens, the send API's idempotency
/// records, the grants, the authorization states used up and the dispatch jobs. On one database or Redis
/// ([`open_stores`]), every gateway on it shares them all.
#[derive(Clone)]
#[non_exhaustive]
pub struct Stores {
    /// The access tokens.
    pub tokens: SharedTokenStore,
    /// The send API's idempotency records.
    pub idempotency: SharedIdempotencyStore,
    /// The grants the consent routes record.
    pub grants: Arc<dyn GrantLedger>,
    /// The authorization states used up (each confirms once).
    pub used_states: SharedUsedStates,
    /// The dispatch jobs.
    pub jobs: SharedJobStore,
    /// The pushes read (each is taken once across the fleet).
    pub replays: Arc<dyn ReplayCache>,
    /// Each app's notification results (`subscribe_msg_sent_event`), by appid.
    pub results: ResultsByApp,
    /// The events kept for the webhooks.
    pub outbox: SharedOutbox,
}

impl fmt::Debug for Stores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stores")
            .field("tokens", &self.tokens)
            .field("idempotency", &self.idempotency)
            .field("grants", &self.grants)
            .field("used_states", &self.used_states)
            .field("jobs", &self.jobs)
            .field("replays", &self.replays)
            .field("outbox", &self.outbox)
            .finish_non_exhaustive()
    }
}

/// Each app's notification results store, made for its appid.
pub type ResultsByApp = Arc<dyn Fn(&AppId) -> Arc<dyn NotificationResults> + Send + Sync>;

impl Stores {
    /// `tokens`, and everything else in this process's memory: kept by this gateway only, lost
    /// on a restart.
    pub fn in_memory(tokens: SharedTokenStore) -> Self {
        Self {
            tokens,
            idempotency: Arc::new(MemoryIdempotencyStore::new()),
            grants: Arc::new(InMemoryGrantLedger::new()),
            used_states: Arc::new(InMemoryUsedStates::new()),
            jobs: Arc::new(MemoryJobStore::new()),
            replays: Arc::new(MemoryReplayCache::default()),
            results: Arc::new(|_: &AppId| Arc::new(InMemoryNotificationResults::default()) as _),
            outbox: Arc::new(MemoryOutbox::new()),
        }
    }

    /// The five stores, and the push's (the pushes read, the notification results and the
    /// webhooks' outbox) in this process's memory: set those fields for shared ones.
    pub fn new(
        tokens: SharedTokenStore,
        idempotency: SharedIdempotencyStore,
        grants: Arc<dyn GrantLedger>,
        used_states: SharedUsedStates,
        jobs: SharedJobStore,
    ) -> Self {
        Self { idempotency, grants, used_states, jobs, ..Self::in_memory(tokens) }
    }
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut apps: Vec<&str> = self.shared.apps.keys().map(String::as_str).collect();
        apps.sort_unstable();
        f.debug_struct("Gateway")
            .field("apps", &apps)
            .field("server", &self.shared.server)
            .finish_non_exhaustive()
    }
}

/// Why the gateway could not start (after its configuration was accepted).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The store named in `[store]` could not be opened (or the idempotency records' table
    /// could not be created in it).
    #[error("store: cannot open the {kind} token store")]
    Store {
        /// `sqlite`, `postgres` or `redis`.
        kind: &'static str,
        /// The store's error (it holds no URL or password).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A client could not be built for an app.
    #[error("apps[{index}]: cannot build the client for {appid}")]
    Client {
        /// The app's position in `[[apps]]`.
        index: usize,
        /// The app.
        appid: AppId,
        /// The client's error.
        #[source]
        source: subscribe_client::ConfigError,
    },
    /// The idempotency store's calls may take so long that a claim's lease would last more
    /// than half of `idempotency.retention_ms`: a record could be forgotten while its send
    /// runs, and a retry then would send again.
    #[error(
        "idempotency.retention_ms: {} ms is less than twice a claim's lease ({} ms: the send's \
         budget and the idempotency store's two calls around it); raise it",
        retention.as_millis(),
        lease.as_millis()
    )]
    Lease {
        /// The claim's lease.
        lease: Duration,
        /// `idempotency.retention_ms`.
        retention: Duration,
    },
}

impl Gateway {
    /// Opens the store that `config` names (creating or migrating its tables): the tokens and
    /// the send API's idempotency records, on one pool or connection. Then builds every app's
    /// client on it.
    ///
    /// # Errors
    /// [`StartError`] when the store cannot be opened or a client cannot be built.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        Self::from_stores(config, open_stores(&config.store).await?)
    }

    /// Builds every app's client on `store` (instead of the one `config` names), with the send
    /// API's idempotency records, the grants and the used states in this process's memory
    /// ([`Stores::in_memory`]): grants recorded through the consent routes are then lost on a
    /// restart and seen by no other process. For shared ones, see
    /// [`from_stores`](Self::from_stores).
    ///
    /// # Errors
    /// [`StartError::Client`] when a client cannot be built.
    pub fn with_store(config: &Config, store: SharedTokenStore) -> Result<Self, StartError> {
        Self::from_stores(config, Stores::in_memory(store))
    }

    /// Builds every app's client on the token store `tokens`, and keeps the send API's
    /// idempotency records in `idempotency` (instead of the stores `config` names); the grants
    /// and the used states in this process's memory.
    ///
    /// # Errors
    /// [`StartError::Client`] when a client cannot be built.
    pub fn with_stores(
        config: &Config,
        tokens: SharedTokenStore,
        idempotency: SharedIdempotencyStore,
    ) -> Result<Self, StartError> {
        Self::from_stores(config, Stores { idempotency, ..Stores::in_memory(tokens) })
    }

    /// Builds every app's client on `stores` (instead of the ones `config` names).
    ///
    /// # Errors
    /// [`StartError::Client`] when a client cannot be built; [`StartError::Lease`] when the
    /// idempotency store's calls are too slow for `idempotency.retention_ms`.
    pub fn from_stores(config: &Config, stores: Stores) -> Result<Self, StartError> {
        let Stores { tokens: store, idempotency, grants, used_states, jobs, replays, results, outbox } =
            stores;
        let mut pushes = Pushes::default();
        let mut webhooks = HashMap::new();
        let metrics = Metrics::new(config.apps.iter().map(|a| a.appid.as_str()));
        let mut apps = HashMap::new();
        let mut reports = HashMap::new();
        let mut consent = HashMap::new();
        for (index, app) in config.apps.iter().enumerate() {
            let client_error = |source| StartError::Client { index, appid: app.appid.clone(), source };
            // The client's default transport (5 s to connect, 15 s in all), watched for token
            // requests.
            let transport = ReqwestTransport::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(15))
                .build()
                .map_err(|e| client_error(subscribe_client::ConfigError::Transport(e)))?;
            let transport = Metered::new(Arc::new(transport), metrics.clone(), app.appid.as_str());
            let mut builder = Client::builder(app.appid.clone(), app.secret.clone())
                .token_endpoint(app.token_endpoint)
                .token_store(Arc::clone(&store))
                .used_states(Arc::clone(&used_states))
                .transport(transport);
            if let Some(base) = &app.api_base {
                builder = builder.api_base(base.clone()).mp_base(base.clone());
            }
            let client = builder.build().map_err(client_error)?;
            // The configuration checked that the callback under `public_url` is a redirect URL.
            if let (Some(back), Some(public)) = (&app.consent_return_url, &config.server.public_url)
                && let Ok(callback) = RedirectUrl::new(crate::consent::callback_url(public, &app.appid))
            {
                consent.insert(app.appid.as_str().to_owned(), Consent::new(callback, back.clone()));
            }
            let feeds = Feeds {
                ledger: Arc::clone(&grants),
                results: results(&app.appid),
                replays: Arc::clone(&replays),
                outbox: Arc::clone(&outbox),
                metrics: metrics.clone(),
            };
            pushes.add(app, &client, feeds);
            if let Some(webhook) = app.push.as_ref().and_then(|p| p.webhook.clone()) {
                webhooks.insert(app.appid.as_str().to_owned(), webhook);
            }
            apps.insert(app.appid.as_str().to_owned(), client);
            reports.insert(
                app.appid.as_str().to_owned(),
                ReportGate::new(app.report_interval, Arc::clone(&store)),
            );
        }
        // The configuration has at least one app; its id is what the readiness probe reads.
        let probe = config.apps.first().map(|a| a.appid.clone());
        let ready = Readiness::new(Arc::clone(&store), probe);
        let keys = Keys::new(&config.keys);
        let server = &config.server;
        let peers = PeerLimits::new(server.auth_failure_rate, server.trusted_proxies.clone());
        let timeout = server.request_timeout;
        let send_budget = timeout * 4 / 5;
        // A claim holds while it is made, its send may run (the budget) and its answer is
        // stored: twice the request timeout, more when the store's calls may take longer.
        let lease = (timeout * 2).max(send_budget + idempotency.call_limit() * 2 + Duration::from_secs(1));
        let retention = config.idempotency.retention;
        if lease * 2 > retention {
            return Err(StartError::Lease { lease, retention });
        }
        let idempotency = Idempotency::new(idempotency, retention, lease);
        let jobs = Jobs::new(jobs, &config.dispatch);
        let shared = Shared {
            apps,
            reports,
            keys,
            ready,
            metrics,
            peers,
            idempotency,
            send_budget,
            grants,
            consent,
            jobs,
            pushes,
            outbox,
            webhook_http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            webhooks,
            tokens: Arc::clone(&store),
            status_views: std::sync::Mutex::default(),
            server: server.clone(),
        };
        Ok(Self { shared: Arc::new(shared) })
    }

    /// The gateway's metrics: what `/metrics` answers, and where the send API records its
    /// sends ([`Metrics::record_send`]).
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// `GET /metrics`, the gateway's series in Prometheus' text format, without a key: serve
    /// it on an address of its own that only the scraper reaches (the binary does so on
    /// `server.metrics_listen`). The series name the configured appids.
    pub fn metrics_router(&self) -> Router {
        Router::new().route("/metrics", get(metrics::serve_metrics)).with_state(self.shared.metrics.clone())
    }

    /// The gateway's routes, with the request timeout, the body timeout and the body limit of
    /// `[server]`, to serve with [`serve`](crate::serve) or to mount into your own axum app
    /// (`Router::merge` or `nest`):
    ///
    /// | route | answers |
    /// |---|---|
    /// | `GET /v1/apps/{appid}/access_token` | the current token and its remaining lifetime (scope `token:read`) |
    /// | `POST /v1/apps/{appid}/access_token/invalidate` | the token after the reported one was rejected (scope `token:read`) |
    /// | `POST /v1/apps/{appid}/messages/one_time` | sends a one-time message (scope `send`) |
    /// | `POST /v1/apps/{appid}/messages/mini_program` | sends a mini-program message (scope `send`) |
    /// | `POST /v1/apps/{appid}/messages/notification` | sends a notification (scope `send`) |
    /// | `POST /v1/apps/{appid}/consent/web` | a signed authorization link for a user's session (scope `grants`) |
    /// | `POST /v1/apps/{appid}/consent/mobile` | a signed Open SDK request for a user's session (scope `grants`) |
    /// | `GET /v1/apps/{appid}/consent/callback` | WeChat's redirect: the browser sent on to the app's `consent_return_url` (no key) |
    /// | `POST /v1/apps/{appid}/consent/complete` | an answer verified in the session, its grant recorded (scope `grants`) |
    /// | `GET /v1/apps/{appid}/grants` | the grants of a template and scene by state (scope `grants:review`) |
    /// | `GET /v1/apps/{appid}/grants/review` | the grants under review, a page at a time (scope `grants:review`) |
    /// | `POST /v1/apps/{appid}/grants/review/resolve` | a person's decision on a grant under review (scope `grants:review`) |
    /// | `POST /v1/apps/{appid}/dispatches` | starts a dispatch job: one message to every pending grant of a template (scope `dispatch`) |
    /// | `GET /v1/apps/{appid}/dispatches` | the app's dispatch jobs, newest first (scope `dispatch`) |
    /// | `GET /v1/apps/{appid}/dispatches/{id}` | a dispatch job and its progress (scope `dispatch`) |
    /// | `POST /v1/apps/{appid}/dispatches/{id}/cancel` | asks a dispatch job to stop (scope `dispatch`) |
    /// | `GET /v1/apps/{appid}/push` | WeChat's check of the app's server URL (no key: signed with the app's Token) |
    /// | `POST /v1/apps/{appid}/push` | WeChat's pushes: fed to the grants and kept for the app's webhook (no key: signed) |
    /// | `GET /status` | the read-only status page (HTML) of the apps the key has `status` for (Bearer, or Basic for a browser) |
    /// | `GET /healthz` | 200 while the process serves (no I/O) |
    /// | `GET /readyz` | 200 when the token store answers, else 503 (cached for a few seconds) |
    /// | `GET /openapi.json` | the OpenAPI document of these routes ([`openapi`](crate::openapi())), without a key |
    ///
    /// A send answers 200 with its outcome, `delivered`, `refused` or `unknown` (never resent),
    /// or 503 `not_sent` (nothing was sent: safe to retry); 422 names the field and the rule of
    /// an invalid message. With an `Idempotency-Key` header, a retry gets the first answer and
    /// nothing is sent twice (`docs/gateway.md` has the whole contract).
    ///
    /// The routes that take a key are rate-limited: per key (`rate_per_second`, `burst`),
    /// and per peer for failed authentications, which needs the peer's address (axum's
    /// `ConnectInfo<SocketAddr>`: [`serve`](crate::serve) gives it, as does `axum::serve` with
    /// `into_make_service_with_connect_info::<SocketAddr>()`; without it, only the per-key
    /// rate applies). Every request is counted in [`metrics`](Self::metrics).
    ///
    /// It sets no fallback, so it merges into an app that has one (`Router::merge` refuses two
    /// fallbacks); its layers apply to its own routes only.
    pub fn router(&self) -> Router {
        let server = &self.shared.server;
        let (keyed, open) = openapi::routes();
        // Every route of `keyed` takes a key: the rate limits and the 401 come first.
        let (keyed, _) =
            keyed.route_layer(from_fn_with_state(self.clone(), ratelimit::admit)).split_for_parts();
        let (open, _) = open.split_for_parts();
        keyed
            .merge(open)
            .with_state(self.clone())
            .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, server.request_timeout))
            .layer(RequestBodyTimeoutLayer::new(server.request_timeout))
            .layer(RequestBodyLimitLayer::new(server.max_body_bytes))
            .layer(from_fn_with_state(self.shared.metrics.clone(), metrics::track))
    }
}

/// Opens the token store of `[store]`.
///
/// # Errors
/// [`StartError::Store`].
pub async fn open_store(config: &StoreConfig) -> Result<SharedTokenStore, StartError> {
    Ok(match connect(config).await? {
        Backend::Sql(_, sql) => Arc::new(SqlTokenStore::new(sql)),
        Backend::Redis(redis) => Arc::new(RedisTokenStore::new(redis)),
    })
}

/// Opens every store of `[store]` ([`Stores`]: the tokens, the idempotency records, the grants
/// and the used states), on one pool or connection (the records' table is created if it is
/// missing).
///
/// # Errors
/// [`StartError::Store`].
pub async fn open_stores(config: &StoreConfig) -> Result<Stores, StartError> {
    Ok(match connect(config).await? {
        Backend::Sql(kind, sql) => {
            let records = SqlIdempotencyStore::open(sql.clone()).await.map_err(|e| store_error(kind, e))?;
            let jobs = SqlJobStore::open(sql.clone()).await.map_err(|e| store_error(kind, e))?;
            let outbox = SqlOutbox::open(sql.clone()).await.map_err(|e| store_error(kind, e))?;
            let mut stores = Stores::new(
                Arc::new(SqlTokenStore::new(sql.clone())),
                Arc::new(records),
                Arc::new(SqlGrantLedger::new(sql.clone())),
                Arc::new(SqlUsedStates::new(sql.clone())),
                Arc::new(jobs),
            );
            stores.replays = Arc::new(SqlReplayCache::new(sql.clone()));
            stores.outbox = Arc::new(outbox);
            stores.results = Arc::new(move |appid: &AppId| {
                Arc::new(SqlNotificationResults::new(sql.clone(), appid.clone())) as _
            });
            stores
        }
        Backend::Redis(redis) => {
            let mut stores = Stores::new(
                Arc::new(RedisTokenStore::new(redis.clone())),
                Arc::new(RedisIdempotencyStore::new(redis.clone())),
                Arc::new(RedisGrantLedger::new(redis.clone())),
                Arc::new(RedisUsedStates::new(redis.clone())),
                Arc::new(RedisJobStore::new(redis.clone())),
            );
            stores.replays = Arc::new(RedisReplayCache::new(redis.clone()));
            stores.outbox = Arc::new(RedisOutbox::new(redis.clone()));
            stores.results = Arc::new(move |appid: &AppId| {
                Arc::new(RedisNotificationResults::new(redis.clone(), appid.clone())) as _
            });
            stores
        }
    })
}

/// A connected `[store]`.
enum Backend {
    Sql(&'static str, Sql),
    Redis(Redis),
}

async fn connect(config: &StoreConfig) -> Result<Backend, StartError> {
    Ok(match config {
        StoreConfig::Sqlite { path } => {
            let url = format!("sqlite:{}", path.display());
            let sql = Sql::builder(url).connect().await.map_err(|e| store_error("sqlite", e))?;
            Backend::Sql("sqlite", sql)
        }
        StoreConfig::Postgres { url, schema } => {
            let mut builder = Sql::builder(url.expose());
            if let Some(schema) = schema {
                builder = builder.schema(schema.clone());
            }
            let sql = builder.connect().await.map_err(|e| store_error("postgres", e))?;
            Backend::Sql("postgres", sql)
        }
        StoreConfig::Redis { url, prefix } => {
            let mut builder = Redis::builder(url.expose()).connect_timeout(Duration::from_secs(2));
            if let Some(prefix) = prefix {
                builder = builder.prefix(prefix.clone());
            }
            let redis = builder.connect().await.map_err(|e| store_error("redis", e))?;
            match RedisIdempotencyStore::eviction_policy(&redis).await {
                Ok(Some(policy)) if policy != "noeviction" => {
                    return Err(store_error("redis", Evicting { policy }));
                }
                Ok(_) => {}
                Err(e) => warn!(
                    error = %e,
                    "could not read Redis's maxmemory-policy; it must be noeviction, or a retry whose record was evicted sends again"
                ),
            }
            Backend::Redis(redis)
        }
    })
}

/// Redis evicts keys when its memory is full: an idempotency record it evicts is a retry that
/// sends again.
#[derive(Debug, thiserror::Error)]
#[error(
    "Redis's maxmemory-policy is {policy}: when its memory is full it evicts keys, the idempotency \
     records first (they carry a TTL), and a retry whose record was evicted sends again; set \
     maxmemory-policy noeviction"
)]
struct Evicting {
    policy: String,
}

fn store_error(kind: &'static str, e: impl std::error::Error + Send + Sync + 'static) -> StartError {
    StartError::Store { kind, source: Box::new(e) }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use subscribe_client::async_trait;

    use super::{Gateway, StartError};
    use crate::config::Config;
    use crate::idempotency::{
        Claim, IdempotencyStore, IdempotencyStoreError, MemoryIdempotencyStore, NewClaim, Record,
        StoredAnswer,
    };

    /// Records in memory, from a store that says its calls may take `limit`.
    #[derive(Debug)]
    struct Slow {
        inner: MemoryIdempotencyStore,
        limit: Duration,
    }

    #[async_trait]
    impl IdempotencyStore for Slow {
        async fn claim(&self, claim: &NewClaim<'_>) -> Result<Claim, IdempotencyStoreError> {
            self.inner.claim(claim).await
        }
        async fn complete(
            &self,
            id: &str,
            owner: &str,
            a: &StoredAnswer,
        ) -> Result<bool, IdempotencyStoreError> {
            self.inner.complete(id, owner, a).await
        }
        async fn release(&self, id: &str, owner: &str) -> Result<bool, IdempotencyStoreError> {
            self.inner.release(id, owner).await
        }
        async fn take_over(
            &self,
            id: &str,
            fingerprint: &str,
            a: &StoredAnswer,
        ) -> Result<Option<Record>, IdempotencyStoreError> {
            self.inner.take_over(id, fingerprint, a).await
        }
        async fn prune(&self) -> Result<u64, IdempotencyStoreError> {
            self.inner.prune().await
        }
        fn call_limit(&self) -> Duration {
            self.limit
        }
    }

    fn start(request_timeout_ms: u64, call_limit: Duration) -> Result<Gateway, StartError> {
        let text = format!(
            "[server]\nrequest_timeout_ms = {request_timeout_ms}\n\n[[apps]]\nappid = \"wx5a1db0c0ffee0001\"\n\
             kind = \"official_account\"\nsecret_env = \"S\"\n"
        );
        let env = |name: &str| (name == "S").then(|| OsString::from("an-app-secret-of-32-characters-x"));
        let config = Config::parse(&text, Path::new("."), &env).unwrap();
        let tokens = Arc::new(subscribe_client::InMemoryTokenStore::new());
        let records = Arc::new(Slow { inner: MemoryIdempotencyStore::new(), limit: call_limit });
        Gateway::with_stores(&config, tokens, records)
    }

    fn lease(request_timeout_ms: u64, call_limit: Duration) -> Duration {
        start(request_timeout_ms, call_limit).unwrap().shared.idempotency.lease
    }

    #[test]
    fn a_claim_outlasts_its_send_and_the_store_calls_around_it() {
        // The default: twice the request timeout, which covers a quick store.
        assert_eq!(lease(30_000, Duration::ZERO), Duration::from_secs(60));
        assert_eq!(lease(30_000, Duration::from_secs(5)), Duration::from_secs(60));
        // A short request timeout on a store whose calls may take 5 s: the send's 800 ms, the
        // claim's and the answer's 5 s each, and a second.
        assert_eq!(lease(1_000, Duration::from_secs(5)), Duration::from_millis(11_800));
    }

    #[test]
    fn a_store_whose_calls_outlast_half_the_retention_is_refused() {
        // Retention 24 h by default: a store that may take 12 h a call is refused.
        let e = start(1_000, Duration::from_secs(12 * 3600)).unwrap_err();
        assert!(matches!(e, StartError::Lease { .. }), "{e:?}");
        assert!(e.to_string().starts_with("idempotency.retention_ms: 86400000 ms is less than twice"), "{e}");
    }
}
