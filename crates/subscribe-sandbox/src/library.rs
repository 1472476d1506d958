//! The mini programs' and service accounts' side of the sandbox: a seeded catalogue of public templates, each app's private
//! templates, users' acceptances of them, and the checks of the two send endpoints
//! (mini-program messages and subscribe notifications) with WeChat's errcodes.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Value, json};
use subscribe_types::{ErrCode, KeywordType};

/// A keyword of a public template: its id, name, example and keyword type.
#[derive(Debug)]
pub(crate) struct PublicKeyword {
    pub(crate) kid: u64,
    pub(crate) name: &'static str,
    pub(crate) example: &'static str,
    pub(crate) rule: KeywordType,
}

/// A public template of the catalogue.
#[derive(Debug)]
pub(crate) struct PublicTemplate {
    pub(crate) tid: u64,
    pub(crate) title: &'static str,
    /// 2 one-time, 3 long-term.
    pub(crate) kind: u64,
    pub(crate) category: u64,
    pub(crate) keywords: &'static [PublicKeyword],
}

const fn kw(kid: u64, name: &'static str, example: &'static str, rule: KeywordType) -> PublicKeyword {
    PublicKeyword { kid, name, example, rule }
}

/// The categories: `(id, name)`.
pub(crate) const CATEGORIES: &[(u64, &str)] = &[(616, "商业服务"), (617, "物流服务"), (618, "交通服务")];

/// The values the catalogue's `enum` keywords allow.
pub(crate) const MEMBER_LEVELS: &[&str] = &["普通会员", "黄金会员", "钻石会员"];

/// The public templates, one of each keyword type among them.
pub(crate) const CATALOGUE: &[PublicTemplate] = &[
    PublicTemplate {
        tid: 1001,
        title: "到货提醒",
        kind: 2,
        category: 616,
        keywords: &[
            kw(1, "商品名称", "亚麻衬衫", KeywordType::Thing),
            kw(2, "到货时间", "2019-10-01 15:01", KeywordType::Time),
            kw(3, "商品价格", "¥199.00", KeywordType::Amount),
            kw(4, "温馨提示", "库存有限，先到先得", KeywordType::Thing),
        ],
    },
    PublicTemplate {
        tid: 1002,
        title: "订单发货通知",
        kind: 2,
        category: 617,
        keywords: &[
            kw(1, "订单编号", "DH20191001#A", KeywordType::CharacterString),
            kw(2, "物流状态", "已发货", KeywordType::Phrase),
            kw(3, "快递公司", "顺丰速运", KeywordType::Thing),
            kw(4, "发货日期", "2019年10月1日", KeywordType::Date),
            kw(5, "收件人", "张三", KeywordType::Name),
            kw(6, "联系电话", "+86-0766-66888866", KeywordType::PhoneNumber),
        ],
    },
    PublicTemplate {
        tid: 1003,
        title: "会员到期提醒",
        kind: 3,
        category: 616,
        keywords: &[
            kw(1, "会员等级", "黄金会员", KeywordType::Enum),
            kw(2, "到期日期", "2019-10-01", KeywordType::Date),
            kw(3, "剩余天数", "7", KeywordType::Number),
        ],
    },
    PublicTemplate {
        tid: 1004,
        title: "停车缴费通知",
        kind: 2,
        category: 618,
        keywords: &[
            kw(1, "车牌号", "粤A8Z888", KeywordType::CarNumber),
            kw(2, "缴费金额", "¥12.00", KeywordType::Amount),
            kw(3, "车位编号", "B2-017", KeywordType::CharacterString),
            kw(4, "收费单位", "%", KeywordType::Symbol),
            kw(5, "车场代码", "SZPARK", KeywordType::Letter),
        ],
    },
];

/// The demo app's one-time private template, from 到货提醒 (1001) with keywords 1, 2 and 3:
/// keys `thing1`, `time2`, `amount3`.
pub const DEMO_MP_TEMPLATE: &str = "SandboxMpRestockAlert_0000000000000000000001";
/// The demo app's long-term private template, from 会员到期提醒 (1003): keys `enum1`, `date2`.
pub const DEMO_LONG_TERM_TEMPLATE: &str = "SandboxMpMemberExpiry_0000000000000000000002";

/// Most private templates an app may have (WeChat: 25).
pub(crate) const MAX_PRIVATE: usize = 25;

/// One of an app's templates: its keys and what they allow.
#[derive(Clone, Debug)]
pub(crate) struct PrivateTemplate {
    pub(crate) id: String,
    pub(crate) tid: u64,
    pub(crate) keys: Vec<(String, &'static PublicKeyword)>,
}

impl PrivateTemplate {
    fn new(id: String, tid: u64, kids: &[u64]) -> Option<Self> {
        let public = CATALOGUE.iter().find(|t| t.tid == tid)?;
        let keys = kids
            .iter()
            .map(|kid| {
                let k = public.keywords.iter().find(|k| k.kid == *kid)?;
                Some((format!("{}{}", k.rule.as_str(), k.kid), k))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self { id, tid, keys })
    }

    pub(crate) fn public(&self) -> &'static PublicTemplate {
        CATALOGUE.iter().find(|t| t.tid == self.tid).expect("a private template's tid is in the catalogue")
    }

    pub(crate) fn long_term(&self) -> bool {
        self.public().kind == 3
    }

    /// As `gettemplate` lists it.
    pub(crate) fn to_json(&self) -> Value {
        let public = self.public();
        let lines = |line: &dyn Fn(&str, &PublicKeyword) -> String| -> String {
            self.keys.iter().map(|(key, k)| line(key, k)).collect::<Vec<_>>().join("\n")
        };
        let content = lines(&|key, k| format!("{}:{{{{{key}.DATA}}}}", k.name));
        let example = lines(&|_, k| format!("{}:{}", k.name, k.example));
        let enums: Vec<Value> = self
            .keys
            .iter()
            .filter(|(_, k)| k.rule == KeywordType::Enum)
            .map(|(key, _)| json!({"keywordCode": format!("{key}.DATA"), "enumValueList": MEMBER_LEVELS}))
            .collect();
        let mut t = json!({
            "priTmplId": self.id, "title": public.title, "content": content, "example": example,
            "type": public.kind,
        });
        if !enums.is_empty() {
            t["keywordEnumValueList"] = Value::Array(enums);
        }
        t
    }
}

/// Which send endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendKind {
    MiniProgram,
    Notification,
}

impl SendKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::MiniProgram => "mini_program",
            Self::Notification => "notification",
        }
    }
}

/// A send that passed every check: what lands in the inbox.
pub(crate) struct Accepted {
    pub(crate) openid: String,
    pub(crate) template_id: String,
    pub(crate) title: String,
    pub(crate) data: BTreeMap<String, String>,
    pub(crate) page: Option<String>,
    pub(crate) miniprogram: Option<(String, String)>,
}

/// An error answer: WeChat's code and message.
pub(crate) type Refusal = (ErrCode, String);

fn refuse(code: ErrCode, msg: impl Into<String>) -> Refusal {
    (code, msg.into())
}

fn invalid(field: &str) -> Refusal {
    refuse(ErrCode::ARGUMENT_INVALID, format!("argument invalid! {field} invalid"))
}

/// The mini programs' and service accounts' side of every app: their template library, the users' acceptances and the sends in flight.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    /// Private templates per app (seeded on first use).
    templates: HashMap<String, Vec<PrivateTemplate>>,
    /// Unused one-time acceptances per (appid, openid, template id).
    one_time: HashMap<(String, String, String), u32>,
    /// Long-term subscriptions in force.
    long_term: HashSet<(String, String, String)>,
    /// Sends being processed, per (appid, openid): a second one gets 43108.
    in_flight: HashSet<(String, String)>,
    next_msgid: u64,
    next_template: u64,
}

impl Subscriptions {
    /// An app's private templates, seeded with the two demo templates the first time.
    pub(crate) fn templates(&mut self, appid: &str) -> &mut Vec<PrivateTemplate> {
        self.templates.entry(appid.to_owned()).or_insert_with(|| {
            [(DEMO_MP_TEMPLATE, 1001, &[1, 2, 3][..]), (DEMO_LONG_TERM_TEMPLATE, 1003, &[1, 2][..])]
                .into_iter()
                .filter_map(|(id, tid, kids)| PrivateTemplate::new(id.to_owned(), tid, kids))
                .collect()
        })
    }

    /// `addtemplate`.
    pub(crate) fn add_template(&mut self, appid: &str, body: &Value) -> Result<String, Refusal> {
        let tid = body
            .get("tid")
            .and_then(|t| t.as_u64().or_else(|| t.as_str().and_then(|s| s.parse().ok())))
            .filter(|tid| CATALOGUE.iter().any(|t| t.tid == *tid))
            .ok_or_else(|| refuse(ErrCode::LIBRARY_INVALID_TID, "invalid tid"))?;
        let kids: Vec<u64> = body
            .get("kidList")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<_>>>())
            .filter(|k| (2..=5).contains(&k.len()) && k.iter().enumerate().all(|(i, x)| !k[..i].contains(x)))
            .ok_or_else(|| refuse(ErrCode::LIBRARY_INVALID_KID_LIST, "invalid kidList"))?;
        match body.get("sceneDesc") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if (1..=15).contains(&s.chars().count()) => {}
            Some(_) => return Err(refuse(ErrCode::LIBRARY_INVALID_SCENE_DESC, "invalid sceneDesc")),
        }
        self.next_template += 1;
        let id = format!("SandboxTmpl{:033}", self.next_template);
        let template = PrivateTemplate::new(id.clone(), tid, &kids)
            .ok_or_else(|| refuse(ErrCode::LIBRARY_INVALID_KID_LIST, "invalid kidList"))?;
        let templates = self.templates(appid);
        if templates.len() >= MAX_PRIVATE {
            return Err(refuse(ErrCode::LIBRARY_TEMPLATE_LIMIT, "template count limit reached"));
        }
        templates.push(template);
        Ok(id)
    }

    /// `deltemplate`.
    pub(crate) fn delete_template(&mut self, appid: &str, id: &str) -> Result<(), Refusal> {
        let templates = self.templates(appid);
        let before = templates.len();
        templates.retain(|t| t.id != id);
        if templates.len() == before {
            return Err(refuse(ErrCode::INVALID_TEMPLATE_ID, "invalid template id"));
        }
        Ok(())
    }

    /// A user's answer to a subscription popup: an acceptance of a one-time template allows
    /// one more message; of a long-term one, messages until rejected.
    pub(crate) fn subscribe(
        &mut self,
        appid: &str,
        openid: &str,
        template: &str,
        accept: bool,
    ) -> Result<(), Refusal> {
        let long_term = self
            .templates(appid)
            .iter()
            .find(|t| t.id == template)
            .map(PrivateTemplate::long_term)
            .ok_or_else(|| refuse(ErrCode::INVALID_TEMPLATE_ID, "invalid template_id"))?;
        let key = (appid.to_owned(), openid.to_owned(), template.to_owned());
        match (long_term, accept) {
            (false, true) => *self.one_time.entry(key).or_default() += 1,
            (false, false) => {}
            (true, true) => {
                self.long_term.insert(key);
            }
            (true, false) => {
                self.long_term.remove(&key);
            }
        }
        Ok(())
    }

    /// A subscription turned off in settings: the template's acceptances are gone.
    pub(crate) fn withdraw(&mut self, appid: &str, openid: &str, template: &str) -> Result<(), Refusal> {
        if !self.templates(appid).iter().any(|t| t.id == template) {
            return Err(refuse(ErrCode::INVALID_TEMPLATE_ID, "invalid template_id"));
        }
        let key = (appid.to_owned(), openid.to_owned(), template.to_owned());
        self.long_term.remove(&key);
        self.one_time.remove(&key);
        Ok(())
    }

    /// Unused one-time acceptances, all apps.
    pub(crate) fn unused(&self) -> u64 {
        self.one_time.values().map(|n| u64::from(*n)).sum()
    }

    /// Marks a send to `openid` in flight; `false` when one already is (WeChat's 43108).
    pub(crate) fn begin(&mut self, appid: &str, openid: &str) -> bool {
        self.in_flight.insert((appid.to_owned(), openid.to_owned()))
    }

    /// Ends what [`begin`](Self::begin) started.
    pub(crate) fn end(&mut self, appid: &str, openid: &str) {
        self.in_flight.remove(&(appid.to_owned(), openid.to_owned()));
    }

    /// Checks a send's body as WeChat does and uses up the acceptance it needs.
    pub(crate) fn accept(
        &mut self,
        cfg: &crate::SandboxConfig,
        appid: &str,
        kind: SendKind,
        body: &Value,
    ) -> Result<Accepted, Refusal> {
        let field = |name: &str| body.get(name).and_then(Value::as_str);
        let openid = field("touser").ok_or_else(|| refuse(ErrCode::INVALID_OPENID, "invalid openid"))?;
        if cfg.user(openid).is_none() {
            return Err(refuse(ErrCode::INVALID_OPENID, "invalid openid"));
        }
        let template_id = field("template_id")
            .ok_or_else(|| refuse(ErrCode::INVALID_TEMPLATE_ID, "invalid template_id"))?;
        let template = self
            .templates(appid)
            .iter()
            .find(|t| t.id == template_id)
            .cloned()
            .ok_or_else(|| refuse(ErrCode::INVALID_TEMPLATE_ID, "invalid template_id"))?;
        let data = body.get("data").and_then(Value::as_object).ok_or_else(|| invalid("data"))?;
        let mut values = BTreeMap::new();
        for (key, k) in &template.keys {
            let value = data.get(key).and_then(|v| v.get("value")).and_then(Value::as_str);
            let value = value.ok_or_else(|| invalid(&format!("data.{key}.value")))?;
            let ok = k.rule.check(value).is_ok()
                && (k.rule != KeywordType::Enum || MEMBER_LEVELS.contains(&value));
            if !ok {
                return Err(invalid(&format!("data.{key}.value")));
            }
            values.insert(key.clone(), value.to_owned());
        }
        let mut page = None;
        let mut miniprogram = None;
        match kind {
            SendKind::MiniProgram => {
                if let Some(p) = body.get("page") {
                    let p = p.as_str().filter(|p| !p.is_empty() && !p.contains(char::is_whitespace));
                    page = Some(p.ok_or_else(|| invalid("page"))?.to_owned());
                }
                for (name, allowed) in [
                    ("miniprogram_state", &["developer", "trial", "formal"][..]),
                    ("lang", &["zh_CN", "en_US", "zh_HK", "zh_TW"][..]),
                ] {
                    if let Some(v) = body.get(name) {
                        v.as_str().filter(|v| allowed.contains(v)).ok_or_else(|| invalid(name))?;
                    }
                }
            }
            SendKind::Notification => {
                if let Some(p) = body.get("page") {
                    let p = p.as_str().filter(|p| subscribe_types::HttpUrl::new(*p).is_ok());
                    page = Some(p.ok_or_else(|| invalid("page"))?.to_owned());
                }
                if let Some(mp) = body.get("miniprogram") {
                    let (a, p) =
                        (mp.get("appid").and_then(Value::as_str), mp.get("pagepath").and_then(Value::as_str));
                    let parsed = a.zip(p).and_then(|(a, p)| subscribe_types::MiniProgram::new(a, p).ok());
                    let parsed = parsed.ok_or_else(|| invalid("miniprogram"))?;
                    miniprogram = Some((parsed.appid().as_str().to_owned(), parsed.pagepath().to_owned()));
                }
            }
        }
        let key = (appid.to_owned(), openid.to_owned(), template_id.to_owned());
        if template.long_term() {
            if !self.long_term.contains(&key) {
                return Err(refuse(ErrCode::USER_REFUSED, "user refuse to accept the msg"));
            }
        } else {
            match self.one_time.get_mut(&key) {
                Some(n) if *n > 0 => *n -= 1,
                _ => return Err(refuse(ErrCode::USER_REFUSED, "user refuse to accept the msg")),
            }
        }
        Ok(Accepted {
            openid: openid.to_owned(),
            template_id: template_id.to_owned(),
            title: template.public().title.to_owned(),
            data: values,
            page,
            miniprogram,
        })
    }

    /// The next `msgid`.
    pub(crate) fn msgid(&mut self) -> u64 {
        self.next_msgid += 1;
        1_700_000_000 + self.next_msgid
    }
}

/// `getpubtemplatetitles`'s answer for its query, or the library's error.
pub(crate) fn titles(query: &HashMap<String, String>) -> Result<Value, Refusal> {
    let ids = query
        .get("ids")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| refuse(ErrCode::LIBRARY_IDS_MISSING, "ids missing"))?;
    let ids: Vec<u64> = ids
        .split(',')
        .map(|i| i.trim().parse().ok().filter(|i| CATEGORIES.iter().any(|(c, _)| c == i)))
        .collect::<Option<_>>()
        .ok_or_else(|| refuse(ErrCode::LIBRARY_INVALID_IDS, "invalid ids"))?;
    let start: usize = query
        .get("start")
        .map_or(Some(0), |s| s.parse().ok())
        .ok_or_else(|| refuse(ErrCode::LIBRARY_INVALID_START, "invalid start"))?;
    let limit: usize = query
        .get("limit")
        .and_then(|s| s.parse().ok())
        .filter(|l| (1..=30).contains(l))
        .ok_or_else(|| refuse(ErrCode::LIBRARY_INVALID_LIMIT, "invalid limit"))?;
    let matching: Vec<&PublicTemplate> = CATALOGUE.iter().filter(|t| ids.contains(&t.category)).collect();
    let data: Vec<Value> = matching
        .iter()
        .skip(start)
        .take(limit)
        .map(
            |t| json!({"tid": t.tid, "title": t.title, "type": t.kind, "categoryId": t.category.to_string()}),
        )
        .collect();
    Ok(json!({"errcode": 0, "errmsg": "ok", "count": matching.len(), "data": data}))
}

/// `getpubtemplatekeywords`'s answer.
pub(crate) fn keywords(query: &HashMap<String, String>) -> Result<Value, Refusal> {
    let t = query
        .get("tid")
        .and_then(|t| t.parse::<u64>().ok())
        .and_then(|tid| CATALOGUE.iter().find(|t| t.tid == tid))
        .ok_or_else(|| refuse(ErrCode::LIBRARY_INVALID_TID, "invalid tid"))?;
    let data: Vec<Value> = t
        .keywords
        .iter()
        .map(|k| json!({"kid": k.kid, "name": k.name, "example": k.example, "rule": k.rule.as_str()}))
        .collect();
    Ok(json!({"errcode": 0, "errmsg": "ok", "count": data.len(), "data": data}))
}

/// `getcategory`'s answer.
pub(crate) fn categories() -> Value {
    let data: Vec<Value> = CATEGORIES.iter().map(|(id, name)| json!({"id": id, "name": name})).collect();
    json!({"errcode": 0, "errmsg": "ok", "data": data})
}
