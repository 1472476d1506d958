//! The client's reusable contract suites, unchanged.

use std::sync::Arc;

use subscribe_client::test_util::{grant_ledger_contract, shared_token_store_contract, used_states_contract};
use subscribe_redis::{RedisGrantLedger, RedisTokenStore, RedisUsedStates};

use crate::redis;

#[tokio::test]
async fn token_store_passes_the_client_contract() {
    shared_token_store_contract(Arc::new(RedisTokenStore::new(redis("store").await))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_ledger_passes_the_client_contract() {
    grant_ledger_contract(Arc::new(RedisGrantLedger::new(redis("ledger").await))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_states_pass_the_client_contract() {
    used_states_contract(Arc::new(RedisUsedStates::new(redis("states").await))).await;
}
