//! Wiring: the enrichment settings and the builder the binaries call to get the pipeline's
//! [`AccountResolver`] (or `None` when enrichment is off).

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use gdfwd_core::Clock;
use gdfwd_core::account_fields::AccountFields;
use gdfwd_core::enrich::{AccountResolver, CacheConfig, CachingResolver};
use gdfwd_core::store::KvStore;
#[cfg(doc)]
use gdfwd_core::store::StateStore;

use crate::lookup::{AwsAccountLookup, DEFAULT_ROLE_NAME, LookupOptions};

/// Enrichment settings, whatever they came from (flags, environment, tests). `Debug` redacts the
/// external id.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrichConfig {
    pub enabled: bool,
    pub role_name: String,
    pub external_id: Option<String>,
    /// Time budget of one lookup (and of each cache read/write).
    pub budget: Duration,
    /// Lifetime of a resolved name in the caches.
    pub ttl: Duration,
    /// Lifetime of a failed lookup in the caches.
    pub negative_ttl: Duration,
    /// ARN partition; `None` derives it from the SDK region.
    pub partition: Option<String>,
    /// Account context fields set on every event (`--account-field`, `ACCOUNT_FIELDS`).
    pub account_fields: AccountFields,
}

impl std::fmt::Debug for EnrichConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrichConfig")
            .field("enabled", &self.enabled)
            .field("role_name", &self.role_name)
            .field("external_id", &crate::lookup::redacted(&self.external_id))
            .field("budget", &self.budget)
            .field("ttl", &self.ttl)
            .field("negative_ttl", &self.negative_ttl)
            .field("partition", &self.partition)
            .field("account_fields", &self.account_fields.to_string())
            .finish()
    }
}

impl Default for EnrichConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            role_name: DEFAULT_ROLE_NAME.to_owned(),
            external_id: None,
            budget: CacheConfig::DEFAULT_BUDGET,
            ttl: CacheConfig::DEFAULT_TTL,
            negative_ttl: CacheConfig::DEFAULT_NEGATIVE_TTL,
            partition: None,
            account_fields: AccountFields::default(),
        }
    }
}

impl EnrichConfig {
    pub fn cache_config(&self) -> CacheConfig {
        CacheConfig {
            ttl: self.ttl,
            negative_ttl: self.negative_ttl,
            budget: self.budget,
        }
    }

    pub fn lookup_options(&self) -> LookupOptions {
        LookupOptions {
            role_name: self.role_name.clone(),
            external_id: self.external_id.clone(),
            partition: self.partition.clone(),
            own_account_id: None,
            max_attempts: None,
            context: self.account_fields.needs(),
        }
    }

    /// Account fields are resolved by the enrichment: configuring them with enrichment off is a
    /// contradiction the user should hear about, not a silent no-op.
    pub fn check(&self) -> Result<(), crate::EnrichError> {
        if !self.enabled && !self.account_fields.is_empty() {
            return Err(crate::EnrichError::Config(format!(
                "account fields ({}) are set by account enrichment, which is off: turn it on \
                 (drop --no-enrich / ENRICH=false) or drop the account fields",
                self.account_fields
            )));
        }
        Ok(())
    }
}

/// The raw lookup for `gdfwd accounts` ([`crate::resolve_all`]).
pub fn build_lookup(config: &EnrichConfig, sdk_config: &SdkConfig) -> AwsAccountLookup {
    AwsAccountLookup::new(sdk_config, config.lookup_options())
}

/// The pipeline's resolver: `None` when enrichment is off. `cache`: the store's key/value space
/// for names across runs and instances ([`StateStore::kv`]). Asks for the caller's account id once
/// here; when that fails it only warns (enrichment must not stop the forwarder) and the lookup
/// asks again on first use.
pub async fn build_resolver(
    config: &EnrichConfig,
    sdk_config: &SdkConfig,
    cache: Option<Arc<dyn KvStore>>,
    clock: Arc<dyn Clock>,
) -> Option<Arc<dyn AccountResolver>> {
    if !config.enabled {
        return None;
    }
    let lookup = build_lookup(config, sdk_config);
    if let Err(e) = tokio::time::timeout(config.budget, lookup.own_account_id())
        .await
        .unwrap_or_else(|_| {
            Err(crate::EnrichError::Config(format!(
                "sts:GetCallerIdentity exceeded {:?}",
                config.budget
            )))
        })
    {
        tracing::warn!(error = %e, "cannot tell which account the forwarder runs in yet; will retry on first lookup");
    }
    Some(Arc::new(
        CachingResolver::new(Arc::new(lookup), cache, clock, config.cache_config())
            .with_account_fields(config.account_fields.clone()),
    ))
}
