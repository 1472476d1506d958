//! The dispatch's moving parts: one task claims pending grants in batches and hands them to
//! free workers (after the rate limiter); one settles finished sends in batches.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use subscribe_types::OpenId;
use tokio::sync::mpsc;

use super::report::RecipientOutcome;
use crate::CancellationToken;
use crate::grants::{GrantLedger, GrantScope, LedgerError, Reservation, Settlement};
use crate::rate::RateLimiter;

/// What the grant reader of one dispatch needs.
pub(super) struct Feed {
    pub(super) ledger: Arc<dyn GrantLedger>,
    pub(super) scope: GrantScope,
    pub(super) clock: crate::SharedClock,
    pub(super) limiter: Option<RateLimiter>,
    pub(super) cancel: CancellationToken,
    pub(super) holder: String,
    pub(super) lease: Duration,
    pub(super) batch: usize,
    pub(super) sent: Arc<AtomicU64>,
    pub(super) grants: mpsc::Sender<Reservation>,
}

/// Claims pending grants in batches and hands each to a free worker (after the rate
/// limiter), until none is left, the dispatch is cancelled, or the ledger fails. The next batch
/// is claimed while this one is handed out, so the ledger's latency overlaps the sends; grants
/// claimed but not handed out when the dispatch stops are released.
pub(super) async fn feed(f: Feed) -> Result<(), LedgerError> {
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
pub(super) type Finished = (Reservation, Settlement, RecipientOutcome);

/// Batches of settlements written at once. Few, so batches grow while one is written: a
/// database then commits many settlements at a time instead of contending for its counters
/// with one transaction per send.
pub(super) const SETTLE_WRITERS: usize = 2;

/// The most settlements written in one [`GrantLedger::settle_many`].
pub(super) const MAX_SETTLE_BATCH: usize = 256;

/// Settles finished sends in batches: whatever has finished while earlier batches were being
/// written, at most `parallel` batches at once; then reports each outcome with its ledger
/// error, if any.
pub(super) async fn settle(
    (ledger, clock): (Arc<dyn GrantLedger>, crate::SharedClock),
    (lease, cancel): (Duration, CancellationToken),
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
        // A writer free first, then the batch: what finishes while every writer is busy joins
        // this batch instead of waiting for the next one (a batch taken before the wait stayed
        // as small as the moment it was taken, and a database committed a few settlements at a
        // time while hundreds queued behind them).
        while writing.len() >= parallel {
            writing.join_next().await;
        }
        let mut batch = vec![first];
        while batch.len() < MAX_SETTLE_BATCH {
            match finished.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let (ledger, clock, outcomes, cancel) =
            (Arc::clone(&ledger), Arc::clone(&clock), outcomes.clone(), cancel.clone());
        writing.spawn(async move {
            let (items, reports): (Vec<_>, Vec<_>) = batch.into_iter().map(|(r, s, o)| ((r, s), o)).unzip();
            let mut results = settle_while_held(&*ledger, &*clock, (lease, &cancel), items).await.into_iter();
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

/// The first retry of a settlement the backend failed; each next one waits twice as long, up
/// to [`MAX_SETTLE_RETRY`].
const FIRST_SETTLE_RETRY: Duration = Duration::from_millis(100);
const MAX_SETTLE_RETRY: Duration = Duration::from_secs(1);
/// A settlement is not retried this close to the end of its lease (the ledger may time leases
/// by its own clock).
const LEASE_MARGIN: Duration = Duration::from_secs(1);

/// Writes the settlements, and writes again those the backend failed (a lost connection, a
/// timeout, a restarting server: written or not, nobody knows) while their reservations last:
/// until a reservation's lease lapses no other sender can take its grant, so settling it again
/// is safe, and the settlement lands once. A retry refused as
/// [`LeaseLost`](LedgerError::LeaseLost) means the first write landed when the grant now
/// stands as the settlement left it; otherwise that refusal (or whatever else the retry met
/// but the backend failing again) is the settlement's result, and it is not retried again. What is still
/// unwritten when the lease nears its end is reported with its error: the grant comes back
/// after its lease as a second attempt, which WeChat refuses when the first was delivered, so
/// it goes to review.
///
/// The retries stop when `cancel` is cancelled (one last attempt is made then), and never
/// outlast `lease` (the ledger may time leases by another clock than the client's).
pub(super) async fn settle_while_held(
    ledger: &dyn GrantLedger,
    clock: &dyn crate::Clock,
    (lease, cancel): (Duration, &CancellationToken),
    items: Vec<(Reservation, Settlement)>,
) -> Vec<Result<(), LedgerError>> {
    let mut results: Vec<Result<(), LedgerError>> = ledger.settle_many(items.clone()).await;
    // How long each reservation lasts, read once on the client's clock (never more than the
    // lease) and then timed on tokio's (a clock that does not move, as in tests, cannot make
    // this retry forever).
    let (now, started) = (clock.now(), tokio::time::Instant::now());
    let lasts: Vec<Duration> =
        items.iter().map(|(r, _)| r.until.duration_since(now).unwrap_or_default().min(lease)).collect();
    let mut wait = FIRST_SETTLE_RETRY;
    let mut last_attempt = false;
    loop {
        let elapsed = started.elapsed();
        let again: Vec<usize> = (0..items.len())
            .filter(|&i| {
                matches!(results.get(i), Some(Err(LedgerError::Backend(_))))
                    && elapsed + wait + LEASE_MARGIN < lasts[i]
            })
            .collect();
        if again.is_empty() {
            return results;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = cancel.cancelled(), if !last_attempt => last_attempt = true,
        }
        wait = (wait * 2).min(MAX_SETTLE_RETRY);
        let retried = ledger.settle_many(again.iter().map(|&i| items[i].clone()).collect()).await;
        for (&i, result) in again.iter().zip(retried) {
            // Anything but the backend failing again ends this item's retries.
            results[i] = match result {
                Err(LedgerError::LeaseLost) if landed(ledger, &items[i]).await => Ok(()),
                other => other,
            };
        }
        if last_attempt {
            return results;
        }
    }
}

/// Whether the grant stands as `settlement` leaves it (an earlier write of it landed).
async fn landed(ledger: &dyn GrantLedger, (r, settlement): &(Reservation, Settlement)) -> bool {
    use crate::grants::GrantStatus;
    let Ok(Some(record)) = ledger.get(&r.key).await else { return false };
    matches!(
        (settlement, &record.status),
        (Settlement::Delivered, GrantStatus::Delivered)
            | (Settlement::Review(_), GrantStatus::Review { .. })
            | (Settlement::Drop(_), GrantStatus::Dropped { .. })
            | (Settlement::Release, GrantStatus::Pending)
    )
}
