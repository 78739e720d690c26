//! Account context fields: `--account-field FIELD=SOURCE` (CLI) and `ACCOUNT_FIELDS` (Lambda) set
//! a field on every event of an account's findings, from the account's AWS Organizations tags, its
//! organizational-unit path, its names, or a literal.
//!
//! Why shaped so:
//! - one parser for both spellings (repeated flags, one comma-separated variable), so the CLI and
//!   the Lambda accept and refuse exactly the same specs, with an error naming the bad entry;
//! - the values come from the account enrichment (the same lookup, caches and TTLs as
//!   `aws.account.name`), so the spec also says which extra lookups it needs ([`ContextNeeds`]):
//!   no tags call unless a `tag:` source is configured;
//! - values come from tags other people write, so field names are validated, the number of fields
//!   is bounded and values are cut to a bounded length; fields the mapping itself writes cannot be
//!   configured (they would contradict the finding).

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::enrich::AccountInfo;
use crate::error::AccountFieldError;

/// Most account fields one forwarder sets.
pub const MAX_ACCOUNT_FIELDS: usize = 20;
/// Longest field name (characters).
pub const MAX_FIELD_NAME_CHARS: usize = 100;
/// Longest value set on an event (characters): longer tag values, OU paths and literals are cut.
/// AWS tag values have at most 256 characters; an OU path of five levels of 128 fits as well.
pub const MAX_VALUE_CHARS: usize = 1024;
/// AWS tag keys have at most 128 characters.
const MAX_TAG_KEY_CHARS: usize = 128;

/// Prefixes of fields the payload mapping writes itself (both formats), which an account field
/// may not set.
const RESERVED_PREFIXES: [&str; 11] = [
    "event.",
    "product.",
    "finding.",
    "dt.security.risk.",
    "aws.account.",
    "aws.resource.",
    "aws.guardduty.",
    "object.",
    "container.",
    "k8s.",
    "gdfwd.",
];
/// Whole field names the mapping writes.
const RESERVED_NAMES: [&str; 3] = ["aws.region", "aws.partition", "aws.availability_zone"];

/// Where an account field's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FieldSource {
    /// `tag:KEY`: the account's tag `KEY` in AWS Organizations.
    Tag(String),
    /// `ou`: the account's organizational-unit path, `Root/Workloads/Prod`.
    Ou,
    /// `name`: the account's name in AWS Organizations.
    Name,
    /// `alias`: the account's IAM account alias.
    Alias,
    /// `'text'`: this text, for every account.
    Literal(String),
}

impl fmt::Display for FieldSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(k) => write!(f, "tag:{k}"),
            Self::Ou => f.write_str("ou"),
            Self::Name => f.write_str("name"),
            Self::Alias => f.write_str("alias"),
            Self::Literal(v) if v.contains('\'') => write!(f, "\"{v}\""),
            Self::Literal(v) => write!(f, "'{v}'"),
        }
    }
}

/// One configured field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountField {
    pub field: String,
    pub source: FieldSource,
}

/// Which lookups beyond the account name the configured fields need. Also recorded in each cached
/// [`AccountInfo`], so an entry cached before a field was configured is looked up again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContextNeeds {
    /// `organizations:DescribeAccount` even when the IAM alias was found (`name`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub org_name: bool,
    /// `organizations:ListTagsForResource` (`tag:KEY`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub tags: bool,
    /// `organizations:ListParents` + `DescribeOrganizationalUnit` (`ou`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub ou: bool,
}

fn is_false(b: &bool) -> bool {
    !b
}

impl ContextNeeds {
    /// Whether an answer looked up with `self` also answers `other`.
    pub fn covers(self, other: ContextNeeds) -> bool {
        (self.org_name || !other.org_name) && (self.tags || !other.tags) && (self.ou || !other.ou)
    }

    /// Whether any AWS Organizations call beyond the name fallback is needed.
    pub fn any(self) -> bool {
        self.org_name || self.tags || self.ou
    }
}

/// The configured account fields, in the order given. Empty by default.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountFields(Vec<AccountField>);

impl AccountFields {
    /// Parses specs as given on the command line (one flag each) or in `ACCOUNT_FIELDS` (one
    /// string): each string may hold several `FIELD=SOURCE` entries separated by commas (a comma
    /// inside a quoted literal is part of it). Blank entries are ignored.
    pub fn parse<S: AsRef<str>>(specs: &[S]) -> Result<Self, AccountFieldError> {
        let mut fields = Vec::new();
        let mut seen = HashSet::new();
        for spec in specs {
            for entry in split_entries(spec.as_ref())? {
                let field = parse_entry(entry)?;
                if !seen.insert(field.field.clone()) {
                    return Err(bad(entry, "the field is configured twice"));
                }
                fields.push(field);
            }
        }
        if fields.len() > MAX_ACCOUNT_FIELDS {
            return Err(AccountFieldError::TooMany {
                count: fields.len(),
                max: MAX_ACCOUNT_FIELDS,
            });
        }
        Ok(Self(fields))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &AccountField> {
        self.0.iter()
    }

    /// Whether some field needs an AWS lookup (anything but literals).
    pub fn needs_lookup(&self) -> bool {
        self.0
            .iter()
            .any(|f| !matches!(f.source, FieldSource::Literal(_)))
    }

    /// The extra lookups the sources need.
    pub fn needs(&self) -> ContextNeeds {
        let mut n = ContextNeeds::default();
        for f in &self.0 {
            match f.source {
                FieldSource::Tag(_) => n.tags = true,
                FieldSource::Ou => n.ou = true,
                FieldSource::Name => n.org_name = true,
                FieldSource::Alias | FieldSource::Literal(_) => {}
            }
        }
        n
    }

    /// The (field, value) pairs for an account, in the configured order; fields whose source has
    /// no value for it (an untagged account, a failed lookup) are left out. `info` is `None` when
    /// the account could not be looked up: only literals are set then.
    pub fn resolve(&self, info: Option<&AccountInfo>) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter_map(|f| {
                let value = match (&f.source, info) {
                    (FieldSource::Literal(v), _) => Some(v.as_str()),
                    (_, None) => None,
                    (FieldSource::Tag(k), Some(i)) => {
                        i.tags.as_ref().and_then(|t| t.get(k)).map(String::as_str)
                    }
                    (FieldSource::Ou, Some(i)) => i.ou_path.as_deref(),
                    (FieldSource::Name, Some(i)) => i.org_name.as_deref(),
                    (FieldSource::Alias, Some(i)) => i.alias.as_deref(),
                }?;
                let value = value.trim();
                (!value.is_empty()).then(|| (f.field.clone(), cut(value)))
            })
            .collect()
    }
}

impl fmt::Display for AccountFields {
    /// The canonical `FIELD=SOURCE,...` spelling (what `ACCOUNT_FIELDS` takes).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}={}", a.field, a.source)?;
        }
        Ok(())
    }
}

fn cut(value: &str) -> String {
    match value.char_indices().nth(MAX_VALUE_CHARS) {
        Some((at, _)) => value[..at].to_owned(),
        None => value.to_owned(),
    }
}

fn bad(entry: &str, reason: impl Into<String>) -> AccountFieldError {
    AccountFieldError::Invalid {
        entry: entry.trim().to_owned(),
        reason: reason.into(),
    }
}

/// Splits at commas outside single or double quotes; trims entries and drops blank ones.
fn split_entries(spec: &str) -> Result<Vec<&str>, AccountFieldError> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quote: Option<char> = None;
    for (i, c) in spec.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, ',') => {
                out.push(&spec[start..i]);
                start = i + 1;
            }
            (None, _) => {}
        }
    }
    if quote.is_some() {
        return Err(bad(&spec[start..], "the quoted literal is not closed"));
    }
    out.push(&spec[start..]);
    Ok(out
        .into_iter()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect())
}

fn parse_entry(entry: &str) -> Result<AccountField, AccountFieldError> {
    let Some((field, source)) = entry.split_once('=') else {
        return Err(bad(
            entry,
            "expected FIELD=SOURCE, e.g. dt.security_context=tag:dt-security-context",
        ));
    };
    let field = field.trim();
    check_field_name(field).map_err(|reason| bad(entry, reason))?;
    let source = parse_source(source.trim()).map_err(|reason| bad(entry, reason))?;
    Ok(AccountField {
        field: field.to_owned(),
        source,
    })
}

fn check_field_name(field: &str) -> Result<(), String> {
    if field.is_empty() {
        return Err("the field name is empty".to_owned());
    }
    if field.chars().count() > MAX_FIELD_NAME_CHARS {
        return Err(format!(
            "the field name is longer than {MAX_FIELD_NAME_CHARS} characters"
        ));
    }
    let well_formed = field.starts_with(|c: char| c.is_ascii_alphabetic())
        && field
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && field.contains('.')
        && !field.ends_with('.')
        && !field.contains("..");
    if !well_formed {
        return Err(format!(
            "{field:?} is not a dotted field name (letters, digits, _ and -, in parts separated \
             by single dots, at least two parts, starting with a letter), e.g. dt.security_context"
        ));
    }
    let reserved = RESERVED_NAMES.contains(&field)
        || RESERVED_PREFIXES
            .iter()
            .any(|p| field.starts_with(p) || format!("{field}.") == *p);
    if reserved {
        return Err(format!(
            "{field:?} is set by the payload mapping itself and cannot be configured (reserved: \
             {}, {})",
            RESERVED_PREFIXES.map(|p| format!("{p}*")).join(", "),
            RESERVED_NAMES.join(", ")
        ));
    }
    Ok(())
}

fn parse_source(source: &str) -> Result<FieldSource, String> {
    if let Some(key) = source.strip_prefix("tag:") {
        let key = key.trim();
        if key.is_empty() {
            return Err("tag: needs a tag key, e.g. tag:CostCenter".to_owned());
        }
        if key.chars().count() > MAX_TAG_KEY_CHARS {
            return Err(format!(
                "the tag key is longer than the {MAX_TAG_KEY_CHARS} characters AWS allows"
            ));
        }
        return Ok(FieldSource::Tag(key.to_owned()));
    }
    for q in ['\'', '"'] {
        if let Some(inner) = source.strip_prefix(q) {
            let Some(text) = inner.strip_suffix(q) else {
                return Err("the quoted literal is not closed".to_owned());
            };
            if text.trim().is_empty() {
                return Err("the literal is empty".to_owned());
            }
            if text.chars().count() > MAX_VALUE_CHARS {
                return Err(format!(
                    "the literal is longer than {MAX_VALUE_CHARS} characters"
                ));
            }
            return Ok(FieldSource::Literal(text.to_owned()));
        }
    }
    match source {
        "ou" => Ok(FieldSource::Ou),
        "name" => Ok(FieldSource::Name),
        "alias" => Ok(FieldSource::Alias),
        other => Err(format!(
            "unknown source {other:?}: expected tag:KEY, ou, name, alias or a quoted 'literal'"
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn parse(specs: &[&str]) -> Result<AccountFields, String> {
        AccountFields::parse(specs).map_err(|e| e.to_string())
    }

    #[test]
    fn the_typical_specs_parse_from_flags_and_from_one_list() {
        let want = vec![
            AccountField {
                field: "dt.security_context".into(),
                source: FieldSource::Tag("dt-security-context".into()),
            },
            AccountField {
                field: "dt.cost.costcenter".into(),
                source: FieldSource::Tag("CostCenter".into()),
            },
            AccountField {
                field: "aws.organization.unit".into(),
                source: FieldSource::Ou,
            },
            AccountField {
                field: "team.owner".into(),
                source: FieldSource::Literal("Payments, EMEA".into()),
            },
            AccountField {
                field: "aws.org.account_name".into(),
                source: FieldSource::Name,
            },
            AccountField {
                field: "aws.org.alias".into(),
                source: FieldSource::Alias,
            },
        ];
        let flags = parse(&[
            "dt.security_context=tag:dt-security-context",
            "dt.cost.costcenter = tag:CostCenter",
            "aws.organization.unit=ou",
            "team.owner='Payments, EMEA'",
            "aws.org.account_name=name,aws.org.alias=alias",
        ])
        .expect("flags");
        assert_eq!(flags.0, want);
        let list = parse(&[&flags.to_string()]).expect("list");
        assert_eq!(list, flags, "Display is the ACCOUNT_FIELDS spelling");
        assert_eq!(
            flags.to_string(),
            "dt.security_context=tag:dt-security-context,dt.cost.costcenter=tag:CostCenter,\
             aws.organization.unit=ou,team.owner='Payments, EMEA',aws.org.account_name=name,\
             aws.org.alias=alias"
        );
        assert_eq!(
            flags.needs(),
            ContextNeeds {
                org_name: true,
                tags: true,
                ou: true
            }
        );
        assert!(parse(&["", " , "]).expect("blank").is_empty());
    }

    #[test]
    fn only_the_lookups_the_sources_need() {
        let f = parse(&["a.b='x'", "c.d=alias"]).expect("parse");
        assert_eq!(f.needs(), ContextNeeds::default());
        assert!(f.needs_lookup());
        let f = parse(&["a.b='x'"]).expect("parse");
        assert!(!f.needs_lookup());
        assert_eq!(
            parse(&["a.b=tag:K"]).expect("parse").needs(),
            ContextNeeds {
                tags: true,
                ..ContextNeeds::default()
            }
        );
    }

    #[test]
    fn bad_specs_name_the_bad_entry() {
        for (specs, entry, reason) in [
            (
                vec!["ok.field=ou,nofield"],
                "nofield",
                "expected FIELD=SOURCE",
            ),
            (vec!["=ou"], "=ou", "empty"),
            (vec!["security_context=ou"], "security_context=ou", "dotted"),
            (vec!["a..b=ou"], "a..b=ou", "dotted"),
            (vec!["a.b$=ou"], "a.b$=ou", "dotted"),
            (vec!["1a.b=ou"], "1a.b=ou", "dotted"),
            (vec!["a.b=tag:"], "a.b=tag:", "tag key"),
            (vec!["a.b=tags:X"], "a.b=tags:X", "unknown source"),
            (vec!["a.b=literal"], "a.b=literal", "unknown source"),
            (vec!["a.b=''"], "a.b=''", "empty"),
            (vec!["a.b='open"], "a.b='open", "not closed"),
            (vec!["a.b=ou", "a.b=name"], "a.b=name", "twice"),
            (
                vec!["aws.account.name=tag:x"],
                "aws.account.name=tag:x",
                "reserved",
            ),
            (
                vec!["finding.severity='LOW'"],
                "finding.severity='LOW'",
                "reserved",
            ),
            (vec!["aws.region=ou"], "aws.region=ou", "reserved"),
        ] {
            let e = parse(&specs).expect_err(entry);
            assert!(e.contains(&format!("{entry:?}")), "{e}");
            assert!(e.contains(reason), "{entry}: {e}");
        }
        let long_key = format!("a.b=tag:{}", "k".repeat(129));
        assert!(parse(&[&long_key]).is_err());
        let long_name = format!("a.{}=ou", "b".repeat(99));
        assert!(parse(&[&long_name]).is_err());
        let many: Vec<String> = (0..=MAX_ACCOUNT_FIELDS)
            .map(|i| format!("f.n{i}=ou"))
            .collect();
        let e = AccountFields::parse(&many)
            .expect_err("too many")
            .to_string();
        assert!(e.contains("21") && e.contains("20"), "{e}");
    }

    #[test]
    fn values_come_from_the_account_and_are_bounded() {
        let f = parse(&[
            "dt.security_context=tag:dt-security-context",
            "dt.cost.costcenter=tag:CostCenter",
            "aws.organization.unit=ou",
            "org.name=name",
            "org.alias=alias",
            "team.owner='payments'",
        ])
        .expect("parse");
        let info = AccountInfo {
            alias: Some("prod-payments".into()),
            org_name: Some("Payments Prod".into()),
            tags: Some(BTreeMap::from([
                ("dt-security-context".to_owned(), "x".repeat(2000)),
                ("CostCenter".to_owned(), "  ".to_owned()),
            ])),
            ou_path: Some("Root/Workloads/Prod".into()),
            ..AccountInfo::default()
        };
        let got = f.resolve(Some(&info));
        assert_eq!(
            got.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            vec![
                "dt.security_context",
                "aws.organization.unit",
                "org.name",
                "org.alias",
                "team.owner"
            ],
            "a blank tag value sets nothing"
        );
        assert_eq!(got[0].1.chars().count(), MAX_VALUE_CHARS);
        assert_eq!(got[1].1, "Root/Workloads/Prod");
        assert_eq!(
            f.resolve(None),
            vec![("team.owner".to_owned(), "payments".to_owned())],
            "a failed lookup sets only the literals"
        );
        assert_eq!(
            f.resolve(Some(&AccountInfo::default())),
            vec![("team.owner".to_owned(), "payments".to_owned())]
        );
    }
}
