//! The mini program's subscribe message (小程序订阅消息): the body of
//! `POST /cgi-bin/message/subscribe/send`. Facts: `../shared/successors.md` §1.

use serde::{Deserialize, Serialize};

use crate::data::MessageData;
use crate::error::ValidationError;
use crate::ids::{OpenId, TemplateId};
use crate::text::check_page;

/// Which version of the mini program a message opens (`miniprogram_state`; WeChat's default
/// is `formal`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MiniProgramState {
    /// The developer version.
    Developer,
    /// The trial version.
    Trial,
    /// The released version.
    Formal,
}

impl std::str::FromStr for MiniProgramState {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, ValidationError> {
        match s {
            "developer" => Ok(Self::Developer),
            "trial" => Ok(Self::Trial),
            "formal" => Ok(Self::Formal),
            _ => Err(ValidationError::InvalidFormat {
                field: "miniprogram_state",
                expected: "developer, trial or formal",
            }),
        }
    }
}

/// The language the message is shown in (`lang`; WeChat's default is `zh_CN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Lang {
    /// Simplified Chinese.
    #[serde(rename = "zh_CN")]
    ZhCn,
    /// English.
    #[serde(rename = "en_US")]
    EnUs,
    /// Traditional Chinese (Hong Kong).
    #[serde(rename = "zh_HK")]
    ZhHk,
    /// Traditional Chinese (Taiwan).
    #[serde(rename = "zh_TW")]
    ZhTw,
}

impl std::str::FromStr for Lang {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, ValidationError> {
        match s {
            "zh_CN" => Ok(Self::ZhCn),
            "en_US" => Ok(Self::EnUs),
            "zh_HK" => Ok(Self::ZhHk),
            "zh_TW" => Ok(Self::ZhTw),
            _ => Err(ValidationError::InvalidFormat {
                field: "lang",
                expected: "zh_CN, en_US, zh_HK or zh_TW",
            }),
        }
    }
}

/// The body of `POST /cgi-bin/message/subscribe/send`: a mini-program subscribe message.
/// A value that exists is valid: its data keeps the keyword rules
/// ([`MessageData`]), its page path is a page path.
///
/// ```
/// use subscribe_types::{Lang, MessageData, MiniProgramMessage, MiniProgramState, OpenId, TemplateId};
///
/// let data = MessageData::from_pairs([("thing1", "亚麻衬衫"), ("amount2", "¥199.00")])?;
/// let msg = MiniProgramMessage::builder(
///     OpenId::new("oyAaTjt-xXvP87pubE4eUOF-ttD4")?,
///     TemplateId::new("bDmywsp2oEHjwAadTGKkUHpzvMM2KM4aGBsyFpGL8AY")?,
///     data,
/// )
/// .page("pages/order/index?id=42")
/// .state(MiniProgramState::Trial)
/// .lang(Lang::ZhCn)
/// .build()?;
/// assert_eq!(
///     String::from_utf8(msg.to_json()).unwrap(),
///     r#"{"touser":"oyAaTjt-xXvP87pubE4eUOF-ttD4","template_id":"bDmywsp2oEHjwAadTGKkUHpzvMM2KM4aGBsyFpGL8AY","page":"pages/order/index?id=42","data":{"amount2":{"value":"¥199.00"},"thing1":{"value":"亚麻衬衫"}},"miniprogram_state":"trial","lang":"zh_CN"}"#
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MiniProgramMessage {
    touser: OpenId,
    template_id: TemplateId,
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<Box<str>>,
    data: MessageData,
    #[serde(skip_serializing_if = "Option::is_none")]
    miniprogram_state: Option<MiniProgramState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lang: Option<Lang>,
}

impl MiniProgramMessage {
    /// Starts a message to `touser` with template `template_id` and its `data`.
    pub fn builder(touser: OpenId, template_id: TemplateId, data: MessageData) -> MiniProgramMessageBuilder {
        MiniProgramMessageBuilder {
            message: Self { touser, template_id, page: None, data, miniprogram_state: None, lang: None },
        }
    }

    /// The recipient.
    pub fn touser(&self) -> &OpenId {
        &self.touser
    }
    /// The template.
    pub fn template_id(&self) -> &TemplateId {
        &self.template_id
    }
    /// The page opened on tap, if any.
    pub fn page(&self) -> Option<&str> {
        self.page.as_deref()
    }
    /// The data.
    pub fn data(&self) -> &MessageData {
        &self.data
    }
    /// The mini program version opened, if set.
    pub fn state(&self) -> Option<MiniProgramState> {
        self.miniprogram_state
    }
    /// The language, if set.
    pub fn lang(&self) -> Option<Lang> {
        self.lang
    }

    /// The JSON body, raw UTF-8.
    ///
    /// # Panics
    /// Never: every part serializes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a mini-program message serializes")
    }
}

/// Builds a [`MiniProgramMessage`]; [`build`](Self::build) checks the page path.
#[derive(Clone, Debug)]
#[must_use]
pub struct MiniProgramMessageBuilder {
    message: MiniProgramMessage,
}

impl MiniProgramMessageBuilder {
    /// The page opened on tap, with its query (`pages/order/index?id=42`).
    pub fn page(mut self, page: impl Into<String>) -> Self {
        self.message.page = Some(page.into().into());
        self
    }
    /// The mini program version opened (default: formal).
    pub fn state(mut self, state: MiniProgramState) -> Self {
        self.message.miniprogram_state = Some(state);
        self
    }
    /// The language (default: `zh_CN`).
    pub fn lang(mut self, lang: Lang) -> Self {
        self.message.lang = Some(lang);
        self
    }

    /// The message.
    ///
    /// # Errors
    /// [`ValidationError`] naming `page` when it is empty, longer than 1024 bytes or has a space
    /// or control character.
    pub fn build(self) -> Result<MiniProgramMessage, ValidationError> {
        if let Some(page) = &self.message.page {
            check_page("page", page)?;
        }
        Ok(self.message)
    }
}

impl crate::Endpoint for MiniProgramMessage {
    const SPEC: crate::EndpointSpec = crate::endpoint::SEND_MINI_PROGRAM_MESSAGE;
    type Body = Self;
    type Response = crate::Ack;
    fn body(&self) -> &Self {
        self
    }
}
