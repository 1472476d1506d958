//! Authorization: the page link (web) or the Open SDK request (mobile app) with a signed state
//! bound to the user's session, then one completion for both flows: [`Client::complete`] reads
//! and verifies the [`Answer`], and the [`Completion`] it returns is accepted, or recorded into a
//! ledger. Only reading the answer differs between the flows (a redirect's query, or the JSON
//! the app forwards).

use std::fmt;

use subscribe_types::{
    AuthorizationAnswer, AuthorizeRequest, MobileSubscribeRequest, MobileSubscribeResponse, RedirectUrl,
    Reserved, Scene, TemplateId,
};

use super::{AuthorizationLink, Client};
use crate::error::{AuthorizationError, RecordError};
use crate::grants::{GrantKey, GrantLedger, Recorded};
use crate::state::Session;
use crate::used_states::{AnswerDigest, Claim, StateUse, UsedStatesError};

/// An authorization answer as it reached your server, for [`Client::complete`]. Its flow
/// decides how it is read; a text given as the other flow's is refused
/// ([`AuthorizationError::Query`]) and uses nothing up. `Debug` shows the flow and the size,
/// never the text (it holds the user's openid and the state).
#[derive(Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answer<'a> {
    /// WeChat's redirect to your `redirect_url` (web): the URL, or the request's
    /// path-and-query (`/callback?…`), read with [`AuthorizationAnswer::parse`]. The query is
    /// the text after the first `?`, so a handler passes `Uri::path_and_query`, not the bare
    /// query (a value may hold a `?` of its own).
    Redirect(&'a str),
    /// The Open SDK's answer (`WXSubscribeMsgResp` on iOS, `SubscribeMessage.Resp` on
    /// Android) as JSON, as the app forwards it, in either SDK's spelling: read with
    /// [`MobileSubscribeResponse::parse`]. Text that is not the SDK's JSON is
    /// [`QueryError::NotJson`](subscribe_types::QueryError::NotJson).
    Mobile(&'a str),
}

impl Answer<'_> {
    /// The answer, read as its flow's.
    fn read(self) -> Result<AuthorizationAnswer, AuthorizationError> {
        Ok(match self {
            Self::Redirect(callback) => AuthorizationAnswer::parse(callback)?,
            Self::Mobile(json) => MobileSubscribeResponse::parse(json)?.into_answer()?,
        })
    }
}

impl fmt::Debug for Answer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (flow, text) = match self {
            Self::Redirect(text) => ("Redirect", text),
            Self::Mobile(text) => ("Mobile", text),
        };
        write!(f, "Answer::{flow}({} bytes)", text.len())
    }
}

/// A verified answer, from [`Client::complete`]: [`accept`](Self::accept) it, or
/// [`record`](Self::record) its grant in a ledger. Either one makes it count as accepted: the
/// same answer later is a replay.
///
/// A confirmation's completion holds a claim on its mark (see [`Claim`](crate::Claim)): while
/// it lives, the same answer completed again is refused with
/// [`AuthorizationError::InProgress`] (retry shortly), so two completions of one answer at
/// once (a double submit) cannot both record it. When [`record`](Self::record) fails in the
/// ledger, the claim is released, so the user's retry goes through at once.
///
/// Dropped without either (the handler failed, or returned early), a confirmation stays
/// marked but unsealed, and its claim lapses after its period (30 s by default): from then on
/// until its state expires, the same answer is taken as the user's retry and goes through, and
/// any other answer with that state is refused as a replay. A cancellation holds no mark. `Debug` shows the action, template and scene, never the openid
/// or the state.
///
/// ```
/// # use subscribe_client::{Answer, AuthorizationError, Client, Session};
/// # use subscribe_types::{AppId, AppSecret, RedirectUrl, Scene, TemplateId};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// # let client = Client::builder(AppId::new("wx0123456789abcdef")?, AppSecret::new("0123456789abcdef0123456789abcdef")?)
/// #     .transport(subscribe_client::test_util::MockTransport::new()) // verifying sends nothing
/// #     .build()?;
/// let template = TemplateId::new("7YuTL__ilzyZB9DXcDt2mHx-CAS_E7KtsQkhIGVhhRM")?;
/// let session = Session::new("s-42")?;
/// let link = client.authorize_url(&template, Scene::new(1000)?, &RedirectUrl::new("https://app.example.com/cb")?, &session);
/// let callback = |openid: &str| format!(
///     "/cb?openid={openid}&template_id={template}&action=confirm&scene=1000&reserved={}",
///     link.request.reserved.as_str()
/// );
/// let completion = client.complete(Answer::Redirect(&callback("oAlice")), &session).await?;
/// drop(completion); // neither accepted nor recorded
/// // The state stays Alice's answer's: another openid is refused, and her retry waits until
/// // the dropped completion's claim lapses (then it goes through).
/// let mallory = client.complete(Answer::Redirect(&callback("oMallory")), &session).await;
/// assert!(matches!(mallory, Err(AuthorizationError::ReplayedState)));
/// let alice = client.complete(Answer::Redirect(&callback("oAlice")), &session).await;
/// assert!(matches!(alice, Err(AuthorizationError::InProgress)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[must_use = "a confirmation counts as accepted only once it is `accept`ed or `record`ed"]
pub struct Completion {
    client: Client,
    answer: AuthorizationAnswer,
    /// A confirmation's mark and its claim: the mark is sealed once the answer is accepted,
    /// the claim released if the ledger fails.
    mark: Option<(AnswerDigest, Claim)>,
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("action", &self.answer.action())
            .field("template_id", self.answer.template_id())
            .field("scene", &self.answer.scene())
            .finish_non_exhaustive()
    }
}

impl Completion {
    /// The verified answer, not accepted yet: look at it before you decide what to do.
    ///
    /// ```
    /// # use subscribe_client::{Answer, Client, Session};
    /// # use subscribe_types::{Action, AppId, AppSecret, RedirectUrl, Scene, TemplateId};
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let client = Client::builder(AppId::new("wx0123456789abcdef")?, AppSecret::new("0123456789abcdef0123456789abcdef")?)
    /// #     .transport(subscribe_client::test_util::MockTransport::new())
    /// #     .build()?;
    /// # let template = TemplateId::new("7YuTL__ilzyZB9DXcDt2mHx-CAS_E7KtsQkhIGVhhRM")?;
    /// # let session = Session::new("s-42")?;
    /// # let link = client.authorize_url(&template, Scene::new(1000)?, &RedirectUrl::new("https://app.example.com/cb")?, &session);
    /// let callback = format!(
    ///     "/cb?template_id={template}&action=cancel&scene=1000&reserved={}",
    ///     link.request.reserved.as_str()
    /// );
    /// let completion = client.complete(Answer::Redirect(&callback), &session).await?;
    /// assert_eq!(completion.answer().action(), Action::Cancel);
    /// assert_eq!(completion.answer().openid(), None);
    /// # let _ = completion.accept().await;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn answer(&self) -> &AuthorizationAnswer {
        &self.answer
    }

    /// Accepts the answer: a confirmation's mark is sealed, so the same answer later is
    /// refused as [`AlreadyAccepted`](AuthorizationError::AlreadyAccepted). Keep the grant (or whatever it allows) before you call this, or use
    /// [`record`](Self::record), which accepts only once the grant is in a ledger. A seal that
    /// fails is logged, not returned: the mark still refuses every other answer, and the same
    /// answer is taken as a retry until the state expires.
    ///
    /// ```
    /// # use subscribe_client::{Answer, AuthorizationError, Client, Session};
    /// # use subscribe_types::{AppId, AppSecret, AuthorizationAnswer, RedirectUrl, Scene, TemplateId};
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let client = Client::builder(AppId::new("wx0123456789abcdef")?, AppSecret::new("0123456789abcdef0123456789abcdef")?)
    /// #     .transport(subscribe_client::test_util::MockTransport::new())
    /// #     .build()?;
    /// # let template = TemplateId::new("7YuTL__ilzyZB9DXcDt2mHx-CAS_E7KtsQkhIGVhhRM")?;
    /// # let session = Session::new("s-42")?;
    /// # let link = client.authorize_url(&template, Scene::new(1000)?, &RedirectUrl::new("https://app.example.com/cb")?, &session);
    /// let callback = format!(
    ///     "/cb?openid=oAlice&template_id={template}&action=confirm&scene=1000&reserved={}",
    ///     link.request.reserved.as_str()
    /// );
    /// let answer = client.complete(Answer::Redirect(&callback), &session).await?.accept().await;
    /// let AuthorizationAnswer::Confirmed(grant) = answer else { unreachable!() };
    /// assert_eq!(grant.openid.as_str(), "oAlice"); // one message may be sent to Alice
    /// let again = client.complete(Answer::Redirect(&callback), &session).await;
    /// assert!(matches!(again, Err(AuthorizationError::AlreadyAccepted)), "a refresh after success");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn accept(self) -> AuthorizationAnswer {
        if let Some((by, _)) = &self.mark {
            self.client.seal(&self.answer, by).await;
        }
        self.answer
    }

    /// Records a confirmation in `ledger` (idempotently: a repeated confirmation adds nothing),
    /// then accepts it as [`accept`](Self::accept) does. Returns the answer and, for a
    /// confirmation, what recording did; a cancellation records nothing and is returned with
    /// `None`.
    ///
    /// ```
    /// # use subscribe_client::{Answer, Client, InMemoryGrantLedger, Recorded, Session};
    /// # use subscribe_types::{AppId, AppSecret, RedirectUrl, Scene, TemplateId};
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let client = Client::builder(AppId::new("wx0123456789abcdef")?, AppSecret::new("0123456789abcdef0123456789abcdef")?)
    /// #     .transport(subscribe_client::test_util::MockTransport::new())
    /// #     .build()?;
    /// # let template = TemplateId::new("7YuTL__ilzyZB9DXcDt2mHx-CAS_E7KtsQkhIGVhhRM")?;
    /// # let session = Session::new("s-42")?;
    /// # let link = client.authorize_url(&template, Scene::new(1000)?, &RedirectUrl::new("https://app.example.com/cb")?, &session);
    /// let ledger = InMemoryGrantLedger::new(); // in production: subscribe-sql's or subscribe-redis's
    /// let callback = format!(
    ///     "/cb?openid=oAlice&template_id={template}&action=confirm&scene=1000&reserved={}",
    ///     link.request.reserved.as_str()
    /// );
    /// let (_, recorded) = client.complete(Answer::Redirect(&callback), &session).await?.record(&ledger).await?;
    /// assert_eq!(recorded, Some(Recorded::Added)); // a dispatcher will send Alice her message
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    ///
    /// The ledger's write is bounded by the client's `store_timeout`. Once it wrote, the answer
    /// is sealed even if this future is dropped before it returns (the seal then runs on a task
    /// of its own), so a request timeout cannot leave a recorded answer open to a retry.
    ///
    /// # Errors
    /// [`RecordError::Ledger`] when the ledger fails or does not answer within
    /// `store_timeout`: nothing is accepted, the mark stays
    /// unsealed and its claim is released, so the user's retry of the same answer goes through
    /// (ask the user to retry), and any other answer with the state is still refused. (`record` never returns
    /// [`RecordError::Authorization`]: that is [`Client::complete`]'s error, which `?` turns
    /// into a `RecordError`.)
    pub async fn record(
        self,
        ledger: &dyn GrantLedger,
    ) -> Result<(AuthorizationAnswer, Option<Recorded>), RecordError> {
        let AuthorizationAnswer::Confirmed(c) = &self.answer else {
            return Ok((self.accept().await, None));
        };
        let inner = &self.client.inner;
        let key = GrantKey::confirmed(inner.appid.clone(), c);
        // Bounded as the calls into the store of used states are, so the claim (10 ×
        // `store_timeout` at least) outlives the whole completion: a double submit's other
        // completion cannot get through while this one still writes.
        let written =
            match tokio::time::timeout(inner.store_timeout, ledger.record(&key, inner.clock.now())).await {
                Ok(written) => written,
                Err(_) => Err(crate::LedgerError::backend("no answer within store_timeout")),
            };
        match written {
            Ok(recorded) => {
                // The grant is in the ledger: the seal must follow even if this future is
                // dropped now (a request timeout, a client that went away), or the same answer,
                // once the claim lapsed, would go through again and could renew the grant
                // after its message was delivered. The guard seals from a task of its own then.
                let mut guard = SealOnDrop(
                    self.mark.as_ref().map(|(by, _)| (self.client.clone(), self.answer.clone(), by.clone())),
                );
                let answer = self.accept().await;
                guard.0 = None;
                Ok((answer, Some(recorded)))
            }
            Err(e) => {
                if let Some((by, claim)) = &self.mark {
                    self.client.release(&self.answer, by, claim).await;
                }
                Err(e.into())
            }
        }
    }
}

/// Seals a recorded confirmation's mark when [`Completion::record`] is dropped between the
/// ledger's write and the seal: on a task of its own, since the dropped future can no longer
/// wait for it. Disarmed once the seal ran in the future itself.
struct SealOnDrop(Option<(Client, AuthorizationAnswer, AnswerDigest)>);

impl Drop for SealOnDrop {
    fn drop(&mut self) {
        let Some((client, answer, by)) = self.0.take() else { return };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { client.seal(&answer, &by).await });
        } else {
            tracing::warn!(
                appid = %client.inner.appid,
                "a recorded answer's seal was dropped outside a runtime: until its state expires, the same answer is taken as a retry"
            );
        }
    }
}

impl Client {
    /// A link to the authorization page for `template_id` and `scene`, answered at
    /// `redirect_url`, with a signed, single-use `reserved` state bound to `session`, that
    /// [`complete`](Self::complete) verifies without storing anything for the link.
    ///
    /// `session` is your user's session id (the one your login cookie names): the answer then
    /// verifies only in that session. That stops a login-CSRF style attack, where an attacker
    /// authorizes with their own WeChat account and gets a victim's browser to deliver the
    /// answer, so the victim's account receives the attacker's grant (or the attacker's openid).
    ///
    /// ```
    /// # use subscribe_client::{Answer, AuthorizationError, Client, Session};
    /// # use subscribe_types::{AppId, AppSecret, AuthorizationAnswer, RedirectUrl, Scene, TemplateId};
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let client = Client::builder(AppId::new("wx0123456789abcdef")?, AppSecret::new("0123456789abcdef0123456789abcdef")?)
    /// #     .transport(subscribe_client::test_util::MockTransport::new()) // signing sends nothing
    /// #     .build()?;
    /// let template = TemplateId::new("7YuTL__ilzyZB9DXcDt2mHx-CAS_E7KtsQkhIGVhhRM")?;
    /// let alice = Session::new("session-of-alice")?; // the session id your login cookie names
    /// let redirect = RedirectUrl::new("https://app.example.com/wechat/callback")?;
    /// let link = client.authorize_url(&template, Scene::new(1000)?, &redirect, &alice);
    /// assert!(link.url.starts_with("https://mp.weixin.qq.com/mp/subscribemsg?action=get_confirm&"));
    /// // The user opens `link.url` in WeChat, which redirects back with the answer:
    /// let callback = format!(
    ///     "/wechat/callback?openid=oAlice&template_id={template}&action=confirm&scene=1000&reserved={}",
    ///     link.request.reserved.as_str()
    /// );
    /// // Delivered in any other session, the answer is refused.
    /// let elsewhere = client.complete(Answer::Redirect(&callback), &Session::new("session-of-mallory")?).await;
    /// assert!(matches!(elsewhere, Err(AuthorizationError::ForgedState)));
    /// let answer = client.complete(Answer::Redirect(&callback), &alice).await?.accept().await;
    /// assert!(matches!(answer, AuthorizationAnswer::Confirmed(_)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn authorize_url(
        &self,
        template_id: &TemplateId,
        scene: Scene,
        redirect_url: &RedirectUrl,
        session: &Session,
    ) -> AuthorizationLink {
        let inner = &*self.inner;
        let state = self.sign_state(template_id, scene, session);
        let request = AuthorizeRequest::new(
            inner.appid.clone(),
            template_id.clone(),
            scene,
            redirect_url.as_http_url().clone(),
        )
        .with_reserved(state);
        AuthorizationLink { url: request.url_with_base(&inner.mp_base), request }
    }

    /// The request a mobile app hands to the WeChat Open SDK (`WXSubscribeMsgReq` on iOS,
    /// `SubscribeMessage.Req` on Android) for `template_id` and `scene`, with `reserved` a
    /// signed, single-use state bound to `session` (the app user's session on your server):
    /// 59 letters and digits, within the SDK's 128. Serialize it and send it to the app.
    ///
    /// ```
    /// # use subscribe_client::{Client, Session};
    /// # use subscribe_types::{AppId, AppSecret, Scene, TemplateId};
    /// # let client = Client::builder(AppId::new("wx0123456789abcdef")?, AppSecret::new("0123456789abcdef0123456789abcdef")?)
    /// #     .transport(subscribe_client::test_util::MockTransport::new()) // signing sends nothing
    /// #     .build()?;
    /// let template = TemplateId::new("7YuTL__ilzyZB9DXcDt2mHx-CAS_E7KtsQkhIGVhhRM")?;
    /// let session = Session::new("app-session-42")?; // the app user's session on your server
    /// let request = client.mobile_request(&template, Scene::new(1000)?, &session);
    /// let json = serde_json::to_string(&request)?;
    /// assert!(json.starts_with(r#"{"scene":1000,"templateId":"7YuTL__ilzyZB9DXcDt2mHx-CAS_E7KtsQkhIGVhhRM","reserved":""#));
    /// assert!(request.reserved.as_str().bytes().all(|b| b.is_ascii_alphanumeric()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn mobile_request(
        &self,
        template_id: &TemplateId,
        scene: Scene,
        session: &Session,
    ) -> MobileSubscribeRequest {
        MobileSubscribeRequest {
            scene,
            template_id: template_id.clone(),
            reserved: self.sign_state(template_id, scene, session),
        }
    }

    fn sign_state(&self, template_id: &TemplateId, scene: Scene, session: &Session) -> Reserved {
        let inner = &*self.inner;
        let expires = inner.clock.now() + inner.state_ttl;
        inner.state_key.sign(&inner.appid, template_id, scene, expires, session.id())
    }

    /// Reads an authorization answer, a web redirect or a mobile app's forwarded SDK answer
    /// ([`Answer`]), and verifies it in `session`, the session id the link or request was made
    /// for ([`authorize_url`](Self::authorize_url), [`mobile_request`](Self::mobile_request)):
    /// its state was issued by this client's key (or a previous one of its ring) for this app,
    /// template, scene and session, has not expired, and, for a confirmation, was not used
    /// before: each state confirms once (see [`UsedStates`](crate::UsedStates)).
    ///
    /// A confirmation marks its state as this answer's, and claims the mark. The
    /// [`Completion`] returned counts as accepted once you [`accept`](Completion::accept) it,
    /// or [`record`](Completion::record) its grant; until then the same answer completed again
    /// is [`InProgress`](AuthorizationError::InProgress) (while the claim is live: it is
    /// released when the ledger fails, and lapses when the completion is dropped) or taken as
    /// the user's retry, and any other answer with the state is refused.
    ///
    /// ```
    /// # use subscribe_client::{Answer, Client, InMemoryGrantLedger, Recorded, Session};
    /// # use subscribe_types::{AppId, AppSecret, Scene, TemplateId};
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let client = Client::builder(AppId::new("wx0123456789abcdef")?, AppSecret::new("0123456789abcdef0123456789abcdef")?)
    /// #     .transport(subscribe_client::test_util::MockTransport::new()) // verifying sends nothing
    /// #     .build()?;
    /// let ledger = InMemoryGrantLedger::new();
    /// let template = TemplateId::new("7YuTL__ilzyZB9DXcDt2mHx-CAS_E7KtsQkhIGVhhRM")?;
    /// let session = Session::new("app-session-42")?; // the app user's session on your server
    /// let request = client.mobile_request(&template, Scene::new(1000)?, &session);
    /// // The app hands `request` to the Open SDK and forwards the SDK's answer:
    /// let forwarded = format!(
    ///     r#"{{"openId":"oUser","templateId":"{template}","scene":1000,"action":"confirm","reserved":"{}"}}"#,
    ///     request.reserved.as_str()
    /// );
    /// let completion = client.complete(Answer::Mobile(&forwarded), &session).await?;
    /// let (answer, recorded) = completion.record(&ledger).await?;
    /// assert_eq!(answer.openid().map(|o| o.as_str()), Some("oUser"));
    /// assert_eq!(recorded, Some(Recorded::Added));
    /// // Recorded, so accepted: the same answer again is refused, as already accepted.
    /// let again = client.complete(Answer::Mobile(&forwarded), &session).await;
    /// assert!(matches!(again, Err(subscribe_client::AuthorizationError::AlreadyAccepted)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// [`AuthorizationError`]: an answer that does not read as its flow's
    /// ([`Query`](AuthorizationError::Query): malformed, or given as the other flow's), a
    /// missing, forged, foreign, expired or replayed state, the same answer accepted already
    /// ([`AlreadyAccepted`](AuthorizationError::AlreadyAccepted)) or being completed by another
    /// call ([`InProgress`](AuthorizationError::InProgress): retry shortly), or a store of used
    /// states that failed (then the same answer can be completed again). A refused answer uses
    /// nothing up.
    pub async fn complete(
        &self,
        answer: Answer<'_>,
        session: &Session,
    ) -> Result<Completion, AuthorizationError> {
        let (answer, mark) = self.verify_answer(answer.read()?, session).await?;
        Ok(Completion { client: self.clone(), answer, mark })
    }
    /// The one verifier of both flows: the state's signature, binding and expiry, then (for a
    /// confirmation) its mark, made by this answer. Returns the answer and, for a
    /// confirmation, its digest, for sealing the mark once the answer is accepted.
    async fn verify_answer(
        &self,
        answer: AuthorizationAnswer,
        session: &Session,
    ) -> Result<(AuthorizationAnswer, Option<(AnswerDigest, Claim)>), AuthorizationError> {
        let inner = &*self.inner;
        let now = inner.clock.now();
        let expires = inner.state_key.verify(
            &inner.appid,
            answer.template_id(),
            answer.scene(),
            answer.reserved(),
            session.id(),
            now,
        )?;
        // A cancellation grants nothing, so replaying one does no harm: only confirmations
        // use their state up.
        let AuthorizationAnswer::Confirmed(confirmed) = &answer else {
            return Ok((answer, None));
        };
        let by = AnswerDigest::of(answer.reserved(), &confirmed.openid);
        let claim = Claim::new(Claim::CLAIM_PERIOD.max(inner.store_timeout.saturating_mul(10)));
        let marked =
            self.bounded(inner.used_states.mark_used(answer.reserved(), &by, &claim, expires, now)).await;
        match marked {
            Ok(StateUse::First) => {}
            Ok(StateUse::Retry) => {
                tracing::info!(appid = %inner.appid, "an answer came again before it was accepted (a retry)");
            }
            Ok(StateUse::InProgress) => {
                tracing::info!(appid = %inner.appid, "an answer came again while it was being completed");
                return Err(AuthorizationError::InProgress);
            }
            Ok(StateUse::Accepted) => {
                tracing::info!(appid = %inner.appid, "an answer came again after it was accepted");
                return Err(AuthorizationError::AlreadyAccepted);
            }
            Ok(_) => {
                tracing::warn!(appid = %inner.appid, "a used authorization state was replayed");
                return Err(AuthorizationError::ReplayedState);
            }
            Err(e) => {
                // The mark may have landed with this claim and only its answer been lost: end
                // the claim, so the user's retry need not wait for it to lapse.
                self.release(&answer, &by, &claim).await;
                return Err(e);
            }
        }
        Ok((answer, Some((by, claim))))
    }

    /// Releases a confirmation's claim on its mark: its completion failed before acceptance.
    /// A failure is logged, not returned: the claim lapses after its period anyway.
    async fn release(&self, answer: &AuthorizationAnswer, by: &AnswerDigest, claim: &Claim) {
        if let Err(e) = self.bounded(self.inner.used_states.release(answer.reserved(), by, claim)).await {
            tracing::warn!(
                appid = %self.inner.appid,
                error = %e,
                "could not release a claim on a used state: the same answer waits until it lapses"
            );
        }
    }

    /// Seals the mark a confirmation made: it was accepted, so the same answer later is a
    /// replay. A failure is logged, not returned: the answer was accepted (and, with a ledger,
    /// its grant recorded), and an unsealed mark still refuses every other answer.
    async fn seal(&self, answer: &AuthorizationAnswer, by: &AnswerDigest) {
        if let Err(e) = self.bounded(self.inner.used_states.seal(answer.reserved(), by)).await {
            tracing::warn!(
                appid = %self.inner.appid,
                error = %e,
                "could not seal a used state: until it expires, the same answer is taken as a retry"
            );
        }
    }

    /// A call into the store of used states, bounded by `store_timeout`.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, UsedStatesError>>,
    ) -> Result<T, AuthorizationError> {
        match tokio::time::timeout(self.inner.store_timeout, call).await {
            Ok(result) => result.map_err(AuthorizationError::UsedStates),
            Err(_) => {
                Err(AuthorizationError::UsedStates(UsedStatesError::new("no answer within store_timeout")))
            }
        }
    }
}
