//! Tokens with WeChat's semantics: the classic and stable endpoints, their quotas, grace
//! periods and rotation, and the checks an API request's `access_token` gets.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use subscribe_types::ErrCode;

use super::{Inner, SEQ, unix_ms};
use crate::clock::Now;
use crate::config::SandboxConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Classic,
    Stable,
}

#[derive(Clone, Debug)]
pub(super) struct TokenRecord {
    appid: String,
    kind: Kind,
    expires_at: Instant,
    /// After this instant the token answers 40001 ("not latest"): superseded or revoked.
    invalid_after: Option<Instant>,
}

#[derive(Clone, Debug, Default)]
pub(super) struct Quota {
    day: u64,
    used: u32,
    last: Option<Instant>,
}

/// WeChat's days are Beijing days.
fn beijing_day(wall: SystemTime) -> u64 {
    (unix_ms(wall) / 1000 + 8 * 3600) / 86_400
}

fn new_token(appid: &str) -> String {
    let mut r = [0u8; 16];
    let _ = getrandom::fill(&mut r);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tail = &appid[appid.len().saturating_sub(4)..];
    format!("SBX_{tail}_{seq:08}_{}", hex::encode(r))
}

/// A token request's answer: the token and its remaining lifetime, or WeChat's error.
pub(crate) type TokenAnswer = Result<(String, u64), (ErrCode, &'static str)>;

impl Inner {
    fn issue(&mut self, cfg: &SandboxConfig, appid: &str, kind: Kind, now: Instant) -> (String, u64) {
        self.prune_tokens(cfg, now);
        let token = new_token(appid);
        self.tokens.insert(
            token.clone(),
            TokenRecord {
                appid: appid.into(),
                kind,
                expires_at: now + cfg.token_lifetime,
                invalid_after: None,
            },
        );
        self.stats.tokens_issued += 1;
        (token, cfg.token_lifetime.as_secs().max(1))
    }

    /// `GET /cgi-bin/token`: a new token each time; the previous one keeps working for the
    /// grace period only.
    pub(crate) fn classic_token(&mut self, cfg: &SandboxConfig, appid: &str, now: Now) -> TokenAnswer {
        let day = beijing_day(now.wall);
        let now = now.mono;
        let q = self.classic_quota.entry(appid.into()).or_default();
        if q.day != day {
            *q = Quota { day, ..Quota::default() };
        }
        if q.used >= cfg.classic_daily_quota {
            return Err((ErrCode::DAILY_QUOTA_EXCEEDED, "reach max api daily quota limit"));
        }
        q.used += 1;
        if let Some(prev) = self.classic_current.get(appid).cloned()
            && let Some(rec) = self.tokens.get_mut(&prev)
        {
            let until = now + cfg.classic_grace;
            rec.invalid_after = Some(rec.invalid_after.map_or(until, |t| t.min(until)));
        }
        let (token, secs) = self.issue(cfg, appid, Kind::Classic, now);
        self.classic_current.insert(appid.into(), token.clone());
        Ok((token, secs))
    }

    /// `POST /cgi-bin/stable_token`: the current token while it is not close to expiry; a
    /// forced refresh ends it (within the daily and spacing limits).
    pub(crate) fn stable_token(
        &mut self,
        cfg: &SandboxConfig,
        appid: &str,
        force: bool,
        now: Now,
    ) -> TokenAnswer {
        let day = beijing_day(now.wall);
        let now = now.mono;
        let current = self.stable_current.get(appid).cloned().and_then(|t| {
            let rec = self.tokens.get(&t)?;
            let live = rec.invalid_after.is_none_or(|i| now < i) && now < rec.expires_at;
            live.then(|| (t, rec.expires_at - now))
        });
        if force {
            let q = self.force_quota.entry(appid.into()).or_default();
            if q.day != day {
                *q = Quota { day, used: 0, last: q.last };
            }
            let spaced = q.last.is_none_or(|l| now.duration_since(l) >= cfg.force_refresh_spacing);
            if !spaced {
                // "否则不会刷新": too soon, nothing is refreshed.
                if let Some((t, left)) = current {
                    return Ok((t, left.as_secs().max(1)));
                }
            } else if q.used >= cfg.force_refresh_daily_quota {
                return Err((ErrCode::DAILY_QUOTA_EXCEEDED, "reach max api daily quota limit"));
            } else {
                q.used += 1;
                q.last = Some(now);
                if let Some((t, _)) = &current
                    && let Some(rec) = self.tokens.get_mut(t)
                {
                    rec.invalid_after = Some(now);
                }
                let (token, secs) = self.issue(cfg, appid, Kind::Stable, now);
                self.stable_current.insert(appid.into(), token.clone());
                return Ok((token, secs));
            }
        }
        let window = cfg.stable_rotation;
        if let Some((t, left)) = current
            && left > window
        {
            return Ok((t, left.as_secs().max(1)));
        }
        // The old stable token (if any) stays valid until its own expiry: an overlap.
        let (token, secs) = self.issue(cfg, appid, Kind::Stable, now);
        self.stable_current.insert(appid.into(), token.clone());
        Ok((token, secs))
    }

    /// Checks an `access_token` for `appid`-independent API use; returns the token's app.
    pub(crate) fn check_token(
        &self,
        token: Option<&str>,
        now: Instant,
    ) -> Result<String, (ErrCode, &'static str)> {
        let token =
            token.filter(|t| !t.is_empty()).ok_or((ErrCode::ACCESS_TOKEN_MISSING, "access_token missing"))?;
        let rec = self.tokens.get(token).ok_or((ErrCode::INVALID_ACCESS_TOKEN, "invalid access_token"))?;
        if rec.invalid_after.is_some_and(|i| now >= i) {
            return Err((
                ErrCode::INVALID_CREDENTIAL,
                "invalid credential, access_token is invalid or not latest",
            ));
        }
        if now >= rec.expires_at {
            return Err((ErrCode::ACCESS_TOKEN_EXPIRED, "access_token expired"));
        }
        Ok(rec.appid.clone())
    }

    /// [`check_token`](Self::check_token) for an API request, counting in
    /// [`Stats::token_rejections`] the answers a sender must refresh and replay on.
    pub(crate) fn use_token(
        &mut self,
        token: Option<&str>,
        now: Instant,
    ) -> Result<String, (ErrCode, &'static str)> {
        let checked = self.check_token(token, now);
        if let Err((code, _)) = &checked
            && [ErrCode::INVALID_CREDENTIAL, ErrCode::INVALID_ACCESS_TOKEN, ErrCode::ACCESS_TOKEN_EXPIRED]
                .contains(code)
        {
            self.stats.token_rejections += 1;
        }
        checked
    }

    /// Forgets tokens that stopped working more than a token lifetime ago (they answer 40014,
    /// "invalid `access_token`", from then on), so the map holds the tokens of the last few
    /// hours however long the sandbox runs. Until then a dead token still answers 40001 or
    /// 42001, which is what a client's refresh logic reacts to.
    fn prune_tokens(&mut self, cfg: &SandboxConfig, now: Instant) {
        let Some(cutoff) = now.checked_sub(cfg.token_lifetime) else { return };
        self.tokens.retain(|_, rec| {
            let died = rec.invalid_after.map_or(rec.expires_at, |i| i.min(rec.expires_at));
            died > cutoff
        });
    }

    /// Revokes every token: after `grace` they answer 40001. New requests get new tokens.
    pub(crate) fn revoke_tokens(&mut self, now: Instant, grace: Duration) {
        for rec in self.tokens.values_mut() {
            let until = now + grace;
            rec.invalid_after = Some(rec.invalid_after.map_or(until, |t| t.min(until)));
        }
        self.stable_current.clear();
        self.classic_current.clear();
    }

    /// Expires every token now: they answer 42001.
    pub(crate) fn expire_tokens(&mut self, now: Instant) {
        for rec in self.tokens.values_mut() {
            rec.expires_at = rec.expires_at.min(now);
        }
        self.stable_current.clear();
        self.classic_current.clear();
    }

    /// How many live tokens each endpoint has issued (for the state page).
    pub(crate) fn live_tokens(&self, now: Instant) -> (usize, usize) {
        let live = |k: Kind| {
            self.tokens
                .values()
                .filter(|r| r.kind == k && now < r.expires_at && r.invalid_after.is_none_or(|i| now < i))
                .count()
        };
        (live(Kind::Classic), live(Kind::Stable))
    }
}
