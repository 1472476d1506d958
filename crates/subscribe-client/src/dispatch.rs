//! [`Dispatcher`]: one message to every pending grant of a (template, scene).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use subscribe_types::{ErrCode, ErrorClass, OpenId, Scene, SubscribeMessage, TemplateId, ValidationError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

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
    /// What to do about it: `Configuration` for a builder left unconfigured, `Retryable` when
    /// the ledger failed (run the dispatch again: reserved grants come back after their lease).
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            Self::Unconfigured(_) => crate::ErrorKind::Configuration,
            Self::Ledger(_) => crate::ErrorKind::Retryable,
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
    message: Option<Arc<MessageFn>>,
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
        self.message = Some(Arc::new(build));
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
    /// finish and are recorded.
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

    /// Pending grants read per ledger query (default 256).
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
    /// One task reads pending grants page by page and reserves them, a fixed pool of
    /// [`concurrency`](Self::concurrency) long-lived workers sends and settles them, and this
    /// task hands each outcome to the observer: memory does not grow with the number of grants.
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

        // One reserved grant waits for a free worker at most.
        let (grants_tx, grants_rx) = mpsc::channel::<Reservation>(1);
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
            page_size: self.page_size,
            sent: Arc::clone(&sent),
            grants: grants_tx,
        }));
        let grants_rx = Arc::new(tokio::sync::Mutex::new(grants_rx));
        for _ in 0..self.concurrency {
            let (grants, outcomes) = (Arc::clone(&grants_rx), outcomes_tx.clone());
            let (client, ledger, build) = (self.client.clone(), Arc::clone(&self.ledger), Arc::clone(&build));
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
                    let outcome = send_one(&client, &*ledger, &*build, reservation).await;
                    if outcomes.send(outcome).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(outcomes_tx);
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
    page_size: usize,
    sent: Arc<AtomicU64>,
    grants: mpsc::Sender<Reservation>,
}

/// Reads pending grants page by page, reserves each (after the rate limiter) and hands it to
/// the workers, until none is left, the dispatch is cancelled, or the ledger fails.
async fn feed(f: Feed) -> Result<(), LedgerError> {
    let mut cursor: Option<OpenId> = None;
    while !f.cancel.is_cancelled() {
        let page = f.ledger.pending_page(&f.scope, cursor.as_ref(), f.page_size, f.clock.now()).await?;
        let Some(last) = page.last() else { return Ok(()) };
        // A ledger whose page does not move past the cursor would keep this loop going forever.
        if cursor.as_ref().is_some_and(|c| last <= c) {
            return Err(LedgerError::backend("the ledger's pending_page did not advance past its cursor"));
        }
        cursor = Some(last.clone());
        for openid in page {
            // Wait for a free worker first, so a grant is never reserved long before its send.
            let Ok(slot) = f.grants.reserve().await else { return Ok(()) };
            if f.cancel.is_cancelled() {
                return Ok(());
            }
            if let Some(limiter) = &f.limiter {
                limiter.until_ready().await;
            }
            let key = f.scope.key(openid);
            // `None`: another dispatcher has it, or it was settled meanwhile.
            if let Some(reservation) = f.ledger.reserve(&key, &f.holder, f.lease, f.clock.now()).await? {
                f.sent.fetch_add(1, Ordering::Release);
                slot.send(reservation);
            }
        }
    }
    Ok(())
}

async fn send_one(
    client: &Client,
    ledger: &dyn GrantLedger,
    build: &MessageFn,
    r: Reservation,
) -> RecipientOutcome {
    let openid = r.key.openid.clone();
    // A panicking message function fails this grant, not the worker.
    let message = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| build(&openid)));
    let (kind, errcode, detail, settlement) = match message {
        Err(_) => {
            (OutcomeKind::Failed, None, Some("the message function panicked".to_owned()), Settlement::Release)
        }
        Ok(Err(e)) => {
            (OutcomeKind::Failed, None, Some(format!("message not built: {e}")), Settlement::Release)
        }
        Ok(Ok(msg))
            if msg.template_id() != &r.key.template_id
                || msg.scene() != r.key.scene
                || msg.touser() != &openid =>
        {
            (
                OutcomeKind::Failed,
                None,
                Some("the built message is not for this grant's user, template and scene".to_owned()),
                Settlement::Release,
            )
        }
        Ok(Ok(msg)) => classify(client.send(&msg).await, r.attempt),
    };
    let ledger_error = ledger.settle(&r, settlement).await.err().map(|e| e.to_string());
    RecipientOutcome { openid, kind, errcode, detail, ledger_error }
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
