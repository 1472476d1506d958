//! [`Dispatcher`]: one message to every pending grant of a template: its constructors (one per
//! kind of message, each with what the dispatch cannot run without), its options and `run`.

mod pipeline;
mod report;
mod send;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use subscribe_types::{
    MiniProgramMessage, NotificationMessage, OneTimeMessage, OpenId, Scene, TemplateId, TemplateKind,
    ValidationError,
};
use tokio::sync::mpsc;
use tracing::info;

use self::pipeline::{Feed, Finished, MAX_SETTLE_BATCH, SETTLE_WRITERS, feed, settle};
pub use self::report::{
    DispatchError, DispatchObserver, DispatchReport, OutcomeKind, Progress, RecipientOutcome,
};
pub use self::send::MAX_REASON_CHARS;
use self::send::{Build, send_one};
use crate::CancellationToken;
use crate::Client;
use crate::grants::{GrantLedger, GrantScope, LedgerError, Reservation, Settlement};
use crate::rate::RateLimiter;

/// Sends one message to every pending grant of a template, with bounded concurrency, an
/// optional rate limit, progress, and a per-recipient outcome. Built by one constructor per
/// kind of message ([`one_time`](Self::one_time), [`mini_program`](Self::mini_program),
/// [`notification`](Self::notification)), each taking the grants to send to and the function
/// that builds each recipient's message, so a dispatcher cannot be built without them.
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
/// let message = {
///     let template = template.clone();
///     move |to: &OpenId| {
///         OneTimeMessage::builder(to.clone(), template.clone(), scene)
///             .title("到货提醒").content("您关注的商品已到货").build()
///     }
/// };
/// let report = Dispatcher::one_time(client, ledger, template, scene, message)
///     .concurrency(16)
///     .progress(|p: &subscribe_client::Progress| eprintln!("{} sent", p.sent))
///     .cancellation(stop.clone()) // keep `stop` to cancel with
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
    grants: (TemplateId, Scene),
    message: Build,
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
    /// One-time messages ([`Client::send_one_time`]) to every pending grant of (`template_id`, `scene`)
    /// of the client's app in `ledger`, each built by `build`. A message that fails to build, or
    /// is not for the grant's user, template and scene, is not sent; the grant stays pending.
    ///
    /// Defaults: 32 in flight, no rate limit, 120 s leases, pages of 256, outcomes kept in the
    /// report, no observer, never cancelled.
    pub fn one_time<F>(
        client: Client,
        ledger: impl GrantLedger + 'static,
        template_id: TemplateId,
        scene: Scene,
        build: F,
    ) -> Self
    where
        F: Fn(&OpenId) -> Result<OneTimeMessage, ValidationError> + Send + Sync + 'static,
    {
        Self::with(client, ledger, (template_id, scene), Build::OneTime(Arc::new(build)))
    }

    /// Mini-program subscribe messages ([`Client::send_mini_program`]) to every pending grant
    /// of the library template `template_id` (recorded under [`GrantScope::mini_program`]),
    /// each built by `build`. A one-time template's grant is used up by a delivered message; a
    /// long-term template's (`kind` [`TemplateKind::LongTerm`]) stays pending for the next
    /// dispatch, until the user withdraws the subscription (43101 then drops it). Defaults as
    /// [`one_time`](Self::one_time).
    ///
    /// `kind` is yours to state: the dispatcher does not ask WeChat (the template library's
    /// `type`, 2 one-time and 3 long-term, is in [`Client::templates`]'s list). Stated wrongly,
    /// WeChat's own count bounds the harm, and no user gets a second message: a one-time
    /// template stated as long-term keeps its delivered grant pending, and the next dispatch's
    /// send to it is refused with 43101, which drops it (one refused send); a long-term
    /// template stated as one-time uses each grant up after one message.
    pub fn mini_program<F>(
        client: Client,
        ledger: impl GrantLedger + 'static,
        template_id: TemplateId,
        kind: TemplateKind,
        build: F,
    ) -> Self
    where
        F: Fn(&OpenId) -> Result<MiniProgramMessage, ValidationError> + Send + Sync + 'static,
    {
        let long_term = !kind.is_consumed_by_send();
        Self::with(
            client,
            ledger,
            (template_id, Scene::ZERO),
            Build::MiniProgram { build: Arc::new(build), long_term },
        )
    }

    /// Service-account subscribe notifications ([`Client::send_notification`]) to every
    /// pending grant of the library template `template_id` (recorded under
    /// [`GrantScope::notification`]), each built by `build`; a delivered
    /// notification's `msgid` is in its [`RecipientOutcome`]. A long-term template's grant
    /// stays pending, and `kind` is trusted, as with [`mini_program`](Self::mini_program). Defaults as
    /// [`one_time`](Self::one_time).
    pub fn notification<F>(
        client: Client,
        ledger: impl GrantLedger + 'static,
        template_id: TemplateId,
        kind: TemplateKind,
        build: F,
    ) -> Self
    where
        F: Fn(&OpenId) -> Result<NotificationMessage, ValidationError> + Send + Sync + 'static,
    {
        let long_term = !kind.is_consumed_by_send();
        Self::with(
            client,
            ledger,
            (template_id, Scene::ZERO),
            Build::Notification { build: Arc::new(build), long_term },
        )
    }

    fn with(
        client: Client,
        ledger: impl GrantLedger + 'static,
        grants: (TemplateId, Scene),
        message: Build,
    ) -> Self {
        let mut id = [0u8; 6];
        let _ = getrandom::fill(&mut id);
        Self {
            client,
            ledger: Arc::new(ledger),
            grants,
            message,
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
    /// Dropping the returned future (a `select!` that took another branch, a request timeout,
    /// an aborted task) cancels the dispatch as the token does: nothing new is reserved or
    /// started, a grant reserved but not started is given back, and the sends in flight finish
    /// and are recorded on their own tasks. The dispatch never goes on sending unobserved.
    ///
    /// One task claims pending grants in batches ([`GrantLedger::reserve_next`]), a fixed pool
    /// of [`concurrency`](Self::concurrency) long-lived workers sends them, one task settles
    /// the results in batches ([`GrantLedger::settle_many`]: whatever has finished while the
    /// previous batch was written, so a database commits once per batch), and this task hands
    /// each outcome to the observer: memory does not grow with the number of grants.
    ///
    /// A settlement the ledger's backend failed (a lost connection, a timeout, a restart:
    /// written or not, nobody knows) is written again while the grant's reservation lasts
    /// (100 ms apart, doubling to 1 s, until a second before the lease ends), so a delivery is
    /// recorded once the store answers again; one still unwritten is reported with its
    /// [`ledger_error`](RecipientOutcome::ledger_error), and its grant comes back after the
    /// lease as a second attempt, which WeChat refuses when the first was delivered: review,
    /// never a second message. A cancelled dispatch stops retrying (after one last attempt).
    ///
    /// # Errors
    /// [`DispatchError::Ledger`] when the ledger cannot be read or a grant cannot be reserved
    /// (sends in flight are finished and recorded first).
    pub async fn run(&mut self) -> Result<DispatchReport, DispatchError> {
        let (template_id, scene) = self.grants.clone();
        let build = self.message.clone();
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
        // The pipeline's own token: a child of the caller's, cancelled when this future ends,
        // finished or dropped, so its tasks never outlive the dispatch they serve.
        let cancel = self.cancel.child_token();
        let _stop_when_dropped = cancel.clone().drop_guard();
        let feeder = tokio::spawn(feed(Feed {
            ledger: Arc::clone(&self.ledger),
            scope,
            clock,
            limiter: self.rate.and_then(|r| RateLimiter::per_second(r, Arc::clone(self.client.clock()))),
            cancel: cancel.clone(),
            holder: self.holder.clone(),
            lease: self.lease,
            batch,
            sent: Arc::clone(&sent),
            grants: grants_tx,
        }));
        let clock = Arc::clone(self.client.clock());
        tokio::spawn(settle(
            (Arc::clone(&self.ledger), clock),
            (self.lease, cancel.clone()),
            settle_rx,
            outcomes_tx,
            SETTLE_WRITERS,
        ));
        let grants_rx = Arc::new(tokio::sync::Mutex::new(grants_rx));
        for _ in 0..self.concurrency {
            let (grants, finished) = (Arc::clone(&grants_rx), settle_tx.clone());
            let (client, ledger, build) = (self.client.clone(), Arc::clone(&self.ledger), build.clone());
            let (cancel, sent) = (cancel.clone(), Arc::clone(&sent));
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
