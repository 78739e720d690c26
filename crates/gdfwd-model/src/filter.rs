//! Which findings to forward: one filter, one set of defaults, one parser, for every path.
//!
//! The Lambda, `gdfwd forward` (files, stdin, the S3 export) and `gdfwd backfill` all hand their
//! findings to the pipeline, which asks [`FindingFilter::verdict`] before it claims anything. So a
//! finding is kept or dropped by the same rules wherever it comes from, and the CLI flags and the
//! Lambda's environment variables are read by the same [`FindingFilter::apply`]: the inputs are
//! named once, in [`FilterInput`] (flag, variable, and the name a verdict's reason uses).
//!
//! Semantics (docs/filters.md):
//! - per kind (type, account, region, resource type), an include list keeps only findings that
//!   match one of its entries (OR within the kind), and every kind must agree (AND across kinds);
//! - an exclude list drops what matches it, whatever the include lists say (exclude wins);
//! - the severity floor keeps findings with `severity >= floor` (a finding without a severity is
//!   dropped once a floor is set);
//! - archived findings are excluded and sample findings included by default ([`Inclusion`]):
//!   GuardDuty's "Current" view, and what EventBridge delivers (suppression rules archive
//!   findings, and EventBridge never carries suppressed ones), so a backfill or an import sends
//!   what the live path would have sent; teams check their pipeline with sample findings.
//!
//! Type patterns are globs where `*` matches any run of characters (`/` and `:` included), the
//! only special character: EventBridge's `wildcard` matcher means the same, so the template can
//! push them into the rule's event pattern unchanged. `**` and `\` are refused for that reason
//! (EventBridge refuses consecutive wildcards and reads `\` as an escape). Everything else
//! compares exactly, case included, as GuardDuty spells it.
//!
//! Pure: no I/O, no clock. A verdict's reason names the input that decided (`exclude-type
//! Recon:*`, `archived`), which is what the pipeline logs for every filtered finding.

use std::fmt;

use crate::error::ModelError;
use crate::finding::Finding;

/// One filter input: what a CLI flag or a Lambda environment variable sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterInput {
    IncludeType,
    ExcludeType,
    IncludeAccount,
    ExcludeAccount,
    IncludeRegion,
    ExcludeRegion,
    IncludeResourceType,
    ExcludeResourceType,
    MinSeverity,
    Archived,
    Samples,
}

impl FilterInput {
    /// Every input, in the order reasons are checked and settings are printed.
    pub const ALL: [Self; 11] = [
        Self::Archived,
        Self::Samples,
        Self::MinSeverity,
        Self::IncludeType,
        Self::ExcludeType,
        Self::IncludeAccount,
        Self::ExcludeAccount,
        Self::IncludeRegion,
        Self::ExcludeRegion,
        Self::IncludeResourceType,
        Self::ExcludeResourceType,
    ];

    /// The CLI flag without its dashes (`include-type`), also the name reasons use.
    pub fn name(self) -> &'static str {
        match self {
            Self::IncludeType => "include-type",
            Self::ExcludeType => "exclude-type",
            Self::IncludeAccount => "include-account",
            Self::ExcludeAccount => "exclude-account",
            Self::IncludeRegion => "include-region",
            Self::ExcludeRegion => "exclude-region",
            Self::IncludeResourceType => "include-resource-type",
            Self::ExcludeResourceType => "exclude-resource-type",
            Self::MinSeverity => "min-severity",
            Self::Archived => "archived",
            Self::Samples => "samples",
        }
    }

    /// The Lambda's environment variable (`cloudformation/forwarder.yaml` sets it).
    pub fn env_var(self) -> &'static str {
        match self {
            Self::IncludeType => "INCLUDE_TYPES",
            Self::ExcludeType => "EXCLUDE_TYPES",
            Self::IncludeAccount => "INCLUDE_ACCOUNTS",
            Self::ExcludeAccount => "EXCLUDE_ACCOUNTS",
            Self::IncludeRegion => "INCLUDE_REGIONS",
            Self::ExcludeRegion => "EXCLUDE_REGIONS",
            Self::IncludeResourceType => "INCLUDE_RESOURCE_TYPES",
            Self::ExcludeResourceType => "EXCLUDE_RESOURCE_TYPES",
            Self::MinSeverity => "MIN_SEVERITY",
            Self::Archived => "ARCHIVED_FINDINGS",
            Self::Samples => "SAMPLE_FINDINGS",
        }
    }

    /// Whether the input takes a comma-separated list (and a repeated flag adds to it).
    pub fn is_list(self) -> bool {
        !matches!(self, Self::MinSeverity | Self::Archived | Self::Samples)
    }
}

/// Whether findings of a kind (archived, sample) are forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inclusion {
    Include,
    Exclude,
}

impl Inclusion {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Include => "include",
            Self::Exclude => "exclude",
        }
    }
}

impl std::str::FromStr for Inclusion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "include" => Ok(Self::Include),
            "exclude" => Ok(Self::Exclude),
            _ => Err("expected include or exclude".to_owned()),
        }
    }
}

/// The include and exclude lists of one kind, each sorted and without repeats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lists {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl Lists {
    fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }
}

/// What the filter says of one finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Not forwarded; the reason names the input that decided (`exclude-type Recon:*`).
    Filtered(String),
}

/// The filter. [`Default`] is the documented default: archived findings excluded, sample findings
/// included, nothing else filtered.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingFilter {
    /// Globs over `type` (see the module docs).
    pub types: Lists,
    pub accounts: Lists,
    pub regions: Lists,
    /// Over `resource.resourceType` (`Instance`, `AccessKey`, `S3Bucket`, ...).
    pub resource_types: Lists,
    /// Keep only `severity >= min_severity` (0 to 10).
    pub min_severity: Option<f64>,
    pub archived: Inclusion,
    pub samples: Inclusion,
}

impl Default for FindingFilter {
    fn default() -> Self {
        Self {
            types: Lists::default(),
            accounts: Lists::default(),
            regions: Lists::default(),
            resource_types: Lists::default(),
            min_severity: None,
            archived: Inclusion::Exclude,
            samples: Inclusion::Include,
        }
    }
}

/// Longest type pattern accepted: GuardDuty's types are under 100 characters.
const MAX_TYPE_PATTERN: usize = 256;
/// Longest resource type accepted (GuardDuty's are short names such as `KubernetesCluster`).
const MAX_RESOURCE_TYPE: usize = 64;

impl FindingFilter {
    /// Whether this is the default filter (nothing set, or set to the defaults).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Applies one input's value as a flag or variable gives it: a comma-separated list for the
    /// lists (added to what is there, so a repeated flag adds), `include` or `exclude` for
    /// archived and samples, a number from 0 to 10 for the severity floor. `name` is how the
    /// caller calls the input (`--include-type`, `INCLUDE_TYPES`), for the error. An empty
    /// entry is refused: a caller that treats a blank value as unset (the Lambda, as
    /// CloudFormation passes blank parameters) checks that first.
    pub fn apply(&mut self, input: FilterInput, value: &str, name: &str) -> Result<(), ModelError> {
        let bad = |why: String| ModelError::Filter {
            input: name.to_owned(),
            value: value.to_owned(),
            why,
        };
        match input {
            FilterInput::MinSeverity => {
                let s: f64 = value
                    .trim()
                    .parse()
                    .map_err(|_| bad("expected a number from 0 to 10".to_owned()))?;
                if !(s.is_finite() && (0.0..=10.0).contains(&s)) {
                    return Err(bad("expected a number from 0 to 10".to_owned()));
                }
                self.min_severity = Some(s);
            }
            FilterInput::Archived => self.archived = value.parse().map_err(bad)?,
            FilterInput::Samples => self.samples = value.parse().map_err(bad)?,
            _ => {
                for entry in value.split(',') {
                    let entry = entry.trim();
                    check_entry(input, entry).map_err(|why| ModelError::Filter {
                        input: name.to_owned(),
                        value: entry.to_owned(),
                        why,
                    })?;
                    let list = self.list_mut(input);
                    if !list.iter().any(|e| e == entry) {
                        list.push(entry.to_owned());
                        list.sort();
                    }
                }
            }
        }
        Ok(())
    }

    fn list_mut(&mut self, input: FilterInput) -> &mut Vec<String> {
        match input {
            FilterInput::IncludeType => &mut self.types.include,
            FilterInput::ExcludeType => &mut self.types.exclude,
            FilterInput::IncludeAccount => &mut self.accounts.include,
            FilterInput::ExcludeAccount => &mut self.accounts.exclude,
            FilterInput::IncludeRegion => &mut self.regions.include,
            FilterInput::ExcludeRegion => &mut self.regions.exclude,
            FilterInput::IncludeResourceType => &mut self.resource_types.include,
            FilterInput::ExcludeResourceType => &mut self.resource_types.exclude,
            // Not lists: `apply` never asks for them (it has no list to give, and must not panic).
            FilterInput::MinSeverity | FilterInput::Archived | FilterInput::Samples => {
                &mut self.resource_types.exclude
            }
        }
    }

    /// Keep or drop `f`, and why. Checked in this order, the first that drops the finding being
    /// the reason: archived, samples, the severity floor, then per kind (type, account, region,
    /// resource type) its exclude list before its include list.
    pub fn verdict(&self, f: &Finding) -> Verdict {
        if self.archived == Inclusion::Exclude && f.archived() {
            return Verdict::Filtered("archived".to_owned());
        }
        if self.samples == Inclusion::Exclude && f.is_sample() {
            return Verdict::Filtered("sample".to_owned());
        }
        if let Some(floor) = self.min_severity {
            match f.severity() {
                Some(s) if s >= floor => {}
                Some(s) => return Verdict::Filtered(format!("min-severity {floor}: severity {s}")),
                None => return Verdict::Filtered(format!("min-severity {floor}: no severity")),
            }
        }
        let checks: [(&Lists, FilterInput, FilterInput, &str, Option<&str>); 4] = [
            (
                &self.types,
                FilterInput::IncludeType,
                FilterInput::ExcludeType,
                "type",
                f.finding_type(),
            ),
            (
                &self.accounts,
                FilterInput::IncludeAccount,
                FilterInput::ExcludeAccount,
                "account",
                Some(f.account_id.as_str()),
            ),
            (
                &self.regions,
                FilterInput::IncludeRegion,
                FilterInput::ExcludeRegion,
                "region",
                Some(f.region.as_str()),
            ),
            (
                &self.resource_types,
                FilterInput::IncludeResourceType,
                FilterInput::ExcludeResourceType,
                "resource type",
                f.resource_type(),
            ),
        ];
        for (lists, include, exclude, what, value) in checks {
            if lists.is_empty() {
                continue;
            }
            let globs = include == FilterInput::IncludeType;
            let matches = |entry: &String| match value {
                Some(v) if globs => glob_matches(entry, v),
                Some(v) => entry == v,
                None => false,
            };
            if let Some(hit) = lists.exclude.iter().find(|e| matches(e)) {
                return Verdict::Filtered(format!("{} {hit}", exclude.name()));
            }
            if !lists.include.is_empty() && !lists.include.iter().any(matches) {
                return Verdict::Filtered(match value {
                    Some(v) => format!("{}: {what} {v} is not listed", include.name()),
                    None => format!("{}: the finding has no {what}", include.name()),
                });
            }
        }
        Verdict::Keep
    }
}

/// Every setting that differs from the default, in [`FilterInput::ALL`] order, as
/// `name=value` joined by `;` (lists comma-separated, sorted): empty for the default filter.
/// Stable for a given filter, so backfill checkpoint keys can use it.
impl fmt::Display for FindingFilter {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        let default = Self::default();
        let mut parts: Vec<String> = Vec::new();
        for input in FilterInput::ALL {
            let value = match input {
                FilterInput::Archived if self.archived != default.archived => {
                    self.archived.as_str().to_owned()
                }
                FilterInput::Samples if self.samples != default.samples => {
                    self.samples.as_str().to_owned()
                }
                FilterInput::MinSeverity => match self.min_severity {
                    Some(s) => s.to_string(),
                    None => continue,
                },
                FilterInput::Archived | FilterInput::Samples => continue,
                list => {
                    let list = self.list(list);
                    if list.is_empty() {
                        continue;
                    }
                    list.join(",")
                }
            };
            parts.push(format!("{}={value}", input.name()));
        }
        out.write_str(&parts.join(";"))
    }
}

impl FindingFilter {
    /// The entries of a list input (empty for the inputs that are not lists).
    pub fn list(&self, input: FilterInput) -> &[String] {
        match input {
            FilterInput::IncludeType => &self.types.include,
            FilterInput::ExcludeType => &self.types.exclude,
            FilterInput::IncludeAccount => &self.accounts.include,
            FilterInput::ExcludeAccount => &self.accounts.exclude,
            FilterInput::IncludeRegion => &self.regions.include,
            FilterInput::ExcludeRegion => &self.regions.exclude,
            FilterInput::IncludeResourceType => &self.resource_types.include,
            FilterInput::ExcludeResourceType => &self.resource_types.exclude,
            FilterInput::MinSeverity | FilterInput::Archived | FilterInput::Samples => &[],
        }
    }
}

/// Why one list entry is unusable, if it is.
fn check_entry(input: FilterInput, entry: &str) -> Result<(), String> {
    if entry.is_empty() {
        return Err("an empty entry (two commas in a row, or a comma at an end?)".to_owned());
    }
    match input {
        FilterInput::IncludeType | FilterInput::ExcludeType => {
            if entry.len() > MAX_TYPE_PATTERN {
                return Err(format!(
                    "a type pattern of {} characters (at most {MAX_TYPE_PATTERN})",
                    entry.len()
                ));
            }
            if entry.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err("a type pattern with a space or control character".to_owned());
            }
            if entry.contains('\\') {
                return Err("a type pattern with `\\` (only `*` is special; GuardDuty types hold no backslash)".to_owned());
            }
            if entry.contains("**") {
                return Err(
                    "a type pattern with `**` (one `*` already matches any run of characters)"
                        .to_owned(),
                );
            }
            Ok(())
        }
        FilterInput::IncludeAccount | FilterInput::ExcludeAccount => {
            if entry.len() == 12 && entry.bytes().all(|b| b.is_ascii_digit()) {
                Ok(())
            } else {
                Err("not a 12-digit AWS account id".to_owned())
            }
        }
        FilterInput::IncludeRegion | FilterInput::ExcludeRegion => {
            if valid_region(entry) {
                Ok(())
            } else {
                Err("not an AWS region name (such as eu-west-1)".to_owned())
            }
        }
        FilterInput::IncludeResourceType | FilterInput::ExcludeResourceType => {
            if entry.len() <= MAX_RESOURCE_TYPE && entry.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                Ok(())
            } else {
                Err(format!(
                    "not a GuardDuty resource type (letters and digits, at most {MAX_RESOURCE_TYPE}, such as Instance or S3Bucket)"
                ))
            }
        }
        FilterInput::MinSeverity | FilterInput::Archived | FilterInput::Samples => Ok(()),
    }
}

/// `xx-name-N` (`eu-west-1`, `us-gov-west-1`, `ap-southeast-5`): lower-case words joined by `-`,
/// the first of two letters, the last a number. The template's AllowedPattern is the same rule.
fn valid_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

/// Whether `text` matches `glob`, where `*` matches any run of characters (none included) and
/// every other character itself. Linear-time backtracking over the last `*` (no recursion).
pub fn glob_matches(glob: &str, text: &str) -> bool {
    let g: Vec<char> = glob.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut gi, mut ti) = (0, 0);
    // Position of the last `*` seen and where in the text it started matching.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if gi < g.len() && g[gi] == '*' {
            star = Some((gi, ti));
            gi += 1;
        } else if gi < g.len() && g[gi] == t[ti] {
            gi += 1;
            ti += 1;
        } else if let Some((sg, st)) = star {
            // Let the last `*` take one more character and try again after it.
            gi = sg + 1;
            ti = st + 1;
            star = Some((sg, st + 1));
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn finding(detail: Value) -> Finding {
        let mut d = json!({
            "id": "f1",
            "accountId": "111122223333",
            "region": "eu-west-1",
            "updatedAt": "2024-05-01T10:00:00Z",
            "type": "Recon:EC2/Portscan",
            "severity": 5.0,
            "resource": {"resourceType": "Instance"},
            "service": {"archived": false},
        });
        for (k, v) in detail.as_object().expect("object") {
            d[k] = v.clone();
        }
        match crate::parse_value(d).pop() {
            Some(Ok(crate::Item::Finding(f))) => *f,
            other => panic!("not a finding: {other:?}"),
        }
    }

    fn with(inputs: &[(FilterInput, &str)]) -> FindingFilter {
        let mut f = FindingFilter::default();
        for (input, value) in inputs {
            f.apply(*input, value, input.name()).expect("valid input");
        }
        f
    }

    fn filtered(filter: &FindingFilter, f: &Finding) -> Option<String> {
        match filter.verdict(f) {
            Verdict::Keep => None,
            Verdict::Filtered(r) => Some(r),
        }
    }

    #[test]
    fn globs_match_any_run_of_characters_and_nothing_else() {
        for (glob, text) in [
            ("Recon:*", "Recon:EC2/Portscan"),
            ("Recon:*", "Recon:"),
            (
                "*:Kubernetes/*",
                "PrivilegeEscalation:Kubernetes/PrivilegedContainer",
            ),
            ("*Portscan", "Recon:EC2/Portscan"),
            ("Recon:EC2/Portscan", "Recon:EC2/Portscan"),
            ("*", ""),
            ("a*b*c", "a-b-b-c"),
            (
                "Backdoor:EC2/C&CActivity.B!DNS",
                "Backdoor:EC2/C&CActivity.B!DNS",
            ),
        ] {
            assert!(glob_matches(glob, text), "{glob} ~ {text}");
        }
        for (glob, text) in [
            ("Recon:*", "recon:EC2/Portscan"),
            ("Recon:*", "XRecon:EC2"),
            ("*:Kubernetes/*", "Recon:EC2/Portscan"),
            ("Recon:EC2/Portscan", "Recon:EC2/Portscan2"),
            ("a*b*c", "a-b-b-d"),
            ("", "x"),
        ] {
            assert!(!glob_matches(glob, text), "{glob} !~ {text}");
        }
    }

    #[test]
    fn defaults_drop_archived_keep_samples_and_nothing_else() {
        let filter = FindingFilter::default();
        assert!(filter.is_default());
        assert_eq!(filter.to_string(), "");
        assert_eq!(filtered(&filter, &finding(json!({}))), None);
        let archived = finding(json!({"service": {"archived": true}}));
        assert_eq!(filtered(&filter, &archived).as_deref(), Some("archived"));
        let sample = finding(json!({"service": {"additionalInfo": {"sample": true}}}));
        assert_eq!(filtered(&filter, &sample), None);

        let open = with(&[(FilterInput::Archived, "include")]);
        assert_eq!(filtered(&open, &archived), None);
        assert_eq!(open.to_string(), "archived=include");
        let no_samples = with(&[(FilterInput::Samples, "EXCLUDE")]);
        assert_eq!(filtered(&no_samples, &sample).as_deref(), Some("sample"));
    }

    #[test]
    fn samples_are_recognised_in_both_shapes_guardduty_writes() {
        let filter = with(&[(FilterInput::Samples, "exclude")]);
        // EventBridge: a boolean member. The API: JSON text in `value`.
        for info in [
            json!({"sample": true}),
            json!({"value": "{\"sample\":true}", "type": "default"}),
        ] {
            let f = finding(json!({"service": {"additionalInfo": info}}));
            assert!(f.is_sample());
            assert_eq!(filtered(&filter, &f).as_deref(), Some("sample"));
        }
        for info in [
            json!({"sample": false}),
            json!({"value": "{\"sample\":false}"}),
            json!({"value": "not json"}),
            json!({}),
        ] {
            let f = finding(json!({"service": {"additionalInfo": info}}));
            assert!(!f.is_sample(), "{info}");
            assert_eq!(filtered(&filter, &f), None);
        }
    }

    #[test]
    fn include_is_or_within_a_kind_and_and_across_kinds() {
        let filter = with(&[
            (FilterInput::IncludeType, "Recon:*,Backdoor:*"),
            (FilterInput::IncludeAccount, "111122223333"),
        ]);
        assert_eq!(filtered(&filter, &finding(json!({}))), None);
        let backdoor = finding(json!({"type": "Backdoor:EC2/DenialOfService.Tcp"}));
        assert_eq!(filtered(&filter, &backdoor), None);
        let trojan = finding(json!({"type": "Trojan:EC2/DNSDataExfiltration"}));
        assert_eq!(
            filtered(&filter, &trojan).as_deref(),
            Some("include-type: type Trojan:EC2/DNSDataExfiltration is not listed")
        );
        let other_account = finding(json!({"accountId": "444455556666"}));
        assert_eq!(
            filtered(&filter, &other_account).as_deref(),
            Some("include-account: account 444455556666 is not listed")
        );
    }

    #[test]
    fn exclude_wins_over_include_and_names_the_entry() {
        let filter = with(&[
            (FilterInput::IncludeType, "Recon:*"),
            (FilterInput::ExcludeType, "Recon:EC2/Port*"),
        ]);
        assert_eq!(
            filtered(&filter, &finding(json!({}))).as_deref(),
            Some("exclude-type Recon:EC2/Port*")
        );
        let other = finding(json!({"type": "Recon:IAMUser/MaliciousIPCaller"}));
        assert_eq!(filtered(&filter, &other), None);
    }

    #[test]
    fn every_list_kind_includes_and_excludes() {
        let f = finding(json!({}));
        for (input, hit, miss) in [
            (FilterInput::IncludeType, "*Portscan", "Backdoor:*"),
            (FilterInput::IncludeAccount, "111122223333", "444455556666"),
            (FilterInput::IncludeRegion, "eu-west-1", "us-east-1"),
            (FilterInput::IncludeResourceType, "Instance", "S3Bucket"),
        ] {
            assert_eq!(filtered(&with(&[(input, hit)]), &f), None, "{input:?}");
            let reason = filtered(&with(&[(input, miss)]), &f).expect("filtered");
            assert!(reason.starts_with(input.name()), "{reason}");
        }
        for (input, hit, miss) in [
            (FilterInput::ExcludeType, "Recon:*", "Backdoor:*"),
            (FilterInput::ExcludeAccount, "111122223333", "444455556666"),
            (FilterInput::ExcludeRegion, "eu-west-1", "us-east-1"),
            (FilterInput::ExcludeResourceType, "Instance", "S3Bucket"),
        ] {
            assert_eq!(
                filtered(&with(&[(input, hit)]), &f),
                Some(format!("{} {hit}", input.name())),
                "{input:?}"
            );
            assert_eq!(filtered(&with(&[(input, miss)]), &f), None, "{input:?}");
        }
    }

    #[test]
    fn a_missing_field_fails_an_include_list_and_passes_an_exclude_list() {
        let mut d = finding(json!({}));
        d.detail.remove("type");
        d.detail.remove("resource");
        let include = with(&[(FilterInput::IncludeType, "*")]);
        assert_eq!(
            filtered(&include, &d).as_deref(),
            Some("include-type: the finding has no type")
        );
        let include = with(&[(FilterInput::IncludeResourceType, "Instance")]);
        assert_eq!(
            filtered(&include, &d).as_deref(),
            Some("include-resource-type: the finding has no resource type")
        );
        let exclude = with(&[
            (FilterInput::ExcludeType, "*"),
            (FilterInput::ExcludeResourceType, "Instance"),
        ]);
        assert_eq!(filtered(&exclude, &d), None);
    }

    #[test]
    fn the_severity_floor_is_inclusive_and_drops_findings_without_one() {
        let filter = with(&[(FilterInput::MinSeverity, "5")]);
        assert_eq!(filtered(&filter, &finding(json!({"severity": 5.0}))), None);
        assert_eq!(
            filtered(&filter, &finding(json!({"severity": "8.1"}))),
            None
        );
        assert_eq!(
            filtered(&filter, &finding(json!({"severity": 4.9}))).as_deref(),
            Some("min-severity 5: severity 4.9")
        );
        let mut none = finding(json!({}));
        none.detail.remove("severity");
        assert_eq!(
            filtered(&filter, &none).as_deref(),
            Some("min-severity 5: no severity")
        );
    }

    #[test]
    fn lists_add_up_trimmed_sorted_and_without_repeats() {
        let filter = with(&[
            (FilterInput::IncludeType, " Recon:* , Backdoor:*"),
            (FilterInput::IncludeType, "Recon:*"),
            (FilterInput::ExcludeAccount, "444455556666"),
            (FilterInput::MinSeverity, "7"),
        ]);
        assert_eq!(filter.types.include, ["Backdoor:*", "Recon:*"]);
        assert_eq!(
            filter.to_string(),
            "min-severity=7;include-type=Backdoor:*,Recon:*;exclude-account=444455556666"
        );
        assert!(!filter.is_default());
    }

    #[test]
    fn bad_inputs_are_refused_naming_the_input_and_the_value() {
        for (input, value, quoted) in [
            (FilterInput::IncludeType, "", ""),
            (FilterInput::IncludeType, "Recon:*,,Backdoor:*", ""),
            (FilterInput::ExcludeType, "Recon:*,", ""),
            (FilterInput::IncludeType, "Recon: *", "Recon: *"),
            (FilterInput::IncludeType, "Recon:**", "Recon:**"),
            (FilterInput::IncludeType, "Recon:\\*", "Recon:\\\\*"),
            (FilterInput::IncludeAccount, "12345", "12345"),
            (FilterInput::ExcludeAccount, "111122223333,abc", "abc"),
            (FilterInput::IncludeRegion, "EU-WEST-1", "EU-WEST-1"),
            (FilterInput::IncludeRegion, "eu-west", "eu-west"),
            (FilterInput::ExcludeRegion, "us-east-1a", "us-east-1a"),
            (FilterInput::IncludeResourceType, "S3 Bucket", "S3 Bucket"),
            (FilterInput::MinSeverity, "high", "high"),
            (FilterInput::MinSeverity, "11", "11"),
            (FilterInput::MinSeverity, "NaN", "NaN"),
            (FilterInput::Archived, "yes", "yes"),
            (FilterInput::Samples, "", ""),
        ] {
            let mut f = FindingFilter::default();
            let e = f
                .apply(input, value, input.env_var())
                .expect_err(&format!("{input:?} {value:?} should be refused"));
            let shown = e.to_string();
            assert!(
                shown.starts_with(&format!("{}: \"{quoted}\"", input.env_var())),
                "{shown}"
            );
        }
        for (input, value) in [
            (FilterInput::IncludeRegion, "us-gov-west-1"),
            (FilterInput::IncludeRegion, "ap-southeast-5"),
            (FilterInput::IncludeType, "*"),
            (FilterInput::IncludeType, "Backdoor:EC2/C&CActivity.B!DNS"),
            (FilterInput::MinSeverity, "0"),
            (FilterInput::MinSeverity, " 7.5 "),
            (FilterInput::Archived, " Include "),
        ] {
            with(&[(input, value)]);
        }
    }

    #[test]
    fn every_input_has_a_distinct_flag_and_variable() {
        let names: std::collections::HashSet<_> =
            FilterInput::ALL.iter().map(|i| i.name()).collect();
        let vars: std::collections::HashSet<_> =
            FilterInput::ALL.iter().map(|i| i.env_var()).collect();
        assert_eq!(names.len(), FilterInput::ALL.len());
        assert_eq!(vars.len(), FilterInput::ALL.len());
        assert_eq!(FilterInput::ALL.iter().filter(|i| i.is_list()).count(), 8);
    }
}
