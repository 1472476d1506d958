//! The grant ledger: one confirmation, one message.
//!
//! Every confirmed authorization is a grant for (app, user, template, scene). The ledger
//! records them idempotently (repeated confirmations do not add up, as at WeChat), lists the
//! pending ones page by page, and hands each to exactly one sender at a time through a lease,
//! so a grant is sent once, released after a definite failure, set aside for review when the
//! outcome is unknown (never resent automatically), or dropped when WeChat says it is gone.
//! A grant set aside is listed by [`GrantLedger::reviews`] and decided by a person with
//! [`GrantLedger::resolve`], on every ledger.

mod memory;
mod review;

use std::fmt;
use std::time::{Duration, SystemTime};

use subscribe_types::{AppId, Confirmed, OpenId, Scene, TemplateId};

pub use memory::InMemoryGrantLedger;
pub use review::{Resolution, ReviewItem};

use crate::token::BoxError;

/// What a grant is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrantKey {
    /// The app that may send.
    pub appid: AppId,
    /// The user who confirmed.
    pub openid: OpenId,
    /// The confirmed template.
    pub template_id: TemplateId,
    /// The confirmed scene.
    pub scene: Scene,
}

impl GrantKey {
    /// The grant a confirmation gives `appid`.
    pub fn confirmed(appid: AppId, c: &Confirmed) -> Self {
        Self { appid, openid: c.openid.clone(), template_id: c.template_id.clone(), scene: c.scene }
    }

    /// The scope the grant belongs to.
    pub fn scope(&self) -> GrantScope {
        GrantScope { appid: self.appid.clone(), template_id: self.template_id.clone(), scene: self.scene }
    }
}

/// All grants of one app for one template and scene: what one dispatch sends to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrantScope {
    /// The app.
    pub appid: AppId,
    /// The template.
    pub template_id: TemplateId,
    /// The scene.
    pub scene: Scene,
}

impl GrantScope {
    /// The scope of the one-time message's confirmations of `template_id` for `scene`: what
    /// [`Dispatcher::one_time`](crate::Dispatcher::one_time) sends to.
    pub fn one_time(appid: AppId, template_id: TemplateId, scene: Scene) -> Self {
        Self { appid, template_id, scene }
    }

    /// The scope of a mini program's library template: what
    /// [`Dispatcher::mini_program`](crate::Dispatcher::mini_program) sends to. Library templates
    /// have no scene: their grants are kept under scene 0, where they never meet the one-time
    /// message's (whose template id is another).
    pub fn mini_program(appid: AppId, template_id: TemplateId) -> Self {
        Self { appid, template_id, scene: Scene::ZERO }
    }

    /// The scope of a service account's library template (notifications): what
    /// [`Dispatcher::notification`](crate::Dispatcher::notification) sends to. Kept under scene 0
    /// as the mini program's are; the two never meet, since a mini program and a service account
    /// are two apps with their own app ids and templates.
    pub fn notification(appid: AppId, template_id: TemplateId) -> Self {
        Self { appid, template_id, scene: Scene::ZERO }
    }

    /// The grant of `openid` in this scope.
    pub fn key(&self, openid: OpenId) -> GrantKey {
        GrantKey {
            appid: self.appid.clone(),
            openid,
            template_id: self.template_id.clone(),
            scene: self.scene,
        }
    }
}

/// Where a grant stands.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GrantStatus {
    /// Confirmed and not yet used.
    Pending,
    /// A sender holds it until `until`; after that it is pending again.
    Reserved {
        /// End of the lease.
        until: SystemTime,
    },
    /// The message was delivered: the grant is used.
    Delivered,
    /// The outcome of a send is unknown: a person decides; never resent automatically.
    Review {
        /// Why.
        reason: String,
    },
    /// The grant cannot be used (WeChat refused it, the user does not exist).
    Dropped {
        /// Why.
        reason: String,
    },
}

/// How many earlier lives of a grant a ledger keeps (the most recent ones).
pub const MAX_HISTORY: usize = 16;

/// An earlier life of a grant, ended when a new confirmation renewed it: kept, so a renewal
/// never erases the evidence of a delivery or of a review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PastGrant {
    /// How it stood when renewed: `Delivered`, `Review` or `Dropped`, with its reason.
    pub status: GrantStatus,
    /// Its reservations.
    pub attempts: u32,
    /// When the new confirmation was recorded (the `now` given to `record`, or the ledger's own
    /// clock for one that keeps time itself), to the millisecond.
    pub renewed_at: SystemTime,
}

/// A grant with its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantRecord {
    /// What it is for.
    pub key: GrantKey,
    /// Where it stands.
    pub status: GrantStatus,
    /// How many times it was reserved since it was (re)confirmed or last released: more than
    /// one means an earlier sender's lease lapsed (it may have crashed after sending).
    pub attempts: u32,
    /// Its earlier lives, oldest first (at most [`MAX_HISTORY`], the most recent).
    pub history: Vec<PastGrant>,
}

/// A sender's hold on one grant, needed to settle it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// The grant.
    pub key: GrantKey,
    /// Identifies this hold; only it can settle the grant.
    pub id: String,
    /// End of the lease.
    pub until: SystemTime,
    /// 1 for the first reservation since the confirmation or the last
    /// [`Release`](Settlement::Release) (a definite failure delivered nothing); more means an
    /// earlier sender's lease lapsed (it may have crashed after sending).
    pub attempt: u32,
}

/// How a reservation ends.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Settlement {
    /// Delivered: the grant is used.
    Delivered,
    /// A definite failure that leaves the grant usable: pending again, its attempts back to 0.
    Release,
    /// Unknown outcome: set aside for review.
    Review(String),
    /// The grant is gone (43101, invalid openid).
    Drop(String),
}

/// What recording a confirmation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recorded {
    /// A new grant.
    Added,
    /// The grant was already pending (or being sent): nothing added, as at WeChat.
    AlreadyPending,
    /// The previous grant was used, dropped or under review; the confirmation makes a new one.
    Renewed,
}

/// Grants of a scope by status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GrantCounts {
    /// Pending (including reservations whose lease has lapsed).
    pub pending: u64,
    /// Reserved with a live lease.
    pub reserved: u64,
    /// Delivered.
    pub delivered: u64,
    /// Under review.
    pub review: u64,
    /// Dropped.
    pub dropped: u64,
}

/// Where grants are kept. The contract (checked by `test_util::grant_ledger_contract`):
/// recording is idempotent per key; recording over a used, dropped or reviewed grant renews it
/// and keeps the old one in its history; at most one live reservation per grant; a lapsed lease
/// makes the grant pending again; only the holder of the current reservation settles it;
/// pending grants are listed in `openid` order after a cursor, so paging needs no snapshot;
/// a grant set aside for review stays there until a person resolves it (or a new confirmation
/// renews it), and resolving applies only to a grant under review.
///
/// Time is passed in (`now`), from the client's clock; a ledger shared by instances whose
/// clocks may disagree can time leases by its own clock instead (the SQL ledger uses the
/// database's), which the contract suite allows: it runs in real time.
#[async_trait::async_trait]
pub trait GrantLedger: Send + Sync + fmt::Debug {
    /// Records a confirmation.
    async fn record(&self, key: &GrantKey, now: SystemTime) -> Result<Recorded, LedgerError>;

    /// Up to `limit` users of `scope` with a pending grant, in `openid` order, after `after`.
    async fn pending_page(
        &self,
        scope: &GrantScope,
        after: Option<&OpenId>,
        limit: usize,
        now: SystemTime,
    ) -> Result<Vec<OpenId>, LedgerError>;

    /// Takes the grant for sending until `now + lease`, if it is pending. `None` when it is
    /// not (another sender holds it, or it is used, dropped or under review).
    async fn reserve(
        &self,
        key: &GrantKey,
        holder: &str,
        lease: Duration,
        now: SystemTime,
    ) -> Result<Option<Reservation>, LedgerError>;

    /// Ends a reservation.
    ///
    /// Fails with [`LedgerError::LeaseLost`] when `reservation` is no longer the grant's
    /// current one (its lease lapsed and another sender took the grant).
    async fn settle(&self, reservation: &Reservation, settlement: Settlement) -> Result<(), LedgerError>;

    /// The grant's record.
    async fn get(&self, key: &GrantKey) -> Result<Option<GrantRecord>, LedgerError>;

    /// Counts by status.
    async fn counts(&self, scope: &GrantScope, now: SystemTime) -> Result<GrantCounts, LedgerError>;

    /// Reserves up to `limit` pending grants of `scope` whose `openid` comes after `after`, in
    /// `openid` order: what a dispatcher claims in one go. The [`Claimed::cursor`] is where
    /// the next call continues (`None`: nothing pending is left after `after`); grants another
    /// sender holds are skipped, and concurrent claims never return the same grant. Each
    /// reservation counts its attempt as [`reserve`](Self::reserve) does (a lapsed one is
    /// claimed as attempt 2).
    ///
    /// The default pages with [`pending_page`](Self::pending_page) and reserves each grant;
    /// a database overrides it with one statement (`… FOR UPDATE SKIP LOCKED`).
    async fn reserve_next(
        &self,
        scope: &GrantScope,
        after: Option<&OpenId>,
        limit: usize,
        holder: &str,
        lease: Duration,
        now: SystemTime,
    ) -> Result<Claimed, LedgerError> {
        let page = self.pending_page(scope, after, limit.max(1), now).await?;
        let cursor = page.last().cloned();
        let mut reservations = Vec::with_capacity(page.len());
        for openid in page {
            if let Some(r) = self.reserve(&scope.key(openid), holder, lease, now).await? {
                reservations.push(r);
            }
        }
        Ok(Claimed { reservations, cursor })
    }

    /// Ends several reservations: one result per item, in order, each as
    /// [`settle`](Self::settle) would give it. The default settles one after another; a
    /// database overrides it with one transaction.
    async fn settle_many(&self, items: Vec<(Reservation, Settlement)>) -> Vec<Result<(), LedgerError>> {
        let mut results = Vec::with_capacity(items.len());
        for (r, s) in items {
            results.push(self.settle(&r, s).await);
        }
        results
    }

    /// Up to `limit` (at least 1) grants of `scope` under review, in `openid` order after
    /// `after`, each with its reason, its attempts and since when it is under review: what a
    /// person goes through (`wxsub grants review list`).
    async fn reviews(
        &self,
        scope: &GrantScope,
        after: Option<&OpenId>,
        limit: usize,
    ) -> Result<Vec<ReviewItem>, LedgerError>;

    /// Decides a grant under review, as a person does once they know what became of its
    /// message: [`Resolution::Delivered`] makes it used (never sent again, its attempts kept),
    /// [`Resolution::Release`] pending again with its attempts back to 0 (the next
    /// reservation takes it as attempt 1), [`Resolution::Drop`] dropped with `note` as its
    /// reason. `note` says who decided and on what evidence; a ledger with an audit trail keeps
    /// it there (the SQL ledger's `events`), stamped `now` (or its own clock's now).
    ///
    /// Returns `Ok(false)`, changing nothing, when the grant is not under review: unknown,
    /// pending, reserved, used, dropped, or resolved already (a review is decided once).
    /// Atomic with the other transitions: a grant resolved while another call renews it is
    /// either resolved and then renewed, or renewed and then not under review.
    async fn resolve(
        &self,
        key: &GrantKey,
        resolution: Resolution,
        note: &str,
        now: SystemTime,
    ) -> Result<bool, LedgerError>;
}

/// What [`GrantLedger::reserve_next`] claimed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    /// The grants now held, in `openid` order.
    pub reservations: Vec<Reservation>,
    /// The last `openid` examined, where the next claim continues; `None` when nothing pending
    /// was left after the given cursor.
    pub cursor: Option<OpenId>,
}

#[async_trait::async_trait]
impl<T: GrantLedger + ?Sized> GrantLedger for std::sync::Arc<T> {
    async fn record(&self, key: &GrantKey, now: SystemTime) -> Result<Recorded, LedgerError> {
        (**self).record(key, now).await
    }
    async fn pending_page(
        &self,
        scope: &GrantScope,
        after: Option<&OpenId>,
        limit: usize,
        now: SystemTime,
    ) -> Result<Vec<OpenId>, LedgerError> {
        (**self).pending_page(scope, after, limit, now).await
    }
    async fn reserve(
        &self,
        key: &GrantKey,
        holder: &str,
        lease: Duration,
        now: SystemTime,
    ) -> Result<Option<Reservation>, LedgerError> {
        (**self).reserve(key, holder, lease, now).await
    }
    async fn settle(&self, reservation: &Reservation, settlement: Settlement) -> Result<(), LedgerError> {
        (**self).settle(reservation, settlement).await
    }
    async fn get(&self, key: &GrantKey) -> Result<Option<GrantRecord>, LedgerError> {
        (**self).get(key).await
    }
    async fn counts(&self, scope: &GrantScope, now: SystemTime) -> Result<GrantCounts, LedgerError> {
        (**self).counts(scope, now).await
    }
    async fn reserve_next(
        &self,
        scope: &GrantScope,
        after: Option<&OpenId>,
        limit: usize,
        holder: &str,
        lease: Duration,
        now: SystemTime,
    ) -> Result<Claimed, LedgerError> {
        (**self).reserve_next(scope, after, limit, holder, lease, now).await
    }
    async fn settle_many(&self, items: Vec<(Reservation, Settlement)>) -> Vec<Result<(), LedgerError>> {
        (**self).settle_many(items).await
    }
    async fn reviews(
        &self,
        scope: &GrantScope,
        after: Option<&OpenId>,
        limit: usize,
    ) -> Result<Vec<ReviewItem>, LedgerError> {
        (**self).reviews(scope, after, limit).await
    }
    async fn resolve(
        &self,
        key: &GrantKey,
        resolution: Resolution,
        note: &str,
        now: SystemTime,
    ) -> Result<bool, LedgerError> {
        (**self).resolve(key, resolution, note, now).await
    }
}

/// A ledger operation failed.
///
/// [`kind()`](Self::kind) says what to do about it, as every operation's error of this crate
/// does ([`ErrorKind`]):
///
/// | variant | `kind()` | what happened | you |
/// |---|---|---|---|
/// | `LeaseLost` | `Invalid` | the reservation is not the grant's current one: its lease lapsed and another sender took the grant, or it was settled already | leave the grant to its current holder; settling this reservation again fails the same way, and the grant must not be sent again from here |
/// | `Forgotten` | `Invalid` | the backend no longer holds the grant at all: it lost its data (a Redis restarted without persistence, flushed, or evicting keys) | do not send the grant from here; what else the ledger forgot is lost with it (see the Redis ledger's documentation) |
/// | `Backend` | `Retryable` | the ledger's backend failed or did not answer (connection lost, timeout) | try again later; a reserved grant comes back after its lease |
/// | `Unusable` | `Configuration` | the backend refuses in a way no retry fixes: its credentials, its address or schema, a migration, a stored value not in its format (a corrupt row) | fix the ledger's configuration, or the row |
///
/// No variant prints its cause: a backend's error (a connection string, a query) is the
/// [`source`](std::error::Error::source) only.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use subscribe_client::{ErrorKind, GrantLedger, GrantScope, InMemoryGrantLedger, LedgerError, Settlement};
/// use subscribe_types::{AppId, OpenId, Scene, TemplateId};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let ledger = InMemoryGrantLedger::new();
/// let (appid, template_id, scene) = (AppId::new("wx0123456789abcdef")?, TemplateId::new("restock")?, Scene::new(1)?);
/// let key = GrantScope { appid, template_id, scene }.key(OpenId::new("oAlice")?);
/// let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// ledger.record(&key, t0).await?;
///
/// // A slow sender's lease lapses and another sender takes the grant.
/// let slow = ledger.reserve(&key, "slow", Duration::from_secs(30), t0).await?.ok_or("reserved")?;
/// let later = t0 + Duration::from_secs(60);
/// let _fast = ledger.reserve(&key, "fast", Duration::from_secs(30), later).await?.ok_or("retaken")?;
///
/// let lost = ledger.settle(&slow, Settlement::Delivered).await.unwrap_err();
/// assert!(matches!(lost, LedgerError::LeaseLost));
/// assert_eq!(lost.kind(), ErrorKind::Invalid); // leave the grant to "fast"
///
/// let down = LedgerError::backend("connection refused");
/// assert_eq!(down.kind(), ErrorKind::Retryable); // try again later
/// assert_eq!(down.to_string(), "grant ledger unavailable");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
///
/// [`ErrorKind`]: crate::ErrorKind
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The reservation is no longer the grant's current one.
    #[error("the reservation was lost: its lease lapsed and another sender took the grant")]
    LeaseLost,
    /// The backend no longer holds the grant at all, though it was recorded and reserved:
    /// the backend lost its data (a Redis restarted without persistence, flushed, or evicting
    /// keys). Nothing may be sent for it from here.
    #[error("the grant ledger no longer holds this grant: its backend lost its data")]
    Forgotten,
    /// The backend failed (connection lost, timeout).
    #[error("grant ledger unavailable")]
    Backend(#[source] BoxError),
    /// The backend refuses in a way retrying will not fix: wrong credentials, a wrong address
    /// or schema, a migration that failed, a stored value not in the backend's own format.
    #[error("grant ledger misconfigured")]
    Unusable(#[source] BoxError),
}

impl LedgerError {
    /// Wraps a backend error.
    pub fn backend(e: impl Into<BoxError>) -> Self {
        Self::Backend(e.into())
    }

    /// Wraps a backend error that retrying will not fix (credentials, address, schema).
    pub fn unusable(e: impl Into<BoxError>) -> Self {
        Self::Unusable(e.into())
    }

    /// What to do about it: `Invalid` for [`LeaseLost`](Self::LeaseLost) (the grant is
    /// another sender's now; settling this reservation again fails the same way) and
    /// [`Forgotten`](Self::Forgotten), `Retryable`
    /// for [`Backend`](Self::Backend) (the ledger is out for now), `Configuration` for
    /// [`Unusable`](Self::Unusable).
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            Self::LeaseLost | Self::Forgotten => crate::ErrorKind::Invalid,
            Self::Backend(_) => crate::ErrorKind::Retryable,
            Self::Unusable(_) => crate::ErrorKind::Configuration,
        }
    }
}
