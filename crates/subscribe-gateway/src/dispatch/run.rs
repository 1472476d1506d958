//! Running dispatch jobs: the library's [`Dispatcher`] on the job's grants, the job's hold
//! renewed with its progress every second (a stop asked through another gateway is seen
//! there), its end stored; and the adoption of jobs whose gateway stopped renewing them.
//!
//! A resumed job runs the dispatcher again: the grants its earlier gateway had taken come back
//! when their lease lapses (the job waits for them) and are taken as a second attempt, which the
//! library sets aside for review when WeChat refuses it (the message most likely went out before
//! the stop). No grant is sent by two dispatches at once, and none is sent again once recorded.
//!
//! A long-term template's job runs once and is never resumed: its delivered grants stay pending
//! (they are not used up), so a second run would send them again. Stopped with its gateway it
//! ends `cancelled`; found lapsed (its gateway killed) it ends `failed`; either way saying so.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use subscribe_client::{
    CancellationToken, Client, DispatchObserver, Dispatcher, GrantLedger, GrantScope, Progress,
    RecipientOutcome,
};
use subscribe_types::{OpenId, TemplateKind, ValidationError};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::Spec;
use crate::Gateway;
use crate::jobs::{JobProgress, JobRecord, JobState, SharedJobStore};
use crate::metrics::Metrics;
use crate::send::{CheckedMessage, Kind};

/// The recipient a dispatch's message is checked for before the job starts.
pub(super) const PLACEHOLDER: &str = "oDispatchCheck_000000000000";

/// How often a job's hold is renewed with its progress, at most.
const RENEW_EVERY: Duration = Duration::from_secs(1);

/// How often the grants another dispatch holds are counted while a job waits for them.
const WAIT_STEP: Duration = Duration::from_secs(1);

/// The most a stopping gateway waits for its jobs to hand back: more than a send can take (the
/// transport gives up after 15 s), so that the sends in flight finish and are recorded.
const HAND_BACK_WAIT: Duration = Duration::from_secs(20);

/// How often the ended jobs past their retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// This gateway's side of the dispatch jobs: the store, who it is, its leases, and the jobs it
/// runs now.
pub(crate) struct Jobs {
    pub(crate) store: SharedJobStore,
    /// Set when the gateway stops: no job starts or is adopted here any more.
    stopping: AtomicBool,
    owner: String,
    lease: Duration,
    grant_lease: Duration,
    retention: Duration,
    local: Mutex<HashMap<String, Local>>,
}

/// A job running here.
struct Local {
    signals: Arc<Signals>,
    task: Option<JoinHandle<()>>,
}

/// Why a job's dispatcher was stopped.
#[derive(Default)]
struct Signals {
    /// Cancelled for any of the reasons below.
    stop: CancellationToken,
    /// A stop was asked (`…/cancel`).
    cancel_asked: AtomicBool,
    /// This gateway is stopping: the job is handed back, not ended.
    handing_back: AtomicBool,
    /// Another gateway holds the job now (this one's renewals failed past its lease).
    lost: AtomicBool,
}

impl Signals {
    fn raise(&self, flag: &AtomicBool) {
        flag.store(true, Ordering::Release);
        self.stop.cancel();
    }
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("store", &self.store)
            .field("owner", &self.owner)
            .field("lease", &self.lease)
            .field("grant_lease", &self.grant_lease)
            .finish_non_exhaustive()
    }
}

impl Jobs {
    pub(crate) fn new(store: SharedJobStore, config: &crate::config::DispatchConfig) -> Self {
        let mut id = [0u8; 8];
        let _ = getrandom::fill(&mut id);
        let owner = format!("gateway-{}", hex::encode(id));
        Self {
            store,
            owner,
            lease: config.job_lease,
            grant_lease: config.grant_lease,
            retention: config.retention,
            stopping: AtomicBool::new(false),
            local: Mutex::default(),
        }
    }

    pub(crate) fn owner(&self) -> &str {
        &self.owner
    }

    pub(crate) fn lease(&self) -> Duration {
        self.lease
    }

    /// Whether the gateway is stopping (no job starts here).
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn local(&self) -> MutexGuard<'_, HashMap<String, Local>> {
        self.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops the job `id` at once if it runs here (a stop was asked).
    pub(crate) fn stop_local(&self, id: &str) {
        if let Some(local) = self.local().get(id) {
            local.signals.raise(&local.signals.cancel_asked);
        }
    }
}

/// A new job id: the time in milliseconds (12 hexadecimal digits) and 16 random ones, so that
/// ids sort by creation.
pub(super) fn new_id(now: SystemTime) -> String {
    let ms = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let mut random = [0u8; 8];
    let _ = getrandom::fill(&mut random);
    format!("{:012x}{}", ms & 0xffff_ffff_ffff, hex::encode(random))
}

/// Whether `id` is a job id's shape (28 lowercase hexadecimal characters).
pub(super) fn is_id(id: &str) -> bool {
    id.len() == 28 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Runs `job` on this gateway, which holds it, unless it runs here already (this gateway
/// adopted its own job after its renewals failed for a lease: the run here goes on).
pub(super) fn spawn(gw: &Gateway, job: JobRecord) {
    let signals = Arc::new(Signals::default());
    let id = job.id.clone();
    // The task removes its entry when it ends: the lock is held until the entry is in.
    let mut local = gw.shared.jobs.local();
    if local.contains_key(&id) {
        return;
    }
    let task = tokio::spawn(run(gw.clone(), job, Arc::clone(&signals)));
    local.insert(id, Local { signals, task: Some(task) });
}

/// How a job's run ended here.
enum End {
    /// Stored as ended.
    Ended(JobState, Option<String>),
    /// Handed back for another gateway (or this one's restart) to resume.
    HandedBack,
    /// Another gateway holds it.
    Lost,
}

/// Ends a run's renewals and takes its job off this gateway's list however the run ends (a
/// panic included), so that a job is never renewed here without running here.
struct Cleanup {
    gw: Gateway,
    id: String,
    renewals: JoinHandle<()>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.renewals.abort();
        self.gw.shared.jobs.local().remove(&self.id);
    }
}

async fn run(gw: Gateway, job: JobRecord, signals: Arc<Signals>) {
    let jobs = &gw.shared.jobs;
    let progress = Arc::new(Mutex::new(job.progress));
    let renewals = tokio::spawn(renew(
        Arc::clone(&jobs.store),
        (job.id.clone(), jobs.owner.clone(), jobs.lease),
        Arc::clone(&progress),
        Arc::clone(&signals),
    ));
    let _cleanup = Cleanup { gw: gw.clone(), id: job.id.clone(), renewals };
    let end = drive(&gw, &job, &progress, &signals).await;
    let last = *lock(&progress);
    let store = &jobs.store;
    match &end {
        End::Ended(state, detail) => {
            gw.metrics().dispatch_job(&job.appid, state.as_str());
            info!(appid = %job.appid, job = %job.id, state = state.as_str(), sent = last.sent, delivered = last.delivered, "a dispatch job ended");
            // Tried until stored or no longer held: the renewals go on meanwhile, and stop the
            // tries once the hold is lost (another gateway then finds nothing pending, and ends it).
            loop {
                match store.finish(&job.id, &jobs.owner, *state, &last, detail.as_deref()).await {
                    Ok(_) => break,
                    Err(e) => {
                        warn!(job = %job.id, error = %e, "could not store a dispatch job's end; trying again");
                    }
                }
                if signals.lost.load(Ordering::Acquire) {
                    break;
                }
                tokio::time::sleep(WAIT_STEP).await;
            }
        }
        End::HandedBack => {
            info!(appid = %job.appid, job = %job.id, "a dispatch job was handed back for another gateway to resume");
            if let Err(e) = store.release(&job.id, &jobs.owner, &last).await {
                warn!(job = %job.id, error = %e, "could not hand a dispatch job back; it is resumed after its lease");
            }
        }
        End::Lost => {
            warn!(appid = %job.appid, job = %job.id, "another gateway took a dispatch job over, or its hold lapsed; this one stopped it");
        }
    }
}

/// Renews the hold every second with the progress, until aborted or the hold is lost: taken by
/// another gateway, or not renewed within a lease of the last renewal that was (the store
/// failing or slow), after which another gateway may adopt the job, so the run here stops
/// taking grants first. Each renewal is given only the time left of the lease it renews.
async fn renew(
    store: SharedJobStore,
    (id, owner, lease): (String, String, Duration),
    progress: Arc<Mutex<JobProgress>>,
    signals: Arc<Signals>,
) {
    let every = RENEW_EVERY.min(lease / 3);
    // When the last renewal that succeeded was sent: the store's lease runs from no earlier.
    let mut held_since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let now = *lock(&progress);
        let sent = tokio::time::Instant::now();
        let left = lease.saturating_sub(held_since.elapsed());
        match tokio::time::timeout(left, store.renew(&id, &owner, &now, lease)).await {
            Ok(Ok(Some(cancel))) => {
                held_since = sent;
                if cancel {
                    signals.raise(&signals.cancel_asked);
                }
            }
            Ok(Ok(None)) => {
                signals.raise(&signals.lost);
                return;
            }
            Ok(Err(e)) if held_since.elapsed() + every < lease => {
                warn!(job = %id, error = %e, "could not renew a dispatch job's hold");
            }
            Ok(Err(_)) | Err(_) => {
                warn!(job = %id, "a dispatch job's hold could not be renewed within its lease: stopped here, for a gateway on the store to resume");
                signals.raise(&signals.lost);
                return;
            }
        }
    }
}

/// The dispatcher, run again after it ends while another holds some of the grants, until none
/// is pending that it can take, or it is stopped.
async fn drive(gw: &Gateway, job: &JobRecord, progress: &Arc<Mutex<JobProgress>>, signals: &Signals) -> End {
    let failed = |why: &str| End::Ended(JobState::Failed, Some(why.to_owned()));
    if job.cancel_requested {
        return End::Ended(JobState::Cancelled, None);
    }
    let Ok(spec) = serde_json::from_str::<Spec>(&job.spec) else {
        return failed("the job's stored message is not in the format this gateway reads");
    };
    if spec.long_term && job.resumed > 0 {
        return failed(LONG_TERM_NOT_RESUMED);
    }
    let Some(client) = gw.shared.apps.get(&job.appid) else {
        // Adopted only by a gateway that has the app: this one was started with it.
        return failed("the app is not in this gateway's configuration");
    };
    let (Some(kind), Some(scope)) = (spec.kind(), spec.scope(client.appid())) else {
        return failed("the job's stored message is not in the format this gateway reads");
    };
    let ledger = Arc::clone(&gw.shared.grants);
    let metrics = gw.metrics().clone();
    loop {
        let base = *lock(progress);
        let watch =
            Watch { base, progress: Arc::clone(progress), metrics: metrics.clone(), app: job.appid.clone() };
        let mut dispatcher = dispatcher(&spec, kind, &scope, client.clone(), Arc::clone(&ledger))
            .lease(gw.shared.jobs.grant_lease)
            .keep_outcomes(false)
            .concurrency(spec.concurrency)
            .cancellation(signals.stop.clone())
            .observer(watch);
        if let Some(rate) = spec.rate_per_second {
            dispatcher = dispatcher.rate_limit(rate);
        }
        match dispatcher.run().await {
            Ok(report) => *lock(progress) = sum(base, &report.progress),
            Err(e) => {
                warn!(job = %job.id, error = %e, "a dispatch job's ledger failed");
                return failed(&format!(
                    "the grant ledger failed ({e}); the grants not taken are still pending"
                ));
            }
        }
        if signals.stop.is_cancelled() {
            return match stopped(signals) {
                End::HandedBack if spec.long_term => {
                    End::Ended(JobState::Cancelled, Some(LONG_TERM_NOT_RESUMED.to_owned()))
                }
                end => end,
            };
        }
        if spec.long_term {
            // Its delivered grants are pending again: a second pass would send them again.
            lock(progress).remaining = 0;
            return End::Ended(JobState::Finished, None);
        }
        // Grants another dispatch holds (a stopped gateway's): they come back when its lease
        // lapses, and the dispatcher runs again for them.
        let mut waited = false;
        loop {
            match ledger.counts(&scope, client.clock().now()).await {
                Ok(c) if c.reserved == 0 => {
                    lock(progress).remaining = c.pending;
                    if !waited {
                        return End::Ended(JobState::Finished, None);
                    }
                    break;
                }
                Ok(c) => lock(progress).remaining = c.pending + c.reserved,
                Err(e) => warn!(job = %job.id, error = %e, "could not count a dispatch job's grants"),
            }
            waited = true;
            tokio::select! {
                () = signals.stop.cancelled() => return stopped(signals),
                () = tokio::time::sleep(WAIT_STEP) => {}
            }
        }
    }
}

/// Why a long-term template's job ends when its gateway stops.
const LONG_TERM_NOT_RESUMED: &str = "stopped with its gateway: a long-term template's job is not resumed, since its \
     delivered grants stay pending and a resumed run would send them again; start another to send to the grants \
     it had not reached (and to the ones it had, again)";

fn stopped(signals: &Signals) -> End {
    if signals.lost.load(Ordering::Acquire) {
        End::Lost
    } else if signals.cancel_asked.load(Ordering::Acquire) {
        End::Ended(JobState::Cancelled, None)
    } else if signals.handing_back.load(Ordering::Acquire) {
        End::HandedBack
    } else {
        End::Ended(JobState::Cancelled, None)
    }
}

/// The job's dispatcher: the library's, for its kind, each message built from the job's.
fn dispatcher(
    spec: &Spec,
    kind: Kind,
    scope: &GrantScope,
    client: Client,
    ledger: Arc<dyn GrantLedger>,
) -> Dispatcher {
    let template = scope.template_id.clone();
    let template_kind = if spec.long_term { TemplateKind::LongTerm } else { TemplateKind::OneTime };
    let spec = Arc::new(spec.clone());
    match kind {
        Kind::OneTime => Dispatcher::one_time(client, ledger, template, scope.scene, move |to: &OpenId| {
            match spec.message_for(kind, to.as_str()) {
                Ok(CheckedMessage::OneTime(m)) => Ok(m),
                _ => Err(unbuildable()),
            }
        }),
        Kind::MiniProgram => {
            Dispatcher::mini_program(client, ledger, template, template_kind, move |to: &OpenId| {
                match spec.message_for(kind, to.as_str()) {
                    Ok(CheckedMessage::MiniProgram(m)) => Ok(m),
                    _ => Err(unbuildable()),
                }
            })
        }
        Kind::Notification => {
            Dispatcher::notification(client, ledger, template, template_kind, move |to: &OpenId| {
                match spec.message_for(kind, to.as_str()) {
                    Ok(CheckedMessage::Notification(m)) => Ok(m),
                    _ => Err(unbuildable()),
                }
            })
        }
    }
}

/// The message was checked for a placeholder recipient; only a grant's openid can fail it
/// (the grant stays pending).
fn unbuildable() -> ValidationError {
    ValidationError::InvalidFormat {
        field: "touser",
        expected: "an openid the dispatch's message can be sent to",
    }
}

/// The job's progress as the dispatcher reports it, over what earlier runs counted; and each
/// outcome counted in the metrics.
struct Watch {
    base: JobProgress,
    progress: Arc<Mutex<JobProgress>>,
    metrics: Metrics,
    app: String,
}

impl DispatchObserver for Watch {
    fn on_outcome(&mut self, outcome: &RecipientOutcome) {
        self.metrics.dispatched(&self.app, outcome.kind.as_str());
    }

    fn on_progress(&mut self, progress: &Progress) {
        *lock(&self.progress) = sum(self.base, progress);
    }
}

fn sum(base: JobProgress, run: &Progress) -> JobProgress {
    JobProgress {
        sent: base.sent + run.sent,
        delivered: base.delivered + run.delivered,
        failed: base.failed + run.failed,
        unknown: base.unknown + run.unknown,
        dropped: base.dropped + run.dropped,
        remaining: run.remaining,
    }
}

fn lock(progress: &Mutex<JobProgress>) -> MutexGuard<'_, JobProgress> {
    progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Gateway {
    /// The gateway's background work, until `until` resolves:
    ///
    /// - **dispatch jobs**: every `dispatch.job_lease_ms` / 2 (and at once), adopts the jobs of
    ///   its apps whose gateway stopped renewing them (killed, or cut off from the store) and
    ///   runs them here, and every ten minutes deletes the jobs ended more than
    ///   `dispatch.retention_ms` ago; when `until` resolves, stops the jobs running here (the
    ///   sends in flight finish and are recorded) and hands them back, so that another gateway,
    ///   or this one's restart, resumes them at once, waiting up to 20 s for them. From then on
    ///   this gateway answers a start 503 `stopping` and adopts nothing.
    /// - **webhooks**: for each app with a webhook, posts the events the push endpoint kept, in
    ///   order, on the gateway of the fleet that holds the app's delivery (`docs/gateway.md`,
    ///   event push).
    ///
    /// The binary runs it beside the server. Without it, a gateway runs the jobs started through
    /// it, but resumes none and hands none back, and delivers nothing to the webhooks (the events
    /// stay kept).
    pub async fn run_background(&self, until: impl std::future::Future<Output = ()>) {
        let jobs = &self.shared.jobs;
        let deliveries = CancellationToken::new();
        let mut deliverers = Vec::new();
        for (appid, webhook) in &self.shared.webhooks {
            let task =
                crate::webhook::deliver(self.clone(), appid.clone(), webhook.clone(), deliveries.clone());
            deliverers.push(tokio::spawn(task));
        }
        let every = (jobs.lease / 2).max(Duration::from_millis(500));
        // Only the jobs of apps this gateway has: another's (a configuration rolling out) would fail here.
        let mut apps: Vec<&str> = self.shared.apps.keys().map(String::as_str).collect();
        apps.sort_unstable();
        let mut next_prune = tokio::time::Instant::now();
        tokio::pin!(until);
        loop {
            if tokio::time::Instant::now() >= next_prune {
                next_prune += PRUNE_EVERY;
                self.prune_jobs().await;
            }
            loop {
                match jobs.store.adopt(&jobs.owner, jobs.lease, &apps).await {
                    Ok(Some(job)) => {
                        info!(appid = %job.appid, job = %job.id, resumed = job.resumed, "a dispatch job whose gateway stopped is resumed here");
                        spawn(self, job);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        warn!(error = %e, "could not look for dispatch jobs to resume");
                        break;
                    }
                }
            }
            tokio::select! {
                () = &mut until => break,
                () = tokio::time::sleep(every) => {}
            }
        }
        jobs.stopping.store(true, Ordering::Release);
        deliveries.cancel();
        tokio::join!(self.hand_back(), join_all(deliverers));
    }

    /// Deletes the ended jobs past `dispatch.retention_ms`, a batch at a time while batches come
    /// back full.
    async fn prune_jobs(&self) {
        let jobs = &self.shared.jobs;
        let mut deleted = 0;
        loop {
            match jobs.store.prune(jobs.retention).await {
                Ok(n) => {
                    deleted += n;
                    if n < crate::jobs::PRUNE_BATCH as u64 {
                        break;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "could not delete ended dispatch jobs");
                    break;
                }
            }
        }
        if deleted > 0 {
            info!(deleted, "ended dispatch jobs past dispatch.retention_ms deleted");
        }
    }

    /// Stops every job running here and hands it back, waiting up to 20 s.
    async fn hand_back(&self) {
        let tasks: Vec<JoinHandle<()>> = {
            let mut local = self.shared.jobs.local();
            local
                .values_mut()
                .filter_map(|l| {
                    l.signals.raise(&l.signals.handing_back);
                    l.task.take()
                })
                .collect()
        };
        if tasks.is_empty() {
            return;
        }
        info!(jobs = tasks.len(), "stopping: the dispatch jobs running here are handed back");
        let all = join_all(tasks);
        if tokio::time::timeout(HAND_BACK_WAIT, all).await.is_err() {
            warn!("dispatch jobs did not hand back within 20 s; they are resumed after their lease");
        }
    }
}

/// Waits for every task.
async fn join_all(tasks: Vec<JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}
