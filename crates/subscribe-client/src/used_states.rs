//! Single-use authorization states: a signed state confirms one grant, once.
//!
//! A signed state proves the answer belongs to a request of ours; it does not stop the answer
//! from being replayed. Without a record of the states already used, one state from
//! `/subscribe` replayed with made-up openids records a grant per request, and replaying a real
//! user's answer renews a grant that was delivered or is under review. The client marks each
//! confirmed state used by its answer (until the state expires) before it accepts the answer.
//!
//! A mark names the answer that made it ([`AnswerDigest`]), so the store's answer can be lost
//! without losing the user's consent: when the mark lands but the call times out, the user's
//! retry of the same answer finds its own mark and goes through, while any other answer with
//! that state is a replay. Once the answer is accepted (its grant recorded), the client
//! [seals](UsedStates::seal) the mark, and from then on the same answer is
//! [already accepted](StateUse::Accepted), never accepted again.
//!
//! Two completions of the same answer can run at once (a double submit, a reloaded webview).
//! Were both let through, the second would renew the grant after the first's was delivered.
//! So each completion that goes on holds a [`Claim`] on the mark, until it seals the mark,
//! [releases](UsedStates::release) the claim (its ledger failed), or the claim's period lapses
//! (the completion was dropped): while one completion holds a live claim, the same answer is
//! [in progress](StateUse::InProgress) and refused for now, to be retried shortly.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};
use subscribe_types::{OpenId, Reserved};

crate::token::extension_error!(
    /// The store of used states failed (connection lost, timeout). Opaque, so any backend's
    /// error fits; the cause is the [`source`](std::error::Error::source). Cheap to clone.
    UsedStatesError,
    "the store of used states failed",
    "The client reports it as [`AuthorizationError::UsedStates`](crate::AuthorizationError::UsedStates) \
     (also `Retryable`): nothing was recorded, and the same answer can be completed later."
);

/// Who used a state: a digest of the confirmation that did (its state and its openid; the
/// template, scene and session are bound by the state's signature already), as 32 lower-case
/// hex digits. Two answers have the same digest exactly when they carry the same state and the
/// same openid, byte for byte: openids are case-sensitive ids, so `oAlice` and `oalice` are two
/// users. A store keeps the digest, never the openid.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AnswerDigest(String);

impl AnswerDigest {
    /// The digest of the confirmation of `state` by `openid`: the first 16 bytes of
    /// SHA-256 over a label, the state and the openid.
    pub fn of(state: &Reserved, openid: &OpenId) -> Self {
        let mut hash = Sha256::new();
        for part in [b"wxsub answer v1".as_slice(), state.as_str().as_bytes(), openid.as_str().as_bytes()] {
            hash.update(part);
            hash.update([0]);
        }
        Self(hex::encode(&hash.finalize()[..16]))
    }

    /// The digest as 32 lower-case hex digits, as stores keep it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AnswerDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AnswerDigest({})", self.0)
    }
}

/// One completion's hold on its answer's mark: while it is live, no other completion of the
/// same answer goes on. Named by 32 random hex digits (so a completion releases its own claim
/// and never another's) and held for a period from when the store takes it, on the store's
/// clock. The client takes one per confirmation it completes, for
/// [`CLAIM_PERIOD`](Self::CLAIM_PERIOD) or ten times its `store_timeout`, whichever is longer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    id: String,
    period: Duration,
}

impl Claim {
    /// The client's default period of a claim: 30 s, ample for a completion (a mark, the
    /// ledger's record and a seal, each bounded by the client's `store_timeout`, 3 s by default)
    /// and short enough that a user whose completion was dropped retries within a minute.
    pub const CLAIM_PERIOD: Duration = Duration::from_secs(30);

    /// A new claim with a random id, held for `period` once taken.
    pub fn new(period: Duration) -> Self {
        static TAKEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mut n = [0u8; 16];
        // Without the system's randomness, ids fall back on a count (zeros and this process's
        // number of claims): they only need to differ between completions, they guard nothing
        // secret.
        if getrandom::fill(&mut n).is_err() {
            n[..8].copy_from_slice(&TAKEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_le_bytes());
        }
        Self { id: hex::encode(n), period }
    }

    /// The claim's id: 32 lower-case hex digits.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How long the claim is held once taken.
    pub fn period(&self) -> Duration {
        self.period
    }
}

/// What [`UsedStates::mark_used`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateUse {
    /// The state was unused: it is now marked as this answer's, and claimed.
    First,
    /// This same answer marked the state before and was never accepted (its mark is not
    /// sealed), and no other completion holds a live claim on it: a retry, for example after
    /// the store's answer to the first call was lost, or after the ledger failed. Accepted
    /// again; the mark is now claimed by this call.
    Retry,
    /// This same answer marked the state, is not accepted yet, and another completion holds a
    /// live claim on the mark: the answer is being completed right now (a double submit). Not
    /// accepted; retry shortly.
    InProgress,
    /// This same answer marked the state and was accepted (the mark is sealed): the user's
    /// refresh after success, never accepted twice.
    Accepted,
    /// Another answer marked the state: a replay.
    Used,
}

impl StateUse {
    /// Whether the answer may go on: [`First`](Self::First) or [`Retry`](Self::Retry).
    pub fn accepts(self) -> bool {
        matches!(self, Self::First | Self::Retry)
    }
}

/// Remembers which authorization states were used, and by which answer, so each confirms once.
/// The contract (checked by `test_util::used_states_contract`):
/// - [`mark_used`](Self::mark_used) is one atomic step: of any number of calls for one state,
///   concurrent ones included, the first marks it as its answer's and takes its claim
///   ([`StateUse::First`]); calls by any other answer find [`StateUse::Used`]; later calls by
///   the same answer find [`StateUse::InProgress`] while another claim on the mark is live,
///   and otherwise [`StateUse::Retry`], taking their own claim: of any number of concurrent
///   calls by one answer, at most one goes on until its claim is released, lapses or the mark
///   is sealed;
/// - [`seal`](Self::seal) by the answer that made the mark turns every later call by that
///   answer into [`StateUse::Accepted`]; by another answer it changes nothing;
/// - [`release`](Self::release) ends the claim it names, if that claim is the mark's, and no
///   other;
/// - a claim is live for its [period](Claim::period) from when the store took it, by the
///   store's clock;
/// - a mark is kept at least for the lifetime `expires − now` it was made with, measured from
///   when it was made (after that the state fails its own expiry check, so the mark may go).
///   Both instants are on the client's clock: a store that keeps marks by a clock of its own
///   (a database's, Redis's) keeps the lifetime, never the instant, so a client clock behind
///   the store's cannot shorten a mark.
///
/// A store shared by every instance (Redis: `subscribe-redis`'s `RedisUsedStates`; a SQL
/// database: `subscribe-sql`'s `SqlUsedStates`) stops a replay that reaches another instance or
/// a restarted one; the default, [`InMemoryUsedStates`], stops it within one process.
#[async_trait::async_trait]
pub trait UsedStates: Send + Sync + fmt::Debug {
    /// Marks `state` used by the answer `by` until `expires`, unless it is marked already,
    /// takes `claim` on the mark when the answer may go on ([`StateUse::First`],
    /// [`StateUse::Retry`]), and says what it found.
    async fn mark_used(
        &self,
        state: &Reserved,
        by: &AnswerDigest,
        claim: &Claim,
        expires: SystemTime,
        now: SystemTime,
    ) -> Result<StateUse, UsedStatesError>;

    /// Seals the mark of `state` if the answer `by` made it: that answer was accepted, so a
    /// later call with it finds [`StateUse::Accepted`]. No error when there is no such mark.
    async fn seal(&self, state: &Reserved, by: &AnswerDigest) -> Result<(), UsedStatesError>;

    /// Ends `claim` on the mark of `state` by the answer `by`, if it still holds it: its
    /// completion failed before acceptance, so the user's retry may go on at once. No error
    /// when it holds no claim.
    async fn release(
        &self,
        state: &Reserved,
        by: &AnswerDigest,
        claim: &Claim,
    ) -> Result<(), UsedStatesError>;
}

#[async_trait::async_trait]
impl<T: UsedStates + ?Sized> UsedStates for Arc<T> {
    async fn mark_used(
        &self,
        state: &Reserved,
        by: &AnswerDigest,
        claim: &Claim,
        expires: SystemTime,
        now: SystemTime,
    ) -> Result<StateUse, UsedStatesError> {
        (**self).mark_used(state, by, claim, expires, now).await
    }
    async fn seal(&self, state: &Reserved, by: &AnswerDigest) -> Result<(), UsedStatesError> {
        (**self).seal(state, by).await
    }
    async fn release(
        &self,
        state: &Reserved,
        by: &AnswerDigest,
        claim: &Claim,
    ) -> Result<(), UsedStatesError> {
        (**self).release(state, by, claim).await
    }
}

/// A shared handle.
pub type SharedUsedStates = Arc<dyn UsedStates>;

/// Used states in this process's memory: the client's default. Marks are dropped once their
/// state has expired (swept when the map has doubled since the last sweep), so memory holds
/// only the states confirmed within one state lifetime. Claims are timed by the caller's `now`,
/// the one clock that reads them.
#[derive(Debug, Default)]
pub struct InMemoryUsedStates {
    inner: Mutex<Marks>,
}

#[derive(Debug, Default)]
struct Marks {
    marks: HashMap<String, Mark>,
    /// The map's size after the last sweep.
    swept_at: usize,
}

#[derive(Debug)]
struct Mark {
    until: SystemTime,
    by: AnswerDigest,
    sealed: bool,
    /// The claim's id, and when it lapses.
    claim: String,
    claimed_until: SystemTime,
}

impl InMemoryUsedStates {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many marks are held (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.lock().marks.len()
    }

    /// Whether no mark is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Marks> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl UsedStates for InMemoryUsedStates {
    async fn mark_used(
        &self,
        state: &Reserved,
        by: &AnswerDigest,
        claim: &Claim,
        expires: SystemTime,
        now: SystemTime,
    ) -> Result<StateUse, UsedStatesError> {
        let mut marks = self.lock();
        if marks.marks.len() >= 2 * marks.swept_at.max(512) {
            marks.marks.retain(|_, mark| mark.until >= now);
            marks.swept_at = marks.marks.len();
        }
        // One clock (the caller's) sets and reads the marks, and a state is valid through the
        // instant of its expiry: its mark is live through it too.
        let claimed_until = now + claim.period;
        match marks.marks.get_mut(state.as_str()) {
            Some(mark) if mark.until >= now => Ok(if mark.by != *by {
                StateUse::Used
            } else if mark.sealed {
                StateUse::Accepted
            } else if mark.claimed_until > now && mark.claim != claim.id {
                StateUse::InProgress
            } else {
                claim.id.clone_into(&mut mark.claim);
                mark.claimed_until = claimed_until;
                StateUse::Retry
            }),
            _ => {
                marks.marks.insert(
                    state.as_str().to_owned(),
                    Mark {
                        until: expires,
                        by: by.clone(),
                        sealed: false,
                        claim: claim.id.clone(),
                        claimed_until,
                    },
                );
                Ok(StateUse::First)
            }
        }
    }

    async fn release(
        &self,
        state: &Reserved,
        by: &AnswerDigest,
        claim: &Claim,
    ) -> Result<(), UsedStatesError> {
        if let Some(mark) = self.lock().marks.get_mut(state.as_str())
            && mark.by == *by
            && mark.claim == claim.id
        {
            mark.claimed_until = SystemTime::UNIX_EPOCH;
        }
        Ok(())
    }

    async fn seal(&self, state: &Reserved, by: &AnswerDigest) -> Result<(), UsedStatesError> {
        if let Some(mark) = self.lock().marks.get_mut(state.as_str())
            && mark.by == *by
        {
            mark.sealed = true;
        }
        Ok(())
    }
}
