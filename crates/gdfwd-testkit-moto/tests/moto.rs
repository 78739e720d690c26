//! The harness against a real moto_server: the endpoint answers, the SDK config works, and the
//! proxy forwards, counts by operation (JSON and query protocols) and injects faults the SDK
//! classifies as AWS would.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use gdfwd_testkit_moto::{Fault, FaultProxy, endpoint, sdk_config, sdk_config_at, unique_name};

async fn create_table(client: &aws_sdk_dynamodb::Client, table: &str) {
    client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attribute definition"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .expect("key schema"),
        )
        .send()
        .await
        .expect("create table at moto");
}

async fn put(client: &aws_sdk_dynamodb::Client, table: &str, pk: &str) -> Result<(), String> {
    client
        .put_item()
        .table_name(table)
        .item("pk", AttributeValue::S(pk.into()))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("{:?}", aws_sdk_dynamodb::error::DisplayErrorContext(e)))
}

#[tokio::test]
async fn endpoint_is_stable_and_answers() {
    let a = endpoint();
    assert_eq!(a, endpoint());
    let resp = reqwest::get(format!("{a}/moto-api/"))
        .await
        .expect("GET /moto-api/");
    assert!(resp.status().is_success(), "{}", resp.status());
}

#[tokio::test]
async fn sdk_config_talks_to_moto() {
    let conf = sdk_config().await;
    let client = aws_sdk_dynamodb::Client::new(&conf);
    let table = unique_name("testkit");
    create_table(&client, &table).await;
    put(&client, &table, "a").await.expect("put item");
    let got = client
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("a".into()))
        .send()
        .await
        .expect("get item");
    assert!(got.item().is_some());
}

#[tokio::test]
async fn proxy_throttles_the_next_n_matching_requests_and_the_sdk_retries() {
    let proxy = FaultProxy::start_moto().await;
    let conf = sdk_config_at(&proxy.endpoint()).await;
    let client = aws_sdk_dynamodb::Client::new(&conf);
    let table = unique_name("testkit");
    create_table(&client, &table).await;

    proxy.fail_next(2, Fault::ProvisionedThroughputExceeded, Some("PutItem"));
    put(&client, &table, "a")
        .await
        .expect("put succeeds after two throttles");
    assert_eq!(proxy.count("PutItem"), 3);
    assert_eq!(proxy.faulted("PutItem"), 2);
    assert_eq!(proxy.count("CreateTable"), 1);
    assert_eq!(proxy.faulted("CreateTable"), 0);
    assert_eq!(proxy.counts().get("DynamoDB_20120810.PutItem"), Some(&3));
}

#[tokio::test]
async fn proxy_failing_forever_exhausts_the_sdk_retries() {
    let proxy = FaultProxy::start_moto().await;
    let conf = sdk_config_at(&proxy.endpoint()).await;
    let client = aws_sdk_dynamodb::Client::new(&conf);
    let table = unique_name("testkit");
    create_table(&client, &table).await;

    proxy.fail_always(Fault::Throttling, Some("PutItem"));
    let err = put(&client, &table, "a")
        .await
        .expect_err("throttled forever");
    assert!(err.contains("ThrottlingException"), "{err}");
    // Standard retry mode: 3 attempts by default.
    assert_eq!(proxy.count("PutItem"), 3);

    proxy.clear_faults();
    put(&client, &table, "a").await.expect("forwarded again");
    assert_eq!(proxy.count("PutItem"), 4);
}

#[tokio::test]
async fn proxy_answers_500s() {
    let proxy = FaultProxy::start_moto().await;
    let conf = sdk_config_at(&proxy.endpoint()).await;
    let client = aws_sdk_dynamodb::Client::new(&conf);
    let table = unique_name("testkit");
    create_table(&client, &table).await;
    proxy.fail_next(1, Fault::InternalError, None);
    put(&client, &table, "a").await.expect("one 500 is retried");
    assert_eq!(proxy.faulted("PutItem"), 1);
    assert_eq!(proxy.count("PutItem"), 2);
}

#[tokio::test]
async fn proxy_counts_query_protocol_actions() {
    let proxy = FaultProxy::start_moto().await;
    let conf = sdk_config_at(&proxy.endpoint()).await;
    let sts = aws_sdk_sts::Client::new(&conf);
    proxy.fail_next(1, Fault::Throttling, Some("GetCallerIdentity"));
    let who = sts
        .get_caller_identity()
        .send()
        .await
        .expect("GetCallerIdentity after one throttle");
    assert_eq!(who.account(), Some(gdfwd_testkit_moto::DEFAULT_ACCOUNT_ID));
    assert_eq!(proxy.count("sts.GetCallerIdentity"), 2);
    assert_eq!(proxy.faulted("GetCallerIdentity"), 1);
}
