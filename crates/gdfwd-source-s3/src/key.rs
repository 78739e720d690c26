//! The layout of GuardDuty's findings export, as pure functions: where an `s3://` URL points,
//! what an object key says (account, region, day), which prefixes to list for a set of accounts
//! and regions, and which objects and findings a `--since/--until` window keeps.
//!
//! GuardDuty writes `[PREFIX/]AWSLogs/<account>/GuardDuty/<region>/YYYY/MM/DD/<name>.jsonl.gz`.
//! Everything about an object that decides whether to read it is in its key, so selection needs
//! no request beyond the listing, and is kept apart from the SDK to be tested on its own.

use chrono::{Duration, NaiveDate};
use gdfwd_model::Timestamp;

/// An `s3://BUCKET/PREFIX` location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub bucket: String,
    /// The key prefix to list under (may be empty).
    pub prefix: String,
}

impl Location {
    /// Parses `s3://BUCKET[/PREFIX]`; `None` when `url` is not an `s3://` URL with a bucket.
    pub fn parse(url: &str) -> Option<Self> {
        let rest = url.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = !bucket.is_empty()
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
        valid.then(|| Self {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// `s3://bucket/key` of an object in this location's bucket.
    pub fn url_of(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// What an export object's key says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportKey {
    pub account: String,
    pub region: String,
    /// The day GuardDuty wrote the object (UTC).
    pub date: NaiveDate,
}

/// Parses an export object key; `None` for anything else (a GuardDuty test object, a folder
/// marker, an object of another service under `AWSLogs/`).
pub fn parse_key(key: &str) -> Option<ExportKey> {
    let parts: Vec<&str> = key.split('/').collect();
    // AWSLogs, account, GuardDuty, region, YYYY, MM, DD, name: the last eight segments.
    let tail = parts.get(parts.len().checked_sub(8)?..)?;
    let [logs, account, service, region, y, m, d, name] = tail else {
        return None;
    };
    let is_account = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
    let is_region = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if *logs != "AWSLogs" || *service != "GuardDuty" || !is_account || !is_region {
        return None;
    }
    if name.is_empty()
        || [y, m, d]
            .iter()
            .any(|s| !s.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)?;
    Some(ExportKey {
        account: (*account).to_owned(),
        region: (*region).to_owned(),
        date,
    })
}

/// The prefixes to list under `prefix` for `accounts` and `regions` (empty: all), so objects of
/// other accounts and regions are not even listed. Narrowing needs to know where `AWSLogs/` is:
/// `prefix` must be empty, end with `/` (the export's own prefix) or end at `AWSLogs`; any other
/// prefix is listed as given (keys are still selected one by one, see [`Selection`]).
pub fn listing_prefixes(prefix: &str, accounts: &[String], regions: &[String]) -> Vec<String> {
    let has_logs = prefix.split('/').any(|s| s == "AWSLogs");
    let root = if prefix.trim_end_matches('/').rsplit('/').next() == Some("AWSLogs") {
        Some(format!("{}/", prefix.trim_end_matches('/')))
    } else if (prefix.is_empty() || prefix.ends_with('/')) && !has_logs {
        Some(format!("{prefix}AWSLogs/"))
    } else {
        None
    };
    let Some(root) = root.filter(|_| !accounts.is_empty()) else {
        return vec![prefix.to_owned()];
    };
    let mut out = Vec::new();
    for account in accounts {
        if regions.is_empty() {
            out.push(format!("{root}{account}/GuardDuty/"));
        }
        for region in regions {
            out.push(format!("{root}{account}/GuardDuty/{region}/"));
        }
    }
    out
}

/// Why an object is read or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Read(ExportKey),
    /// Not an export object (see [`parse_key`]).
    NotExport,
    /// An account or region not asked for.
    OtherScope,
    /// Written on a day outside the window.
    OutsideWindow,
}

/// Which objects and findings to read: accounts, regions (empty: all) and an `updatedAt` window.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub accounts: Vec<String>,
    pub regions: Vec<String>,
    /// Oldest `updatedAt` to read (inclusive).
    pub since: Option<Timestamp>,
    /// Newest `updatedAt` to read (exclusive).
    pub until: Option<Timestamp>,
}

/// Days after `until` whose objects are still read: GuardDuty exports a finding within its
/// export frequency (at most 6 hours) after it changed, so a finding updated just before
/// midnight is in the next day's folder.
const EXPORT_LAG_DAYS: i64 = 1;

fn day(t: Timestamp) -> Option<NaiveDate> {
    chrono::DateTime::from_timestamp_millis(t.millis()).map(|d| d.date_naive())
}

impl Selection {
    /// Whether to read the object at `key`. An object written before `since`'s day holds only
    /// findings updated before `since`; one written more than a day after `until`'s day only
    /// later ones.
    pub fn verdict(&self, key: &str) -> Verdict {
        let Some(k) = parse_key(key) else {
            return Verdict::NotExport;
        };
        let listed = |set: &[String], v: &str| set.is_empty() || set.iter().any(|s| s == v);
        if !listed(&self.accounts, &k.account) || !listed(&self.regions, &k.region) {
            return Verdict::OtherScope;
        }
        let before = self.since.and_then(day).is_some_and(|d| k.date < d);
        let after = self
            .until
            .and_then(day)
            .and_then(|d| d.checked_add_signed(Duration::days(EXPORT_LAG_DAYS)))
            .is_some_and(|d| k.date > d);
        if before || after {
            return Verdict::OutsideWindow;
        }
        Verdict::Read(k)
    }

    /// Whether a finding updated at `updated` is inside the window.
    pub fn keeps_updated(&self, updated: Timestamp) -> bool {
        self.since.is_none_or(|s| updated >= s) && self.until.is_none_or(|u| updated < u)
    }

    /// Whether a finding of `account` is selected. The key's account is the account that
    /// exported the object, which for an organization's export is the delegated administrator
    /// with every member's findings inside: selecting the folder is not selecting its findings.
    pub fn keeps_account(&self, account: &str) -> bool {
        self.accounts.is_empty() || self.accounts.iter().any(|a| a == account)
    }

    /// The `accounts` that none of the selected objects was exported under (`present`: the
    /// accounts of their keys): an organization's members when the export is the delegated
    /// administrator's (or accounts with nothing inside the window).
    pub fn accounts_without<'a, 'k>(
        &'a self,
        present: impl Iterator<Item = &'k str> + Clone,
    ) -> Vec<&'a str> {
        let present = |a: &String| present.clone().any(|k| k == a);
        self.accounts
            .iter()
            .filter(|a| !present(a))
            .map(String::as_str)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "exports/AWSLogs/111122223333/GuardDuty/eu-west-1/2024/03/07/0f4c-uuid.jsonl.gz";

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s).expect("time")
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("date")
    }

    #[test]
    fn urls_name_a_bucket_and_a_prefix() {
        let l = Location::parse("s3://my-bucket/exports/AWSLogs/").expect("url");
        assert_eq!(
            (l.bucket.as_str(), l.prefix.as_str()),
            ("my-bucket", "exports/AWSLogs/")
        );
        let l = Location::parse("s3://my-bucket").expect("url");
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("my-bucket", ""));
        assert_eq!(l.url_of("a/b"), "s3://my-bucket/a/b");
        for bad in [
            "s3://",
            "s3:///x",
            "https://b/x",
            "s3://Bad_Bucket/x",
            "file.json",
        ] {
            assert_eq!(Location::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn export_keys_give_account_region_and_day() {
        assert_eq!(
            parse_key(KEY),
            Some(ExportKey {
                account: "111122223333".to_owned(),
                region: "eu-west-1".to_owned(),
                date: date(2024, 3, 7),
            })
        );
        let no_prefix = "AWSLogs/111122223333/GuardDuty/us-east-1/2023/12/31/x.jsonl.gz";
        assert_eq!(
            parse_key(no_prefix).map(|k| k.date),
            Some(date(2023, 12, 31))
        );
    }

    #[test]
    fn other_keys_are_not_export_objects() {
        for key in [
            "AWSLogs/111122223333/GuardDuty/",
            "AWSLogs/111122223333/GuardDuty/us-east-1/2024/03/07/",
            "AWSLogs/111122223333/CloudTrail/us-east-1/2024/03/07/x.json.gz",
            "AWSLogs/11112222333/GuardDuty/us-east-1/2024/03/07/x.jsonl.gz",
            "AWSLogs/111122223333/GuardDuty/us-east-1/2024/02/30/x.jsonl.gz",
            "AWSLogs/111122223333/GuardDuty/us-east-1/2024/3/07/x.jsonl.gz",
            "AWSLogs/111122223333/GuardDuty/US_EAST/2024/03/07/x.jsonl.gz",
            "x.jsonl.gz",
            "",
        ] {
            assert_eq!(parse_key(key), None, "{key}");
        }
    }

    #[test]
    fn listing_narrows_to_accounts_and_regions_when_the_layout_is_known() {
        let a = vec!["111122223333".to_owned(), "444455556666".to_owned()];
        let r = vec!["us-east-1".to_owned()];
        assert_eq!(
            listing_prefixes("", &a, &r),
            [
                "AWSLogs/111122223333/GuardDuty/us-east-1/",
                "AWSLogs/444455556666/GuardDuty/us-east-1/"
            ]
        );
        assert_eq!(
            listing_prefixes("exports/", &a[..1], &[]),
            ["exports/AWSLogs/111122223333/GuardDuty/"]
        );
        assert_eq!(
            listing_prefixes("exports/AWSLogs", &a[..1], &[]),
            ["exports/AWSLogs/111122223333/GuardDuty/"]
        );
        // Without accounts, or below the account level, or a partial name: listed as given.
        assert_eq!(listing_prefixes("exports/", &[], &r), ["exports/"]);
        let deep = "AWSLogs/111122223333/GuardDuty/";
        assert_eq!(listing_prefixes(deep, &a, &r), [deep]);
        assert_eq!(listing_prefixes("exp", &a, &r), ["exp"]);
    }

    #[test]
    fn the_window_selects_days_with_a_day_of_export_lag_after_until() {
        let s = Selection {
            since: Some(ts("2024-03-07T12:00:00Z")),
            until: Some(ts("2024-03-09T00:00:00Z")),
            ..Selection::default()
        };
        let at = |d: &str| format!("AWSLogs/111122223333/GuardDuty/us-east-1/{d}/x.jsonl.gz");
        assert_eq!(s.verdict(&at("2024/03/06")), Verdict::OutsideWindow);
        assert!(matches!(s.verdict(&at("2024/03/07")), Verdict::Read(_)));
        assert!(matches!(s.verdict(&at("2024/03/10")), Verdict::Read(_)));
        assert_eq!(s.verdict(&at("2024/03/11")), Verdict::OutsideWindow);
        assert_eq!(s.verdict("AWSLogs/x"), Verdict::NotExport);

        assert!(!s.keeps_updated(ts("2024-03-07T11:59:59.999Z")));
        assert!(s.keeps_updated(ts("2024-03-07T12:00:00Z")));
        assert!(s.keeps_updated(ts("2024-03-08T23:59:59Z")));
        assert!(!s.keeps_updated(ts("2024-03-09T00:00:00Z")));
        assert!(Selection::default().keeps_updated(ts("1999-01-01T00:00:00Z")));
    }

    #[test]
    fn accounts_select_findings_too_and_name_the_folders_that_were_missing() {
        // An organization's export: the administrator's folder holds every member's findings.
        let s = Selection {
            accounts: vec!["111122223333".to_owned(), "444455556666".to_owned()],
            ..Selection::default()
        };
        assert!(s.keeps_account("444455556666"));
        assert!(!s.keeps_account("999999999999"));
        assert!(Selection::default().keeps_account("999999999999"));

        let admin = parse_key(KEY).expect("key");
        assert_eq!(admin.account, "111122223333");
        assert_eq!(
            s.accounts_without([admin.account.as_str()].into_iter()),
            ["444455556666"]
        );
        assert_eq!(
            s.accounts_without(std::iter::empty()),
            ["111122223333", "444455556666"]
        );
        assert!(
            Selection::default()
                .accounts_without(std::iter::empty())
                .is_empty()
        );
    }

    #[test]
    fn accounts_and_regions_select_keys() {
        let s = Selection {
            accounts: vec!["111122223333".to_owned()],
            regions: vec!["eu-west-1".to_owned()],
            ..Selection::default()
        };
        assert!(matches!(s.verdict(KEY), Verdict::Read(_)));
        let other = KEY.replace("eu-west-1", "us-east-1");
        assert_eq!(s.verdict(&other), Verdict::OtherScope);
        let other = KEY.replace("111122223333", "444455556666");
        assert_eq!(s.verdict(&other), Verdict::OtherScope);
    }
}
