//! [`SqlNotificationResults`] (feature `events`).

use std::time::{Duration, SystemTime};

use subscribe_client::{LedgerError, NotificationResult, NotificationResults};
use subscribe_types::AppId;

use crate::{Sql, SqlError};

/// Subscribe notifications' results of one app, by `msgid`, in the table
/// `wxsub_notification_results`: what `subscribe_msg_sent_event` pushes, kept across restarts
/// and shared by every instance. A repeated result for one `msgid` replaces the earlier one.
#[derive(Clone, Debug)]
pub struct SqlNotificationResults {
    sql: Sql,
    appid: AppId,
}

impl SqlNotificationResults {
    /// The results of `appid`, on `sql`.
    pub fn new(sql: Sql, appid: AppId) -> Self {
        Self { sql, appid }
    }
}

type Row = (String, String, i64, String, i64);

#[async_trait::async_trait]
impl NotificationResults for SqlNotificationResults {
    async fn record_result(&self, r: &NotificationResult) -> Result<(), LedgerError> {
        let at_ms = r.at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis();
        let at_ms = i64::try_from(at_ms).unwrap_or(i64::MAX);
        self.sql
            .run(async {
                on_pool!(self.sql, |p, _q| {
                    sqlx::query(
                        "INSERT INTO wxsub_notification_results \
                         (appid, msgid, openid, template_id, error_code, error_status, at_ms) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7) \
                         ON CONFLICT (appid, msgid) DO UPDATE SET openid = excluded.openid, \
                         template_id = excluded.template_id, error_code = excluded.error_code, \
                         error_status = excluded.error_status, at_ms = excluded.at_ms",
                    )
                    .bind(self.appid.as_str())
                    .bind(r.msgid.to_string())
                    .bind(&r.openid)
                    .bind(&r.template_id)
                    .bind(r.error_code)
                    .bind(&r.error_status)
                    .bind(at_ms)
                    .execute(p)
                    .await
                    .map(|_| ())
                })
            })
            .await
            .map_err(LedgerError::backend)?;
        Ok(())
    }

    async fn result(&self, msgid: u64) -> Result<Option<NotificationResult>, LedgerError> {
        let row: Option<Row> = self
            .sql
            .run(async {
                on_pool!(self.sql, |p, _q| {
                    sqlx::query_as(
                        "SELECT openid, template_id, error_code, error_status, at_ms \
                         FROM wxsub_notification_results WHERE appid = $1 AND msgid = $2",
                    )
                    .bind(self.appid.as_str())
                    .bind(msgid.to_string())
                    .fetch_optional(p)
                    .await
                })
            })
            .await
            .map_err(LedgerError::backend)?;
        row.map(|(openid, template_id, error_code, error_status, at_ms)| {
            let at_ms = u64::try_from(at_ms)
                .map_err(|_| LedgerError::from(SqlError::corrupt("wxsub_notification_results.at_ms")))?;
            Ok(NotificationResult {
                msgid,
                openid,
                template_id,
                error_code,
                error_status,
                at: SystemTime::UNIX_EPOCH + Duration::from_millis(at_ms),
            })
        })
        .transpose()
    }
}
