//! Many grants in one transaction: an import ([`SqlGrantLedger::record_many`]), a claim's
//! rows as reservations, and a scope's settlements (on SQLite; PostgreSQL's are in `postgres`).

use subscribe_client::{Claimed, GrantScope, LedgerError, Reservation, Settlement};
use subscribe_types::OpenId;

#[cfg(feature = "postgres")]
use super::postgres::settle_postgres;
use super::rows::{attempts, corrupt, grant_id, scene, settled, until_ms};
use super::{EventKind, SqlGrantLedger};
use crate::{SqlError, from_millis};

impl SqlGrantLedger {
    /// Records many confirmations of one scope at once (an import from another store, a
    /// backfill): like [`record`](subscribe_client::GrantLedger::record) for each new grant,
    /// in transactions of 1,000. Grants that exist already are left as they are (not renewed).
    /// Returns how many were added.
    ///
    /// # Errors
    /// [`LedgerError::Backend`] when the database fails; the chunks committed before stay.
    pub async fn record_many(&self, scope: &GrantScope, openids: &[OpenId]) -> Result<u64, LedgerError> {
        let mut added = 0;
        for chunk in openids.chunks(1000) {
            let n = self
                .sql
                .run(async {
                    on_pool!(self.sql, |p, q| {
                        let mut tx = p.begin_with(q.begin).await?;
                        let mut insert = sqlx::QueryBuilder::new(
                            "INSERT INTO wxsub_grants (appid, template_id, scene, openid, state, updated_ms) ",
                        );
                        insert.push_values(chunk, |mut b, openid| {
                            b.push_bind(scope.appid.as_str())
                                .push_bind(scope.template_id.as_str())
                                .push_bind(scene(scope))
                                .push_bind(openid.as_str())
                                .push("'P'")
                                .push(q.now_ms);
                        });
                        insert.push(
                            " ON CONFLICT (appid, template_id, scene, openid) DO NOTHING RETURNING id, updated_ms",
                        );
                        let rows: Vec<(i64, i64)> = insert.build_query_as().fetch_all(&mut *tx).await?;
                        if !rows.is_empty() {
                            let mut events = sqlx::QueryBuilder::new(
                                "INSERT INTO wxsub_grant_events (grant_id, at_ms, kind, prior, state, attempts, reservation, reason) ",
                            );
                            events.push_values(&rows, |mut b, (id, at)| {
                                b.push_bind(*id)
                                    .push_bind(*at)
                                    .push_bind(EventKind::Confirmed.as_str())
                                    .push_bind(None::<&str>)
                                    .push_bind("P")
                                    .push_bind(0_i32)
                                    .push_bind(None::<&str>)
                                    .push_bind(None::<&str>);
                            });
                            events.build().execute(&mut *tx).await?;
                            let n = i64::try_from(rows.len()).unwrap_or(i64::MAX);
                            bump!(tx, scope, [("O", n)]);
                        }
                        tx.commit().await?;
                        Ok::<_, sqlx::Error>(rows.len() as u64)
                    })
                })
                .await?;
            added += n;
        }
        Ok(added)
    }

    /// Settles reservations of one scope (distinct openids) in one transaction; says for each
    /// whether it was still current and is now settled.
    pub(super) async fn settle_scope(
        &self,
        scope: &GrantScope,
        items: Vec<(&Reservation, &Settlement)>,
    ) -> Result<Vec<bool>, SqlError> {
        #[cfg(feature = "postgres")]
        #[allow(irrefutable_let_patterns)] // the only pool when SQLite is left out
        if let crate::Pool::Pg(p) = &self.sql.pool {
            let applied: Vec<String> = self.sql.run(settle_postgres(p, &items)).await?;
            let applied: std::collections::HashSet<&str> = applied.iter().map(String::as_str).collect();
            return Ok(items.iter().map(|(r, _)| applied.contains(r.key.openid.as_str())).collect());
        }
        let returned: Vec<(i64, String, i64)> = self
            .sql
            .run(async {
                on_pool!(self.sql, |p, q| {
                    let mut tx = p.begin_with(q.begin).await?;
                    let mut update = sqlx::QueryBuilder::new(
                        "UPDATE wxsub_grants SET state = v.column3, \
                         attempts = CASE WHEN v.column3 = 'P' THEN 0 ELSE wxsub_grants.attempts END, \
                         until_ms = 0, reservation = NULL, reason = v.column4, \
                         version = wxsub_grants.version + 1, updated_ms = ",
                    );
                    update.push(q.now_ms).push(" FROM (");
                    update.push_values(&items, |mut b, (r, s)| {
                        let (state, _, reason) = settled(s);
                        // An id that is not one of ours matches no grant (ids start at 1).
                        let gid = grant_id(&r.id).unwrap_or(0);
                        b.push_bind(gid)
                            .push_bind(r.id.as_str())
                            .push_bind(state)
                            .push_bind(reason)
                            .push_bind(until_ms(r));
                    });
                    // By primary key and reservation only (see `settle_postgres`); the scope is
                    // checked on what comes back.
                    update
                        .push(
                            ") AS v WHERE wxsub_grants.id = v.column1 AND wxsub_grants.state = 'R' \
                             AND wxsub_grants.reservation = v.column2 AND wxsub_grants.until_ms = v.column5 \
                             RETURNING wxsub_grants.id, wxsub_grants.openid, wxsub_grants.updated_ms, \
                             wxsub_grants.appid, wxsub_grants.template_id, wxsub_grants.scene",
                        );
                    let returned: Vec<(i64, String, i64, String, String, i32)> =
                        update.build_query_as().fetch_all(&mut *tx).await?;
                    // A reservation whose key names another scope than its grant's is not one of
                    // this batch's: undo by failing the batch.
                    if returned.iter().any(|(_, _, _, a, t, sc)| {
                        a != scope.appid.as_str() || t != scope.template_id.as_str() || *sc != scene(scope)
                    }) {
                        return Err(sqlx::Error::Protocol("a reservation's key does not match its grant".into()));
                    }
                    let returned: Vec<(i64, String, i64)> =
                        returned.into_iter().map(|(id, o, at, ..)| (id, o, at)).collect();
                    if !returned.is_empty() {
                        let by_openid: std::collections::HashMap<&str, (i64, i64)> =
                            returned.iter().map(|(id, o, at)| (o.as_str(), (*id, *at))).collect();
                        let mut insert = sqlx::QueryBuilder::new(
                            "INSERT INTO wxsub_grant_events (grant_id, at_ms, kind, prior, state, attempts, reservation, reason) ",
                        );
                        let applied = items.iter().filter_map(|(r, s)| by_openid.get(r.key.openid.as_str()).map(|v| (v, r, s)));
                        insert.push_values(applied, |mut b, ((id, at), r, s)| {
                            let (state, kind, reason) = settled(s);
                            b.push_bind(*id)
                                .push_bind(*at)
                                .push_bind(kind.as_str())
                                .push_bind("R")
                                .push_bind(state)
                                .push_bind(i32::try_from(r.attempt).unwrap_or(i32::MAX))
                                .push_bind(r.id.as_str())
                                .push_bind(reason);
                        });
                        insert.build().execute(&mut *tx).await?;
                        let settled_leases = items
                            .iter()
                            .filter(|(r, _)| by_openid.contains_key(r.key.openid.as_str()))
                            .map(|(r, _)| (until_ms(r), -1));
                        lease!(tx, scope, settled_leases);
                        let moved = items
                            .iter()
                            .map(|(r, s)| (r, settled(s).0))
                            .filter(|(r, state)| *state != "P" && by_openid.contains_key(r.key.openid.as_str()))
                            .flat_map(|(_, state)| [("O", -1), (state, 1)]);
                        bump!(tx, scope, moved);
                    }
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(returned)
                })
            })
            .await?;
        let applied: std::collections::HashSet<&str> = returned.iter().map(|(_, o, _)| o.as_str()).collect();
        Ok(items.iter().map(|(r, _)| applied.contains(r.key.openid.as_str())).collect())
    }
}

/// A reserved grant as a claim returns it: id, openid, attempts, lease end, reservation id,
/// time.
pub(super) type ClaimRow = (i64, String, i32, i64, String, i64);

/// A claim's rows as reservations, in `openid` order, with the cursor after them.
pub(super) fn claimed(scope: &GrantScope, mut rows: Vec<ClaimRow>) -> Result<Claimed, LedgerError> {
    rows.sort_unstable_by(|a, b| a.1.cmp(&b.1));
    let reservations = rows
        .into_iter()
        .map(|(_, openid, attempt, until, id, _)| {
            let openid = OpenId::new(openid).map_err(|_| corrupt("wxsub_grants.openid"))?;
            Ok(Reservation {
                key: scope.key(openid),
                id,
                until: from_millis(until),
                attempt: attempts(attempt)?,
            })
        })
        .collect::<Result<Vec<_>, LedgerError>>()?;
    let cursor = reservations.last().map(|r| r.key.openid.clone());
    Ok(Claimed { reservations, cursor })
}
