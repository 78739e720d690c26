//! The table's definition, as data and as the `CreateTable` call `gdfwd store init` makes, and
//! the `DescribeTable` check of an existing table ([`DynamoStore::check`]).
//!
//! The definition is exposed as a serialisable value shaped like the CloudFormation
//! `AWS::DynamoDB::Table` properties (`KeySchema`, `AttributeDefinitions`,
//! `GlobalSecondaryIndexes`, `TimeToLiveSpecification`, `BillingMode`), so a test can compare the
//! template's table with what `create_table` creates: the two must never drift apart.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, GlobalSecondaryIndexDescription,
    KeySchemaElement, KeyType, Projection, ProjectionType, ScalarAttributeType,
    TimeToLiveSpecification, TimeToLiveStatus,
};
use serde::Serialize;

use crate::DynamoStore;
use crate::error::DynamoStoreError;

/// Partition key (string): `F#<finding id>` for findings, `KV#<namespace>` for the key/value space.
pub const PK: &str = "pk";
/// Sort key (string): `R` for a finding's record, `H#...` for its history, the key for KV items.
pub const SK: &str = "sk";
/// The audit index: per account, ordered by last sighting.
pub const GSI1: &str = "gsi1";
/// GSI partition key (string): `A#<account id>`; only finding records carry it.
pub const GSI1_PK: &str = "gsi1pk";
/// GSI sort key (string): `<last_seen epoch ms, 15 digits>#<finding id>`.
pub const GSI1_SK: &str = "gsi1sk";
/// DynamoDB TTL attribute: epoch SECONDS (number), rounded up from the exact expiry.
pub const TTL_ATTRIBUTE: &str = "expires_at";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyElement {
    pub attribute_name: String,
    /// `HASH` or `RANGE`.
    pub key_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttributeDef {
    pub attribute_name: String,
    /// Always `S` here.
    pub attribute_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProjectionDef {
    pub projection_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct IndexDef {
    pub index_name: String,
    pub key_schema: Vec<KeyElement>,
    pub projection: ProjectionDef,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TtlDef {
    pub attribute_name: String,
    pub enabled: bool,
}

/// The table, in CloudFormation's property shape (without `TableName`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TableDefinition {
    /// `PAY_PER_REQUEST`.
    pub billing_mode: String,
    pub key_schema: Vec<KeyElement>,
    /// Sorted by name (DynamoDB's describe output is not ordered; compare sorted).
    pub attribute_definitions: Vec<AttributeDef>,
    pub global_secondary_indexes: Vec<IndexDef>,
    pub time_to_live_specification: TtlDef,
}

/// A live key schema in [`KeyElement`]'s shape.
fn key_schema(ks: &[KeySchemaElement]) -> Vec<KeyElement> {
    ks.iter()
        .map(|k| key(k.attribute_name(), k.key_type().as_str()))
        .collect()
}

fn key(name: &str, kind: &str) -> KeyElement {
    KeyElement {
        attribute_name: name.to_owned(),
        key_type: kind.to_owned(),
    }
}

fn attr(name: &str) -> AttributeDef {
    AttributeDef {
        attribute_name: name.to_owned(),
        attribute_type: "S".to_owned(),
    }
}

/// The definition every gdfwd table has.
pub fn table_definition() -> TableDefinition {
    let mut attribute_definitions = vec![attr(PK), attr(SK), attr(GSI1_PK), attr(GSI1_SK)];
    attribute_definitions.sort_by(|a, b| a.attribute_name.cmp(&b.attribute_name));
    TableDefinition {
        billing_mode: "PAY_PER_REQUEST".to_owned(),
        key_schema: vec![key(PK, "HASH"), key(SK, "RANGE")],
        attribute_definitions,
        global_secondary_indexes: vec![IndexDef {
            index_name: GSI1.to_owned(),
            key_schema: vec![key(GSI1_PK, "HASH"), key(GSI1_SK, "RANGE")],
            projection: ProjectionDef {
                projection_type: "ALL".to_owned(),
            },
        }],
        time_to_live_specification: TtlDef {
            attribute_name: TTL_ATTRIBUTE.to_owned(),
            enabled: true,
        },
    }
}

impl DynamoStore {
    /// Checks that the table exists and has this crate's key schema (one `DescribeTable`). The
    /// Lambda's readiness check calls it before the first event, so a wrong `DEDUP_TABLE_NAME` or
    /// a missing permission fails with one clear message instead of inside every batch.
    pub async fn check(&self) -> Result<(), DynamoStoreError> {
        let out = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| self.call_err("describe_table", e))?;
        let got = key_schema(out.table().map_or(&[], |t| t.key_schema()));
        let want = table_definition().key_schema;
        if got == want {
            Ok(())
        } else {
            Err(DynamoStoreError::Mismatch {
                table: self.table.clone(),
                message: format!("key schema is {got:?}, expected {want:?}"),
            })
        }
    }
}

/// Whether `create_table` created the table or found it already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    AlreadyExisted,
}

/// DynamoDB's table-name rule, checked before any call so the error is ours and clear.
pub fn validate_table_name(table: &str) -> Result<(), DynamoStoreError> {
    let ok = (3..=255).contains(&table.len())
        && table
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(DynamoStoreError::TableName(table.to_owned()))
    }
}

fn call_err(table: &str, operation: &'static str, e: impl std::fmt::Debug) -> DynamoStoreError {
    DynamoStoreError::Call {
        table: table.to_owned(),
        operation,
        message: format!("{e:?}"),
    }
}

fn build_err(table: &str, e: impl std::fmt::Display) -> DynamoStoreError {
    DynamoStoreError::Call {
        table: table.to_owned(),
        operation: "create_table",
        message: format!("building the request: {e}"),
    }
}

/// Creates the table as [`table_definition`] describes it (pay per request, GSI, TTL on), waits
/// until it is ACTIVE, and enables TTL. Idempotent: an existing table is left as it is, TTL is
/// enabled on it when off.
pub async fn create_table(client: &Client, table: &str) -> Result<CreateOutcome, DynamoStoreError> {
    validate_table_name(table)?;
    let outcome = match create_request(client, table)?.send().await {
        Ok(_) => CreateOutcome::Created,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) =>
        {
            CreateOutcome::AlreadyExisted
        }
        Err(e) => return Err(call_err(table, "create_table", e)),
    };
    wait_active(client, table).await?;
    enable_ttl(client, table).await?;
    Ok(outcome)
}

/// The `CreateTable` request for [`table_definition`].
fn create_request(
    client: &Client,
    table: &str,
) -> Result<CreateTableFluentBuilder, DynamoStoreError> {
    let def = table_definition();
    let mut req = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest);
    for a in &def.attribute_definitions {
        req = req.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(&a.attribute_name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| build_err(table, e))?,
        );
    }
    for k in &def.key_schema {
        req = req.key_schema(key_element(table, k)?);
    }
    for g in &def.global_secondary_indexes {
        let mut gb = GlobalSecondaryIndex::builder()
            .index_name(&g.index_name)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            );
        for k in &g.key_schema {
            gb = gb.key_schema(key_element(table, k)?);
        }
        req = req.global_secondary_indexes(gb.build().map_err(|e| build_err(table, e))?);
    }
    Ok(req)
}

/// One key schema element of the definition, as the SDK's type.
fn key_element(table: &str, k: &KeyElement) -> Result<KeySchemaElement, DynamoStoreError> {
    KeySchemaElement::builder()
        .attribute_name(&k.attribute_name)
        .key_type(if k.key_type == "HASH" {
            KeyType::Hash
        } else {
            KeyType::Range
        })
        .build()
        .map_err(|e| build_err(table, e))
}

/// Turns TTL on (on [`TTL_ATTRIBUTE`]) unless it is on or being turned on.
async fn enable_ttl(client: &Client, table: &str) -> Result<(), DynamoStoreError> {
    let ttl = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| call_err(table, "describe_time_to_live", e))?;
    let status = ttl
        .time_to_live_description()
        .and_then(|d| d.time_to_live_status().cloned());
    let on = matches!(
        status,
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
    );
    if !on {
        client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(TTL_ATTRIBUTE)
                    .enabled(true)
                    .build()
                    .map_err(|e| build_err(table, e))?,
            )
            .send()
            .await
            .map_err(|e| call_err(table, "update_time_to_live", e))?;
    }
    Ok(())
}

/// Polls `DescribeTable` until the table is ACTIVE (a new table takes seconds to minutes).
async fn wait_active(client: &Client, table: &str) -> Result<(), DynamoStoreError> {
    use aws_sdk_dynamodb::types::TableStatus;
    // 10 minutes at most: a GSI on a new table normally takes well under that.
    for _ in 0..600 {
        let d = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| call_err(table, "describe_table", e))?;
        if d.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    Err(DynamoStoreError::Call {
        table: table.to_owned(),
        operation: "create_table",
        message: "the table did not become ACTIVE within 10 minutes".to_owned(),
    })
}

/// Reads the live table's definition back in [`TableDefinition`]'s shape (for `store init`
/// checks and tests).
pub async fn describe_definition(
    client: &Client,
    table: &str,
) -> Result<TableDefinition, DynamoStoreError> {
    let d = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| call_err(table, "describe_table", e))?;
    let t = d.table().ok_or_else(|| DynamoStoreError::Mismatch {
        table: table.to_owned(),
        message: "DescribeTable returned no table".to_owned(),
    })?;
    let mut attribute_definitions: Vec<AttributeDef> = t
        .attribute_definitions()
        .iter()
        .map(|a| AttributeDef {
            attribute_name: a.attribute_name().to_owned(),
            attribute_type: a.attribute_type().as_str().to_owned(),
        })
        .collect();
    attribute_definitions.sort_by(|a, b| a.attribute_name.cmp(&b.attribute_name));
    let global_secondary_indexes = t.global_secondary_indexes().iter().map(index_def).collect();
    let billing_mode = t
        .billing_mode_summary()
        .and_then(|b| b.billing_mode())
        .map(|b| b.as_str().to_owned())
        .unwrap_or_else(|| "PROVISIONED".to_owned());
    Ok(TableDefinition {
        billing_mode,
        key_schema: key_schema(t.key_schema()),
        attribute_definitions,
        global_secondary_indexes,
        time_to_live_specification: ttl_def(client, table).await?,
    })
}

/// A live index's definition, in [`IndexDef`]'s shape.
fn index_def(g: &GlobalSecondaryIndexDescription) -> IndexDef {
    IndexDef {
        index_name: g.index_name().unwrap_or_default().to_owned(),
        key_schema: key_schema(g.key_schema()),
        projection: ProjectionDef {
            projection_type: g
                .projection()
                .and_then(|p| p.projection_type())
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
        },
    }
}

/// The live table's TTL setting (`DescribeTimeToLive`), in [`TtlDef`]'s shape.
async fn ttl_def(client: &Client, table: &str) -> Result<TtlDef, DynamoStoreError> {
    let ttl = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| call_err(table, "describe_time_to_live", e))?;
    let ttl = ttl.time_to_live_description();
    Ok(TtlDef {
        attribute_name: ttl
            .and_then(|d| d.attribute_name())
            .unwrap_or_default()
            .to_owned(),
        enabled: matches!(
            ttl.and_then(|d| d.time_to_live_status()),
            Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
        ),
    })
}
