//! Fault injection: what the control API sets ([`Faults`]), and which fault strikes a send or
//! a token request.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Inner;

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

impl Inner {
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
}

/// Whether an "every Nth send" fault set to `every` strikes send number `n`.
fn strikes(every: Option<u64>, n: u64) -> bool {
    every.is_some_and(|e| e > 0 && n.is_multiple_of(e))
}
