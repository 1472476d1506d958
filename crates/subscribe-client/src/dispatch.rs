//! [`Dispatcher`]: one message to every pending grant of a (template, scene).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use subscribe_types::{
    ErrCode, ErrorClass, MiniProgramMessage, OpenId, Scene, SubscribeMessage, TemplateId, TemplateKind,
    ValidationError,
};
use tokio::sync::mpsc;
use tracing::info;

use crate::CancellationToken;
use crate::Client;
use crate::error::SendError;
use crate::grants::{GrantLedger, GrantScope, LedgerError, Reservation, Settlement};
use crate::rate::RateLimiter;

/// How one recipient's grant ended in this dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OutcomeKind {
    /// Delivered; the grant is used.
    Delivered,
    /// A definite failure; the grant is pending again for a later dispatch.
    Failed,
    /// The outcome is unknown; the grant is under review and will not be resent automatically.
    Unknown,
    /// The grant is gone (WeChat refused it, or the openid is invalid).
    Dropped,
}

impl OutcomeKind {
    /// `delivered`, `failed`, `unknown` or `dropped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
            Self::Dropped => "dropped",
        }
    }
}

/// One recipient's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecipientOutcome {
    /// The recipient.
    pub openid: OpenId,
    /// How it ended.
    pub kind: OutcomeKind,
    /// WeChat's errcode, when it gave one.
    pub errcode: Option<ErrCode>,
    /// Why, in words, when it did not deliver.
    pub detail: Option<String>,
    /// The ledger could not record the outcome (the grant's lease had lapsed, or the ledger
    /// failed); the grant may be retried by another dispatch, which WeChat then refuses.
    pub ledger_error: Option<String>,
}

/// Counts so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Grants taken and sent.
    pub sent: u64,
    /// Delivered.
    pub delivered: u64,
    /// Failed (pending again).
    pub failed: u64,
    /// Unknown (under review).
    pub unknown: u64,
    /// Dropped.
    pub dropped: u64,
    /// Pending grants not yet taken (an estimate when several dispatchers share a ledger).
    pub remaining: u64,
}

/// Receives progress and each recipient's outcome, on the dispatching task.
pub trait DispatchObserver: Send {
    /// After each outcome.
    fn on_outcome(&mut self, outcome: &RecipientOutcome) {
        let _ = outcome;
    }
    /// After each outcome, with the running counts.
    fn on_progress(&mut self, progress: &Progress) {
        let _ = progress;
    }
}

/// Observes nothing.
impl DispatchObserver for () {}

impl<F: FnMut(&Progress) + Send> DispatchObserver for F {
    fn on_progress(&mut self, progress: &Progress) {
        self(progress);
    }
}

/// The end of a dispatch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DispatchReport {
    /// The final counts.
    pub progress: Progress,
    /// Whether it was cancelled before the end.
    pub cancelled: bool,
    /// Each recipient's outcome, in completion order (empty with
    /// [`Dispatcher::keep_outcomes`]`(false)`: then use an observer, and memory stays flat).
    pub outcomes: Vec<RecipientOutcome>,
}

/// The function that builds each recipient's message.
type MessageFn = dyn Fn(&OpenId) -> Result<SubscribeMessage, ValidationError> + Send + Sync;
type MiniProgramFn = dyn Fn(&OpenId) -> Result<MiniProgramMessage, ValidationError> + Send + Sync;

/// How each recipient's message is built and sent.
#[derive(Clone)]
enum Build {
    /// The one-time message ([`Client::send`]).
    OneTime(Arc<MessageFn>),
    /// A mini-program message ([`Client::send_mini_program`]); a long-term template's grant
    /// is not used up by a delivery.
    MiniProgram { build: Arc<MiniProgramFn>, long_term: bool },
}

/// A dispatch cannot run, or stopped early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// A required option was not set: `grants` or `message`.
    #[error("the dispatcher has no `{0}`: set it on the builder before `run`")]
    Unconfigured(&'static str),
    /// The ledger could not be read or a grant could not be reserved; sends in flight were
    /// finished and recorded first.
    #[error("grant ledger failed")]
    Ledger(#[from] LedgerError),
}

impl DispatchError {
    /// What to do about it: `Configuration` for a builder left unconfigured, the ledger
    /// error's kind otherwise ([`LedgerError::kind`]: `Retryable` when its backend failed; run
    /// the dispatch again, reserved grants come back after their lease).
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            Self::Unconfigured(_) => crate::ErrorKind::Configuration,
            Self::Ledger(e) => e.kind(),
        }
    }
}

/// Sends one message to every pending grant of a (template, scene), with bounded concurrency,
/// an optional rate limit, progress, and a per-recipient outcome.
///
/// Every grant is reserved in the ledger before it is sent, so dispatchers on one ledger never
/// send the same grant, and a crashed dispatcher's grants come back after the lease. Pending
/// grants are read page by page: memory does not grow with their number.
///
/// ```
/// use subscribe_client::test_util::{SEND_PATH, mock_with_stable_token, ok_reply};
/// use subscribe_client::{Client, Dispatcher, GrantKey, GrantLedger, InMemoryGrantLedger};
/// use subscribe_types::*;
/// use subscribe_client::CancellationToken;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let wechat = mock_with_stable_token("T", 7200);
/// wechat.route("POST", SEND_PATH).reply(ok_reply());
/// let client = Client::builder(AppId::new("wx0123456789abcdef")?, AppSecret::new("s")?).transport(wechat).build()?;
/// let ledger = std::sync::Arc::new(InMemoryGrantLedger::new());
/// let (template, scene) = (TemplateId::new("restock")?, Scene::new(1)?);
/// for user in ["oA", "oB", "oC"] {
///     let key = GrantKey { appid: client.appid().clone(), openid: OpenId::new(user)?, template_id: template.clone(), scene };
///     ledger.record(&key, std::time::SystemTime::now()).await?;
/// }
///
/// let stop = CancellationToken::new(); // cancel it from a signal handler to stop early
/// let report = Dispatcher::new(client, ledger)
///     .grants(template.clone(), scene)
///     .message(move |to: &OpenId| {
///         SubscribeMessage::builder(to.clone(), template.clone(), scene)
///             .title("到货提醒").content("您关注的商品已到货").build()
///     })
///     .concurrency(16)
///     .progress(|p: &subscribe_client::Progress| eprintln!("{} sent", p.sent))
///     .cancellation(stop)
///     .run()
///     .await?;
/// assert_eq!(report.progress.delivered, 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[must_use = "a dispatcher does nothing until `run` is called"]
pub struct Dispatcher {
    client: Client,
    ledger: Arc<dyn GrantLedger>,
    grants: Option<(TemplateId, Scene)>,
    message: Option<Build>,
    observer: Box<dyn DispatchObserver>,
    cancel: CancellationToken,
    concurrency: usize,
    rate: Option<f64>,
    lease: Duration,
    page_size: usize,
    keep_outcomes: bool,
    holder: String,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("client", &self.client)
            .field("grants", &self.grants)
            .field("concurrency", &self.concurrency)
            .field("rate", &self.rate)
            .field("lease", &self.lease)
            .field("page_size", &self.page_size)
            .field("keep_outcomes", &self.keep_outcomes)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// A dispatcher over `ledger` sending with `client`. Set [`grants`](Self::grants) and
    /// [`message`](Self::message) before [`run`](Self::run). Defaults: 32 in flight, no rate
    /// limit, 120 s leases, pages of 256, outcomes kept in the report, no observer, never
    /// cancelled.
    pub fn new(client: Client, ledger: impl GrantLedger + 'static) -> Self {
        let mut id = [0u8; 6];
        let _ = getrandom::fill(&mut id);
        Self {
            client,
            ledger: Arc::new(ledger),
            grants: None,
            message: None,
            observer: Box::new(()),
            cancel: CancellationToken::new(),
            concurrency: 32,
            rate: None,
            lease: Duration::from_secs(120),
            page_size: 256,
            keep_outcomes: true,
            holder: format!("dispatch-{}", hex::encode(id)),
        }
    }

    /// Which grants to send to: the pending ones of (`template_id`, `scene`) of the client's app.
    pub fn grants(mut self, template_id: TemplateId, scene: Scene) -> Self {
        self.grants = Some((template_id, scene));
        self
    }

    /// Builds each recipient's message. A message that fails to build, or is not for the
    /// grant's user, template and scene, is not sent; the grant stays pending.
    pub fn message<F>(mut self, build: F) -> Self
    where
        F: Fn(&OpenId) -> Result<SubscribeMessage, ValidationError> + Send + Sync + 'static,
    {
        self.message = Some(Build::OneTime(Arc::new(build)));
        self
    }

    /// Sends a mini-program subscribe message ([`Client::send_mini_program`]) to every pending
    /// grant of the library template `template_id` (recorded under
    /// [`GrantScope::mini_program`]), each built by `build`. A one-time template's grant is used
    /// up by a delivered message; a long-term template's (`kind` [`TemplateKind::LongTerm`])
    /// stays pending for the next dispatch, until the user withdraws the subscription (43101
    /// then drops it). Replaces [`grants`](Self::grants) and [`message`](Self::message).
    pub fn mini_program<F>(mut self, template_id: TemplateId, kind: TemplateKind, build: F) -> Self
    where
        F: Fn(&OpenId) -> Result<MiniProgramMessage, ValidationError> + Send + Sync + 'static,
    {
        self.grants = Some((template_id, Scene::ZERO));
        self.message =
            Some(Build::MiniProgram { build: Arc::new(build), long_term: !kind.is_consumed_by_send() });
        self
    }

    /// Receives each outcome and the running counts, on the dispatching task.
    pub fn observer(mut self, observer: impl DispatchObserver + 'static) -> Self {
        self.observer = Box::new(observer);
        self
    }

    /// Receives the running counts after each outcome (an [`observer`](Self::observer) of
    /// progress only).
    pub fn progress(self, on_progress: impl FnMut(&Progress) + Send + 'static) -> Self {
        self.observer(on_progress)
    }

    /// Stops the dispatch when `token` is cancelled: no new grant is taken; sends in flight
    /// finish and are recorded. The token is [`subscribe_client::CancellationToken`](crate::CancellationToken)
    /// (tokio-util's, re-exported, so no dependency of your own is needed).
    pub fn cancellation(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// Sends in flight at once (at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// At most this many sends started per second (see [`RateLimiter`]).
    pub fn rate_limit(mut self, per_second: f64) -> Self {
        self.rate = (per_second.is_finite() && per_second > 0.0).then_some(per_second);
        self
    }

    /// How long a taken grant is held before another dispatcher may take it (default 120 s).
    /// Keep it well above the transport's timeout.
    pub fn lease(mut self, d: Duration) -> Self {
        self.lease = d;
        self
    }

    /// The most grants claimed per ledger query (default 256; with a
    /// [rate limit](Self::rate_limit), at most a second's worth). One batch is claimed ahead
    /// of the one being sent, so keep the [lease](Self::lease) well above the time two batches
    /// take to send.
    pub fn page_size(mut self, n: usize) -> Self {
        self.page_size = n.max(1);
        self
    }

    /// Whether the report keeps every recipient's outcome (default `true`). Turn it off for
    /// very large dispatches and read outcomes from an observer instead.
    pub fn keep_outcomes(mut self, keep: bool) -> Self {
        self.keep_outcomes = keep;
        self
    }

    /// Sends one message to every pending grant, until none is left or the cancellation token
    /// is cancelled. May be called again (a later run takes what is pending then).
    ///
    /// One task claims pending grants in batches ([`GrantLedger::reserve_next`]), a fixed pool
    /// of [`concurrency`](Self::concurrency) long-lived workers sends them, one task settles
    /// the results in batches ([`GrantLedger::settle_many`]: whatever has finished while the
    /// previous batch was written, so a database commits once per batch), and this task hands
    /// each outcome to the observer: memory does not grow with the number of grants.
    ///
    /// # Errors
    /// [`DispatchError::Unconfigured`] without [`grants`](Self::grants) or
    /// [`message`](Self::message); [`DispatchError::Ledger`] when the ledger cannot be read or a
    /// grant cannot be reserved (sends in flight are finished and recorded first).
    pub async fn run(&mut self) -> Result<DispatchReport, DispatchError> {
        let (template_id, scene) = self.grants.clone().ok_or(DispatchError::Unconfigured("grants"))?;
        let build = self.message.clone().ok_or(DispatchError::Unconfigured("message"))?;
        let scope = GrantScope { appid: self.client.appid().clone(), template_id, scene };
        let clock = Arc::clone(self.client.clock());
        let mut report = DispatchReport::default();
        let pending = self.ledger.counts(&scope, clock.now()).await?.pending;
        report.progress.remaining = pending;
        info!(appid = %scope.appid, template = %scope.template_id, scene = scene.get(), pending, "dispatch starts");

        // A claim: a page, but no more than a second of the rate.
        let mut batch = self.page_size;
        if let Some(rate) = self.rate {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // rate > 0, finite
            let per_second = rate.ceil().min(1e6) as usize;
            batch = batch.min(per_second);
        }
        let batch = batch.max(1);
        // One claimed grant waits for a free worker at most, beside the rest of its batch.
        let (grants_tx, grants_rx) = mpsc::channel::<Reservation>(1);
        // Room for a whole batch of settlements while the previous ones are written.
        let (settle_tx, settle_rx) = mpsc::channel::<Finished>(MAX_SETTLE_BATCH);
        let (outcomes_tx, mut outcomes_rx) = mpsc::channel::<RecipientOutcome>(self.concurrency);
        let sent = Arc::new(AtomicU64::new(0));
        let feeder = tokio::spawn(feed(Feed {
            ledger: Arc::clone(&self.ledger),
            scope,
            clock,
            limiter: self.rate.and_then(|r| RateLimiter::per_second(r, Arc::clone(self.client.clock()))),
            cancel: self.cancel.clone(),
            holder: self.holder.clone(),
            lease: self.lease,
            batch,
            sent: Arc::clone(&sent),
            grants: grants_tx,
        }));
        tokio::spawn(settle(Arc::clone(&self.ledger), settle_rx, outcomes_tx, SETTLE_WRITERS));
        let grants_rx = Arc::new(tokio::sync::Mutex::new(grants_rx));
        for _ in 0..self.concurrency {
            let (grants, finished) = (Arc::clone(&grants_rx), settle_tx.clone());
            let (client, ledger, build) = (self.client.clone(), Arc::clone(&self.ledger), build.clone());
            let (cancel, sent) = (self.cancel.clone(), Arc::clone(&sent));
            tokio::spawn(async move {
                loop {
                    let Some(reservation) = grants.lock().await.recv().await else { break };
                    if cancel.is_cancelled() {
                        // Reserved but not started when the dispatch was cancelled: give it back.
                        let _ = ledger.settle(&reservation, Settlement::Release).await;
                        sent.fetch_sub(1, Ordering::AcqRel);
                        continue;
                    }
                    let done = send_one(&client, &build, reservation).await;
                    if finished.send(done).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(settle_tx);
        while let Some(outcome) = outcomes_rx.recv().await {
            let done = sent.load(Ordering::Acquire);
            report.progress.sent = done;
            report.progress.remaining = pending.saturating_sub(done);
            self.collect(outcome, &mut report);
        }
        let failure = match feeder.await {
            Ok(result) => result.err(),
            Err(e) => Some(LedgerError::backend(format!("the dispatch's grant reader failed: {e}"))),
        };
        report.progress.sent = sent.load(Ordering::Acquire);
        report.progress.remaining = pending.saturating_sub(report.progress.sent);
        report.cancelled = self.cancel.is_cancelled();
        let p = report.progress;
        info!(
            sent = p.sent,
            delivered = p.delivered,
            failed = p.failed,
            unknown = p.unknown,
            dropped = p.dropped,
            cancelled = report.cancelled,
            "dispatch ends"
        );
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(report),
        }
    }

    fn collect(&mut self, outcome: RecipientOutcome, report: &mut DispatchReport) {
        let p = &mut report.progress;
        match outcome.kind {
            OutcomeKind::Delivered => p.delivered += 1,
            OutcomeKind::Failed => p.failed += 1,
            OutcomeKind::Unknown => p.unknown += 1,
            OutcomeKind::Dropped => p.dropped += 1,
        }
        self.observer.on_outcome(&outcome);
        self.observer.on_progress(&report.progress);
        if self.keep_outcomes {
            report.outcomes.push(outcome);
        }
    }
}

/// What the grant reader of one dispatch needs.
struct Feed {
    ledger: Arc<dyn GrantLedger>,
    scope: GrantScope,
    clock: crate::SharedClock,
    limiter: Option<RateLimiter>,
    cancel: CancellationToken,
    holder: String,
    lease: Duration,
    batch: usize,
    sent: Arc<AtomicU64>,
    grants: mpsc::Sender<Reservation>,
}

/// Claims pending grants in batches and hands each to a free worker (after the rate
/// limiter), until none is left, the dispatch is cancelled, or the ledger fails. The next batch
/// is claimed while this one is handed out, so the ledger's latency overlaps the sends; grants
/// claimed but not handed out when the dispatch stops are released.
async fn feed(f: Feed) -> Result<(), LedgerError> {
    let (batches_tx, mut batches) = mpsc::channel::<Vec<Reservation>>(1);
    let claiming = tokio::spawn(claim(
        Arc::clone(&f.ledger),
        f.scope.clone(),
        f.clock.clone(),
        f.cancel.clone(),
        (f.holder.clone(), f.lease, f.batch),
        batches_tx,
    ));
    'batches: while let Some(batch) = batches.recv().await {
        let mut claimed = batch.into_iter();
        while let Some(reservation) = claimed.next() {
            // Wait for a free worker, so a grant is never handed out long before its send.
            let slot = match f.grants.reserve().await {
                Ok(slot) if !f.cancel.is_cancelled() => slot,
                _ => {
                    release(&*f.ledger, std::iter::once(reservation).chain(claimed).collect()).await;
                    break 'batches;
                }
            };
            if let Some(limiter) = &f.limiter {
                limiter.until_ready().await;
            }
            f.sent.fetch_add(1, Ordering::Release);
            slot.send(reservation);
        }
    }
    // Stopped early: the claimer stops (its next wait for room fails), then the batch it
    // claimed ahead goes back.
    batches.close();
    let result = match claiming.await {
        Ok(result) => result,
        Err(e) => Err(LedgerError::backend(format!("the dispatch's grant claimer failed: {e}"))),
    };
    while let Some(ahead) = batches.recv().await {
        release(&*f.ledger, ahead).await;
    }
    result
}

/// Claims batches of pending grants in `openid` order until none is left, the dispatch is
/// cancelled, the feeder stops taking them, or the ledger fails.
async fn claim(
    ledger: Arc<dyn GrantLedger>,
    scope: GrantScope,
    clock: crate::SharedClock,
    cancel: CancellationToken,
    (holder, lease, batch): (String, Duration, usize),
    batches: mpsc::Sender<Vec<Reservation>>,
) -> Result<(), LedgerError> {
    let mut cursor: Option<OpenId> = None;
    while !cancel.is_cancelled() {
        // Wait for room first: at most one batch is claimed ahead of the one handed out.
        let Ok(slot) = batches.reserve().await else { return Ok(()) };
        let claimed =
            ledger.reserve_next(&scope, cursor.as_ref(), batch, &holder, lease, clock.now()).await?;
        let Some(next) = claimed.cursor else {
            release(&*ledger, claimed.reservations).await;
            return Ok(());
        };
        // A ledger whose claims do not move past the cursor would keep this loop going forever.
        if cursor.as_ref().is_some_and(|c| &next <= c) {
            release(&*ledger, claimed.reservations).await;
            return Err(LedgerError::backend("the ledger's reserve_next did not advance past its cursor"));
        }
        cursor = Some(next);
        if !claimed.reservations.is_empty() {
            slot.send(claimed.reservations);
        }
    }
    Ok(())
}

/// Gives claimed grants back untouched (the dispatch stopped before sending them).
async fn release(ledger: &dyn GrantLedger, reservations: Vec<Reservation>) {
    if !reservations.is_empty() {
        let _ =
            ledger.settle_many(reservations.into_iter().map(|r| (r, Settlement::Release)).collect()).await;
    }
}

/// A send that finished: the reservation, how to settle it, and the outcome to report once
/// it is settled.
type Finished = (Reservation, Settlement, RecipientOutcome);

/// Batches of settlements written at once. Few, so batches grow while one is written: a
/// database then commits many settlements at a time instead of contending for its counters
/// with one transaction per send.
const SETTLE_WRITERS: usize = 2;

/// The most settlements written in one [`GrantLedger::settle_many`].
const MAX_SETTLE_BATCH: usize = 256;

/// Settles finished sends in batches: whatever has finished while earlier batches were being
/// written, at most `parallel` batches at once; then reports each outcome with its ledger
/// error, if any.
async fn settle(
    ledger: Arc<dyn GrantLedger>,
    mut finished: mpsc::Receiver<Finished>,
    outcomes: mpsc::Sender<RecipientOutcome>,
    parallel: usize,
) {
    let mut writing = tokio::task::JoinSet::new();
    loop {
        let first = tokio::select! {
            item = finished.recv() => item,
            Some(_) = writing.join_next(), if !writing.is_empty() => continue,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < MAX_SETTLE_BATCH {
            match finished.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        while writing.len() >= parallel {
            writing.join_next().await;
        }
        let (ledger, outcomes) = (Arc::clone(&ledger), outcomes.clone());
        writing.spawn(async move {
            let (items, reports): (Vec<_>, Vec<_>) = batch.into_iter().map(|(r, s, o)| ((r, s), o)).unzip();
            let mut results = ledger.settle_many(items).await.into_iter();
            for mut outcome in reports {
                outcome.ledger_error = match results.next() {
                    Some(Ok(())) => None,
                    Some(Err(e)) => Some(e.to_string()),
                    None => Some("the ledger returned no result for this settlement".to_owned()),
                };
                if outcomes.send(outcome).await.is_err() {
                    return;
                }
            }
        });
    }
    while writing.join_next().await.is_some() {}
}

async fn send_one(client: &Client, build: &Build, r: Reservation) -> Finished {
    let openid = r.key.openid.clone();
    let not_for_this_grant = "the built message is not for this grant's user, template and scene";
    // A panicking message function fails this grant, not the worker.
    let (kind, errcode, detail, settlement) = match build {
        Build::OneTime(build) => {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| build(&openid))) {
                Err(_) => panicked(),
                Ok(Err(e)) => not_built(&e),
                Ok(Ok(msg))
                    if msg.template_id() != &r.key.template_id
                        || msg.scene() != r.key.scene
                        || msg.touser() != &openid =>
                {
                    (OutcomeKind::Failed, None, Some(not_for_this_grant.to_owned()), Settlement::Release)
                }
                Ok(Ok(msg)) => classify(client.send(&msg).await, r.attempt),
            }
        }
        Build::MiniProgram { build, long_term } => {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| build(&openid))) {
                Err(_) => panicked(),
                Ok(Err(e)) => not_built(&e),
                Ok(Ok(msg)) if msg.template_id() != &r.key.template_id || msg.touser() != &openid => {
                    (OutcomeKind::Failed, None, Some(not_for_this_grant.to_owned()), Settlement::Release)
                }
                Ok(Ok(msg)) => match classify(client.send_mini_program(&msg).await, r.attempt) {
                    // A long-term subscription is not used up: the grant waits for the next one.
                    (OutcomeKind::Delivered, code, detail, Settlement::Delivered) if *long_term => {
                        (OutcomeKind::Delivered, code, detail, Settlement::Release)
                    }
                    other => other,
                },
            }
        }
    };
    (r, settlement, RecipientOutcome { openid, kind, errcode, detail, ledger_error: None })
}

/// What a message function's panic means for its grant.
fn panicked() -> (OutcomeKind, Option<ErrCode>, Option<String>, Settlement) {
    (OutcomeKind::Failed, None, Some("the message function panicked".to_owned()), Settlement::Release)
}

/// What a message that could not be built means for its grant.
fn not_built(e: &ValidationError) -> (OutcomeKind, Option<ErrCode>, Option<String>, Settlement) {
    (OutcomeKind::Failed, None, Some(format!("message not built: {e}")), Settlement::Release)
}

/// The most characters of an error's text that a ledger reason or an outcome's detail keeps:
/// WeChat's `errmsg` is echoed into it, and an answer may be as long as the transport's limit.
pub const MAX_REASON_CHARS: usize = 256;

/// `text`, cut to [`MAX_REASON_CHARS`] characters (with `…` when cut).
fn bounded(mut text: String) -> String {
    if let Some((at, _)) = text.char_indices().nth(MAX_REASON_CHARS) {
        text.truncate(at);
        text.push('…');
    }
    text
}

/// Maps a send's result to the grant's fate.
fn classify(
    result: Result<crate::SendReceipt, SendError>,
    attempt: u32,
) -> (OutcomeKind, Option<ErrCode>, Option<String>, Settlement) {
    let Err(e) = result else {
        return (OutcomeKind::Delivered, None, None, Settlement::Delivered);
    };
    let code = e.api_code();
    let text = bounded(e.to_string());
    if !e.outcome_known() {
        return (OutcomeKind::Unknown, code, Some(text.clone()), Settlement::Review(text));
    }
    match e.retry_class() {
        // After an earlier sender's lapsed reservation, a refusal most likely means that
        // sender delivered before it stopped: review, do not drop.
        Some(ErrorClass::UserRefused) if attempt > 1 => {
            let why = format!("{text} (after an interrupted earlier attempt: probably delivered)");
            (OutcomeKind::Unknown, code, Some(why.clone()), Settlement::Review(why))
        }
        Some(ErrorClass::UserRefused | ErrorClass::InvalidRecipient) => {
            (OutcomeKind::Dropped, code, Some(text.clone()), Settlement::Drop(text))
        }
        _ => (OutcomeKind::Failed, code, Some(text), Settlement::Release),
    }
}
