//! `/healthz` (the process serves; no I/O) and `/readyz` (the token store answers; the
//! answer is cached for [`READY_CACHE`] so a busy prober does not load the store).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use subscribe_client::SharedTokenStore;
use subscribe_types::AppId;
use tokio::sync::Mutex;
use tokio::time::Instant;
use utoipa::ToSchema;

use crate::Gateway;

/// How soon `/readyz` reports a token store that stopped answering, to a prober that asks
/// often (every 100 ms; one that asks every second may see it a second later): a ready answer
/// is reused for this less the longest a read may take (1 s), and a read waits no longer.
pub const READY_CACHE: Duration = Duration::from_secs(3);

/// How long `/readyz` waits for the token store.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a ready answer is reused: [`READY_CACHE`] less [`READY_TIMEOUT`].
const READY_KEPT: Duration = Duration::from_secs(2);

/// How long a not-ready answer is reused: a store that is back is reported within this and one
/// read.
const NOT_READY_CACHE: Duration = Duration::from_secs(1);

/// The readiness probe: one read of the token store, its answer reused for a while
/// ([`READY_CACHE`], [`NOT_READY_CACHE`]).
pub(crate) struct Readiness {
    store: SharedTokenStore,
    probe: Option<AppId>,
    /// Held across a check, so concurrent probes wait for one read instead of each making one.
    last: Mutex<Option<(Instant, bool)>>,
}

impl Readiness {
    pub(crate) fn new(store: SharedTokenStore, probe: Option<AppId>) -> Self {
        Self { store, probe, last: Mutex::new(None) }
    }

    async fn ready(&self) -> bool {
        let mut last = self.last.lock().await;
        if let Some((at, ready)) = *last
            && at.elapsed() < if ready { READY_KEPT } else { NOT_READY_CACHE }
        {
            return ready;
        }
        let ready = match &self.probe {
            // The token read is dropped at once: only whether the store answered matters.
            // The read runs on a task of its own: when it outlasts the probe's wait it still ends
            // under the store's own bound, which replaces a Redis connection that stopped
            // answering (a read dropped at the probe's second would never get there).
            Some(app) => {
                let (store, app) = (std::sync::Arc::clone(&self.store), app.clone());
                let read = tokio::spawn(async move { store.load(&app).await.is_ok() });
                tokio::time::timeout(READY_TIMEOUT, read).await.is_ok_and(|r| r.unwrap_or(false))
            }
            None => true,
        };
        *last = Some((Instant::now(), ready));
        ready
    }
}

/// `{"status": "ok"}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    status: String,
}

/// `{"ready": true}`, or `{"ready": false, "reason": "…"}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Ready {
    /// Whether the token store answered.
    ready: bool,
    /// Why not, when not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    reason: Option<String>,
}

/// Whether the process serves (no I/O; no key).
#[utoipa::path(get, path = "/healthz", tag = "service", responses((status = 200, description = "The process serves", body = Health)))]
pub(crate) async fn healthz() -> Response {
    Json(Health { status: "ok".to_owned() }).into_response()
}

/// Whether the token store answers (a failure shows within 3 s, a return within 2 s; no key).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "service",
    responses(
        (status = 200, description = "The token store answered a read within 1 s", body = Ready),
        (status = 503, description = "The token store did not answer", body = Ready),
    )
)]
pub(crate) async fn readyz(State(gw): State<Gateway>) -> Response {
    if gw.shared.ready.ready().await {
        Json(Ready { ready: true, reason: None }).into_response()
    } else {
        let body = Ready { ready: false, reason: Some("the token store does not answer".to_owned()) };
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}
