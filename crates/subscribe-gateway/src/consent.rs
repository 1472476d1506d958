//! The consent routes: a user's one-time subscription asked for and answered through the
//! gateway, on the web and in a mobile app, and the grant recorded in the shared ledger.
//!
//! The state each link or SDK request carries is the client's: signed, bound to the caller's
//! session, single-use on the shared store of used states. The web answer comes back through
//! the gateway (its callback is the `redirect_url` WeChat knows) to the caller's own page
//! (`consent_return_url`), whose server completes it in the user's session: the browser holds
//! the caller's session cookie only on the caller's site, so that is where the answer can be
//! bound to it. A gateway that recorded the grant at its callback could not tell the user's
//! browser from one an attacker sent there with the attacker's own answer (login CSRF).

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::header::{CACHE_CONTROL, LOCATION, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subscribe_client::{Answer, AuthorizationError, Client, RecordError, Recorded, Session};
use subscribe_types::{AppId, AuthorizationAnswer, QueryError, RedirectUrl, Scene, TemplateId};
use tracing::{debug, info, warn};
use utoipa::{IntoResponses, ToSchema};

use crate::Gateway;
use crate::api::{error, invalid, read_json};
use crate::config::Scope;
use crate::openapi::{AppIdPath, ErrorBody, KeyedAnswers, TooLarge};

/// Where an app's web answers go: WeChat's `redirect_url` (the gateway's callback) and the
/// caller's page the browser is sent on to.
#[derive(Clone, Debug)]
pub(crate) struct Consent {
    callback: RedirectUrl,
    back: RedirectUrl,
}

impl Consent {
    pub(crate) fn new(callback: RedirectUrl, back: RedirectUrl) -> Self {
        Self { callback, back }
    }
}

/// The gateway's callback for `appid` under `public_url`: the `redirect_url` of its links.
pub(crate) fn callback_url(public_url: &str, appid: &AppId) -> String {
    format!("{public_url}/v1/apps/{}/consent/callback", appid.as_str())
}

/// What a link or an SDK request is asked for.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"template_id": "SandboxRestockAlert_0000000000000000000001", "scene": 1000, "session": "3b1f…the digest of your session id"}))]
pub(crate) struct Ask {
    /// The one-time template the user is asked to allow.
    template_id: String,
    /// The scene, 0 to 10000: what the grant is for (a dispatch sends to a template and scene).
    #[schema(minimum = 0, maximum = 10000)]
    scene: u32,
    /// A value stable for the user's session on your site and known only to your server and
    /// that session, such as a digest of your session id (1 to 4,096 bytes). The answer then
    /// completes only when your server presents the same value, so an answer an attacker made
    /// cannot be completed in your user's session. Never logged.
    #[schema(min_length = 1, max_length = 4096)]
    session: String,
}

/// The checked [`Ask`].
struct Asked {
    template_id: TemplateId,
    scene: Scene,
    session: Session,
}

/// The authorization page's address for the user's browser.
#[derive(Serialize, ToSchema)]
pub(crate) struct WebLink {
    /// WeChat's authorization page (`…/mp/subscribemsg?action=get_confirm&…#wechat_redirect`):
    /// redirect the user's browser to it, inside WeChat.
    url: String,
}

/// The request a mobile app hands to the Open SDK (`WXSubscribeMsgReq` on iOS,
/// `SubscribeMessage.Req` on Android).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Documentation only: the client's `MobileSubscribeRequest` is what is answered.
#[schema(as = SdkRequest)]
struct SdkRequest {
    /// The scene.
    scene: u32,
    /// The template (Android's SDK spells it `templateID`).
    #[serde(rename = "templateId")]
    template_id: String,
    /// The signed state, 59 letters and digits, to set as the request's `reserved`.
    reserved: String,
}

/// An answer to complete, as the caller received it: exactly one of `redirect_query` and
/// `sdk_answer`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"session": "3b1f…the digest of your session id", "redirect_query": "action=confirm&openid=oUser&template_id=SandboxRestockAlert_0000000000000000000001&scene=1000&reserved=…"}))]
pub(crate) struct Completion {
    /// The same `session` value the link or SDK request was made with.
    #[schema(min_length = 1, max_length = 4096)]
    session: String,
    /// Web: the query your `consent_return_url` page was called with (with or without its
    /// leading `?`, or the whole path and query).
    #[serde(default)]
    redirect_query: Option<String>,
    /// Mobile: the Open SDK's answer as the app forwarded it (`WXSubscribeMsgResp`,
    /// `SubscribeMessage.Resp`): a JSON object in either SDK's spelling, or that object as a
    /// string.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    sdk_answer: Option<Box<serde_json::value::RawValue>>,
}

/// What an answer came to.
#[derive(Serialize, ToSchema)]
pub(crate) struct Completed {
    /// `confirm` (the grant is recorded) or `cancel` (the user declined; nothing recorded).
    action: &'static str,
    /// The openid WeChat's answer names (`confirm` only): the grant is recorded for it. It is
    /// not proof of who your user is (the user can present another's openid under their own
    /// state; WeChat then refuses that user's message), so never link it to an account from
    /// this answer alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    openid: Option<String>,
    /// The template answered for.
    template_id: String,
    /// The scene answered for.
    scene: u32,
    /// `confirm` only: `added` (a new grant), `already_pending` (the user had one waiting:
    /// nothing added, as at WeChat) or `renewed` (the previous grant was used, dropped or
    /// under review; this confirmation makes a new one).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    recorded: Option<&'static str>,
}

/// The answers of the routes that sign a link or an SDK request.
#[derive(IntoResponses)]
#[allow(dead_code)] // Documentation only.
enum AskAnswers {
    /// `invalid_body`: the body is not `{"template_id", "scene", "session"}`; or `unreadable_body`.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// `invalid_request` with `field`: `template_id`, `scene` or `session` breaks its rule.
    #[response(status = 422)]
    Unprocessable(ErrorBody),
}

/// Signs an authorization link for the user's browser, scope `grants`.
///
/// WeChat's page sends the user's answer to the gateway's callback, which sends the browser on
/// to the app's `consent_return_url` with the answer in the query; that page's server completes
/// it (`POST …/consent/complete`) with the same `session`.
#[utoipa::path(
    post,
    path = "/v1/apps/{appid}/consent/web",
    tag = "consent",
    params(AppIdPath),
    security(("api_key" = [])),
    request_body = Ask,
    responses(
        (status = 200, description = "The authorization page's address", body = WebLink),
        AskAnswers,
        KeyedAnswers,
        TooLarge,
        (status = 409, description = "`consent_not_configured`: the app has no `consent_return_url` (or the gateway no `server.public_url`)", body = ErrorBody),
    )
)]
pub(crate) async fn web(State(gw): State<Gateway>, Path(appid): Path<String>, request: Request) -> Response {
    let (client, asked) = match ask(&gw, &appid, request).await {
        Ok(a) => a,
        Err(refused) => return refused,
    };
    let Some(consent) = gw.shared.consent.get(client.appid().as_str()) else {
        return error(
            StatusCode::CONFLICT,
            "consent_not_configured",
            "this app has no consent_return_url in the gateway's configuration: no web consent for it",
        );
    };
    let link = client.authorize_url(&asked.template_id, asked.scene, &consent.callback, &asked.session);
    no_store(Json(WebLink { url: link.url }).into_response())
}

/// Signs the request a mobile app hands to the Open SDK, scope `grants`.
///
/// The app forwards the SDK's answer to its server, which completes it (`POST
/// …/consent/complete`, `sdk_answer`) with the same `session`.
#[utoipa::path(
    post,
    path = "/v1/apps/{appid}/consent/mobile",
    tag = "consent",
    params(AppIdPath),
    security(("api_key" = [])),
    request_body = Ask,
    responses(
        (status = 200, description = "The Open SDK's request", body = SdkRequest),
        AskAnswers,
        KeyedAnswers,
        TooLarge,
    )
)]
pub(crate) async fn mobile(
    State(gw): State<Gateway>,
    Path(appid): Path<String>,
    request: Request,
) -> Response {
    let (client, asked) = match ask(&gw, &appid, request).await {
        Ok(a) => a,
        Err(refused) => return refused,
    };
    no_store(Json(client.mobile_request(&asked.template_id, asked.scene, &asked.session)).into_response())
}

/// The key's client and the checked body of a link or SDK request.
async fn ask(gw: &Gateway, appid: &str, request: Request) -> Result<(Client, Asked), Response> {
    let (_, client) =
        gw.authorized(request.headers(), appid, Scope::Grants).map_err(IntoResponse::into_response)?;
    let client = client.clone();
    let ask: Ask = read_json(request, "expected {\"template_id\", \"scene\", \"session\"}").await?;
    let template_id = TemplateId::new(ask.template_id).map_err(|e| invalid("template_id", &e.to_string()))?;
    let scene = Scene::new(ask.scene).map_err(|e| invalid("scene", &e.to_string()))?;
    let session = Session::new(ask.session).map_err(|e| invalid("session", &e.to_string()))?;
    Ok((client, Asked { template_id, scene, session }))
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// WeChat's redirect with the user's answer; no key (the user's browser calls it).
///
/// The answer is read (not verified: that needs the session, which only the caller's site
/// sees) and the browser is sent on to the app's `consent_return_url` with the answer's five
/// parameters in its query (`action`, `openid`, `template_id`, `scene`, `reserved`, encoded
/// anew), or with `error=invalid_answer` when the query is not an answer.
#[utoipa::path(
    get,
    path = "/v1/apps/{appid}/consent/callback",
    tag = "consent",
    params(AppIdPath),
    responses(
        (status = 303, description = "On to the app's `consent_return_url`, the answer in its query",
            headers(("Location" = String, description = "The app's `consent_return_url` with the answer"))),
        (status = 404, description = "`not_found`: no such app, or it has no `consent_return_url`", body = ErrorBody),
        (status = 408, description = "The request took longer than `server.request_timeout_ms` (no body)"),
    )
)]
pub(crate) async fn callback(State(gw): State<Gateway>, Path(appid): Path<String>, uri: Uri) -> Response {
    let Some(consent) = gw.shared.consent.get(&appid) else {
        return error(StatusCode::NOT_FOUND, "not_found", "no web consent for this app here");
    };
    let query = match AuthorizationAnswer::parse(uri.path_and_query().map_or("", |p| p.as_str())) {
        Ok(answer) => {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("action", if answer.openid().is_some() { "confirm" } else { "cancel" });
            if let Some(openid) = answer.openid() {
                q.append_pair("openid", openid.as_str());
            }
            q.append_pair("template_id", answer.template_id().as_str())
                .append_pair("scene", &answer.scene().get().to_string())
                .append_pair("reserved", answer.reserved().as_str())
                .finish()
        }
        Err(e) => {
            // Anyone can call the callback: not worth a line at the default level.
            debug!(appid = %appid, error = %e, "a consent callback that is not an answer");
            "error=invalid_answer".to_owned()
        }
    };
    let back = consent.back.as_str();
    let location = format!("{back}{}{query}", if back.contains('?') { '&' } else { '?' });
    let Ok(location) = HeaderValue::from_str(&location) else {
        // Only the encoder's characters were added to a URL that was checked at start.
        return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the return address could not be made");
    };
    no_store((StatusCode::SEE_OTHER, [(LOCATION, location)]).into_response())
}

/// The answers of `complete` besides its outcome.
#[derive(IntoResponses)]
#[allow(dead_code)] // Documentation only.
enum CompleteAnswers {
    /// `invalid_body`: the body is not `{"session", "redirect_query" | "sdk_answer"}` with
    /// exactly one of the two; or `unreadable_body`.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// `answer_accepted`: this very answer was accepted before (the user reloaded: the grant is
    /// recorded); `answer_replayed`: the state confirmed another answer before (a replay); or
    /// `answer_in_progress`: the same answer is being completed by another call: ask again
    /// after `Retry-After`. Nothing was recorded by this call.
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// `invalid_answer` (with `field`: the answer is malformed), or `answer_refused` (its state
    /// is missing, forged, expired, or was made for another app, template, scene or session):
    /// offer the user a fresh link; or `invalid_request` (with `field` `session`: empty or over
    /// 4,096 bytes). Nothing was recorded.
    #[response(status = 422)]
    Unprocessable(ErrorBody),
    /// `store_unavailable`: the used states or the grants could not be reached; nothing was
    /// recorded and the same answer can be completed again.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// Verifies an answer in the user's session and records its grant, scope `grants`.
///
/// A confirmation's state is used up once it is accepted: completing the same answer again is
/// answered 409 `answer_accepted`, another answer with the state 409 `answer_replayed`, and a
/// grant is recorded once.
#[utoipa::path(
    post,
    path = "/v1/apps/{appid}/consent/complete",
    tag = "consent",
    params(AppIdPath),
    security(("api_key" = [])),
    request_body = Completion,
    responses(
        (status = 200, description = "The answer, verified; a confirmation's grant recorded", body = Completed),
        CompleteAnswers,
        KeyedAnswers,
        TooLarge,
    )
)]
pub(crate) async fn complete(
    State(gw): State<Gateway>,
    Path(appid): Path<String>,
    request: Request,
) -> Response {
    let client = match gw.authorized(request.headers(), &appid, Scope::Grants) {
        Ok((_, c)) => c.clone(),
        Err(refusal) => return refusal.into_response(),
    };
    let shape = "expected {\"session\", \"redirect_query\"} or {\"session\", \"sdk_answer\"}";
    let completion: Completion = match read_json(request, shape).await {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    let (text, web) = match (completion.redirect_query, completion.sdk_answer) {
        (Some(query), None) if query.contains('?') => (query, true),
        (Some(query), None) => (format!("?{query}"), true),
        // The answer's own text, read by the library (which refuses a field given twice); a
        // JSON string holding it is unwrapped first.
        (None, Some(raw)) => match serde_json::from_str::<String>(raw.get()) {
            Ok(json) => (json, false),
            Err(_) => (raw.get().to_owned(), false),
        },
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                &format!("{shape}: exactly one of the two"),
            );
        }
    };
    let session = match Session::new(completion.session) {
        Ok(s) => s,
        Err(e) => return invalid("session", &e.to_string()),
    };
    let answer = if web { Answer::Redirect(&text) } else { Answer::Mobile(&text) };
    let recorded = async { client.complete(answer, &session).await?.record(gw.shared.grants.as_ref()).await };
    let app = client.appid().as_str();
    let (outcome, response) = match recorded.await {
        Ok((answer, recorded)) => {
            let outcome = if recorded.is_some() { "confirmed" } else { "cancelled" };
            (outcome, no_store(Json(completed(&answer, recorded)).into_response()))
        }
        Err(e) => refused(app, &e),
    };
    gw.shared.metrics.consent_answer(app, outcome);
    response
}

fn completed(answer: &AuthorizationAnswer, recorded: Option<Recorded>) -> Completed {
    Completed {
        action: if answer.openid().is_some() { "confirm" } else { "cancel" },
        openid: answer.openid().map(|o| o.as_str().to_owned()),
        template_id: answer.template_id().as_str().to_owned(),
        scene: u32::from(answer.scene().get()),
        recorded: recorded.map(|r| match r {
            Recorded::Added => "added",
            Recorded::AlreadyPending => "already_pending",
            Recorded::Renewed => "renewed",
            _ => "recorded",
        }),
    }
}

/// The metrics' outcome and the answer for an answer that was not completed.
fn refused(app: &str, e: &RecordError) -> (&'static str, Response) {
    let unavailable = || {
        warn!(appid = %app, error = %e, "a consent answer could not be completed: a store failed");
        let message = "the store of used states or the grants could not be reached; nothing was recorded: complete the same answer again";
        ("unavailable", error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", message))
    };
    let RecordError::Authorization(e) = e else { return unavailable() };
    info!(appid = %app, error = %e, "a consent answer was refused");
    match e {
        AuthorizationError::Query(q) => {
            let body = json!({"error": "invalid_answer", "field": query_field(q), "message": q.to_string()});
            ("refused", (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response())
        }
        AuthorizationError::ReplayedState => (
            "used",
            error(
                StatusCode::CONFLICT,
                "answer_replayed",
                "the state confirmed another answer before: this one is a replay; offer a fresh link",
            ),
        ),
        AuthorizationError::AlreadyAccepted => (
            "used",
            error(
                StatusCode::CONFLICT,
                "answer_accepted",
                "this answer was accepted before: the grant is recorded, the user is subscribed",
            ),
        ),
        AuthorizationError::InProgress => {
            let mut r = error(
                StatusCode::CONFLICT,
                "answer_in_progress",
                "the same answer is being completed by another call; ask again",
            );
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
            ("used", r)
        }
        AuthorizationError::UsedStates(_) => unavailable(),
        _ => ("refused", error(StatusCode::UNPROCESSABLE_ENTITY, "answer_refused", &e.to_string())),
    }
}

/// The answer's field at fault, by the name the query (or the SDK's JSON) gives it.
fn query_field(e: &QueryError) -> &'static str {
    match e {
        QueryError::Missing { param } | QueryError::Repeated { param } => param,
        QueryError::UnknownAction => "action",
        QueryError::ConfirmWithoutOpenId => "openid",
        QueryError::Invalid(v) => v.field(),
        _ => "answer",
    }
}
