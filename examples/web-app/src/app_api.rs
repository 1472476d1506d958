//! The JSON API a mobile app calls (the mobile-app flow of WeChat's guide):
//!
//! 1. `POST /api/subscriptions/request`: the app user's session → the request the app hands
//!    the Open SDK (`{"scene","templateId","reserved"}`), its `reserved` a signed, single-use
//!    state bound to that user;
//! 2. the app calls the SDK; WeChat asks the user;
//! 3. `POST /api/subscriptions/answer`: the SDK's answer as the app received it → the grant
//!    recorded, or a typed error as JSON with an HTTP status that fits.
//!
//! Calls carry `Authorization: Bearer <app session token>`: the token your app's login issues
//! (here [`AppState::issue_app_session`], signed with `WEBAPP_APP_SESSION_KEY`). Each user is
//! rate limited (`governor`), and bodies are capped at [`MAX_BODY`].

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::post;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subscribe_client::{Answer, AuthorizationError, ErrorKind, RecordError, Recorded};
use subscribe_types::AuthorizationAnswer;
use subscribe_types::secrecy::{ExposeSecret as _, SecretSlice};

use crate::AppState;

/// The largest request body the app API reads (an SDK answer is a few hundred bytes).
pub const MAX_BODY: usize = 4096;
/// Users whose rate-limit state is kept before idle ones are forgotten.
const LIMITER_KEYS: usize = 10_000;

/// The app API's routes (mounted by [`crate::router`]).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/subscriptions/request", post(request))
        .route("/api/subscriptions/answer", post(answer))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// The key app session tokens are signed with (`WEBAPP_APP_SESSION_KEY`): never printed.
#[derive(Clone)]
pub struct AppSessionKey(Arc<SecretSlice<u8>>);

impl std::fmt::Debug for AppSessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppSessionKey([redacted])")
    }
}

impl AppSessionKey {
    /// Shortest accepted key, in bytes.
    pub const MIN_LEN: usize = 32;

    /// Checks the key's length.
    ///
    /// # Errors
    /// The rule it breaks (never the value).
    pub fn new(key: &[u8]) -> Result<Self, &'static str> {
        if key.len() < Self::MIN_LEN {
            return Err("must be at least 32 bytes (openssl rand -hex 32)");
        }
        Ok(Self(Arc::new(SecretSlice::from(key.to_vec()))))
    }

    fn tag(&self, user: &str, expires: u64) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(self.0.expose_secret()).expect("HMAC takes any key length");
        mac.update(b"app-session\0");
        mac.update(user.as_bytes());
        mac.update(b"\0");
        mac.update(&expires.to_be_bytes());
        mac
    }

    /// `{user}.{expires}.{tag}`: what the app sends as its bearer token.
    pub(crate) fn issue(&self, user: &str, expires: u64) -> String {
        format!("{user}.{expires}.{}", hex::encode(self.tag(user, expires).finalize().into_bytes()))
    }

    /// The user of a genuine, unexpired token.
    fn verify<'t>(&self, token: &'t str, now: u64) -> Option<&'t str> {
        let (rest, tag) = token.rsplit_once('.')?;
        let (user, expires) = rest.rsplit_once('.')?;
        let expires: u64 = expires.parse().ok()?;
        let tag = hex::decode(tag).ok()?;
        (expires > now && self.tag(user, expires).verify_slice(&tag).is_ok()).then_some(user)
    }
}

/// A user id an app session may carry: what the state is bound to.
pub(crate) fn valid_user(user: &str) -> bool {
    (1..=64).contains(&user.len())
        && user.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The per-user rate limit of the app API.
#[derive(Debug)]
pub(crate) struct AppLimiter(DefaultKeyedRateLimiter<String>);

impl AppLimiter {
    pub(crate) fn per_minute(n: NonZeroU32) -> Self {
        Self(RateLimiter::keyed(Quota::per_minute(n)))
    }

    /// `Ok` when `user` may make a request now; otherwise how long to wait.
    fn check(&self, user: &str) -> Result<(), Duration> {
        if self.0.len() > LIMITER_KEYS {
            self.0.retain_recent();
        }
        self.0
            .check_key(&user.to_owned())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// A typed error as the app sees it: `{"error": code, "message": text, "retryable": bool}`.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let retryable = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
    (status, Json(serde_json::json!({ "error": code, "message": message, "retryable": retryable })))
        .into_response()
}

/// The app user of this request, or the answer to give instead.
fn authenticate(app: &AppState, headers: &HeaderMap) -> Result<String, Box<Response>> {
    let Some(key) = &app.config.app_session_key else {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "app_api_off",
            "the app API is off: start the service with WEBAPP_APP_SESSION_KEY set",
        )));
    };
    let now = app.client.clock().now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let user = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|token| key.verify(token.trim(), now))
        .filter(|user| valid_user(user))
        .ok_or_else(|| {
            Box::new(error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "a valid app session token is required",
            ))
        })?;
    if let Err(wait) = app.app_limiter.check(user) {
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests for this user: wait and retry",
        );
        let secs = wait.as_secs().max(1).to_string();
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_str(&secs).expect("digits"));
        return Err(Box::new(response));
    }
    Ok(user.to_owned())
}

/// `POST /api/subscriptions/request` (empty body): the SDK request for this user.
async fn request(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let user = match authenticate(&app, &headers) {
        Ok(user) => user,
        Err(response) => return *response,
    };
    let request = app.client.mobile_request(&app.config.template_id, app.config.scene, &user);
    Json(request).into_response()
}

/// `POST /api/subscriptions/answer` with the SDK's answer: the grant recorded.
async fn answer(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let user = match authenticate(&app, &headers) {
        Ok(user) => user,
        Err(response) => return *response,
    };
    let Ok(body) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "invalid_answer", "the body is not UTF-8 JSON");
    };
    let recorded =
        async { app.client.complete(Answer::Mobile(body), &user).await?.record(app.ledger.as_ref()).await };
    match recorded.await {
        Ok((AuthorizationAnswer::Confirmed(_), recorded)) => {
            app.counts_changed();
            let recorded = match recorded {
                Some(Recorded::AlreadyPending) => "already_pending",
                Some(Recorded::Renewed) => "renewed",
                _ => "added",
            };
            tracing::info!(recorded, "app subscription confirmed");
            Json(serde_json::json!({ "action": "confirm", "recorded": recorded })).into_response()
        }
        Ok((AuthorizationAnswer::Cancelled(_), _)) => {
            Json(serde_json::json!({ "action": "cancel" })).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "app answer refused");
            let message = e.to_string();
            match &e {
                RecordError::Authorization(
                    AuthorizationError::ReplayedState | AuthorizationError::AlreadyAccepted,
                ) => error(StatusCode::CONFLICT, "replayed", &message),
                RecordError::Authorization(AuthorizationError::ExpiredState { .. }) => {
                    error(StatusCode::FORBIDDEN, "state_expired", &message)
                }
                RecordError::Authorization(AuthorizationError::Query(q)) => {
                    error(StatusCode::BAD_REQUEST, "invalid_answer", &format!("{message}: {q}"))
                }
                _ if e.kind() == ErrorKind::Invalid => {
                    error(StatusCode::FORBIDDEN, "state_not_valid", &message)
                }
                _ => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the answer could not be saved: retry it",
                ),
            }
        }
    }
}

#[cfg(test)]
mod zeroize_tests {
    use super::*;

    /// Does not compile if the session key goes back to a plain byte slice.
    #[test]
    fn the_app_session_key_is_zeroed_on_drop() {
        fn zeroed_on_drop<T: zeroize::ZeroizeOnDrop + ?Sized>(_: &T) {}
        let key = AppSessionKey::new(&[7; 32]).unwrap();
        zeroed_on_drop(&*key.0);
        assert_eq!(key.0.expose_secret(), &[7; 32]);
    }
}
