//! Authorization: the page link with a signed state, verifying WeChat's answer, recording it.

use subscribe_types::{AuthorizationAnswer, AuthorizeRequest, HttpUrl, Scene, TemplateId};

use super::{AuthorizationLink, Client};
use crate::error::{AuthorizationError, RecordError};
use crate::grants::{GrantKey, GrantLedger, Recorded};
use crate::used_states::UsedStatesError;

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
        let expires = inner.clock.now() + inner.state_ttl;
        let state = inner.state_key.sign(&inner.appid, template_id, scene, expires, session);
        let request =
            AuthorizeRequest::new(inner.appid.clone(), template_id.clone(), scene, redirect_url.clone())
                .with_reserved(state);
        AuthorizationLink { url: request.url_with_base(&inner.mp_base), request }
    }

    /// Reads WeChat's redirect (a URL or its query string) and checks its state: issued by this
    /// client's key (or a previous one of its ring) for this app, template and scene, not
    /// expired, and, for a confirmation, not used before: each state confirms once (see
    /// [`UsedStates`](crate::UsedStates)). Returns the confirmation (one message may be sent) or
    /// the cancellation.
    ///
    /// # Errors
    /// [`AuthorizationError`]: malformed callback, missing, forged, foreign, expired or
    /// replayed state, or a store of used states that failed.
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
        let answer = AuthorizationAnswer::parse(callback)?;
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
        if matches!(answer, AuthorizationAnswer::Confirmed(_)) {
            let first = self.bounded(inner.used_states.first_use(answer.reserved(), expires, now)).await?;
            if !first {
                tracing::warn!(appid = %inner.appid, "a used authorization state was replayed");
                return Err(AuthorizationError::ReplayedState);
            }
        }
        Ok(answer)
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
    /// for a confirmation, what recording did.
    ///
    /// # Errors
    /// [`RecordError::Authorization`] as `complete_authorization`; [`RecordError::Ledger`] when
    /// the ledger fails (the answer was valid, and its state is given back, so the same answer
    /// can be completed again: ask the user to retry).
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
        let answer = self.complete_authorization_for_session(callback, session).await?;
        let recorded = match &answer {
            AuthorizationAnswer::Confirmed(c) => {
                let key = GrantKey::confirmed(self.inner.appid.clone(), c);
                match ledger.record(&key, self.inner.clock.now()).await {
                    Ok(recorded) => Some(recorded),
                    Err(e) => {
                        // Nothing was recorded: give the state back so the user's retry of this
                        // very answer is not refused as a replay.
                        if let Err(forget) =
                            self.bounded(self.inner.used_states.forget(answer.reserved())).await
                        {
                            tracing::warn!(error = %forget, "could not give back the state of an unrecorded answer");
                        }
                        return Err(e.into());
                    }
                }
            }
            AuthorizationAnswer::Cancelled(_) => None,
        };
        Ok((answer, recorded))
    }
}
