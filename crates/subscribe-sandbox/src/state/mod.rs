//! The sandbox's state: everything mutable behind one mutex ([`Inner`]), its counters and its
//! request log. Tokens, grants and inboxes, and faults each have a module of their own.

mod faults;
mod grants;
mod tokens;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use self::grants::GrantKey;
use self::tokens::{Quota, TokenRecord};

pub(crate) use self::faults::{AfterProcessing, Injected};
pub use self::faults::{Faults, TokenFault};
pub use self::grants::Delivered;

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
    pub(crate) subscriptions: crate::library::Subscriptions,
}

static SEQ: AtomicU64 = AtomicU64::new(1);

fn unix_ms(wall: SystemTime) -> u64 {
    u64::try_from(wall.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(u64::MAX)
}

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

    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }
}

/// A fresh `rid` for an errmsg, like WeChat's.
pub(crate) fn rid() -> String {
    let mut r = [0u8; 6];
    let _ = getrandom::fill(&mut r);
    hex::encode(r)
}
