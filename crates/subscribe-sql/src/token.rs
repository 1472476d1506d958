//! [`SqlTokenStore`].

use std::time::Duration;

use subscribe_client::{CachedToken, HoldOff, RefreshLease, TokenStore, TokenStoreError};
use subscribe_types::{AccessToken, AppId};

use crate::{Sql, SqlError, millis};

/// The access token of each app in the database, shared by every instance, with the refresh
/// lease that elects one refresher.
///
/// Tables: `wxsub_tokens` (the token and its expiry; saving keeps whichever expires later,
/// invalidating removes only the rejected token) and `wxsub_token_leases` (who is refreshing
/// until when, or the hold-off a failed refresher left, timed by the database's clock so the
/// instances' clocks need not agree). The token is stored as WeChat issued it: restrict who
/// may read the table, as you would the AppSecret.
#[derive(Clone, Debug)]
pub struct SqlTokenStore {
    sql: Sql,
}

impl SqlTokenStore {
    /// A store on `sql`.
    pub fn new(sql: Sql) -> Self {
        Self { sql }
    }
}

impl From<SqlError> for TokenStoreError {
    fn from(e: SqlError) -> Self {
        TokenStoreError::new(e)
    }
}

fn parse(token: &str, expires_ms: i64) -> Result<CachedToken, SqlError> {
    let expires = u64::try_from(expires_ms).map_err(|_| SqlError::corrupt("wxsub_tokens.expires_ms"))?;
    CachedToken::from_parts(token, expires).map_err(|_| SqlError::corrupt("wxsub_tokens.token"))
}

#[async_trait::async_trait]
impl TokenStore for SqlTokenStore {
    async fn load(&self, app: &AppId) -> Result<Option<CachedToken>, TokenStoreError> {
        let row: Option<(String, i64)> = self
            .sql
            .run(async {
                on_pool!(self.sql, |p, _q| {
                    sqlx::query_as("SELECT token, expires_ms FROM wxsub_tokens WHERE appid = $1")
                        .bind(app.as_str())
                        .fetch_optional(p)
                        .await
                })
            })
            .await?;
        Ok(row.map(|(t, e)| parse(&t, e)).transpose()?)
    }

    async fn save(&self, app: &AppId, token: &CachedToken) -> Result<CachedToken, TokenStoreError> {
        let (text, expires_ms) = token.to_parts();
        let expires_ms = i64::try_from(expires_ms).unwrap_or(i64::MAX);
        let (t, e): (String, i64) = self
            .sql
            .run(async {
                on_pool!(self.sql, |p, q| {
                    let mut tx = p.begin_with(q.begin).await?;
                    sqlx::query(
                        "INSERT INTO wxsub_tokens (appid, token, expires_ms) VALUES ($1, $2, $3) \
                         ON CONFLICT (appid) DO UPDATE SET token = excluded.token, expires_ms = excluded.expires_ms \
                         WHERE wxsub_tokens.expires_ms < excluded.expires_ms",
                    )
                    .bind(app.as_str())
                    .bind(text)
                    .bind(expires_ms)
                    .execute(&mut *tx)
                    .await?;
                    let row = sqlx::query_as("SELECT token, expires_ms FROM wxsub_tokens WHERE appid = $1")
                        .bind(app.as_str())
                        .fetch_one(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(row)
                })
            })
            .await?;
        Ok(parse(&t, e)?)
    }

    async fn invalidate(&self, app: &AppId, rejected: &AccessToken) -> Result<bool, TokenStoreError> {
        let removed = self
            .sql
            .run(async {
                on_pool!(self.sql, |p, _q| {
                    sqlx::query("DELETE FROM wxsub_tokens WHERE appid = $1 AND token = $2")
                        .bind(app.as_str())
                        .bind(rejected.expose_secret())
                        .execute(p)
                        .await
                        .map(|r| r.rows_affected())
                })
            })
            .await?;
        Ok(removed == 1)
    }

    fn refresh_lease(&self) -> Option<&dyn RefreshLease> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl RefreshLease for SqlTokenStore {
    async fn try_acquire_refresh_lease(
        &self,
        app: &AppId,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, TokenStoreError> {
        // Taken when there is no row, or its lease or hold-off has ended.
        let taken = self
            .sql
            .run(async {
                on_pool!(self.sql, |p, q| {
                    sqlx::query(&q.sql(
                        "INSERT INTO wxsub_token_leases (appid, holder, until_ms, hold_off) \
                         VALUES ($1, $2, NOW_MS + $3, NULL) \
                         ON CONFLICT (appid) DO UPDATE SET holder = excluded.holder, \
                         until_ms = excluded.until_ms, hold_off = NULL \
                         WHERE wxsub_token_leases.until_ms <= NOW_MS",
                    ))
                    .bind(app.as_str())
                    .bind(holder)
                    .bind(millis(ttl))
                    .execute(p)
                    .await
                    .map(|r| r.rows_affected())
                })
            })
            .await?;
        Ok(taken == 1)
    }

    async fn release_refresh_lease(&self, app: &AppId, holder: &str) -> Result<(), TokenStoreError> {
        self.sql
            .run(async {
                on_pool!(self.sql, |p, _q| {
                    sqlx::query(
                        "DELETE FROM wxsub_token_leases WHERE appid = $1 AND holder = $2 AND hold_off IS NULL",
                    )
                    .bind(app.as_str())
                    .bind(holder)
                    .execute(p)
                    .await
                    .map(|_| ())
                })
            })
            .await?;
        Ok(())
    }

    async fn hold_off_refresh(
        &self,
        app: &AppId,
        holder: &str,
        pause: Duration,
        reason: &str,
    ) -> Result<(), TokenStoreError> {
        let reason = HoldOff::bounded_reason(reason);
        // Replaces an ended lease or hold-off, the holder's own live lease, or a shorter
        // hold-off; leaves another holder's live lease and a longer hold-off alone.
        self.sql
            .run(async {
                on_pool!(self.sql, |p, q| {
                    sqlx::query(&q.sql(
                        "INSERT INTO wxsub_token_leases (appid, holder, until_ms, hold_off) \
                         VALUES ($1, $2, NOW_MS + $3, $4) \
                         ON CONFLICT (appid) DO UPDATE SET holder = excluded.holder, \
                         until_ms = excluded.until_ms, hold_off = excluded.hold_off \
                         WHERE wxsub_token_leases.until_ms <= NOW_MS \
                         OR (wxsub_token_leases.hold_off IS NULL AND wxsub_token_leases.holder = excluded.holder) \
                         OR (wxsub_token_leases.hold_off IS NOT NULL AND wxsub_token_leases.until_ms <= excluded.until_ms)",
                    ))
                    .bind(app.as_str())
                    .bind(holder)
                    .bind(millis(pause))
                    .bind(reason)
                    .execute(p)
                    .await
                    .map(|_| ())
                })
            })
            .await?;
        Ok(())
    }

    async fn refresh_hold_off(&self, app: &AppId) -> Result<Option<HoldOff>, TokenStoreError> {
        let row: Option<(i64, String)> = self
            .sql
            .run(async {
                on_pool!(self.sql, |p, q| {
                    sqlx::query_as(&q.sql(
                        "SELECT until_ms - NOW_MS, hold_off FROM wxsub_token_leases \
                         WHERE appid = $1 AND hold_off IS NOT NULL AND until_ms > NOW_MS",
                    ))
                    .bind(app.as_str())
                    .fetch_optional(p)
                    .await
                })
            })
            .await?;
        Ok(row.and_then(|(ms, reason)| {
            let ms = u64::try_from(ms).ok().filter(|ms| *ms > 0)?;
            Some(HoldOff { remaining: Duration::from_millis(ms), reason })
        }))
    }
}
