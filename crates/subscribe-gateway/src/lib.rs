//! The central token service WeChat asks every account to run (中控服务器), and a send API, for
//! servers in any language: one process (or a fleet on one store) is the only one that asks
//! WeChat for access tokens, and every other server takes them from it over HTTP, or has it
//! send the messages.
//!
//! - **Many apps in one service**, configured in one TOML file ([`Config`]): official accounts
//!   and mini-programs, stable (default) or classic token endpoint. Secrets come from the
//!   environment or from files, never from the file itself; a configuration with a secret
//!   inline, a short key, a variable that is not set or a scope for an unknown app is refused
//!   at start with a [`ConfigError`] naming the key.
//! - **API keys** (`Authorization: Bearer <key>`) kept as their SHA-256 ([`hash_key`]),
//!   compared in constant time, each with scopes per app. A missing and a wrong key get the
//!   same 401; a key used on an app it has no scope for gets 403, the same for an app that
//!   exists and one that does not.
//! - **The token service**, on [`subscribe_client::Client`]: `GET /v1/apps/{appid}/access_token`
//!   answers from memory (refreshed ahead of expiry); a caller whose token WeChat rejected
//!   reports it with `POST /v1/apps/{appid}/access_token/invalidate`, and however many report
//!   the same token, one refresh runs and each gets the new token (a token that is no longer
//!   current is answered with the current one, no request made). There is no unconditional
//!   force refresh.
//! - **The send API**: `POST /v1/apps/{appid}/messages/one_time`, `…/mini_program` and
//!   `…/notification` (scope `send`) take WeChat's own JSON for the endpoint, check it into
//!   `subscribe-types`' message (422 naming the field and the rule; unknown fields refused;
//!   nothing sent) and answer a typed outcome: `delivered`, `refused` or `unknown` (never
//!   resent) with 200, `not_sent` with 503. With an `Idempotency-Key` header, the request claims
//!   a record in the store before it sends and stores its answer after: a retry, on any gateway
//!   of the fleet or after a restart, gets that answer and nothing is sent twice
//!   ([`idempotency`]: the [`IdempotencyStore`](idempotency::IdempotencyStore) trait, on the
//!   configured store: [`SqlIdempotencyStore`](idempotency::SqlIdempotencyStore),
//!   [`RedisIdempotencyStore`](idempotency::RedisIdempotencyStore)).
//! - **Consent** (scope `grants`): `POST /v1/apps/{appid}/consent/web` and `…/consent/mobile`
//!   sign the authorization request for a user's session; WeChat's web answer comes back to the
//!   gateway's callback, which sends the browser on to the app's `consent_return_url`; the
//!   caller's server completes the answer in the session (`…/consent/complete`) and the grant is
//!   recorded once in the ledger on the store, each state confirming once across the fleet.
//! - **Dispatch jobs** (scope `dispatch`): `POST /v1/apps/{appid}/dispatches` sends one message to
//!   every pending grant of a template as a job the gateway runs with the library's
//!   [`Dispatcher`](subscribe_client::Dispatcher), kept in the store ([`jobs`]): its progress
//!   read and the job cancelled through the API; handed back when the gateway stops and resumed
//!   by another (or the restarted one) after a kill ([`Gateway::run_background`]), no grant sent twice.
//! - **Event push**: an app with push keys has its server URL (服务器配置) at
//!   `/v1/apps/{appid}/push` (no key: WeChat signs it), verified, decrypted and de-duplicated on
//!   the store; each event feeds the grants as [`Client::apply_event`](subscribe_client::Client::apply_event)
//!   does and, with a `webhook_url`, is kept in the store's [`outbox`] and posted to the webhook,
//!   signed ([`webhook_signature`]), in order, until it is taken.
//! - **Tokens, idempotency records, grants and jobs kept** ([`Stores`]) in SQLite by default, or
//!   PostgreSQL or Redis for a fleet of gateways (one refresh per rotation for all of them).
//! - **Safe to expose**: a request timeout, a body timeout and a body limit (tower-http), a
//!   header-read timeout and a bound on connections at the server ([`serve`], from
//!   `subscribe-events`); no cookies;
//!   secrets never in `Debug`, logs or errors.
//! - **Rate limits** (`governor`): each key its own rate ([`KeyConfig::rate`]); failed
//!   authentications limited per peer address ([`ServerConfig::auth_failure_rate`]), so a flood
//!   of wrong keys is answered 429 before its keys are hashed. `X-Forwarded-For` counts only
//!   from [`ServerConfig::trusted_proxies`].
//! - **Metrics** ([`Metrics`], `prometheus-client`): a registry per [`Gateway`], served by
//!   [`Gateway::metrics_router`] in Prometheus' text format, with labels bounded by the
//!   configuration (an appid that is not configured makes no series).
//!
//! ```no_run
//! use std::path::Path;
//! use subscribe_gateway::{Config, Gateway, ServeLimits, serve};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::load(Path::new("/etc/subscribe-gateway/gateway.toml"))?;
//! let gateway = Gateway::start(&config).await?;
//! let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
//! // The dispatch jobs' adoption and hand-back, and the webhook deliveries.
//! tokio::spawn({ let gateway = gateway.clone(); async move { gateway.run_background(std::future::pending()).await } });
//! // Or mount `gateway.router()` into your own axum app.
//! serve(listener, gateway.router(), ServeLimits::from(&config.server), std::future::pending()).await;
//! # Ok(()) }
//! ```
//!
//! The binary, `subscribe-gateway`, does the same from the command line (`--config`,
//! `--check-config`, `hash-key`), serves the metrics on `server.metrics_listen`, logs JSON lines
//! and stops gracefully on SIGTERM; `docs/gateway.md` in the repository is the manual.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod api;
mod config;
mod consent;
mod dispatch;
mod gateway;
mod grants;
mod health;
pub mod idempotency;
pub mod jobs;
mod keys;
mod metered;
mod metrics;
mod openapi;
pub mod outbox;
mod push;
mod ratelimit;
mod reports;
mod send;
mod status;
mod webhook;

pub use config::{
    AppConfig, AppKind, AppPush, Config, ConfigError, ConfigProblem, DEFAULT_AUTH_FAILURE_RATE,
    DEFAULT_GRANT_LEASE_MS, DEFAULT_JOB_LEASE_MS, DEFAULT_JOB_RETENTION_MS, DEFAULT_KEY_RATE, DEFAULT_LISTEN,
    DEFAULT_MAX_CONNECTIONS_PER_PEER, DEFAULT_REPORT_INTERVAL_MS, DispatchConfig, IdempotencyConfig,
    KeyConfig, Rate, Scope, SecretUrl, ServerConfig, StoreConfig, Webhook,
};
pub use gateway::{Gateway, ResultsByApp, StartError, Stores, open_store, open_stores};
pub use health::READY_CACHE;
pub use keys::{KeyHash, MIN_KEY_CHARS, hash_key};
pub use metrics::Metrics;
pub use openapi::{openapi, openapi_json};
/// The server loop, shared with the sandbox and the push endpoint (`subscribe-events`).
pub use subscribe_events::serve::{ServeLimits, serve};
pub use webhook::signature as webhook_signature;
