//! The shared state store contract suite against DynamoDB (moto) with transactions off
//! (`DynamoStore::with_transactions(false)`: one conditional write per claim, separate history
//! writes), one table per case: both write strategies must give the same results.

use std::sync::Arc;

use gdfwd_core::contract::StoreSetup;
use gdfwd_core::store::StateStore;
use gdfwd_store_dynamodb::{DynamoStore, client, create_table};

async fn make_store(setup: StoreSetup) -> Arc<dyn StateStore> {
    let sdk = gdfwd_testkit_moto::sdk_config().await;
    let client = client(&sdk);
    create_table(&client, &setup.name)
        .await
        .expect("create the case's table at moto");
    Arc::new(
        DynamoStore::new(
            client,
            setup.name.clone(),
            setup.clock_arc(),
            setup.retention,
        )
        .with_transactions(false),
    )
}

gdfwd_core::contract_tests!(make_store);
