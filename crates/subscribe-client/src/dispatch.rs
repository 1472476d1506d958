//! [`Dispatcher`]: one message to every pending grant of a (template, scene).

use std::sync::Arc;
use std::time::Duration;

use subscribe_types::{ErrCode, ErrorClass, OpenId, Scene, SubscribeMessage, TemplateId, ValidationError};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

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
    /// # Errors
    /// [`DispatchError::Unconfigured`] without [`grants`](Self::grants) or
    /// [`message`](Self::message); [`DispatchError::Ledger`] when the ledger cannot be read or a
    /// grant cannot be reserved (sends in flight are finished and recorded first).
    pub async fn run(&mut self) -> Result<DispatchReport, DispatchError> {
        let (template_id, scene) = self.grants.clone().ok_or(DispatchError::Unconfigured("grants"))?;
        let build = self.message.clone().ok_or(DispatchError::Unconfigured("message"))?;
        let scope = GrantScope { appid: self.client.appid().clone(), template_id, scene };
        let clock = Arc::clone(self.client.clock());
        let limiter = self.rate.and_then(|r| RateLimiter::per_second(r, Arc::clone(&clock)));
        let cancel = self.cancel.clone();
        let mut report = DispatchReport::default();
        report.progress.remaining = self.ledger.counts(&scope, clock.now()).await?.pending;
        info!(appid = %scope.appid, template = %scope.template_id, scene = scene.get(), pending = report.progress.remaining, "dispatch starts");

        let mut tasks: JoinSet<RecipientOutcome> = JoinSet::new();
        let mut cursor: Option<OpenId> = None;
        let mut failure: Option<LedgerError> = None;
        'pages: while !cancel.is_cancelled() {
            let page =
                match self.ledger.pending_page(&scope, cursor.as_ref(), self.page_size, clock.now()).await {
                    Ok(p) => p,
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                };
            let Some(last) = page.last() else { break };
            cursor = Some(last.clone());
            for openid in page {
                if cancel.is_cancelled() {
                    break 'pages;
                }
                while tasks.len() >= self.concurrency {
                    self.collect(tasks.join_next().await, &mut report);
                }
                if let Some(limiter) = &limiter {
                    limiter.until_ready().await;
                }
                let key = scope.key(openid);
                let reservation = match self.ledger.reserve(&key, &self.holder, self.lease, clock.now()).await
                {
                    Ok(Some(r)) => r,
                    Ok(None) => continue, // another dispatcher has it, or it was settled meanwhile
                    Err(e) => {
                        failure = Some(e);
                        break 'pages;
                    }
                };
                report.progress.sent += 1;
                report.progress.remaining = report.progress.remaining.saturating_sub(1);
                let (client, ledger, build) =
                    (self.client.clone(), Arc::clone(&self.ledger), Arc::clone(&build));
                tasks.spawn(send_one(client, ledger, build, reservation));
            }
        }
        while let Some(done) = tasks.join_next().await {
            self.collect(Some(done), &mut report);
        }
        report.cancelled = cancel.is_cancelled();
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

    fn collect(
        &mut self,
        done: Option<Result<RecipientOutcome, tokio::task::JoinError>>,
        report: &mut DispatchReport,
    ) {
        let Some(done) = done else { return };
        let outcome = match done {
            Ok(o) => o,
            Err(e) => {
                // A send task panicked (a panicking `build`): its grant's lease will lapse.
                warn!(error = %e, "a send task failed");
                return;
            }
        };
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

async fn send_one(
    client: Client,
    ledger: Arc<dyn GrantLedger>,
    build: Arc<MessageFn>,
    r: Reservation,
) -> RecipientOutcome {
    let openid = r.key.openid.clone();
    let (kind, errcode, detail, settlement) = match build(&openid) {
        Err(e) => (OutcomeKind::Failed, None, Some(format!("message not built: {e}")), Settlement::Release),
        Ok(msg)
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
        Ok(msg) => classify(client.send(&msg).await, r.attempt),
    };
    let ledger_error = ledger.settle(&r, settlement).await.err().map(|e| e.to_string());
    RecipientOutcome { openid, kind, errcode, detail, ledger_error }
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
    let text = e.to_string();
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
