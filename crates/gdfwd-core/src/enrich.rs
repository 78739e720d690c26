//! Account enrichment port: account id → alias / name, cached, never blocking forwarding.
//!
//! [`AccountLookup`] is the raw, fallible lookup an adapter implements (STS + IAM alias, then
//! Organizations). [`AccountResolver`] is what the pipeline calls: infallible, cached, bounded in
//! time. The caching resolver lives here because its rules (TTL, negative caching, one lookup in
//! flight per account) are the same whichever lookup is behind it.

use async_trait::async_trait;
use gdfwd_model::Enrichment;

use crate::error::LookupError;

/// What a lookup found for one account.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct AccountInfo {
    /// The IAM account alias, when the account has one and we could read it.
    pub alias: Option<String>,
    /// The Organizations account name (fallback).
    pub org_name: Option<String>,
}

impl AccountInfo {
    /// `aws.account.name` is the alias when there is one, else the Organizations name.
    pub fn enrichment(&self) -> Enrichment {
        Enrichment {
            account_name: self.alias.clone().or_else(|| self.org_name.clone()),
            account_alias: self.alias.clone(),
        }
    }
}

#[async_trait]
pub trait AccountLookup: Send + Sync + std::fmt::Debug {
    async fn lookup(&self, account_id: &str) -> Result<AccountInfo, LookupError>;
}

/// Counters for metrics and summaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnrichStats {
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub failures: u64,
}

#[async_trait]
pub trait AccountResolver: Send + Sync + std::fmt::Debug {
    /// Never fails: an unknown account yields an empty [`Enrichment`].
    async fn resolve(&self, account_id: &str) -> Enrichment;
    fn stats(&self) -> EnrichStats;
}
