//! Pushed events feeding the grant ledger (feature `events`): a popup's acceptance records a
//! grant, a withdrawal (`subscribe_msg_change_event`) drops the pending grant, and a
//! notification's result (`subscribe_msg_sent_event`) is kept by `msgid`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use subscribe_events::{Event, EventKind};
use subscribe_types::{OpenId, TemplateId};

use crate::{Client, GrantLedger, GrantScope, LedgerError, Recorded, Settlement};

/// A subscribe notification's result, as `subscribe_msg_sent_event` pushed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationResult {
    /// The `msgid` `bizsend` answered.
    pub msgid: u64,
    /// The user.
    pub openid: String,
    /// The template.
    pub template_id: String,
    /// `ErrorCode`: 0 delivered.
    pub error_code: i64,
    /// `ErrorStatus`: `success`, or why not.
    pub error_status: String,
    /// When the push said it happened (`CreateTime`).
    pub at: SystemTime,
}

impl NotificationResult {
    /// Whether the notification reached the user.
    pub fn delivered(&self) -> bool {
        self.error_code == 0
    }
}

/// Where notification results are kept, by `msgid`. A repeated result for one `msgid`
/// replaces the earlier one.
#[async_trait::async_trait]
pub trait NotificationResults: Send + Sync + std::fmt::Debug {
    /// Keeps a result.
    async fn record_result(&self, result: &NotificationResult) -> Result<(), LedgerError>;

    /// The result for `msgid`, if one was pushed.
    async fn result(&self, msgid: u64) -> Result<Option<NotificationResult>, LedgerError>;
}

/// Results in memory, the most recent `capacity` (default 100,000).
#[derive(Debug)]
pub struct InMemoryNotificationResults {
    capacity: usize,
    inner: Mutex<(HashMap<u64, NotificationResult>, std::collections::VecDeque<u64>)>,
}

impl Default for InMemoryNotificationResults {
    fn default() -> Self {
        Self::with_capacity(100_000)
    }
}

impl InMemoryNotificationResults {
    /// Keeps the most recent `capacity` results.
    pub fn with_capacity(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), inner: Mutex::default() }
    }
}

#[async_trait::async_trait]
impl NotificationResults for InMemoryNotificationResults {
    async fn record_result(&self, result: &NotificationResult) -> Result<(), LedgerError> {
        let mut guard = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (map, order) = &mut *guard;
        if map.insert(result.msgid, result.clone()).is_none() {
            order.push_back(result.msgid);
            while order.len() > self.capacity {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
        Ok(())
    }

    async fn result(&self, msgid: u64) -> Result<Option<NotificationResult>, LedgerError> {
        Ok(self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0.get(&msgid).cloned())
    }
}

/// What one item of a pushed event did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Applied {
    /// A popup's acceptance, recorded as a grant.
    Granted {
        /// The template.
        template_id: TemplateId,
        /// What recording did.
        recorded: Recorded,
    },
    /// A popup's rejection: nothing recorded (earlier one-time acceptances stand, as at
    /// WeChat).
    Declined {
        /// The template.
        template_id: TemplateId,
    },
    /// A withdrawal: the pending grant dropped (`dropped`), or none was pending. A grant being
    /// sent at that moment is left to its sender, whom WeChat answers 43101.
    Withdrawn {
        /// The template.
        template_id: TemplateId,
        /// Whether a pending grant was dropped.
        dropped: bool,
    },
    /// A notification's result, kept by `msgid`.
    Result(NotificationResult),
    /// Not for the ledger: another event, or one whose openid or template id is not valid.
    Ignored {
        /// The event's name.
        event: String,
        /// Why.
        reason: &'static str,
    },
}

/// The reservation holder a withdrawal uses for its instant hold.
const WITHDRAWAL: &str = "subscribe_msg_change_event";

impl Client {
    /// Applies a pushed event to `ledger` (grants of this client's app, scene 0, as
    /// [`GrantScope::mini_program`] and [`GrantScope::notification`] make them) and `results`: each popup acceptance records a grant, each
    /// withdrawal drops the user's pending grant, each notification result is kept by
    /// `msgid`. Replaying an event changes nothing more (recording is idempotent per grant).
    ///
    /// # Errors
    /// A [`LedgerError`] from either store; items before it were applied.
    pub async fn apply_event(
        &self,
        event: &Event,
        ledger: &dyn GrantLedger,
        results: &dyn NotificationResults,
    ) -> Result<Vec<Applied>, LedgerError> {
        let ignored = |reason| vec![Applied::Ignored { event: event.name().to_owned(), reason }];
        let Ok(openid) = OpenId::new(event.from_user.as_str()) else {
            return Ok(ignored("FromUserName is not a valid openid"));
        };
        let scope = |t: &TemplateId| GrantScope::mini_program(self.appid().clone(), t.clone());
        let now = self.clock().now();
        let mut applied = Vec::new();
        match &event.kind {
            EventKind::Popup(items) => {
                for item in items {
                    let Ok(template_id) = TemplateId::new(item.template_id.as_str()) else {
                        applied.extend(ignored("TemplateId is not a valid template id"));
                        continue;
                    };
                    if item.status == "accept" {
                        let recorded = ledger.record(&scope(&template_id).key(openid.clone()), now).await?;
                        applied.push(Applied::Granted { template_id, recorded });
                    } else {
                        applied.push(Applied::Declined { template_id });
                    }
                }
            }
            EventKind::Change(items) => {
                for item in items.iter().filter(|i| i.status != "accept") {
                    let Ok(template_id) = TemplateId::new(item.template_id.as_str()) else {
                        applied.extend(ignored("TemplateId is not a valid template id"));
                        continue;
                    };
                    let key = scope(&template_id).key(openid.clone());
                    let held = ledger.reserve(&key, WITHDRAWAL, Duration::from_secs(30), now).await?;
                    if let Some(hold) = &held {
                        ledger.settle(hold, Settlement::Drop("withdrawn by the user".into())).await?;
                    }
                    applied.push(Applied::Withdrawn { template_id, dropped: held.is_some() });
                }
            }
            EventKind::Sent(items) => {
                for item in items {
                    let result = NotificationResult {
                        msgid: item.msg_id,
                        openid: openid.as_str().to_owned(),
                        template_id: item.template_id.clone(),
                        error_code: item.error_code,
                        error_status: item.error_status.clone(),
                        at: SystemTime::UNIX_EPOCH + Duration::from_secs(event.create_time),
                    };
                    results.record_result(&result).await?;
                    applied.push(Applied::Result(result));
                }
            }
            _ => return Ok(ignored("not a subscription event")),
        }
        Ok(applied)
    }
}
