//! The review workflow's part of [`grant_ledger_contract`](super::grant_ledger_contract): the
//! grants set aside are listed ([`GrantLedger::reviews`]) and a person's decision applies
//! ([`GrantLedger::resolve`]) the same way on every ledger.

use std::sync::Arc;
use std::time::Duration;

use subscribe_types::{OpenId, Scene};

use super::grant_ledger::assert_near;
use crate::{
    Clock as _, GrantLedger, GrantScope, GrantStatus, Reservation, Resolution, ReviewItem, Settlement,
};

/// The review rules, on a scope of their own (a sibling of `scope`, scene 14).
///
/// - a grant settled as [`Settlement::Review`] is listed with its reason, its attempts and
///   when it was set aside, in `openid` order after a cursor, at most `limit` at a time;
/// - `Delivered` makes it used (its attempts kept, never reserved again), `Release` pending
///   with its attempts back to 0 (the next reservation is attempt 1), `Drop` dropped with the
///   note as its reason;
/// - resolving a grant that is not under review (unknown, pending, reserved, used, resolved
///   already) returns `false` and changes nothing;
/// - of concurrent decisions on one grant exactly one applies;
/// - `counts` follows every transition.
#[allow(clippy::too_many_lines)] // one rule after another, in order
pub(super) async fn review_contract<L: GrantLedger + ?Sized + 'static>(ledger: &Arc<L>, scope: &GrantScope) {
    let now = || crate::SystemClock.now();
    let long_lease = Duration::from_secs(30);
    let scope = GrantScope { scene: Scene::new(14).expect("scene"), ..scope.clone() };
    let user = |i: usize| OpenId::new(format!("oReview{i:04}")).expect("openid");
    let reserve = |i: usize| {
        let (ledger, key) = (Arc::clone(ledger), scope.key(user(i)));
        async move { ledger.reserve(&key, "h", long_lease, now()).await.expect("reserve") }
    };
    for i in 0..6 {
        ledger.record(&scope.key(user(i)), now()).await.expect("record");
    }
    // Each set aside, with the window around its settlement.
    let mut windows = Vec::new();
    let set_aside = |r: Reservation, why: &'static str| {
        let ledger = Arc::clone(ledger);
        let before = now();
        async move {
            ledger.settle(&r, Settlement::Review(why.into())).await.expect("settle as review");
            (before, now())
        }
    };
    windows.push(set_aside(reserve(0).await.expect("pending"), "timeout after sending").await);
    // User 1's first sender lost its lease: the grant was set aside at attempt 2.
    let short = Duration::from_millis(20);
    ledger.reserve(&scope.key(user(1)), "slow", short, now()).await.expect("reserve").expect("pending");
    tokio::time::sleep(short * 3).await;
    let retaken = reserve(1).await.expect("a lapsed lease is taken again");
    assert_eq!(retaken.attempt, 2, "reserve: a retaken grant counts its attempts");
    windows.push(set_aside(retaken, "lease lost").await);
    windows.push(set_aside(reserve(2).await.expect("pending"), "unknown").await);
    windows.push(set_aside(reserve(4).await.expect("pending"), "timeout").await);
    let delivered = reserve(5).await.expect("pending");
    ledger.settle(&delivered, Settlement::Delivered).await.expect("deliver");

    // Listed, in openid order, with reason, attempts and since when.
    let listed = ledger.reviews(&scope, None, 10).await.expect("reviews");
    let brief = |items: &[ReviewItem]| {
        items.iter().map(|i| (i.openid.clone(), i.reason.clone(), i.attempts)).collect::<Vec<_>>()
    };
    assert_eq!(
        brief(&listed),
        vec![
            (user(0), "timeout after sending".to_owned(), 1),
            (user(1), "lease lost".to_owned(), 2),
            (user(2), "unknown".to_owned(), 1),
            (user(4), "timeout".to_owned(), 1),
        ],
        "reviews: every grant under review (none pending or used), in openid order, with its \
         reason and its attempts"
    );
    for (item, (before, after)) in listed.iter().zip(&windows) {
        assert_near(item.since, *before, *after, "reviews: `since` is when the grant was set aside");
    }
    let openids = |items: Vec<ReviewItem>| items.into_iter().map(|i| i.openid).collect::<Vec<_>>();
    let page = |after: Option<usize>| {
        let ledger = Arc::clone(ledger);
        let scope = scope.clone();
        async move { openids(ledger.reviews(&scope, after.map(user).as_ref(), 2).await.expect("reviews")) }
    };
    assert_eq!(page(None).await, vec![user(0), user(1)], "reviews: at most `limit`, the first ones");
    assert_eq!(page(Some(1)).await, vec![user(2), user(4)], "reviews: strictly after the cursor");
    assert_eq!(page(Some(4)).await, Vec::<OpenId>::new(), "reviews: nothing after the last one");
    let other = GrantScope { scene: Scene::new(15).expect("scene"), ..scope.clone() };
    assert!(ledger.reviews(&other, None, 10).await.expect("reviews").is_empty(), "reviews: scopes isolated");
    let c = ledger.counts(&scope, now()).await.expect("counts");
    assert_eq!(
        (c.pending, c.reserved, c.delivered, c.review, c.dropped),
        (1, 0, 1, 4, 0),
        "counts with grants under review"
    );

    // Resolving what is not under review is refused, and changes nothing.
    let resolve = |i: usize, resolution: Resolution, note: &'static str| {
        let (ledger, key) = (Arc::clone(ledger), scope.key(user(i)));
        async move { ledger.resolve(&key, resolution, note, now()).await.expect("resolve") }
    };
    let status = |i: usize| {
        let (ledger, key) = (Arc::clone(ledger), scope.key(user(i)));
        async move {
            let rec = ledger.get(&key).await.expect("get").expect("record");
            (rec.status, rec.attempts)
        }
    };
    assert!(!resolve(3, Resolution::Delivered, "x").await, "resolve: a pending grant is not under review");
    assert_eq!(status(3).await, (GrantStatus::Pending, 0), "resolve refused: still pending");
    assert!(!resolve(5, Resolution::Release, "x").await, "resolve: a used grant is not under review");
    assert_eq!(status(5).await, (GrantStatus::Delivered, 1), "resolve refused: still delivered");
    assert!(!resolve(99, Resolution::Drop, "x").await, "resolve: an unknown grant is not under review");
    assert!(ledger.get(&scope.key(user(99))).await.expect("get").is_none(), "resolve refused: nothing made");
    let held = reserve(3).await.expect("pending");
    assert!(!resolve(3, Resolution::Drop, "x").await, "resolve: a reserved grant is not under review");
    assert_eq!(
        status(3).await,
        (GrantStatus::Reserved { until: held.until }, 1),
        "resolve refused: still reserved by its holder"
    );
    ledger.settle(&held, Settlement::Release).await.expect("the holder still settles");

    // Delivered: used, never sent again.
    assert!(
        resolve(0, Resolution::Delivered, "seen in the user's inbox (ops: li)").await,
        "resolve: delivered"
    );
    assert_eq!(status(0).await, (GrantStatus::Delivered, 1), "resolved delivered: used, attempts kept");
    assert!(reserve(0).await.is_none(), "resolved delivered: never reserved again");
    assert!(!resolve(0, Resolution::Release, "twice").await, "resolve: a review is decided once");
    assert_eq!(status(0).await, (GrantStatus::Delivered, 1), "a second decision changes nothing");

    // Release: pending again, and the next reservation takes it as attempt 1.
    assert!(resolve(1, Resolution::Release, "not in the inbox").await, "resolve: release");
    assert_eq!(status(1).await, (GrantStatus::Pending, 0), "resolved release: pending, attempts back to 0");
    assert_eq!(
        ledger.pending_page(&scope, None, 10, now()).await.expect("page"),
        vec![user(1), user(3)],
        "resolved release: pending again"
    );
    let again = reserve(1).await.expect("resolved release: the next reservation takes it");
    assert_eq!(again.attempt, 1, "resolved release: the next reservation is attempt 1");
    ledger.settle(&again, Settlement::Delivered).await.expect("deliver the released grant");

    // Drop: dropped, with the note as its reason.
    assert!(resolve(2, Resolution::Drop, "the user left (ops: li)").await, "resolve: drop");
    assert_eq!(
        status(2).await,
        (GrantStatus::Dropped { reason: "the user left (ops: li)".into() }, 1),
        "resolved drop: dropped with the note as its reason, attempts kept"
    );
    assert!(reserve(2).await.is_none(), "resolved drop: never reserved again");

    assert_eq!(
        openids(ledger.reviews(&scope, None, 10).await.expect("reviews")),
        vec![user(4)],
        "reviews: the undecided one is left"
    );
    let c = ledger.counts(&scope, now()).await.expect("counts");
    assert_eq!(
        (c.pending, c.reserved, c.delivered, c.review, c.dropped),
        (1, 0, 3, 1, 1),
        "counts after the resolutions: each moved from review to its decision"
    );

    // Two people deciding at once: one decision applies, the others find nothing to decide.
    let mut deciders = tokio::task::JoinSet::new();
    for i in 0..8 {
        let resolution = [Resolution::Delivered, Resolution::Release, Resolution::Drop][i % 3];
        deciders.spawn(resolve(4, resolution, "a decision"));
    }
    let mut won = 0;
    while let Some(resolved) = deciders.join_next().await {
        won += usize::from(resolved.expect("task"));
    }
    assert_eq!(won, 1, "resolve: of 8 concurrent decisions on one grant, exactly one applies");
    let c = ledger.counts(&scope, now()).await.expect("counts");
    assert_eq!(
        (c.review, c.pending + c.reserved + c.delivered + c.dropped),
        (0, 6),
        "counts after concurrent decisions: the grant counted once, out of review"
    );
}
