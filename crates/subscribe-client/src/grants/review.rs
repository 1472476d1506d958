//! The review workflow's values: a grant set aside for a person ([`ReviewItem`], from
//! [`GrantLedger::reviews`](super::GrantLedger::reviews)) and the person's decision
//! ([`Resolution`], given to [`GrantLedger::resolve`](super::GrantLedger::resolve)).

use std::time::SystemTime;

use subscribe_types::OpenId;

/// A person's decision on a grant under review.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resolution {
    /// The message did arrive (the user has it): the grant is used, never sent again; its
    /// attempts are kept.
    Delivered,
    /// It did not arrive: the grant is pending again, its attempts back to 0, and the next
    /// reservation (the next dispatch) takes it as attempt 1.
    Release,
    /// The grant cannot be used: dropped, with the resolution's note as its reason.
    Drop,
}

/// A grant under review, from [`GrantLedger::reviews`](super::GrantLedger::reviews).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReviewItem {
    /// The user.
    pub openid: OpenId,
    /// Why it is under review (the reason of its [`Settlement::Review`](super::Settlement::Review)).
    pub reason: String,
    /// Its reservations before it was set aside.
    pub attempts: u32,
    /// Since when: the settlement that set it aside, by the ledger's clock (the database's for
    /// SQL), to the millisecond.
    pub since: SystemTime,
}

impl ReviewItem {
    /// An item as a ledger lists it (the struct is non-exhaustive, so a ledger outside this
    /// crate builds it here).
    pub fn new(openid: OpenId, reason: impl Into<String>, attempts: u32, since: SystemTime) -> Self {
        Self { openid, reason: reason.into(), attempts, since }
    }
}
