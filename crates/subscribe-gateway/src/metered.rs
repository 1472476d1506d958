//! [`Metered`]: the apps' HTTP transport, counting each request to WeChat's token endpoints
//! and, when it brings no token, why (`subscribe_gateway_token_refreshes_total`,
//! `subscribe_gateway_token_refresh_errors_total`). The token logic is the client's; this
//! watches what it sends, without changing a byte of it.
//!
//! Only the request's path is read, never its query: the classic endpoint's query holds the
//! AppSecret. A token endpoint's answer is parsed again to classify it, and the parsed token
//! dropped at once.

use std::sync::Arc;

use subscribe_client::transport::{
    HttpRequest, HttpResponse, HttpTransport, ReqwestTransport, TransportError, TransportErrorKind,
};
use subscribe_types::{IssuedToken, TokenEndpointFailure, TokenResponseError, endpoint};

use crate::metrics::Metrics;

/// One app's transport: a shared reqwest transport, watched for token requests.
#[derive(Debug)]
pub(crate) struct Metered {
    inner: Arc<ReqwestTransport>,
    metrics: Metrics,
    app: String,
}

impl Metered {
    pub(crate) fn new(inner: Arc<ReqwestTransport>, metrics: Metrics, app: &str) -> Self {
        Self { inner, metrics, app: app.to_owned() }
    }
}

/// Counts a token request that never finished as `"abandoned"`: the client stopped waiting
/// for it (its own token timeout).
struct Pending<'a> {
    metered: &'a Metered,
    finished: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.metered.metrics.token_refresh_error(&self.metered.app, "abandoned");
        }
    }
}

#[subscribe_client::async_trait]
impl HttpTransport for Metered {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let path = request.uri().path();
        if path != endpoint::STABLE_TOKEN.path && path != endpoint::CLASSIC_TOKEN.path {
            return self.inner.send(request).await;
        }
        self.metrics.token_refresh(&self.app);
        let mut pending = Pending { metered: self, finished: false };
        let result = self.inner.send(request).await;
        pending.finished = true;
        if let Some(class) = failure_class(&result) {
            self.metrics.token_refresh_error(&self.app, class);
        }
        result
    }
}

/// Why a token endpoint's answer brought no token (the `class` label), or `None` if it did.
fn failure_class(result: &Result<HttpResponse, TransportError>) -> Option<&'static str> {
    let response = match result {
        Ok(response) => response,
        Err(e) => {
            return Some(match e.kind() {
                TransportErrorKind::Connect => "connect",
                TransportErrorKind::Timeout => "timeout",
                TransportErrorKind::Io => "io",
                _ => "transport",
            });
        }
    };
    if response.status() != 200 {
        return Some("http_status");
    }
    match IssuedToken::parse(response.body()) {
        Ok(_) => None,
        Err(TokenResponseError::Api(e)) => Some(match e.code().at_token_endpoint() {
            Some(TokenEndpointFailure::InvalidAppId) => "invalid_appid",
            Some(TokenEndpointFailure::InvalidSecret) => "invalid_secret",
            Some(TokenEndpointFailure::IpNotWhitelisted) => "ip_not_whitelisted",
            Some(TokenEndpointFailure::SecretFrozen) => "secret_frozen",
            Some(TokenEndpointFailure::QuotaExceeded) => "quota_exceeded",
            Some(TokenEndpointFailure::Busy) => "busy",
            _ => "refused",
        }),
        Err(_) => Some("malformed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The class of an answer with `status` and `body`.
    fn class(status: u16, body: &'static str) -> Option<&'static str> {
        let mut r = HttpResponse::new(body.into());
        *r.status_mut() = subscribe_client::transport::http::StatusCode::from_u16(status).unwrap();
        failure_class(&Ok(r))
    }

    #[test]
    fn token_answers_are_classed() {
        assert_eq!(class(200, r#"{"access_token":"ACCESS_TOKEN_x","expires_in":7200}"#), None);
        assert_eq!(
            class(200, r#"{"errcode":45009,"errmsg":"reach max api daily quota limit"}"#),
            Some("quota_exceeded")
        );
        assert_eq!(class(200, r#"{"errcode":-1,"errmsg":"system error"}"#), Some("busy"));
        assert_eq!(class(200, r#"{"errcode":40125,"errmsg":"invalid appsecret"}"#), Some("invalid_secret"));
        assert_eq!(class(200, "<html>"), Some("malformed"));
        assert_eq!(class(502, ""), Some("http_status"));
        let e = TransportError::from_kind(TransportErrorKind::Connect);
        assert_eq!(failure_class(&Err(e)), Some("connect"));
    }
}
