//! The successors' calls: mini-program subscribe messages, service-account subscribe
//! notifications and the template library, through the same token handling, retry policy and
//! honest outcomes as [`Client::send`].

use subscribe_types::{
    AddTemplate, AddedTemplate, Categories, DeleteTemplate, Endpoint, GetCategories, GetTemplates, Keywords,
    KeywordsQuery, MiniProgramMessage, NotificationSent, OpenId, PublicTemplates, SubscribeAnswers,
    SubscribeNotification, TemplateId, Templates, TitlesQuery,
};

use super::{Answered, Client, SendReceipt};
use crate::error::{LibraryCall, LibraryError, SendError};
use crate::{GrantLedger, GrantScope, LedgerError, Recorded};

impl Client {
    /// Sends a mini-program subscribe message (`/cgi-bin/message/subscribe/send`).
    ///
    /// Sends to one openid go one at a time from this client (WeChat answers 43108 to
    /// concurrent calls for one user); a 43108 from another process is replayed after a
    /// backoff, as WeChat's busy answer is. Otherwise as [`send`](Self::send): a one-time
    /// template's acceptance is used up by a delivered message, and an answer that may hide a
    /// delivery is reported as such, never resent.
    ///
    /// # Errors
    /// As [`send`](Self::send). WeChat's 47003 names the data field it refused
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
        message: &SubscribeNotification,
    ) -> Result<Answered<NotificationSent>, SendError> {
        let _one_at_a_time = self.inner.openid_locks.lock(message.touser().as_str()).await;
        self.execute(message).await
    }

    /// The categories the account's templates come from (`getcategory`).
    ///
    /// # Errors
    /// A [`LibraryError`]; a read changes nothing, so its outcome is always known.
    pub async fn template_categories(&self) -> Result<Categories, LibraryError> {
        self.library(LibraryCall::Categories, &GetCategories).await
    }

    /// A page of public templates (`getpubtemplatetitles`).
    ///
    /// # Errors
    /// A [`LibraryError`]; a read changes nothing, so its outcome is always known.
    pub async fn public_templates(&self, query: &TitlesQuery) -> Result<PublicTemplates, LibraryError> {
        self.library(LibraryCall::PublicTemplates, query).await
    }

    /// A public template's keywords (`getpubtemplatekeywords`).
    ///
    /// # Errors
    /// A [`LibraryError`]; a read changes nothing, so its outcome is always known.
    pub async fn template_keywords(&self, tid: u64) -> Result<Keywords, LibraryError> {
        self.library(LibraryCall::Keywords, &KeywordsQuery { tid }).await
    }

    /// Adds a private template from a public one (`addtemplate`) and returns its id.
    ///
    /// # Errors
    /// A [`LibraryError`]. When its answer was lost, [`outcome_known`](LibraryError::outcome_known)
    /// is `false` (`kind()` is `Unknown`): the template may exist, so list them with
    /// [`templates`](Self::templates) before adding it again (an account holds at most 25).
    pub async fn add_template(&self, request: &AddTemplate) -> Result<TemplateId, LibraryError> {
        let added: AddedTemplate = self.library(LibraryCall::AddTemplate, request).await?;
        Ok(added.pri_tmpl_id)
    }

    /// Deletes a private template (`deltemplate`).
    ///
    /// # Errors
    /// A [`LibraryError`]. When its answer was lost, [`outcome_known`](LibraryError::outcome_known)
    /// is `false` (`kind()` is `Unknown`): the template may be gone; list them with
    /// [`templates`](Self::templates).
    pub async fn delete_template(&self, template: &TemplateId) -> Result<(), LibraryError> {
        self.library(LibraryCall::DeleteTemplate, &DeleteTemplate { pri_tmpl_id: template.clone() }).await?;
        Ok(())
    }

    /// The account's private templates, with their keys and enum values (`gettemplate`): what a
    /// message's data is checked against with
    /// [`MessageData::check_against`](subscribe_types::MessageData::check_against).
    ///
    /// # Errors
    /// A [`LibraryError`]; a read changes nothing, so its outcome is always known.
    pub async fn templates(&self) -> Result<Templates, LibraryError> {
        self.library(LibraryCall::Templates, &GetTemplates).await
    }

    /// One template-library call through [`execute`](Self::execute), its error named after
    /// `call`.
    async fn library<E: Endpoint + ?Sized>(
        &self,
        call: LibraryCall,
        endpoint: &E,
    ) -> Result<E::Response, LibraryError> {
        match self.execute(endpoint).await {
            Ok(answered) => Ok(answered.response),
            Err(e) => Err(LibraryError::new(call, e)),
        }
    }

    /// Records a grant for each template the user accepted, as a mini program's
    /// `wx.requestSubscribeMessage` or a service account's `<wx-open-subscribe>` reported it
    /// ([`SubscribeAnswers`]), under [`GrantScope::mini_program`](crate::GrantScope::mini_program):
    /// what [`Dispatcher::mini_program`](crate::Dispatcher::mini_program) sends to. An
    /// acceptance of a template already pending adds nothing (one message is sent, however
    /// often the user said yes: never more than WeChat allows).
    ///
    /// `openid` must come from your own session (the mini program's login), never from the
    /// forwarded answer: the user's device writes that.
    ///
    /// # Errors
    /// The ledger's error; grants recorded before it stay recorded.
    pub async fn record_accepted(
        &self,
        openid: &OpenId,
        answers: &SubscribeAnswers,
        ledger: &dyn GrantLedger,
    ) -> Result<Vec<(TemplateId, Recorded)>, LedgerError> {
        let mut recorded = Vec::new();
        for template in answers.accepted() {
            let key = GrantScope::mini_program(self.appid().clone(), template.clone()).key(openid.clone());
            recorded.push((template.clone(), ledger.record(&key, self.clock().now()).await?));
        }
        Ok(recorded)
    }

    /// Openids with a send in flight or waiting, from this client: a bound a long batch keeps.
    #[doc(hidden)]
    pub fn openids_in_flight(&self) -> usize {
        self.inner.openid_locks.len()
    }
}
