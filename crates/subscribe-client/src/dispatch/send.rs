//! One grant's send: its message built (a panic or a refusal to build fails only that grant),
//! checked to be for that grant, sent as its kind, and the result mapped to the grant's fate.

use std::sync::Arc;

use subscribe_types::{
    ErrCode, ErrorClass, MiniProgramMessage, NotificationMessage, OneTimeMessage, OpenId, ValidationError,
};

use super::pipeline::Finished;
use super::report::{OutcomeKind, RecipientOutcome};
use crate::Client;
use crate::error::SendError;
use crate::grants::{Reservation, Settlement};

/// The functions that build each recipient's message, one per kind.
type OneTimeFn = dyn Fn(&OpenId) -> Result<OneTimeMessage, ValidationError> + Send + Sync;
type MiniProgramFn = dyn Fn(&OpenId) -> Result<MiniProgramMessage, ValidationError> + Send + Sync;
type NotificationFn = dyn Fn(&OpenId) -> Result<NotificationMessage, ValidationError> + Send + Sync;

/// How each recipient's message is built and sent.
#[derive(Clone)]
pub(super) enum Build {
    /// The one-time message ([`Client::send_one_time`]).
    OneTime(Arc<OneTimeFn>),
    /// A mini-program message ([`Client::send_mini_program`]); a long-term template's grant
    /// is not used up by a delivery.
    MiniProgram { build: Arc<MiniProgramFn>, long_term: bool },
    /// A subscribe notification ([`Client::send_notification`]); as a mini-program message,
    /// a long-term template's grant is not used up.
    Notification { build: Arc<NotificationFn>, long_term: bool },
}

/// What a grant's send came to: how it ended, WeChat's errcode, why, and how to settle it.
type Fate = (OutcomeKind, Option<ErrCode>, Option<String>, Settlement);

/// Builds and sends `r`'s message: the grant's settlement and the outcome to report.
pub(super) async fn send_one(client: &Client, build: &Build, r: Reservation) -> Finished {
    let openid = r.key.openid.clone();
    let mut msgid = None;
    let fate = match build {
        Build::OneTime(build) => match built(build.as_ref(), &openid, |m| {
            (m.touser(), m.template_id()) == (&openid, &r.key.template_id) && m.scene() == r.key.scene
        }) {
            Ok(msg) => classify(client.send_one_time(&msg).await, r.attempt),
            Err(fate) => fate,
        },
        Build::MiniProgram { build, long_term } => {
            match built(build.as_ref(), &openid, |m| {
                (m.touser(), m.template_id()) == (&openid, &r.key.template_id)
            }) {
                Ok(msg) => {
                    kept_if_long_term(classify(client.send_mini_program(&msg).await, r.attempt), *long_term)
                }
                Err(fate) => fate,
            }
        }
        Build::Notification { build, long_term } => {
            match built(build.as_ref(), &openid, |m| {
                (m.touser(), m.template_id()) == (&openid, &r.key.template_id)
            }) {
                Ok(msg) => {
                    let sent = client.send_notification(&msg).await;
                    msgid = sent.as_ref().ok().map(|a| a.response.msgid);
                    kept_if_long_term(classify(sent.map(|a| a.receipt), r.attempt), *long_term)
                }
                Err(fate) => fate,
            }
        }
    };
    let (kind, errcode, detail, settlement) = fate;
    (r, settlement, RecipientOutcome { openid, kind, errcode, detail, ledger_error: None, msgid })
}

/// `openid`'s message, built by `build` and for this grant (`for_this_grant`), or the fate of a
/// grant whose message was not: a panicking message function fails its grant, not the worker.
fn built<M>(
    build: &(dyn Fn(&OpenId) -> Result<M, ValidationError> + Send + Sync),
    openid: &OpenId,
    for_this_grant: impl FnOnce(&M) -> bool,
) -> Result<M, Fate> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| build(openid))) {
        Err(_) => Err(panicked()),
        Ok(Err(e)) => Err(not_built(&e)),
        Ok(Ok(msg)) if for_this_grant(&msg) => Ok(msg),
        Ok(Ok(_)) => Err((
            OutcomeKind::Failed,
            None,
            Some("the built message is not for this grant's user, template and scene".to_owned()),
            Settlement::Release,
        )),
    }
}

/// A long-term subscription is not used up by a delivery: the grant waits for the next one.
fn kept_if_long_term(fate: Fate, long_term: bool) -> Fate {
    match fate {
        (OutcomeKind::Delivered, code, detail, Settlement::Delivered) if long_term => {
            (OutcomeKind::Delivered, code, detail, Settlement::Release)
        }
        other => other,
    }
}

/// What a message function's panic means for its grant.
fn panicked() -> Fate {
    (OutcomeKind::Failed, None, Some("the message function panicked".to_owned()), Settlement::Release)
}

/// What a message that could not be built means for its grant.
fn not_built(e: &ValidationError) -> Fate {
    (OutcomeKind::Failed, None, Some(format!("message not built: {e}")), Settlement::Release)
}

/// The most characters of an error's text that a ledger reason or an outcome's detail keeps:
/// WeChat's `errmsg` is echoed into it, and an answer may be as long as the transport's limit.
pub const MAX_REASON_CHARS: usize = 256;

/// `text`, cut to [`MAX_REASON_CHARS`] characters (with `…` when cut).
fn bounded(mut text: String) -> String {
    if let Some((at, _)) = text.char_indices().nth(MAX_REASON_CHARS) {
        text.truncate(at);
        text.push('…');
    }
    text
}

/// Maps a send's result to the grant's fate.
fn classify(
    result: Result<crate::SendReceipt, SendError>,
    attempt: u32,
) -> (OutcomeKind, Option<ErrCode>, Option<String>, Settlement) {
    let Err(e) = result else {
        return (OutcomeKind::Delivered, None, None, Settlement::Delivered);
    };
    let code = e.api_code();
    let text = bounded(e.to_string());
    if !e.outcome_known() {
        return (OutcomeKind::Unknown, code, Some(text.clone()), Settlement::Review(text));
    }
    match e.retry_class() {
        // After an earlier sender's lapsed reservation, a refusal most likely means that
        // sender delivered before it stopped: review, do not drop.
        Some(ErrorClass::UserRefused) if attempt > 1 => {
            let why = format!("{text} (after an interrupted earlier attempt: probably delivered)");
            (OutcomeKind::Unknown, code, Some(why.clone()), Settlement::Review(why))
        }
        Some(ErrorClass::UserRefused | ErrorClass::InvalidRecipient) => {
            (OutcomeKind::Dropped, code, Some(text.clone()), Settlement::Drop(text))
        }
        _ => (OutcomeKind::Failed, code, Some(text), Settlement::Release),
    }
}
