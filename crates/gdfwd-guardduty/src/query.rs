//! What a backfill asks GuardDuty for, as `ListFindings` criteria, and where it resumes.
//!
//! The filter ([`FindingFilter`], the one every path applies) decides which findings are sent:
//! the pipeline applies all of it to every fetched finding and counts what it drops. Where
//! GuardDuty's criteria can say the same, they say it too ([`FindingQuery::criteria`]: accounts,
//! the severity floor, archived), so fewer findings are listed and fetched; never more narrowly
//! than the filter, so nothing it would keep goes unlisted.
//!
//! Checkpoints: one per (region, detector, query) in the store's `checkpoint` key/value namespace.
//! The query part of the key is a fingerprint of the filter (every setting, not only those
//! pushed into the criteria: a finding the filter dropped is settled, and a run with another
//! filter must list it again), so `--since 90d` run twice (a moving instant) still resumes. The
//! fingerprint of the settings older versions had (accounts, severity, archived) is spelled as
//! they spelled it, so their checkpoints still resume.
//! The value records the covered range `[from, through]`: every finding version of the query
//! with `from <= updatedAt < through` has been committed (or definitively failed). A run resumes
//! at `through` only when its own `--since` lies inside that range; an earlier `--since` starts
//! afresh from there, because the older part was never covered.
//!
//! Resuming lists `updatedAt >= through` (not `>`): findings sharing the checkpoint's `updatedAt`
//! may straddle a page boundary, so the tie is listed again and the store recognises the versions
//! already sent.

use gdfwd_model::{FilterInput, FindingFilter, Inclusion, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Store namespace of backfill checkpoints.
pub const CHECKPOINT_NAMESPACE: &str = "checkpoint";

/// GuardDuty's limit on the values of one `eq`/`neq` condition: longer lists are left to the
/// pipeline's filter alone.
const MAX_CRITERION_VALUES: usize = 50;

/// The time range and filter of a backfill or gaps run.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingQuery {
    /// Lower bound of `updatedAt` (inclusive).
    pub since: Timestamp,
    /// Upper bound of `updatedAt` (exclusive); `None`: up to now and whatever arrives meanwhile.
    pub until: Option<Timestamp>,
    /// Which findings are sent; the backfill engine gives it to the pipeline.
    pub filter: FindingFilter,
}

impl FindingQuery {
    /// From `since` on, with the default filter.
    pub fn new(since: Timestamp) -> Self {
        Self {
            since,
            until: None,
            filter: FindingFilter::default(),
        }
    }

    /// `findingCriteria` listing `from <= updatedAt < until`, with what the filter says that
    /// GuardDuty's criteria can say too.
    ///
    /// Time bounds use the `long` operators (`greaterThanOrEqual`, `lessThan`): GuardDuty's
    /// short `gte`/`lt` are 32-bit integers in the service model, too small for epoch ms. The
    /// severity bound goes in rounded down (the API compares integers); the pipeline's filter
    /// applies the exact bound to the fetched findings.
    pub fn criteria(&self, from: Timestamp) -> Value {
        let mut criterion = Map::new();
        let mut updated = Map::new();
        updated.insert("greaterThanOrEqual".to_owned(), Value::from(from.millis()));
        if let Some(u) = self.until {
            updated.insert("lessThan".to_owned(), Value::from(u.millis()));
        }
        criterion.insert("updatedAt".to_owned(), Value::Object(updated));
        let accounts = &self.filter.accounts;
        let mut account = Map::new();
        if !accounts.include.is_empty() && accounts.include.len() <= MAX_CRITERION_VALUES {
            account.insert("eq".to_owned(), json!(accounts.include));
        }
        if !accounts.exclude.is_empty() && accounts.exclude.len() <= MAX_CRITERION_VALUES {
            account.insert("neq".to_owned(), json!(accounts.exclude));
        }
        if !account.is_empty() {
            criterion.insert("accountId".to_owned(), Value::Object(account));
        }
        if let Some(s) = self.filter.min_severity {
            criterion.insert(
                "severity".to_owned(),
                json!({ "greaterThanOrEqual": s.floor() as i64 }),
            );
        }
        if self.filter.archived == Inclusion::Exclude {
            criterion.insert("service.archived".to_owned(), json!({ "eq": ["false"] }));
        }
        json!({ "criterion": criterion })
    }

    /// The filter, canonically, for checkpoint keys: the settings older versions had first, as
    /// they spelled them (so their checkpoints still resume), then every other setting that
    /// differs from the default ([`FindingFilter`]'s `Display`).
    pub fn fingerprint(&self) -> String {
        let f = &self.filter;
        let accounts = f.list(FilterInput::IncludeAccount);
        let mut rest = f.clone();
        rest.accounts.include.clear();
        rest.min_severity = None;
        rest.archived = FindingFilter::default().archived;
        let rest = rest.to_string();
        format!(
            "accounts={};min_severity={};archived={}{}{rest}",
            if accounts.is_empty() {
                "*".to_owned()
            } else {
                accounts.join(",")
            },
            f.min_severity
                .map_or_else(|| "*".to_owned(), |s| s.to_string()),
            f.archived == Inclusion::Include,
            if rest.is_empty() { "" } else { ";" },
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

    fn apply(q: &mut FindingQuery, input: FilterInput, value: &str) {
        q.filter.apply(input, value, input.name()).expect("valid");
    }

    #[test]
    fn criteria_use_long_time_operators_and_push_down_what_they_can() {
        let mut q = FindingQuery::new(Timestamp::from_millis(1_000));
        q.until = Some(Timestamp::from_millis(5_000));
        apply(&mut q, FilterInput::IncludeAccount, "111122223333");
        apply(&mut q, FilterInput::MinSeverity, "7.5");
        // Not expressible in the criteria: left to the pipeline's filter.
        apply(&mut q, FilterInput::IncludeType, "Recon:*");
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
        apply(&mut q, FilterInput::Archived, "include");
        apply(&mut q, FilterInput::ExcludeAccount, "444455556666");
        let c = q.criteria(Timestamp::from_millis(0));
        assert!(c["criterion"].get("service.archived").is_none());
        assert_eq!(
            c["criterion"]["accountId"],
            json!({"eq": ["111122223333"], "neq": ["444455556666"]})
        );
        // More accounts than one condition takes: not pushed down at all.
        let many: Vec<String> = (0..51).map(|i| format!("{:012}", i)).collect();
        apply(&mut q, FilterInput::IncludeAccount, &many.join(","));
        assert_eq!(
            q.criteria(Timestamp::from_millis(0))["criterion"]["accountId"],
            json!({"neq": ["444455556666"]})
        );
    }

    #[test]
    fn checkpoint_key_ignores_time_and_account_order_and_sees_every_filter() {
        let mut a = FindingQuery::new(Timestamp::from_millis(1));
        apply(
            &mut a,
            FilterInput::IncludeAccount,
            "222222222222,111111111111",
        );
        let mut b = FindingQuery::new(Timestamp::from_millis(99));
        b.until = Some(Timestamp::from_millis(100));
        apply(&mut b, FilterInput::IncludeAccount, "111111111111");
        apply(&mut b, FilterInput::IncludeAccount, "222222222222");
        assert_eq!(a.checkpoint_key("r", "d"), b.checkpoint_key("r", "d"));
        assert_ne!(a.checkpoint_key("r", "d"), a.checkpoint_key("r2", "d"));
        for (input, value) in [
            (FilterInput::MinSeverity, "4"),
            (FilterInput::ExcludeType, "Recon:*"),
            (FilterInput::Samples, "exclude"),
            (FilterInput::IncludeRegion, "eu-west-1"),
        ] {
            let mut c = b.clone();
            apply(&mut c, input, value);
            assert_ne!(
                a.checkpoint_key("r", "d"),
                c.checkpoint_key("r", "d"),
                "{input:?}"
            );
        }
    }

    /// Checkpoints saved before filters existed resume: the settings they had are spelled as
    /// they were.
    #[test]
    fn fingerprints_of_the_old_settings_are_unchanged() {
        let mut q = FindingQuery::new(Timestamp::from_millis(1));
        assert_eq!(q.fingerprint(), "accounts=*;min_severity=*;archived=false");
        apply(
            &mut q,
            FilterInput::IncludeAccount,
            "222222222222,111111111111",
        );
        apply(&mut q, FilterInput::MinSeverity, "5");
        apply(&mut q, FilterInput::Archived, "include");
        assert_eq!(
            q.fingerprint(),
            "accounts=111111111111,222222222222;min_severity=5;archived=true"
        );
        apply(&mut q, FilterInput::ExcludeType, "Recon:*");
        assert_eq!(
            q.fingerprint(),
            "accounts=111111111111,222222222222;min_severity=5;archived=true;exclude-type=Recon:*"
        );
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
