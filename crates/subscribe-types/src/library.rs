//! The template library (`/wxaapi/newtmpl/*`): the public templates by category, their
//! keywords, and the account's own templates chosen from them. Requests are checked before
//! they are sent; answers are read tolerantly (numbers that come as strings included).
//!
//! Facts: `../shared/successors.md` §4, from WeChat's documentation. The shape of
//! `keywordEnumValueList`'s items (`keywordCode` with or without `.DATA`) is read both ways:
//! the sources disagree.

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::ValidationError;
use crate::ids::TemplateId;

/// Reads a number sent as a JSON number or as a string of digits.
pub(crate) fn number<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        N(u64),
        S(String),
    }
    match Num::deserialize(d)? {
        Num::N(n) => Ok(n),
        Num::S(s) => s.trim().parse().map_err(serde::de::Error::custom),
    }
}

/// A category of public templates (`getcategory`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Category {
    /// Its id, for [`TitlesQuery`].
    #[serde(deserialize_with = "number")]
    pub id: u64,
    /// Its name.
    pub name: String,
}

/// Whether a template's messages are one per acceptance or may be sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TemplateKind {
    /// `2`: one message per acceptance (一次性订阅).
    OneTime,
    /// `3`: long-term (长期订阅): an acceptance is not used up by a message.
    LongTerm,
    /// Another number.
    Other(u64),
}

impl TemplateKind {
    /// The kind of WeChat's number.
    pub fn from_number(n: u64) -> Self {
        match n {
            2 => Self::OneTime,
            3 => Self::LongTerm,
            n => Self::Other(n),
        }
    }

    /// Whether a send uses up the user's acceptance.
    pub fn is_consumed_by_send(self) -> bool {
        !matches!(self, Self::LongTerm)
    }
}

impl<'de> Deserialize<'de> for TemplateKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        number(d).map(Self::from_number)
    }
}

impl Serialize for TemplateKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(match self {
            Self::OneTime => 2,
            Self::LongTerm => 3,
            Self::Other(n) => *n,
        })
    }
}

/// A public template's title (`getpubtemplatetitles`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicTemplate {
    /// Its id, for [`AddTemplate`].
    #[serde(deserialize_with = "number")]
    pub tid: u64,
    /// Its title.
    pub title: String,
    /// One-time or long-term.
    #[serde(rename = "type")]
    pub kind: TemplateKind,
    /// Its category.
    #[serde(deserialize_with = "number")]
    pub category_id: u64,
}

/// A page of public templates: `count` in all, `data` on this page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicTemplates {
    /// How many templates the query matches in all.
    #[serde(deserialize_with = "number")]
    pub count: u64,
    /// This page.
    #[serde(default)]
    pub data: Vec<PublicTemplate>,
}

/// A keyword of a public template (`getpubtemplatekeywords`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keyword {
    /// Its id, for [`AddTemplate`]'s `kidList`.
    #[serde(deserialize_with = "number")]
    pub kid: u64,
    /// Its name (`商品名称`).
    pub name: String,
    /// An example value.
    #[serde(default)]
    pub example: String,
    /// Its keyword type's name (`thing`).
    pub rule: String,
}

impl Keyword {
    /// Its keyword type, when WeChat's name is one this crate knows.
    pub fn keyword_type(&self) -> Option<crate::KeywordType> {
        crate::KeywordType::from_name(&self.rule)
    }
}

/// Values a template allows for one `enum` key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnumValues {
    /// The key (`enum1`, sometimes written `enum1.DATA`).
    pub keyword_code: String,
    /// The allowed values.
    #[serde(default)]
    pub enum_value_list: Vec<String>,
}

/// One of the account's templates (`gettemplate`): what a message's data is checked against
/// ([`MessageData::check_against`](crate::MessageData::check_against)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Template {
    /// Its id: a message's `template_id`.
    pub pri_tmpl_id: TemplateId,
    /// Its title.
    #[serde(default)]
    pub title: String,
    /// Its text with the keys as `{{thing1.DATA}}`.
    #[serde(default)]
    pub content: String,
    /// An example message.
    #[serde(default)]
    pub example: String,
    /// One-time or long-term.
    #[serde(rename = "type")]
    pub kind: TemplateKind,
    /// The values of its `enum` keys.
    #[serde(default)]
    pub keyword_enum_value_list: Vec<EnumValues>,
}

impl Template {
    /// The keys its content names, in order (`{{thing1.DATA}}` → `thing1`).
    pub fn keys(&self) -> Vec<&str> {
        let mut keys = Vec::new();
        let mut rest = self.content.as_str();
        while let Some(start) = rest.find("{{") {
            rest = &rest[start + 2..];
            let Some(end) = rest.find("}}") else { break };
            let inner = rest[..end].trim();
            let key = inner.strip_suffix(".DATA").unwrap_or(inner);
            if !key.is_empty() && !keys.contains(&key) {
                keys.push(key);
            }
            rest = &rest[end + 2..];
        }
        keys
    }

    /// The values it allows for `key`, when it lists some.
    pub fn enum_values(&self, key: &str) -> Option<&[String]> {
        self.keyword_enum_value_list
            .iter()
            .find(|e| e.keyword_code.strip_suffix(".DATA").unwrap_or(&e.keyword_code) == key)
            .map(|e| &e.enum_value_list[..])
    }
}

/// The account's templates (`gettemplate`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Templates {
    /// The templates.
    #[serde(default)]
    pub data: Vec<Template>,
}

/// The categories (`getcategory`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Categories {
    /// The categories.
    #[serde(default)]
    pub data: Vec<Category>,
}

/// A public template's keywords (`getpubtemplatekeywords`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keywords {
    /// The keywords.
    #[serde(default)]
    pub data: Vec<Keyword>,
}

/// The query of `getpubtemplatetitles`: categories, and a page of at most 30.
///
/// ```
/// use subscribe_types::TitlesQuery;
/// let q = TitlesQuery::new([616, 617], 0, 30)?;
/// assert_eq!(q.query(), "ids=616%2C617&start=0&limit=30");
/// assert_eq!(TitlesQuery::new([616], 0, 31).unwrap_err().field(), "limit");
/// # Ok::<(), subscribe_types::ValidationError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TitlesQuery {
    ids: Vec<u64>,
    start: u64,
    limit: u8,
}

impl TitlesQuery {
    /// The largest page WeChat serves.
    pub const MAX_LIMIT: u8 = 30;

    /// Checks the query: at least one category, `limit` in `1..=30`.
    ///
    /// # Errors
    /// [`ValidationError`] naming `ids` or `limit`.
    pub fn new(ids: impl IntoIterator<Item = u64>, start: u64, limit: u32) -> Result<Self, ValidationError> {
        let ids: Vec<u64> = ids.into_iter().collect();
        if ids.is_empty() {
            return Err(ValidationError::Empty { field: "ids" });
        }
        let limit = u8::try_from(limit).ok().filter(|l| (1..=Self::MAX_LIMIT).contains(l)).ok_or(
            ValidationError::OutOfRange {
                field: "limit",
                min: 1,
                max: i64::from(Self::MAX_LIMIT),
                actual: i64::from(limit),
            },
        )?;
        Ok(Self { ids, start, limit })
    }

    /// The query string (`ids=616%2C617&start=0&limit=30`).
    pub fn query(&self) -> String {
        let ids: Vec<String> = self.ids.iter().map(u64::to_string).collect();
        format!("ids={}&start={}&limit={}", ids.join("%2C"), self.start, self.limit)
    }
}

/// The body of `addtemplate`: a public template and 2 to 5 of its keywords, with an optional
/// scene description of at most 15 characters.
///
/// ```
/// use subscribe_types::AddTemplate;
/// let add = AddTemplate::new(99, [3, 4, 1], Some("到货提醒"))?;
/// assert_eq!(serde_json::to_string(&add).unwrap(), r#"{"tid":"99","kidList":[3,4,1],"sceneDesc":"到货提醒"}"#);
/// assert_eq!(AddTemplate::new(99, [3], None).unwrap_err().field(), "kidList");
/// # Ok::<(), subscribe_types::ValidationError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddTemplate {
    tid: String,
    kid_list: Vec<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scene_desc: Option<String>,
}

impl AddTemplate {
    /// Fewest keywords a template takes.
    pub const MIN_KEYWORDS: usize = 2;
    /// Most keywords a template takes.
    pub const MAX_KEYWORDS: usize = 5;
    /// Longest scene description, in characters.
    pub const MAX_SCENE_DESC: usize = 15;

    /// Checks the request.
    ///
    /// # Errors
    /// [`ValidationError`] naming `kidList` (fewer than 2 or more than 5, or one twice) or
    /// `sceneDesc` (empty or longer than 15 characters).
    pub fn new(
        tid: u64,
        kids: impl IntoIterator<Item = u64>,
        scene_desc: Option<&str>,
    ) -> Result<Self, ValidationError> {
        let kid_list: Vec<u64> = kids.into_iter().collect();
        if kid_list.len() < Self::MIN_KEYWORDS || kid_list.len() > Self::MAX_KEYWORDS {
            return Err(ValidationError::OutOfRange {
                field: "kidList",
                min: 2,
                max: 5,
                actual: i64::try_from(kid_list.len()).unwrap_or(i64::MAX),
            });
        }
        if kid_list.iter().enumerate().any(|(i, k)| kid_list[..i].contains(k)) {
            return Err(ValidationError::InvalidFormat {
                field: "kidList",
                expected: "distinct keyword ids",
            });
        }
        if let Some(desc) = scene_desc {
            let chars = desc.chars().count();
            if chars == 0 {
                return Err(ValidationError::Empty { field: "sceneDesc" });
            }
            if chars > Self::MAX_SCENE_DESC {
                return Err(ValidationError::TooLong {
                    field: "sceneDesc",
                    max: Self::MAX_SCENE_DESC,
                    actual: chars,
                    unit: "characters",
                });
            }
        }
        Ok(Self { tid: tid.to_string(), kid_list, scene_desc: scene_desc.map(str::to_owned) })
    }
}

/// The answer of `addtemplate`: the new template's id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddedTemplate {
    /// The template id messages use.
    pub pri_tmpl_id: TemplateId,
}

/// The body of `deltemplate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteTemplate {
    /// The template to delete.
    pub pri_tmpl_id: TemplateId,
}

/// `getcategory`: the categories of the account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GetCategories;

/// `getpubtemplatekeywords`: the keywords of public template `tid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeywordsQuery {
    /// The public template.
    pub tid: u64,
}

/// `gettemplate`: the account's private templates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GetTemplates;

/// A GET endpoint of the library: no body, its answer type.
macro_rules! get_endpoint {
    ($ty:ty, $spec:ident, $response:ty, |$self_:ident| $query:expr) => {
        impl crate::Endpoint for $ty {
            const SPEC: crate::EndpointSpec = crate::endpoint::$spec;
            type Body = ();
            type Response = $response;
            fn body(&self) -> &() {
                &()
            }
            fn query(&$self_) -> Option<String> {
                $query
            }
        }
    };
}
get_endpoint!(GetCategories, GET_CATEGORY, Categories, |self| None);
get_endpoint!(GetTemplates, GET_TEMPLATE, Templates, |self| None);
get_endpoint!(TitlesQuery, GET_PUB_TEMPLATE_TITLES, PublicTemplates, |self| Some(self.query()));
get_endpoint!(KeywordsQuery, GET_PUB_TEMPLATE_KEYWORDS, Keywords, |self| Some(format!("tid={}", self.tid)));

impl crate::Endpoint for AddTemplate {
    const SPEC: crate::EndpointSpec = crate::endpoint::ADD_TEMPLATE;
    type Body = Self;
    type Response = AddedTemplate;
    fn body(&self) -> &Self {
        self
    }
}

impl crate::Endpoint for DeleteTemplate {
    const SPEC: crate::EndpointSpec = crate::endpoint::DEL_TEMPLATE;
    type Body = Self;
    type Response = crate::Ack;
    fn body(&self) -> &Self {
        self
    }
}
