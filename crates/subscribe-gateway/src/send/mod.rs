//! The send API: `POST /v1/apps/{appid}/messages/{one_time,mini_program,notification}` (scope
//! `send`), each body read into its `subscribe-types` message and sent with the app's client;
//! the answer is the typed [`Outcome`]. With an `Idempotency-Key`, the request claims a record
//! first and stores its answer, so a retry gets that answer and nothing is sent twice.
//!
//! The steps, in order, each answering before the next is taken: the key and its scope (401,
//! 403), the content type (415), the `Idempotency-Key` header (400), the body (413, 400 when it
//! is not JSON, 422 `invalid_message` naming the field and the rule). None of them sends or
//! records anything. Then, without an `Idempotency-Key`, the send; with one:
//!
//! | the record | answer |
//! |---|---|
//! | none (claimed now) | the send's outcome, stored (a `not_sent` outcome releases the claim instead: a retry may send) |
//! | another request's (fingerprint differs) | 422 `idempotency_key_reused`, nothing sent |
//! | answered | the stored answer, `Idempotent-Replayed: true` |
//! | claimed, lease running | 409 `idempotency_key_in_progress` |
//! | claimed, lease ended (its owner died) | outcome `unknown` (`cause: owner_lost`), stored, never sent again |
//! | the store does not answer | 503 `idempotency_store_unavailable`, nothing sent |

pub(crate) mod body;
mod outcome;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use subscribe_client::{Client, SendError};
use tokio::time::Instant;
use tracing::{info, warn};
use utoipa::{IntoResponses, ToSchema};

use self::body::{BodyError, Message, MessageKind};
pub(crate) use self::body::{
    BodyError as MessageError, Message as CheckedMessage, MessageKind as Kind, parse as parse_message,
    without_position,
};
pub(crate) use self::outcome::Body;
use self::outcome::Outcome;
use crate::Gateway;
use crate::api::{error, read_body};
use crate::config::Scope;
use crate::idempotency::{
    Claim, IdempotencyKey, NewClaim, Record, RecordState, SharedIdempotencyStore, StoredAnswer, fingerprint,
    record_id,
};
use crate::metrics::Metrics;
use crate::openapi::{AppIdPath, ErrorBody, IdempotencyKeyHeader, KeyedAnswers, TooLarge};

/// The header a replayed answer carries.
const REPLAYED: &str = "idempotent-replayed";

/// Sends a one-time message (official accounts, mobile apps), scope `send`.
///
/// The body is WeChat's own JSON for `/cgi-bin/message/template/subscribe`, checked whole before
/// anything is sent.
#[utoipa::path(
    post,
    path = "/v1/apps/{appid}/messages/one_time",
    tag = "send",
    params(AppIdPath, IdempotencyKeyHeader),
    security(("api_key" = [])),
    request_body(content = body::RawOneTime, content_type = "application/json"),
    responses(SendAnswers, KeyedAnswers, TooLarge)
)]
pub(crate) async fn one_time(
    State(gw): State<Gateway>,
    Path(appid): Path<String>,
    request: Request,
) -> Response {
    send(gw, appid, MessageKind::OneTime, request).await
}

/// Sends a mini-program message, scope `send`.
///
/// The body is WeChat's own JSON for `/cgi-bin/message/subscribe/send`, checked whole before
/// anything is sent.
#[utoipa::path(
    post,
    path = "/v1/apps/{appid}/messages/mini_program",
    tag = "send",
    params(AppIdPath, IdempotencyKeyHeader),
    security(("api_key" = [])),
    request_body(content = body::RawMiniProgram, content_type = "application/json"),
    responses(SendAnswers, KeyedAnswers, TooLarge)
)]
pub(crate) async fn mini_program(
    State(gw): State<Gateway>,
    Path(appid): Path<String>,
    request: Request,
) -> Response {
    send(gw, appid, MessageKind::MiniProgram, request).await
}

/// Sends a notification (service accounts, 订阅通知), scope `send`.
///
/// The body is WeChat's own JSON for `/cgi-bin/message/subscribe/bizsend`, checked whole before
/// anything is sent.
#[utoipa::path(
    post,
    path = "/v1/apps/{appid}/messages/notification",
    tag = "send",
    params(AppIdPath, IdempotencyKeyHeader),
    security(("api_key" = [])),
    request_body(content = body::RawNotification, content_type = "application/json"),
    responses(SendAnswers, KeyedAnswers, TooLarge)
)]
pub(crate) async fn notification(
    State(gw): State<Gateway>,
    Path(appid): Path<String>,
    request: Request,
) -> Response {
    send(gw, appid, MessageKind::Notification, request).await
}

/// The answers of a send route besides those of every route with a key.
#[derive(IntoResponses)]
#[allow(dead_code)] // Documentation of the answers `send` makes.
enum SendAnswers {
    /// The send's outcome: `delivered`, `refused` or `unknown` (never resent). A replayed answer
    /// carries `Idempotent-Replayed: true`.
    #[response(status = 200, headers(("Idempotent-Replayed" = String, description = "`true` on an answer replayed for an `Idempotency-Key`")))]
    Outcome(Body),
    /// `invalid_json` (the body is not a JSON object), `unreadable_body`, or
    /// `invalid_idempotency_key` (not 1–255 visible ASCII characters, or given twice).
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// `idempotency_key_in_progress`: a request with this `Idempotency-Key` is being sent; ask
    /// again.
    #[response(status = 409)]
    InProgress(ErrorBody),
    /// `unsupported_media_type`: `Content-Type` is not `application/json`.
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// `invalid_message` (with `field`: a field is missing, unknown or breaks its rule) or
    /// `idempotency_key_reused` (the key was used for another path or body). Nothing was sent.
    #[response(status = 422)]
    Unprocessable(ErrorBody),
    /// Certainly not sent: the outcome `not_sent` (safe to send again), or
    /// `idempotency_store_unavailable`. A replayed answer carries `Idempotent-Replayed: true`.
    #[response(status = 503)]
    NotSent(#[to_schema] Unavailable),
}

/// A 503 of a send: its outcome `not_sent`, or an error of the idempotency store.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // Documentation only.
#[schema(as = SendUnavailable)]
enum Unavailable {
    NotSent(Body),
    Store(ErrorBody),
}

/// A request the checks let through: who sends what, for which app.
struct Checked {
    client: Client,
    key_name: String,
    appid: String,
    kind: MessageKind,
    message: Message,
    idempotency: Option<(IdempotencyKey, String)>,
}

async fn send(gw: Gateway, appid: String, kind: MessageKind, request: Request) -> Response {
    let checked = match check(&gw, appid, kind, request).await {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    match checked.idempotency.clone() {
        None => {
            let outcome = deliver(gw.shared.send_budget, &checked.client, &checked.message).await;
            observe(gw.metrics(), &checked, &outcome);
            outcome.into_response()
        }
        Some((key, fingerprint)) => idempotent(&gw, checked, &key, &fingerprint).await,
    }
}

/// Every check before a send, in order; the answer to the first that fails.
async fn check(
    gw: &Gateway,
    appid: String,
    kind: MessageKind,
    request: Request,
) -> Result<Checked, Response> {
    let (key, client) =
        gw.authorized(request.headers(), &appid, Scope::Send).map_err(IntoResponse::into_response)?;
    let (key_name, client) = (key.name.clone(), client.clone());
    if !is_json(request.headers()) {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON, sent with Content-Type: application/json",
        ));
    }
    let idempotency_key = IdempotencyKey::from_headers(request.headers())
        .map_err(|r| error(StatusCode::BAD_REQUEST, "invalid_idempotency_key", r.rule()))?;
    // Read only once the key is known; the body limit and body timeout layers bound it.
    let body = read_body(request).await?;
    let message = body::parse(kind, &body).map_err(|e| match e {
        BodyError::NotJson(message) => error(StatusCode::BAD_REQUEST, "invalid_json", &message),
        BodyError::Invalid { field, rule } => {
            let body = json!({"error": "invalid_message", "field": field, "message": rule});
            (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
        }
    })?;
    // The request's meaning, not its spelling: the decoded appid (as the route read it) and
    // the kind, so a retry whose path a proxy re-encoded is the same request.
    let target = format!("/v1/apps/{appid}/messages/{}", kind.name());
    let idempotency = idempotency_key.map(|k| (k, fingerprint("POST", &target, &body)));
    Ok(Checked { client, key_name, appid, kind, message, idempotency })
}

/// Whether the content type is `application/json` (parameters such as `charset` allowed).
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// Sends `message` with `client`, within `budget`.
///
/// The token is had first, on its own: waiting for it sends nothing, so a budget spent there
/// (a slow token endpoint) is `not_sent`, safe to retry, not `unknown`. The send then has what
/// is left of the budget (the token it takes is the one in memory).
async fn deliver(budget: Duration, client: &Client, message: &Message) -> Outcome {
    let started = tokio::time::Instant::now();
    match tokio::time::timeout(budget, client.token()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Outcome::of_error(&SendError::Token(e)),
        Err(_) => return Outcome::no_token_in_time(budget),
    }
    let budget = budget.saturating_sub(started.elapsed());
    let sent = async {
        match message {
            Message::OneTime(m) => client.send_one_time(m).await.map(|_| None),
            Message::MiniProgram(m) => client.send_mini_program(m).await.map(|_| None),
            Message::Notification(m) => client.send_notification(m).await.map(|a| Some(a.response.msgid)),
        }
    };
    match tokio::time::timeout(budget, sent).await {
        Ok(Ok(msgid)) => Outcome::delivered(msgid),
        Ok(Err(e)) => Outcome::of_error(&e),
        Err(_) => Outcome::timed_out(),
    }
}

/// Logs the send's outcome and counts it (`subscribe_gateway_sends_total` and, with WeChat's
/// errcode, `subscribe_gateway_send_errcodes_total`).
fn observe(metrics: &Metrics, c: &Checked, outcome: &Outcome) {
    metrics.record_send(&c.appid, c.kind.name(), outcome.name(), outcome.errcode());
    info!(
        appid = %c.appid,
        key = %c.key_name,
        kind = c.kind.name(),
        outcome = outcome.name(),
        errcode = outcome.errcode(),
        idempotent = c.idempotency.is_some(),
        "send answered"
    );
}

/// The send of a request with an `Idempotency-Key`: claim, send, store; or the record's answer.
async fn idempotent(gw: &Gateway, checked: Checked, key: &IdempotencyKey, fingerprint: &str) -> Response {
    let records = &gw.shared.idempotency;
    let id = record_id(&checked.appid, &checked.key_name, key);
    let Ok(owner) = crate::idempotency::new_owner() else {
        return store_unavailable("no random claim owner could be drawn");
    };
    records.prune_if_due();
    let claim = NewClaim::new(&id, fingerprint, &owner, records.lease, records.retention);
    // Asked before the claim: the claim's lease ends no sooner than this plus the lease.
    let claimed_at = Instant::now();
    let found = match records.store.claim(&claim).await {
        Ok(Claim::Claimed) => {
            let (store, budget, metrics) =
                (Arc::clone(&records.store), gw.shared.send_budget, gw.metrics().clone());
            let holds_until = claimed_at + records.lease;
            // The send and its record run on their own: a caller that hangs up, or the request
            // timeout, does not cancel them, and the answer is stored for the retry. The answer
            // goes back as soon as the send ends; its record is written meanwhile (again while
            // the store fails and the claim lasts: a retry meanwhile is 409).
            let task = tokio::spawn(async move {
                let outcome = deliver(budget, &checked.client, &checked.message).await;
                observe(&metrics, &checked, &outcome);
                if !record(&store, &id, &owner, &outcome, 1).await {
                    let recorded = outcome.clone();
                    tokio::spawn(
                        async move { record_again(&store, &id, &owner, &recorded, holds_until).await },
                    );
                }
                outcome
            });
            return match task.await {
                Ok(outcome) => outcome.into_response(),
                Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the send ended abnormally"),
            };
        }
        Ok(Claim::Found(record)) => record,
        Err(e) => {
            warn!(appid = %checked.appid, error = %e, "idempotency record not claimed; nothing sent");
            // The claim may have landed although its answer did not (a timeout after the
            // commit, a lost reply): left alone, it would answer this key's retries 409, then
            // `unknown` for a message never sent. It is this request's own claim (its owner is
            // new), so releasing it is always safe.
            release_later(Arc::clone(&records.store), id, owner);
            return store_unavailable("the idempotency records cannot be read now");
        }
    };
    match found {
        Record { fingerprint: other, .. } if other != fingerprint => reused(),
        Record { state: RecordState::Done(answer), .. } => replay(&answer),
        Record { state: RecordState::InFlight { lease_ended: false }, .. } => in_progress(),
        Record { state: RecordState::InFlight { lease_ended: true }, .. } => {
            let lost = Outcome::owner_lost().stored();
            match records.store.take_over(&id, fingerprint, &lost).await {
                Ok(Some(Record { fingerprint: other, .. })) if other != fingerprint => reused(),
                Ok(Some(Record { state: RecordState::Done(answer), .. })) => {
                    warn!(appid = %checked.appid, key = %checked.key_name, "a claim's owner was lost: answered outcome unknown");
                    replay(&answer)
                }
                // Claimed again meanwhile (after the record was released or pruned).
                Ok(_) => in_progress(),
                Err(e) => {
                    warn!(appid = %checked.appid, error = %e, "idempotency record not taken over");
                    store_unavailable("the idempotency records cannot be written now")
                }
            }
        }
    }
}

/// Releases `owner`'s claim of record `id`, if it holds one, from a task of its own: a few
/// attempts over about eight seconds, until the store answers (a claim that is not there, or
/// no longer `owner`'s, is left alone).
pub(crate) fn release_later(store: SharedIdempotencyStore, id: String, owner: String) {
    tokio::spawn(async move {
        for wait_ms in [0, 250, 500, 1_000, 2_000, 4_000] {
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
            match store.release(&id, &owner).await {
                Ok(_) => return,
                Err(e) => warn!(error = %e, "a claim that may have landed could not be released yet"),
            }
        }
        warn!(
            "a claim that may have landed could not be released: retries with its key answer 409, then outcome unknown"
        );
    });
}

/// Stores the outcome in the claimed record, or releases the claim when nothing was sent.
/// Whether that is settled: `false` when the store failed (a lost connection, a timeout, a
/// restart: written or not, nobody knows), to be written again ([`record_again`]).
async fn record(
    store: &SharedIdempotencyStore,
    id: &str,
    owner: &str,
    outcome: &Outcome,
    attempt: u32,
) -> bool {
    let written = if outcome.not_sent_at_all() {
        store.release(id, owner).await
    } else {
        store.complete(id, owner, &outcome.stored()).await
    };
    match written {
        Ok(true) => true,
        Ok(false) if attempt > 1 => {
            // An earlier attempt landed although its answer was lost, or the lease ended.
            warn!(
                outcome = outcome.name(),
                attempt,
                "the record was no longer this claim's to write: an earlier attempt stored it, or the lease ended and retries with this key answer outcome unknown"
            );
            true
        }
        Ok(false) => {
            warn!(
                outcome = outcome.name(),
                "the claim's lease ended before its outcome was stored: retries with this key answer outcome unknown"
            );
            true
        }
        Err(e) => {
            warn!(outcome = outcome.name(), error = %e, attempt, "the outcome could not be stored");
            false
        }
    }
}

/// Writes a record the store failed again while the claim lasts (250 ms apart, doubling to
/// 2 s, until a second before `holds_until`): writing the owner's answer twice, or releasing
/// its claim twice, leaves the record as once, so the key's retries get this answer once the
/// store is back (409 meanwhile), never `owner_lost` for a message whose outcome was known.
async fn record_again(
    store: &SharedIdempotencyStore,
    id: &str,
    owner: &str,
    outcome: &Outcome,
    holds_until: Instant,
) {
    let mut wait = Duration::from_millis(250);
    for attempt in 2.. {
        if Instant::now() + wait + Duration::from_secs(1) >= holds_until {
            warn!(
                outcome = outcome.name(),
                "the outcome could not be stored: retries with this key answer 409, then outcome unknown once the lease ends"
            );
            return;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
        if record(store, id, owner, outcome, attempt).await {
            return;
        }
    }
}

pub(crate) fn replay(answer: &StoredAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut r = (status, answer.body.clone()).into_response();
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
    r
}

pub(crate) fn reused() -> Response {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        "this Idempotency-Key was used for another request (its path or body differ); nothing was sent",
    )
}

pub(crate) fn in_progress() -> Response {
    error(
        StatusCode::CONFLICT,
        "idempotency_key_in_progress",
        "a request with this Idempotency-Key is being sent; ask again with the same key for its outcome",
    )
}

pub(crate) fn store_unavailable(why: &str) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "idempotency_store_unavailable",
        &format!("{why}; nothing was sent"),
    )
}
