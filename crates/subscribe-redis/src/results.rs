//! [`RedisNotificationResults`] (feature `events`).

use std::time::Duration;

use subscribe_client::{LedgerError, NotificationResult, NotificationResults};
use subscribe_types::AppId;

use crate::{Redis, RedisError, from_millis, millis};

/// Subscribe notifications' results of one app, by `msgid`, in Redis: what
/// `subscribe_msg_sent_event` pushes, shared by every instance whichever one the push reached.
/// Each result is one hash, `<prefix>:result:<appid>:<msgid>` (fields `openid`, `template_id`,
/// `error_code`, `error_status`, `at_ms`), written with its expiry in one transaction and kept
/// for [`keep_for`](Self::keep_for) (default [`DEFAULT_KEEP`](Self::DEFAULT_KEEP), 30 days). A repeated result for
/// one `msgid` replaces the earlier one and starts its time again.
#[derive(Clone, Debug)]
pub struct RedisNotificationResults {
    redis: Redis,
    appid: AppId,
    keep: Duration,
}

impl RedisNotificationResults {
    /// How long a result is kept by default: long enough to look a send's result up for a
    /// month's support requests, bounded so a Redis with nothing on disk does not grow forever.
    pub const DEFAULT_KEEP: Duration = Duration::from_secs(30 * 24 * 3600);

    /// The results of `appid`, on `redis`.
    pub fn new(redis: Redis, appid: AppId) -> Self {
        Self { redis, appid, keep: Self::DEFAULT_KEEP }
    }

    /// How long each result is kept (at least a second).
    #[must_use]
    pub fn keep_for(mut self, keep: Duration) -> Self {
        self.keep = keep.max(Duration::from_secs(1));
        self
    }

    fn key(&self, msgid: u64) -> String {
        self.redis.key(&["result", self.appid.as_str(), &msgid.to_string()])
    }
}

#[async_trait::async_trait]
impl NotificationResults for RedisNotificationResults {
    async fn record_result(&self, r: &NotificationResult) -> Result<(), LedgerError> {
        let key = self.key(r.msgid);
        let keep_ms = u64::try_from(self.keep.as_millis()).unwrap_or(u64::MAX);
        let mut c = self.redis.connection();
        // DEL first: a replaced result keeps no field of the old one.
        let () = self
            .redis
            .run(
                redis::pipe()
                    .atomic()
                    .del(&key)
                    .ignore()
                    .hset_multiple(
                        &key,
                        &[
                            ("openid", r.openid.clone()),
                            ("template_id", r.template_id.clone()),
                            ("error_code", r.error_code.to_string()),
                            ("error_status", r.error_status.clone()),
                            ("at_ms", millis(r.at).to_string()),
                        ],
                    )
                    .ignore()
                    .pexpire(&key, i64::try_from(keep_ms).unwrap_or(i64::MAX))
                    .ignore()
                    .query_async(&mut c),
            )
            .await?;
        Ok(())
    }

    async fn result(&self, msgid: u64) -> Result<Option<NotificationResult>, LedgerError> {
        let mut c = self.redis.connection();
        let fields: std::collections::HashMap<String, String> =
            self.redis.run(redis::cmd("HGETALL").arg(self.key(msgid)).query_async(&mut c)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let text = |name: &'static str| {
            fields.get(name).cloned().ok_or(RedisError::corrupt("a notification result's field"))
        };
        let number = |name: &'static str| {
            text(name)?.parse::<i64>().map_err(|_| RedisError::corrupt("a notification result's number"))
        };
        let at_ms = u64::try_from(number("at_ms")?)
            .map_err(|_| RedisError::corrupt("a notification result's time"))?;
        Ok(Some(NotificationResult {
            msgid,
            openid: text("openid")?,
            template_id: text("template_id")?,
            error_code: number("error_code")?,
            error_status: text("error_status")?,
            at: from_millis(at_ms),
        }))
    }
}
