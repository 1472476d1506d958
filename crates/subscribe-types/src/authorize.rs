//! Step 1 of the flow: sending the user to WeChat's authorization page.
//!
//! [`AuthorizeRequest`] builds the web page URL for official accounts; [`MobileSubscribeRequest`]
//! is the request a mobile app passes to the WeChat Open SDK.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::callback::{Action, AuthorizationAnswer, Cancelled, Confirmed, QueryError};
use crate::encoding::push_component;
use crate::error::ValidationError;
use crate::ids::{AppId, OpenId, Reserved, Scene, TemplateId};
use crate::query;
use crate::text::HttpUrl;

/// The authorization page's host when none is configured.
pub const DEFAULT_MP_BASE: &str = "https://mp.weixin.qq.com";
/// The authorization page's path.
pub const AUTHORIZE_PATH: &str = "/mp/subscribemsg";

/// An authorization request for the web (official account) flow.
///
/// ```
/// use subscribe_types::{AppId, AuthorizeRequest, HttpUrl, Reserved, Scene, TemplateId};
///
/// let request = AuthorizeRequest::new(
///     AppId::new("wxaba38c7f163da69b")?,
///     TemplateId::new("1uDxHNXwYQfBmXOfPJcjAS3FynHArD8aWMEFNRGSbCc")?,
///     Scene::new(1000)?,
///     HttpUrl::new("http://support.qq.com")?,
/// )
/// .with_reserved(Reserved::new("test")?);
///
/// assert_eq!(
///     request.url(),
///     "https://mp.weixin.qq.com/mp/subscribemsg?action=get_confirm&appid=wxaba38c7f163da69b\
///      &scene=1000&template_id=1uDxHNXwYQfBmXOfPJcjAS3FynHArD8aWMEFNRGSbCc\
///      &redirect_url=http%3A%2F%2Fsupport.qq.com&reserved=test#wechat_redirect"
/// );
/// # Ok::<(), subscribe_types::ValidationError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizeRequest {
    /// The official account asking.
    pub appid: AppId,
    /// The one-time template the user is asked to accept.
    pub template_id: TemplateId,
    /// The scene the authorization is for.
    pub scene: Scene,
    /// Where WeChat sends the answer. Its domain must be the account's registered business
    /// domain.
    pub redirect_url: HttpUrl,
    /// The state echoed back (empty when none).
    pub reserved: Reserved,
}

impl AuthorizeRequest {
    /// A request with an empty `reserved`. Set one with [`with_reserved`](Self::with_reserved);
    /// without it nothing ties the answer to the user's session.
    ///
    /// This is the protocol's request as WeChat's page reads it (and as the sandbox's page
    /// parses it back), so it holds any [`HttpUrl`]. Building one for your own users, check the
    /// URL as a [`RedirectUrl`](crate::RedirectUrl) first (`RedirectUrl::new(…)?.into()`): it
    /// refuses a URL whose answers could not be read. `subscribe_client::Client::authorize_url`
    /// takes only a `RedirectUrl`.
    pub fn new(appid: AppId, template_id: TemplateId, scene: Scene, redirect_url: HttpUrl) -> Self {
        Self { appid, template_id, scene, redirect_url, reserved: Reserved::default() }
    }

    /// Sets the `reserved` state.
    #[must_use]
    pub fn with_reserved(mut self, reserved: Reserved) -> Self {
        self.reserved = reserved;
        self
    }

    /// The authorization page URL on WeChat's host ([`DEFAULT_MP_BASE`]).
    pub fn url(&self) -> String {
        self.url_with_base(DEFAULT_MP_BASE)
    }

    /// The authorization page URL on another host (a sandbox, a proxy). `base` is a scheme and
    /// host, with or without a trailing `/`.
    ///
    /// Parameters come in the documented order; `redirect_url` and `reserved` are
    /// percent-encoded as URL components; `#wechat_redirect` is appended literally.
    pub fn url_with_base(&self, base: &str) -> String {
        let base = base.trim_end_matches('/');
        let mut out = String::with_capacity(base.len() + 120 + self.redirect_url.as_str().len() * 3);
        out.push_str(base);
        out.push_str(AUTHORIZE_PATH);
        out.push_str("?action=get_confirm&appid=");
        push_component(&mut out, self.appid.as_str());
        out.push_str("&scene=");
        // Writing to a String cannot fail.
        let _ = write!(out, "{}", self.scene);
        out.push_str("&template_id=");
        push_component(&mut out, self.template_id.as_str());
        out.push_str("&redirect_url=");
        push_component(&mut out, self.redirect_url.as_str());
        out.push_str("&reserved=");
        push_component(&mut out, self.reserved.as_str());
        out.push_str("#wechat_redirect");
        out
    }

    /// Reads an authorization request back from its URL (or a `?query`, or a query that
    /// holds no `?` of its own): what WeChat's (or the sandbox's) authorization page does.
    /// `action` must be `get_confirm`; `reserved` may be absent. The query is the text after
    /// the first `?` ([`Query::parse_url`](query::Query::parse_url)); a bare query, as a
    /// server's handler receives it, goes to [`from_bare_query`](Self::from_bare_query).
    ///
    /// ```
    /// use subscribe_types::AuthorizeRequest;
    /// let url = "https://mp.weixin.qq.com/mp/subscribemsg?action=get_confirm&appid=wxaba38c7f163da69b\
    ///            &scene=1000&template_id=1uDxHNXwYQfBmXOfPJcjAS3FynHArD8aWMEFNRGSbCc\
    ///            &redirect_url=http%3a%2f%2fsupport.qq.com&reserved=test#wechat_redirect";
    /// let request = AuthorizeRequest::from_query(url)?;
    /// assert_eq!(request.redirect_url.as_str(), "http://support.qq.com");
    /// assert_eq!(request.scene.get(), 1000);
    /// # Ok::<(), subscribe_types::QueryError>(())
    /// ```
    ///
    /// # Errors
    /// [`QueryError`] for input over [`MAX_QUERY_LEN`](crate::MAX_QUERY_LEN), bad percent-encoding, a missing or
    /// repeated parameter, an `action` other than `get_confirm`, or an invalid value.
    pub fn from_query(input: &str) -> Result<Self, QueryError> {
        Self::from_params(query::read_url(input, Self::PARAMS)?)
    }

    /// Reads an authorization request from a bare query (the request's query as a server's
    /// handler receives it, without the `?`): a `?` in it is part of a value, as for every
    /// other reader of that query ([`Query::parse_query`](query::Query::parse_query)).
    ///
    /// # Errors
    /// As [`from_query`](Self::from_query).
    pub fn from_bare_query(query: &str) -> Result<Self, QueryError> {
        Self::from_params(query::read_query(query, Self::PARAMS)?)
    }

    const PARAMS: [&'static str; 6] = ["action", "appid", "scene", "template_id", "redirect_url", "reserved"];

    fn from_params(params: [Option<String>; 6]) -> Result<Self, QueryError> {
        let [action, appid, scene, template_id, redirect_url, reserved] = params;
        if required("action", action)? != "get_confirm" {
            return Err(QueryError::UnknownAction);
        }
        Ok(Self {
            appid: AppId::new(required("appid", appid)?)?,
            template_id: TemplateId::new(required("template_id", template_id)?)?,
            scene: required("scene", scene)?.parse()?,
            redirect_url: HttpUrl::checked("redirect_url", required("redirect_url", redirect_url)?)?,
            reserved: Reserved::new(reserved.unwrap_or_default())?,
        })
    }
}

pub(crate) fn required<T>(param: &'static str, value: Option<T>) -> Result<T, QueryError> {
    value.ok_or(QueryError::Missing { param })
}

/// The request a mobile app hands to the WeChat Open SDK (`WXSubscribeMsgReq` on iOS,
/// `SubscribeMessage.Req` on Android), with the SDKs' field names.
///
/// ```
/// use subscribe_types::{MobileSubscribeRequest, Reserved, Scene, TemplateId};
/// let req = MobileSubscribeRequest {
///     scene: Scene::new(1000)?,
///     template_id: TemplateId::new("7YuTL__ilzyZB9DXcDt2mHx-CAS_E7KtsQkhIGVhhRM")?,
///     reserved: Reserved::new("hello")?,
/// };
/// assert_eq!(
///     serde_json::to_string(&req).unwrap(),
///     r#"{"scene":1000,"templateId":"7YuTL__ilzyZB9DXcDt2mHx-CAS_E7KtsQkhIGVhhRM","reserved":"hello"}"#
/// );
/// # Ok::<(), subscribe_types::ValidationError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MobileSubscribeRequest {
    /// `scene`, a number 0..=10000.
    pub scene: Scene,
    /// `templateId` (iOS) or `templateID` (Android, accepted when reading).
    #[serde(rename = "templateId", alias = "templateID")]
    pub template_id: TemplateId,
    /// `reserved`, the state echoed back.
    #[serde(default)]
    pub reserved: Reserved,
}

/// The answer the Open SDK gives the app (`WXSubscribeMsgResp` / `SubscribeMessage.Resp`),
/// which the app forwards to its server.
///
/// ```
/// use subscribe_types::{AuthorizationAnswer, MobileSubscribeResponse};
/// let resp: MobileSubscribeResponse = serde_json::from_str(
///     r#"{"openId":"oyAaTjt-xXvP87pubE4eUOF-ttD4","templateID":"7YuTL__ilzyZB9DXcDt2mHx-CAS_E7KtsQkhIGVhhRM",
///         "scene":1000,"action":"confirm","reserved":"hello"}"#,
/// ).unwrap();
/// let AuthorizationAnswer::Confirmed(c) = resp.into_answer()? else { panic!("confirmed") };
/// assert_eq!(c.openid.as_str(), "oyAaTjt-xXvP87pubE4eUOF-ttD4");
/// # Ok::<(), subscribe_types::QueryError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MobileSubscribeResponse {
    /// `openId`: present only when the user confirmed.
    #[serde(rename = "openId", alias = "openid", default, skip_serializing_if = "Option::is_none")]
    pub open_id: Option<OpenId>,
    /// `templateId` (iOS) or `templateID` (Android).
    #[serde(rename = "templateId", alias = "templateID")]
    pub template_id: TemplateId,
    /// `scene`.
    pub scene: Scene,
    /// `action`: `confirm` or `cancel`.
    pub action: Action,
    /// `reserved`, echoed.
    #[serde(default)]
    pub reserved: Reserved,
}

impl MobileSubscribeResponse {
    /// Reads the JSON an app forwards, in either SDK's spelling (`openId` or `openid`;
    /// `templateId`, `templateID` or `template_id`; `scene` a number or a string of digits);
    /// other fields (`errCode`, `errStr`, …) are ignored. A field read here may appear once, in
    /// one of its spellings. Errors name the field and the rule, never the value.
    ///
    /// ```
    /// use subscribe_types::{MobileSubscribeResponse, QueryError};
    /// let android = r#"{"errCode":0,"openid":"oyAaTjt-xXvP87pubE4eUOF-ttD4",
    ///     "templateID":"7YuTL__ilzyZB9DXcDt2mHx-CAS_E7KtsQkhIGVhhRM","scene":"1000","action":"confirm","reserved":"abc"}"#;
    /// let answer = MobileSubscribeResponse::parse(android)?;
    /// assert_eq!(answer.scene.get(), 1000);
    /// assert_eq!(
    ///     MobileSubscribeResponse::parse(r#"{"action":"confirm","scene":1}"#),
    ///     Err(QueryError::Missing { param: "templateId" })
    /// );
    /// # Ok::<(), QueryError>(())
    /// ```
    ///
    /// # Errors
    /// [`QueryError`]: input over [`MAX_QUERY_LEN`](crate::MAX_QUERY_LEN), not a JSON object
    /// ([`QueryError::NotJson`]), a field read here given twice, in one spelling or two
    /// (`openId` and `openid`): [`QueryError::Repeated`], naming it as iOS spells it, for a
    /// proxy or a log that reads the first would see another answer than the last; a missing
    /// `templateId`, `scene` or `action`, an unknown
    /// `action`, or a value that breaks its rule. A confirmation without `openId` is read (it
    /// fails in [`into_answer`](Self::into_answer)).
    pub fn parse(json: &str) -> Result<Self, QueryError> {
        if json.len() > crate::MAX_QUERY_LEN {
            return Err(QueryError::TooLarge { len: json.len(), max: crate::MAX_QUERY_LEN });
        }
        let not_json = |e: serde_json::Error| QueryError::NotJson { line: e.line(), column: e.column() };
        // An object, not an array (serde would fill the fields from an array's items in order),
        // read key by key so that a repeated field is refused rather than the last one winning.
        let raw: RawMobileAnswer = serde_json::from_str(json).map_err(not_json)?;
        if let Some(param) = raw.repeated {
            return Err(QueryError::Repeated { param });
        }
        let template_id = TemplateId::new(required("templateId", raw.template_id)?)?;
        let scene = match required("scene", raw.scene)? {
            serde_json::Value::Number(n) => {
                let n = n.as_u64().ok_or(ValidationError::NotANumber { field: "scene", len: 0 })?;
                Scene::new(u32::try_from(n).unwrap_or(u32::MAX))?
            }
            serde_json::Value::String(s) => s.parse()?,
            _ => return Err(ValidationError::NotANumber { field: "scene", len: 0 }.into()),
        };
        let action = match required("action", raw.action)?.as_str() {
            "confirm" => Action::Confirm,
            "cancel" => Action::Cancel,
            _ => return Err(QueryError::UnknownAction),
        };
        // On a cancellation the SDK sends no openId; one sent anyway is ignored, as on the web.
        let open_id = match action {
            Action::Confirm => raw.open_id.map(OpenId::new).transpose()?,
            Action::Cancel => None,
        };
        let reserved = Reserved::new(raw.reserved.unwrap_or_default())?;
        Ok(Self { open_id, template_id, scene, action, reserved })
    }

    /// The same answer as the web callback would give.
    ///
    /// # Errors
    /// [`QueryError::ConfirmWithoutOpenId`] for a confirmation that lacks `openId`.
    pub fn into_answer(self) -> Result<AuthorizationAnswer, QueryError> {
        let Self { open_id, template_id, scene, action, reserved } = self;
        Ok(match action {
            Action::Confirm => AuthorizationAnswer::Confirmed(Confirmed {
                openid: open_id.ok_or(QueryError::ConfirmWithoutOpenId)?,
                template_id,
                scene,
                reserved,
            }),
            Action::Cancel => AuthorizationAnswer::Cancelled(Cancelled { template_id, scene, reserved }),
        })
    }
}

/// The fields of a forwarded SDK answer as the SDKs spell them, unchecked (each is checked by
/// [`MobileSubscribeResponse::parse`] with its own rule), and the first field given twice.
#[derive(Default)]
struct RawMobileAnswer {
    open_id: Option<String>,
    template_id: Option<String>,
    scene: Option<serde_json::Value>,
    action: Option<String>,
    reserved: Option<String>,
    /// The first field read here that appeared more than once (in any of its spellings), as
    /// iOS spells it.
    repeated: Option<&'static str>,
}

impl<'de> Deserialize<'de> for RawMobileAnswer {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RawMobileAnswerVisitor)
    }
}

struct RawMobileAnswerVisitor;

/// Reads the next value into `slot` the first time its field appears; a later appearance is
/// read and dropped, and its field named in `repeated` (the first one repeated wins).
fn read_once<'de, A: serde::de::MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    slot: &mut Option<T>,
    seen: &mut bool,
    field: &'static str,
    repeated: &mut Option<&'static str>,
) -> Result<(), A::Error> {
    let value: Option<T> = map.next_value()?;
    if std::mem::replace(seen, true) {
        repeated.get_or_insert(field);
    } else {
        *slot = value;
    }
    Ok(())
}

impl<'de> serde::de::Visitor<'de> for RawMobileAnswerVisitor {
    type Value = RawMobileAnswer;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the Open SDK's answer, a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<RawMobileAnswer, A::Error> {
        let mut raw = RawMobileAnswer::default();
        let mut seen = [false; 5];
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let repeated = &mut raw.repeated;
            match &*key {
                "openId" | "openid" => {
                    read_once(&mut map, &mut raw.open_id, &mut seen[0], "openId", repeated)?;
                }
                "templateId" | "templateID" | "template_id" => {
                    read_once(&mut map, &mut raw.template_id, &mut seen[1], "templateId", repeated)?;
                }
                "scene" => read_once(&mut map, &mut raw.scene, &mut seen[2], "scene", repeated)?,
                "action" => read_once(&mut map, &mut raw.action, &mut seen[3], "action", repeated)?,
                "reserved" => read_once(&mut map, &mut raw.reserved, &mut seen[4], "reserved", repeated)?,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(raw)
    }
}
