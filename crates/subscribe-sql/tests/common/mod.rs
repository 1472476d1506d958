//! The tests both databases run: `backend_tests!(factory)` expands them for one backend.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc, dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use subscribe_client::test_util::{
    LostAnswers, MockTransport, grant_ledger_contract, shared_token_store_contract, used_states_contract,
};
use subscribe_client::{
    Clock as _, ErrorKind, GrantKey, GrantLedger, GrantScope, GrantStatus, LedgerError, Recorded, Resolution,
    Settlement, SystemClock, TokenStore as _,
};
use subscribe_sql::{EventKind, Sql, SqlGrantLedger, SqlUsedStates};
use subscribe_types::{AppId, OpenId, Scene, TemplateId};

pub fn now() -> SystemTime {
    SystemClock.now()
}

/// A scope no other test uses.
pub fn scope(label: &str) -> GrantScope {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    GrantScope {
        appid: AppId::new(format!("wx{:08x}{:08x}", std::process::id(), n)).unwrap(),
        template_id: TemplateId::new(format!("tpl_{label}")).unwrap(),
        scene: Scene::new(1).unwrap(),
    }
}

pub fn user(i: usize) -> OpenId {
    OpenId::new(format!("oUser{i:05}")).unwrap()
}

pub async fn contract_suites(sql: Sql) {
    grant_ledger_contract(Arc::new(SqlGrantLedger::new(sql.clone()))).await;
    shared_token_store_contract(Arc::new(subscribe_sql::SqlTokenStore::new(sql.clone()))).await;
    #[cfg(feature = "events")]
    {
        use subscribe_client::NotificationResults as _;
        let appid = subscribe_types::AppId::new("wx00000000000c0de5").unwrap();
        let results = subscribe_sql::SqlNotificationResults::new(sql.clone(), appid);
        subscribe_client::test_util::notification_results_contract(&results).await;
        // Another app's results on the same database are its own.
        let other = subscribe_sql::SqlNotificationResults::new(
            sql,
            subscribe_types::AppId::new("wx00000000000c0de6").unwrap(),
        );
        assert_eq!(other.result(1).await.unwrap(), None);
    }
}

/// Leases are timed by the database's clock: a caller whose clock runs an hour ahead (or
/// behind) neither sees a live reservation as lapsed nor keeps one alive.
pub async fn leases_ignore_the_callers_clock(sql: Sql) {
    let ledger = SqlGrantLedger::new(sql);
    let scope = scope("skew");
    let key = scope.key(user(1));
    ledger.record(&key, now()).await.unwrap();
    // Wall-clock bounds, wide: the lease must stay live through the checks below however
    // loaded the machine, so ten minutes, not seconds.
    let lease = Duration::from_secs(600);
    let skewed_back = now() - Duration::from_secs(3600);
    let before = now();
    let r = ledger.reserve(&key, "behind", lease, skewed_back).await.unwrap().unwrap();
    let after = now();
    let ahead = now() + Duration::from_secs(3600);
    assert!(
        ledger.reserve(&key, "ahead", lease, ahead).await.unwrap().is_none(),
        "a caller an hour ahead cannot take a live reservation"
    );
    assert!(ledger.pending_page(&scope, None, 10, ahead).await.unwrap().is_empty(), "nor sees it pending");
    let c = ledger.counts(&scope, ahead).await.unwrap();
    assert_eq!((c.pending, c.reserved), (0, 1), "counts go by the database's clock too");
    // The lease ends by the database's clock: `lease` from when the call ran (bracketed by our
    // clock, which the database's matches within a second), not from the caller's `now`, an
    // hour off. The bracket widens with any delay, so load cannot fail it.
    let second = Duration::from_secs(1);
    assert!(
        r.until + second >= before + lease && r.until <= after + lease + second,
        "until {:?} is {lease:?} after the call, between {before:?} and {after:?}",
        r.until
    );

    // A short lease lapses by the database's clock, whatever the caller says. Load cannot fail
    // this: the sleep only lengthens, and nothing checks the 50 ms lease is still live.
    let short = scope.key(user(2));
    ledger.record(&short, now()).await.unwrap();
    let first = ledger.reserve(&short, "a", Duration::from_millis(50), ahead).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    let second = ledger
        .reserve(&short, "b", lease, skewed_back)
        .await
        .unwrap()
        .expect("lapsed by the database's clock");
    assert_eq!(second.attempt, 2);
    assert!(matches!(ledger.settle(&first, Settlement::Delivered).await, Err(LedgerError::LeaseLost)));
}

/// Every transition is in the audit trail, in order, with its reservation and reason; a
/// review is listed and resolved with a note.
pub async fn every_transition_is_audited(sql: Sql) {
    let ledger = SqlGrantLedger::new(sql);
    let scope = scope("audit");
    let key = scope.key(user(7));
    ledger.record(&key, now()).await.unwrap();
    let r1 = ledger.reserve(&key, "d1", Duration::from_secs(30), now()).await.unwrap().unwrap();
    ledger.settle(&r1, Settlement::Release).await.unwrap();
    let r2 = ledger.reserve(&key, "d1", Duration::from_secs(30), now()).await.unwrap().unwrap();
    assert_ne!(r1.id, r2.id, "every reservation has its own id, even the same holder's");
    ledger.settle(&r2, Settlement::Review("timeout after sending".into())).await.unwrap();

    let reviews = ledger.reviews(&scope, None, 10).await.unwrap();
    assert_eq!(reviews.len(), 1);
    assert_eq!((reviews[0].openid.clone(), reviews[0].reason.as_str()), (user(7), "timeout after sending"));
    assert!(
        !ledger.resolve(&scope.key(user(8)), Resolution::Delivered, "x", now()).await.unwrap(),
        "not under review"
    );
    assert!(
        ledger
            .resolve(&key, Resolution::Delivered, "seen in the user's inbox (ops: li)", now())
            .await
            .unwrap()
    );
    assert!(
        !ledger.resolve(&key, Resolution::Release, "twice", now()).await.unwrap(),
        "a review is decided once"
    );
    assert_eq!(ledger.get(&key).await.unwrap().unwrap().status, GrantStatus::Delivered);
    assert!(ledger.reviews(&scope, None, 10).await.unwrap().is_empty());
    assert_eq!(ledger.record(&key, now()).await.unwrap(), Recorded::Renewed);

    let events = ledger.events(&key).await.unwrap();
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Confirmed,
            EventKind::Reserved,
            EventKind::Released,
            EventKind::Reserved,
            EventKind::Review,
            EventKind::Resolved,
            EventKind::Confirmed
        ]
    );
    let states: String = events.iter().map(|e| e.state).collect();
    assert_eq!(states, "PRPRVDP");
    assert_eq!(events[0].prior, None, "a new grant has no prior state");
    assert_eq!(events[1].reservation.as_deref(), Some(r1.id.as_str()));
    assert_eq!(events[4].reason.as_deref(), Some("timeout after sending"));
    assert_eq!(events[5].reason.as_deref(), Some("seen in the user's inbox (ops: li)"));
    assert_eq!((events[6].prior, events[6].attempts), (Some('D'), 1), "the renewal keeps the old life");
    assert!(events.windows(2).all(|w| w[0].at <= w[1].at), "in time order");
    let c = ledger.counts(&scope, now()).await.unwrap();
    assert_eq!(
        (c.pending, c.delivered, c.review),
        (1, 0, 0),
        "the renewed grant is pending; counters follow"
    );
}

/// The counters agree with the grants themselves after a mix of every transition, from many
/// tasks at once.
pub async fn counters_agree_with_the_grants(sql: Sql) {
    let ledger = Arc::new(SqlGrantLedger::new(sql));
    let scope = scope("counts");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..60 {
        let (ledger, key) = (Arc::clone(&ledger), scope.key(user(i)));
        tasks.spawn(async move {
            ledger.record(&key, now()).await.unwrap();
            ledger.record(&key, now()).await.unwrap();
            let settlement = match i % 5 {
                0 => return,
                1 => Settlement::Delivered,
                2 => Settlement::Release,
                3 => Settlement::Review("unknown".into()),
                _ => Settlement::Drop("43101".into()),
            };
            // Ten minutes: the six left reserved are counted live however loaded the machine.
            let r = ledger.reserve(&key, "h", Duration::from_secs(600), now()).await.unwrap().unwrap();
            if i % 10 == 9 {
                return; // left reserved
            }
            ledger.settle(&r, settlement).await.unwrap();
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
    // Written out, not read back from the ledger. Twelve of the 60 for each i % 5: 0 (never
    // reserved) and 2 (released) are pending, 1 delivered, 3 in review; of 4, the six with
    // i % 10 == 9 stay reserved and the six with i % 10 == 4 are dropped.
    let mut expected = subscribe_client::GrantCounts::default();
    (expected.pending, expected.reserved, expected.delivered, expected.review, expected.dropped) =
        (24, 6, 12, 12, 6);
    assert_eq!(ledger.counts(&scope, now()).await.unwrap(), expected, "the counters");
    // And the grants themselves, one by one, say the same.
    let mut tally = subscribe_client::GrantCounts::default();
    for i in 0..60 {
        match ledger.get(&scope.key(user(i))).await.unwrap().unwrap().status {
            GrantStatus::Reserved { until } if until > now() => tally.reserved += 1,
            // A lapsed reservation is pending again.
            GrantStatus::Pending | GrantStatus::Reserved { .. } => tally.pending += 1,
            GrantStatus::Delivered => tally.delivered += 1,
            GrantStatus::Review { .. } => tally.review += 1,
            GrantStatus::Dropped { .. } => tally.dropped += 1,
            other => panic!("an unexpected status: {other:?}"),
        }
    }
    assert_eq!(tally, expected, "the grants");
}

/// Live reservations are counted from the lease buckets through batch claims, a lapse, a
/// settlement after the lapse, a re-claim of lapsed grants and batch settlements; a bucket
/// emptied and over is deleted by a later claim of the scope, one emptied but still ahead is
/// kept. `buckets` counts the rows of `wxsub_grant_leases`.
///
/// Leases are timed by the database's clock, which a test cannot inject, so the bounds are
/// wide instead: a lease checked live is ten minutes long, or five seconds when the test then
/// waits for it to lapse (checked live within the three statements after its claim); a lease
/// checked lapsed is checked after sleeping past it, which load only lengthens.
pub async fn live_reservations_are_counted_from_lease_buckets<F, Fut>(sql: Sql, buckets: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    const SHORT: Duration = Duration::from_secs(5);
    const LONG: Duration = Duration::from_secs(600);
    let ledger = SqlGrantLedger::new(sql);
    let scope = scope("leases");
    let openids: Vec<OpenId> = (0..10).map(user).collect();
    ledger.record_many(&scope, &openids).await.unwrap();
    let counts = |pending, reserved, delivered| {
        let mut c = subscribe_client::GrantCounts::default();
        (c.pending, c.reserved, c.delivered) = (pending, reserved, delivered);
        c
    };
    let a = ledger.reserve_next(&scope, None, 4, "a", SHORT, now()).await.unwrap();
    let b = ledger.reserve_next(&scope, a.cursor.as_ref(), 3, "b", LONG, now()).await.unwrap();
    assert_eq!((a.reservations.len(), b.reservations.len()), (4, 3));
    assert_eq!(ledger.counts(&scope, now()).await.unwrap(), counts(3, 7, 0));

    tokio::time::sleep(SHORT + Duration::from_millis(200)).await;
    assert_eq!(ledger.counts(&scope, now()).await.unwrap(), counts(7, 3, 0), "a's four lapsed: pending");
    // Lapsed but taken by nobody: its holder may still settle it.
    ledger.settle(&a.reservations[0], Settlement::Delivered).await.unwrap();
    assert_eq!(ledger.counts(&scope, now()).await.unwrap(), counts(6, 3, 1));

    let c = ledger.reserve_next(&scope, None, 10, "c", LONG, now()).await.unwrap();
    let taken: Vec<OpenId> = c.reservations.iter().map(|r| r.key.openid.clone()).collect();
    assert_eq!(taken, [1, 2, 3, 7, 8, 9].map(user), "the three lapsed and the three never taken");
    assert_eq!(ledger.counts(&scope, now()).await.unwrap(), counts(0, 9, 1));
    assert!(matches!(
        ledger.settle(&a.reservations[1], Settlement::Delivered).await,
        Err(LedgerError::LeaseLost)
    ));
    let mut settlements: Vec<_> = c.reservations.into_iter().map(|r| (r, Settlement::Delivered)).collect();
    settlements[1].1 = Settlement::Release;
    settlements[2].1 = Settlement::Review("unknown".into());
    settlements[3].1 = Settlement::Drop("43101".into());
    assert!(ledger.settle_many(settlements).await.into_iter().all(|r| r.is_ok()));
    let after_c = ledger.counts(&scope, now()).await.unwrap();
    assert_eq!((after_c.pending, after_c.reserved, after_c.delivered), (1, 3, 4));
    assert_eq!((after_c.review, after_c.dropped), (1, 1));
    let settled = b.reservations.into_iter().map(|r| (r, Settlement::Delivered)).collect();
    assert!(ledger.settle_many(settled).await.into_iter().all(|r| r.is_ok()));
    assert_eq!(ledger.counts(&scope, now()).await.unwrap().reserved, 0);

    // Every bucket so far is empty. a's is over: gone by the next claim at the latest. b's and
    // c's end in ten minutes: kept. With d's own, three.
    let d = ledger.reserve_next(&scope, None, 10, "d", LONG, now()).await.unwrap();
    assert_eq!(d.reservations.len(), 1, "the released grant");
    assert_eq!(buckets().await, 3, "b's and c's (empty, still ahead) and d's; a's (empty, over) deleted");
    assert_eq!(ledger.counts(&scope, now()).await.unwrap().reserved, 1);
    // The reservation as handed out, lease end included: another lease end settles nothing
    // (and moves no bucket).
    let mut forged = d.reservations[0].clone();
    forged.until += Duration::from_millis(1);
    assert!(matches!(ledger.settle(&forged, Settlement::Delivered).await, Err(LedgerError::LeaseLost)));
    let batch = ledger.settle_many(vec![(forged, Settlement::Delivered)]).await;
    assert!(matches!(batch[..], [Err(LedgerError::LeaseLost)]), "{batch:?}");
    assert!(
        batch.iter().all(|r| r.as_ref().is_err_and(|e| e.kind() == ErrorKind::Invalid)),
        "a lost lease says: leave the grant to its holder: {batch:?}"
    );
    assert_eq!(ledger.counts(&scope, now()).await.unwrap().reserved, 1);
    ledger.settle(&d.reservations[0], Settlement::Delivered).await.unwrap();
    let end = ledger.counts(&scope, now()).await.unwrap();
    assert_eq!((end.pending, end.reserved, end.delivered, end.review, end.dropped), (0, 0, 8, 1, 1));
}

/// A bulk import adds the new grants once, leaves existing ones alone, and keeps the counters
/// and the audit trail as single records do.
pub async fn a_bulk_import_records_each_new_grant_once(sql: Sql) {
    let ledger = SqlGrantLedger::new(sql);
    let scope = scope("import");
    ledger.record(&scope.key(user(0)), now()).await.unwrap();
    let r = ledger.reserve(&scope.key(user(0)), "h", Duration::from_secs(30), now()).await.unwrap().unwrap();
    ledger.settle(&r, Settlement::Delivered).await.unwrap();
    let openids: Vec<OpenId> = (0..2500).map(user).collect();
    assert_eq!(ledger.record_many(&scope, &openids).await.unwrap(), 2499, "all but the existing one");
    assert_eq!(ledger.record_many(&scope, &openids).await.unwrap(), 0, "idempotent");
    let c = ledger.counts(&scope, now()).await.unwrap();
    assert_eq!((c.pending, c.delivered), (2499, 1));
    assert_eq!(ledger.get(&scope.key(user(0))).await.unwrap().unwrap().status, GrantStatus::Delivered);
    let trail = ledger.events(&scope.key(user(1234))).await.unwrap();
    assert_eq!(trail.iter().map(|e| e.kind).collect::<Vec<_>>(), [EventKind::Confirmed]);
}

/// What a restarted process finds: the grants and their states, through a new connection.
pub async fn grants_survive_a_new_connection(first: Sql, second: Sql) {
    let scope = scope("restart");
    let key = scope.key(user(3));
    {
        let ledger = SqlGrantLedger::new(first);
        ledger.record(&key, now()).await.unwrap();
        let r = ledger.reserve(&key, "gone", Duration::from_secs(30), now()).await.unwrap().unwrap();
        ledger.settle(&r, Settlement::Delivered).await.unwrap();
        ledger.record(&scope.key(user(4)), now()).await.unwrap();
    }
    let ledger = SqlGrantLedger::new(second);
    assert_eq!(ledger.get(&key).await.unwrap().unwrap().status, GrantStatus::Delivered);
    assert_eq!(ledger.pending_page(&scope, None, 10, now()).await.unwrap(), vec![user(4)]);
    assert_eq!(ledger.sql().schema_versions().await.unwrap(), vec![1, 2, 3, 4, 5, 6]);
    ledger.sql().migrate().await.expect("migrating again changes nothing");
    assert_eq!(ledger.sql().schema_versions().await.unwrap(), vec![1, 2, 3, 4, 5, 6]);
}

/// Debug output and errors never show the URL's password or a token.
pub async fn secrets_stay_out_of_debug_and_errors(sql: Sql, url_with_password: &str) {
    let builder = Sql::builder(url_with_password);
    let shown = format!("{builder:?} {sql:?} {:?}", SqlGrantLedger::new(sql.clone()));
    assert!(!shown.contains("s3cr3t"), "{shown}");
    let store = subscribe_sql::SqlTokenStore::new(sql);
    let app = scope("secret").appid;
    let token = subscribe_client::CachedToken::new(
        subscribe_types::AccessToken::new("ACCESS_TOKEN_SECRET_VALUE").unwrap(),
        now() + Duration::from_secs(7200),
    );
    let saved = store.save(&app, &token).await.unwrap();
    let shown = format!("{saved:?} {store:?}");
    assert!(!shown.contains("ACCESS_TOKEN_SECRET_VALUE"), "{shown}");
}

/// A database that does not answer gives a typed error within the operation timeout, naming
/// neither the URL nor its password.
pub async fn an_absent_database_fails_fast_and_typed(url_with_password: &str) {
    let started = std::time::Instant::now();
    let e = Sql::builder(url_with_password).op_timeout(Duration::from_secs(1)).connect().await.unwrap_err();
    // Wall clock, wide: ten times the operation timeout (the connection is refused at once).
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(e.is_connection() || e.is_timeout(), "{e:?}");
    assert!(!e.is_authentication(), "an absent server is no refused login: {e:?}");
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(&s.to_string());
        source = s.source();
    }
    assert!(!text.contains("s3cr3t"), "{text}");
    // As the client's extensions report it: an outage, with the password nowhere in the chain.
    let connect = || Sql::builder(url_with_password).op_timeout(Duration::from_secs(1)).connect();
    let ledger = LedgerError::from(connect().await.unwrap_err());
    let store = subscribe_client::TokenStoreError::from(connect().await.unwrap_err());
    assert_eq!((ledger.kind(), store.kind()), (ErrorKind::Retryable, ErrorKind::Retryable));
    for e in [&ledger as &dyn std::error::Error, &store] {
        let mut text = format!("{e} {e:?}");
        let mut source = e.source();
        while let Some(s) = source {
            std::fmt::Write::write_fmt(&mut text, format_args!(" | {s} | {s:?}")).unwrap();
            source = s.source();
        }
        assert!(!text.contains("s3cr3t"), "{text}");
    }
}

/// The used states pass the client's contract (lost answers included).
pub async fn used_states_contract_suite(sql: Sql) {
    used_states_contract(Arc::new(SqlUsedStates::new(sql))).await;
}

/// The replay cache passes `subscribe-events`' contract (through the client's suite).
pub async fn replay_cache_contract_suite(sql: Sql) {
    subscribe_client::test_util::replay_cache_contract(Arc::new(subscribe_sql::SqlReplayCache::new(sql)))
        .await;
}

/// Unix seconds now, on the tests' (the application's) clock.
fn unix_now() -> u64 {
    now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A replay key no other test uses.
fn replay_key(label: &str, timestamp: u64, now_unix: u64) -> subscribe_client::events::replay::ReplayKey {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let signature = format!("{:08X}{:08x}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    subscribe_client::events::replay::ReplayKey::new(
        &format!("wx{label}"),
        &signature,
        timestamp,
        "42",
        300,
        now_unix,
    )
}

/// Two instances, each with a pool of its own on one database: a push the first read is a
/// replay at the second (and at the first), and forgotten through the second it is new at the
/// first.
pub async fn a_push_read_by_one_instance_is_a_replay_at_another(first: Sql, second: Sql) {
    use subscribe_client::events::replay::ReplayCache as _;
    let (a, b) = (subscribe_sql::SqlReplayCache::new(first), subscribe_sql::SqlReplayCache::new(second));
    let now = unix_now();
    let key = replay_key("fleet", now, now);
    assert!(a.first_sight(&key, now).await.unwrap(), "a first sight at the first instance");
    assert!(!b.first_sight(&key, now + 1).await.unwrap(), "a replay at the second");
    assert!(!a.first_sight(&key, key.expires_at()).await.unwrap(), "and at the first, to its last second");
    b.forget(&key).await.unwrap();
    assert!(a.first_sight(&key, now).await.unwrap(), "forgotten through one, new at the other");
    assert!(!b.first_sight(&key, now).await.unwrap());
    // Ended, its row is taken over by the next sight, once, with the new end.
    let after = key.expires_at() + 1;
    let again = subscribe_client::events::replay::ReplayKey::from_parts(key.as_str(), after + 300);
    assert!(b.first_sight(&again, after).await.unwrap(), "ended: a first sight");
    assert!(!a.first_sight(&again, after).await.unwrap(), "taken over once");
    assert!(!a.first_sight(&again, after + 300).await.unwrap(), "until the new end");
}

/// Ended rows are deleted by a handle's first sight, then at most once a minute: a row ended
/// at its birth outlives the next sights of the handle that purged, and is deleted by the
/// first sight of a new instance. Live rows stay. `count(key)` counts the rows of a key.
pub async fn ended_pushes_are_deleted_at_most_once_a_minute<F, Fut>(first: Sql, second: Sql, count: F)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    use subscribe_client::events::replay::ReplayCache as _;
    let now = unix_now();
    let a = subscribe_sql::SqlReplayCache::new(first);
    let live = replay_key("purge", now, now);
    assert!(a.first_sight(&live, now).await.unwrap(), "the handle's first sight (and purge)");
    // Stale since a while: its row ends at its birth.
    let ended = replay_key("purge", now - 1000, now);
    assert!(ended.expires_at() < now);
    assert!(a.first_sight(&ended, now).await.unwrap());
    assert!(a.clone().first_sight(&live, now).await.is_ok_and(|first| !first));
    assert_eq!(
        count(ended.as_str().to_owned()).await,
        1,
        "no second purge within the minute (clones share it)"
    );

    let b = subscribe_sql::SqlReplayCache::new(second);
    assert!(b.first_sight(&replay_key("purge", now, now), now).await.unwrap());
    assert_eq!(count(ended.as_str().to_owned()).await, 0, "a new instance's first sight purges");
    assert_eq!(count(live.as_str().to_owned()).await, 1, "live rows stay");
    assert!(!b.first_sight(&live, now).await.unwrap());
}

/// The secret every instance of the tests' fleet shares (so they share the state key).
const FLEET_SECRET: &str = "fleet-app-secret-0123456789abcdef";

/// An instance: a client whose used states are in `sql`, with `clock`.
fn instance(
    sql: &Sql,
    scope: &GrantScope,
    clock: impl subscribe_client::Clock + 'static,
) -> subscribe_client::Client {
    subscribe_client::Client::builder(
        scope.appid.clone(),
        subscribe_types::AppSecret::new(FLEET_SECRET).unwrap(),
    )
    .transport(MockTransport::new())
    .used_states(SqlUsedStates::new(sql.clone()))
    .clock(clock)
    .build()
    .unwrap()
}

/// A signed state of `client` for `scope`.
fn link(client: &subscribe_client::Client, scope: &GrantScope) -> subscribe_client::AuthorizationLink {
    client.authorize_url(
        &scope.template_id,
        scope.scene,
        &subscribe_types::RedirectUrl::new("https://a.example/cb").unwrap(),
        &session(),
    )
}

/// The user's session the states of [`link`] are bound to.
fn session() -> subscribe_client::Session {
    subscribe_client::Session::new("fleet-session").unwrap()
}

/// `callback` completed at `client` in [`session`], its grant recorded in `ledger`.
async fn record(
    client: &subscribe_client::Client,
    callback: &str,
    ledger: &dyn GrantLedger,
) -> Result<(subscribe_types::AuthorizationAnswer, Option<Recorded>), subscribe_client::RecordError> {
    client.complete(subscribe_client::Answer::Redirect(callback), &session()).await?.record(ledger).await
}

/// WeChat's redirect confirming `link` for `openid`.
fn confirm(link: &subscribe_client::AuthorizationLink, scope: &GrantScope, openid: &str) -> String {
    format!(
        "openid={openid}&template_id={}&action=confirm&scene={}&reserved={}",
        scope.template_id.as_str(),
        scope.scene.get(),
        link.request.reserved.as_str()
    )
}

fn is_replay<T: std::fmt::Debug>(r: &Result<T, subscribe_client::RecordError>) -> bool {
    matches!(
        r,
        Err(subscribe_client::RecordError::Authorization(
            subscribe_client::AuthorizationError::ReplayedState
        ))
    )
}

/// Two instances on one database, `first` and `second` (two handles, as two processes or a
/// restarted one have): an answer confirmed at the first is refused at the second, replayed
/// as it was, with another openid or with the openid's case changed; one state replayed
/// concurrently at both with two openids records one grant; a mark made at the first whose
/// answer was lost lets the user's retry through at the second, and nobody else.
pub async fn a_replay_at_another_instance_or_after_a_restart_is_refused(first: Sql, second: Sql) {
    let scope = scope("fleet");
    let ledger = Arc::new(SqlGrantLedger::new(first.clone()));
    let a = instance(&first, &scope, SystemClock);
    let b = instance(&second, &scope, SystemClock);
    let alice = user(1);
    let l = link(&a, &scope);
    let (_, recorded) = record(&a, &confirm(&l, &scope, alice.as_str()), &*ledger).await.unwrap();
    assert_eq!(recorded, Some(Recorded::Added));
    for openid in [user(2).as_str().to_owned(), alice.as_str().to_uppercase()] {
        let replay = record(&b, &confirm(&l, &scope, &openid), &*ledger).await;
        assert!(is_replay(&replay), "{openid} at the second instance: {replay:?}");
    }
    let again = record(&b, &confirm(&l, &scope, alice.as_str()), &*ledger).await;
    assert!(
        matches!(
            again,
            Err(subscribe_client::RecordError::Authorization(
                subscribe_client::AuthorizationError::AlreadyAccepted
            ))
        ),
        "the same answer at the second instance is already accepted: {again:?}"
    );

    // One state, replayed at both instances at once with two openids: one grant.
    let raced = link(&a, &scope);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let (client, ledger) = (if i % 2 == 0 { a.clone() } else { b.clone() }, Arc::clone(&ledger));
        let callback = confirm(&raced, &scope, user(10 + i % 4 / 2).as_str());
        tasks.spawn(async move { record(&client, &callback, &*ledger).await.is_ok() });
    }
    let mut accepted = 0;
    while let Some(ok) = tasks.join_next().await {
        accepted += usize::from(ok.unwrap());
    }
    let winners: Vec<bool> = granted(&ledger, &scope, [10, 11]).await;
    assert_eq!(
        winners.iter().filter(|w| **w).count(),
        1,
        "one of the two openids got the grant: {winners:?}"
    );
    assert_eq!(accepted, 1, "one answer went through: the winner's others were in progress or accepted");

    // A mark that landed at the first instance with its answer lost: the user retries at the
    // second.
    let lossy = Arc::new(LostAnswers::new(Arc::new(SqlUsedStates::new(first.clone()))));
    let a_lossy = subscribe_client::Client::builder(
        scope.appid.clone(),
        subscribe_types::AppSecret::new(FLEET_SECRET).unwrap(),
    )
    .transport(MockTransport::new())
    .used_states(Arc::clone(&lossy))
    .store_timeout(Duration::from_millis(500))
    .build()
    .unwrap();
    let lost = link(&a_lossy, &scope);
    lossy.lose_next_mark();
    let e = record(&a_lossy, &confirm(&lost, &scope, user(20).as_str()), &*ledger).await.unwrap_err();
    assert_eq!(e.kind(), subscribe_client::ErrorKind::Retryable, "{e:?}");
    assert_eq!(lossy.lost(), 1);
    let (_, recorded) = record(&b, &confirm(&lost, &scope, user(20).as_str()), &*ledger).await.unwrap();
    assert_eq!(recorded, Some(Recorded::Added), "the user's retry, at the other instance");
    let other = record(&b, &confirm(&lost, &scope, user(21).as_str()), &*ledger).await;
    assert!(is_replay(&other), "{other:?}");
}

/// Which of the users `ids` have a grant in `scope`.
async fn granted<const N: usize>(ledger: &SqlGrantLedger, scope: &GrantScope, ids: [usize; N]) -> Vec<bool> {
    let mut out = Vec::new();
    for i in ids {
        out.push(ledger.get(&scope.key(user(i))).await.unwrap().is_some());
    }
    out
}

/// A clock a fixed offset from the system's: an instance whose clock is wrong.
#[derive(Debug)]
pub struct Skewed {
    pub ahead: bool,
    pub by: Duration,
}

#[subscribe_client::async_trait]
impl subscribe_client::Clock for Skewed {
    fn now(&self) -> SystemTime {
        if self.ahead { now() + self.by } else { now() - self.by }
    }
    fn monotonic(&self) -> Duration {
        SystemClock.monotonic()
    }
    async fn sleep(&self, d: Duration) {
        SystemClock.sleep(d).await;
    }
    async fn sleep_until(&self, deadline: Duration) {
        SystemClock.sleep_until(deadline).await;
    }
}

/// Marks are timed by the database's clock, from the lifetime the caller gives (or the state's
/// own expiry when that is later): a caller whose clock runs an hour behind the database's
/// keeps its mark the state's whole lifetime (a mark ending at the state's expiry, an
/// instant an hour in the database's past, would be born ended and swept at once), and one
/// whose clock runs an hour ahead keeps it while an instance with the right clock still takes
/// the state. `count` counts the marks of a state given as a literal.
pub async fn marks_are_timed_by_the_database_clock_whatever_the_callers_clock<F, Fut>(sql: Sql, count: F)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    use subscribe_client::{AnswerDigest, StateUse, UsedStates as _};
    let hour = Duration::from_secs(3600);
    let claim = || subscribe_client::Claim::new(Duration::from_secs(30));
    let fresh = || {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        subscribe_types::Reserved::new(format!(
            "1skew{:08x}{n:08x}{}",
            std::process::id(),
            now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
        ))
        .unwrap()
    };
    let by = |s: &subscribe_types::Reserved, i| AnswerDigest::of(s, &user(i));
    // A sweep: a new handle's first mark deletes the ended marks.
    let sweep = || {
        let sql = sql.clone();
        async move {
            let s = fresh();
            let at = now();
            SqlUsedStates::new(sql)
                .mark_used(&s, &by(&s, 0), &claim(), at + Duration::from_secs(600), at)
                .await
                .unwrap();
        }
    };

    // Behind: the state expires in 4 s by the caller's clock, an hour ago by the database's.
    let behind = fresh();
    let t = now() - hour;
    let states = SqlUsedStates::new(sql.clone());
    assert_eq!(
        states.mark_used(&behind, &by(&behind, 1), &claim(), t + Duration::from_secs(4), t).await.unwrap(),
        StateUse::First
    );
    sweep().await;
    assert_eq!(
        count(behind.as_str().to_owned()).await,
        1,
        "a sweep keeps the mark of a caller an hour behind"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    sweep().await;
    let t = now() - hour;
    assert_eq!(
        states.mark_used(&behind, &by(&behind, 2), &claim(), t + Duration::from_secs(2), t).await.unwrap(),
        StateUse::Used,
        "2 s into a 4 s lifetime, the replay of a caller an hour behind is refused"
    );

    // Ahead: the caller's clock says the state has 2 s left; the right clock says an hour and
    // 2 s. Past the 2 s, the mark still stands for the instances whose clock is right.
    let ahead = fresh();
    let t = now() + hour;
    assert_eq!(
        states.mark_used(&ahead, &by(&ahead, 1), &claim(), t + Duration::from_secs(2), t).await.unwrap(),
        StateUse::First
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    sweep().await;
    assert_eq!(count(ahead.as_str().to_owned()).await, 1, "the mark outlives the ahead caller's 2 s");
    let t = now();
    assert_eq!(
        states.mark_used(&ahead, &by(&ahead, 2), &claim(), t + hour, t).await.unwrap(),
        StateUse::Used,
        "an instance with the right clock, which still takes the state, refuses the replay"
    );

    // A mark whose lifetime is over is swept: the store does not grow.
    let over = fresh();
    let t = now();
    assert_eq!(
        states.mark_used(&over, &by(&over, 1), &claim(), t + Duration::from_millis(200), t).await.unwrap(),
        StateUse::First
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    sweep().await;
    assert_eq!(count(over.as_str().to_owned()).await, 0, "an ended mark is swept");
}

/// What an attacker tries with a client whose clock is skewed, end to end: a replay after the
/// mark's lifetime is refused, because the state expired with it, on the clock that signed and
/// checks it (an hour behind the database's here).
pub async fn a_replay_after_the_mark_ended_is_refused_as_expired(sql: Sql) {
    let scope = scope("expired");
    let ledger = SqlGrantLedger::new(sql.clone());
    let skewed = subscribe_client::Client::builder(
        scope.appid.clone(),
        subscribe_types::AppSecret::new(FLEET_SECRET).unwrap(),
    )
    .transport(MockTransport::new())
    .used_states(SqlUsedStates::new(sql.clone()))
    .clock(Skewed { ahead: false, by: Duration::from_secs(3600) })
    .state_ttl(Duration::from_secs(2))
    .build()
    .unwrap();
    let l = link(&skewed, &scope);
    record(&skewed, &confirm(&l, &scope, user(1).as_str()), &ledger).await.unwrap();
    let replay = record(&skewed, &confirm(&l, &scope, user(2).as_str()), &ledger).await;
    assert!(is_replay(&replay), "within its lifetime, by a clock an hour behind: {replay:?}");
    tokio::time::sleep(Duration::from_millis(3100)).await;
    // A new handle's first mark sweeps the ended marks: the state's is gone.
    let swept = instance(&sql, &scope, SystemClock);
    let callback = confirm(&link(&swept, &scope), &scope, user(9).as_str());
    swept.complete(subscribe_client::Answer::Redirect(&callback), &session()).await.unwrap().accept().await;
    let late = record(&skewed, &confirm(&l, &scope, user(2).as_str()), &ledger).await;
    assert!(
        matches!(
            late,
            Err(subscribe_client::RecordError::Authorization(
                subscribe_client::AuthorizationError::ExpiredState { .. }
            ))
        ),
        "{late:?}"
    );
    assert!(ledger.get(&scope.key(user(2))).await.unwrap().is_none(), "nothing recorded for the replay");
}

/// The key grant a test records.
pub fn key(scope: &GrantScope, i: usize) -> GrantKey {
    scope.key(user(i))
}

/// One `#[tokio::test]` per shared test, on the backend `$sql` (an async expression giving a
/// fresh `Sql`).
#[macro_export]
macro_rules! backend_tests {
    ($sql:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn the_ledger_and_token_store_pass_the_client_contract_suites() {
            common::contract_suites($sql).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn the_used_states_pass_the_client_contract() {
            common::used_states_contract_suite($sql).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn the_replay_cache_passes_the_events_contract() {
            common::replay_cache_contract_suite($sql).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_replay_after_the_mark_ended_is_refused_as_expired() {
            common::a_replay_after_the_mark_ended_is_refused_as_expired($sql).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn leases_are_timed_by_the_database_clock_not_the_callers() {
            common::leases_ignore_the_callers_clock($sql).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn every_transition_is_in_the_audit_trail_and_reviews_are_resolved() {
            common::every_transition_is_audited($sql).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_bulk_import_records_each_new_grant_once() {
            common::a_bulk_import_records_each_new_grant_once($sql).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn counters_agree_with_the_grants_under_concurrency() {
            common::counters_agree_with_the_grants($sql).await;
        }
    };
}
