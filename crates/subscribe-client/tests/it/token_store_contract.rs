use std::sync::Arc;

use subscribe_client::InMemoryTokenStore;
use subscribe_client::test_util::token_store_contract;

#[tokio::test]
async fn in_memory_store_passes_the_contract() {
    token_store_contract(&InMemoryTokenStore::new()).await;
}

#[tokio::test]
async fn a_shared_in_memory_store_passes_the_contract() {
    token_store_contract(&Arc::new(InMemoryTokenStore::new())).await;
}
