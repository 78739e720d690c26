//! `--store`: which dedup state store to use, and opening it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use gdfwd_core::Clock;
use gdfwd_core::store::StateStore;

/// `sqlite:PATH`, `sqlite` (the default path) or `dynamodb:TABLE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    Sqlite(Option<PathBuf>),
    DynamoDb(String),
}

impl FromStr for StoreSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
        match kind {
            "sqlite" if rest.is_empty() => Ok(Self::Sqlite(None)),
            "sqlite" => Ok(Self::Sqlite(Some(PathBuf::from(rest)))),
            "dynamodb" if !rest.is_empty() => Ok(Self::DynamoDb(rest.to_owned())),
            "dynamodb" => Err(format!(
                "invalid store {s:?}: dynamodb needs a table name, e.g. dynamodb:gdfwd-dedup"
            )),
            _ => Err(format!(
                "invalid store {s:?}: expected sqlite, sqlite:PATH or dynamodb:TABLE"
            )),
        }
    }
}

impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(None) => f.write_str("sqlite"),
            Self::Sqlite(Some(p)) => write!(f, "sqlite:{}", p.display()),
            Self::DynamoDb(t) => write!(f, "dynamodb:{t}"),
        }
    }
}

/// Store options shared by every subcommand that touches the store.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Dedup state store: `sqlite` (default path $XDG_STATE_HOME/gdfwd/state.db),
    /// `sqlite:PATH`, or `dynamodb:TABLE` (shares dedup with the Lambda).
    #[arg(
        long,
        env = "GDFWD_STORE",
        default_value = "sqlite",
        value_name = "STORE"
    )]
    pub store: StoreSpec,

    /// Days a finding's dedup record is kept after its last update (GuardDuty keeps findings 90
    /// days); 1 to 3650.
    #[arg(
        long,
        env = "DEDUP_TTL_DAYS",
        default_value_t = u64::from(gdfwd_core::limits::RETENTION_DAYS.default),
        value_name = "DAYS",
        value_parser = clap::value_parser!(u64).range(gdfwd_core::limits::RETENTION_DAYS.clap())
    )]
    pub retention_days: u64,
}

impl StoreArgs {
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_days.saturating_mul(86_400))
    }

    /// Opens the store, creating it when missing (forward, backfill).
    pub async fn open(&self, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<dyn StateStore>> {
        self.open_with(clock, false).await
    }

    /// Opens a store that must already exist (audit queries): a mistyped path or table is an
    /// error naming it, not an empty answer from a store created on the spot.
    pub async fn open_existing(
        &self,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Arc<dyn StateStore>> {
        self.open_with(clock, true).await
    }

    async fn open_with(
        &self,
        clock: Arc<dyn Clock>,
        must_exist: bool,
    ) -> anyhow::Result<Arc<dyn StateStore>> {
        match &self.store {
            StoreSpec::Sqlite(path) => {
                let path = match path {
                    Some(p) => p.clone(),
                    None => gdfwd_store_sqlite::default_path()?,
                };
                if must_exist && !path.is_file() {
                    anyhow::bail!(
                        "no state database at {}: nothing was recorded there (check --store / GDFWD_STORE; `gdfwd forward` or `gdfwd store init` creates it)",
                        path.display()
                    );
                }
                let store = gdfwd_store_sqlite::SqliteStore::open(&path, clock, self.retention())?;
                Ok(Arc::new(store))
            }
            StoreSpec::DynamoDb(table) => {
                gdfwd_store_dynamodb::validate_table_name(table)?;
                let client = gdfwd_store_dynamodb::client(crate::aws::sdk_config().await);
                let store = gdfwd_store_dynamodb::DynamoStore::new(
                    client,
                    table.clone(),
                    clock,
                    self.retention(),
                );
                if must_exist {
                    store.check().await?;
                }
                Ok(Arc::new(store))
            }
        }
    }

    /// `gdfwd store init`: creates the SQLite file and schema, or the DynamoDB table (with the
    /// same definition the CloudFormation template uses).
    pub async fn init(&self) -> anyhow::Result<String> {
        match &self.store {
            StoreSpec::Sqlite(_) => {
                let store = self.open(Arc::new(gdfwd_core::SystemClock)).await?;
                Ok(format!("{} is ready", store.describe()))
            }
            StoreSpec::DynamoDb(table) => {
                gdfwd_store_dynamodb::validate_table_name(table)?;
                let client = gdfwd_store_dynamodb::client(crate::aws::sdk_config().await);
                match gdfwd_store_dynamodb::create_table(&client, table).await? {
                    gdfwd_store_dynamodb::CreateOutcome::Created => {
                        Ok(format!("created DynamoDB table {table}"))
                    }
                    gdfwd_store_dynamodb::CreateOutcome::AlreadyExisted => {
                        Ok(format!("DynamoDB table {table} already exists"))
                    }
                }
            }
        }
    }
}
