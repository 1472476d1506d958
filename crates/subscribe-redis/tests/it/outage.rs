//! Redis down or unreachable: typed errors, bounded waits, no secret in any message, and the
//! client keeps working on the token it holds.

use std::sync::Arc;
use std::time::Duration;

use subscribe_client::{Client, GrantKey, GrantLedger, LedgerError, RefreshLease, TokenStore};
use subscribe_redis::{Redis, RedisError, RedisGrantLedger, RedisTokenStore};
use subscribe_sandbox::{DEMO_APPID, DEMO_SECRET, DEMO_TEMPLATE, SandboxConfig, SandboxHandle};
use subscribe_types::{AccessToken, AppId, AppSecret, OneTimeMessage, OpenId, Scene, TemplateId};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::{now, redis, redis_url};

const PASSWORD: &str = "hunter2-redis-password";
const TOKEN: &str = "ACCESS_TOKEN_THAT_MUST_NOT_LEAK_0123456789";

/// Forwards loopback connections to the real Redis until cut.
struct Proxy {
    addr: std::net::SocketAddr,
    tasks: Arc<std::sync::Mutex<JoinSet<()>>>,
}

impl Proxy {
    async fn start() -> Self {
        let upstream = redis_url().trim_start_matches("redis://").split('/').next().unwrap().to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks = Arc::new(std::sync::Mutex::new(JoinSet::new()));
        let inner = Arc::clone(&tasks);
        tasks.lock().unwrap().spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let upstream = upstream.clone();
                inner.lock().unwrap().spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
            }
        });
        Self { addr, tasks }
    }

    /// Closes the listener and every connection: Redis is gone.
    fn cut(&self) {
        self.tasks.lock().unwrap().abort_all();
    }
}

fn message(scene: u32) -> OneTimeMessage {
    OneTimeMessage::builder(
        OpenId::new("oSandbox_Alice_00000000001").unwrap(),
        TemplateId::new(DEMO_TEMPLATE).unwrap(),
        Scene::new(scene).unwrap(),
    )
    .title("到货提醒")
    .content("到货了")
    .build()
    .unwrap()
}

#[tokio::test]
async fn an_unreachable_redis_gives_typed_errors_quickly_and_never_the_url_or_a_token() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = format!("redis://:{PASSWORD}@{closed}");
    let builder = Redis::builder(&url).op_timeout(Duration::from_millis(300));
    assert!(!format!("{builder:?}").contains(PASSWORD));
    let connect = builder.clone().connect().await.unwrap_err();
    assert!(!format!("{connect} {connect:?}").contains(PASSWORD), "{connect:?}");

    let redis = builder.lazy().unwrap();
    let store = RedisTokenStore::new(redis.clone());
    let ledger = RedisGrantLedger::new(redis.clone());
    let app = AppId::new(DEMO_APPID).unwrap();
    let token = AccessToken::new(TOKEN).unwrap();
    let bounded = Duration::from_secs(10); // "does not hang", not a speed target
    let e = tokio::time::timeout(bounded, store.invalidate(&app, &token)).await.unwrap().unwrap_err();
    let text = format!("{e} {e:?} {redis:?} {store:?} {ledger:?}");
    assert!(!text.contains(PASSWORD) && !text.contains(TOKEN), "{text}");
    assert!(std::error::Error::source(&e).unwrap().downcast_ref::<RedisError>().is_some());
    assert_eq!(e.kind(), subscribe_client::ErrorKind::Retryable, "a store outage: {e:?}");

    let key = GrantKey {
        appid: app,
        openid: OpenId::new("oSandbox_Alice_00000000001").unwrap(),
        template_id: TemplateId::new(DEMO_TEMPLATE).unwrap(),
        scene: Scene::new(1).unwrap(),
    };
    let e = tokio::time::timeout(bounded, ledger.record(&key, now())).await.unwrap().unwrap_err();
    assert!(matches!(e, LedgerError::Backend(_)), "{e:?}");
    assert_eq!(e.kind(), subscribe_client::ErrorKind::Retryable, "a ledger outage: {e:?}");
    let mut text = format!("{e} {e:?}");
    let mut source = std::error::Error::source(&e);
    while let Some(x) = source {
        std::fmt::Write::write_fmt(&mut text, format_args!(" | {x} | {x:?}")).unwrap();
        source = x.source();
    }
    assert!(!text.contains(PASSWORD), "{text}");

    let bad_url = Redis::builder("http://nope").lazy().unwrap_err();
    assert!(bad_url.is_configuration() && bad_url.to_string().starts_with("invalid Redis URL"), "{bad_url}");
    let bad_prefix = Redis::builder(redis_url()).prefix("bad prefix").lazy().unwrap_err();
    assert!(bad_prefix.is_configuration(), "{bad_prefix}");
    assert!(bad_prefix.to_string().contains("(got 10)"), "{bad_prefix}");
    // The unreachable server: a connection failure or a timeout, said so by the predicates.
    assert!(connect.is_connection() || connect.is_timeout(), "{connect:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_gone_the_client_keeps_serving_its_token_and_a_new_one_still_starts() {
    let s = SandboxHandle::start(SandboxConfig::demo()).await.unwrap();
    for scene in 0..10 {
        s.state().add_grant(
            &SandboxConfig::demo_appid(),
            &OpenId::new("oSandbox_Alice_00000000001").unwrap(),
            &SandboxConfig::demo_template(),
            Scene::new(scene).unwrap(),
        );
    }
    let proxy = Proxy::start().await;
    let prefix = redis("outage").await.prefix().to_owned();
    let via_proxy = || {
        Redis::builder(format!("redis://{}", proxy.addr))
            .prefix(prefix.clone())
            .op_timeout(Duration::from_millis(500))
            .lazy()
            .unwrap()
    };
    let client = |redis: Redis| {
        Client::builder(AppId::new(DEMO_APPID).unwrap(), AppSecret::new(DEMO_SECRET).unwrap())
            .api_base(s.base_url())
            .token_store(RedisTokenStore::new(redis))
            .build()
            .unwrap()
    };
    let running = client(via_proxy());
    running.send_one_time(&message(0)).await.unwrap();
    let stored = RedisTokenStore::new(via_proxy()).load(&AppId::new(DEMO_APPID).unwrap()).await.unwrap();
    assert!(stored.is_some(), "the token went to Redis");

    proxy.cut();
    // The running instance sends on the token it holds.
    for scene in 1..5 {
        running.send_one_time(&message(scene)).await.unwrap();
    }
    assert_eq!(s.state().stats().stable_token_requests, 1);
    // A new instance cannot read Redis: it asks WeChat itself rather than fail (stable_token
    // returns the same token, so the running instance is not disturbed).
    let fresh = client(via_proxy());
    fresh.send_one_time(&message(5)).await.unwrap();
    assert_eq!(s.state().stats().stable_token_requests, 2, "the new instance asked WeChat itself");
    assert_eq!(s.state().stats().tokens_issued, 1, "and got the same stable token back");
    running.send_one_time(&message(6)).await.unwrap();
    assert_eq!(s.state().stats().deliveries, 7);
}

#[tokio::test]
async fn keys_are_namespaced_and_never_contain_the_token() {
    let r = redis("keys").await;
    let store = RedisTokenStore::new(r.clone());
    let app = AppId::new(DEMO_APPID).unwrap();
    let t =
        subscribe_client::CachedToken::new(AccessToken::new(TOKEN).unwrap(), now() + Duration::from_secs(60));
    store.save(&app, &t).await.unwrap();
    assert!(store.try_acquire_refresh_lease(&app, "me", Duration::from_secs(5)).await.unwrap());
    let client = redis::Client::open(redis_url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}:*", r.prefix())).query_async(&mut c).await.unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().all(|k| k.contains(DEMO_APPID) && !k.contains(TOKEN)), "{keys:?}");
}

/// A Redis that accepts connections and never answers (a black hole: no reply, no reset) is
/// a timeout within the operation timeout, which the error names, whichever of the two
/// timeouts (redis' own, or ours around each operation) fires first.
#[tokio::test]
async fn a_black_holed_redis_times_out_within_the_operation_timeout_and_says_so() {
    let hole = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = hole.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((socket, _)) = hole.accept().await {
            kept.push(socket); // read nothing, answer nothing, close nothing
        }
    });
    let redis =
        Redis::builder(format!("redis://{addr}")).op_timeout(Duration::from_millis(300)).lazy().unwrap();
    let ledger = RedisGrantLedger::new(redis);
    let key = GrantKey {
        appid: AppId::new(DEMO_APPID).unwrap(),
        openid: OpenId::new("oSandbox_Alice_00000000001").unwrap(),
        template_id: TemplateId::new(DEMO_TEMPLATE).unwrap(),
        scene: Scene::new(1).unwrap(),
    };
    for _ in 0..3 {
        let e = tokio::time::timeout(Duration::from_secs(10), ledger.record(&key, now()))
            .await
            .expect("a black-holed Redis must not hang an operation")
            .unwrap_err();
        let cause = std::error::Error::source(&e).unwrap().downcast_ref::<RedisError>().unwrap();
        assert!(cause.is_timeout() || cause.is_connection(), "{cause:?}");
        if cause.is_timeout() {
            assert!(cause.to_string().contains("300ms"), "the timeout it waited: {cause}");
        }
    }
    held.abort();
}

/// A reserved grant whose record Redis lost (a restart without persistence, a flush, an
/// eviction) is not settled as if another sender held it: the ledger says it forgot it.
#[tokio::test]
async fn a_settlement_of_a_grant_redis_lost_says_the_ledger_forgot_it() {
    let redis = redis("forgotten").await;
    let ledger = RedisGrantLedger::new(redis.clone());
    let key = GrantKey {
        appid: AppId::new(DEMO_APPID).unwrap(),
        openid: OpenId::new("oSandbox_Alice_00000000001").unwrap(),
        template_id: TemplateId::new(DEMO_TEMPLATE).unwrap(),
        scene: Scene::new(1).unwrap(),
    };
    ledger.record(&key, now()).await.unwrap();
    let r = ledger.reserve(&key, "me", Duration::from_secs(30), now()).await.unwrap().unwrap();
    // What a restart without persistence leaves: none of the ledger's keys.
    let mut conn = redis.connection();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}:*", redis.prefix())).query_async(&mut conn).await.unwrap();
    assert!(!keys.is_empty());
    let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
    let e = ledger.settle(&r, subscribe_client::Settlement::Delivered).await.unwrap_err();
    assert!(matches!(e, LedgerError::Forgotten), "{e:?}");
    assert_eq!(e.kind(), subscribe_client::ErrorKind::Invalid);
    assert!(e.to_string().contains("lost its data"), "{e}");

    // Another sender's reservation is still `LeaseLost`, as before.
    ledger.record(&key, now()).await.unwrap();
    let first = ledger.reserve(&key, "first", Duration::from_millis(1), now()).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let _second = ledger.reserve(&key, "second", Duration::from_secs(30), now()).await.unwrap().unwrap();
    let e = ledger.settle(&first, subscribe_client::Settlement::Delivered).await.unwrap_err();
    assert!(matches!(e, LedgerError::LeaseLost), "{e:?}");
}

/// A connection that stops answering without a reset (a paused server, a path that drops
/// everything) is not reconnected by redis' connection manager, by design: every operation
/// after it timed out too, forever. The handle now replaces a connection that did not answer
/// within the operation timeout: the operation after the timeout is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_stopped_answering_is_replaced_and_the_next_operation_served() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let upstream = redis_url().trim_start_matches("redis://").split('/').next().unwrap().to_owned();
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = front.local_addr().unwrap();
    let (connections, silent) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let (counted, hole) = (Arc::clone(&connections), Arc::clone(&silent));
    // Forwards every connection; once `silent` is set, the connections open then forward
    // nothing more in either direction (no answer, no reset), and new ones are served.
    let proxy = tokio::spawn(async move {
        while let Ok((down, _)) = front.accept().await {
            counted.fetch_add(1, SeqCst);
            let upstream = upstream.clone();
            let opened_silent = hole.load(SeqCst);
            let hole = Arc::clone(&hole);
            tokio::spawn(async move {
                let Ok(up) = tokio::net::TcpStream::connect(upstream).await else { return };
                let ((mut dr, mut dw), (mut ur, mut uw)) = (down.into_split(), up.into_split());
                let forwards = |_: usize| !opened_silent && !hole.load(SeqCst);
                let (to_up, to_down) = (forwards, forwards);
                let a = async {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = dr.read(&mut buf).await {
                        if n == 0 || !to_up(n) || uw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    std::future::pending::<()>().await;
                };
                let b = async {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = ur.read(&mut buf).await {
                        if n == 0 || !to_down(n) || dw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    std::future::pending::<()>().await;
                };
                tokio::join!(a, b);
            });
        }
    });
    let redis = Redis::builder(format!("redis://{addr}"))
        .prefix(format!("wxsub-test:{}:black-hole", std::process::id()))
        .op_timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    let ledger = RedisGrantLedger::new(redis);
    let key = GrantKey {
        appid: AppId::new(DEMO_APPID).unwrap(),
        openid: OpenId::new("oSandbox_Alice_00000000001").unwrap(),
        template_id: TemplateId::new(DEMO_TEMPLATE).unwrap(),
        scene: Scene::new(1).unwrap(),
    };
    ledger.record(&key, now()).await.expect("served while the connection answers");
    assert_eq!(connections.load(SeqCst), 1);
    // The established connection goes silent.
    silent.store(true, SeqCst);
    let e = ledger.get(&key).await.unwrap_err();
    assert!(matches!(e, LedgerError::Backend(_)), "{e:?}");
    silent.store(false, SeqCst);
    for _ in 0..3 {
        let got = ledger.get(&key).await;
        assert!(matches!(got, Ok(Some(_))), "served on a new connection: {got:?}");
    }
    assert_eq!(connections.load(SeqCst), 2, "one new connection");
    proxy.abort();
}
