//! Integration tests of `subscribe-types`: one binary, one module per concern.

// Test helpers outside `#[test]` functions panic on purpose: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod authorize;
mod callback;
mod codes;
mod mini_program_and_notification;
mod one_time;
mod properties;
mod redaction;
mod token;

/// The fixture file, parsed.
pub fn fixtures() -> serde_json::Value {
    serde_json::from_str(include_str!("../fixtures/official.json")).unwrap()
}

/// The official mobile example's openid.
pub const OPENID: &str = "oyAaTjt-xXvP87pubE4eUOF-ttD4";
/// The official mobile example's template id.
pub const TEMPLATE: &str = "7YuTL__ilzyZB9DXcDt2mHx-CAS_E7KtsQkhIGVhhRM";
