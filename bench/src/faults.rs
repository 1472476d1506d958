//! The reliability table (`cargo xtask faults`): the whole client against the sandbox's fault
//! injection, one row per fault, each row checking its own expectations.
//!
//! Every row checks: outcomes add up to the messages sent; the sandbox delivered at least what
//! the client reports delivered and at most that plus the unknown outcomes (an unknown outcome
//! may or may not have been delivered; nothing else may); no user received more than the one
//! message the client meant to send them; token requests within the row's budget; and the
//! sandbox's count of send requests, which each row states (one per message when nothing may
//! be replayed, plus exactly one per `-1` or per reset that hid a delivery where those are
//! replayed). Then each row checks what its fault must leave: every message delivered, exactly
//! the injected number unknown, or nothing delivered for want of a token.
//!
//! Most rows send the 2017 one-time message, whose grant the sandbox uses up on delivery, so a
//! second delivery of it is impossible (a re-send meets 43101). Two rows send what WeChat does
//! deliver twice: a mini-program message with a long-term template, and a subscribe
//! notification whose one-time template each user accepted twice.
//!
//! `broken=fail-all`, `broken=resend-unknown` and `broken=resend-silently` run a deliberately
//! broken client (one that reports every send failed; one that re-sends an unknown outcome and
//! reports the re-send's; one that re-sends it and reports the first attempt's): `cargo xtask
//! faults` checks that the expectations catch each. `only=<words>` runs the rows whose name
//! contains the words (`_` for a space); `together` runs the rows at once (each on its own
//! sandbox), which `cargo xtask faults --quick` does. Output: the rows as JSON (the default, or `json`,
//! pretty-printed; printed even when a row fails), which `cargo xtask faults` saves and renders
//! as `docs/reliability.md`'s table.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use subscribe_client::{Client, RetryPolicy, SendError, TokenError};
use subscribe_sandbox::{
    DEMO_APPID, DEMO_LONG_TERM_TEMPLATE, DEMO_MP_TEMPLATE, DEMO_SECRET, Faults, LostAnswers, SandboxConfig,
    SandboxHandle, TokenFault,
};
use subscribe_types::{
    AppId, AppSecret, MessageData, MiniProgramMessage, NotificationMessage, OpenId, Scene, TemplateId,
};

use super::{message, thousands};

/// The client's request timeout.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What happens during a row, after a number of completed sends.
#[derive(Clone, Copy)]
enum Action {
    None,
    RevokeAt(u64, Duration),
    ExpireAt(u64),
    RevokeEvery(u64),
    /// Revoke every token and fail the token endpoint with HTTP 502 for the duration.
    RevokeWithOutageAt(u64, Duration),
}

/// How many token requests a row may make.
#[derive(Clone, Copy)]
enum Tokens {
    /// One at the start, one per revocation or expiry, one per half-lifetime elapsed.
    Rotations,
    /// What the backoff schedule allows during `outage` (or the whole run, when `None`),
    /// plus `fetches` that succeed.
    Backoff { outage: Option<Duration>, fetches: u64 },
    /// One: a refusal starts the cool-down.
    CoolDown,
}

/// What a row's outcomes must be.
#[derive(Clone, Copy)]
enum Outcomes {
    /// Every message delivered (and counted so by the sandbox).
    AllDelivered,
    /// `k` answers lost before anything was processed: exactly `k` unknown, the rest
    /// delivered, and the sandbox delivered only the rest.
    LostBeforeDelivery(u64),
    /// `k` answers lost after the sandbox delivered: exactly `k` unknown, the rest delivered,
    /// and the sandbox delivered every message.
    LostAfterDelivery(u64),
    /// Answers lost after delivery, with the client replaying unknown outcomes once: each
    /// replay meets 43101 and must be reported probably delivered, never failed nor delivered.
    LostAfterDeliveryReplayed,
    /// No token to be had: nothing delivered, every message failed for want of one.
    NoToken,
}

/// How many send requests the sandbox must count in a row: what the client may replay there.
#[derive(Clone, Copy)]
enum Requests {
    /// None: without a token nothing is sent.
    None,
    /// One per message: nothing is replayed (a lost answer never is).
    OnePerMessage,
    /// One per message plus one replay per `-1` the sandbox answered (every `k`th request).
    ReplayEachBusy(u64),
    /// One per message plus one replay per reset that hid a delivery (a replay meets 43101, so
    /// hides none, and is not replayed again).
    ReplayEachResetAfterDelivery,
    /// One per message plus one token replay per rejected send: at least one per revocation,
    /// at most one per worker (each is rejected once, then holds the fresh token).
    TokenReplays { revocations: u64 },
}

/// Which send a row makes, and what each user allowed.
#[derive(Clone, Copy)]
enum Message {
    /// The 2017 one-time message; one grant per user, used up by its delivery, so a re-send
    /// meets 43101 and a second delivery is impossible.
    OneTime,
    /// A mini-program message with a long-term template each user accepted: WeChat delivers
    /// every send, so a re-send is a second message.
    MiniProgramLongTerm,
    /// A subscribe notification with a one-time template each user accepted twice: a re-send
    /// uses the second acceptance and is a second message.
    NotificationAcceptedTwice,
}

struct Row {
    name: String,
    faults: Faults,
    action: Action,
    lifetime: Option<Duration>,
    pace: Option<Duration>,
    replay_unknown: bool,
    message: Message,
    tokens: Tokens,
    outcomes: Outcomes,
    requests: Requests,
}

impl Row {
    fn new(
        name: impl Into<String>,
        faults: Faults,
        tokens: Tokens,
        outcomes: Outcomes,
        requests: Requests,
    ) -> Self {
        Self {
            name: name.into(),
            faults,
            action: Action::None,
            lifetime: None,
            pace: None,
            replay_unknown: false,
            message: Message::OneTime,
            tokens,
            outcomes,
            requests,
        }
    }

    fn action(mut self, action: Action) -> Self {
        self.action = action;
        self
    }

    fn message(mut self, message: Message) -> Self {
        self.message = message;
        self
    }
}

/// A deliberately broken client, to show the expectations can fail.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Broken {
    No,
    /// Reports every send failed.
    FailAll,
    /// Sends a message again when its outcome is unknown, and reports the second outcome.
    ResendUnknown,
    /// Sends a message again when its outcome is unknown, and reports the first (unknown)
    /// outcome, as if it had not.
    ResendSilently,
}

impl Broken {
    pub(crate) fn from_args(args: &[String]) -> Self {
        match args.iter().find_map(|a| a.strip_prefix("broken=")) {
            Some("fail-all") => Self::FailAll,
            Some("resend-unknown") => Self::ResendUnknown,
            Some("resend-silently") => Self::ResendSilently,
            Some(other) => panic!("broken={other}: fail-all | resend-unknown | resend-silently"),
            None => Self::No,
        }
    }
}

/// The most token attempts the client's default backoff (0.5 s doubling to 30 s, each wait at
/// least half its nominal length) can make in `window`, the first included.
fn backoff_attempts(window: Duration) -> u64 {
    let (mut attempts, mut at) = (1, Duration::ZERO);
    for k in 0..64 {
        at += Duration::from_millis(500).saturating_mul(1 << k.min(16)).min(Duration::from_secs(30)) / 2;
        if at > window {
            break;
        }
        attempts += 1;
    }
    attempts
}

fn every(f: fn(&mut Faults, u64), k: u64) -> Faults {
    let mut x = Faults::default();
    f(&mut x, k);
    x
}

/// The rows, with the sizes at 2,000 messages (revocation after 1,000, a token per
/// 500, a stall per 1,000), scaled with `n` so the quick run meets every fault too.
#[allow(clippy::too_many_lines)] // one table, one row per fault
fn rows(n: u64) -> Vec<Row> {
    let (half, quarter) = ((n / 2).max(1), (n / 4).max(1));
    let all = Outcomes::AllDelivered;
    let rot = Tokens::Rotations;
    let once = Requests::OnePerMessage;
    let token = |fault: TokenFault, ms: Option<u64>| Faults {
        token_fault: Some(fault),
        token_fault_ms: ms,
        token_stall_ms: Some(3000),
        ..Faults::default()
    };
    let fresh = |name: &str| format!("token endpoint: {name} (fresh client)");
    let no_token = Tokens::Backoff { outage: None, fetches: 0 };
    let revoked = |revocations| Requests::TokenReplays { revocations };
    let mut short_lived =
        Row::new("5 s token lifetime (sends paced over ~12 s)", Faults::default(), rot, all, once);
    short_lived.lifetime = Some(Duration::from_secs(5));
    short_lived.pace = Some(Duration::from_millis(190));
    // A reset after sending is what `unknown_outcome_retries` replays (a 5xx never is).
    let mut replayed = Row::new(
        "delivered, then the connection dropped, on 1 in 200; unknown outcomes replayed once",
        every(|f, k| f.delivered_drop_every = Some(k), 200),
        rot,
        Outcomes::LostAfterDeliveryReplayed,
        Requests::ReplayEachResetAfterDelivery,
    );
    replayed.replay_unknown = true;
    vec![
        Row::new("no fault", Faults::default(), rot, all, once),
        Row::new(
            format!("all tokens revoked after {} sends, no grace", thousands(half)),
            Faults::default(),
            rot,
            all,
            revoked(1),
        )
        .action(Action::RevokeAt(half, Duration::ZERO)),
        Row::new(
            format!("all tokens revoked after {} sends, 5 s grace", thousands(half)),
            Faults::default(),
            rot,
            all,
            once,
        )
        .action(Action::RevokeAt(half, Duration::from_secs(5))),
        Row::new(
            format!("all tokens expired after {} sends", thousands(half)),
            Faults::default(),
            rot,
            all,
            revoked(1),
        )
        .action(Action::ExpireAt(half)),
        Row::new(
            format!("each token valid for {} sends", thousands(quarter)),
            Faults::default(),
            rot,
            all,
            revoked((n - 1) / quarter),
        )
        .action(Action::RevokeEvery(quarter)),
        short_lived,
        Row::new(
            "-1 on 1 in 100 sends",
            every(|f, k| f.busy_every = Some(k), 100),
            rot,
            all,
            Requests::ReplayEachBusy(100),
        ),
        Row::new(
            "HTTP 502 on 1 in 200",
            every(|f, k| f.http_502_every = Some(k), 200),
            rot,
            Outcomes::LostBeforeDelivery(n / 200),
            once,
        ),
        Row::new(
            "malformed JSON on 1 in 200",
            every(|f, k| f.malformed_every = Some(k), 200),
            rot,
            Outcomes::LostBeforeDelivery(n / 200),
            once,
        ),
        Row::new(
            "dropped connection on 1 in 200",
            every(|f, k| f.drop_every = Some(k), 200),
            rot,
            Outcomes::LostBeforeDelivery(n / 200),
            once,
        ),
        Row::new(
            format!("20 s stall on 1 in {} (client timeout 10 s)", thousands(half)),
            Faults { stall_every: Some(half), stall_ms: Some(20_000), ..Faults::default() },
            rot,
            Outcomes::LostBeforeDelivery(n / half),
            once,
        ),
        Row::new(
            "delivered, then HTTP 502, on 1 in 200",
            every(|f, k| f.delivered_502_every = Some(k), 200),
            rot,
            Outcomes::LostAfterDelivery(n / 200),
            once,
        ),
        Row::new(
            "delivered, then malformed JSON, on 1 in 200",
            every(|f, k| f.delivered_malformed_every = Some(k), 200),
            rot,
            Outcomes::LostAfterDelivery(n / 200),
            once,
        ),
        Row::new(
            "delivered, then the connection dropped, on 1 in 200",
            every(|f, k| f.delivered_drop_every = Some(k), 200),
            rot,
            Outcomes::LostAfterDelivery(n / 200),
            once,
        ),
        Row::new(
            format!("delivered, then a 20 s stall, on 1 in {} (client timeout 10 s)", thousands(half)),
            Faults { delivered_stall_every: Some(half), stall_ms: Some(20_000), ..Faults::default() },
            rot,
            Outcomes::LostAfterDelivery(n / half),
            once,
        ),
        replayed,
        // What WeChat does deliver twice: a re-send here is a second message in the inbox.
        Row::new(
            "mini-program message, long-term template: HTTP 502 after delivery on 1 in 200",
            every(|f, k| f.delivered_502_every = Some(k), 200),
            rot,
            Outcomes::LostAfterDelivery(n / 200),
            once,
        )
        .message(Message::MiniProgramLongTerm),
        Row::new(
            "subscribe notification, one-time template accepted twice: malformed JSON after delivery on 1 in 200",
            every(|f, k| f.delivered_malformed_every = Some(k), 200),
            rot,
            Outcomes::LostAfterDelivery(n / 200),
            once,
        )
        .message(Message::NotificationAcceptedTwice),
        Row::new(
            fresh("every request HTTP 502"),
            token(TokenFault::Http502, None),
            no_token,
            Outcomes::NoToken,
            Requests::None,
        ),
        Row::new(
            fresh("every connection dropped"),
            token(TokenFault::Drop, None),
            no_token,
            Outcomes::NoToken,
            Requests::None,
        ),
        Row::new(
            fresh("every request answered -1"),
            token(TokenFault::Busy, None),
            no_token,
            Outcomes::NoToken,
            Requests::None,
        ),
        Row::new(
            fresh("every request answered 45009 (quota)"),
            token(TokenFault::Quota, None),
            Tokens::CoolDown,
            Outcomes::NoToken,
            Requests::None,
        ),
        Row::new(
            fresh("every request stalled 3 s"),
            token(TokenFault::Stall, None),
            Tokens::Backoff { outage: Some(Duration::ZERO), fetches: 1 },
            all,
            once,
        ),
        Row::new(
            fresh("HTTP 502 for the first 2 s"),
            token(TokenFault::Http502, Some(2000)),
            Tokens::Backoff { outage: Some(Duration::from_secs(2)), fetches: 1 },
            all,
            once,
        ),
        Row::new(
            format!(
                "warm client; all tokens revoked after {} sends with the token endpoint down (502) for 3 s",
                thousands(half)
            ),
            Faults::default(),
            Tokens::Backoff { outage: Some(Duration::from_secs(3)), fetches: 2 },
            all,
            revoked(1),
        )
        .action(Action::RevokeWithOutageAt(half, Duration::from_secs(3))),
    ]
}

pub(crate) async fn faults(n: usize, concurrency: usize, args: &[String]) -> serde_json::Value {
    let broken = Broken::from_args(args);
    let only = args.iter().find_map(|a| a.strip_prefix("only=")).map(|o| o.replace('_', " "));
    let selected =
        rows(n as u64).into_iter().filter(|row| only.as_ref().is_none_or(|o| row.name.contains(o.as_str())));
    let mut results = Vec::new();
    if args.iter().any(|a| a == "together") {
        // Each row on its own sandbox and client, all at once: the rows mostly wait (for
        // stalls, timeouts, backoff and paced sends), so together they take about as long as
        // the longest one instead of the sum.
        let mut rows = tokio::task::JoinSet::new();
        for (index, row) in selected.enumerate() {
            rows.spawn(async move { (index, run_row(row, n, concurrency, broken).await) });
        }
        let mut done: Vec<(usize, serde_json::Value)> = rows.join_all().await;
        done.sort_by_key(|(index, _)| *index);
        results.extend(done.into_iter().map(|(_, row)| row));
    } else {
        for row in selected {
            results.push(run_row(row, n, concurrency, broken).await);
        }
    }
    assert!(!results.is_empty(), "no row matches only={only:?}");
    let passed = results.iter().all(|r| r["passed"] == true);
    json!({
        "scenario": "faults",
        "sends": n,
        "concurrency": concurrency,
        "passed": passed,
        "rows": results,
    })
}

/// What the token source last answered, in a word or two (one table cell per kind).
fn token_failure(t: &TokenError) -> String {
    match t.last() {
        None => "first attempt still running".into(),
        Some(TokenError::Rejected { error, .. } | TokenError::CoolingDown { error, .. }) => {
            format!("errcode {}", error.code().get())
        }
        Some(TokenError::HttpStatus { status }) => format!("HTTP {status}"),
        Some(TokenError::Transport(e)) => e.kind().to_string(),
        Some(TokenError::Decode(_)) => "malformed answer".into(),
        Some(TokenError::HeldOff { .. }) => "held off by another instance".into(),
        Some(other) => other.to_string(),
    }
}

/// How a send ended, as a row counts it: `delivered`, `unknown…` or `failed…`.
fn outcome_kind(result: &Result<(), SendError>) -> String {
    match result {
        Ok(()) => "delivered".to_owned(),
        Err(SendError::ProbablyDelivered(_)) => "unknown (probably delivered)".to_owned(),
        Err(e) if !e.outcome_known() => "unknown".to_owned(),
        Err(SendError::Token(t)) => format!("failed: no token ({})", token_failure(t)),
        Err(e) => match e.api_code() {
            Some(code) => format!("failed: errcode {}", code.get()),
            None => format!("failed: {e}"),
        },
    }
}

/// The row's action after `k` of `n` sends completed.
fn act(s: &SandboxHandle, action: Action, k: u64, n: u64) {
    match action {
        Action::RevokeAt(at, grace) if k == at => s.state().revoke_tokens(grace),
        Action::ExpireAt(at) if k == at => s.state().expire_tokens(),
        Action::RevokeEvery(m) if k.is_multiple_of(m) && k < n => s.state().revoke_tokens(Duration::ZERO),
        Action::RevokeWithOutageAt(at, outage) if k == at => {
            s.state().set_faults(Faults {
                token_fault: Some(TokenFault::Http502),
                token_fault_ms: Some(u64::try_from(outage.as_millis()).unwrap()),
                ..Faults::default()
            });
            s.state().revoke_tokens(Duration::ZERO);
        }
        _ => {}
    }
}

fn user(i: usize) -> OpenId {
    OpenId::new(format!("oUser{i:010}")).unwrap()
}

/// Each user's allowance for the row's send, as the sandbox records a user's answer.
fn allow(s: &SandboxHandle, message: Message, i: usize) {
    let to = user(i);
    let accept = |template: &str| s.state().subscribe(DEMO_APPID, to.as_str(), template, true).unwrap();
    match message {
        Message::OneTime => {
            s.state().add_grant(
                &SandboxConfig::demo_appid(),
                &to,
                &SandboxConfig::demo_template(),
                Scene::new(5).unwrap(),
            );
        }
        Message::MiniProgramLongTerm => accept(DEMO_LONG_TERM_TEMPLATE),
        Message::NotificationAcceptedTwice => {
            accept(DEMO_MP_TEMPLATE);
            accept(DEMO_MP_TEMPLATE);
        }
    }
}

/// One attempt at user `i`'s message of the row's kind.
async fn attempt(c: &Client, i: usize, kind: Message) -> Result<(), SendError> {
    match kind {
        Message::OneTime => c.send_one_time(&message(i, 5)).await.map(drop),
        Message::MiniProgramLongTerm => {
            let data = MessageData::from_pairs([("enum1", "黄金会员"), ("date2", "2019-10-01")]).unwrap();
            let m =
                MiniProgramMessage::builder(user(i), TemplateId::new(DEMO_LONG_TERM_TEMPLATE).unwrap(), data)
                    .page("pages/member/index")
                    .build()
                    .unwrap();
            c.send_mini_program(&m).await.map(drop)
        }
        Message::NotificationAcceptedTwice => {
            let data = MessageData::from_pairs([
                ("thing1", "亚麻衬衫"),
                ("time2", "2019-10-01 15:01"),
                ("amount3", "¥199.00"),
            ])
            .unwrap();
            let m = NotificationMessage::builder(user(i), TemplateId::new(DEMO_MP_TEMPLATE).unwrap(), data)
                .page("https://shop.example.com/items/1")
                .build()
                .unwrap();
            c.send_notification(&m).await.map(drop)
        }
    }
}

/// One send through the (possibly broken) client.
async fn send(c: &Client, i: usize, kind: Message, broken: Broken) -> String {
    let result = attempt(c, i, kind).await;
    match broken {
        Broken::No => outcome_kind(&result),
        Broken::FailAll => "failed: broken client".to_owned(),
        Broken::ResendUnknown => match &result {
            Err(e) if !e.outcome_known() => outcome_kind(&attempt(c, i, kind).await),
            _ => outcome_kind(&result),
        },
        Broken::ResendSilently => {
            if result.as_ref().is_err_and(|e| !e.outcome_known()) {
                let _ = attempt(c, i, kind).await;
            }
            outcome_kind(&result)
        }
    }
}

#[allow(clippy::too_many_lines)] // one run: set up, send, wait, read the sandbox, check
async fn run_row(row: Row, n: usize, concurrency: usize, broken: Broken) -> serde_json::Value {
    let mut config = SandboxConfig::demo().with_generated_users(n);
    if let Some(l) = row.lifetime {
        config = config.with_token_lifetime(l);
    }
    let s = Arc::new(SandboxHandle::start(config).await.unwrap());
    for i in 0..n {
        allow(&s, row.message, i);
    }
    s.state().set_faults(row.faults.clone());
    let mut policy = RetryPolicy::default();
    if row.replay_unknown {
        policy = policy.unknown_outcome_retries(1);
    }
    let c = Client::builder(AppId::new(DEMO_APPID).unwrap(), AppSecret::new(DEMO_SECRET).unwrap())
        .api_base(s.base_url())
        .timeouts(Duration::from_secs(2), TIMEOUT)
        .retry_policy(policy)
        .build()
        .unwrap();
    let outcomes: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let last_outcome: Arc<Mutex<Duration>> = Arc::default();
    let started = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (c, s, outcomes, done, next, last_outcome) = (
            c.clone(),
            Arc::clone(&s),
            Arc::clone(&outcomes),
            Arc::clone(&done),
            Arc::clone(&next),
            Arc::clone(&last_outcome),
        );
        let (action, pace, kind) = (row.action, row.pace, row.message);
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let outcome = send(&c, i, kind, broken).await;
                *outcomes.lock().unwrap().entry(outcome).or_default() += 1;
                {
                    let mut last = last_outcome.lock().unwrap();
                    *last = (*last).max(started.elapsed());
                }
                let k = done.fetch_add(1, Ordering::AcqRel) + 1;
                act(&s, action, k, n as u64);
                if let Some(p) = pace {
                    tokio::time::sleep(p).await;
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let elapsed = *last_outcome.lock().unwrap();
    // A stalled request is still being processed by the sandbox after the client gave up: the
    // last one started no later than the client's timeout before the last outcome, so it ends
    // by the last outcome plus what the stall outlasts the timeout (and a margin).
    if row.faults.stall_every.or(row.faults.delivered_stall_every).is_some() {
        // The sandbox's own default when a row sets none.
        let stall = Duration::from_millis(row.faults.stall_ms.unwrap_or(20_000));
        let ends = started + elapsed + stall.saturating_sub(TIMEOUT) + Duration::from_millis(500);
        tokio::time::sleep_until(ends.into()).await;
    }
    let stats = s.state().stats();
    let outcomes = outcomes.lock().unwrap().clone();
    let inboxes: Vec<usize> = (0..n).map(|i| s.state().inbox(user(i).as_str()).len()).collect();
    let seen = Seen {
        n: n as u64,
        concurrency: concurrency as u64,
        outcomes: &outcomes,
        sandbox_deliveries: stats.deliveries,
        token_requests: stats.classic_token_requests + stats.stable_token_requests,
        send_requests: stats.send_requests,
        lost_after_delivery: stats.lost_after_delivery,
        token_rejections: stats.token_rejections,
        most_in_one_inbox: inboxes.iter().copied().max().unwrap_or(0),
        in_inboxes: inboxes.iter().sum::<usize>() as u64,
    };
    let (budget, allowed_by) = token_budget(&row, n as u64, elapsed);
    let requests = expected_requests(&row, &seen);
    let violations = check(&row, &seen, budget, allowed_by, &requests);
    let failed_by_kind: BTreeMap<&str, u64> =
        outcomes.iter().filter_map(|(k, v)| k.strip_prefix("failed: ").map(|kind| (kind, *v))).collect();
    json!({
        "name": row.name,
        "sends": seen.n,
        "delivered": seen.count("delivered"),
        "failed": seen.count("failed"),
        "failed_by_kind": failed_by_kind,
        "unknown": seen.count("unknown"),
        "probably_delivered": seen.count("unknown (probably delivered)"),
        "token_requests": seen.token_requests,
        "token_budget": budget,
        "send_requests": seen.send_requests,
        "extra_requests": seen.send_requests.saturating_sub(seen.n),
        "sandbox_deliveries": seen.sandbox_deliveries,
        "lost_after_delivery": seen.lost_after_delivery,
        "token_rejections": seen.token_rejections,
        "most_in_one_inbox": seen.most_in_one_inbox,
        "last_outcome_s": (elapsed.as_secs_f64() * 10.0).round() / 10.0,
        "tokens_issued": stats.tokens_issued,
        "expect": {
            "outcomes": describe(row.outcomes, seen.n),
            "send_requests": requests.describe(),
            "send_requests_range": [requests.least, requests.most],
            "token_requests": format!("at most {budget}, {allowed_by}"),
            "every_row": "outcomes add up to the messages sent; the sandbox delivered at least the delivered and at most the delivered plus the unknown; no user received more than the one message meant for them",
        },
        "passed": violations.is_empty(),
        "violations": violations,
    })
}

/// What a row left behind.
struct Seen<'a> {
    n: u64,
    concurrency: u64,
    outcomes: &'a BTreeMap<String, u64>,
    sandbox_deliveries: u64,
    token_requests: u64,
    send_requests: u64,
    lost_after_delivery: LostAnswers,
    token_rejections: u64,
    most_in_one_inbox: usize,
    in_inboxes: u64,
}

impl Seen<'_> {
    fn count(&self, prefix: &str) -> u64 {
        self.outcomes.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| *v).sum()
    }
}

/// The send requests a row must leave in the sandbox's count: from `least` to `most`, and why.
struct ExpectedRequests {
    least: u64,
    most: u64,
    why: String,
}

impl ExpectedRequests {
    fn exactly(n: u64, why: String) -> Self {
        Self { least: n, most: n, why }
    }

    fn describe(&self) -> String {
        if self.least == self.most {
            format!("exactly {}: {}", self.least, self.why)
        } else {
            format!("{} to {}: {}", self.least, self.most, self.why)
        }
    }
}

fn expected_requests(row: &Row, seen: &Seen<'_>) -> ExpectedRequests {
    let n = seen.n;
    match row.requests {
        Requests::None => ExpectedRequests::exactly(0, "no token, so nothing is sent".into()),
        Requests::OnePerMessage => ExpectedRequests::exactly(n, "one per message, nothing replayed".into()),
        Requests::ReplayEachBusy(k) => {
            // The sandbox answers -1 to every `k`th request, replays included.
            let busy = seen.send_requests / k;
            ExpectedRequests::exactly(
                n + busy,
                format!("one per message plus one replay per -1 answered ({busy})"),
            )
        }
        Requests::ReplayEachResetAfterDelivery => {
            let resets = seen.lost_after_delivery.dropped;
            // No fewer but for a replay that was itself a first delivery (its first attempt, on
            // a pooled connection the sandbox had just closed, never reached it) and drew a
            // reset it has no replay left for: rare, allowed twice.
            ExpectedRequests {
                least: n + resets.saturating_sub(2),
                most: n + resets,
                why: format!(
                    "one per message plus one replay per reset that hid a delivery ({resets}; a replay that \
                     was a first delivery may draw a reset of its own, twice at most)"
                ),
            }
        }
        Requests::TokenReplays { revocations } => {
            // The sandbox counts the sends it answered 40001/42001: each is replayed exactly
            // once. Their number has bounds of its own: at least one, at most one per worker,
            // for each revocation; out of them, the bounds are what the count must meet (and,
            // with one replay per rejection, cannot).
            let rejected = seen.token_rejections;
            let (least, most) = (revocations, revocations * seen.concurrency);
            if (least..=most).contains(&rejected) {
                ExpectedRequests::exactly(
                    n + rejected,
                    format!(
                        "one per message plus exactly one replay per send answered 40001/42001 ({rejected}; \
                         {least} to {most} for {revocations} revocations at concurrency {})",
                        seen.concurrency
                    ),
                )
            } else {
                ExpectedRequests {
                    least: n + least,
                    most: n + most,
                    why: format!(
                        "one per message plus one token replay per rejected send, {least} to {most} rejections \
                         for {revocations} revocations at concurrency {}, but the sandbox rejected {rejected}",
                        seen.concurrency
                    ),
                }
            }
        }
    }
}

/// A row's expected outcomes, in words.
fn describe(outcomes: Outcomes, n: u64) -> String {
    match outcomes {
        Outcomes::AllDelivered => format!("all {n} delivered, and the sandbox counted every one"),
        Outcomes::LostBeforeDelivery(k) => format!(
            "{k} unknown (one per answer lost before delivery), {} delivered, and the sandbox delivered only those",
            n - k
        ),
        Outcomes::LostAfterDelivery(k) => format!(
            "{k} unknown (one per answer lost after delivery), {} delivered, and the sandbox delivered all {n}",
            n - k
        ),
        Outcomes::LostAfterDeliveryReplayed => format!(
            "each replay meets 43101 and is reported probably delivered (never failed, never a new delivery); the sandbox delivered all {n}"
        ),
        Outcomes::NoToken => format!("nothing delivered; all {n} failed for want of a token"),
    }
}

/// The most token requests a row may make, and what allows them.
fn token_budget(row: &Row, n: u64, elapsed: Duration) -> (u64, &'static str) {
    let schedule = "allowed by the backoff schedule";
    let rotations = "rotations or revocations";
    match (row.tokens, row.action, row.lifetime) {
        (Tokens::Backoff { outage, fetches }, ..) => {
            (backoff_attempts(outage.unwrap_or(elapsed)) + fetches, schedule)
        }
        (Tokens::CoolDown, ..) => (1, "the cool-down allows"),
        (Tokens::Rotations, _, Some(l)) => {
            let halves = (elapsed.as_secs_f64() / (l.as_secs_f64() / 2.0)).ceil();
            // A count of half-lifetimes in a run of seconds: small and positive.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let halves = halves as u64;
            (1 + halves, rotations)
        }
        (
            Tokens::Rotations,
            Action::RevokeAt(..) | Action::ExpireAt(_) | Action::RevokeWithOutageAt(..),
            None,
        ) => (2, rotations),
        (Tokens::Rotations, Action::RevokeEvery(m), None) => (1 + (n - 1) / m, rotations),
        (Tokens::Rotations, Action::None, None) => (1, rotations),
    }
}

/// The row's expectations, each broken one in words.
fn check(
    row: &Row,
    seen: &Seen<'_>,
    budget: u64,
    allowed_by: &str,
    requests: &ExpectedRequests,
) -> Vec<String> {
    let n = seen.n;
    let (delivered, unknown, failed) = (seen.count("delivered"), seen.count("unknown"), seen.count("failed"));
    let sandbox = seen.sandbox_deliveries;
    let mut v = Vec::new();
    if seen.token_requests > budget {
        v.push(format!("{} token requests, more than the {budget} {allowed_by}", seen.token_requests));
    }
    if delivered + unknown + failed != n {
        v.push(format!("{} outcomes for {n} messages", delivered + unknown + failed));
    }
    // What the client calls delivered was delivered; what it calls failed was not; only an
    // unknown outcome may go either way.
    if sandbox < delivered || sandbox > delivered + unknown {
        v.push(format!(
            "the sandbox delivered {sandbox}; the client reports {delivered} delivered and {unknown} unknown"
        ));
    }
    // The client meant one message for each user. Of the 2017 message the sandbox cannot
    // deliver a second (the grant is used up); of the others it can.
    if seen.most_in_one_inbox > 1 {
        v.push(format!(
            "a user received {} messages; the client meant to send each user one",
            seen.most_in_one_inbox
        ));
    }
    if seen.in_inboxes != sandbox {
        v.push(format!("{} messages in the inboxes, {sandbox} deliveries counted", seen.in_inboxes));
    }
    if !(requests.least..=requests.most).contains(&seen.send_requests) {
        let want = if requests.least == requests.most {
            format!("exactly {}", requests.least)
        } else {
            format!("{} to {}", requests.least, requests.most)
        };
        v.push(format!("{} send requests, want {want} ({})", seen.send_requests, requests.why));
    }
    let mut expect = |ok: bool, what: String| {
        if !ok {
            v.push(what);
        }
    };
    match row.outcomes {
        Outcomes::AllDelivered => {
            expect(delivered == n && sandbox == n, format!("{delivered} of {n} delivered (all must be)"));
        }
        Outcomes::LostBeforeDelivery(k) => expect(
            unknown == k && delivered == n - k && sandbox == n - k,
            format!(
                "{k} answers lost before delivery: want {k} unknown and {} delivered, got {unknown} and {delivered} (sandbox {sandbox})",
                n - k
            ),
        ),
        Outcomes::LostAfterDelivery(k) => expect(
            unknown == k && delivered == n - k && sandbox == n,
            format!(
                "{k} answers lost after delivery: want {k} unknown, {} delivered and {n} in the sandbox, got {unknown}, {delivered} and {sandbox}",
                n - k
            ),
        ),
        Outcomes::LostAfterDeliveryReplayed => {
            // Each reset that hid a delivery leaves its message unknown: replayed into 43101
            // ("probably delivered"), or, twice at most, a replay that was a first delivery and
            // drew a reset of its own with no replay left.
            let probably = seen.count("unknown (probably delivered)");
            let resets = seen.lost_after_delivery.dropped;
            expect(
                failed == 0
                    && sandbox == n
                    && unknown == resets
                    && delivered == n - resets
                    && probably + 2 >= resets
                    && probably > 0,
                format!(
                    "replayed lost answers: want the {resets} resets unknown (all but two at most probably delivered), {} delivered and {n} in the sandbox, got {unknown} unknown ({probably} probably delivered), {failed} failed, {delivered} delivered (sandbox {sandbox})",
                    n - resets
                ),
            );
        }
        Outcomes::NoToken => {
            let no_token = seen.count("failed: no token");
            expect(
                delivered == 0 && no_token == n,
                format!(
                    "with no token to be had, {delivered} delivered and {no_token} of {n} failed for want of one"
                ),
            );
        }
    }
    v
}
