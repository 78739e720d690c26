//! What a backfill asks GuardDuty for, as `ListFindings` criteria, and where it resumes.
//!
//! Checkpoints: one per (region, detector, query) in the store's `checkpoint` key/value namespace.
//! The query part of the key is a fingerprint of the filters *other than the time range*
//! (accounts, severity, archived), so `--since 90d` run twice (a moving instant) still resumes.
//! The value records the covered range `[from, through]`: every finding version of the query
//! with `from <= updatedAt < through` has been committed (or definitively failed). A run resumes
//! at `through` only when its own `--since` lies inside that range; an earlier `--since` starts
//! afresh from there, because the older part was never covered.
//!
//! Resuming lists `updatedAt >= through` (not `>`): findings sharing the checkpoint's `updatedAt`
//! may straddle a page boundary, so the tie is listed again and the store recognises the versions
//! already sent.

use gdfwd_model::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Store namespace of backfill checkpoints.
pub const CHECKPOINT_NAMESPACE: &str = "checkpoint";

/// The filters of a backfill or gaps run.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingQuery {
    /// Lower bound of `updatedAt` (inclusive).
    pub since: Timestamp,
    /// Upper bound of `updatedAt` (exclusive); `None`: up to now and whatever arrives meanwhile.
    pub until: Option<Timestamp>,
    /// Only these member accounts; empty: all.
    pub accounts: Vec<String>,
    /// Only findings with `severity >= min_severity`.
    pub min_severity: Option<f64>,
    /// Also archived findings (default: only active ones).
    pub include_archived: bool,
}

impl FindingQuery {
    pub fn new(since: Timestamp) -> Self {
        Self {
            since,
            until: None,
            accounts: Vec::new(),
            min_severity: None,
            include_archived: false,
        }
    }

    /// `findingCriteria` listing `from <= updatedAt < until` with the other filters.
    ///
    /// Time bounds use the `long` operators (`greaterThanOrEqual`, `lessThan`): GuardDuty's
    /// short `gte`/`lt` are 32-bit integers in the service model, too small for epoch ms. The
    /// severity bound goes in rounded down (the API compares integers); [`Self::admits`] applies
    /// the exact bound to the fetched findings.
    pub fn criteria(&self, from: Timestamp) -> Value {
        let mut criterion = Map::new();
        let mut updated = Map::new();
        updated.insert("greaterThanOrEqual".to_owned(), Value::from(from.millis()));
        if let Some(u) = self.until {
            updated.insert("lessThan".to_owned(), Value::from(u.millis()));
        }
        criterion.insert("updatedAt".to_owned(), Value::Object(updated));
        if !self.accounts.is_empty() {
            criterion.insert("accountId".to_owned(), json!({ "eq": self.accounts }));
        }
        if let Some(s) = self.min_severity {
            criterion.insert(
                "severity".to_owned(),
                json!({ "greaterThanOrEqual": s.floor() as i64 }),
            );
        }
        if !self.include_archived {
            criterion.insert("service.archived".to_owned(), json!({ "eq": ["false"] }));
        }
        json!({ "criterion": criterion })
    }

    /// Whether a fetched finding passes the filters the API could only approximate.
    pub fn admits(&self, f: &gdfwd_model::Finding) -> bool {
        self.min_severity
            .is_none_or(|min| f.severity().is_some_and(|s| s >= min))
            && (self.include_archived || !f.archived())
            && (self.accounts.is_empty() || self.accounts.contains(&f.account_id))
    }

    /// The filters other than time, canonically (sorted accounts), for checkpoint keys.
    pub fn fingerprint(&self) -> String {
        let mut accounts = self.accounts.clone();
        accounts.sort();
        accounts.dedup();
        format!(
            "accounts={};min_severity={};archived={}",
            if accounts.is_empty() {
                "*".to_owned()
            } else {
                accounts.join(",")
            },
            self.min_severity
                .map_or_else(|| "*".to_owned(), |s| s.to_string()),
            self.include_archived
        )
    }

    /// The checkpoint key of this query in `region` for `detector`.
    pub fn checkpoint_key(&self, region: &str, detector: &str) -> String {
        const NS: uuid::Uuid = uuid::Uuid::from_u128(0x6764_6677_642d_6266_696c_6c2d_7175_6572);
        let q = uuid::Uuid::new_v5(&NS, self.fingerprint().as_bytes());
        format!("backfill/{region}/{detector}/{}", q.simple())
    }
}

/// A stored checkpoint: `[from, through)` is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub from: Timestamp,
    pub through: Timestamp,
}

impl Checkpoint {
    /// Where a run with lower bound `since` starts, and the checkpoint it then extends.
    pub fn resume_from(stored: Option<Checkpoint>, since: Timestamp) -> Checkpoint {
        match stored {
            Some(cp) if cp.from <= since && since <= cp.through => cp,
            _ => Checkpoint {
                from: since,
                through: since,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criteria_use_long_time_operators_and_filters() {
        let mut q = FindingQuery::new(Timestamp::from_millis(1_000));
        q.until = Some(Timestamp::from_millis(5_000));
        q.accounts = vec!["111122223333".to_owned()];
        q.min_severity = Some(7.5);
        let c = q.criteria(Timestamp::from_millis(2_000));
        assert_eq!(
            c,
            json!({"criterion": {
                "updatedAt": {"greaterThanOrEqual": 2000, "lessThan": 5000},
                "accountId": {"eq": ["111122223333"]},
                "severity": {"greaterThanOrEqual": 7},
                "service.archived": {"eq": ["false"]},
            }})
        );
        q.include_archived = true;
        assert!(
            q.criteria(Timestamp::from_millis(0))["criterion"]
                .get("service.archived")
                .is_none()
        );
    }

    #[test]
    fn checkpoint_key_ignores_time_and_account_order() {
        let mut a = FindingQuery::new(Timestamp::from_millis(1));
        a.accounts = vec!["2".to_owned(), "1".to_owned()];
        let mut b = FindingQuery::new(Timestamp::from_millis(99));
        b.until = Some(Timestamp::from_millis(100));
        b.accounts = vec!["1".to_owned(), "2".to_owned()];
        assert_eq!(a.checkpoint_key("r", "d"), b.checkpoint_key("r", "d"));
        b.min_severity = Some(4.0);
        assert_ne!(a.checkpoint_key("r", "d"), b.checkpoint_key("r", "d"));
        assert_ne!(a.checkpoint_key("r", "d"), a.checkpoint_key("r2", "d"));
    }

    #[test]
    fn resume_only_inside_the_covered_range() {
        let t = Timestamp::from_millis;
        let cp = Some(Checkpoint {
            from: t(100),
            through: t(500),
        });
        assert_eq!(Checkpoint::resume_from(cp, t(200)).through, t(500));
        assert_eq!(Checkpoint::resume_from(cp, t(100)).through, t(500));
        // Earlier since: that part was never covered.
        assert_eq!(
            Checkpoint::resume_from(cp, t(50)),
            Checkpoint {
                from: t(50),
                through: t(50)
            }
        );
        // Later than the checkpoint: start at since.
        assert_eq!(Checkpoint::resume_from(cp, t(900)).through, t(900));
        assert_eq!(Checkpoint::resume_from(None, t(7)).from, t(7));
    }
}
