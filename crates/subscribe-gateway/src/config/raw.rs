//! The configuration file's shape, as serde reads it: unknown keys refused, no value checked
//! yet (that is `mod.rs`'s job, key by key). The keys that would hold a secret inline
//! (`secret`, `key`) are read as [`IgnoredAny`] so their value is never kept, only their
//! presence, which is refused.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{AppKind, Scope};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) store: RawStore,
    #[serde(default)]
    pub(super) idempotency: RawIdempotency,
    #[serde(default)]
    pub(super) dispatch: RawDispatch,
    #[serde(default)]
    pub(super) apps: Vec<RawApp>,
    #[serde(default)]
    pub(super) keys: Vec<RawKey>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) request_timeout_ms: Option<u64>,
    pub(super) header_read_timeout_ms: Option<u64>,
    pub(super) max_body_bytes: Option<usize>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_connections_per_peer: Option<usize>,
    pub(super) metrics_listen: Option<String>,
    pub(super) trusted_proxies: Option<Vec<String>>,
    pub(super) auth_failures_per_second: Option<f64>,
    pub(super) auth_failure_burst: Option<u32>,
    pub(super) public_url: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdempotency {
    pub(super) retention_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[allow(clippy::struct_field_names)] // The file's keys.
pub(super) struct RawDispatch {
    pub(super) job_lease_ms: Option<u64>,
    pub(super) grant_lease_ms: Option<u64>,
    pub(super) retention_ms: Option<u64>,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum StoreKind {
    #[default]
    Sqlite,
    Postgres,
    Redis,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    #[serde(default)]
    pub(super) kind: StoreKind,
    pub(super) path: Option<String>,
    pub(super) url: Option<String>,
    pub(super) url_env: Option<String>,
    pub(super) url_file: Option<String>,
    pub(super) schema: Option<String>,
    pub(super) prefix: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(super) enum Endpoint {
    #[default]
    Stable,
    Classic,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApp {
    pub(super) appid: String,
    pub(super) kind: AppKind,
    #[serde(default)]
    pub(super) token_endpoint: Endpoint,
    pub(super) api_base: Option<String>,
    pub(super) secret: Option<IgnoredAny>,
    pub(super) secret_env: Option<String>,
    pub(super) secret_file: Option<String>,
    pub(super) report_interval_ms: Option<u64>,
    pub(super) consent_return_url: Option<String>,
    pub(super) push_token_env: Option<String>,
    pub(super) push_token_file: Option<String>,
    pub(super) push_aes_key_env: Option<String>,
    pub(super) push_aes_key_file: Option<String>,
    pub(super) push_mode: Option<String>,
    pub(super) webhook_url: Option<String>,
    pub(super) webhook_secret_env: Option<String>,
    pub(super) webhook_secret_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKey {
    pub(super) name: String,
    pub(super) key: Option<IgnoredAny>,
    pub(super) sha256: Option<String>,
    pub(super) key_env: Option<String>,
    pub(super) key_file: Option<String>,
    #[serde(default)]
    pub(super) scopes: BTreeMap<String, Vec<Scope>>,
    pub(super) rate_per_second: Option<f64>,
    pub(super) burst: Option<u32>,
}
