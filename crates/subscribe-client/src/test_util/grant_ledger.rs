//! [`grant_ledger_contract`]: the rules every grant ledger keeps.

use std::time::{Duration, SystemTime};

use super::unique_app;

/// The [`GrantLedger`](crate::GrantLedger) contract. Panics, naming the broken rule, when the
/// ledger breaks it. Uses fresh random app ids, so it can run against a shared backend.
///
/// It checks every cell of the table in `GrantLedger`'s documentation (what each operation does
/// in each state: recording is idempotent and renews a used grant into its history, one of 64
/// concurrent reservers gets a grant, only the current holder settles, a lapsed lease makes
/// the grant pending again), paging by openid after a cursor, and the batch operations:
/// - `reserve_next` claims the first pending grants in openid order, skipping held ones, and
///   continues strictly after its cursor: a grant released before the cursor does not come
///   back (a claim that ignores its cursor fails);
/// - of 8 concurrent `reserve_next` calls, as separate tasks, no two get the same grant;
/// - a lapsed reservation is claimed again as attempt 2 (attempts count on: the crashed sender
///   may have sent), and `counts` calls it pending, no longer reserved;
/// - `settle_many` gives one result per item, `LeaseLost` for a stale one;
/// - the review workflow: a grant set aside is listed by `reviews` (reason, attempts, since
///   when; paging after a cursor), `resolve` applies `Delivered` (used), `Release` (pending,
///   the next reservation is attempt 1) and `Drop` (dropped, the note its reason), and
///   refuses (`false`, nothing changed) a grant that is not under review; `counts` follows.
///
/// It runs in real time: `now` is always the system clock's, and lapses are waited for (a
/// 1.5-second lease, so the suite takes about two seconds). A ledger may therefore time its
/// leases by its own clock (a database's `now()`, as `subscribe-sql` does) instead of the
/// `now` it is given; the times it reports (`renewed_at`, a review's `since`) must agree with the system clock's
/// to the millisecond.
///
/// Same calling convention as [`token_store_contract`](super::token_store_contract).
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// subscribe_client::test_util::grant_ledger_contract(Arc::new(subscribe_client::InMemoryGrantLedger::new())).await;
/// # });
/// ```
///
/// # Panics
/// When a rule is broken.
#[allow(clippy::too_many_lines)] // one rule after another, in order
pub async fn grant_ledger_contract<L: crate::GrantLedger + ?Sized + 'static>(ledger: std::sync::Arc<L>) {
    use crate::{Clock as _, GrantScope, GrantStatus, LedgerError, Recorded, Settlement};
    use subscribe_types::{OpenId, Scene, TemplateId};
    let now = || crate::SystemClock.now();
    // Reservations that must lapse during the suite's one wait take `lease`; the ones taken after
    // it take `long_lease`, so a busy machine's stall cannot lapse them in the middle of a check.
    let lease = Duration::from_millis(1500);
    let long_lease = Duration::from_secs(30);
    let scope = GrantScope {
        appid: unique_app("g"),
        template_id: TemplateId::new("contract_template").expect("template"),
        scene: Scene::new(7).expect("scene"),
    };
    let user = |i: usize| OpenId::new(format!("oContract{i:04}")).expect("openid");
    let key = scope.key(user(0));

    // Recording is idempotent.
    assert_eq!(ledger.record(&key, now()).await.expect("record"), Recorded::Added, "record: a new grant");
    assert_eq!(
        ledger.record(&key, now()).await.expect("record"),
        Recorded::AlreadyPending,
        "record: repeated confirmations do not add up"
    );
    assert_eq!(
        ledger.pending_page(&scope, None, 10, now()).await.expect("page"),
        vec![user(0)],
        "pending lists the grant"
    );
    assert_eq!(ledger.counts(&scope, now()).await.expect("counts").pending, 1, "counts: one pending");

    // No double reservation under 64 concurrent reservers.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let (ledger, key) = (std::sync::Arc::clone(&ledger), key.clone());
        tasks.spawn(async move {
            ledger.reserve(&key, &format!("holder{i}"), lease, now()).await.expect("reserve")
        });
    }
    let mut won = Vec::new();
    while let Some(r) = tasks.join_next().await {
        won.extend(r.expect("task"));
    }
    assert_eq!(won.len(), 1, "reserve: exactly one of 64 concurrent reservers gets the grant");
    let first = won.remove(0);
    assert_eq!(first.attempt, 1, "reserve: the first reservation is attempt 1");

    // While reserved.
    assert!(
        ledger.pending_page(&scope, None, 10, now()).await.expect("page").is_empty(),
        "a reserved grant is not pending"
    );
    assert!(
        ledger.reserve(&key, "other", lease, now()).await.expect("reserve").is_none(),
        "a live lease keeps others out"
    );
    assert_eq!(
        ledger.record(&key, now()).await.expect("record"),
        Recorded::AlreadyPending,
        "record while reserved adds nothing"
    );
    let c = ledger.counts(&scope, now()).await.expect("counts");
    assert_eq!((c.pending, c.reserved), (0, 1), "counts: one reserved");
    // A batch claim that lapses too (during the same wait).
    let lapsing = GrantScope { scene: Scene::new(12).expect("scene"), ..scope.clone() };
    ledger.record(&lapsing.key(user(0)), now()).await.expect("record");
    let crashed =
        ledger.reserve_next(&lapsing, None, 10, "crashed", lease, now()).await.expect("reserve_next");
    assert_eq!(
        crashed.reservations.iter().map(|r| (r.key.openid.clone(), r.attempt)).collect::<Vec<_>>(),
        vec![(user(0), 1)],
        "reserve_next: a pending grant is claimed as attempt 1"
    );

    // Lease expiry returns the grant; the lapsed holder can no longer settle it.
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    assert_eq!(
        ledger.pending_page(&scope, None, 10, now()).await.expect("page"),
        vec![user(0)],
        "a lapsed lease is pending again"
    );
    let c = ledger.counts(&scope, now()).await.expect("counts");
    assert_eq!(
        (c.pending, c.reserved),
        (1, 0),
        "counts: a lapsed reservation is pending, not reserved (its lease ended at {:?}; \
         reserved counts only leases that are still live)",
        first.until
    );
    let rescued =
        ledger.reserve_next(&lapsing, None, 10, "rescuer", long_lease, now()).await.expect("reserve_next");
    assert_eq!(
        rescued.reservations.iter().map(|r| (r.key.openid.clone(), r.attempt)).collect::<Vec<_>>(),
        vec![(user(0), 2)],
        "reserve_next: a lapsed reservation is claimed again as attempt 2 (the crashed claimer may \
         have sent: attempts count on, they do not restart at 1)"
    );
    ledger.settle(&rescued.reservations[0], Settlement::Delivered).await.expect("settle the rescued claim");
    let lapsed = ledger.get(&key).await.expect("get").expect("record exists");
    assert_eq!(
        (lapsed.status, lapsed.attempts),
        (GrantStatus::Reserved { until: first.until }, 1),
        "get: a lapsed reservation still shows as Reserved with its (past) `until` until someone \
         takes the grant; `until <= now` means pending"
    );
    let second = ledger
        .reserve(&key, "rescuer", long_lease, now())
        .await
        .expect("reserve")
        .expect("a lapsed lease can be taken");
    assert_eq!(second.attempt, 2, "reserve: a retaken grant counts its attempts");
    assert!(
        matches!(ledger.settle(&first, Settlement::Delivered).await, Err(LedgerError::LeaseLost)),
        "settle: a lapsed holder whose grant was retaken gets LeaseLost"
    );

    // Commit.
    ledger.settle(&second, Settlement::Delivered).await.expect("commit");
    let rec = ledger.get(&key).await.expect("get").expect("record exists");
    assert_eq!(rec.status, GrantStatus::Delivered, "commit: delivered");
    assert!(
        ledger.reserve(&key, "x", long_lease, now()).await.expect("reserve").is_none(),
        "a delivered grant is not sent again"
    );
    assert!(
        matches!(ledger.settle(&second, Settlement::Release).await, Err(LedgerError::LeaseLost)),
        "settle: a reservation settles once"
    );
    let (before, renewed) = (now(), ledger.record(&key, now()).await.expect("record"));
    let after = now();
    assert_eq!(renewed, Recorded::Renewed, "a new confirmation after delivery is a new grant");
    let renewed = ledger.get(&key).await.expect("get").expect("record");
    assert_eq!((renewed.status, renewed.attempts), (GrantStatus::Pending, 0), "a renewed grant starts over");
    let [past] = &renewed.history[..] else {
        panic!("a renewal keeps the delivered grant in the history: {:?}", renewed.history)
    };
    assert_eq!(
        (&past.status, past.attempts),
        (&GrantStatus::Delivered, 2),
        "a renewal keeps the delivered grant in the history (status, attempts)"
    );
    assert_near(past.renewed_at, before, after, "history: `renewed_at` is when the renewal was recorded");

    // Release, review, drop.
    let r = ledger.reserve(&key, "h", long_lease, now()).await.expect("reserve").expect("pending");
    ledger.settle(&r, Settlement::Release).await.expect("release");
    assert_eq!(
        ledger.get(&key).await.expect("get").expect("record").status,
        GrantStatus::Pending,
        "release: pending again"
    );
    let r =
        ledger.reserve(&key, "h", long_lease, now()).await.expect("reserve").expect("pending after release");
    assert_eq!(
        r.attempt, 1,
        "reserve after a release is attempt 1: a definite failure delivered nothing, so a later \
         refusal is a real one"
    );
    ledger.settle(&r, Settlement::Review("timeout".into())).await.expect("review");
    assert_eq!(
        ledger.get(&key).await.expect("get").expect("record").status,
        GrantStatus::Review { reason: "timeout".into() },
        "review: kept with its reason"
    );
    assert!(
        ledger.reserve(&key, "h", long_lease, now()).await.expect("reserve").is_none(),
        "review: never taken again automatically"
    );
    assert_eq!(
        ledger.record(&key, now()).await.expect("record"),
        Recorded::Renewed,
        "a new confirmation resolves a review"
    );
    let history = ledger.get(&key).await.expect("get").expect("record").history;
    assert_eq!(
        history.last().map(|p| (&p.status, p.attempts)),
        Some((&GrantStatus::Review { reason: "timeout".into() }, 1)),
        "the review and its reason stay in the history"
    );
    assert_eq!(history.len(), 2, "history: one entry per renewal");
    let r = ledger.reserve(&key, "h", long_lease, now()).await.expect("reserve").expect("pending");
    ledger.settle(&r, Settlement::Drop("43101".into())).await.expect("drop");
    assert_eq!(
        ledger.get(&key).await.expect("get").expect("record").status,
        GrantStatus::Dropped { reason: "43101".into() },
        "drop: kept with its reason"
    );
    assert!(
        ledger.pending_page(&scope, None, 10, now()).await.expect("page").is_empty(),
        "a dropped grant is not pending"
    );

    // Paging: in openid order after a cursor, no duplicates, nothing missed; scopes isolated.
    for i in 1..=25 {
        ledger.record(&scope.key(user(i)), now()).await.expect("record");
    }
    let other = GrantScope { scene: Scene::new(8).expect("scene"), ..scope.clone() };
    ledger.record(&other.key(user(99)), now()).await.expect("record");
    let mut seen = Vec::new();
    let mut cursor: Option<OpenId> = None;
    // 25 grants in pages of 10: three pages and an empty one. Bounded, so a ledger that ignores
    // its cursor fails here instead of paging forever.
    for _ in 0..5 {
        let page = ledger.pending_page(&scope, cursor.as_ref(), 10, now()).await.expect("page");
        assert!(page.len() <= 10, "a page holds at most `limit`");
        let Some(last) = page.last() else { break };
        assert!(
            cursor.as_ref().is_none_or(|c| page.iter().all(|o| o > c)),
            "pending_page: every openid comes after the cursor (the page did not advance past {cursor:?})"
        );
        cursor = Some(last.clone());
        seen.extend(page);
    }
    let expected: Vec<OpenId> = (1..=25).map(user).collect();
    assert_eq!(seen, expected, "paging lists every pending grant once, in openid order");
    assert!(ledger.get(&scope.key(user(99))).await.expect("get").is_none(), "scopes are isolated");
    let c = ledger.counts(&scope, now()).await.expect("counts");
    assert_eq!((c.pending, c.dropped), (25, 1), "counts by status");

    // The history keeps the most recent MAX_HISTORY lives.
    let busy = GrantScope { scene: Scene::new(10).expect("scene"), ..scope.clone() }.key(user(0));
    ledger.record(&busy, now()).await.expect("record");
    let mut windows = Vec::new();
    for _ in 0..crate::MAX_HISTORY + 4 {
        let r = ledger.reserve(&busy, "h", long_lease, now()).await.expect("reserve").expect("pending");
        ledger.settle(&r, Settlement::Delivered).await.expect("settle");
        // Apart by more than the tolerance of `assert_near`, so each renewal is told apart.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let before = now();
        ledger.record(&busy, before).await.expect("record");
        windows.push((before, now()));
    }
    let history = ledger.get(&busy).await.expect("get").expect("record").history;
    assert_eq!(history.len(), crate::MAX_HISTORY, "history: at most MAX_HISTORY entries");
    let (before, after) = windows[4];
    assert_near(history[0].renewed_at, before, after, "history: the oldest entries go first");

    // Claiming in batches: in openid order after the cursor, skipping what another sender
    // holds; settling in batches: one result per item, a stale or repeated one LeaseLost.
    let batch = GrantScope { scene: Scene::new(11).expect("scene"), ..scope.clone() };
    for i in 0..10 {
        ledger.record(&batch.key(user(i)), now()).await.expect("record");
    }
    let held = ledger
        .reserve(&batch.key(user(3)), "other", long_lease, now())
        .await
        .expect("reserve")
        .expect("pending");
    let first = ledger.reserve_next(&batch, None, 4, "d", long_lease, now()).await.expect("reserve_next");
    let openids =
        |c: &crate::Claimed| c.reservations.iter().map(|r| r.key.openid.clone()).collect::<Vec<_>>();
    assert_eq!(
        openids(&first),
        vec![user(0), user(1), user(2), user(4)],
        "reserve_next: the first `limit` pending grants in openid order, skipping a held one"
    );
    assert!(first.reservations.iter().all(|r| r.attempt == 1), "reserve_next: first attempts");
    assert_eq!(first.cursor, Some(user(4)), "reserve_next: the cursor is the last openid examined");
    let [r0, r1, r2, r4] = <[_; 4]>::try_from(first.reservations).expect("four");
    // A definite failure: user 1's grant is pending again, before the cursor.
    ledger.settle(&r1, Settlement::Release).await.expect("release one claimed grant");
    let rest = ledger
        .reserve_next(&batch, first.cursor.as_ref(), 100, "d", long_lease, now())
        .await
        .expect("reserve_next");
    assert_eq!(
        openids(&rest),
        (5..10).map(user).collect::<Vec<_>>(),
        "reserve_next: continues after the cursor (only openids after it; a grant released before \
         the cursor came back, or one after it was missed)"
    );
    let end = ledger
        .reserve_next(&batch, rest.cursor.as_ref(), 100, "d", long_lease, now())
        .await
        .expect("reserve_next");
    assert_eq!(
        (end.reservations.len(), end.cursor),
        (0, None),
        "reserve_next: nothing left after the cursor"
    );
    let again = ledger.reserve_next(&batch, None, 100, "d", long_lease, now()).await.expect("reserve_next");
    assert_eq!(
        openids(&again),
        vec![user(1)],
        "reserve_next from the start: only the released grant, every other one is held"
    );
    let [r1] = <[_; 1]>::try_from(again.reservations).expect("one");
    assert_eq!(r1.attempt, 1, "reserve_next after a release is attempt 1");
    let results = ledger
        .settle_many(vec![
            (r0.clone(), Settlement::Delivered),
            (r1, Settlement::Release),
            (r2, Settlement::Review("unknown".into())),
            (r4, Settlement::Drop("43101".into())),
            (r0, Settlement::Release),
        ])
        .await;
    assert_eq!(results.len(), 5, "settle_many: one result per item");
    assert!(results[..4].iter().all(Result::is_ok), "settle_many: current reservations settle: {results:?}");
    assert!(matches!(results[4], Err(LedgerError::LeaseLost)), "settle_many: a settled reservation is lost");
    let status = |i| {
        let ledger = std::sync::Arc::clone(&ledger);
        let key = batch.key(user(i));
        async move { ledger.get(&key).await.expect("get").expect("record").status }
    };
    assert_eq!(status(0).await, GrantStatus::Delivered, "settle_many: delivered");
    assert_eq!(status(1).await, GrantStatus::Pending, "settle_many: released");
    assert_eq!(status(2).await, GrantStatus::Review { reason: "unknown".into() }, "settle_many: review");
    assert_eq!(status(4).await, GrantStatus::Dropped { reason: "43101".into() }, "settle_many: dropped");
    let c = ledger.counts(&batch, now()).await.expect("counts");
    assert_eq!(
        (c.pending, c.reserved, c.delivered, c.review, c.dropped),
        (1, 6, 1, 1, 1),
        "counts after batch claims and settlements"
    );
    ledger.settle(&held, Settlement::Release).await.expect("the other sender's reservation is untouched");

    // Claimers racing for one scope get disjoint grants.
    let raced = GrantScope { scene: Scene::new(13).expect("scene"), ..scope.clone() };
    for i in 0..CLAIM_RACE_GRANTS {
        ledger.record(&raced.key(user(i)), now()).await.expect("record");
    }
    let mut claimers = tokio::task::JoinSet::new();
    for i in 0..CLAIM_RACERS {
        let (ledger, raced) = (std::sync::Arc::clone(&ledger), raced.clone());
        claimers.spawn(async move {
            let claimed =
                ledger.reserve_next(&raced, None, 10, &format!("claimer{i}"), long_lease, now()).await;
            claimed.expect("reserve_next").reservations
        });
    }
    let mut claimed = Vec::new();
    while let Some(reservations) = claimers.join_next().await {
        claimed.extend(reservations.expect("task"));
    }
    let mut openids: Vec<&OpenId> = claimed.iter().map(|r| &r.key.openid).collect();
    openids.sort();
    let twice: Vec<&OpenId> = openids.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect();
    assert!(
        twice.is_empty(),
        "reserve_next: {CLAIM_RACERS} concurrent claimers get disjoint grants (these went to two \
         claimers at once: {twice:?})"
    );
    assert!(!claimed.is_empty(), "reserve_next: concurrent claimers get the pending grants");
    let c = ledger.counts(&raced, now()).await.expect("counts");
    let count = |n: usize| u64::try_from(n).expect("a count");
    assert_eq!(
        (c.reserved, c.pending),
        (count(claimed.len()), count(CLAIM_RACE_GRANTS.saturating_sub(claimed.len()))),
        "counts after concurrent claims: one reservation per grant claimed"
    );

    // A holder whose lease lapsed and whom nobody replaced still settles: it finished late.
    let late = GrantScope { scene: Scene::new(9).expect("scene"), ..scope.clone() }.key(user(0));
    ledger.record(&late, now()).await.expect("record");
    let short = Duration::from_millis(20);
    let r = ledger.reserve(&late, "slow", short, now()).await.expect("reserve").expect("pending");
    tokio::time::sleep(short * 3).await;
    ledger
        .settle(&r, Settlement::Delivered)
        .await
        .expect("settle: a lapsed reservation nobody retook is still the current one");
    assert_eq!(
        ledger.get(&late).await.expect("get").expect("record").status,
        GrantStatus::Delivered,
        "settle after the lease lapsed, not retaken: applied"
    );

    super::grant_review::review_contract(&ledger, &scope).await;
}

/// How many claimers race in [`grant_ledger_contract`], each for up to 10 grants.
const CLAIM_RACERS: usize = 8;
/// The grants they race for: fewer than they ask for, so they compete for the same ones.
const CLAIM_RACE_GRANTS: usize = 40;

/// Panics unless `t` lies in `[before, after]`, give or take a millisecond (ledgers keep
/// times to the millisecond).
pub(super) fn assert_near(t: SystemTime, before: SystemTime, after: SystemTime, rule: &str) {
    let ms = Duration::from_millis(1);
    assert!(t + ms >= before && t <= after + ms, "{rule}: {t:?} is not within [{before:?}, {after:?}]");
}
