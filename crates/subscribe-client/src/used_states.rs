//! Single-use authorization states: a signed state confirms one grant, once.
//!
//! A signed state proves the answer belongs to a request of ours; it does not stop the answer
//! from being replayed. Without a record of the states already used, one state from
//! `/subscribe` replayed with made-up openids records a grant per request, and replaying a real
//! user's answer renews a grant that was delivered or is under review. The client marks each
//! confirmed state used (until the state expires) before it accepts the answer.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use subscribe_types::Reserved;

crate::token::extension_error!(
    /// The store of used states failed (connection lost, timeout). Opaque, so any backend's
    /// error fits; the cause is the [`source`](std::error::Error::source). Cheap to clone.
    UsedStatesError,
    "the store of used states failed"
);

/// Remembers which authorization states were used, so each confirms once. The contract
/// (checked by `test_util::used_states_contract`):
/// - [`first_use`](Self::first_use) is a set-if-absent: of any number of calls for one state,
///   concurrent ones included, exactly one answers `true` until the mark is forgotten;
/// - a mark is kept at least until the state's expiry (after that the state fails its own
///   expiry check, so the mark may go);
/// - [`forget`](Self::forget) removes a mark, so an answer whose recording failed can be
///   completed again.
///
/// A store shared by every instance (Redis: `subscribe-redis`'s `RedisUsedStates`) stops a
/// replay that reaches another instance; the default, [`InMemoryUsedStates`], stops it within
/// one process.
#[async_trait::async_trait]
pub trait UsedStates: Send + Sync + fmt::Debug {
    /// Marks `state` used until `expires`; `true` when it was not used before.
    async fn first_use(
        &self,
        state: &Reserved,
        expires: SystemTime,
        now: SystemTime,
    ) -> Result<bool, UsedStatesError>;

    /// Removes the mark of `state`.
    async fn forget(&self, state: &Reserved) -> Result<(), UsedStatesError>;
}

#[async_trait::async_trait]
impl<T: UsedStates + ?Sized> UsedStates for Arc<T> {
    async fn first_use(
        &self,
        state: &Reserved,
        expires: SystemTime,
        now: SystemTime,
    ) -> Result<bool, UsedStatesError> {
        (**self).first_use(state, expires, now).await
    }
    async fn forget(&self, state: &Reserved) -> Result<(), UsedStatesError> {
        (**self).forget(state).await
    }
}

/// A shared handle.
pub type SharedUsedStates = Arc<dyn UsedStates>;

/// Used states in this process's memory: the client's default. Marks are dropped once their
/// state has expired (swept when the map has doubled since the last sweep), so memory holds
/// only the states confirmed within one state lifetime.
#[derive(Debug, Default)]
pub struct InMemoryUsedStates {
    inner: Mutex<Marks>,
}

#[derive(Debug, Default)]
struct Marks {
    until: HashMap<String, SystemTime>,
    /// The map's size after the last sweep.
    swept_at: usize,
}

impl InMemoryUsedStates {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many marks are held (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.lock().until.len()
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
    async fn first_use(
        &self,
        state: &Reserved,
        expires: SystemTime,
        now: SystemTime,
    ) -> Result<bool, UsedStatesError> {
        let mut marks = self.lock();
        if marks.until.len() >= 2 * marks.swept_at.max(512) {
            marks.until.retain(|_, until| *until > now);
            marks.swept_at = marks.until.len();
        }
        match marks.until.get(state.as_str()) {
            Some(until) if *until > now => Ok(false),
            _ => {
                marks.until.insert(state.as_str().to_owned(), expires);
                Ok(true)
            }
        }
    }

    async fn forget(&self, state: &Reserved) -> Result<(), UsedStatesError> {
        self.lock().until.remove(state.as_str());
        Ok(())
    }
}
