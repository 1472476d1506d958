//! Event push through the gateway: each app with push keys has its server URL (服务器配置) at
//! `/v1/apps/{appid}/push`, served by `subscribe-events`' [`PushEndpoint`] (verified, decrypted,
//! de-duplicated on the store's replay cache). Each event feeds the grants as the library does
//! ([`Client::apply_event`]) and, when the app has a webhook, is kept in the outbox
//! ([`crate::outbox`]) before WeChat is answered; the deliverers ([`crate::webhook`]) post it to
//! the webhook, signed, in order, until it is taken.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::MethodRouter;
use subscribe_client::{Client, GrantLedger, NotificationResults};
use subscribe_events::axum::PushEndpoint;
use subscribe_events::replay::ReplayCache;
use subscribe_events::{Event, Push};
use tokio::sync::Notify;
use tower::ServiceExt;
use utoipa::IntoParams;

use crate::Gateway;
use crate::api::error;
use crate::config::AppConfig;
use crate::metrics::Metrics;
use crate::openapi::AppIdPath;
use crate::outbox::SharedOutbox;

/// The apps' push endpoints, and what wakes each app's deliverer.
#[derive(Default)]
pub(crate) struct Pushes {
    endpoints: HashMap<String, MethodRouter>,
    /// Per app with a webhook: notified when an event is kept for it.
    pub(crate) wake: HashMap<String, Arc<Notify>>,
}

impl std::fmt::Debug for Pushes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut apps: Vec<&String> = self.endpoints.keys().collect();
        apps.sort_unstable();
        f.debug_struct("Pushes").field("apps", &apps).finish_non_exhaustive()
    }
}

/// What an app's push endpoint feeds.
pub(crate) struct Feeds {
    pub(crate) ledger: Arc<dyn GrantLedger>,
    pub(crate) results: Arc<dyn NotificationResults>,
    pub(crate) replays: Arc<dyn ReplayCache>,
    pub(crate) outbox: SharedOutbox,
    pub(crate) metrics: Metrics,
}

impl Pushes {
    /// Whether `appid` has a push endpoint here.
    pub(crate) fn serves(&self, appid: &str) -> bool {
        self.endpoints.contains_key(appid)
    }

    /// Adds `app`'s endpoint (when it has push keys), run with `client`.
    pub(crate) fn add(&mut self, app: &AppConfig, client: &Client, feeds: Feeds) {
        let Some(push) = &app.push else { return };
        let appid = app.appid.as_str().to_owned();
        let wake = push.webhook.as_ref().map(|_| Arc::new(Notify::new()));
        if let Some(wake) = &wake {
            self.wake.insert(appid.clone(), Arc::clone(wake));
        }
        let Feeds { ledger, results, replays, outbox, metrics } = feeds;
        let client = client.clone();
        let app_label = appid.clone();
        let on_event = move |event: Event| {
            let (client, ledger, results) = (client.clone(), Arc::clone(&ledger), Arc::clone(&results));
            let (outbox, wake, metrics, appid) =
                (Arc::clone(&outbox), wake.clone(), metrics.clone(), app_label.clone());
            async move {
                client.apply_event(&event, &*ledger, &*results).await?;
                if let Some(wake) = wake {
                    let body = event.to_json().to_string();
                    outbox.append(&appid, &event_key(&appid, &body), &body).await?;
                    wake.notify_one();
                }
                metrics.push_event(&appid, kind(&event));
                Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
            }
        };
        // An event is recorded (and kept for the webhook) before WeChat stops sending it: a
        // callback still at it at the time limit is answered 503; WeChat's copy finds it in
        // flight here (503 again), taken (a replay), or, when it failed, forgotten (read again).
        // Copies are not read again otherwise (`idempotent_callback`): recording an acceptance
        // again would renew a grant already used, dropped or under review, and an old
        // withdrawal read again would drop a grant given since.
        let endpoint = PushEndpoint::new(Push::new(push.push_config(&app.appid)), on_event)
            .replay_cache(replays)
            .busy_past_time_limit(true);
        self.endpoints.insert(appid, endpoint.method_router());
    }
}

/// An event's identity: the same event pushed again (WeChat's retry, or the same push read by
/// two gateways) has the same, which the outbox keeps once and a webhook de-duplicates by
/// (`X-Subscribe-Delivery`). 32 hexadecimal characters of the SHA-256 of the app and the event.
fn event_key(appid: &str, event_json: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new().chain_update(appid).chain_update(b"\n").chain_update(event_json).finalize();
    hex::encode(&digest[..16])
}

/// The metric label of an event: its name when it is a subscription event, else `other`.
fn kind(event: &Event) -> &'static str {
    match event.name() {
        "subscribe_msg_popup_event" => "subscribe_msg_popup_event",
        "subscribe_msg_change_event" => "subscribe_msg_change_event",
        "subscribe_msg_sent_event" => "subscribe_msg_sent_event",
        _ => "other",
    }
}

/// The query WeChat signs a push with.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the push endpoint; this type only documents it.
pub(crate) struct PushQuery {
    /// `sha1` of the Token, `timestamp` and `nonce` (the plain mode's only signature).
    signature: Option<String>,
    /// Unix seconds, within five minutes of the gateway's clock.
    timestamp: Option<String>,
    /// A random string.
    nonce: Option<String>,
    /// The URL check's answer (`GET` only).
    echostr: Option<String>,
    /// `aes` for an encrypted push.
    encrypt_type: Option<String>,
    /// The signature over the encrypted body too (safe and compatible modes).
    msg_signature: Option<String>,
    /// The user's openid.
    openid: Option<String>,
}

/// WeChat's URL check of the app's server URL (no key: WeChat signs it with the Token).
#[utoipa::path(
    get,
    path = "/v1/apps/{appid}/push",
    tag = "push",
    params(AppIdPath, PushQuery),
    responses(
        (status = 200, description = "The check's `echostr`, as WeChat expects", body = String, content_type = "text/plain"),
        (status = 400, description = "A parameter missing, repeated or malformed (text)", body = String, content_type = "text/plain"),
        (status = 401, description = "A bad signature, or a stale timestamp (text)", body = String, content_type = "text/plain"),
        (status = 404, description = "`not_found`: the app takes no pushes here", body = crate::openapi::ErrorBody),
    )
)]
pub(crate) async fn check(
    State(gw): State<Gateway>,
    Path(appid): Path<String>,
    request: Request,
) -> Response {
    forward(&gw, &appid, request).await
}

/// A push from WeChat (no key: WeChat signs it with the Token, and in the safe mode encrypts it
/// with the `EncodingAESKey`). Answered `success` once the event fed the grants and, with a
/// webhook, is kept for it; a replay is answered `success` and changes nothing.
#[utoipa::path(
    post,
    path = "/v1/apps/{appid}/push",
    tag = "push",
    params(AppIdPath, PushQuery),
    request_body(content = String, content_type = "text/xml", description = "WeChat's push: XML (or JSON), encrypted in the safe mode"),
    responses(
        (status = 200, description = "`success`: taken (or a replay of one taken)", body = String, content_type = "text/plain"),
        (status = 400, description = "A parameter missing, repeated or malformed, or a body that does not open (text)", body = String, content_type = "text/plain"),
        (status = 401, description = "A bad signature, a stale timestamp, or a plain body where only encrypted ones are taken (text)", body = String, content_type = "text/plain"),
        (status = 404, description = "`not_found`: the app takes no pushes here", body = crate::openapi::ErrorBody),
        (status = 408, description = "The body was still arriving at the time limit"),
        (status = 413, description = "The body is too large (text)", body = String, content_type = "text/plain"),
        (status = 500, description = "The event could not be kept (the store failed): WeChat sends it again, and it is taken then", body = String, content_type = "text/plain"),
        (status = 503, description = "The replay cache cannot be read, or a copy of this push is being taken: WeChat sends it again", body = String, content_type = "text/plain"),
    )
)]
pub(crate) async fn receive(
    State(gw): State<Gateway>,
    Path(appid): Path<String>,
    request: Request,
) -> Response {
    forward(&gw, &appid, request).await
}

/// The app's endpoint answers the request; 404 when it takes no pushes.
async fn forward(gw: &Gateway, appid: &str, request: Request) -> Response {
    let Some(endpoint) = gw.shared.pushes.endpoints.get(appid) else {
        return error(StatusCode::NOT_FOUND, "not_found", "this app takes no pushes here");
    };
    match endpoint.clone().oneshot(request).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}
