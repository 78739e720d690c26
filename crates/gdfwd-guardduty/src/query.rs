//! What a backfill asks GuardDuty for, as `ListFindings` criteria, and under which key it
//! resumes: GuardDuty's reading of the engine's [`FindingQuery`] ([`GuardDutyQuery`]).
//!
//! The filter ([`FindingFilter`](gdfwd_model::FindingFilter), the one every path applies)
//! decides which findings are sent: the pipeline applies all of it to every fetched finding and
//! counts what it drops. Where GuardDuty's criteria can say the same, they say it too
//! ([`GuardDutyQuery::criteria`]: accounts, the severity floor, archived), so fewer findings are
//! listed and fetched; never more narrowly than the filter, so nothing it would keep goes
//! unlisted.
//!
//! Checkpoints (their rules: `gdfwd_core::backfill::checkpoint`): one per (region, detector,
//! query). The query part of the key is a uuid of [`FindingQuery::fingerprint`] (every filter
//! setting, not the time range), so `--since 90d` run twice (a moving instant) still resumes; the
//! keys are spelled as before the engine moved to core, so stored checkpoints still resume.

pub use gdfwd_core::backfill::{CHECKPOINT_NAMESPACE, Checkpoint};
pub use gdfwd_core::source::FindingQuery;
use gdfwd_model::{Inclusion, Timestamp};
use serde_json::{Map, Value, json};

/// GuardDuty's limit on the values of one `eq`/`neq` condition: longer lists are left to the
/// pipeline's filter alone.
const MAX_CRITERION_VALUES: usize = 50;

/// GuardDuty's reading of a [`FindingQuery`]: the `ListFindings` criteria and the checkpoint key.
pub trait GuardDutyQuery {
    /// `findingCriteria` listing `from <= updatedAt < until`, with what the filter says that
    /// GuardDuty's criteria can say too.
    ///
    /// Time bounds use the `long` operators (`greaterThanOrEqual`, `lessThan`): GuardDuty's
    /// short `gte`/`lt` are 32-bit integers in the service model, too small for epoch ms. The
    /// severity bound goes in rounded down (the API compares integers); the pipeline's filter
    /// applies the exact bound to the fetched findings.
    fn criteria(&self, from: Timestamp) -> Value;

    /// The checkpoint key of this query in `region` for `detector`.
    fn checkpoint_key(&self, region: &str, detector: &str) -> String;
}

impl GuardDutyQuery for FindingQuery {
    fn criteria(&self, from: Timestamp) -> Value {
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

    fn checkpoint_key(&self, region: &str, detector: &str) -> String {
        const NS: uuid::Uuid = uuid::Uuid::from_u128(0x6764_6677_642d_6266_696c_6c2d_7175_6572);
        let q = uuid::Uuid::new_v5(&NS, self.fingerprint().as_bytes());
        format!("backfill/{region}/{detector}/{}", q.simple())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gdfwd_model::FilterInput;

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
}
