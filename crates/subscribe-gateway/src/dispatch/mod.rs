//! Dispatch jobs: one message to every pending grant of a template (and scene), started by one
//! request and run by the gateway, kept in the store ([`crate::jobs`]) so that it survives the
//! request and, on SQL or Redis, the gateway: a gateway that stops hands its jobs back, and one
//! killed leaves them to be resumed after their lease ([`run`]). Scope `dispatch`.

mod run;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;

use subscribe_client::{Client, GrantScope};
use subscribe_types::{AppId, Scene, TemplateId};
use tracing::{info, warn};
use utoipa::{IntoParams, ToSchema};

pub(crate) use self::run::Jobs;
use crate::Gateway;
use crate::api::{error, invalid, read_body};
use crate::config::Scope;
use crate::grants::query;
use crate::idempotency::{
    Claim, IdempotencyKey, NewClaim, Record, RecordState, StoredAnswer, fingerprint, record_id,
};
use crate::jobs::{Created, JobProgress, JobRecord, JobState, JobStoreError, NewJob};
use crate::openapi::IdempotencyKeyHeader;
use crate::openapi::{AppIdPath, ErrorBody, KeyedAnswers, TooLarge};
use crate::send::{
    CheckedMessage, Kind, MessageError, in_progress, is_json, parse_message, release_later, replay, reused,
    store_unavailable, without_position,
};

/// The most jobs one page lists.
const MAX_PAGE: usize = 100;

/// What a dispatch sends, as a job keeps it: read back by whichever gateway runs it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Spec {
    /// `one_time`, `mini_program` or `notification`.
    kind: String,
    /// The grants' template (from the message).
    template_id: String,
    /// The grants' scene: the one-time message's; 0 for the library templates.
    scene: u32,
    /// A library template whose grants outlive a delivered message.
    long_term: bool,
    /// WeChat's body for the kind, without `touser`.
    message: Value,
    /// Sends in flight at once.
    concurrency: usize,
    /// At most this many sends started per second.
    rate_per_second: Option<f64>,
}

impl Spec {
    fn kind(&self) -> Option<Kind> {
        match self.kind.as_str() {
            "one_time" => Some(Kind::OneTime),
            "mini_program" => Some(Kind::MiniProgram),
            "notification" => Some(Kind::Notification),
            _ => None,
        }
    }

    /// The grants it sends to, of `appid`.
    fn scope(&self, appid: &AppId) -> Option<GrantScope> {
        let template_id = TemplateId::new(self.template_id.as_str()).ok()?;
        let scene = Scene::new(self.scene).ok()?;
        Some(GrantScope { appid: appid.clone(), template_id, scene })
    }

    /// The message for `touser`, read and checked as the send API reads its body.
    fn message_for(&self, kind: Kind, touser: &str) -> Result<CheckedMessage, MessageError> {
        let mut message = self.message.clone();
        if let Value::Object(fields) = &mut message {
            fields.insert("touser".to_owned(), Value::String(touser.to_owned()));
        }
        parse_message(kind, &serde_json::to_vec(&message).unwrap_or_default())
    }
}

/// A dispatch to start.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "kind": "one_time",
    "message": {"template_id": "SandboxRestockAlert_0000000000000000000001", "scene": "1000",
        "title": "到货提醒", "data": {"content": {"value": "您关注的商品已到货"}}}
}))]
pub(crate) struct StartDispatch {
    /// `one_time` (the grants recorded through the consent routes), `mini_program` or
    /// `notification` (library templates' grants).
    #[schema(pattern = "^(one_time|mini_program|notification)$")]
    kind: String,
    /// `mini_program` and `notification` only, and required there: `one_time` (a delivered
    /// message uses the grant up) or `long_term` (the grant stays for the next dispatch), as the
    /// template library says of the template.
    #[schema(pattern = "^(one_time|long_term)$")]
    template_kind: Option<String>,
    /// WeChat's body for the kind, as the send route of the kind takes it, without `touser`: the
    /// dispatch sets it for each grant. Its `template_id` (and, for `one_time`, `scene`) name the
    /// grants it goes to. Checked whole before the job starts: 422 names the field
    /// (`message.data.content.value`).
    #[schema(value_type = Object)]
    message: Value,
    /// Sends in flight at once, 1 to 256 (default 32).
    #[schema(minimum = 1, maximum = 256)]
    concurrency: Option<u32>,
    /// At most this many sends started per second (0.1 to 10 000; default none).
    #[schema(minimum = 0.1, maximum = 10000)]
    rate_per_second: Option<f64>,
}

/// A job's counts.
#[derive(Serialize, ToSchema)]
pub(crate) struct ProgressBody {
    /// Grants taken and sent.
    sent: u64,
    /// Delivered: used (a long-term template's stays pending).
    delivered: u64,
    /// A definite failure: pending again, for a later dispatch.
    failed: u64,
    /// The outcome is unknown: under review (`GET …/grants/review`), never resent by itself.
    unknown: u64,
    /// Dropped: WeChat refused it (the user withdrew) or the openid is invalid.
    dropped: u64,
    /// Pending grants not yet taken, by the latest count.
    remaining: u64,
}

/// A dispatch job.
#[derive(Serialize, ToSchema)]
pub(crate) struct JobBody {
    /// The job's id (28 hexadecimal characters; later jobs have greater ids).
    id: String,
    /// `running`, `cancelling` (a stop was asked; sends in flight finish), `finished`,
    /// `cancelled` or `failed` (`detail` says why; start another to go on).
    #[schema(pattern = "^(running|cancelling|finished|cancelled|failed)$")]
    state: &'static str,
    /// `one_time`, `mini_program` or `notification`.
    kind: String,
    /// The grants' template.
    template_id: String,
    /// The grants' scene (0 for library templates).
    scene: u32,
    /// The name of the API key that started it.
    created_by: String,
    /// When it started, in milliseconds since the Unix epoch.
    created_ms: i64,
    /// When it ended, in milliseconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    ended_ms: Option<i64>,
    /// Its counts, saved about once a second (a job resumed after its gateway was killed may
    /// miss the last second's; the grants' own counts, `GET …/grants`, are exact).
    progress: ProgressBody,
    /// How many times a gateway resumed it after the one running it stopped.
    resumed: u32,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    detail: Option<String>,
}

impl JobBody {
    fn of(job: JobRecord) -> Self {
        let spec: Option<Spec> = serde_json::from_str(&job.spec).ok();
        let state = match job.state {
            JobState::Running if job.cancel_requested => "cancelling",
            other => other.as_str(),
        };
        let p = job.progress;
        Self {
            id: job.id,
            state,
            kind: spec.as_ref().map(|s| s.kind.clone()).unwrap_or_default(),
            template_id: spec.as_ref().map(|s| s.template_id.clone()).unwrap_or_default(),
            scene: spec.as_ref().map_or(0, |s| s.scene),
            created_by: job.created_by,
            created_ms: job.created_ms,
            ended_ms: job.ended_ms,
            progress: ProgressBody {
                sent: p.sent,
                delivered: p.delivered,
                failed: p.failed,
                unknown: p.unknown,
                dropped: p.dropped,
                remaining: p.remaining,
            },
            resumed: job.resumed,
            detail: job.detail,
        }
    }
}

/// A page of jobs.
#[derive(Serialize, ToSchema)]
pub(crate) struct JobPage {
    /// The jobs, newest first.
    items: Vec<JobBody>,
    /// Where the next page starts (`before`); absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    next: Option<String>,
}

/// A page of an app's jobs.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by `list`; this type only documents it.
pub(crate) struct ListQuery {
    /// Continue with the jobs older than this one (the previous page's `next`).
    #[param(pattern = "^[0-9a-f]{28}$")]
    before: Option<String>,
    /// At most this many jobs (1 to 100, default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

/// A job in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by axum's `Path`; this type only documents it.
pub(crate) struct JobPath {
    /// The app's AppID.
    #[param(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$", example = "wx5a1db0c0ffee0001")]
    appid: String,
    /// The job's id.
    #[param(pattern = "^[0-9a-f]{28}$", example = "0193c4a1b2c3d4e5f60718293a4b")]
    id: String,
}

/// Starts a dispatch job: one message to every pending grant of the message's template (and, for
/// `one_time`, scene); scope `dispatch`.
///
/// The message is checked whole first (422 naming the field, nothing started). The job is kept
/// in the gateway's store and run by this gateway; it survives the request, and on SQL or Redis
/// the gateway: one that stops hands it back, and one that was killed leaves it to be resumed
/// by any gateway on the store after `dispatch.job_lease_ms`. Each grant is taken from the
/// ledger before it is sent, so no grant is sent twice; an unknown outcome is set aside for
/// review. One job runs per template and scene at a time: a second (a retried start included)
/// is answered 409 `dispatch_running` naming the running one.
#[utoipa::path(
    post,
    path = "/v1/apps/{appid}/dispatches",
    tag = "dispatch",
    params(AppIdPath, IdempotencyKeyHeader),
    security(("api_key" = [])),
    request_body = StartDispatch,
    responses(
        (status = 202, description = "Started: the job (`Location` is its address; a replay for an `Idempotency-Key` has `Idempotent-Replayed: true` instead)", body = JobBody,
            headers(("Location" = String, description = "The job's address"))),
        (status = 400, description = "`invalid_body`: the body is not a dispatch; `unreadable_body`; or `invalid_idempotency_key`", body = ErrorBody),
        (status = 409, description = "`dispatch_running`: a job of this template and scene is running, `job` is its id; `idempotency_key_in_progress`: a start with this key is being answered; `dispatch_unknown`: the first start with this key stopped before its answer was kept (list the jobs)", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not sent as `application/json`", body = ErrorBody),
        (status = 422, description = "`invalid_request` or `invalid_message` with `field`: a value breaks its rule; `idempotency_key_reused`: the key was used for another request", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the job store could not be reached, `idempotency_store_unavailable`, or `stopping`: this gateway is stopping; nothing started", body = ErrorBody),
        KeyedAnswers,
        TooLarge,
    )
)]
pub(crate) async fn start(
    State(gw): State<Gateway>,
    Path(appid): Path<String>,
    request: Request,
) -> Response {
    let (key, client) = match gw.authorized(request.headers(), &appid, Scope::Dispatch) {
        Ok((key, client)) => (key.name.clone(), client.clone()),
        Err(refusal) => return refusal.into_response(),
    };
    if !is_json(request.headers()) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON, sent with Content-Type: application/json",
        );
    }
    let idempotency_key = match IdempotencyKey::from_headers(request.headers()) {
        Ok(k) => k,
        Err(r) => return error(StatusCode::BAD_REQUEST, "invalid_idempotency_key", r.rule()),
    };
    // Read only once the key is known; the body limit and body timeout layers bound it.
    let body = match read_body(request).await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let spec = match read_start(&body).and_then(checked) {
        Ok(spec) => spec,
        Err(refused) => return *refused,
    };
    let Some(scope) = spec.scope(client.appid()) else {
        return invalid("message.template_id", "the message's template and scene name no grants");
    };
    if gw.shared.jobs.stopping() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            "this gateway is stopping and starts no job; start it on another gateway, or again once this one is back",
        );
    }
    let record = idempotency_key.map(|k| {
        let target = format!("/v1/apps/{appid}/dispatches");
        (record_id(&appid, &key, &k), fingerprint("POST", &target, &body))
    });
    let begin = Begin { gw, appid, key, client, scope, spec };
    // On a task of its own: a caller that hangs up, or the request timeout, cannot stop a start
    // between the job kept and the job run (or its answer stored).
    let task = tokio::spawn(async move {
        match record {
            None => begin.run().await.into_response(),
            Some((id, fingerprint)) => idempotent(begin, &id, &fingerprint).await,
        }
    });
    match task.await {
        Ok(r) => r,
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the start ended abnormally"),
    }
}

/// The body read as a [`StartDispatch`]: 400 `invalid_body` when it is not one (not an object, a
/// field missing); 422 `invalid_request` naming a field of the wrong type, or an unknown one.
fn read_start(body: &[u8]) -> Result<StartDispatch, Box<Response>> {
    let expected = "expected {\"kind\", \"message\"} and optionally \"template_kind\", \"concurrency\", \"rate_per_second\"";
    let not_a_start = |e: &dyn std::fmt::Display| {
        Box::new(error(StatusCode::BAD_REQUEST, "invalid_body", &format!("{expected}: {e}")))
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let start = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data if path != "." => {
                Box::new(invalid(&path, &format!("`{path}`: {}", without_position(&inner))))
            }
            _ => not_a_start(&inner),
        }
    })?;
    de.end().map_err(|e| not_a_start(&e))?;
    Ok(start)
}

/// A start checked, to carry out.
struct Begin {
    gw: Gateway,
    appid: String,
    key: String,
    client: Client,
    scope: GrantScope,
    spec: Spec,
}

/// A start's answer: its status and body (kept as is for an `Idempotency-Key`'s retries).
struct Answer {
    status: StatusCode,
    body: Value,
    location: Option<String>,
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body)).into_response();
        if let Some(location) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            r.headers_mut().insert(LOCATION, location);
        }
        r
    }
}

impl Begin {
    /// Creates the job (or finds the running one) and runs it here.
    async fn run(self) -> Answer {
        let Begin { gw, appid, key, client, scope, spec } = self;
        let (gw, appid, key) = (&gw, appid.as_str(), key.as_str());
        let jobs = &gw.shared.jobs;
        let now = client.clock().now();
        let id = run::new_id(now);
        let scope_key = format!("{}/{}/{}", scope.appid, scope.template_id, scope.scene.get());
        let spec_text = serde_json::to_string(&spec).unwrap_or_default();
        let job = NewJob::new(&id, appid, &scope_key, &spec_text, key, jobs.owner());
        match jobs.store.create(&job, jobs.lease()).await {
            Ok(Created::Created) => {}
            Ok(Created::Busy(running)) => {
                let body = json!({"error": "dispatch_running", "job": running, "message": "a dispatch of this template and scene is running; cancel it, or wait for it to end"});
                return Answer { status: StatusCode::CONFLICT, body, location: None };
            }
            Err(e) => {
                let body = json!({"error": "store_unavailable", "message": "the job store could not be reached; nothing started"});
                warn!(appid = %appid, error = %e, "the job store failed");
                return Answer { status: StatusCode::SERVICE_UNAVAILABLE, body, location: None };
            }
        }
        info!(appid = %appid, key = %key, job = %id, kind = %spec.kind, template_id = %spec.template_id, scene = spec.scene, "a dispatch job started");
        let ms = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
        let mut record = match jobs.store.get(appid, &id).await {
            Ok(Some(record)) => record,
            // Kept, and held by this gateway: it runs; the answer is made from what was asked.
            Ok(None) | Err(_) => JobRecord {
                id: id.clone(),
                appid: appid.to_owned(),
                spec: spec_text,
                created_by: key.to_owned(),
                created_ms: ms,
                state: JobState::Running,
                cancel_requested: false,
                progress: JobProgress::default(),
                ended_ms: None,
                detail: None,
                resumed: 0,
            },
        };
        // What it is about to take, for the answer, counted before it starts taking.
        let pending = gw.shared.grants.counts(&scope, now).await.map(|c| c.pending);
        run::spawn(gw, record.clone());
        record.progress.remaining = pending.unwrap_or_default();
        let body = serde_json::to_value(JobBody::of(record)).unwrap_or_default();
        Answer {
            status: StatusCode::ACCEPTED,
            body,
            location: Some(format!("/v1/apps/{appid}/dispatches/{id}")),
        }
    }
}

/// A start with an `Idempotency-Key`: claimed in the idempotency records, so that a retry, on
/// any gateway of the fleet, gets the first answer and starts nothing (even after the job ended).
async fn idempotent(begin: Begin, id: &str, fingerprint: &str) -> Response {
    let records = Arc::clone(&begin.gw.shared.idempotency.store);
    let (lease, retention) = (begin.gw.shared.idempotency.lease, begin.gw.shared.idempotency.retention);
    begin.gw.shared.idempotency.prune_if_due();
    let Ok(owner) = crate::idempotency::new_owner() else {
        return store_unavailable("no random claim owner could be drawn");
    };
    let claim = NewClaim::new(id, fingerprint, &owner, lease, retention);
    let found = match records.claim(&claim).await {
        Ok(Claim::Claimed) => {
            let answer = begin.run().await;
            if answer.status == StatusCode::ACCEPTED {
                let stored = StoredAnswer::new(answer.status.as_u16(), answer.body.to_string());
                if let Err(e) = records.complete(id, &owner, &stored).await {
                    warn!(error = %e, "a dispatch start's answer could not be stored: retries with its key answer 409, then dispatch_unknown");
                }
            } else {
                // Nothing started (refused as running, or the job store failed): a retry with the
                // key may start it.
                release_later(Arc::clone(&records), id.to_owned(), owner);
            }
            return answer.into_response();
        }
        Ok(Claim::Found(record)) => record,
        Err(e) => {
            warn!(error = %e, "idempotency record not claimed; nothing started");
            release_later(Arc::clone(&records), id.to_owned(), owner);
            return store_unavailable("the idempotency records cannot be read now");
        }
    };
    match found {
        Record { fingerprint: other, .. } if other != fingerprint => reused(),
        Record { state: RecordState::Done(answer), .. } => replay(&answer),
        Record { state: RecordState::InFlight { lease_ended: false }, .. } => in_progress(),
        Record { state: RecordState::InFlight { lease_ended: true }, .. } => {
            // Its gateway stopped between the claim and the answer: the job may have started.
            let lost = json!({"error": "dispatch_unknown", "message": "the first request with this Idempotency-Key stopped before its answer was kept; its job may have started: list the jobs (GET …/dispatches)"});
            let lost = StoredAnswer::new(StatusCode::CONFLICT.as_u16(), lost.to_string());
            match records.take_over(id, fingerprint, &lost).await {
                Ok(Some(Record { fingerprint: other, .. })) if other != fingerprint => reused(),
                Ok(Some(Record { state: RecordState::Done(answer), .. })) => replay(&answer),
                Ok(_) => in_progress(),
                Err(_) => store_unavailable("the idempotency records cannot be written now"),
            }
        }
    }
}

/// The request's values checked, and the message checked whole for a placeholder recipient.
fn checked(start: StartDispatch) -> Result<Spec, Box<Response>> {
    let refuse = |field: &str, rule: &str| Box::new(invalid(field, rule));
    let kind = match start.kind.as_str() {
        "one_time" => Kind::OneTime,
        "mini_program" => Kind::MiniProgram,
        "notification" => Kind::Notification,
        _ => return Err(refuse("kind", "one of one_time, mini_program, notification")),
    };
    let long_term = match (kind, start.template_kind.as_deref()) {
        (Kind::OneTime, Some(_)) => {
            return Err(refuse("template_kind", "only for mini_program and notification: leave it out"));
        }
        (Kind::OneTime, None) | (_, Some("one_time")) => false,
        (_, Some("long_term")) => true,
        (_, Some(_)) => return Err(refuse("template_kind", "one_time or long_term")),
        (_, None) => {
            return Err(refuse(
                "template_kind",
                "required for mini_program and notification: one_time or long_term, as the template library says",
            ));
        }
    };
    let concurrency = match start.concurrency {
        None => 32,
        Some(n @ 1..=256) => n as usize,
        Some(_) => return Err(refuse("concurrency", "a whole number from 1 to 256")),
    };
    let rate = match start.rate_per_second {
        None => None,
        Some(r) if (0.1..=10_000.0).contains(&r) => Some(r),
        Some(_) => return Err(refuse("rate_per_second", "a number from 0.1 to 10000")),
    };
    let Value::Object(fields) = &start.message else {
        return Err(refuse("message", "a JSON object: WeChat's body for the kind, without touser"));
    };
    if fields.contains_key("touser") {
        return Err(refuse("message.touser", "set by the dispatch for each grant: leave it out"));
    }
    let spec = Spec {
        kind: start.kind,
        template_id: String::new(),
        scene: 0,
        long_term,
        message: start.message,
        concurrency,
        rate_per_second: rate,
    };
    let (template_id, scene) = match spec.message_for(kind, run::PLACEHOLDER) {
        Ok(CheckedMessage::OneTime(m)) => (m.template_id().clone(), m.scene().get()),
        Ok(CheckedMessage::MiniProgram(m)) => (m.template_id().clone(), 0),
        Ok(CheckedMessage::Notification(m)) => (m.template_id().clone(), 0),
        Err(MessageError::NotJson(rule)) => return Err(refuse("message", &rule)),
        Err(MessageError::Invalid { field, rule }) => {
            let body =
                json!({"error": "invalid_message", "field": format!("message.{field}"), "message": rule});
            return Err(Box::new((StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()));
        }
    };
    Ok(Spec { template_id: template_id.as_str().to_owned(), scene: u32::from(scene), ..spec })
}

/// An app's dispatch jobs, newest first, a page at a time; scope `dispatch`.
#[utoipa::path(
    get,
    path = "/v1/apps/{appid}/dispatches",
    tag = "dispatch",
    params(AppIdPath, ListQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "A page of jobs", body = JobPage),
        (status = 400, description = "`invalid_query`: a query parameter is unknown or repeated (`field` names it)", body = ErrorBody),
        (status = 422, description = "`invalid_request` with `field`: a value breaks its rule", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the job store could not be reached", body = ErrorBody),
        KeyedAnswers,
    )
)]
pub(crate) async fn list(State(gw): State<Gateway>, Path(appid): Path<String>, request: Request) -> Response {
    if let Err(refusal) = gw.authorized(request.headers(), &appid, Scope::Dispatch) {
        return refusal.into_response();
    }
    let params = match query(&request, &["before", "limit"]) {
        Ok(p) => p,
        Err(refused) => return *refused,
    };
    let before = params.get("before");
    if before.is_some_and(|b| !run::is_id(b)) {
        return invalid("before", "a job's id: 28 hexadecimal characters (a page's `next`)");
    }
    let limit = match params.get("limit").map(|l| l.parse::<usize>()) {
        None => 20,
        Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => n,
        Some(_) => return invalid("limit", "a whole number from 1 to 100"),
    };
    // One more than the page, so that `next` is given only when something follows.
    match gw.shared.jobs.store.list(&appid, before.map(String::as_str), limit + 1).await {
        Ok(mut jobs) => {
            let more = jobs.len() > limit;
            jobs.truncate(limit);
            let next = more.then(|| jobs.last().map(|j| j.id.clone())).flatten();
            Json(JobPage { items: jobs.into_iter().map(JobBody::of).collect(), next }).into_response()
        }
        Err(e) => unavailable(&appid, &e),
    }
}

/// A dispatch job and its progress; scope `dispatch`.
#[utoipa::path(
    get,
    path = "/v1/apps/{appid}/dispatches/{id}",
    tag = "dispatch",
    params(JobPath),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The job", body = JobBody),
        (status = 404, description = "`not_found`: the app has no such job", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the job store could not be reached", body = ErrorBody),
        KeyedAnswers,
    )
)]
pub(crate) async fn get(
    State(gw): State<Gateway>,
    Path((appid, id)): Path<(String, String)>,
    request: Request,
) -> Response {
    if let Err(refusal) = gw.authorized(request.headers(), &appid, Scope::Dispatch) {
        return refusal.into_response();
    }
    if !run::is_id(&id) {
        return not_found();
    }
    match gw.shared.jobs.store.get(&appid, &id).await {
        Ok(Some(job)) => Json(JobBody::of(job)).into_response(),
        Ok(None) => not_found(),
        Err(e) => unavailable(&appid, &e),
    }
}

/// Asks a dispatch job to stop; scope `dispatch`.
///
/// No new grant is taken; the sends in flight finish and are recorded, and the grants not taken
/// stay pending. The job is `cancelling` until its gateway has stopped it (within about a
/// second), then `cancelled`. A job that has ended is answered as it is, unchanged.
#[utoipa::path(
    post,
    path = "/v1/apps/{appid}/dispatches/{id}/cancel",
    tag = "dispatch",
    params(JobPath),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The job, `cancelling` (or as it ended)", body = JobBody),
        (status = 404, description = "`not_found`: the app has no such job", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the job store could not be reached", body = ErrorBody),
        KeyedAnswers,
    )
)]
pub(crate) async fn cancel(
    State(gw): State<Gateway>,
    Path((appid, id)): Path<(String, String)>,
    request: Request,
) -> Response {
    let key = match gw.authorized(request.headers(), &appid, Scope::Dispatch) {
        Ok((key, _)) => key.name.clone(),
        Err(refusal) => return refusal.into_response(),
    };
    if !run::is_id(&id) {
        return not_found();
    }
    match gw.shared.jobs.store.cancel(&appid, &id).await {
        Ok(Some(job)) => {
            if job.state == JobState::Running {
                info!(appid = %appid, key = %key, job = %id, "a dispatch job was asked to stop");
                // Run here: stopped at once, not at the next renewal.
                gw.shared.jobs.stop_local(&id);
            }
            Json(JobBody::of(job)).into_response()
        }
        Ok(None) => not_found(),
        Err(e) => unavailable(&appid, &e),
    }
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "this app has no such dispatch job")
}

fn unavailable(appid: &str, e: &JobStoreError) -> Response {
    // The start's answer says so itself (it may be stored for an `Idempotency-Key`).
    warn!(appid = %appid, error = %e, "the job store failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the job store could not be reached; ask again",
    )
}
