//! [`RetryPolicy`]: which failures are replayed, how often, how long apart.

use std::time::Duration;

use subscribe_types::{ErrCode, ErrorClass};

/// What the client replays on its own. Only what certainly did not take effect is replayed by
/// default, because `message/template/subscribe` is not idempotent:
///
/// | failure | default |
/// |---|---|
/// | the request never left (connect, DNS, TLS) | replayed up to 2 times, with backoff |
/// | token rejected (40001/40014/42001) | refresh, replay once (always) |
/// | `-1` system busy | replayed up to 2 times, exponential backoff with jitter |
/// | timeout or reset after sending | **not** replayed: `Error::OutcomeUnknown` |
/// | HTTP 5xx, or a 200 that is not WeChat's answer | never replayed, whatever the policy: `Error::OutcomeUnknown` |
///
/// ```
/// use std::time::Duration;
/// use subscribe_client::RetryPolicy;
/// let policy = RetryPolicy::default().busy_retries(4).base_delay(Duration::from_millis(100));
/// # let _ = policy;
/// let none = RetryPolicy::none(); // token replays still happen: they cannot deliver twice
/// # let _ = none;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub(crate) connect_retries: u32,
    pub(crate) busy_retries: u32,
    pub(crate) unknown_outcome_retries: u32,
    pub(crate) base_delay: Duration,
    pub(crate) max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            connect_retries: 2,
            busy_retries: 2,
            unknown_outcome_retries: 0,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// No replays except the single token-refresh replay.
    pub fn none() -> Self {
        Self { connect_retries: 0, busy_retries: 0, ..Self::default() }
    }

    /// Replays of requests that never left (default 2).
    #[must_use]
    pub fn connect_retries(mut self, n: u32) -> Self {
        self.connect_retries = n;
        self
    }

    /// Replays after `-1` system busy (default 2).
    #[must_use]
    pub fn busy_retries(mut self, n: u32) -> Self {
        self.busy_retries = n;
        self
    }

    /// Replays after a timeout or reset that happened after sending (default 0). Each one
    /// risks a second delivery; a later 43101 is then reported as "probably delivered". A 5xx
    /// or an unreadable answer is never replayed, even with replays left: a gateway that
    /// answered it may have lost WeChat's answer to a delivery.
    #[must_use]
    pub fn unknown_outcome_retries(mut self, n: u32) -> Self {
        self.unknown_outcome_retries = n;
        self
    }

    /// The first backoff (default 200 ms); each next one doubles, up to `max_delay`.
    #[must_use]
    pub fn base_delay(mut self, d: Duration) -> Self {
        self.base_delay = d;
        self
    }

    /// The longest backoff (default 5 s).
    #[must_use]
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// The wait before replay number `n` (0-based): exponential, capped, with "equal jitter"
    /// (half fixed, half random from `random`), so a fleet does not retry in lockstep.
    pub(crate) fn backoff(&self, n: u32, random: u64) -> Duration {
        backoff(self.base_delay, self.max_delay, n, random)
    }
}

/// The wait before retry number `n` (0-based): `base` doubling up to `max`, with "equal
/// jitter" (half fixed, half random from `random`). Shared by send replays and token attempts.
pub(crate) fn backoff(base: Duration, max: Duration, n: u32, random: u64) -> Duration {
    let exp = base.saturating_mul(1u32 << n.min(16)).min(max);
    let half = exp / 2;
    let half_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
    half + Duration::from_nanos(random % half_nanos)
}

/// What one attempt met, as far as the replay decision cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The request could not be built: it never left, and would fail the same way again.
    Unbuildable,
    /// The request never left (connect, DNS, TLS).
    NeverLeft,
    /// The request left and no answer came back (timeout, reset).
    LostAfterSending,
    /// An HTTP status other than 200.
    Status(u16),
    /// A 200 whose body is not WeChat's envelope.
    Unreadable,
    /// WeChat's `errcode` (0: it acted).
    Errcode(ErrCode),
}

/// What the client does after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// `errcode` 0: done.
    Succeeded,
    /// Wait the policy's backoff, then send again.
    ReplayAfterBackoff,
    /// Report the rejected token, take a fresh one, send again at once.
    RefreshTokenAndReplay,
    /// Stop with this outcome.
    Fail(Failure),
}

/// How a call that stops without success ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Nothing reached WeChat.
    NotSent,
    /// The request may have reached WeChat; no usable answer.
    Unknown,
    /// A 4xx (or other non-5xx) status: not processed.
    Status,
    /// WeChat refused with its `errcode`.
    Refused,
    /// 43101 after an attempt that may have delivered.
    ProbablyDelivered,
}

/// The replays left in one call, and what its earlier attempts may have done. Its
/// [`decide`](Self::decide) is the whole replay policy, free of I/O.
#[derive(Clone, Debug)]
pub(crate) struct Budget {
    connect_left: u32,
    busy_left: u32,
    unknown_left: u32,
    /// A token is attached and has not been replaced yet.
    token_replay_left: bool,
    may_have_delivered: bool,
    /// An earlier attempt left and its answer was lost: whatever a replay meets, that attempt
    /// may have acted, so no later failure is a known one.
    answer_lost: bool,
}

impl RetryPolicy {
    /// A fresh budget for one call; `with_token`: the call carries an access token.
    pub(crate) fn budget(&self, with_token: bool) -> Budget {
        Budget {
            connect_left: self.connect_retries,
            busy_left: self.busy_retries,
            unknown_left: self.unknown_outcome_retries,
            token_replay_left: with_token,
            may_have_delivered: false,
            answer_lost: false,
        }
    }
}

impl Budget {
    /// What to do after an attempt that met `seen`.
    pub(crate) fn decide(&mut self, seen: Seen) -> Verdict {
        match self.decide_attempt(seen) {
            // After a replay of a lost answer, a failure says nothing of the first attempt,
            // which may have delivered (43101 then means it probably did).
            Verdict::Fail(Failure::NotSent | Failure::Status | Failure::Refused) if self.answer_lost => {
                Verdict::Fail(Failure::Unknown)
            }
            verdict => verdict,
        }
    }

    /// What this attempt alone calls for.
    fn decide_attempt(&mut self, seen: Seen) -> Verdict {
        match seen {
            Seen::NeverLeft if take(&mut self.connect_left) => Verdict::ReplayAfterBackoff,
            Seen::Unbuildable | Seen::NeverLeft => Verdict::Fail(Failure::NotSent),
            Seen::LostAfterSending if take(&mut self.unknown_left) => {
                self.may_have_delivered = true;
                self.answer_lost = true;
                Verdict::ReplayAfterBackoff
            }
            Seen::LostAfterSending | Seen::Unreadable => Verdict::Fail(Failure::Unknown),
            Seen::Status(s) if s >= 500 => Verdict::Fail(Failure::Unknown),
            Seen::Status(_) => Verdict::Fail(Failure::Status),
            Seen::Errcode(code) if code.is_ok() => Verdict::Succeeded,
            Seen::Errcode(code) if code.is_token_rejected() && self.token_replay_left => {
                self.token_replay_left = false;
                Verdict::RefreshTokenAndReplay
            }
            Seen::Errcode(code) => match code.class() {
                Some(ErrorClass::Backoff) if take(&mut self.busy_left) => {
                    // WeChat said busy; it almost certainly did nothing, but cannot promise it.
                    self.may_have_delivered = true;
                    Verdict::ReplayAfterBackoff
                }
                Some(ErrorClass::UserRefused) if self.may_have_delivered => {
                    Verdict::Fail(Failure::ProbablyDelivered)
                }
                _ => Verdict::Fail(Failure::Refused),
            },
        }
    }
}

/// Takes one from `left` if any is left.
fn take(left: &mut u32) -> bool {
    let had = *left > 0;
    *left = left.saturating_sub(1);
    had
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered_within_bounds() {
        let p = RetryPolicy::default();
        for n in 0..10 {
            let exp = (Duration::from_millis(200) * 2u32.pow(n)).min(Duration::from_secs(5));
            for r in [0, 1, 12_345, u64::MAX] {
                let d = p.backoff(n, r);
                assert!(d >= exp / 2 && d <= exp, "n={n} r={r} d={d:?}");
            }
        }
    }
}

#[cfg(test)]
mod decide {
    use super::*;

    const OK: Seen = Seen::Errcode(ErrCode::OK);
    const BUSY: Seen = Seen::Errcode(ErrCode::SYSTEM_BUSY);
    const REFUSED: Seen = Seen::Errcode(ErrCode::USER_REFUSED);
    const TOKEN: Seen = Seen::Errcode(ErrCode::INVALID_CREDENTIAL);
    const EXPIRED: Seen = Seen::Errcode(ErrCode::ACCESS_TOKEN_EXPIRED);
    const BAD_OPENID: Seen = Seen::Errcode(ErrCode::INVALID_OPENID);
    const QUOTA: Seen = Seen::Errcode(ErrCode::DAILY_QUOTA_EXCEEDED);
    use Failure::*;
    use Verdict::{Fail, RefreshTokenAndReplay as Refresh, ReplayAfterBackoff as Backoff, Succeeded};

    /// A named call: its policy, whether it carries a token, and each attempt's observation
    /// with the verdict expected after it.
    type Row<'a> = (&'a str, &'a RetryPolicy, bool, &'a [(Seen, Verdict)]);

    /// One call: the attempts' observations in order, and the verdict after each.
    fn run(policy: &RetryPolicy, with_token: bool, steps: &[(Seen, Verdict)]) {
        let mut budget = policy.budget(with_token);
        for (i, (seen, want)) in steps.iter().enumerate() {
            assert_eq!(budget.decide(*seen), *want, "attempt {} met {seen:?}", i + 1);
        }
    }

    #[test]
    fn the_replay_policy_as_a_table() {
        let default = RetryPolicy::default();
        let none = RetryPolicy::none();
        let risky = RetryPolicy::default().unknown_outcome_retries(1);
        let reckless = RetryPolicy::default().unknown_outcome_retries(5);
        #[rustfmt::skip]
        let table: &[Row<'_>] = &[
            ("success", &default, true, &[(OK, Succeeded)]),
            ("unbuildable is never replayed", &default, true, &[(Seen::Unbuildable, Fail(NotSent))]),
            ("never left: two replays, then not sent", &default, true,
                &[(Seen::NeverLeft, Backoff), (Seen::NeverLeft, Backoff), (Seen::NeverLeft, Fail(NotSent))]),
            ("never left without replays", &none, true, &[(Seen::NeverLeft, Fail(NotSent))]),
            ("lost after sending: unknown, not replayed", &default, true, &[(Seen::LostAfterSending, Fail(Unknown))]),
            ("lost after sending, replay allowed, then 43101", &risky, true,
                &[(Seen::LostAfterSending, Backoff), (REFUSED, Fail(ProbablyDelivered))]),
            ("lost twice with one unknown replay", &risky, true,
                &[(Seen::LostAfterSending, Backoff), (Seen::LostAfterSending, Fail(Unknown))]),
            ("5xx is unknown", &default, true, &[(Seen::Status(502), Fail(Unknown))]),
            ("4xx is not processed", &default, true, &[(Seen::Status(404), Fail(Status))]),
            ("unreadable 200 is unknown", &default, true, &[(Seen::Unreadable, Fail(Unknown))]),
            // A 5xx or an unreadable answer may come after WeChat acted (a gateway lost its
            // answer): never replayed, whatever the policy allows for unknown outcomes.
            ("5xx with unknown replays on: unknown, not replayed", &risky, true,
                &[(Seen::Status(502), Fail(Unknown))]),
            ("500 with unknown replays on: unknown", &reckless, true, &[(Seen::Status(500), Fail(Unknown))]),
            ("503 with unknown replays on: unknown", &reckless, true, &[(Seen::Status(503), Fail(Unknown))]),
            ("504 with unknown replays on: unknown", &reckless, true, &[(Seen::Status(504), Fail(Unknown))]),
            ("unreadable 200 with unknown replays on: unknown, not replayed", &risky, true,
                &[(Seen::Unreadable, Fail(Unknown))]),
            ("lost, replayed, then a 5xx with replays left: unknown", &reckless, true,
                &[(Seen::LostAfterSending, Backoff), (Seen::Status(502), Fail(Unknown))]),
            ("lost, replayed, then unreadable with replays left: unknown", &reckless, true,
                &[(Seen::LostAfterSending, Backoff), (Seen::Unreadable, Fail(Unknown))]),
            // The replay of a lost answer fails: the first attempt may still have acted.
            ("lost, replayed, then never left: unknown", &risky, true,
                &[(Seen::LostAfterSending, Backoff), (Seen::NeverLeft, Backoff), (Seen::NeverLeft, Backoff),
                  (Seen::NeverLeft, Fail(Unknown))]),
            ("lost, replayed, then a 4xx: unknown", &risky, true,
                &[(Seen::LostAfterSending, Backoff), (Seen::Status(404), Fail(Unknown))]),
            ("lost, replayed, then a refusal: unknown", &risky, true,
                &[(Seen::LostAfterSending, Backoff), (BAD_OPENID, Fail(Unknown))]),
            ("lost, replayed, then success", &risky, true, &[(Seen::LostAfterSending, Backoff), (OK, Succeeded)]),
            ("busy, replayed, then never left: not sent", &default, true,
                &[(BUSY, Backoff), (Seen::NeverLeft, Backoff), (Seen::NeverLeft, Backoff), (Seen::NeverLeft, Fail(NotSent))]),
            ("busy, replayed, then a 5xx with unknown replays on: unknown", &risky, true,
                &[(BUSY, Backoff), (Seen::Status(502), Fail(Unknown))]),
            ("token rejected: one refresh", &default, true, &[(TOKEN, Refresh), (OK, Succeeded)]),
            ("token rejected twice: the second is final", &default, true, &[(EXPIRED, Refresh), (TOKEN, Fail(Refused))]),
            ("token replay even with no policy", &none, true, &[(TOKEN, Refresh), (OK, Succeeded)]),
            ("no token attached: 40001 is a refusal", &default, false, &[(TOKEN, Fail(Refused))]),
            ("busy twice, then success", &default, true, &[(BUSY, Backoff), (BUSY, Backoff), (OK, Succeeded)]),
            ("busy three times", &default, true, &[(BUSY, Backoff), (BUSY, Backoff), (BUSY, Fail(Refused))]),
            ("busy without replays", &none, true, &[(BUSY, Fail(Refused))]),
            ("43101 first time: refused", &default, true, &[(REFUSED, Fail(Refused))]),
            ("43101 after busy: probably delivered", &default, true, &[(BUSY, Backoff), (REFUSED, Fail(ProbablyDelivered))]),
            ("43101 after never-left: refused", &default, true, &[(Seen::NeverLeft, Backoff), (REFUSED, Fail(Refused))]),
            ("43101 after a token replay: refused", &default, true, &[(TOKEN, Refresh), (REFUSED, Fail(Refused))]),
            ("bad openid: refused", &default, true, &[(BAD_OPENID, Fail(Refused))]),
            ("quota: refused, not replayed", &default, true, &[(QUOTA, Fail(Refused))]),
        ];
        for (name, policy, with_token, steps) in table {
            eprintln!("{name}");
            run(policy, *with_token, steps);
        }
    }
}
