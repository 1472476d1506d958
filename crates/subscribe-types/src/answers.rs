//! What users answered on their side: the result of `wx.requestSubscribeMessage` (mini
//! programs) and the `subscribeDetails` of `<wx-open-subscribe>` (service accounts' web
//! pages), forwarded by the integrator's front end. Facts: `../shared/successors.md` §1–2
//! (the `<wx-open-subscribe>` shape is from community sources only).
//!
//! These answers come from the user's device through the integrator's own front end: they say
//! what the user chose, not that WeChat recorded it. WeChat's push
//! (`subscribe_msg_popup_event`) is the server-side evidence.

use serde_json::Value;

use crate::ids::TemplateId;

/// What a user chose for one template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SubscribeDecision {
    /// `accept`: one message allowed (one-time templates), or messages allowed (long-term).
    Accept,
    /// `acceptWithAudio`: accepted, with sound reminders.
    AcceptWithAudio,
    /// `reject`: declined.
    Reject,
    /// `ban`: the template is banned by WeChat.
    Ban,
    /// `filter`: filtered by WeChat (the template's title matches one the user refused).
    Filter,
    /// `cancel` (`<wx-open-subscribe>`): the user closed the popup.
    Cancel,
    /// A status this crate does not know; not an acceptance.
    Unknown,
}

impl SubscribeDecision {
    fn from_status(s: &str) -> Self {
        match s {
            "accept" => Self::Accept,
            "acceptWithAudio" => Self::AcceptWithAudio,
            "reject" => Self::Reject,
            "ban" => Self::Ban,
            "filter" => Self::Filter,
            "cancel" => Self::Cancel,
            _ => Self::Unknown,
        }
    }

    /// Whether the user accepted.
    pub fn is_accept(self) -> bool {
        matches!(self, Self::Accept | Self::AcceptWithAudio)
    }
}

/// An answer could not be read. Never holds the answer's text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerError {
    /// Longer than [`MAX_QUERY_LEN`](crate::MAX_QUERY_LEN).
    #[error("the answer is {len} bytes; at most {max} are read")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not JSON.
    #[error("the answer is not JSON (line {line}, column {column})")]
    NotJson {
        /// Where reading stopped.
        line: usize,
        /// Where reading stopped.
        column: usize,
    },
    /// JSON, but not an object.
    #[error("the answer must be a JSON object")]
    NotAnObject,
    /// The call itself failed on the device (`requestSubscribeMessage:fail …`): nobody was
    /// asked. `code` is its `errCode` (20004: the user turned subscriptions off).
    #[error("the request failed on the device (errCode {})", code.map_or_else(|| "absent".to_owned(), |c| c.to_string()))]
    Failed {
        /// `errCode`, when sent.
        code: Option<i64>,
    },
    /// A template id that is not one (`…` where an id was expected).
    #[error("`{field}`: a template id must be 1 to 128 bytes of A-Z a-z 0-9 _ -")]
    BadTemplateId {
        /// Which field: `subscribeDetails` or `tmplIds`.
        field: &'static str,
    },
    /// A template's status is not a string (or, in `subscribeDetails`, not a JSON string of an
    /// object with `status`).
    #[error("`{field}`: a template's answer has no status")]
    NoStatus {
        /// Which field.
        field: &'static str,
    },
}

/// The decisions of one answer, per template id.
///
/// ```
/// use subscribe_types::{SubscribeAnswers, SubscribeDecision, TemplateId};
///
/// // wx.requestSubscribeMessage's success, forwarded by the mini program:
/// let answers = SubscribeAnswers::from_request_subscribe_message(
///     r#"{"errMsg":"requestSubscribeMessage:ok","bDmywsp2oEHjwAadTGKkUHpzvMM2KM4aGBsyFpGL8AY":"accept","iYRdwRMKcS0mK2eJN9xtxPr7BnlmrSuGYdnEg7WtwAo":"reject"}"#,
/// )?;
/// let accepted: Vec<&str> = answers.accepted().map(TemplateId::as_str).collect();
/// assert_eq!(accepted, ["bDmywsp2oEHjwAadTGKkUHpzvMM2KM4aGBsyFpGL8AY"]);
///
/// // <wx-open-subscribe>'s event.detail.subscribeDetails: a JSON string of JSON strings.
/// let answers = SubscribeAnswers::from_open_subscribe(
///     r#"{"iYRdwRMKcS0mK2eJN9xtxPr7BnlmrSuGYdnEg7WtwAo":"{\"status\":\"accept\"}"}"#,
/// )?;
/// assert_eq!(
///     answers.get(&TemplateId::new("iYRdwRMKcS0mK2eJN9xtxPr7BnlmrSuGYdnEg7WtwAo").unwrap()),
///     Some(SubscribeDecision::Accept)
/// );
/// # Ok::<(), subscribe_types::AnswerError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SubscribeAnswers {
    decisions: Vec<(TemplateId, SubscribeDecision)>,
}

impl SubscribeAnswers {
    /// Reads the object `wx.requestSubscribeMessage` hands its `success` (or `fail`)
    /// callback: `errMsg`, and one `"<template id>": "<status>"` per template asked. A
    /// failed call (`errMsg` not ending in `:ok`, or an `errCode`) is
    /// [`AnswerError::Failed`]. Other non-string members are ignored.
    ///
    /// # Errors
    /// [`AnswerError`].
    pub fn from_request_subscribe_message(json: &str) -> Result<Self, AnswerError> {
        let object = object(json)?;
        let failed = object.get("errMsg").and_then(Value::as_str).is_some_and(|m| !m.ends_with(":ok"));
        let code = object.get("errCode").and_then(Value::as_i64);
        if failed || code.is_some_and(|c| c != 0) {
            return Err(AnswerError::Failed { code });
        }
        let mut decisions = Vec::new();
        for (key, value) in &object {
            if key == "errMsg" || key == "errCode" {
                continue;
            }
            let Some(status) = value.as_str() else { continue };
            decisions.push((template_id(key, "tmplIds")?, SubscribeDecision::from_status(status)));
        }
        Ok(Self { decisions })
    }

    /// Reads `<wx-open-subscribe>`'s `event.detail.subscribeDetails`: a JSON object whose
    /// values are JSON strings of `{"status":"accept|reject|cancel|filter"}` (an object in
    /// place of the string is read too).
    ///
    /// # Errors
    /// [`AnswerError`].
    pub fn from_open_subscribe(subscribe_details: &str) -> Result<Self, AnswerError> {
        const FIELD: &str = "subscribeDetails";
        let object = object(subscribe_details)?;
        let mut decisions = Vec::new();
        for (key, value) in &object {
            let inner = match value {
                Value::String(s) => {
                    serde_json::from_str::<Value>(s).map_err(|_| AnswerError::NoStatus { field: FIELD })?
                }
                other => other.clone(),
            };
            let status =
                inner.get("status").and_then(Value::as_str).ok_or(AnswerError::NoStatus { field: FIELD })?;
            decisions.push((template_id(key, FIELD)?, SubscribeDecision::from_status(status)));
        }
        Ok(Self { decisions })
    }

    /// The templates the user accepted.
    pub fn accepted(&self) -> impl Iterator<Item = &TemplateId> {
        self.decisions.iter().filter(|(_, d)| d.is_accept()).map(|(t, _)| t)
    }

    /// What the user chose for `template`.
    pub fn get(&self, template: &TemplateId) -> Option<SubscribeDecision> {
        self.decisions.iter().find(|(t, _)| t == template).map(|(_, d)| *d)
    }

    /// Every template and decision.
    pub fn iter(&self) -> impl Iterator<Item = (&TemplateId, SubscribeDecision)> {
        self.decisions.iter().map(|(t, d)| (t, *d))
    }
}

fn object(json: &str) -> Result<serde_json::Map<String, Value>, AnswerError> {
    if json.len() > crate::MAX_QUERY_LEN {
        return Err(AnswerError::TooLarge { len: json.len(), max: crate::MAX_QUERY_LEN });
    }
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(AnswerError::NotAnObject),
        Err(e) => Err(AnswerError::NotJson { line: e.line(), column: e.column() }),
    }
}

fn template_id(key: &str, field: &'static str) -> Result<TemplateId, AnswerError> {
    TemplateId::new(key).map_err(|_| AnswerError::BadTemplateId { field })
}
