//! Sending each kind of message (one-time, mini-program, notification): one endpoint call with the token replay and the [`RetryPolicy`](crate::RetryPolicy)'s
//! replays. What to do after each attempt is decided by [`Budget::decide`], free of I/O; this
//! file only performs it.

use bytes::Bytes;
use subscribe_transport::{
    HttpRequest, HttpResponse, HttpTransport as _, TransportError, TransportErrorKind, http,
};
use subscribe_types::{
    AccessToken, ApiError, ApiResponse, Endpoint, EndpointSpec, Method, MiniProgramMessage,
    NotificationMessage, NotificationSent, OneTimeMessage,
};
use tracing::{Instrument, debug, info_span, warn};

use super::{Answered, Client, SendReceipt};
use crate::error::{SendError, UnknownCause};
use crate::retry::{Budget, Failure, Seen, Verdict};

impl Client {
    /// Sends the one message a confirmation allows.
    ///
    /// Replays only what cannot deliver twice (see [`RetryPolicy`](crate::RetryPolicy)); a
    /// token rejection is answered by one refresh and one replay.
    ///
    /// # Errors
    /// - [`SendError::Api`]: WeChat refused (43101: no unused authorization; 40003: bad openid; …).
    /// - [`SendError::OutcomeUnknown`] / [`SendError::ProbablyDelivered`]: do **not** resend blindly.
    /// - [`SendError::Transport`], [`SendError::Token`], [`SendError::HttpStatus`]: nothing was
    ///   delivered.
    pub async fn send_one_time(&self, message: &OneTimeMessage) -> Result<SendReceipt, SendError> {
        self.execute(message).await.map(|answered| answered.receipt)
    }

    /// Calls any endpoint answered with WeChat's `{errcode, errmsg}` envelope, with the same
    /// token handling and retry policy as [`send_one_time`](Self::send_one_time): serializes the endpoint's body
    /// with `serde_json` and returns its decoded [`Response`](Endpoint::Response).
    ///
    /// # Errors
    /// As [`send_one_time`](Self::send_one_time); [`SendError::BodyNotSerializable`] when the body cannot be
    /// written as JSON (nothing was sent).
    pub async fn execute<E: Endpoint + ?Sized>(&self, call: &E) -> Result<Answered<E::Response>, SendError> {
        let spec = E::SPEC;
        let span =
            info_span!("wechat.call", appid = %self.inner.appid, path = spec.path, endpoint = spec.name);
        let body = serde_json::to_vec(call.body()).map_err(|_| SendError::BodyNotSerializable)?;
        let query = call.query();
        let (answer, receipt) = self.run(spec, query.as_deref(), Bytes::from(body)).instrument(span).await?;
        // `errcode` was 0: WeChat acted. An answer that does not decode as the endpoint's
        // response cannot be called a failure, nor read: reported unknown, never resent.
        let response = serde_json::from_slice(&answer).map_err(|e| SendError::OutcomeUnknown {
            cause: UnknownCause::UndecodableResponse,
            source: Some(Box::new(subscribe_types::DecodeError::from(&e))),
        })?;
        Ok(Answered { response, receipt })
    }

    /// Sends `body` until [`Budget::decide`] says stop; on `errcode` 0, the answer's body.
    async fn run(
        &self,
        spec: EndpointSpec,
        query: Option<&str>,
        body: Bytes,
    ) -> Result<(Bytes, SendReceipt), SendError> {
        let inner = &*self.inner;
        let mut budget: Budget = inner.retry.budget(spec.needs_access_token);
        let mut backoffs = 0u32;
        let mut token = if spec.needs_access_token { Some(inner.tokens.get().await?) } else { None };
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let request = self.request(spec, query, token.as_ref(), &body)?;
            let (seen, last) = observe(inner.transport.send(request).await);
            // WeChat's code, when it answered with one, in every line below (left out otherwise).
            let errcode = match seen {
                Seen::Errcode(code) => Some(code.get()),
                _ => None,
            };
            debug!(attempt, errcode, ?seen, "attempt ended");
            match budget.decide(seen) {
                Verdict::Succeeded => {
                    let Last::Answer(body, _) = last else { unreachable!("success is an answer") };
                    return Ok((body, SendReceipt { attempts: attempt }));
                }
                Verdict::ReplayAfterBackoff => {
                    warn!(attempt, errcode, ?seen, "replaying after backoff");
                    self.backoff(&mut backoffs).await;
                }
                Verdict::RefreshTokenAndReplay => {
                    warn!(attempt, errcode, "access token rejected; refreshing and replaying once");
                    let rejected = token.take().expect("a token replay needs a token");
                    token = Some(inner.tokens.rejected(&rejected).await?.token().clone());
                }
                Verdict::Fail(failure) => {
                    warn!(attempt, errcode, ?seen, ?failure, "call failed");
                    return Err(failure_error(failure, seen, last));
                }
            }
        }
    }

    fn request(
        &self,
        spec: EndpointSpec,
        query: Option<&str>,
        token: Option<&AccessToken>,
        body: &Bytes,
    ) -> Result<HttpRequest, SendError> {
        let uri = http::Uri::try_from(self.uri_text(spec.path, query, token)).map_err(invalid_request)?;
        let built = match spec.method {
            Method::Post => HttpRequest::post(uri, body.clone()),
            Method::Get => HttpRequest::get(uri),
        };
        built.map_err(invalid_request)
    }

    fn uri_text(&self, path: &str, query: Option<&str>, token: Option<&AccessToken>) -> String {
        let mut uri = String::with_capacity(self.inner.api_base.len() + path.len() + 200);
        uri.push_str(&self.inner.api_base);
        uri.push_str(path);
        if let Some(t) = token {
            uri.push_str("?access_token=");
            subscribe_types::encoding::push_component(&mut uri, t.expose_secret());
        }
        if let Some(q) = query {
            uri.push(if token.is_some() { '&' } else { '?' });
            uri.push_str(q);
        }
        uri
    }

    async fn backoff(&self, n: &mut u32) {
        let random = crate::state::splitmix(&self.inner.jitter);
        let d = self.inner.retry.backoff(*n, random);
        *n += 1;
        self.inner.clock.sleep(d).await;
    }

    /// Sends a mini-program subscribe message (`/cgi-bin/message/subscribe/send`).
    ///
    /// Sends to one openid go one at a time from this client (WeChat answers 43108 to
    /// concurrent calls for one user); a 43108 from another process is replayed after a
    /// backoff, as WeChat's busy answer is. Otherwise as [`send_one_time`](Self::send_one_time): a one-time
    /// template's acceptance is used up by a delivered message, and an answer that may hide a
    /// delivery is reported as such, never resent.
    ///
    /// # Errors
    /// As [`send_one_time`](Self::send_one_time). WeChat's 47003 names the data field it refused
    /// ([`ApiError::invalid_field`](subscribe_types::ApiError::invalid_field)).
    pub async fn send_mini_program(&self, message: &MiniProgramMessage) -> Result<SendReceipt, SendError> {
        let _one_at_a_time = self.inner.openid_locks.lock(message.touser().as_str()).await;
        self.execute(message).await.map(|answered| answered.receipt)
    }

    /// Sends a service account's subscribe notification (`/cgi-bin/message/subscribe/bizsend`)
    /// and returns its `msgid`, which the `subscribe_msg_sent_event` push later names.
    /// One at a time per openid, as [`send_mini_program`](Self::send_mini_program).
    ///
    /// # Errors
    /// As [`send_mini_program`](Self::send_mini_program).
    pub async fn send_notification(
        &self,
        message: &NotificationMessage,
    ) -> Result<Answered<NotificationSent>, SendError> {
        let _one_at_a_time = self.inner.openid_locks.lock(message.touser().as_str()).await;
        self.execute(message).await
    }

    /// Openids with a send in flight or waiting, from this client: a bound a long batch keeps.
    #[doc(hidden)]
    pub fn openids_in_flight(&self) -> usize {
        self.inner.openid_locks.len()
    }
}

/// What an attempt left to report: the transport's error, or the answer's body with WeChat's
/// refusal when it gave one.
enum Last {
    Transport(TransportError),
    Answer(Bytes, Option<ApiError>),
    Unreadable(subscribe_types::DecodeError),
    Status,
}

fn observe(outcome: Result<HttpResponse, TransportError>) -> (Seen, Last) {
    let answer = match outcome {
        Err(e) if e.kind() == TransportErrorKind::InvalidRequest => {
            return (Seen::Unbuildable, Last::Transport(e));
        }
        Err(e) if e.request_never_left() => return (Seen::NeverLeft, Last::Transport(e)),
        Err(e) => return (Seen::LostAfterSending, Last::Transport(e)),
        Ok(answer) => answer,
    };
    let status = answer.status().as_u16();
    if status != 200 {
        return (Seen::Status(status), Last::Status);
    }
    // Strict: a `200 {}` (a wrong `api_base`, a gateway's own answer) is not a success.
    match ApiResponse::parse_strict(answer.body()) {
        Err(e) => (Seen::Unreadable, Last::Unreadable(e)),
        Ok(envelope) => {
            let code = envelope.errcode;
            (Seen::Errcode(code), Last::Answer(answer.into_body(), envelope.into_result().err()))
        }
    }
}

/// The error a failed call reports: the decision's `failure`, with what the last attempt left.
fn failure_error(failure: Failure, seen: Seen, last: Last) -> SendError {
    let status = match seen {
        Seen::Status(s) => s,
        _ => 0,
    };
    match (failure, last) {
        (Failure::NotSent, Last::Transport(e)) => SendError::Transport(e),
        (Failure::Unknown, Last::Transport(e)) => {
            SendError::OutcomeUnknown { cause: UnknownCause::NoAnswer(e.kind()), source: Some(Box::new(e)) }
        }
        (Failure::Unknown, Last::Unreadable(e)) => {
            SendError::OutcomeUnknown { cause: UnknownCause::UnreadableAnswer, source: Some(Box::new(e)) }
        }
        (Failure::Unknown, Last::Answer(_, Some(api))) => {
            SendError::OutcomeUnknown { cause: UnknownCause::ReplayRefused, source: Some(Box::new(api)) }
        }
        (Failure::Unknown, _) => {
            SendError::OutcomeUnknown { cause: UnknownCause::ServerError { status }, source: None }
        }
        (Failure::Status, _) => SendError::HttpStatus { status },
        (Failure::ProbablyDelivered, Last::Answer(_, Some(api))) => SendError::ProbablyDelivered(api),
        (Failure::Refused, Last::Answer(_, Some(api))) => SendError::Api(api),
        (failure, _) => unreachable!("{failure:?} after {seen:?}"),
    }
}

/// A request that could not be built. `http`'s errors would describe a URI that holds the
/// token: keep none of it.
fn invalid_request<E>(_: E) -> SendError {
    SendError::Transport(TransportError::from_kind(TransportErrorKind::InvalidRequest))
}
