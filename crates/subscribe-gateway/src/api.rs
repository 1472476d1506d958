//! The token endpoints, and the answers every route shares: a missing, malformed or unknown
//! API key is answered 401 with one body; a known key without the scope for the app in the
//! path, 403 with one body, whether that app exists or not.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::header::{CACHE_CONTROL, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::LengthLimitError;
use serde::{Deserialize, Serialize};
use serde_json::json;
use subscribe_client::{CachedToken, Client, TokenError};
use subscribe_types::AccessToken;
use tracing::{info, warn};
use utoipa::ToSchema;

use crate::Gateway;
use crate::config::Scope;
use crate::keys::Key;
use crate::metrics::{TokenOutcome, observe_wait};
use crate::openapi::{AppIdPath, ErrorBody, KeyedAnswers, TooLarge};
use crate::ratelimit::too_many;
use crate::reports::ReportError;

/// An answer with a JSON body `{"error": code, "message": message}`.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": code, "message": message}))).into_response()
}

/// 422 `invalid_request` naming `field` and the rule it breaks.
pub(crate) fn invalid(field: &str, rule: &str) -> Response {
    let body = json!({"error": "invalid_request", "field": field, "message": rule});
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}

/// Why a request was refused before anything was done for it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Refusal {
    /// A missing, malformed or unknown key: one answer for all three.
    Unauthorized,
    /// A known key used where it has no scope: one answer for any appid, listed or not.
    Forbidden,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::Unauthorized => {
                let mut r = error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "a valid API key is needed: Authorization: Bearer <key>",
                );
                r.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            }
            Self::Forbidden => {
                error(StatusCode::FORBIDDEN, "forbidden", "this API key may not do this for this app")
            }
        }
    }
}

impl Gateway {
    /// The client of `appid` when the key in `headers` may do `scope` for it.
    fn authorize(&self, headers: &HeaderMap, appid: &str, scope: Scope) -> Result<&Client, Refusal> {
        self.authorized(headers, appid, scope).map(|(_, client)| client)
    }

    /// The key in `headers` and the client of `appid`, when that key may do `scope` for it.
    pub(crate) fn authorized(
        &self,
        headers: &HeaderMap,
        appid: &str,
        scope: Scope,
    ) -> Result<(&Key, &Client), Refusal> {
        let key = self.shared.keys.authenticate(headers).ok_or(Refusal::Unauthorized)?;
        if !key.allows(appid, scope) {
            info!(key = %key.name, scope = ?scope, "refused: the key has no scope for the app asked for");
            return Err(Refusal::Forbidden);
        }
        // A scope names only listed apps (checked at start).
        self.shared.apps.get(appid).map(|client| (key, client)).ok_or(Refusal::Forbidden)
    }
}

/// The app's current access token.
///
/// Served from the gateway's memory, refreshed ahead of expiry; the first call for an app waits
/// for the one refresh every waiting caller shares. Scope `token:read`.
#[utoipa::path(
    get,
    path = "/v1/apps/{appid}/access_token",
    tag = "tokens",
    params(AppIdPath),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The token (`Cache-Control: no-store`)", body = TokenAnswer),
        KeyedAnswers,
        (status = 503, description = "`token_unavailable`: no token can be had now; `message` says why", body = ErrorBody),
    )
)]
pub(crate) async fn get_token(
    State(gw): State<Gateway>,
    Path(appid): Path<String>,
    headers: HeaderMap,
) -> Response {
    let client = match gw.authorize(&headers, &appid, Scope::TokenRead) {
        Ok(c) => c,
        Err(refusal) => return refusal.into_response(),
    };
    let (result, waited) = observe_wait(client.token()).await;
    gw.shared.metrics.token_read(client.appid().as_str(), outcome(&result, waited));
    match result {
        Ok(token) => token_answer(client, &token),
        Err(e) => token_error(client, &e),
    }
}

/// What a caller reports: the token WeChat rejected.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"access_token": "ACCESS_TOKEN_WECHAT_REJECTED"}))]
pub(crate) struct Report {
    /// The token WeChat answered 40001, 40014 or 42001 to.
    access_token: String,
}

/// The token: `{"access_token": "…", "expires_in": <whole seconds left>}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct TokenAnswer {
    /// The access token, to use at most `expires_in` seconds.
    access_token: String,
    /// The whole seconds left by the gateway's count (which errs short).
    expires_in: u64,
}

/// Reports a token WeChat rejected; answers the token that replaced it.
///
/// While the reported token is the current one it is dropped and one refresh runs, which every
/// caller reporting the same token shares; a token that is no longer current is answered with
/// the current one, WeChat not asked. The current token is replaced at most once per the app's
/// `report_interval_ms` (five minutes unless set): a report of the new token sooner is answered
/// 429 `report_too_soon`. Scope `token:read`.
#[utoipa::path(
    post,
    path = "/v1/apps/{appid}/access_token/invalidate",
    tag = "tokens",
    params(AppIdPath),
    security(("api_key" = [])),
    request_body = Report,
    responses(
        (status = 200, description = "The current token, after the reported one was replaced", body = TokenAnswer),
        (status = 400, description = "`invalid_body`, `unreadable_body`: the body is not `{\"access_token\": \"…\"}`", body = ErrorBody),
        KeyedAnswers,
        TooLarge,
        (status = 422, description = "`invalid_token`: the reported `access_token` is not an access token", body = ErrorBody),
        (status = 429, description = "`rate_limited`: the key is over its rate, or the caller's address over its failed authentications; or `report_too_soon`: the reported token is the current one and a report replaced the token less than the app's `report_interval_ms` ago; nothing was asked of WeChat", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Whole seconds to wait"))),
        (status = 503, description = "`token_unavailable`: no token can be had now; `message` says why", body = ErrorBody),
    )
)]
pub(crate) async fn invalidate(
    State(gw): State<Gateway>,
    Path(appid): Path<String>,
    request: Request,
) -> Response {
    let client = match gw.authorize(request.headers(), &appid, Scope::TokenRead) {
        Ok(c) => c.clone(),
        Err(refusal) => return refusal.into_response(),
    };
    // Read only once the key is known; the body limit and body timeout layers bound it.
    let report: Report =
        match read_json(request, "expected {\"access_token\": \"<the rejected token>\"}").await {
            Ok(r) => r,
            Err(refused) => return refused,
        };
    let rejected = match AccessToken::new(report.access_token) {
        Ok(t) => t,
        Err(e) => {
            return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_token", &format!("access_token: {e}"));
        }
    };
    let Some(gate) = gw.shared.reports.get(client.appid().as_str()) else {
        return Refusal::Forbidden.into_response();
    };
    let (result, waited) = observe_wait(gate.report(&client, &rejected)).await;
    let app = client.appid().as_str();
    match result {
        Ok(token) => {
            gw.shared
                .metrics
                .token_report(app, if waited { TokenOutcome::Waited } else { TokenOutcome::Memory });
            token_answer(&client, &token)
        }
        Err(ReportError::TooSoon { retry_after }) => {
            gw.shared.metrics.token_report(app, TokenOutcome::TooSoon);
            warn!(appid = %app, "a report of the current token, sooner than report_interval_ms after the last replacement: not acted on");
            let message = format!(
                "the reported token is the current one, which a report replaced less than report_interval_ms \
                 ago (WeChat keeps a replaced token valid for five minutes): it is replaced after {} s",
                retry_after.as_secs_f64().ceil()
            );
            too_many(retry_after, "report_too_soon", &message)
        }
        Err(ReportError::Token(e)) => {
            gw.shared.metrics.token_report(app, TokenOutcome::Unavailable);
            token_error(&client, &e)
        }
    }
}

/// The `outcome` label of a token read or report.
fn outcome(result: &Result<CachedToken, TokenError>, waited: bool) -> TokenOutcome {
    match result {
        Err(_) => TokenOutcome::Unavailable,
        Ok(_) if waited => TokenOutcome::Waited,
        Ok(_) => TokenOutcome::Memory,
    }
}

/// The request's body, read whole: 413 `body_too_large` over the body limit, 400
/// `unreadable_body` when it could not be read (it trickled past the body timeout, or the
/// connection failed). Call it once the key is known: the body limit and timeout layers bound it.
pub(crate) async fn read_body(request: Request) -> Result<Bytes, Response> {
    match Bytes::from_request(request, &()).await {
        Ok(b) => Ok(b),
        Err(rejection) if over_limit(&rejection) => {
            Err(error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "the request body is too large"))
        }
        Err(_) => {
            Err(error(StatusCode::BAD_REQUEST, "unreadable_body", "the request body could not be read"))
        }
    }
}

/// The request's body ([`read_body`]) read as JSON into `T`: 400 `invalid_body` when it is not,
/// its message `expected` and serde's reason.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    request: Request,
    expected: &str,
) -> Result<T, Response> {
    let body = read_body(request).await?;
    serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "invalid_body", &format!("{expected}: {e}")))
}

/// Whether a body was refused for its size: by axum's own limit, or by the body-limit layer
/// while a body without a `Content-Length` was read (its `LengthLimitError` sits somewhere in
/// the error's chain).
pub(crate) fn over_limit(rejection: &BytesRejection) -> bool {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return true;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(e) = cause {
        if e.is::<LengthLimitError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// `{"access_token": "...", "expires_in": <whole seconds left>}`, never cached by a proxy.
fn token_answer(client: &Client, token: &CachedToken) -> Response {
    let left = token.expires_at().duration_since(client.clock().now()).unwrap_or_default();
    let body =
        TokenAnswer { access_token: token.token().expose_secret().to_owned(), expires_in: left.as_secs() };
    let mut r = Json(body).into_response();
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// 503 with the client's error (which holds no secret).
fn token_error(client: &Client, e: &TokenError) -> Response {
    warn!(appid = %client.appid(), error = %e, "no access token to serve");
    error(StatusCode::SERVICE_UNAVAILABLE, "token_unavailable", &e.to_string())
}
