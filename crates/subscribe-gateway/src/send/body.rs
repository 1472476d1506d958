//! The send endpoints' bodies, as a caller who read WeChat's documentation writes them: WeChat's
//! own field names, unknown fields refused (a typo is not silently dropped), each read into
//! `subscribe-types`' message so that every value rule is the library's.

use std::fmt;

use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use subscribe_types::{
    DataError, Lang, MessageData, MiniProgramMessage, MiniProgramState, NotificationMessage, OneTimeMessage,
    OpenId, Scene, TemplateId, ValidationError,
};
use utoipa::ToSchema;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
use utoipa::openapi::{RefOr, Schema};

/// The three kinds of message, one route each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MessageKind {
    /// The one-time message (`/cgi-bin/message/template/subscribe`).
    OneTime,
    /// The mini-program message (`/cgi-bin/message/subscribe/send`).
    MiniProgram,
    /// The notification (`/cgi-bin/message/subscribe/bizsend`).
    Notification,
}

impl MessageKind {
    /// The kind's name: its route's last segment, and what the logs say.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::OneTime => "one_time",
            Self::MiniProgram => "mini_program",
            Self::Notification => "notification",
        }
    }
}

/// A message read and checked, ready to send.
#[derive(Clone, Debug)]
pub(crate) enum Message {
    OneTime(OneTimeMessage),
    MiniProgram(MiniProgramMessage),
    Notification(NotificationMessage),
}

/// Why a body was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Not a JSON object (400).
    NotJson(String),
    /// A JSON object, but not a valid message (422): the field at fault (its wire name:
    /// `data.content.value`, `miniprogram.appid`, `data.thing1.value`) and the rule it broke.
    Invalid { field: String, rule: String },
}

impl From<ValidationError> for BodyError {
    fn from(e: ValidationError) -> Self {
        Self::Invalid { field: e.field().to_owned(), rule: e.to_string() }
    }
}

impl From<DataError> for BodyError {
    fn from(e: DataError) -> Self {
        Self::Invalid { field: e.field(), rule: e.to_string() }
    }
}

/// Reads a body of `kind`.
pub(crate) fn parse(kind: MessageKind, body: &[u8]) -> Result<Message, BodyError> {
    Ok(match kind {
        MessageKind::OneTime => Message::OneTime(read::<RawOneTime>(body)?.build()?),
        MessageKind::MiniProgram => Message::MiniProgram(read::<RawMiniProgram>(body)?.build()?),
        MessageKind::Notification => Message::Notification(read::<RawNotification>(body)?.build()?),
    })
}

/// The body's shape, with the path of a field of the wrong type or unknown.
fn read<T: DeserializeOwned>(body: &[u8]) -> Result<T, BodyError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let raw = serde_path_to_error::deserialize(&mut de).map(|Obj(raw)| raw).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = without_position(&inner);
        match inner.classify() {
            serde_json::error::Category::Data if path != "." => {
                let rule = format!("`{path}`: {message}");
                BodyError::invalid(path, rule)
            }
            serde_json::error::Category::Data => {
                BodyError::NotJson(format!("the body must be a JSON object: {message}"))
            }
            _ => BodyError::NotJson(format!("the body is not JSON: {inner}")),
        }
    })?;
    de.end().map_err(|e| BodyError::NotJson(format!("the body is not JSON: {e}")))?;
    Ok(raw)
}

impl BodyError {
    fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), rule: rule.into() }
    }
}

/// A data error's message without `serde_json`'s " at line L column C", which a field path
/// says better.
pub(crate) fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// A struct read from a JSON object only. serde's derived structs also take an array, its
/// items read as the fields in order: `"miniprogram": ["wx…", "page"]` would pass for an
/// object, and a caller's mistake would go unseen.
struct Obj<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Object<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Obj)
            }
        }
        d.deserialize_map(Object(std::marker::PhantomData))
    }
}

fn need(field: &'static str, v: Option<String>) -> Result<String, ValidationError> {
    v.ok_or(ValidationError::Missing { field })
}

/// `touser` and `template_id`, which every kind has.
fn recipient(touser: Option<String>, template_id: Option<String>) -> Result<(OpenId, TemplateId), BodyError> {
    let touser = OpenId::new(need("touser", touser)?).map_err(|e| e.in_field("touser"))?;
    let template_id =
        TemplateId::new(need("template_id", template_id)?).map_err(|e| e.in_field("template_id"))?;
    Ok((touser, template_id))
}

/// `{"appid": …, "pagepath": …}`: the mini program a message opens.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = MiniProgramLink)]
pub(crate) struct RawMiniProgramLink {
    /// The mini program's AppID.
    #[schema(required = true)]
    appid: Option<String>,
    /// The page to open, without spaces.
    #[schema(required = true)]
    pagepath: Option<String>,
}

impl RawMiniProgramLink {
    fn parts(self) -> Result<(String, String), ValidationError> {
        Ok((need("miniprogram.appid", self.appid)?, need("miniprogram.pagepath", self.pagepath)?))
    }
}

/// The one-time message as WeChat documents it (`/cgi-bin/message/template/subscribe`), without
/// the access token; `scene` a string of digits or a number.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = OneTimeMessage, example = json!({
    "touser": "oSandbox_Alice_00000000001", "template_id": "SandboxRestockAlert_0000000000000000000001",
    "scene": "1000", "title": "到货提醒", "data": {"content": {"value": "您关注的商品已到货"}}
}))]
pub(crate) struct RawOneTime {
    /// The user's OpenID.
    #[schema(required = true)]
    touser: Option<String>,
    /// The template the user confirmed.
    #[schema(required = true)]
    template_id: Option<String>,
    /// The scene the user confirmed, 0 to 10000: a string of digits (as WeChat documents it) or
    /// a number.
    #[schema(required = true, schema_with = scene_schema)]
    scene: Option<Value>,
    /// 1 to 15 characters.
    #[schema(required = true, min_length = 1, max_length = 15)]
    title: Option<String>,
    /// An absolute http(s) URL the message opens.
    url: Option<String>,
    /// The mini program the message opens.
    #[schema(value_type = Option<RawMiniProgramLink>)]
    miniprogram: Option<Obj<RawMiniProgramLink>>,
    /// `{"content": {"value": "…", "color": "#RRGGBB"}}`.
    #[schema(required = true, value_type = Option<RawOneTimeData>)]
    data: Option<Obj<RawOneTimeData>>,
}

/// The one-time message's data.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = OneTimeData)]
pub(crate) struct RawOneTimeData {
    /// The message's text.
    #[schema(required = true, value_type = Option<RawContent>)]
    content: Option<Obj<RawContent>>,
}

/// The one-time message's text and colour.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = OneTimeContent)]
pub(crate) struct RawContent {
    /// 1 to 200 characters.
    #[schema(required = true, min_length = 1, max_length = 200)]
    value: Option<String>,
    /// `#RRGGBB`.
    #[schema(pattern = "^#[0-9A-Fa-f]{6}$")]
    color: Option<String>,
}

/// `scene`'s schema: a string of digits or an integer, 0 to 10000.
fn scene_schema() -> impl Into<RefOr<Schema>> {
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String).pattern(Some("^[0-9]{1,5}$")))
        .item(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)).maximum(Some(Scene::MAX)))
}

impl RawOneTime {
    fn build(self) -> Result<OneTimeMessage, BodyError> {
        let (touser, template_id) = recipient(self.touser, self.template_id)?;
        let scene = scene(self.scene)?;
        let Obj(content) = self
            .data
            .and_then(|Obj(d)| d.content)
            .ok_or(ValidationError::Missing { field: "data.content" })?;
        let mut builder = OneTimeMessage::builder(touser, template_id, scene)
            .title(need("title", self.title)?)
            .content(need("data.content.value", content.value)?);
        if let Some(color) = content.color {
            builder = builder.color(color);
        }
        if let Some(url) = self.url {
            builder = builder.url(url);
        }
        if let Some(Obj(link)) = self.miniprogram {
            let (appid, pagepath) = link.parts()?;
            builder = builder.miniprogram(appid, pagepath);
        }
        Ok(builder.build()?)
    }
}

/// `scene`: WeChat documents a string; a number is read too, as WeChat's server does.
fn scene(v: Option<Value>) -> Result<Scene, ValidationError> {
    match v {
        None | Some(Value::Null) => Err(ValidationError::Missing { field: "scene" }),
        Some(Value::String(s)) => s.parse(),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
            (Some(v), _) => Scene::new(u32::try_from(v).unwrap_or(u32::MAX)),
            (None, Some(negative)) => Err(ValidationError::OutOfRange {
                field: "scene",
                min: 0,
                max: i64::from(Scene::MAX),
                actual: negative,
            }),
            (None, None) => Err(ValidationError::NotANumber { field: "scene", len: n.to_string().len() }),
        },
        Some(_) => Err(ValidationError::InvalidFormat {
            field: "scene",
            expected: "a string of digits 0..=10000, or a number",
        }),
    }
}

/// The mini-program message as WeChat documents it (`/cgi-bin/message/subscribe/send`), without
/// the access token.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = MiniProgramMessage, example = json!({
    "touser": "oSandbox_Alice_00000000001", "template_id": "SandboxMpRestockAlert_0000000000000000000001",
    "data": {"thing1": {"value": "手冲咖啡壶"}, "time2": {"value": "15:01"}, "amount3": {"value": "¥199.00"}}
}))]
pub(crate) struct RawMiniProgram {
    /// The user's OpenID.
    #[schema(required = true)]
    touser: Option<String>,
    /// The template the user accepted.
    #[schema(required = true)]
    template_id: Option<String>,
    /// The mini program's page the message opens, without spaces.
    page: Option<String>,
    /// `developer`, `trial` or `formal`.
    miniprogram_state: Option<String>,
    /// `zh_CN`, `en_US`, `zh_HK` or `zh_TW`.
    lang: Option<String>,
    /// The template's keywords and their values, in the template's rules.
    #[schema(required = true, value_type = Option<std::collections::HashMap<String, RawValue>>)]
    data: Option<RawData>,
}

impl RawMiniProgram {
    fn build(self) -> Result<MiniProgramMessage, BodyError> {
        let (touser, template_id) = recipient(self.touser, self.template_id)?;
        let mut builder = MiniProgramMessage::builder(touser, template_id, data(self.data)?);
        if let Some(page) = self.page {
            builder = builder.page(page);
        }
        if let Some(state) = self.miniprogram_state {
            builder = builder.state(state.parse::<MiniProgramState>()?);
        }
        if let Some(lang) = self.lang {
            builder = builder.lang(lang.parse::<Lang>()?);
        }
        Ok(builder.build()?)
    }
}

/// The notification as WeChat documents it (`/cgi-bin/message/subscribe/bizsend`), without the
/// access token; `page` a web URL.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NotificationMessage, example = json!({
    "touser": "oSandbox_Alice_00000000001", "template_id": "SandboxMpMemberExpiry_0000000000000000000002",
    "page": "https://shop.example.com/orders/42",
    "data": {"enum1": {"value": "已发货"}, "date2": {"value": "2026-05-04"}}
}))]
pub(crate) struct RawNotification {
    /// The user's OpenID.
    #[schema(required = true)]
    touser: Option<String>,
    /// The template the user accepted.
    #[schema(required = true)]
    template_id: Option<String>,
    /// An absolute http(s) URL the message opens.
    page: Option<String>,
    /// The mini program the message opens.
    #[schema(value_type = Option<RawMiniProgramLink>)]
    miniprogram: Option<Obj<RawMiniProgramLink>>,
    /// The template's keywords and their values, in the template's rules.
    #[schema(required = true, value_type = Option<std::collections::HashMap<String, RawValue>>)]
    data: Option<RawData>,
}

impl RawNotification {
    fn build(self) -> Result<NotificationMessage, BodyError> {
        let (touser, template_id) = recipient(self.touser, self.template_id)?;
        let mut builder = NotificationMessage::builder(touser, template_id, data(self.data)?);
        if let Some(page) = self.page {
            builder = builder.page(page);
        }
        if let Some(Obj(link)) = self.miniprogram {
            let (appid, pagepath) = link.parts()?;
            builder = builder.miniprogram(appid, pagepath);
        }
        Ok(builder.build()?)
    }
}

/// `data` of the mini-program message and the notification, `{"thing1": {"value": "…"}, …}`,
/// in the body's order with every key kept: a key given twice is refused, not overwritten.
struct RawData(Vec<(String, Obj<RawValue>)>);

/// A keyword's value: `{"value": "…"}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = DataValue)]
pub(crate) struct RawValue {
    /// The value, in its keyword's rule.
    #[schema(required = true)]
    value: Option<String>,
}

impl<'de> Deserialize<'de> for RawData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = RawData;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of keys like thing1, each {\"value\": \"…\"}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawData, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry::<String, Obj<RawValue>>()? {
                    pairs.push(pair);
                }
                Ok(RawData(pairs))
            }
        }
        d.deserialize_map(Pairs)
    }
}

/// The data, every key and value checked by `MessageData` (key names, keyword rules, duplicates,
/// at least one key, at most 32).
fn data(raw: Option<RawData>) -> Result<MessageData, BodyError> {
    let raw = raw.ok_or(ValidationError::Missing { field: "data" })?;
    let mut pairs = Vec::with_capacity(raw.0.len());
    for (key, Obj(value)) in raw.0 {
        // The key is checked first, so that an error never quotes a key of any length.
        let key: subscribe_types::DataKey = key.parse()?;
        let field = format!("data.{key}.value");
        let value =
            value.value.ok_or_else(|| BodyError::invalid(&*field, format!("`{field}` is required")))?;
        pairs.push((key.to_string(), value));
    }
    Ok(MessageData::from_pairs(pairs)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(kind: MessageKind, body: &str) -> (String, String) {
        match parse(kind, body.as_bytes()) {
            Err(BodyError::Invalid { field, rule }) => (field, rule),
            other => panic!("{body}: {other:?}"),
        }
    }

    const ONE_TIME: &str = r#"{"touser":"oSandbox_Alice_00000000001","template_id":"t1","scene":"1000","title":"到货提醒","data":{"content":{"value":"到货了"}}}"#;

    #[test]
    fn a_one_time_body_as_wechat_documents_it_is_read() {
        let Ok(Message::OneTime(m)) = parse(MessageKind::OneTime, ONE_TIME.as_bytes()) else { panic!() };
        assert_eq!((m.scene().get(), m.title().as_str()), (1000, "到货提醒"));
        let number = ONE_TIME.replace(r#""scene":"1000""#, r#""scene":1000"#);
        assert!(parse(MessageKind::OneTime, number.as_bytes()).is_ok());
    }

    #[test]
    fn unknown_fields_are_refused_naming_them() {
        let typo = ONE_TIME.replace(r#""title""#, r#""titel""#);
        let (field, rule) = invalid(MessageKind::OneTime, &typo);
        assert_eq!(field, "titel");
        assert!(rule.contains("unknown field `titel`"), "{rule}");
        let nested = ONE_TIME.replace(r#"{"value":"到货了"}"#, r##"{"value":"到货了","colour":"#173177"}"##);
        assert_eq!(invalid(MessageKind::OneTime, &nested).0, "data.content.colour");
        let mp = r##"{"touser":"o1","template_id":"t1","data":{"thing1":{"value":"x","color":"#000000"}}}"##;
        assert_eq!(invalid(MessageKind::MiniProgram, mp).0, "data.thing1.color");
        // The notification has no `miniprogram_state` (only the mini-program message does).
        let n = r#"{"touser":"o1","template_id":"t1","miniprogram_state":"formal","data":{"thing1":{"value":"x"}}}"#;
        assert_eq!(invalid(MessageKind::Notification, n).0, "miniprogram_state");
    }

    #[test]
    fn each_rule_names_its_field() {
        let cases = [
            (
                MessageKind::OneTime,
                ONE_TIME.replace("到货提醒", "这个标题比十五个字符还要长得多得多"),
                "title",
            ),
            (MessageKind::OneTime, ONE_TIME.replace("到货了", ""), "data.content.value"),
            (MessageKind::OneTime, ONE_TIME.replace(r#""1000""#, r#""10001""#), "scene"),
            (MessageKind::OneTime, ONE_TIME.replace(r#""1000""#, "-1"), "scene"),
            (MessageKind::OneTime, ONE_TIME.replace(r#""1000""#, "1.5"), "scene"),
            (MessageKind::OneTime, ONE_TIME.replace(r#""1000""#, "true"), "scene"),
            (MessageKind::OneTime, ONE_TIME.replace(r#""t1""#, r#""""#), "template_id"),
            (
                MessageKind::OneTime,
                ONE_TIME.replace(r#""touser":"oSandbox_Alice_00000000001","#, ""),
                "touser",
            ),
            (
                MessageKind::OneTime,
                ONE_TIME.replace(r#""scene":"1000","#, r#""scene":"1000","url":"ftp://x","#),
                "url",
            ),
            (
                MessageKind::OneTime,
                ONE_TIME.replace(
                    r#""scene":"1000","#,
                    r#""scene":"1000","miniprogram":{"appid":"wx0123456789abcdef"},"#,
                ),
                "miniprogram.pagepath",
            ),
            (
                MessageKind::OneTime,
                ONE_TIME.replace(r#"{"value":"到货了"}"#, r#"{"value":"到货了","color":"red"}"#),
                "data.content.color",
            ),
            (
                MessageKind::OneTime,
                ONE_TIME.replace(r#""touser":"oSandbox_Alice_00000000001""#, r#""touser":7"#),
                "touser",
            ),
        ];
        for (kind, body, field) in cases {
            assert_eq!(invalid(kind, &body).0, field, "{body}");
        }
        let mp =
            |data: &str, extra: &str| format!(r#"{{"touser":"o1","template_id":"t1",{extra}"data":{data}}}"#);
        let cases = [
            (
                mp(r#"{"thing1":{"value":"一个超过二十个字符的商品名称会被微信拒绝的哦"}}"#, ""),
                "data.thing1.value",
            ),
            (mp(r#"{"thing1":{}}"#, ""), "data.thing1.value"),
            (mp(r#"{"colour1":{"value":"x"}}"#, ""), "data.colour1"),
            (mp(r#"{"thing1":{"value":"a"},"thing1":{"value":"b"}}"#, ""), "data.thing1"),
            (mp("{}", ""), "data"),
            (mp(r#"{"thing1":{"value":"x"}}"#, r#""lang":"fr","#), "lang"),
            (mp(r#"{"thing1":{"value":"x"}}"#, r#""miniprogram_state":"beta","#), "miniprogram_state"),
            (mp(r#"{"thing1":{"value":"x"}}"#, r#""page":"has space","#), "page"),
        ];
        for (body, field) in cases {
            assert_eq!(invalid(MessageKind::MiniProgram, &body).0, field, "{body}");
        }
        let n = r#"{"touser":"o1","template_id":"t1","page":"not-a-url","data":{"thing1":{"value":"x"}}}"#;
        assert_eq!(invalid(MessageKind::Notification, n).0, "page");
    }

    #[test]
    fn what_is_not_a_json_object_is_told_apart() {
        for body in
            ["", "{", "not json", r#"{"touser":"o1"} trailing"#, "[]", r#"["o1","t1","1"]"#, "\"a string\""]
        {
            assert!(
                matches!(parse(MessageKind::OneTime, body.as_bytes()), Err(BodyError::NotJson(_))),
                "{body}"
            );
        }
        // Nor is an array taken for an object inside.
        let array = ONE_TIME
            .replace(r#""scene":"1000","#, r#""scene":"1000","miniprogram":["wx0123456789abcdef","p"],"#);
        assert_eq!(invalid(MessageKind::OneTime, &array).0, "miniprogram");
        let array = ONE_TIME.replace(r#"{"value":"到货了"}"#, r#"["到货了"]"#);
        assert_eq!(invalid(MessageKind::OneTime, &array).0, "data.content");
        let mp = r#"{"touser":"o1","template_id":"t1","data":{"thing1":["x"]}}"#;
        assert_eq!(invalid(MessageKind::MiniProgram, mp).0, "data.thing1");
    }
}
