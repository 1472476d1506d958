//! Grants from a mini program's `wx.requestSubscribeMessage` or a service account's
//! `<wx-open-subscribe>`: each accepted template recorded in a ledger.

use subscribe_types::{OpenId, SubscribeAnswers, TemplateId};

use super::Client;
use crate::{GrantLedger, GrantScope, LedgerError, Recorded};

impl Client {
    /// Records a grant for each template the user accepted, as a mini program's
    /// `wx.requestSubscribeMessage` or a service account's `<wx-open-subscribe>` reported it
    /// ([`SubscribeAnswers`]), under [`GrantScope::mini_program`](crate::GrantScope::mini_program)
    /// (for a service account the same scope, [`GrantScope::notification`](crate::GrantScope::notification)):
    /// what [`Dispatcher::mini_program`](crate::Dispatcher::mini_program) and
    /// [`Dispatcher::notification`](crate::Dispatcher::notification) send to. An
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
}
