//! Test support: [`ManualClock`](crate::ManualClock), canned WeChat answers for
//! [`MockTransport`] ([`mock_with_stable_token`], [`mock_with_rotating_token`] for the 40001
//! scenario, with the client's token refresh sequence documented there), what a test of a
//! transport needs ([`HttpRequest`], [`TransportErrorKind`]), and the contract suites
//! ([`token_store_contract`], [`shared_token_store_contract`], [`grant_ledger_contract`],
//! [`used_states_contract`], and with the feature `events` `replay_cache_contract`) that a backend runs in its own tests, with [`LostAnswers`], a
//! store of used states whose writes land and whose answers are lost.

use std::time::{Duration, SystemTime};

pub use subscribe_transport::{HttpRequest, MockReply, MockTransport, TransportErrorKind};
use subscribe_types::{AccessToken, AppId};

use crate::token::{CachedToken, TokenStore};

/// The send endpoint's path.
pub const SEND_PATH: &str = "/cgi-bin/message/template/subscribe";
/// The stable token endpoint's path.
pub const STABLE_TOKEN_PATH: &str = "/cgi-bin/stable_token";
/// The classic token endpoint's path.
pub const CLASSIC_TOKEN_PATH: &str = "/cgi-bin/token";

/// A token endpoint's success: `{"access_token", "expires_in"}`.
pub fn token_reply(token: &str, expires_in: u32) -> MockReply {
    MockReply::json(200, format!(r#"{{"access_token":"{token}","expires_in":{expires_in}}}"#))
}

/// `{"errcode": code, "errmsg": msg}`.
pub fn errcode_reply(code: i64, msg: &str) -> MockReply {
    MockReply::json(200, format!(r#"{{"errcode":{code},"errmsg":"{msg}"}}"#))
}

/// `{"errcode":0,"errmsg":"ok"}`.
pub fn ok_reply() -> MockReply {
    errcode_reply(0, "ok")
}

/// A mock with the stable-token endpoint always answering `token` valid for `expires_in`.
pub fn mock_with_stable_token(token: &str, expires_in: u32) -> MockTransport {
    let mock = MockTransport::new();
    mock.route("POST", STABLE_TOKEN_PATH).reply(token_reply(token, expires_in));
    mock
}

/// A mock whose stable-token endpoint hands out a new token on every request: `TOKEN-1`,
/// `TOKEN-2`, …, each valid for `expires_in` seconds. Script the 40001 scenario with it.
///
/// When WeChat rejects a token (40001, 40014, 42001), the client forgets **that** token, asks
/// `/cgi-bin/stable_token` again with `force_refresh: false`, and replays the call once with the
/// token it gets. Only if the endpoint hands back the very token just rejected does it ask once
/// more with `force_refresh: true` (WeChat allows 20 of those a day, 30 s apart). So with this
/// mock a rejected `TOKEN-1` is followed by exactly one token request and a replay with
/// `TOKEN-2`:
///
/// ```
/// use subscribe_client::test_util::{SEND_PATH, STABLE_TOKEN_PATH, errcode_reply, mock_with_rotating_token, ok_reply};
/// # use subscribe_types::*;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let wechat = mock_with_rotating_token(7200);
/// wechat.push(errcode_reply(40001, "invalid credential")).push(ok_reply());
/// let client = subscribe_client::Client::builder(AppId::new("wx0123456789abcdef")?, AppSecret::new("secret")?)
///     .transport(wechat.clone())
///     .build()?;
/// # let msg = SubscribeMessage::builder(OpenId::new("oUser")?, TemplateId::new("tpl")?, Scene::new(1)?)
/// #     .title("t").content("c").build()?;
/// let receipt = client.send(&msg).await?;
/// assert_eq!(receipt.attempts, 2);
/// wechat.assert_count(STABLE_TOKEN_PATH, 2);
/// let sends: Vec<_> = wechat.requests().into_iter().filter(|r| r.path() == SEND_PATH).collect();
/// assert_eq!(sends[1].query_param("access_token").as_deref(), Some("TOKEN-2"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub fn mock_with_rotating_token(expires_in: u32) -> MockTransport {
    let mock = MockTransport::new();
    let issued = std::sync::atomic::AtomicU64::new(0);
    mock.route("POST", STABLE_TOKEN_PATH).respond_with(move |_| {
        let n = issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        token_reply(&format!("TOKEN-{n}"), expires_in)
    });
    mock
}

/// The system clock's now, to the millisecond (what stores keep of an instant).
fn now_to_the_millisecond() -> SystemTime {
    let ms = crate::Clock::now(&crate::SystemClock)
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

fn unique_app(label: &str) -> AppId {
    let mut n = [0u8; 6];
    let _ = getrandom::fill(&mut n);
    let suffix = u64::from_le_bytes([n[0], n[1], n[2], n[3], n[4], n[5], 0, 0]);
    AppId::new(format!("wxcontract{label}{suffix:012x}")).unwrap_or_else(|e| panic!("contract app id: {e}"))
}

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
/// - `settle_many` gives one result per item, `LeaseLost` for a stale one.
///
/// It runs in real time: `now` is always the system clock's, and lapses are waited for (a
/// 1.5-second lease, so the suite takes about two seconds). A ledger may therefore time its
/// leases by its own clock (a database's `now()`, as `subscribe-sql` does) instead of the
/// `now` it is given; the times it reports (`renewed_at`) must agree with the system clock's
/// to the millisecond.
///
/// Same calling convention as [`token_store_contract`].
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
}

/// How many claimers race in [`grant_ledger_contract`], each for up to 10 grants.
const CLAIM_RACERS: usize = 8;
/// The grants they race for: fewer than they ask for, so they compete for the same ones.
const CLAIM_RACE_GRANTS: usize = 40;

/// Panics unless `t` lies in `[before, after]`, give or take a millisecond (ledgers keep
/// times to the millisecond).
fn assert_near(t: SystemTime, before: SystemTime, after: SystemTime, rule: &str) {
    let ms = Duration::from_millis(1);
    assert!(t + ms >= before && t <= after + ms, "{rule}: {t:?} is not within [{before:?}, {after:?}]");
}

/// The [`UsedStates`](crate::UsedStates) contract. Panics, naming the broken rule, when the
/// store breaks it. Same calling convention as [`token_store_contract`]; uses fresh random
/// states, with expiries relative to now (a store may keep marks by its own clock, as Redis
/// and SQL databases do).
///
/// It checks that `mark_used` marks a state as its answer's (a new state is
/// [`First`](crate::StateUse::First); the same answer again is a
/// [`Retry`](crate::StateUse::Retry); another answer is [`Used`](crate::StateUse::Used); states
/// are independent), that `seal` by the answer that made the mark makes it `Used` for that
/// answer too and by another answer changes nothing, that of 64 concurrent uses of one state by
/// two answers exactly one is the first and only its answer's uses are accepted, and that a
/// mark is kept for its lifetime: a state marked with a lifetime of 4 s is still used 2 s
/// later, waited for in real time (so a store that keeps marks for a second, or reads a
/// lifetime in seconds as milliseconds, fails).
///
/// Then, through a [`Client`](crate::Client) on the store wrapped in [`LostAnswers`]: when a
/// mark lands and its answer is lost (the store times out), the user's retry of the same answer
/// is recorded and every other answer with that state (another openid, the same one in
/// another case) is refused; when the seal lands and its answer is lost, the grant is recorded
/// and the same answer later is refused. The suite takes about three seconds.
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// subscribe_client::test_util::used_states_contract(Arc::new(subscribe_client::InMemoryUsedStates::new())).await;
/// # });
/// ```
///
/// # Panics
/// When a rule is broken.
pub async fn used_states_contract<S: crate::UsedStates + ?Sized + 'static>(store: std::sync::Arc<S>) {
    use crate::{AnswerDigest, Clock as _, StateUse};
    let now = crate::SystemClock.now();
    let expires = now + Duration::from_secs(600);
    let state = || {
        let mut n = [0u8; 16];
        let _ = getrandom::fill(&mut n);
        subscribe_types::Reserved::new(format!("1{}", hex::encode(n)))
            .unwrap_or_else(|e| panic!("contract state: {e}"))
    };
    let by = |state: &subscribe_types::Reserved, openid: &str| {
        AnswerDigest::of(state, &subscribe_types::OpenId::new(openid).unwrap_or_else(|e| panic!("{e}")))
    };
    let (a, b, c) = (state(), state(), state());
    let (alice, mallory) = (by(&a, CONTRACT_ALICE), by(&a, CONTRACT_MALLORY));
    let mark = |s: &subscribe_types::Reserved, d: &AnswerDigest| {
        let (store, state, digest) = (std::sync::Arc::clone(&store), s.clone(), d.clone());
        async move { store.mark_used(&state, &digest, expires, now).await.expect("mark_used") }
    };
    assert_eq!(mark(&a, &alice).await, StateUse::First, "mark_used: a new state is unused");
    assert_eq!(mark(&a, &alice).await, StateUse::Retry, "mark_used: the same answer again is a retry");
    assert_eq!(mark(&a, &mallory).await, StateUse::Used, "mark_used: another answer finds the state used");
    assert_eq!(
        mark(&a, &alice).await,
        StateUse::Retry,
        "mark_used: another answer leaves the mark as it was"
    );
    assert_eq!(mark(&b, &by(&b, CONTRACT_ALICE)).await, StateUse::First, "mark_used: states are independent");
    store.seal(&a, &mallory).await.expect("seal");
    assert_eq!(mark(&a, &alice).await, StateUse::Retry, "seal: by another answer, nothing changes");
    store.seal(&a, &alice).await.expect("seal");
    assert_eq!(
        mark(&a, &alice).await,
        StateUse::Used,
        "seal: once sealed, the same answer finds the state used"
    );
    assert_eq!(mark(&a, &mallory).await, StateUse::Used, "seal: once sealed, another answer finds it used");
    store.seal(&c, &by(&c, CONTRACT_ALICE)).await.expect("seal: a state never used is no error");
    assert_eq!(
        mark(&c, &by(&c, CONTRACT_ALICE)).await,
        StateUse::First,
        "seal: a state never used stays unused"
    );

    // 64 concurrent uses of one state, by two answers in turn: one is the first, and only its
    // answer's uses are accepted.
    let raced = state();
    let answers = [by(&raced, CONTRACT_ALICE), by(&raced, CONTRACT_MALLORY)];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let use_ = mark(&raced, &answers[i % 2]);
        tasks.spawn(async move { (i % 2, use_.await) });
    }
    let (mut firsts, mut accepted) = (0, [0usize; 2]);
    while let Some(joined) = tasks.join_next().await {
        let (answer, use_) = joined.expect("task");
        firsts += usize::from(use_ == StateUse::First);
        accepted[answer] += usize::from(use_.accepts());
    }
    assert_eq!(firsts, 1, "mark_used: exactly one of 64 concurrent uses of a state is the first");
    accepted.sort_unstable();
    assert_eq!(accepted, [0, 32], "mark_used: the first answer's 32 uses are accepted, the other's none");

    // A mark outlives 2 s of a 4 s lifetime, waited for in real time: a store that keeps marks
    // by its own clock, in the wrong unit or for a fixed second, has dropped it by then.
    let kept = state();
    let (first, other) = (by(&kept, CONTRACT_ALICE), by(&kept, CONTRACT_MALLORY));
    let marked = crate::SystemClock.now();
    let lifetime = Duration::from_secs(4);
    assert_eq!(
        store.mark_used(&kept, &first, marked + lifetime, marked).await.expect("mark_used"),
        StateUse::First,
        "mark_used: a new state"
    );
    tokio::time::sleep(MARK_CHECKED_AFTER).await;
    assert_eq!(
        store.mark_used(&kept, &other, marked + lifetime, crate::SystemClock.now()).await.expect("mark_used"),
        StateUse::Used,
        "mark_used: a mark is kept until its state expires (marked with a lifetime of {lifetime:?}, \
         the state was unused again {MARK_CHECKED_AFTER:?} later)"
    );

    lost_answers_lose_no_grant(store).await;
}

/// Two users of [`used_states_contract`]: openids as WeChat issues them (28 characters).
const CONTRACT_ALICE: &str = "oContract_Alice_00000000001";
const CONTRACT_MALLORY: &str = "oContract_Mallory_000000001";

/// The client part of [`used_states_contract`]: a mark or a seal that lands with its answer
/// lost.
async fn lost_answers_lose_no_grant<S: crate::UsedStates + ?Sized + 'static>(store: std::sync::Arc<S>) {
    use crate::{AuthorizationError, ErrorKind, GrantLedger as _, GrantScope, RecordError, Recorded};
    use subscribe_types::{AppId, AppSecret, HttpUrl, OpenId, Scene, TemplateId};
    let lossy = std::sync::Arc::new(LostAnswers::new(store));
    let appid = AppId::new("wx0000000000c0de5a").unwrap_or_else(|e| panic!("{e}"));
    let client = crate::Client::builder(
        appid.clone(),
        AppSecret::new("contract-app-secret-0123456789abcdef").unwrap_or_else(|e| panic!("{e}")),
    )
    .transport(MockTransport::new())
    .used_states(std::sync::Arc::clone(&lossy))
    .store_timeout(Duration::from_millis(300))
    .build()
    .unwrap_or_else(|e| panic!("contract client: {e}"));
    let scope = GrantScope {
        appid,
        template_id: TemplateId::new("ContractTemplate_0000000000000000000000001")
            .unwrap_or_else(|e| panic!("{e}")),
        scene: Scene::new(1).unwrap_or_else(|e| panic!("{e}")),
    };
    let ledger = crate::InMemoryGrantLedger::new();
    let redirect = HttpUrl::new("https://contract.example/cb").unwrap_or_else(|e| panic!("{e}"));
    let link = || client.authorize_url(&scope.template_id, scope.scene, &redirect);
    let confirm = |link: &crate::AuthorizationLink, openid: &str| {
        format!(
            "openid={openid}&template_id={}&action=confirm&scene=1&reserved={}",
            scope.template_id.as_str(),
            link.request.reserved.as_str()
        )
    };
    let replayed = |r: Result<_, RecordError>| {
        matches!(r, Err(RecordError::Authorization(AuthorizationError::ReplayedState)))
    };

    let first = link();
    lossy.lose_next_mark();
    let lost = client.complete_and_record(&confirm(&first, CONTRACT_ALICE), &ledger).await;
    assert!(
        matches!(&lost, Err(e @ RecordError::Authorization(AuthorizationError::UsedStates(_))) if e.kind() == ErrorKind::Retryable),
        "lost answers: a mark whose answer is lost is a retryable error: {lost:?}"
    );
    assert_eq!(lossy.lost(), 1, "lost answers: the wrapper made the mark and lost its answer");
    let retried = client.complete_and_record(&confirm(&first, CONTRACT_ALICE), &ledger).await;
    assert!(
        matches!(retried, Ok((_, Some(Recorded::Added)))),
        "lost answers: the retry of an answer whose mark landed (its answer lost) is recorded: {retried:?}"
    );
    for other in [CONTRACT_MALLORY.to_owned(), CONTRACT_ALICE.to_lowercase(), CONTRACT_ALICE.to_uppercase()] {
        assert!(
            replayed(client.complete_and_record(&confirm(&first, &other), &ledger).await),
            "lost answers: another openid ({other}) with the state is a replay"
        );
    }
    assert!(
        replayed(client.complete_and_record(&confirm(&first, CONTRACT_ALICE), &ledger).await),
        "lost answers: the same answer after it was recorded is a replay"
    );

    let second = link();
    lossy.lose_next_seal();
    let sealed = client.complete_and_record(&confirm(&second, CONTRACT_MALLORY), &ledger).await;
    assert!(
        matches!(sealed, Ok((_, Some(Recorded::Added)))),
        "lost answers: a lost answer to the seal loses nothing: {sealed:?}"
    );
    assert_eq!(lossy.lost(), 2, "lost answers: the wrapper made the seal and lost its answer");
    assert!(
        replayed(client.complete_and_record(&confirm(&second, CONTRACT_MALLORY), &ledger).await),
        "lost answers: the seal landed, so the same answer again is a replay"
    );
    let now = crate::SystemClock;
    let counts = ledger.counts(&scope, crate::Clock::now(&now)).await.expect("counts");
    assert_eq!(counts.pending, 2, "lost answers: one grant per state, none lost");
    for (openid, recorded) in [(CONTRACT_ALICE, true), (CONTRACT_MALLORY, true)] {
        let key = scope.key(OpenId::new(openid).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(ledger.get(&key).await.expect("get").is_some(), recorded, "lost answers: {openid}");
    }
}

/// A store of used states whose writes land and whose answers are lost: once armed
/// ([`lose_next_mark`](Self::lose_next_mark), [`lose_next_seal`](Self::lose_next_seal)), the
/// next such call is made on the store and then never answers, as a store whose command
/// arrived and whose reply did not, so the client's `store_timeout` ends it with a timeout.
#[derive(Debug)]
pub struct LostAnswers<S: ?Sized> {
    lose_mark: std::sync::atomic::AtomicBool,
    lose_seal: std::sync::atomic::AtomicBool,
    lost: std::sync::atomic::AtomicUsize,
    store: std::sync::Arc<S>,
}

impl<S: crate::UsedStates + ?Sized> LostAnswers<S> {
    /// `store`, answering every call until armed.
    pub fn new(store: std::sync::Arc<S>) -> Self {
        Self {
            lose_mark: false.into(),
            lose_seal: false.into(),
            lost: std::sync::atomic::AtomicUsize::new(0),
            store,
        }
    }

    /// The next `mark_used` is made, and its answer lost.
    pub fn lose_next_mark(&self) {
        self.lose_mark.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The next `seal` is made, and its answer lost.
    pub fn lose_next_seal(&self) {
        self.lose_seal.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many calls were made whose answer was lost.
    pub fn lost(&self) -> usize {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// After a call was made: never answers if `armed` was set (and clears it).
    async fn answer<T>(&self, armed: &std::sync::atomic::AtomicBool, answer: T) -> T {
        if armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.lost.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        answer
    }
}

#[async_trait::async_trait]
impl<S: crate::UsedStates + ?Sized> crate::UsedStates for LostAnswers<S> {
    async fn mark_used(
        &self,
        state: &subscribe_types::Reserved,
        by: &crate::AnswerDigest,
        expires: SystemTime,
        now: SystemTime,
    ) -> Result<crate::StateUse, crate::UsedStatesError> {
        let answer = self.store.mark_used(state, by, expires, now).await;
        self.answer(&self.lose_mark, answer).await
    }

    async fn seal(
        &self,
        state: &subscribe_types::Reserved,
        by: &crate::AnswerDigest,
    ) -> Result<(), crate::UsedStatesError> {
        let answer = self.store.seal(state, by).await;
        self.answer(&self.lose_seal, answer).await
    }
}

/// How long [`used_states_contract`] waits before it checks that a mark is still there.
const MARK_CHECKED_AFTER: Duration = Duration::from_secs(2);

/// The rules every [`NotificationResults`](crate::NotificationResults) store keeps: an unknown
/// `msgid` has no result; a result reads back as recorded (its time to the millisecond), for
/// any `u64` msgid; a second result for one `msgid` replaces the first; results of other
/// msgids are untouched.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// subscribe_client::test_util::notification_results_contract(&subscribe_client::InMemoryNotificationResults::default()).await;
/// # });
/// ```
///
/// # Panics
/// When a rule is broken.
#[cfg(feature = "events")]
pub async fn notification_results_contract(store: &dyn crate::NotificationResults) {
    use crate::NotificationResult;
    // Relative to the real clock, as every instant a store may compare with its own must be.
    let at = now_to_the_millisecond();
    let result = |msgid: u64, error_code: i64, status: &str| NotificationResult {
        msgid,
        openid: "oContract_User_000000000001".into(),
        template_id: "ContractTemplate_0000000000000000000000001".into(),
        error_code,
        error_status: status.into(),
        at,
    };
    assert_eq!(store.result(1).await.expect("read"), None, "an unknown msgid has no result");
    for msgid in [1, 1_700_000_000_000_000_001, u64::MAX] {
        store.record_result(&result(msgid, 0, "success")).await.expect("record");
        assert_eq!(
            store.result(msgid).await.expect("read"),
            Some(result(msgid, 0, "success")),
            "msgid {msgid}"
        );
    }
    let failed = result(1, 43101, "failed:user refuse to accept the msg");
    store.record_result(&failed).await.expect("record");
    assert_eq!(store.result(1).await.expect("read"), Some(failed), "a second result replaces the first");
    assert_eq!(
        store.result(u64::MAX).await.expect("read"),
        Some(result(u64::MAX, 0, "success")),
        "others untouched"
    );
    assert_eq!(store.result(2).await.expect("read"), None);
}

/// Checks a [`ReplayCache`](subscribe_events::replay::ReplayCache) (feature `events`): a key's
/// first sight is `true` and every later one `false` until the key expires, also at its last
/// second; of concurrent first sights of one key exactly one is `true`; keys of another
/// signature or another AppID are other keys; a forgotten key is seen for the first time
/// again; a key is kept for its whole lifetime (600 s, checked after a wait) and dropped after
/// it (a key living two seconds is new again after them). Keys are random, so a shared backend
/// can run it in parallel runs. The suite takes about three seconds.
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use subscribe_client::events::replay::MemoryReplayCache;
/// subscribe_client::test_util::replay_cache_contract(Arc::new(MemoryReplayCache::default())).await;
/// # });
/// ```
///
/// # Panics
/// When a rule is broken.
#[cfg(feature = "events")]
pub async fn replay_cache_contract<C: subscribe_events::replay::ReplayCache + ?Sized + 'static>(
    cache: std::sync::Arc<C>,
) {
    use subscribe_events::replay::ReplayKey;
    #[allow(clippy::disallowed_methods)] // the backend's clock is the real one
    let unix_now = || SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let signature = || {
        let mut n = [0u8; 20];
        let _ = getrandom::fill(&mut n);
        hex::encode(n)
    };
    let now = unix_now();
    let key = |appid: &str, sig: &str, lifetime: u64| ReplayKey::new(appid, sig, now, "n", lifetime, now);
    let first = |k: ReplayKey, at: u64, what: &'static str| {
        let cache = std::sync::Arc::clone(&cache);
        async move { cache.first_sight(&k, at).await.unwrap_or_else(|e| panic!("first_sight ({what}): {e:?}")) }
    };
    let (s1, s2) = (signature(), signature());
    let a = key("wxContractA", &s1, 600);
    assert!(first(a.clone(), now, "a new key").await, "first_sight: a new key is a first sight");
    assert!(!first(a.clone(), now, "again").await, "first_sight: the same key again is a replay");
    assert!(
        !first(a.clone(), now + 1, "a second later").await,
        "first_sight: a second later, still a replay"
    );
    assert!(
        !first(a.clone(), a.expires_at(), "at its last second").await,
        "first_sight: a key is a replay until its last second"
    );
    let upper = key("wxContractA", &s1.to_uppercase(), 600);
    assert!(
        !first(upper, now, "in upper case").await,
        "first_sight: the signature in upper case is the same key"
    );
    assert!(
        first(key("wxContractA", &s2, 600), now, "another signature").await,
        "first_sight: another signature"
    );
    assert!(first(key("wxContractB", &s1, 600), now, "another appid").await, "first_sight: another appid");

    // Forgotten, it is new; forgetting what is not there is fine.
    cache.forget(&a).await.unwrap_or_else(|e| panic!("forget: {e:?}"));
    assert!(first(a.clone(), now, "forgotten").await, "forget: a forgotten key is a first sight again");
    assert!(!first(a.clone(), now, "after").await, "forget: and then a replay");
    cache.forget(&key("wxContractA", &signature(), 600)).await.unwrap_or_else(|e| panic!("forget: {e:?}"));

    // Exactly one of many concurrent first sights.
    let racing = key("wxContractA", &signature(), 600);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        tasks.spawn(first(racing.clone(), now, "racing"));
    }
    let firsts = tasks.join_all().await;
    assert_eq!(
        firsts.iter().filter(|f| **f).count(),
        1,
        "first_sight: exactly one of 32 concurrent first sights"
    );

    // Kept for its lifetime, dropped after it (on the backend's own time, if it has one).
    let short = key("wxContractA", &signature(), 1);
    assert!(first(short.clone(), now, "a short key").await);
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let later = unix_now();
    assert!(!first(a, later, "after a wait").await, "first_sight: a key is kept for its whole lifetime");
    assert!(first(short, later, "expired").await, "first_sight: an expired key is a first sight again");
}
