//! The pushed events, typed: the three subscription events, tolerant of the shapes seen in the
//! wild (`List` one object or several, at the top level or under the event's name;
//! `CreateTime` a number or a string), and any other event kept raw by name.

use serde::{Deserialize, Deserializer, Serialize};

use crate::PushError;

/// One pushed event.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// `ToUserName`: the account's original id.
    pub to_user: String,
    /// `FromUserName`: the user's openid.
    pub from_user: String,
    /// `CreateTime`, Unix seconds.
    pub create_time: u64,
    /// What happened.
    pub kind: EventKind,
}

/// What a pushed event says.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// `subscribe_msg_popup_event`: the user answered a subscription popup.
    Popup(Vec<PopupItem>),
    /// `subscribe_msg_change_event`: the user changed a subscription (WeChat pushes rejections).
    Change(Vec<ChangeItem>),
    /// `subscribe_msg_sent_event`: the result of a subscribe notification, by `msgid`.
    Sent(Vec<SentItem>),
    /// Any other event (or message): its name and the whole plaintext.
    Other {
        /// `Event` (or `MsgType` when there is no event).
        event: String,
        /// The plaintext as received.
        raw: String,
    },
}

/// One template's answer in a popup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PopupItem {
    /// `TemplateId`.
    pub template_id: String,
    /// `SubscribeStatusString`: `accept` or `reject`.
    pub status: String,
    /// `PopupScene`: 1 a web page, 2 an article (absent in some pushes).
    pub popup_scene: Option<u32>,
}

/// One template's change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChangeItem {
    /// `TemplateId`.
    pub template_id: String,
    /// `SubscribeStatusString` (`reject`).
    pub status: String,
}

/// One notification's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SentItem {
    /// `TemplateId`.
    pub template_id: String,
    /// `MsgID`: the `msgid` `bizsend` answered.
    pub msg_id: u64,
    /// `ErrorCode`: 0 delivered.
    pub error_code: i64,
    /// `ErrorStatus`: `success`, or why not.
    pub error_status: String,
}

/// A number, read from text (XML is all text; JSON numbers are made text first, see
/// [`Event::from_json`]): one that does not parse is absent.
fn flexible<'de, D: Deserializer<'de>, T: std::str::FromStr>(d: D) -> Result<Option<T>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.and_then(|s| s.trim().parse().ok()))
}

/// Every JSON number in `v` as a string, so numbers and numeric strings read alike.
fn numbers_as_text(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Number(n) => *v = serde_json::Value::String(n.to_string()),
        serde_json::Value::Array(items) => items.iter_mut().for_each(numbers_as_text),
        serde_json::Value::Object(map) => map.values_mut().for_each(numbers_as_text),
        _ => {}
    }
}

#[derive(Deserialize, Default)]
struct RawItem {
    #[serde(rename = "TemplateId", default)]
    template_id: Option<String>,
    #[serde(rename = "SubscribeStatusString", default)]
    status: Option<String>,
    #[serde(rename = "PopupScene", default, deserialize_with = "flexible")]
    popup_scene: Option<u32>,
    #[serde(rename = "MsgID", alias = "MsgId", default, deserialize_with = "flexible")]
    msg_id: Option<u64>,
    #[serde(rename = "ErrorCode", default, deserialize_with = "flexible")]
    error_code: Option<i64>,
    #[serde(rename = "ErrorStatus", default)]
    error_status: Option<String>,
}

#[derive(Deserialize, Default)]
struct Wrapper {
    #[serde(rename = "List", default)]
    list: Vec<RawItem>,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "ToUserName", default)]
    to_user: String,
    #[serde(rename = "FromUserName", default)]
    from_user: String,
    #[serde(rename = "CreateTime", default, deserialize_with = "flexible")]
    create_time: Option<u64>,
    #[serde(rename = "MsgType", default)]
    msg_type: String,
    #[serde(rename = "Event", default)]
    event: String,
    #[serde(rename = "List", default)]
    list: Vec<RawItem>,
    #[serde(rename = "SubscribeMsgPopupEvent", default)]
    popup: Option<Wrapper>,
    #[serde(rename = "SubscribeMsgChangeEvent", default)]
    change: Option<Wrapper>,
    #[serde(rename = "SubscribeMsgSentEvent", default)]
    sent: Option<Wrapper>,
}

impl Event {
    /// Reads an XML push (official and service accounts). No DTD or entity is expanded.
    ///
    /// # Errors
    /// [`PushError::Malformed`] when it is not the push's XML.
    pub fn from_xml(xml: &str) -> Result<Self, PushError> {
        let raw: Raw =
            quick_xml::de::from_str(xml).map_err(|_| PushError::Malformed("not the push's XML"))?;
        Self::from_raw(raw, xml)
    }

    /// Reads a JSON push (mini programs). `List` may be one object or an array.
    ///
    /// # Errors
    /// [`PushError::Malformed`] when it is not the push's JSON.
    pub fn from_json(json: &str) -> Result<Self, PushError> {
        let mut value: serde_json::Value =
            serde_json::from_str(json).map_err(|_| PushError::Malformed("not JSON"))?;
        let object = value.as_object_mut().ok_or(PushError::Malformed("not a JSON object"))?;
        // One object where several may come: make every `List` an array (a wrapper without
        // `List` holds the items itself).
        let as_list = |v: &mut serde_json::Value| match v.take() {
            serde_json::Value::Array(items) => serde_json::Value::Array(items),
            one => serde_json::Value::Array(vec![one]),
        };
        if let Some(list) = object.get_mut("List") {
            *list = as_list(list);
        }
        for name in ["SubscribeMsgPopupEvent", "SubscribeMsgChangeEvent", "SubscribeMsgSentEvent"] {
            let Some(wrapper) = object.get_mut(name) else { continue };
            let list = match wrapper.get_mut("List") {
                Some(list) => as_list(list),
                None => as_list(wrapper),
            };
            *wrapper = serde_json::json!({ "List": list });
        }
        numbers_as_text(&mut value);
        let raw: Raw =
            serde_json::from_value(value).map_err(|_| PushError::Malformed("not the push's JSON"))?;
        Self::from_raw(raw, json)
    }

    fn from_raw(raw: Raw, text: &str) -> Result<Self, PushError> {
        let items = |w: Option<Wrapper>, top: Vec<RawItem>| match w {
            Some(w) if !w.list.is_empty() => w.list,
            _ => top,
        };
        let template =
            |i: &RawItem| i.template_id.clone().ok_or(PushError::Malformed("an item without TemplateId"));
        let kind = match raw.event.as_str() {
            "subscribe_msg_popup_event" => EventKind::Popup(
                items(raw.popup, raw.list)
                    .iter()
                    .map(|i| {
                        Ok(PopupItem {
                            template_id: template(i)?,
                            status: i.status.clone().unwrap_or_default(),
                            popup_scene: i.popup_scene,
                        })
                    })
                    .collect::<Result<_, PushError>>()?,
            ),
            "subscribe_msg_change_event" => EventKind::Change(
                items(raw.change, raw.list)
                    .iter()
                    .map(|i| {
                        Ok(ChangeItem {
                            template_id: template(i)?,
                            status: i.status.clone().unwrap_or_default(),
                        })
                    })
                    .collect::<Result<_, PushError>>()?,
            ),
            "subscribe_msg_sent_event" => EventKind::Sent(
                items(raw.sent, raw.list)
                    .iter()
                    .map(|i| {
                        Ok(SentItem {
                            template_id: template(i)?,
                            msg_id: i.msg_id.ok_or(PushError::Malformed("a sent event without MsgID"))?,
                            error_code: i.error_code.unwrap_or_default(),
                            error_status: i.error_status.clone().unwrap_or_default(),
                        })
                    })
                    .collect::<Result<_, PushError>>()?,
            ),
            "" => EventKind::Other { event: raw.msg_type, raw: text.to_owned() },
            other => EventKind::Other { event: other.to_owned(), raw: text.to_owned() },
        };
        Ok(Self {
            to_user: raw.to_user,
            from_user: raw.from_user,
            create_time: raw.create_time.unwrap_or_default(),
            kind,
        })
    }

    /// The event as one JSON object: `event` (its name), `to_user`, `from_user`,
    /// `create_time`, and `items` (the subscription events) or `raw` (any other).
    ///
    /// ```
    /// let e = subscribe_events::Event::from_json(
    ///     r#"{"FromUserName":"oU","CreateTime":1,"Event":"subscribe_msg_change_event","List":{"TemplateId":"T","SubscribeStatusString":"reject"}}"#,
    /// )?;
    /// assert_eq!(e.to_json()["items"][0]["status"], "reject");
    /// # Ok::<(), subscribe_events::PushError>(())
    /// ```
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::json!({
            "event": self.name(), "to_user": self.to_user, "from_user": self.from_user,
            "create_time": self.create_time,
        });
        let items = match &self.kind {
            EventKind::Popup(i) => serde_json::to_value(i),
            EventKind::Change(i) => serde_json::to_value(i),
            EventKind::Sent(i) => serde_json::to_value(i),
            EventKind::Other { raw, .. } => Ok(serde_json::Value::String(raw.clone())),
        };
        let key = if matches!(self.kind, EventKind::Other { .. }) { "raw" } else { "items" };
        out[key] = items.unwrap_or_default();
        out
    }

    /// The event's name (`subscribe_msg_popup_event`, …, or the other event's own).
    pub fn name(&self) -> &str {
        match &self.kind {
            EventKind::Popup(_) => "subscribe_msg_popup_event",
            EventKind::Change(_) => "subscribe_msg_change_event",
            EventKind::Sent(_) => "subscribe_msg_sent_event",
            EventKind::Other { event, .. } => event,
        }
    }
}

/// How a push's body is written: XML (official and service accounts) or JSON (mini programs
/// that chose it in their console).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// `<xml>…</xml>`.
    #[default]
    Xml,
    /// A JSON object.
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "xml" => Ok(Self::Xml),
            "json" => Ok(Self::Json),
            other => Err(format!("format must be xml or json, not {other:?}")),
        }
    }
}

impl Event {
    /// A subscription event from `from_user` to the account `to_user` at `create_time`.
    pub fn new(
        to_user: impl Into<String>,
        from_user: impl Into<String>,
        create_time: u64,
        kind: EventKind,
    ) -> Self {
        Self { to_user: to_user.into(), from_user: from_user.into(), create_time, kind }
    }

    /// The event as WeChat writes it in `format` (what the sandbox pushes): XML with the
    /// items under the event's own element, or JSON with `List` one object or an array.
    /// Any other event is its raw text.
    ///
    /// ```
    /// use subscribe_events::{Event, EventKind, Format, SentItem};
    ///
    /// let sent = SentItem { template_id: "T".into(), msg_id: 7, error_code: 0, error_status: "success".into() };
    /// let e = Event::new("gh_1", "oUser", 1_800_000_000, EventKind::Sent(vec![sent]));
    /// assert_eq!(Event::from_xml(&e.to_wire(Format::Xml))?, e);
    /// assert_eq!(Event::from_json(&e.to_wire(Format::Json))?, e);
    /// # Ok::<(), subscribe_events::PushError>(())
    /// ```
    pub fn to_wire(&self, format: Format) -> String {
        let items: Vec<serde_json::Value> = match &self.kind {
            EventKind::Popup(items) => items
                .iter()
                .map(|i| {
                    let mut v = serde_json::json!({
                        "TemplateId": i.template_id, "SubscribeStatusString": i.status,
                    });
                    if let Some(scene) = i.popup_scene {
                        v["PopupScene"] = scene.to_string().into();
                    }
                    v
                })
                .collect(),
            EventKind::Change(items) => items
                .iter()
                .map(|i| serde_json::json!({"TemplateId": i.template_id, "SubscribeStatusString": i.status}))
                .collect(),
            EventKind::Sent(items) => items
                .iter()
                .map(|i| {
                    serde_json::json!({
                        "TemplateId": i.template_id, "MsgID": i.msg_id.to_string(),
                        "ErrorCode": i.error_code.to_string(), "ErrorStatus": i.error_status,
                    })
                })
                .collect(),
            EventKind::Other { raw, .. } => return raw.clone(),
        };
        let wrapper = match self.kind {
            EventKind::Popup(_) => "SubscribeMsgPopupEvent",
            EventKind::Change(_) => "SubscribeMsgChangeEvent",
            _ => "SubscribeMsgSentEvent",
        };
        match format {
            Format::Json => {
                let list = match <[_; 1]>::try_from(items) {
                    Ok([one]) => one,
                    Err(items) => serde_json::Value::Array(items),
                };
                serde_json::json!({
                    "ToUserName": self.to_user, "FromUserName": self.from_user,
                    "CreateTime": self.create_time.to_string(), "MsgType": "event",
                    "Event": self.name(), "List": list,
                })
                .to_string()
            }
            Format::Xml => {
                use quick_xml::escape::escape;
                use std::fmt::Write as _;
                let mut xml = format!(
                    "<xml><ToUserName>{}</ToUserName><FromUserName>{}</FromUserName>\
                     <CreateTime>{}</CreateTime><MsgType>event</MsgType><Event>{}</Event><{wrapper}>",
                    escape(self.to_user.as_str()),
                    escape(self.from_user.as_str()),
                    self.create_time,
                    self.name()
                );
                for item in &items {
                    xml.push_str("<List>");
                    for (k, v) in item.as_object().into_iter().flatten() {
                        let v = v.as_str().unwrap_or_default();
                        let _ = write!(xml, "<{k}>{}</{k}>", escape(v));
                    }
                    xml.push_str("</List>");
                }
                let _ = write!(xml, "</{wrapper}></xml>");
                xml
            }
        }
    }
}
