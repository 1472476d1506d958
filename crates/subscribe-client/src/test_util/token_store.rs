//! The token store's contract suites: [`token_store_contract`] for a store of one process,
//! [`shared_token_store_contract`] for one a fleet shares (with its refresh lease).

use std::time::Duration;

use subscribe_types::{AccessToken, AppId};

use super::{now_to_the_millisecond, unique_app};
use crate::token::{CachedToken, TokenStore};

fn token(s: &str) -> AccessToken {
    AccessToken::new(s).unwrap_or_else(|e| panic!("contract token: {e}"))
}

/// The [`TokenStore`] contract for a store that serves one process. Panics, naming the broken
/// rule, when `store` breaks it.
///
/// The contract suites share one calling convention: an `async fn` taking the implementation in
/// an [`Arc`](std::sync::Arc) (`Arc<YourType>` or `Arc<dyn Trait>`), using fresh random app ids
/// so they can run against a backend shared with other tests, panicking with the rule broken.
///
/// It checks that:
/// - a new app has no token; a saved token loads back, and is still there a second later (a
///   store that drops it before its expiry fails);
/// - `save` keeps whichever token expires later and returns what is stored, also when an older
///   and a newer token are saved at once: the two saves race as separate tasks, 24 times, and
///   the newer must be left every time (a compare-and-swap split into a read and a write fails);
/// - apps are isolated; `invalidate` removes only the stored token, and says whether it did;
/// - the store's own `Debug` (`format!("{store:?}")`, what a log line or an error report
///   prints) never shows a token it holds.
///
/// When the store has a [`RefreshLease`](crate::RefreshLease), its rules are checked too:
/// exclusive (of 64 concurrent `try_acquire_refresh_lease` calls, as separate tasks, exactly one
/// wins, so a check-then-set lease fails), per app, released only by its holder, expiring, and
/// hold-offs. A store shared by several processes must have one: check it with
/// [`shared_token_store_contract`], which fails a store without a lease. The lease checks wait
/// for expiries with `tokio::time::sleep` (under half a second each), as a store's own clock
/// cannot be driven by hand; the whole suite takes about two seconds.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// subscribe_client::test_util::token_store_contract(Arc::new(subscribe_client::InMemoryTokenStore::new())).await;
/// # });
/// ```
///
/// # Panics
/// When a rule is broken.
pub async fn token_store_contract<S: TokenStore + ?Sized + 'static>(store: std::sync::Arc<S>) {
    store_rules(&store).await;
}

/// The [`TokenStore`] contract for a store that several processes share (Redis, a database):
/// everything [`token_store_contract`] checks, and the store **must** offer an exclusive
/// [`RefreshLease`](crate::RefreshLease), or a fleet would stampede WeChat's token endpoint.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// subscribe_client::test_util::shared_token_store_contract(Arc::new(subscribe_client::InMemoryTokenStore::new())).await;
/// # });
/// ```
///
/// # Panics
/// When a rule is broken, or the store offers no refresh lease.
pub async fn shared_token_store_contract<S: TokenStore + ?Sized + 'static>(store: std::sync::Arc<S>) {
    assert!(
        store.refresh_lease().is_some(),
        "a shared store must offer a refresh lease (TokenStore::refresh_lease returns None): \
         without one every instance refreshes at once"
    );
    store_rules(&store).await;
}

/// How many times the suite races an older and a newer token's saves: a compare-and-swap
/// split into a read and a write loses some of these races, whichever save is scheduled first.
const SAVE_RACES: usize = 24;

async fn store_rules<S: TokenStore + ?Sized + 'static>(store: &std::sync::Arc<S>) {
    // Relative to now: a store may keep tokens by its own clock (Redis drops a key after its
    // lifetime), so a fixed instant here would pass until the day the real clock passed it.
    let t0 = now_to_the_millisecond();
    let app = unique_app("a");
    let other = unique_app("b");
    // Random texts, so finding one in the store's `Debug` cannot be a coincidence.
    let older = CachedToken::new(token(&random_text("older")), t0 + Duration::from_secs(7200));
    let newer = CachedToken::new(token(&random_text("newer")), t0 + Duration::from_secs(7300));

    assert!(store.load(&app).await.expect("load").is_none(), "load: a new app has no token");

    let kept = store.save(&app, &older).await.expect("save");
    assert_eq!(kept, older, "save: into an empty slot stores the token");
    assert_eq!(store.load(&app).await.expect("load"), Some(older.clone()), "load: returns what was saved");
    // Still there a second later: a store that drops a token before its expiry (an instant read
    // on another clock, a lifetime in the wrong unit) fails here rather than in production.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        store.load(&app).await.expect("load"),
        Some(older.clone()),
        "load: a token is kept until its expiry (it was gone a second after saving, two hours before it expires)"
    );

    let kept = store.save(&app, &newer).await.expect("save");
    assert_eq!(kept, newer, "save: a token expiring later replaces the stored one");

    let kept = store.save(&app, &older).await.expect("save");
    assert_eq!(kept, newer, "save: an older token never overwrites a newer one (it returns the newer)");
    assert_eq!(store.load(&app).await.expect("load"), Some(newer.clone()), "load after a refused save");

    assert!(store.load(&other).await.expect("load").is_none(), "apps are isolated");

    let removed = store.invalidate(&app, older.token()).await.expect("invalidate");
    assert!(!removed, "invalidate: a token that is not the stored one removes nothing");
    assert_eq!(
        store.load(&app).await.expect("load"),
        Some(newer.clone()),
        "invalidate of another token kept the stored one"
    );

    assert!(
        store.invalidate(&app, newer.token()).await.expect("invalidate"),
        "invalidate: the stored token is removed"
    );
    assert!(store.load(&app).await.expect("load").is_none(), "invalidate: nothing is left");
    assert!(!store.invalidate(&app, newer.token()).await.expect("invalidate"), "invalidate of an empty slot");

    let fresh = CachedToken::new(token(&random_text("fresh")), t0 + Duration::from_secs(60));
    assert_eq!(
        store.save(&app, &fresh).await.expect("save"),
        fresh,
        "after invalidation any token is stored"
    );

    // The store itself, as a log line or an error report would print it.
    let debug = format!("{store:?}");
    assert!(
        !debug.contains(fresh.token().expose_secret()),
        "the store's Debug must not show a token it holds: format!(\"{{store:?}}\") printed the \
         token just saved ({} characters of output)",
        debug.len()
    );

    save_races(store, &older, &newer).await;

    // The refresh lease, when the store has one: it must be exclusive.
    if store.refresh_lease().is_some() {
        refresh_lease_contract(store, &app, &other).await;
    }
}

/// `label` and 16 random hex digits: a token text no store's `Debug` prints by chance.
fn random_text(label: &str) -> String {
    let mut n = [0u8; 8];
    let _ = getrandom::fill(&mut n);
    format!("{label}-{}", hex::encode(n))
}

/// Saves of `older` and `newer` into an empty slot, at once, [`SAVE_RACES`] times (each
/// ordering half the time): the newer must be what is left every time. The saves run as
/// separate tasks, on several threads when the runtime has them.
async fn save_races<S: TokenStore + ?Sized + 'static>(
    store: &std::sync::Arc<S>,
    older: &CachedToken,
    newer: &CachedToken,
) {
    let app = unique_app("race");
    for race in 0..SAVE_RACES {
        let save = |t: &CachedToken| {
            let (store, app, t) = (std::sync::Arc::clone(store), app.clone(), t.clone());
            tokio::spawn(async move { store.save(&app, &t).await.expect("save") })
        };
        let (from_older, from_newer) = if race % 2 == 0 {
            let o = save(older);
            (o, save(newer))
        } else {
            let n = save(newer);
            (save(older), n)
        };
        let (_, from_newer) = (from_older.await.expect("task"), from_newer.await.expect("task"));
        assert_eq!(
            store.load(&app).await.expect("load").as_ref(),
            Some(newer),
            "save: concurrent saves of an older and a newer token leave the newer (race {race}: the \
             older one overwrote it, so the compare-and-swap is not atomic)"
        );
        assert_eq!(&from_newer, newer, "save: the save of the newer token returns it (race {race})");
        assert!(
            store.invalidate(&app, newer.token()).await.expect("invalidate"),
            "invalidate after race {race}"
        );
    }
}

/// How many refreshers race for one lease.
const LEASE_RACERS: usize = 64;

/// The [`RefreshLease`](crate::RefreshLease) rules of `store`'s lease, on fresh apps `app` and
/// `other`.
#[allow(clippy::too_many_lines)] // one rule after another, in order
async fn refresh_lease_contract<S: TokenStore + ?Sized + 'static>(
    store: &std::sync::Arc<S>,
    app: &AppId,
    other: &AppId,
) {
    let ttl = Duration::from_millis(300);
    // Exclusive under concurrency: the refreshers race as separate tasks (on several threads
    // when the runtime has them), for a lease that outlives the race.
    let raced = unique_app("lease");
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..LEASE_RACERS {
        let (store, raced) = (std::sync::Arc::clone(store), raced.clone());
        racers.spawn(async move {
            let lease = store.refresh_lease().expect("the store's lease");
            let holder = format!("racer{i}");
            let won = lease.try_acquire_refresh_lease(&raced, &holder, Duration::from_secs(30)).await;
            won.expect("lease").then_some(holder)
        });
    }
    let mut winners = Vec::new();
    while let Some(won) = racers.join_next().await {
        winners.extend(won.expect("task"));
    }
    assert_eq!(
        winners.len(),
        1,
        "a live lease is exclusive: exactly one of {LEASE_RACERS} concurrent try_acquire_refresh_lease \
         calls wins (a check, then a set, is not atomic): {winners:?} won"
    );

    let lease = store.refresh_lease().expect("the store's lease");
    lease.release_refresh_lease(&raced, &winners[0]).await.expect("release");
    assert!(
        lease.try_acquire_refresh_lease(app, "h1", ttl).await.expect("lease"),
        "the first holder gets the lease"
    );
    assert!(
        !lease.try_acquire_refresh_lease(app, "h2", ttl).await.expect("lease"),
        "a live lease is exclusive: a second holder does not get it"
    );
    {
        assert!(
            lease.try_acquire_refresh_lease(other, "h2", ttl).await.expect("lease"),
            "leases are per app"
        );
        lease.release_refresh_lease(app, "h2").await.expect("release");
        assert!(
            !lease.try_acquire_refresh_lease(app, "h3", ttl).await.expect("lease"),
            "only the holder releases"
        );
        lease.release_refresh_lease(app, "h1").await.expect("release");
        assert!(
            lease.try_acquire_refresh_lease(app, "h3", ttl).await.expect("lease"),
            "a released lease is free"
        );
        // Expiry: a crashed holder's lease comes back.
        tokio::time::sleep(ttl + Duration::from_millis(200)).await;
        assert!(
            lease.try_acquire_refresh_lease(app, "h4", ttl).await.expect("lease"),
            "an expired lease is free"
        );
        lease.release_refresh_lease(app, "h4").await.expect("release");
        lease.release_refresh_lease(other, "h2").await.expect("release");

        // Hold-offs: a failed refresher pauses the fleet.
        assert!(lease.refresh_hold_off(app).await.expect("hold-off").is_none(), "no hold-off by default");
        assert!(lease.try_acquire_refresh_lease(app, "h5", ttl).await.expect("lease"), "lease for h5");
        lease.hold_off_refresh(app, "h6", ttl, "not the holder").await.expect("hold off");
        assert!(
            lease.refresh_hold_off(app).await.expect("hold-off").is_none(),
            "hold_off_refresh leaves another holder's live lease alone"
        );
        lease.hold_off_refresh(app, "h5", ttl, "token endpoint answered HTTP 502").await.expect("hold off");
        let h =
            lease.refresh_hold_off(app).await.expect("hold-off").expect("the holder's hold-off is in force");
        assert_eq!(h.reason, "token endpoint answered HTTP 502", "the hold-off keeps its reason");
        assert!(h.remaining > Duration::ZERO && h.remaining <= ttl, "hold-off remaining: {:?}", h.remaining);
        assert!(
            !lease.try_acquire_refresh_lease(app, "h7", ttl).await.expect("lease"),
            "nobody takes the lease during a hold-off"
        );
        assert!(
            !lease.try_acquire_refresh_lease(app, "h5", ttl).await.expect("lease"),
            "not even the instance that asked for it"
        );
        lease.release_refresh_lease(app, "h5").await.expect("release");
        assert!(
            lease.refresh_hold_off(app).await.expect("hold-off").is_some(),
            "release does not end a hold-off"
        );
        assert!(lease.refresh_hold_off(other).await.expect("hold-off").is_none(), "hold-offs are per app");
        tokio::time::sleep(ttl + Duration::from_millis(200)).await;
        assert!(lease.refresh_hold_off(app).await.expect("hold-off").is_none(), "a hold-off ends");
        assert!(
            lease.try_acquire_refresh_lease(app, "h8", ttl).await.expect("lease"),
            "the lease is free after the hold-off"
        );
        lease.release_refresh_lease(app, "h8").await.expect("release");
    }
}
