//! Step 3 of the flow: the one message a confirmation allows.

use serde::{Deserialize, Serialize};

use crate::api::DecodeError;
use crate::endpoint::{Endpoint, EndpointSpec, SEND_SUBSCRIBE_MESSAGE};
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
/// use subscribe_types::{OpenId, Scene, SubscribeMessage, TemplateId};
///
/// let msg = SubscribeMessage::builder(
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
/// let err = SubscribeMessage::builder(msg.touser().clone(), msg.template_id().clone(), msg.scene())
///     .title("this title is longer than fifteen characters")
///     .content("x")
///     .build()
///     .unwrap_err();
/// assert_eq!(err.field(), "title");
/// # Ok::<(), subscribe_types::ValidationError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SubscribeMessage {
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

impl SubscribeMessage {
    /// Starts a message to `touser` for the confirmed `template_id` and `scene`.
    pub fn builder(touser: OpenId, template_id: TemplateId, scene: Scene) -> SubscribeMessageBuilder {
        SubscribeMessageBuilder {
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

    /// The JSON body, raw UTF-8: byte for byte what `serde_json::to_vec` makes of this value
    /// (a test holds the two together), written directly because it runs on every send.
    pub fn to_json(&self) -> Vec<u8> {
        // Exactly sized: no reallocation while writing, and a caller turning the vector into
        // `Bytes` gets it without a second allocation (`Bytes` needs `len == capacity` for that).
        let mut out = Vec::with_capacity(self.json_len());
        out.extend_from_slice(b"{\"touser\":");
        json_string(&mut out, self.touser.as_str());
        out.extend_from_slice(b",\"template_id\":");
        json_string(&mut out, self.template_id.as_str());
        if let Some(url) = &self.url {
            out.extend_from_slice(b",\"url\":");
            json_string(&mut out, url.as_str());
        }
        if let Some(mp) = &self.miniprogram {
            out.extend_from_slice(b",\"miniprogram\":{\"appid\":");
            json_string(&mut out, mp.appid().as_str());
            out.extend_from_slice(b",\"pagepath\":");
            json_string(&mut out, mp.pagepath());
            out.push(b'}');
        }
        out.extend_from_slice(b",\"scene\":\"");
        let mut digits = [0u8; 5];
        let mut n = self.scene.get();
        let mut i = digits.len();
        loop {
            i -= 1;
            // A digit: `n % 10` is below 10.
            digits[i] = b'0' + u8::try_from(n % 10).unwrap_or(0);
            n /= 10;
            if n == 0 || i == 0 {
                break;
            }
        }
        out.extend_from_slice(&digits[i..]);
        out.extend_from_slice(b"\",\"title\":");
        json_string(&mut out, self.title.as_str());
        out.extend_from_slice(b",\"data\":{\"content\":{\"value\":");
        json_string(&mut out, self.data.content.value.as_str());
        if let Some(color) = &self.data.content.color {
            out.extend_from_slice(b",\"color\":");
            json_string(&mut out, color.as_str());
        }
        out.extend_from_slice(b"}}}");
        debug_assert_eq!(out.len(), out.capacity(), "json_len must be exact");
        out
    }

    /// The length of [`to_json`](Self::to_json)'s output.
    fn json_len(&self) -> usize {
        let mut n = r#"{"touser":,"template_id":,"scene":"","title":,"data":{"content":{"value":}}}"#.len()
            + json_string_len(self.touser.as_str())
            + json_string_len(self.template_id.as_str())
            + json_string_len(self.title.as_str())
            + json_string_len(self.data.content.value.as_str())
            + decimal_len(u32::from(self.scene.get()));
        if let Some(url) = &self.url {
            n += r#","url":"#.len() + json_string_len(url.as_str());
        }
        if let Some(mp) = &self.miniprogram {
            n += r#","miniprogram":{"appid":,"pagepath":}"#.len()
                + json_string_len(mp.appid().as_str())
                + json_string_len(mp.pagepath());
        }
        if let Some(color) = &self.data.content.color {
            n += r#","color":"#.len() + json_string_len(color.as_str());
        }
        n
    }

    /// Reads and validates a send body, the way WeChat's server does. `scene` may be a number
    /// or a numeric string; unknown keys are ignored.
    ///
    /// ```
    /// use subscribe_types::{MessageParseError, SubscribeMessage};
    /// let err = SubscribeMessage::from_json(br#"{"touser":"o1","template_id":"t1","scene":"1",
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

impl Endpoint for SubscribeMessage {
    const SPEC: EndpointSpec = SEND_SUBSCRIBE_MESSAGE;

    fn body(&self) -> Vec<u8> {
        self.to_json()
    }
}

impl<'de> Deserialize<'de> for SubscribeMessage {
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
    fn validate(self) -> Result<SubscribeMessage, ValidationError> {
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
        let mut builder = SubscribeMessage::builder(touser, template_id, scene);
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

/// Builds a [`SubscribeMessage`]; every rule is checked in [`build`](Self::build).
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct SubscribeMessageBuilder {
    touser: OpenId,
    template_id: TemplateId,
    scene: Scene,
    title: Option<String>,
    content: Option<String>,
    color: Option<String>,
    url: Option<String>,
    miniprogram: Option<(String, String)>,
}

impl SubscribeMessageBuilder {
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
    pub fn build(self) -> Result<SubscribeMessage, ValidationError> {
        let url = self.url.map(HttpUrl::new).transpose()?;
        let miniprogram = self.miniprogram.map(|(a, p)| MiniProgram::new(a, p)).transpose()?;
        let title = Title::new(self.title.ok_or(ValidationError::Missing { field: "title" })?)?;
        let value =
            Content::new(self.content.ok_or(ValidationError::Missing { field: "data.content.value" })?)?;
        let color = self.color.map(Color::new).transpose()?;
        Ok(SubscribeMessage {
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

/// Appends `s` as a JSON string the way `serde_json` writes it: `"` and `\` escaped, the
/// control characters as `\b \t \n \f \r` or `\u00xx`, everything else (non-ASCII
/// included) as it is. Runs without escapes are copied whole.
fn json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while let Some(at) = next_escape(bytes, i) {
        i = at + 1;
        let b = bytes[at];
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            _ => b"",
        };
        out.extend_from_slice(&bytes[start..at]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(short);
        }
        start = at + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// The length of `s` written by [`json_string`], quotes included.
fn json_string_len(s: &str) -> usize {
    let bytes = s.as_bytes();
    let mut n = bytes.len() + 2;
    let mut i = 0;
    while let Some(at) = next_escape(bytes, i) {
        i = at + 1;
        n += match bytes[at] {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
            _ => 5,
        };
    }
    n
}

/// The number of decimal digits of `n`.
fn decimal_len(n: u32) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// The index of the first byte at or after `from` that JSON must escape (`"`, `\` or below
/// 0x20). Eight bytes at a time: text rarely needs escaping, so most words are checked whole.
fn next_escape(bytes: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let needs = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    // A byte of `x` is zero: the classic test, exact as a yes/no for the whole word.
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS != 0;
    let mut i = from;
    while i + 8 <= bytes.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[i..i + 8]);
        let w = u64::from_le_bytes(word);
        // Below 0x20: some byte has none of the bits 0x20..=0x80 set, i.e. `w & 0xe0…` has a
        // zero byte.
        let low = has_zero(w & 0xe0e0_e0e0_e0e0_e0e0);
        if low || has_zero(w ^ (ONES * u64::from(b'"'))) || has_zero(w ^ (ONES * u64::from(b'\\'))) {
            return bytes[i..i + 8].iter().position(|&b| needs(b)).map(|p| i + p);
        }
        i += 8;
    }
    bytes[i..].iter().position(|&b| needs(b)).map(|p| i + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_escape_agrees_with_a_byte_by_byte_scan() {
        let needs = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
        for special in 0..=255u8 {
            for len in 0..20 {
                for at in 0..len {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    for from in 0..=len {
                        let naive = bytes[from..].iter().position(|&b| needs(b)).map(|p| from + p);
                        assert_eq!(
                            next_escape(&bytes, from),
                            naive,
                            "byte {special:#x} at {at} of {len} from {from}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn json_string_writes_what_serde_json_writes() {
        for s in [
            "",
            "plain",
            "你好\u{7f}",
            "\"q\" \\ /",
            "\u{0}\u{1}\u{8}\u{9}\u{a}\u{c}\u{d}\u{1f}",
            "0123456789\"abcdef",
        ] {
            let mut out = Vec::new();
            json_string(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }
}
