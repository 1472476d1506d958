//! Authorization: the page link (web) or the Open SDK request (mobile app) with a signed state,
//! verifying WeChat's answer, recording it. Both flows share one verifier and one recorder:
//! only reading the answer differs (a redirect's query, or the JSON the app forwards).

use subscribe_types::{
    AuthorizationAnswer, AuthorizeRequest, HttpUrl, MobileSubscribeRequest, MobileSubscribeResponse,
    Reserved, Scene, TemplateId,
};

use super::{AuthorizationLink, Client};
use crate::error::{AuthorizationError, RecordError};
use crate::grants::{GrantKey, GrantLedger, Recorded};
use crate::used_states::{AnswerDigest, StateUse, UsedStatesError};

impl Client {
    /// A link to the authorization page for `template_id` and `scene`, answered at
    /// `redirect_url`, with a signed `reserved` state that
    /// [`complete_authorization`](Self::complete_authorization) verifies without any storage.
    pub fn authorize_url(
        &self,
        template_id: &TemplateId,
        scene: Scene,
        redirect_url: &HttpUrl,
    ) -> AuthorizationLink {
        self.authorize_url_for_session(template_id, scene, redirect_url, "")
    }

    /// Like [`authorize_url`](Self::authorize_url), with the state bound to `session` (your
    /// user's session id): an answer then verifies only in that session, which stops an
    /// attacker from making a victim complete the attacker's authorization.
    pub fn authorize_url_for_session(
        &self,
        template_id: &TemplateId,
        scene: Scene,
        redirect_url: &HttpUrl,
        session: &str,
    ) -> AuthorizationLink {
        let inner = &*self.inner;
        let state = self.sign_state(template_id, scene, session);
        let request =
            AuthorizeRequest::new(inner.appid.clone(), template_id.clone(), scene, redirect_url.clone())
                .with_reserved(state);
        AuthorizationLink { url: request.url_with_base(&inner.mp_base), request }
    }

    /// The request a mobile app hands to the WeChat Open SDK (`WXSubscribeMsgReq` on iOS,
    /// `SubscribeMessage.Req` on Android) for `template_id` and `scene`, with `reserved` a
    /// signed, single-use state bound to `session` (the app user's session on your server):
    /// 59 letters and digits, within the SDK's 128. Serialize it and send it to the app.
    ///
    /// ```
    /// # use subscribe_client::Client;
    /// # use subscribe_types::{AppId, AppSecret, Scene, TemplateId};
    /// # let client = Client::builder(AppId::new("wx0123456789abcdef")?, AppSecret::new("0123456789abcdef0123456789abcdef")?)
    /// #     .transport(subscribe_client::test_util::MockTransport::new()) // signing sends nothing
    /// #     .build()?;
    /// let template = TemplateId::new("7YuTL__ilzyZB9DXcDt2mHx-CAS_E7KtsQkhIGVhhRM")?;
    /// let request = client.mobile_request(&template, Scene::new(1000)?, "app-session-42");
    /// let json = serde_json::to_string(&request)?;
    /// assert!(json.starts_with(r#"{"scene":1000,"templateId":"7YuTL__ilzyZB9DXcDt2mHx-CAS_E7KtsQkhIGVhhRM","reserved":""#));
    /// assert!(request.reserved.as_str().bytes().all(|b| b.is_ascii_alphanumeric()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn mobile_request(
        &self,
        template_id: &TemplateId,
        scene: Scene,
        session: &str,
    ) -> MobileSubscribeRequest {
        MobileSubscribeRequest {
            scene,
            template_id: template_id.clone(),
            reserved: self.sign_state(template_id, scene, session),
        }
    }

    fn sign_state(&self, template_id: &TemplateId, scene: Scene, session: &str) -> Reserved {
        let inner = &*self.inner;
        let expires = inner.clock.now() + inner.state_ttl;
        inner.state_key.sign(&inner.appid, template_id, scene, expires, session)
    }

    /// Reads WeChat's redirect (its URL, or the request's path-and-query: read with
    /// [`AuthorizationAnswer::parse`], whose query starts after the first `?`, so a handler
    /// passes `Uri::path_and_query`, not the bare query that may hold a `?` of its own) and
    /// checks its state: issued by this
    /// client's key (or a previous one of its ring) for this app, template and scene, not
    /// expired, and, for a confirmation, not used before: each state confirms once (see
    /// [`UsedStates`](crate::UsedStates)). Returns the confirmation (one message may be sent) or
    /// the cancellation. A confirmation returned here counts as accepted: the same answer
    /// later is a replay, so record it before you tell the user it worked, or use
    /// [`complete_and_record`](Self::complete_and_record), which accepts the answer only once
    /// its grant is recorded.
    ///
    /// # Errors
    /// [`AuthorizationError`]: malformed callback, missing, forged, foreign, expired or
    /// replayed state, or a store of used states that failed (then the same answer can be
    /// completed again).
    pub async fn complete_authorization(
        &self,
        callback: &str,
    ) -> Result<AuthorizationAnswer, AuthorizationError> {
        self.complete_authorization_for_session(callback, "").await
    }

    /// Like [`complete_authorization`](Self::complete_authorization) for a state made with
    /// [`authorize_url_for_session`](Self::authorize_url_for_session).
    ///
    /// # Errors
    /// As [`complete_authorization`](Self::complete_authorization).
    pub async fn complete_authorization_for_session(
        &self,
        callback: &str,
        session: &str,
    ) -> Result<AuthorizationAnswer, AuthorizationError> {
        let (answer, by) = self.verify_answer(AuthorizationAnswer::parse(callback)?, session).await?;
        self.seal(&answer, by.as_ref()).await;
        Ok(answer)
    }

    /// Reads the answer a mobile app forwards (the Open SDK's `WXSubscribeMsgResp` /
    /// `SubscribeMessage.Resp` as JSON, in either SDK's spelling: see
    /// [`MobileSubscribeResponse::parse`]) and verifies it exactly as
    /// [`complete_authorization_for_session`](Self::complete_authorization_for_session)
    /// verifies a web callback: same app, template, scene and session, not expired, and for a
    /// confirmation not used before.
    ///
    /// # Errors
    /// As [`complete_authorization`](Self::complete_authorization); a body that is not the
    /// SDK's JSON is [`AuthorizationError::Query`] with [`QueryError::NotJson`](subscribe_types::QueryError::NotJson).
    pub async fn complete_mobile(
        &self,
        answer_json: &str,
        session: &str,
    ) -> Result<AuthorizationAnswer, AuthorizationError> {
        let (answer, by) = self.verify_mobile(answer_json, session).await?;
        self.seal(&answer, by.as_ref()).await;
        Ok(answer)
    }

    /// [`complete_mobile`](Self::complete_mobile), then records a confirmation in `ledger`, as
    /// [`complete_and_record`](Self::complete_and_record) does for the web.
    ///
    /// # Errors
    /// As [`complete_and_record`](Self::complete_and_record).
    pub async fn complete_and_record_mobile(
        &self,
        answer_json: &str,
        session: &str,
        ledger: &dyn GrantLedger,
    ) -> Result<(AuthorizationAnswer, Option<Recorded>), RecordError> {
        let (answer, by) = self.verify_mobile(answer_json, session).await?;
        self.record_answer(answer, by, ledger).await
    }

    async fn verify_mobile(
        &self,
        answer_json: &str,
        session: &str,
    ) -> Result<(AuthorizationAnswer, Option<AnswerDigest>), AuthorizationError> {
        let answer = MobileSubscribeResponse::parse(answer_json)?.into_answer()?;
        self.verify_answer(answer, session).await
    }

    /// The one verifier of both flows: the state's signature, binding and expiry, then (for a
    /// confirmation) its mark, made by this answer. Returns the answer and, for a
    /// confirmation, its digest, for sealing the mark once the answer is accepted.
    async fn verify_answer(
        &self,
        answer: AuthorizationAnswer,
        session: &str,
    ) -> Result<(AuthorizationAnswer, Option<AnswerDigest>), AuthorizationError> {
        let inner = &*self.inner;
        let now = inner.clock.now();
        let expires = inner.state_key.verify(
            &inner.appid,
            answer.template_id(),
            answer.scene(),
            answer.reserved(),
            session,
            now,
        )?;
        // A cancellation grants nothing, so replaying one does no harm: only confirmations
        // use their state up.
        let AuthorizationAnswer::Confirmed(confirmed) = &answer else {
            return Ok((answer, None));
        };
        let by = AnswerDigest::of(answer.reserved(), &confirmed.openid);
        match self.bounded(inner.used_states.mark_used(answer.reserved(), &by, expires, now)).await? {
            StateUse::First => {}
            StateUse::Retry => {
                tracing::info!(appid = %inner.appid, "an answer came again before it was accepted (a retry)");
            }
            _ => {
                tracing::warn!(appid = %inner.appid, "a used authorization state was replayed");
                return Err(AuthorizationError::ReplayedState);
            }
        }
        Ok((answer, Some(by)))
    }

    /// Seals the mark a confirmation made: it was accepted, so the same answer later is a
    /// replay. A failure is logged, not returned: the answer was accepted (and, with a ledger,
    /// its grant recorded), and an unsealed mark still refuses every other answer.
    async fn seal(&self, answer: &AuthorizationAnswer, by: Option<&AnswerDigest>) {
        let Some(by) = by else { return };
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

    /// [`complete_authorization`](Self::complete_authorization), then records a confirmation
    /// in `ledger` (idempotently: a repeated confirmation adds nothing). Returns the answer and,
    /// for a confirmation, what recording did. The answer counts as accepted (the same answer
    /// later is a replay) only once its grant is recorded: until then, the user's retry of the
    /// same answer goes through, and any other answer with its state is refused.
    ///
    /// # Errors
    /// [`RecordError::Authorization`] as `complete_authorization`; [`RecordError::Ledger`] when
    /// the ledger fails (the answer was valid and is not accepted yet, so the same answer can
    /// be completed again: ask the user to retry).
    pub async fn complete_and_record(
        &self,
        callback: &str,
        ledger: &dyn GrantLedger,
    ) -> Result<(AuthorizationAnswer, Option<Recorded>), RecordError> {
        self.complete_and_record_for_session(callback, "", ledger).await
    }

    /// [`complete_and_record`](Self::complete_and_record) for a session-bound state.
    ///
    /// # Errors
    /// As [`complete_and_record`](Self::complete_and_record).
    pub async fn complete_and_record_for_session(
        &self,
        callback: &str,
        session: &str,
        ledger: &dyn GrantLedger,
    ) -> Result<(AuthorizationAnswer, Option<Recorded>), RecordError> {
        let answer = AuthorizationAnswer::parse(callback).map_err(AuthorizationError::from)?;
        let (answer, by) = self.verify_answer(answer, session).await?;
        self.record_answer(answer, by, ledger).await
    }

    /// The one recorder of both flows: a confirmation goes into `ledger`, then its mark is
    /// sealed. When the ledger fails the mark stays unsealed, so the user's retry of this very
    /// answer is taken as a retry, not a replay.
    async fn record_answer(
        &self,
        answer: AuthorizationAnswer,
        by: Option<AnswerDigest>,
        ledger: &dyn GrantLedger,
    ) -> Result<(AuthorizationAnswer, Option<Recorded>), RecordError> {
        let recorded = match &answer {
            AuthorizationAnswer::Confirmed(c) => {
                let key = GrantKey::confirmed(self.inner.appid.clone(), c);
                let recorded = ledger.record(&key, self.inner.clock.now()).await?;
                self.seal(&answer, by.as_ref()).await;
                Some(recorded)
            }
            AuthorizationAnswer::Cancelled(_) => None,
        };
        Ok((answer, recorded))
    }
}
