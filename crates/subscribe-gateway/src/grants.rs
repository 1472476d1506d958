//! The grants recorded through the consent routes, for a person or a caller's admin page: how
//! many there are in each state, the ones set aside for review (a send whose outcome was
//! unknown), and the decision on each of those.

use std::collections::HashMap;
use std::time::UNIX_EPOCH;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subscribe_client::{GrantScope, LedgerError, Resolution};
use subscribe_types::{OpenId, Scene, TemplateId};
use tracing::{info, warn};
use utoipa::{IntoParams, IntoResponses, ToSchema};

use crate::Gateway;
use crate::api::{error, invalid, read_json};
use crate::config::Scope;
use crate::openapi::{AppIdPath, ErrorBody, KeyedAnswers, TooLarge};

/// The most review items one page lists.
const MAX_PAGE: usize = 500;

/// The grants of one template and scene.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by `scope_of`; this type only documents it.
pub(crate) struct ScopeQuery {
    /// The template.
    #[param(example = "SandboxRestockAlert_0000000000000000000001")]
    template_id: String,
    /// The scene, 0 to 10000.
    #[param(minimum = 0, maximum = 10000, example = 1000)]
    scene: u32,
}

/// A page of the grants under review.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by `scope_of`; this type only documents it.
pub(crate) struct PageQuery {
    /// Continue after this openid (the previous page's `next`).
    after: Option<String>,
    /// At most this many items (1 to 500, default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

/// Grants of a template and scene by state.
#[derive(Serialize, ToSchema)]
pub(crate) struct Counts {
    /// Confirmed and not yet sent (a lapsed reservation included).
    pending: u64,
    /// Held by a dispatch now.
    reserved: u64,
    /// Delivered: used.
    delivered: u64,
    /// Set aside for a person: a send whose outcome is unknown.
    review: u64,
    /// Dropped: never sent.
    dropped: u64,
}

/// A grant under review.
#[derive(Serialize, ToSchema)]
pub(crate) struct ReviewEntry {
    /// The user.
    openid: String,
    /// Why it was set aside.
    reason: String,
    /// Its reservations before it was set aside.
    attempts: u32,
    /// Since when, in milliseconds since the Unix epoch.
    since_ms: u64,
}

/// A page of the grants under review.
#[derive(Serialize, ToSchema)]
pub(crate) struct ReviewPage {
    /// The grants, in openid order.
    items: Vec<ReviewEntry>,
    /// Where the next page starts (`after`); absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    next: Option<String>,
}

/// A person's decision on a grant under review.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"template_id": "SandboxRestockAlert_0000000000000000000001", "scene": 1000, "openid": "oSandbox_Alice_00000000001", "resolution": "release", "note": "not in the user's chat history (ticket 812)"}))]
pub(crate) struct Decision {
    /// The grant's template.
    template_id: String,
    /// The grant's scene.
    #[schema(minimum = 0, maximum = 10000)]
    scene: u32,
    /// The grant's user.
    openid: String,
    /// `delivered` (the user has the message: used, never sent again), `release` (it did not
    /// arrive: pending again, sent by the next dispatch) or `drop` (never sent).
    #[schema(pattern = "^(delivered|release|drop)$")]
    resolution: String,
    /// Who decided and on what evidence (1 to 500 characters, no control characters), with the
    /// key's name put before it: kept in the SQL ledger's history (its `events`); on Redis,
    /// only a dropped grant keeps it, as its reason, and the gateway's log names the key.
    #[schema(min_length = 1, max_length = 500)]
    note: String,
}

/// The answers of the grant routes besides their own.
#[derive(IntoResponses)]
#[allow(dead_code)] // Documentation only.
enum GrantAnswers {
    /// `invalid_query`: a query parameter is unknown, repeated or missing (`field` names it).
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// `invalid_request` with `field`: a value breaks its rule.
    #[response(status = 422)]
    Unprocessable(ErrorBody),
    /// `store_unavailable`: the ledger could not be reached.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// The grants of a template and scene, counted by state; scope `grants:review`.
#[utoipa::path(
    get,
    path = "/v1/apps/{appid}/grants",
    tag = "consent",
    params(AppIdPath, ScopeQuery),
    security(("api_key" = [])),
    responses((status = 200, description = "The counts", body = Counts), GrantAnswers, KeyedAnswers)
)]
pub(crate) async fn counts(
    State(gw): State<Gateway>,
    Path(appid): Path<String>,
    request: Request,
) -> Response {
    let (scope, _, now) = match scope_of(&gw, &appid, &request, &["template_id", "scene"]) {
        Ok(s) => s,
        Err(refused) => return *refused,
    };
    match gw.shared.grants.counts(&scope, now).await {
        Ok(c) => Json(Counts {
            pending: c.pending,
            reserved: c.reserved,
            delivered: c.delivered,
            review: c.review,
            dropped: c.dropped,
        })
        .into_response(),
        Err(e) => unavailable(&appid, &e),
    }
}

/// The grants of a template and scene under review, a page at a time; scope `grants:review`.
#[utoipa::path(
    get,
    path = "/v1/apps/{appid}/grants/review",
    tag = "consent",
    params(AppIdPath, ScopeQuery, PageQuery),
    security(("api_key" = [])),
    responses((status = 200, description = "A page of grants under review", body = ReviewPage), GrantAnswers, KeyedAnswers)
)]
pub(crate) async fn reviews(
    State(gw): State<Gateway>,
    Path(appid): Path<String>,
    request: Request,
) -> Response {
    let names = ["template_id", "scene", "after", "limit"];
    let (scope, params, _) = match scope_of(&gw, &appid, &request, &names) {
        Ok(s) => s,
        Err(refused) => return *refused,
    };
    let after = match params.get("after").map(OpenId::new).transpose() {
        Ok(a) => a,
        Err(e) => return invalid("after", &e.to_string()),
    };
    let limit = match params.get("limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => n,
        Some(_) => return invalid("limit", "a whole number from 1 to 500"),
    };
    // One more than the page, so that `next` is given only when something follows.
    match gw.shared.grants.reviews(&scope, after.as_ref(), limit + 1).await {
        Ok(mut items) => {
            let more = items.len() > limit;
            items.truncate(limit);
            let next = more.then(|| items.last().map(|i| i.openid.as_str().to_owned())).flatten();
            let items = items
                .into_iter()
                .map(|i| ReviewEntry {
                    openid: i.openid.as_str().to_owned(),
                    reason: i.reason,
                    attempts: i.attempts,
                    since_ms: i
                        .since
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                })
                .collect();
            Json(ReviewPage { items, next }).into_response()
        }
        Err(e) => unavailable(&appid, &e),
    }
}

/// Decides a grant under review; scope `grants:review`.
///
/// Applies only to a grant under review (a review is decided once): any other is answered 409
/// `not_under_review`, nothing changed.
#[utoipa::path(
    post,
    path = "/v1/apps/{appid}/grants/review/resolve",
    tag = "consent",
    params(AppIdPath),
    security(("api_key" = [])),
    request_body = Decision,
    responses(
        (status = 200, description = "Decided: `{\"resolved\": true}`", body = Object),
        (status = 400, description = "`invalid_body`: the body is not a decision; or `unreadable_body`", body = ErrorBody),
        (status = 409, description = "`not_under_review`: the grant is not under review (unknown, pending, used, dropped, or decided already); nothing changed", body = ErrorBody),
        (status = 422, description = "`invalid_request` with `field`: a value breaks its rule", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the ledger could not be reached", body = ErrorBody),
        KeyedAnswers,
        TooLarge,
    )
)]
pub(crate) async fn resolve(
    State(gw): State<Gateway>,
    Path(appid): Path<String>,
    request: Request,
) -> Response {
    let (key, client) = match gw.authorized(request.headers(), &appid, Scope::GrantsReview) {
        Ok((key, client)) => (key.name.clone(), client.clone()),
        Err(refusal) => return refusal.into_response(),
    };
    let expected = "expected {\"template_id\", \"scene\", \"openid\", \"resolution\", \"note\"}";
    let decision: Decision = match read_json(request, expected).await {
        Ok(d) => d,
        Err(refused) => return refused,
    };
    let checked = (|| {
        let template_id =
            TemplateId::new(decision.template_id).map_err(|e| ("template_id", e.to_string()))?;
        let scene = Scene::new(decision.scene).map_err(|e| ("scene", e.to_string()))?;
        let openid = OpenId::new(decision.openid).map_err(|e| ("openid", e.to_string()))?;
        let resolution = match decision.resolution.as_str() {
            "delivered" => Resolution::Delivered,
            "release" => Resolution::Release,
            "drop" => Resolution::Drop,
            _ => return Err(("resolution", "one of delivered, release, drop".to_owned())),
        };
        let note = decision.note.trim();
        if note.is_empty() || note.chars().count() > 500 || note.chars().any(char::is_control) {
            return Err((
                "note",
                "1 to 500 characters, no control characters (line breaks included): who decided, on what evidence"
                    .to_owned(),
            ));
        }
        Ok((GrantScope::one_time(client.appid().clone(), template_id, scene).key(openid), resolution, note))
    })();
    let (grant, resolution, note) = match checked {
        Ok(c) => c,
        Err((field, rule)) => return invalid(field, &rule),
    };
    let note = format!("{key}: {note}");
    match gw.shared.grants.resolve(&grant, resolution, &note, client.clock().now()).await {
        Ok(true) => {
            // The openid is personal data: the template and scene say which grants it was among.
            info!(
                appid = %appid,
                key = %key,
                template_id = %grant.template_id,
                scene = grant.scene.get(),
                resolution = ?resolution,
                "a grant under review was decided"
            );
            Json(json!({"resolved": true})).into_response()
        }
        Ok(false) => error(
            StatusCode::CONFLICT,
            "not_under_review",
            "the grant is not under review (unknown, pending, used, dropped, or decided already); nothing changed",
        ),
        Err(e) => unavailable(&appid, &e),
    }
}

/// The key's scope check, the query's parameters (only `names`, each at most once) and the
/// grant scope they name, with the client's now.
fn scope_of(
    gw: &Gateway,
    appid: &str,
    request: &Request,
    names: &[&str],
) -> Result<(GrantScope, HashMap<String, String>, std::time::SystemTime), Box<Response>> {
    let (_, client) = gw
        .authorized(request.headers(), appid, Scope::GrantsReview)
        .map_err(|refusal| Box::new(refusal.into_response()))?;
    let params = query(request, names)?;
    let get = |name: &str| params.get(name).ok_or_else(|| Box::new(bad_query(name, "required")));
    let template_id =
        TemplateId::new(get("template_id")?.as_str()).map_err(|e| invalid("template_id", &e.to_string()))?;
    let scene = get("scene")?
        .parse::<u32>()
        .ok()
        .and_then(|s| Scene::new(s).ok())
        .ok_or_else(|| Box::new(invalid("scene", "a whole number from 0 to 10000")))?;
    let scope = GrantScope::one_time(client.appid().clone(), template_id, scene);
    Ok((scope, params, client.clock().now()))
}

/// The query's parameters, percent-decoded: only `names`, each at most once (400
/// `invalid_query` naming the first that is not).
pub(crate) fn query(request: &Request, names: &[&str]) -> Result<HashMap<String, String>, Box<Response>> {
    let mut params = HashMap::new();
    for (name, value) in form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes()) {
        let Some(known) = names.iter().find(|n| **n == name) else {
            return Err(Box::new(bad_query(&name, "an unknown parameter")));
        };
        if params.insert((*known).to_owned(), value.into_owned()).is_some() {
            return Err(Box::new(bad_query(known, "given more than once")));
        }
    }
    Ok(params)
}

fn bad_query(name: &str, rule: &str) -> Response {
    // A made-up name is echoed at most 64 characters long.
    let name: String = name.chars().take(64).collect();
    let body = json!({"error": "invalid_query", "field": name, "message": format!("`{name}`: {rule}")});
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

fn unavailable(appid: &str, e: &LedgerError) -> Response {
    warn!(appid = %appid, error = %e, "the grant ledger failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the grant ledger could not be reached; ask again",
    )
}
