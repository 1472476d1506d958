//! Step 3 of the flow: the one message a confirmation allows.

use serde::{Deserialize, Serialize};

use crate::api::DecodeError;
use crate::endpoint::{Ack, Endpoint, EndpointSpec, SEND_ONE_TIME_MESSAGE};
use crate::error::ValidationError;
use crate::ids::{OpenId, Scene, TemplateId};
use crate::text::{Color, Content, HttpUrl, MiniProgram, Title};

/// The body of `POST /cgi-bin/message/template/subscribe`. A value that exists is valid.
///
/// Serialized exactly as WeChat expects: `scene` as a JSON string, absent `url`,
/// `miniprogram` and `color` omitted (never `null`), mini program keys `appid` and `pagepath`,
/// raw UTF-8.
///
/// ```
/// use subscribe_types::{OpenId, Scene, OneTimeMessage, TemplateId};
///
/// let msg = OneTimeMessage::builder(
///     OpenId::new("oyAaTjt-xXvP87pubE4eUOF-ttD4")?,
///     TemplateId::new("7YuTL__ilzyZB9DXcDt2mHx-CAS_E7KtsQkhIGVhhRM")?,
///     Scene::new(1000)?,
/// )
/// .title("到货提醒")
/// .content("您关注的商品已到货")
/// .color("#173177")
/// .build()?;
///
/// assert_eq!(
///     String::from_utf8(msg.to_json()).unwrap(),
///     r##"{"touser":"oyAaTjt-xXvP87pubE4eUOF-ttD4","template_id":"7YuTL__ilzyZB9DXcDt2mHx-CAS_E7KtsQkhIGVhhRM","scene":"1000","title":"到货提醒","data":{"content":{"value":"您关注的商品已到货","color":"#173177"}}}"##
/// );
///
/// // Bad input never becomes a message:
/// let err = OneTimeMessage::builder(msg.touser().clone(), msg.template_id().clone(), msg.scene())
///     .title("this title is longer than fifteen characters")
///     .content("x")
///     .build()
///     .unwrap_err();
/// assert_eq!(err.field(), "title");
/// # Ok::<(), subscribe_types::ValidationError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OneTimeMessage {
    touser: OpenId,
    template_id: TemplateId,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<HttpUrl>,
    #[serde(skip_serializing_if = "Option::is_none")]
    miniprogram: Option<MiniProgram>,
    #[serde(serialize_with = "Scene::serialize_as_string")]
    scene: Scene,
    title: Title,
    data: MessageData,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
struct MessageData {
    content: ContentItem,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
struct ContentItem {
    value: Content,
    #[serde(skip_serializing_if = "Option::is_none")]
    color: Option<Color>,
}

impl OneTimeMessage {
    /// Starts a message to `touser` for the confirmed `template_id` and `scene`.
    pub fn builder(touser: OpenId, template_id: TemplateId, scene: Scene) -> OneTimeMessageBuilder {
        OneTimeMessageBuilder {
            touser,
            template_id,
            scene,
            title: None,
            content: None,
            color: None,
            url: None,
            miniprogram: None,
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
    /// The scene, which must be the one the user confirmed.
    pub fn scene(&self) -> Scene {
        self.scene
    }
    /// The title.
    pub fn title(&self) -> &Title {
        &self.title
    }
    /// The body text.
    pub fn content(&self) -> &Content {
        &self.data.content.value
    }
    /// The body colour, if any.
    pub fn color(&self) -> Option<Color> {
        self.data.content.color
    }
    /// The link opened on tap, if any.
    pub fn url(&self) -> Option<&HttpUrl> {
        self.url.as_ref()
    }
    /// The mini program opened on tap, if any (it wins over `url`).
    pub fn miniprogram(&self) -> Option<&MiniProgram> {
        self.miniprogram.as_ref()
    }

    /// The JSON body, raw UTF-8 (`serde_json` writes it from the derived `Serialize`).
    ///
    /// # Panics
    /// Never: every field is a string or an optional struct of strings, which `serde_json`
    /// always writes.
    pub fn to_json(&self) -> Vec<u8> {
        // Every field is a string or an optional struct of strings: serializing cannot fail.
        serde_json::to_vec(self).expect("a OneTimeMessage always serializes")
    }

    /// Reads and validates a send body, the way WeChat's server does. `scene` may be a number
    /// or a numeric string; unknown keys are ignored.
    ///
    /// ```
    /// use subscribe_types::{MessageParseError, OneTimeMessage};
    /// let err = OneTimeMessage::from_json(br#"{"touser":"o1","template_id":"t1","scene":"1",
    ///     "title":"hi","data":{"content":{"value":"","color":null}}}"#).unwrap_err();
    /// assert!(matches!(err, MessageParseError::Invalid(e) if e.field() == "data.content.value"));
    /// ```
    ///
    /// # Errors
    /// [`MessageParseError::Json`] when the body is not JSON of the right shape,
    /// [`MessageParseError::Invalid`] naming the first field that is missing or breaks its rule.
    pub fn from_json(body: &[u8]) -> Result<Self, MessageParseError> {
        let raw: RawMessage =
            serde_json::from_slice(body).map_err(|e| MessageParseError::Json(DecodeError::from(&e)))?;
        raw.validate().map_err(MessageParseError::Invalid)
    }
}

impl Endpoint for OneTimeMessage {
    const SPEC: EndpointSpec = SEND_ONE_TIME_MESSAGE;
    type Body = Self;
    type Response = Ack;

    fn body(&self) -> &Self {
        self
    }
}

impl<'de> Deserialize<'de> for OneTimeMessage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RawMessage::deserialize(d)?.validate().map_err(serde::de::Error::custom)
    }
}

#[derive(Deserialize)]
struct RawMessage {
    touser: Option<String>,
    template_id: Option<String>,
    url: Option<String>,
    miniprogram: Option<RawMiniProgram>,
    scene: Option<serde_json::Value>,
    title: Option<String>,
    data: Option<RawData>,
}

#[derive(Deserialize)]
struct RawMiniProgram {
    appid: Option<String>,
    pagepath: Option<String>,
}

#[derive(Deserialize)]
struct RawData {
    content: Option<RawContent>,
}

#[derive(Deserialize)]
struct RawContent {
    value: Option<String>,
    color: Option<String>,
}

fn need(field: &'static str, v: Option<String>) -> Result<String, ValidationError> {
    v.ok_or(ValidationError::Missing { field })
}

impl RawMessage {
    fn validate(self) -> Result<OneTimeMessage, ValidationError> {
        let touser = OpenId::new(need("touser", self.touser)?).map_err(|e| e.in_field("touser"))?;
        let template_id = TemplateId::new(need("template_id", self.template_id)?)?;
        let scene = match self.scene {
            None | Some(serde_json::Value::Null) => return Err(ValidationError::Missing { field: "scene" }),
            Some(serde_json::Value::String(s)) => s.parse()?,
            Some(serde_json::Value::Number(n)) => match n.as_u64() {
                Some(v) => Scene::new(u32::try_from(v).unwrap_or(u32::MAX))?,
                None => return Err(ValidationError::NotANumber { field: "scene", len: n.to_string().len() }),
            },
            Some(_) => {
                return Err(ValidationError::InvalidFormat {
                    field: "scene",
                    expected: "an integer 0..=10000 or a string of one",
                });
            }
        };
        let content =
            self.data.and_then(|d| d.content).ok_or(ValidationError::Missing { field: "data.content" })?;
        let mut builder = OneTimeMessage::builder(touser, template_id, scene);
        builder.title = Some(need("title", self.title)?);
        builder.content = Some(need("data.content.value", content.value)?);
        builder.color = content.color;
        builder.url = self.url;
        if let Some(mp) = self.miniprogram {
            builder.miniprogram =
                Some((need("miniprogram.appid", mp.appid)?, need("miniprogram.pagepath", mp.pagepath)?));
        }
        builder.build()
    }
}

/// Builds a [`OneTimeMessage`]; every rule is checked in [`build`](Self::build).
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct OneTimeMessageBuilder {
    touser: OpenId,
    template_id: TemplateId,
    scene: Scene,
    title: Option<String>,
    content: Option<String>,
    color: Option<String>,
    url: Option<String>,
    miniprogram: Option<(String, String)>,
}

impl OneTimeMessageBuilder {
    /// The title, 1..=15 characters. Required.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// The body text, 1..=200 characters; `\n` starts a new line. Required.
    pub fn content(mut self, content: impl Into<String>) -> Self {
        self.content = Some(content.into());
        self
    }

    /// The body colour, `#RRGGBB`.
    pub fn color(mut self, color: impl Into<String>) -> Self {
        self.color = Some(color.into());
        self
    }

    /// A link opened when the message is tapped (its domain must have an ICP filing).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// A mini program opened when the message is tapped; both parts are required.
    pub fn miniprogram(mut self, appid: impl Into<String>, pagepath: impl Into<String>) -> Self {
        self.miniprogram = Some((appid.into(), pagepath.into()));
        self
    }

    /// Checks every rule and returns the message.
    ///
    /// # Errors
    /// The first [`ValidationError`] found, in wire order: `url`, `miniprogram.*`, `title`,
    /// `data.content.value`, `data.content.color`.
    pub fn build(self) -> Result<OneTimeMessage, ValidationError> {
        let url = self.url.map(HttpUrl::new).transpose()?;
        let miniprogram = self.miniprogram.map(|(a, p)| MiniProgram::new(a, p)).transpose()?;
        let title = Title::new(self.title.ok_or(ValidationError::Missing { field: "title" })?)?;
        let value =
            Content::new(self.content.ok_or(ValidationError::Missing { field: "data.content.value" })?)?;
        let color = self.color.map(Color::new).transpose()?;
        Ok(OneTimeMessage {
            touser: self.touser,
            template_id: self.template_id,
            url,
            miniprogram,
            scene: self.scene,
            title,
            data: MessageData { content: ContentItem { value, color } },
        })
    }
}

/// A send body could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageParseError {
    /// Not JSON, or JSON of the wrong shape (WeChat answers 47001).
    #[error("send body is not valid JSON")]
    Json(#[source] DecodeError),
    /// A field is missing or breaks its rule (WeChat answers 47003 naming it).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}
