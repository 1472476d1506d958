//! Pushed events feeding the ledger: an acceptance becomes a grant once, a withdrawal drops the
//! pending grant (not one being sent), a notification's result is kept by msgid, and what is
//! not for the ledger is ignored with a reason.

use std::sync::Arc;

use subscribe_client::events::{ChangeItem, Event, EventKind, PopupItem, SentItem};
use subscribe_client::test_util::*;
use subscribe_client::{
    Applied, GrantLedger, GrantScope, GrantStatus, InMemoryGrantLedger, InMemoryNotificationResults,
    LedgerError, NotificationResults, Recorded,
};
use subscribe_types::*;

use crate::*;

const LIBRARY_TEMPLATE: &str = "bDmywsp2oEHjwAadTGKkUHpzvMM2KM4aGBsyFpGL8AY";

fn popup(openid: &str, status: &str) -> Event {
    let item =
        PopupItem { template_id: LIBRARY_TEMPLATE.into(), status: status.into(), popup_scene: Some(1) };
    Event::new("gh_1", openid, 1_800_000_000, EventKind::Popup(vec![item]))
}

fn withdrawal(openid: &str) -> Event {
    let item = ChangeItem { template_id: LIBRARY_TEMPLATE.into(), status: "reject".into() };
    Event::new("gh_1", openid, 1_800_000_000, EventKind::Change(vec![item]))
}

fn key(openid: &str) -> subscribe_client::GrantKey {
    GrantScope::mini_program(appid(), TemplateId::new(LIBRARY_TEMPLATE).unwrap())
        .key(OpenId::new(openid).unwrap())
}

#[tokio::test]
async fn an_accepted_popup_becomes_one_grant_and_a_rejected_one_none() {
    let client = builder(&mock_with_stable_token("T1", 7200), &clock()).build().unwrap();
    let (ledger, results) = (InMemoryGrantLedger::new(), InMemoryNotificationResults::default());
    let template_id = TemplateId::new(LIBRARY_TEMPLATE).unwrap();
    let applied = client.apply_event(&popup("oAlice", "accept"), &ledger, &results).await.unwrap();
    assert_eq!(applied, [Applied::Granted { template_id: template_id.clone(), recorded: Recorded::Added }]);
    assert_eq!(ledger.get(&key("oAlice")).await.unwrap().unwrap().status, GrantStatus::Pending);
    // The same push again (WeChat resends a slow answer): still one grant.
    let again = client.apply_event(&popup("oAlice", "accept"), &ledger, &results).await.unwrap();
    assert_eq!(
        again,
        [Applied::Granted { template_id: template_id.clone(), recorded: Recorded::AlreadyPending }]
    );
    let applied = client.apply_event(&popup("oBob", "reject"), &ledger, &results).await.unwrap();
    assert_eq!(applied, [Applied::Declined { template_id }]);
    assert_eq!(ledger.get(&key("oBob")).await.unwrap(), None);
}

#[tokio::test]
async fn a_withdrawal_drops_the_pending_grant_but_not_one_being_sent() {
    let client = builder(&mock_with_stable_token("T1", 7200), &clock()).build().unwrap();
    let (ledger, results) = (InMemoryGrantLedger::new(), InMemoryNotificationResults::default());
    for user in ["oAlice", "oBob"] {
        client.apply_event(&popup(user, "accept"), &ledger, &results).await.unwrap();
    }
    let held =
        ledger.reserve(&key("oBob"), "sender", std::time::Duration::from_secs(60), t0()).await.unwrap();
    assert!(held.is_some());
    let template_id = TemplateId::new(LIBRARY_TEMPLATE).unwrap();
    for (user, dropped) in [("oAlice", true), ("oBob", false), ("oCarol", false)] {
        let applied = client.apply_event(&withdrawal(user), &ledger, &results).await.unwrap();
        assert_eq!(applied, [Applied::Withdrawn { template_id: template_id.clone(), dropped }], "{user}");
    }
    assert!(matches!(ledger.get(&key("oAlice")).await.unwrap().unwrap().status, GrantStatus::Dropped { .. }));
    assert!(matches!(ledger.get(&key("oBob")).await.unwrap().unwrap().status, GrantStatus::Reserved { .. }));
    // A new acceptance after a withdrawal renews the grant.
    let renewed = client.apply_event(&popup("oAlice", "accept"), &ledger, &results).await.unwrap();
    assert!(matches!(renewed[0], Applied::Granted { recorded: Recorded::Renewed, .. }), "{renewed:?}");
}

#[tokio::test]
async fn the_in_memory_results_keep_the_contract() {
    subscribe_client::test_util::notification_results_contract(&InMemoryNotificationResults::default()).await;
}

#[tokio::test]
async fn a_notifications_result_is_kept_by_msgid() {
    let client = builder(&mock_with_stable_token("T1", 7200), &clock()).build().unwrap();
    let (ledger, results) = (InMemoryGrantLedger::new(), InMemoryNotificationResults::with_capacity(2));
    for (msg_id, error_code, status) in
        [(7, 0, "success"), (8, 43101, "failed:user refuse to accept the msg"), (9, 0, "success")]
    {
        let item = SentItem {
            template_id: LIBRARY_TEMPLATE.into(),
            msg_id,
            error_code,
            error_status: status.into(),
        };
        let event = Event::new("gh_1", "oAlice", 1_800_000_000, EventKind::Sent(vec![item]));
        let applied = client.apply_event(&event, &ledger, &results).await.unwrap();
        assert!(matches!(&applied[..], [Applied::Result(r)] if r.msgid == msg_id), "{applied:?}");
    }
    let eight = results.result(8).await.unwrap().unwrap();
    assert_eq!((eight.delivered(), eight.error_code, eight.openid.as_str()), (false, 43101, "oAlice"));
    assert!(results.result(9).await.unwrap().unwrap().delivered());
    assert_eq!(results.result(7).await.unwrap(), None, "the oldest result beyond the capacity is forgotten");
}

#[tokio::test]
async fn other_events_and_bad_ids_are_ignored_with_a_reason() {
    let client = builder(&mock_with_stable_token("T1", 7200), &clock()).build().unwrap();
    let (ledger, results) = (InMemoryGrantLedger::new(), InMemoryNotificationResults::default());
    let view = Event::new("gh_1", "oAlice", 1, EventKind::Other { event: "VIEW".into(), raw: String::new() });
    let bad_user = popup("o Alice with spaces", "accept");
    let mut bad_template = popup("oAlice", "accept");
    if let EventKind::Popup(items) = &mut bad_template.kind {
        items[0].template_id = "x".repeat(200);
    }
    for (event, reason) in [
        (view, "not a subscription event"),
        (bad_user, "FromUserName is not a valid openid"),
        (bad_template, "TemplateId is not a valid template id"),
    ] {
        let applied = client.apply_event(&event, &ledger, &results).await.unwrap();
        assert!(matches!(&applied[..], [Applied::Ignored { reason: r, .. }] if *r == reason), "{applied:?}");
    }
    let scope = GrantScope::mini_program(appid(), TemplateId::new(LIBRARY_TEMPLATE).unwrap());
    assert_eq!(ledger.counts(&scope, t0()).await.unwrap().pending, 0);
}

/// A ledger whose backend is down.
#[derive(Debug)]
struct Down;

#[subscribe_client::async_trait]
impl GrantLedger for Down {
    async fn record(
        &self,
        _: &subscribe_client::GrantKey,
        _: std::time::SystemTime,
    ) -> Result<Recorded, LedgerError> {
        Err(LedgerError::backend("connection refused"))
    }
    async fn pending_page(
        &self,
        _: &GrantScope,
        _: Option<&OpenId>,
        _: usize,
        _: std::time::SystemTime,
    ) -> Result<Vec<OpenId>, LedgerError> {
        Err(LedgerError::backend("connection refused"))
    }
    async fn reserve(
        &self,
        _: &subscribe_client::GrantKey,
        _: &str,
        _: std::time::Duration,
        _: std::time::SystemTime,
    ) -> Result<Option<subscribe_client::Reservation>, LedgerError> {
        Err(LedgerError::backend("connection refused"))
    }
    async fn settle(
        &self,
        _: &subscribe_client::Reservation,
        _: subscribe_client::Settlement,
    ) -> Result<(), LedgerError> {
        Err(LedgerError::backend("connection refused"))
    }
    async fn get(
        &self,
        _: &subscribe_client::GrantKey,
    ) -> Result<Option<subscribe_client::GrantRecord>, LedgerError> {
        Err(LedgerError::backend("connection refused"))
    }
    async fn counts(
        &self,
        _: &GrantScope,
        _: std::time::SystemTime,
    ) -> Result<subscribe_client::GrantCounts, LedgerError> {
        Err(LedgerError::backend("connection refused"))
    }
    async fn reviews(
        &self,
        _: &GrantScope,
        _: Option<&OpenId>,
        _: usize,
    ) -> Result<Vec<subscribe_client::ReviewItem>, LedgerError> {
        Err(LedgerError::backend("connection refused"))
    }
    async fn resolve(
        &self,
        _: &subscribe_client::GrantKey,
        _: subscribe_client::Resolution,
        _: &str,
        _: std::time::SystemTime,
    ) -> Result<bool, LedgerError> {
        Err(LedgerError::backend("connection refused"))
    }
}

#[tokio::test]
async fn a_ledger_that_is_down_is_an_error_for_the_handler_to_answer() {
    let client = builder(&mock_with_stable_token("T1", 7200), &clock()).build().unwrap();
    let results = Arc::new(InMemoryNotificationResults::default());
    for event in [popup("oAlice", "accept"), withdrawal("oAlice")] {
        let e = client.apply_event(&event, &Down, &*results).await.unwrap_err();
        assert!(matches!(e, LedgerError::Backend(_)), "{e:?}");
    }
}
