//! The GuardDuty API as the finding source ([`FindingPages`]) of core's backfill and gaps
//! engines: a region's partitions are its detectors, a page is one `ListFindings` page (sorted by
//! `updatedAt` ascending, 50 ids) fetched with `GetFindings`.
//!
//! The engine itself (checkpoints, settle margin, lookahead, stop) is `gdfwd_core::backfill`;
//! what GuardDuty makes of its query (criteria, checkpoint keys) is [`crate::query`].

use async_trait::async_trait;
use gdfwd_core::SourceError;
use gdfwd_core::source::{ApiStats, FindingPages, FindingQuery, SourceNames, SourcePage};
use gdfwd_model::Timestamp;

use crate::client::GuardDutyClient;
use crate::error::GuardDutyError;
use crate::query::GuardDutyQuery;

impl From<GuardDutyError> for SourceError {
    fn from(e: GuardDutyError) -> Self {
        SourceError::new(e)
    }
}

#[async_trait]
impl FindingPages for GuardDutyClient {
    fn names(&self) -> SourceNames {
        SourceNames {
            source: "GuardDuty",
            listing: "ListFindings",
            fetch: "GetFindings",
            partition: "detector",
        }
    }

    fn checkpoint_key(&self, query: &FindingQuery, region: &str, detector: &str) -> String {
        query.checkpoint_key(region, detector)
    }

    async fn partitions(&self, region: &str) -> Result<Vec<String>, SourceError> {
        Ok(self.list_detectors(region).await?)
    }

    async fn page(
        &self,
        region: &str,
        detector: &str,
        query: &FindingQuery,
        from: Timestamp,
        token: Option<&str>,
    ) -> Result<SourcePage, SourceError> {
        let criteria = query.criteria(from);
        let page = self
            .list_findings(region, detector, &criteria, true, token)
            .await?;
        let findings = if page.ids.is_empty() {
            Vec::new()
        } else {
            self.get_findings(region, detector, &page.ids).await?
        };
        Ok(SourcePage {
            listed: page.ids.len(),
            findings,
            next_token: page.next_token,
        })
    }

    fn stats(&self) -> ApiStats {
        GuardDutyClient::stats(self)
    }
}
