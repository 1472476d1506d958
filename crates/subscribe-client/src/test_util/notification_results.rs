//! [`notification_results_contract`]: the rules every store of notification results keeps
//! (feature `events`).

use super::now_to_the_millisecond;

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
