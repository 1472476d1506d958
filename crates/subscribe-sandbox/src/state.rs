//! The sandbox's state: tokens with WeChat's semantics, grants, inboxes, faults, the log.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use subscribe_types::{ErrCode, Scene, SubscribeMessage};

use crate::clock::Now;
use crate::config::SandboxConfig;

/// Fault injection settings; every field is off when absent. "Every Nth" counts send requests,
/// and the send faults strike every send endpoint alike: the 2017 one-time message, mini-program
/// messages and subscribe notifications.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Answer `-1` (system busy) to every Nth send, without processing it.
    pub busy_every: Option<u64>,
    /// Answer HTTP 502 to every Nth send, without processing it.
    pub http_502_every: Option<u64>,
    /// Drop the connection of every Nth send, without processing it.
    pub drop_every: Option<u64>,
    /// Answer every Nth send with malformed JSON, without processing it.
    pub malformed_every: Option<u64>,
    /// Stall every Nth send for `stall_ms`, then process it normally.
    pub stall_every: Option<u64>,
    /// The stall's length in milliseconds.
    pub stall_ms: Option<u64>,
    /// Delay every send by this many milliseconds.
    pub latency_ms: Option<u64>,
    /// Process every Nth send (deliver it, if it is deliverable), then answer HTTP 502: a
    /// gateway that lost WeChat's answer.
    pub delivered_502_every: Option<u64>,
    /// Process every Nth send, then drop the connection without an answer.
    pub delivered_drop_every: Option<u64>,
    /// Process every Nth send, then answer malformed JSON.
    pub delivered_malformed_every: Option<u64>,
    /// Process every Nth send, then stall `stall_ms` before answering: a client that gives up
    /// first leaves a delivery behind.
    pub delivered_stall_every: Option<u64>,
    /// Answer every token request (both endpoints) this way instead of issuing a token.
    pub token_fault: Option<TokenFault>,
    /// With `token_fault`: it lasts this many milliseconds from when the faults were set, then
    /// the token endpoints answer normally again (absent: until the faults change).
    pub token_fault_ms: Option<u64>,
    /// With `token_fault: "stall"`: how long each token request stalls before it is answered
    /// normally (default 3000).
    pub token_stall_ms: Option<u64>,
}

/// How the token endpoints fail (see [`Faults::token_fault`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenFault {
    /// HTTP 502 from a gateway.
    #[serde(rename = "http_502")]
    Http502,
    /// The connection is dropped without an answer.
    Drop,
    /// `{"errcode":-1,"errmsg":"system error"}`.
    Busy,
    /// `45009`: the daily quota of token requests is used up.
    Quota,
    /// A body that is not JSON.
    Malformed,
    /// The request waits `token_stall_ms`, then is answered normally.
    Stall,
}

/// What a fault turns a send into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Injected {
    Busy,
    Http502,
    Drop,
    Malformed,
}

/// What a fault turns a send's answer into, after the send was processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AfterProcessing {
    Http502,
    Drop,
    Malformed,
    Stall,
}

/// A message as it arrived in a user's inbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    /// Sequence number across the sandbox.
    pub seq: u64,
    /// Unix time of delivery, in milliseconds.
    pub at_ms: u64,
    /// The sending app.
    pub appid: String,
    /// The template.
    pub template_id: String,
    /// The scene.
    pub scene: u16,
    /// The title.
    pub title: String,
    /// The body.
    pub content: String,
    /// The body colour.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    /// The link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The mini program, as `appid` and `pagepath`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub miniprogram: Option<(String, String)>,
    /// Which send: `one_time` (the 2017 message), `mini_program` or `notification`.
    #[serde(default = "one_time")]
    pub kind: String,
    /// The successors' keys and values (the one-time message has `title` and `content`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// The mini program page (`mini_program`) or web page (`notification`) opened on tap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    /// A notification's `msgid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msgid: Option<u64>,
}

fn one_time() -> String {
    "one_time".to_owned()
}

/// Counters since start or the last reset. More may be added: read the fields, don't build it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Stats {
    /// Requests to the three send endpoints (the one-time message, the mini-program message and
    /// the subscribe notification).
    pub send_requests: u64,
    /// Messages delivered.
    pub deliveries: u64,
    /// Requests to `/cgi-bin/token`.
    pub classic_token_requests: u64,
    /// Requests to `/cgi-bin/stable_token`.
    pub stable_token_requests: u64,
    /// Tokens issued (both endpoints).
    pub tokens_issued: u64,
    /// Grants recorded (confirmations that added one).
    pub grants_recorded: u64,
    /// Sends delivered whose answer a `delivered_*` fault then lost, by how it was lost: the
    /// deliveries the sender cannot know of.
    #[serde(default)]
    pub lost_after_delivery: LostAnswers,
    /// API requests answered 40001, 40014 or 42001: a token the sender must refresh, then
    /// replay the request once.
    #[serde(default)]
    pub token_rejections: u64,
}

/// Answers lost after a delivery, by fault (see [`Stats::lost_after_delivery`]). More kinds
/// may be added.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct LostAnswers {
    /// Answered HTTP 502 (`delivered_502_every`).
    pub http_502: u64,
    /// The connection dropped without an answer (`delivered_drop_every`).
    pub dropped: u64,
    /// Answered malformed JSON (`delivered_malformed_every`).
    pub malformed: u64,
    /// Answered after `stall_ms` (`delivered_stall_every`).
    pub stalled: u64,
}

impl LostAnswers {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.http_502 + self.dropped + self.malformed + self.stalled
    }

    pub(crate) fn count(&mut self, how: AfterProcessing) {
        let n = match how {
            AfterProcessing::Http502 => &mut self.http_502,
            AfterProcessing::Drop => &mut self.dropped,
            AfterProcessing::Malformed => &mut self.malformed,
            AfterProcessing::Stall => &mut self.stalled,
        };
        *n += 1;
    }
}

/// One entry of the request log (tokens and secrets masked).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Unix time in milliseconds.
    pub at_ms: u64,
    /// Method.
    pub method: String,
    /// Path and query, with `access_token` and `secret` masked.
    pub uri: String,
    /// The request's headers as `(name, value)`, names in lower case, in the order received;
    /// the values of credentials, cookies and names with `token`, `secret`, `key`, `auth`,
    /// `session` or `signature` in them are `[redacted]`.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The errcode answered, when there was one.
    pub errcode: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Classic,
    Stable,
}

#[derive(Clone, Debug)]
struct TokenRecord {
    appid: String,
    kind: Kind,
    expires_at: Instant,
    /// After this instant the token answers 40001 ("not latest"): superseded or revoked.
    invalid_after: Option<Instant>,
}

#[derive(Clone, Debug, Default)]
struct Quota {
    day: u64,
    used: u32,
    last: Option<Instant>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct GrantKey {
    appid: String,
    openid: String,
    template_id: String,
    scene: u16,
}

/// Everything mutable, behind one mutex.
#[derive(Default)]
pub(crate) struct Inner {
    tokens: HashMap<String, TokenRecord>,
    classic_current: HashMap<String, String>,
    stable_current: HashMap<String, String>,
    classic_quota: HashMap<String, Quota>,
    force_quota: HashMap<String, Quota>,
    /// `true`: the grant is unused.
    grants: HashMap<GrantKey, bool>,
    inbox: HashMap<String, Vec<Delivered>>,
    log: VecDeque<LogEntry>,
    pub(crate) faults: Faults,
    /// When `faults` were last set (a timed token fault counts from here).
    pub(crate) faults_set: Option<Instant>,
    pub(crate) stats: Stats,
    /// Mini-program messages, subscribe notifications and the template library.
    pub(crate) family: crate::library::Family,
}

static SEQ: AtomicU64 = AtomicU64::new(1);

fn unix_ms(wall: SystemTime) -> u64 {
    u64::try_from(wall.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(u64::MAX)
}

/// WeChat's days are Beijing days.
fn beijing_day(wall: SystemTime) -> u64 {
    (unix_ms(wall) / 1000 + 8 * 3600) / 86_400
}

fn new_token(appid: &str) -> String {
    let mut r = [0u8; 16];
    let _ = getrandom::fill(&mut r);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tail = &appid[appid.len().saturating_sub(4)..];
    format!("SBX_{tail}_{seq:08}_{}", hex::encode(r))
}

/// A token request's answer: the token and its remaining lifetime, or WeChat's error.
pub(crate) type TokenAnswer = Result<(String, u64), (ErrCode, &'static str)>;

impl Inner {
    pub(crate) fn log(
        &mut self,
        cap: usize,
        seen: crate::server::Seen,
        errcode: Option<i64>,
        wall: SystemTime,
    ) {
        if self.log.len() >= cap.max(1) {
            self.log.pop_front();
        }
        let crate::server::Seen { method, uri, headers } = seen;
        self.log.push_back(LogEntry { at_ms: unix_ms(wall), method, uri, headers, errcode });
    }

    pub(crate) fn log_entries(&self) -> Vec<LogEntry> {
        self.log.iter().cloned().collect()
    }

    fn issue(&mut self, cfg: &SandboxConfig, appid: &str, kind: Kind, now: Instant) -> (String, u64) {
        self.prune_tokens(cfg, now);
        let token = new_token(appid);
        self.tokens.insert(
            token.clone(),
            TokenRecord {
                appid: appid.into(),
                kind,
                expires_at: now + cfg.token_lifetime,
                invalid_after: None,
            },
        );
        self.stats.tokens_issued += 1;
        (token, cfg.token_lifetime.as_secs().max(1))
    }

    /// `GET /cgi-bin/token`: a new token each time; the previous one keeps working for the
    /// grace period only.
    pub(crate) fn classic_token(&mut self, cfg: &SandboxConfig, appid: &str, now: Now) -> TokenAnswer {
        let day = beijing_day(now.wall);
        let now = now.mono;
        let q = self.classic_quota.entry(appid.into()).or_default();
        if q.day != day {
            *q = Quota { day, ..Quota::default() };
        }
        if q.used >= cfg.classic_daily_quota {
            return Err((ErrCode::DAILY_QUOTA_EXCEEDED, "reach max api daily quota limit"));
        }
        q.used += 1;
        if let Some(prev) = self.classic_current.get(appid).cloned()
            && let Some(rec) = self.tokens.get_mut(&prev)
        {
            let until = now + cfg.classic_grace;
            rec.invalid_after = Some(rec.invalid_after.map_or(until, |t| t.min(until)));
        }
        let (token, secs) = self.issue(cfg, appid, Kind::Classic, now);
        self.classic_current.insert(appid.into(), token.clone());
        Ok((token, secs))
    }

    /// `POST /cgi-bin/stable_token`: the current token while it is not close to expiry; a
    /// forced refresh ends it (within the daily and spacing limits).
    pub(crate) fn stable_token(
        &mut self,
        cfg: &SandboxConfig,
        appid: &str,
        force: bool,
        now: Now,
    ) -> TokenAnswer {
        let day = beijing_day(now.wall);
        let now = now.mono;
        let current = self.stable_current.get(appid).cloned().and_then(|t| {
            let rec = self.tokens.get(&t)?;
            let live = rec.invalid_after.is_none_or(|i| now < i) && now < rec.expires_at;
            live.then(|| (t, rec.expires_at - now))
        });
        if force {
            let q = self.force_quota.entry(appid.into()).or_default();
            if q.day != day {
                *q = Quota { day, used: 0, last: q.last };
            }
            let spaced = q.last.is_none_or(|l| now.duration_since(l) >= cfg.force_refresh_spacing);
            if !spaced {
                // "否则不会刷新": too soon, nothing is refreshed.
                if let Some((t, left)) = current {
                    return Ok((t, left.as_secs().max(1)));
                }
            } else if q.used >= cfg.force_refresh_daily_quota {
                return Err((ErrCode::DAILY_QUOTA_EXCEEDED, "reach max api daily quota limit"));
            } else {
                q.used += 1;
                q.last = Some(now);
                if let Some((t, _)) = &current
                    && let Some(rec) = self.tokens.get_mut(t)
                {
                    rec.invalid_after = Some(now);
                }
                let (token, secs) = self.issue(cfg, appid, Kind::Stable, now);
                self.stable_current.insert(appid.into(), token.clone());
                return Ok((token, secs));
            }
        }
        let window = cfg.stable_rotation;
        if let Some((t, left)) = current
            && left > window
        {
            return Ok((t, left.as_secs().max(1)));
        }
        // The old stable token (if any) stays valid until its own expiry: an overlap.
        let (token, secs) = self.issue(cfg, appid, Kind::Stable, now);
        self.stable_current.insert(appid.into(), token.clone());
        Ok((token, secs))
    }

    /// Checks an `access_token` for `appid`-independent API use; returns the token's app.
    pub(crate) fn check_token(
        &self,
        token: Option<&str>,
        now: Instant,
    ) -> Result<String, (ErrCode, &'static str)> {
        let token =
            token.filter(|t| !t.is_empty()).ok_or((ErrCode::ACCESS_TOKEN_MISSING, "access_token missing"))?;
        let rec = self.tokens.get(token).ok_or((ErrCode::INVALID_ACCESS_TOKEN, "invalid access_token"))?;
        if rec.invalid_after.is_some_and(|i| now >= i) {
            return Err((
                ErrCode::INVALID_CREDENTIAL,
                "invalid credential, access_token is invalid or not latest",
            ));
        }
        if now >= rec.expires_at {
            return Err((ErrCode::ACCESS_TOKEN_EXPIRED, "access_token expired"));
        }
        Ok(rec.appid.clone())
    }

    /// [`check_token`](Self::check_token) for an API request, counting in
    /// [`Stats::token_rejections`] the answers a sender must refresh and replay on.
    pub(crate) fn use_token(
        &mut self,
        token: Option<&str>,
        now: Instant,
    ) -> Result<String, (ErrCode, &'static str)> {
        let checked = self.check_token(token, now);
        if let Err((code, _)) = &checked
            && [ErrCode::INVALID_CREDENTIAL, ErrCode::INVALID_ACCESS_TOKEN, ErrCode::ACCESS_TOKEN_EXPIRED]
                .contains(code)
        {
            self.stats.token_rejections += 1;
        }
        checked
    }

    /// Forgets tokens that stopped working more than a token lifetime ago (they answer 40014,
    /// "invalid `access_token`", from then on), so the map holds the tokens of the last few
    /// hours however long the sandbox runs. Until then a dead token still answers 40001 or
    /// 42001, which is what a client's refresh logic reacts to.
    fn prune_tokens(&mut self, cfg: &SandboxConfig, now: Instant) {
        let Some(cutoff) = now.checked_sub(cfg.token_lifetime) else { return };
        self.tokens.retain(|_, rec| {
            let died = rec.invalid_after.map_or(rec.expires_at, |i| i.min(rec.expires_at));
            died > cutoff
        });
    }

    /// Revokes every token: after `grace` they answer 40001. New requests get new tokens.
    pub(crate) fn revoke_tokens(&mut self, now: Instant, grace: Duration) {
        for rec in self.tokens.values_mut() {
            let until = now + grace;
            rec.invalid_after = Some(rec.invalid_after.map_or(until, |t| t.min(until)));
        }
        self.stable_current.clear();
        self.classic_current.clear();
    }

    /// Expires every token now: they answer 42001.
    pub(crate) fn expire_tokens(&mut self, now: Instant) {
        for rec in self.tokens.values_mut() {
            rec.expires_at = rec.expires_at.min(now);
        }
        self.stable_current.clear();
        self.classic_current.clear();
    }

    /// How many live tokens each endpoint has issued (for the state page).
    pub(crate) fn live_tokens(&self, now: Instant) -> (usize, usize) {
        let live = |k: Kind| {
            self.tokens
                .values()
                .filter(|r| r.kind == k && now < r.expires_at && r.invalid_after.is_none_or(|i| now < i))
                .count()
        };
        (live(Kind::Classic), live(Kind::Stable))
    }

    /// Records a confirmation. Repeated confirmations of an unused grant do not add up; a
    /// confirmation after the grant was used makes it usable again. Returns whether it added one.
    pub(crate) fn grant(&mut self, appid: &str, openid: &str, template_id: &str, scene: Scene) -> bool {
        let key = GrantKey {
            appid: appid.into(),
            openid: openid.into(),
            template_id: template_id.into(),
            scene: scene.get(),
        };
        let unused = self.grants.entry(key).or_insert(false);
        let added = !*unused;
        *unused = true;
        if added {
            self.stats.grants_recorded += 1;
        }
        added
    }

    /// Unused grants.
    pub(crate) fn unused_grants(&self) -> usize {
        self.grants.values().filter(|u| **u).count()
    }

    /// Which fault applies to send number `n`, if any.
    pub(crate) fn fault_for(&self, n: u64) -> Option<Injected> {
        let every = |e| strikes(e, n);
        let f = &self.faults;
        if every(f.drop_every) {
            Some(Injected::Drop)
        } else if every(f.http_502_every) {
            Some(Injected::Http502)
        } else if every(f.busy_every) {
            Some(Injected::Busy)
        } else if every(f.malformed_every) {
            Some(Injected::Malformed)
        } else {
            None
        }
    }

    /// The token fault in force at `now`, if any.
    pub(crate) fn token_fault(&self, now: Instant) -> Option<TokenFault> {
        let fault = self.faults.token_fault?;
        let lasts = self.faults.token_fault_ms.map(Duration::from_millis);
        match (lasts, self.faults_set) {
            (Some(d), Some(set)) if now.saturating_duration_since(set) >= d => None,
            _ => Some(fault),
        }
    }

    /// Which fault strikes the answer of send number `n` after it was processed, if any.
    pub(crate) fn after_fault_for(&self, n: u64) -> Option<AfterProcessing> {
        let every = |e| strikes(e, n);
        let f = &self.faults;
        if every(f.delivered_drop_every) {
            Some(AfterProcessing::Drop)
        } else if every(f.delivered_502_every) {
            Some(AfterProcessing::Http502)
        } else if every(f.delivered_malformed_every) {
            Some(AfterProcessing::Malformed)
        } else if every(f.delivered_stall_every) {
            Some(AfterProcessing::Stall)
        } else {
            None
        }
    }

    /// The stall and latency for send number `n`.
    pub(crate) fn delay_for(&self, n: u64) -> Duration {
        let f = &self.faults;
        let mut d = Duration::from_millis(f.latency_ms.unwrap_or(0));
        if strikes(f.stall_every, n) {
            d += Duration::from_millis(f.stall_ms.unwrap_or(20_000));
        }
        d
    }

    /// Consumes the grant and delivers, or says why not.
    pub(crate) fn deliver(
        &mut self,
        cfg: &SandboxConfig,
        appid: &str,
        msg: &SubscribeMessage,
        wall: SystemTime,
    ) -> Result<(), (ErrCode, &'static str)> {
        let app = cfg.app(appid).ok_or((ErrCode::INVALID_APPID, "invalid appid"))?;
        if !app.templates.iter().any(|t| t.id == *msg.template_id()) {
            return Err((ErrCode::INVALID_TEMPLATE_ID, "invalid template_id"));
        }
        if cfg.user(msg.touser().as_str()).is_none() {
            return Err((ErrCode::INVALID_OPENID, "invalid openid"));
        }
        let key = GrantKey {
            appid: appid.into(),
            openid: msg.touser().as_str().into(),
            template_id: msg.template_id().as_str().into(),
            scene: msg.scene().get(),
        };
        match self.grants.get_mut(&key) {
            Some(unused) if *unused => *unused = false,
            _ => return Err((ErrCode::USER_REFUSED, "user refuse to accept the msg")),
        }
        self.stats.deliveries += 1;
        let delivered = Delivered {
            seq: SEQ.fetch_add(1, Ordering::Relaxed),
            at_ms: unix_ms(wall),
            appid: appid.into(),
            template_id: msg.template_id().as_str().into(),
            scene: msg.scene().get(),
            title: msg.title().as_str().into(),
            content: msg.content().as_str().into(),
            color: msg.color().map(|c| c.as_str().into()),
            url: msg.url().map(|u| u.as_str().into()),
            miniprogram: msg.miniprogram().map(|m| (m.appid().as_str().into(), m.pagepath().into())),
            kind: one_time(),
            data: BTreeMap::new(),
            page: None,
            msgid: None,
        };
        self.inbox.entry(key.openid).or_default().push(delivered);
        Ok(())
    }

    /// Delivers a successor's message that passed its checks; `msgid` for a notification.
    pub(crate) fn deliver_family(
        &mut self,
        appid: &str,
        kind: crate::library::SendKind,
        accepted: crate::library::Accepted,
        wall: SystemTime,
    ) -> Option<u64> {
        let msgid = (kind == crate::library::SendKind::Notification).then(|| self.family.msgid());
        self.stats.deliveries += 1;
        let delivered = Delivered {
            seq: SEQ.fetch_add(1, Ordering::Relaxed),
            at_ms: unix_ms(wall),
            appid: appid.into(),
            template_id: accepted.template_id,
            scene: 0,
            title: accepted.title,
            content: String::new(),
            color: None,
            url: None,
            miniprogram: accepted.miniprogram,
            kind: kind.as_str().to_owned(),
            data: accepted.data,
            page: accepted.page,
            msgid,
        };
        self.inbox.entry(accepted.openid).or_default().push(delivered);
        msgid
    }

    pub(crate) fn inbox(&self, openid: &str) -> Vec<Delivered> {
        self.inbox.get(openid).cloned().unwrap_or_default()
    }

    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Whether an "every Nth send" fault set to `every` strikes send number `n`.
fn strikes(every: Option<u64>, n: u64) -> bool {
    every.is_some_and(|e| e > 0 && n.is_multiple_of(e))
}

/// A fresh `rid` for an errmsg, like WeChat's.
pub(crate) fn rid() -> String {
    let mut r = [0u8; 6];
    let _ = getrandom::fill(&mut r);
    hex::encode(r)
}
