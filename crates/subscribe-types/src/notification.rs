//! The service account's subscribe notification (订阅通知): the body of
//! `POST /cgi-bin/message/subscribe/bizsend` and its answer's `msgid`. Facts:
//! `../shared/successors.md` §2.

use serde::{Deserialize, Serialize};

use crate::data::MessageData;
use crate::error::ValidationError;
use crate::ids::{OpenId, TemplateId};
use crate::text::{HttpUrl, MiniProgram};

/// The body of `POST /cgi-bin/message/subscribe/bizsend`: a service account's subscribe
/// notification (订阅通知). `page` is a web URL; `miniprogram` opens a mini program instead.
///
/// ```
/// use subscribe_types::{MessageData, OpenId, NotificationMessage, TemplateId};
///
/// let msg = NotificationMessage::builder(
///     OpenId::new("oyAaTjt-xXvP87pubE4eUOF-ttD4")?,
///     TemplateId::new("iYRdwRMKcS0mK2eJN9xtxPr7BnlmrSuGYdnEg7WtwAo")?,
///     MessageData::from_pairs([("thing1", "亚麻衬衫"), ("phrase2", "已发货")])?,
/// )
/// .page("https://shop.example.com/orders/42")
/// .build()?;
/// assert!(String::from_utf8(msg.to_json()).unwrap().contains(r#""page":"https://shop.example.com/orders/42""#));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NotificationMessage {
    touser: OpenId,
    template_id: TemplateId,
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<HttpUrl>,
    #[serde(skip_serializing_if = "Option::is_none")]
    miniprogram: Option<MiniProgram>,
    data: MessageData,
}

impl NotificationMessage {
    /// Starts a notification to `touser` with template `template_id` and its `data`.
    pub fn builder(touser: OpenId, template_id: TemplateId, data: MessageData) -> NotificationMessageBuilder {
        NotificationMessageBuilder { touser, template_id, data, page: None, miniprogram: None }
    }

    /// The recipient.
    pub fn touser(&self) -> &OpenId {
        &self.touser
    }
    /// The template.
    pub fn template_id(&self) -> &TemplateId {
        &self.template_id
    }
    /// The web page opened on tap, if any.
    pub fn page(&self) -> Option<&HttpUrl> {
        self.page.as_ref()
    }
    /// The mini program opened on tap, if any.
    pub fn miniprogram(&self) -> Option<&MiniProgram> {
        self.miniprogram.as_ref()
    }
    /// The data.
    pub fn data(&self) -> &MessageData {
        &self.data
    }

    /// The JSON body, raw UTF-8.
    ///
    /// # Panics
    /// Never: every part serializes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a subscribe notification serializes")
    }
}

/// Builds a [`NotificationMessage`]; [`build`](Self::build) checks the links.
#[derive(Clone, Debug)]
#[must_use]
pub struct NotificationMessageBuilder {
    touser: OpenId,
    template_id: TemplateId,
    data: MessageData,
    page: Option<String>,
    miniprogram: Option<(String, String)>,
}

impl NotificationMessageBuilder {
    /// The web page opened on tap (an absolute http(s) URL).
    pub fn page(mut self, url: impl Into<String>) -> Self {
        self.page = Some(url.into());
        self
    }
    /// The mini program page opened on tap.
    pub fn miniprogram(mut self, appid: impl Into<String>, pagepath: impl Into<String>) -> Self {
        self.miniprogram = Some((appid.into(), pagepath.into()));
        self
    }

    /// The notification.
    ///
    /// # Errors
    /// [`ValidationError`] naming `page` (not an absolute http(s) URL) or
    /// `miniprogram.appid` / `miniprogram.pagepath`.
    pub fn build(self) -> Result<NotificationMessage, ValidationError> {
        let page = self.page.map(|p| HttpUrl::new(p).map_err(|e| e.in_field("page"))).transpose()?;
        let miniprogram = self.miniprogram.map(|(a, p)| MiniProgram::new(a, p)).transpose()?;
        Ok(NotificationMessage {
            touser: self.touser,
            template_id: self.template_id,
            page,
            miniprogram,
            data: self.data,
        })
    }
}

/// What a successful `bizsend` answers besides `errcode`: the `msgid` that the
/// `subscribe_msg_sent_event` push later names.
///
/// ```
/// use subscribe_types::NotificationSent;
/// assert_eq!(NotificationSent::parse(br#"{"errcode":0,"errmsg":"ok","msgid":1700000001}"#)?.msgid, 1_700_000_001);
/// assert_eq!(NotificationSent::parse(br#"{"errcode":0,"errmsg":"ok","msgid":"42"}"#)?.msgid, 42);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationSent {
    /// The message's id.
    #[serde(deserialize_with = "crate::library::number")]
    pub msgid: u64,
}

impl NotificationSent {
    /// Reads `msgid` from a success answer (a number, or digits in a string).
    ///
    /// # Errors
    /// When the body is not JSON or has no usable `msgid`.
    pub fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

impl crate::Endpoint for NotificationMessage {
    const SPEC: crate::EndpointSpec = crate::endpoint::SEND_NOTIFICATION;
    type Body = Self;
    type Response = NotificationSent;
    fn body(&self) -> &Self {
        self
    }
}
