//! The function's configuration, read once at init from environment variables.
//!
//! Parsing is a pure function from a map of variables to a [`Config`] (or a [`ConfigError`] that
//! names the variable), so every rule is unit-tested without touching the process environment, and
//! a misconfigured function fails at init with one clear line instead of failing every invocation.
//!
//! Names follow Dynatrace's own CloudFormation template where it has one
//! (`DYNATRACE_OPENPIPELINE_SECURITY_ENDPOINT`, `AWS_SECRET_ARN`, `AWS_SECRET_KEY_NAME`); the rest
//! are the ones `cloudformation/forwarder.yaml` sets. An empty value counts as unset, because
//! CloudFormation passes empty strings for optional parameters left blank.
//!
//! The filter variables (`INCLUDE_TYPES`, `ARCHIVED_FINDINGS`, ... : [`FilterInput::env_var`])
//! go through [`FindingFilter::apply`], the parser the CLI's flags use, so a value means the
//! same in both.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use std::num::NonZeroU32;

use gdfwd_core::limits::{self, Range};
use gdfwd_model::{FilterInput, FindingFilter, Format};
use gdfwd_sink_http::HttpSinkConfig;

// The sender's names, shared with the CLI's flags (`gdfwd_sink_http::config::env`).
pub const ENDPOINT: &str = gdfwd_sink_http::config::env::ENDPOINT;
pub const SECRET_ARN: &str = gdfwd_sink_http::config::env::SECRET_ARN;
pub const SECRET_KEY_NAME: &str = gdfwd_sink_http::config::env::SECRET_KEY_NAME;
pub const DEDUP_TABLE_NAME: &str = "DEDUP_TABLE_NAME";
pub const PAYLOAD_FORMAT: &str = "PAYLOAD_FORMAT";
pub const MAX_EVENTS_PER_SECOND: &str = "MAX_EVENTS_PER_SECOND";
pub const MAX_REQUESTS_PER_SECOND: &str = "MAX_REQUESTS_PER_SECOND";
pub const MAX_CONCURRENCY: &str = "MAX_CONCURRENCY";
pub const ALIAS_ROLE_NAME: &str = "ALIAS_ROLE_NAME";
pub const ALIAS_EXTERNAL_ID: &str = "ALIAS_EXTERNAL_ID";
pub const ENRICH: &str = "ENRICH";
pub const ACCOUNT_FIELDS: &str = "ACCOUNT_FIELDS";
pub const DEDUP_TTL_DAYS: &str = "DEDUP_TTL_DAYS";
pub const DEDUP_LEASE_SECONDS: &str = "DEDUP_LEASE_SECONDS";
pub const CA_FILE: &str = gdfwd_sink_http::config::env::CA_FILE;
pub const LOG_LEVEL: &str = "LOG_LEVEL";

/// Dynatrace's template default for the JSON key inside the secret.
pub const DEFAULT_SECRET_KEY_NAME: &str = gdfwd_sink_http::token::DEFAULT_SECRET_KEY_NAME;
/// The role the member-alias-role StackSet creates (one name for the CLI, the Lambda and the
/// templates' `AliasRoleName` default; a unit test below pins it).
pub const DEFAULT_ALIAS_ROLE_NAME: &str = gdfwd_enrich_aws::DEFAULT_ROLE_NAME;

/// Everything the function needs, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The OpenPipeline security events URL (https, or http to a loopback address for tests).
    pub endpoint: String,
    /// Secrets Manager secret holding the ingest token.
    pub secret_arn: String,
    /// JSON key inside the secret whose value is the token.
    pub secret_key_name: String,
    /// DynamoDB dedup/audit table.
    pub dedup_table: String,
    pub format: Format,
    pub max_events_per_second: u32,
    pub max_requests_per_second: u32,
    /// The event source mapping's maximum concurrency (how many instances share the rate limits).
    pub max_concurrency: u32,
    pub enrich: bool,
    pub alias_role_name: String,
    /// Kept out of `Debug`-printed logs by [`Config::summary`]; it is a shared secret of sorts.
    pub alias_external_id: Option<String>,
    /// Account context fields set on every event (`FIELD=SOURCE,...`, as `--account-field`).
    pub account_fields: gdfwd_core::account_fields::AccountFields,
    /// How long dedup records are kept after their last update.
    pub dedup_retention: Duration,
    /// Claim lease while a finding version is being sent.
    pub dedup_lease: Duration,
    /// Extra trusted CA (PEM), for TLS-inspecting egress proxies.
    pub ca_file: Option<PathBuf>,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub log_level: String,
    /// Which findings are forwarded (one variable per filter input; docs/filters.md).
    pub filter: FindingFilter,
}

/// A variable is missing or its value is unusable. The message names the variable, the value
/// (never for secrets: none of the variables holds one) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

/// The filter from its variables; a blank one is unset (the default applies).
fn filter_from(get: &impl Fn(&str) -> Option<String>) -> Result<FindingFilter, ConfigError> {
    let mut filter = FindingFilter::default();
    for input in FilterInput::ALL {
        let var = input.env_var();
        if let Some(value) = get(var) {
            filter.apply(input, &value, var).map_err(|e| match e {
                // The model's message starts with the name it was given; ours adds it.
                gdfwd_model::ModelError::Filter { value, why, .. } => {
                    err(var, format!("{value:?}: {why}"))
                }
                other => err(var, other.to_string()),
            })?;
        }
    }
    Ok(filter)
}

fn err(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        message: message.into(),
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// Reads the configuration from `vars` (a copy of the environment).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            vars.get(name)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let required = |name: &'static str, what: &str| {
            get(name).ok_or_else(|| err(name, format!("is not set: {what}")))
        };

        let endpoint = required(ENDPOINT, "the Dynatrace OpenPipeline security events URL")?;
        check_endpoint(&endpoint)?;
        let secret_arn = secret_arn(required(
            SECRET_ARN,
            "the ARN of the secret holding the ingest token",
        )?)?;
        let secret_key_name =
            get(SECRET_KEY_NAME).unwrap_or_else(|| DEFAULT_SECRET_KEY_NAME.to_owned());
        let dedup_table = required(DEDUP_TABLE_NAME, "the DynamoDB dedup table name")?;
        gdfwd_store_dynamodb::validate_table_name(&dedup_table)
            .map_err(|e| err(DEDUP_TABLE_NAME, e.to_string()))?;
        let format = match get(PAYLOAD_FORMAT) {
            None => Format::Raw,
            Some(v) => v.parse().map_err(|e: String| err(PAYLOAD_FORMAT, e))?,
        };
        let max_events_per_second = number(&get, MAX_EVENTS_PER_SECOND, EVENTS_PER_SECOND)?;
        let max_requests_per_second = number(&get, MAX_REQUESTS_PER_SECOND, REQUESTS_PER_SECOND)?;
        let max_concurrency = number(&get, MAX_CONCURRENCY, limits::MAX_CONCURRENCY)?;
        let enrich = get(ENRICH).map_or(Ok(true), |v| switch(ENRICH, &v))?;
        let alias_role_name = match get(ALIAS_ROLE_NAME) {
            Some(name) => {
                gdfwd_enrich_aws::parse_role_name(&name).map_err(|e| err(ALIAS_ROLE_NAME, e))?
            }
            None => DEFAULT_ALIAS_ROLE_NAME.to_owned(),
        };
        let alias_external_id = get(ALIAS_EXTERNAL_ID);
        let account_fields = account_fields(get(ACCOUNT_FIELDS), enrich)?;
        let ttl_days = number(&get, DEDUP_TTL_DAYS, limits::RETENTION_DAYS)?;
        let lease_seconds = number(&get, DEDUP_LEASE_SECONDS, limits::LEASE_SECONDS)?;
        let filter = filter_from(&get)?;
        let ca_file = get(CA_FILE).map(ca_file).transpose()?;
        let log_level = log_level(get(LOG_LEVEL))?;

        Ok(Self {
            endpoint,
            secret_arn,
            secret_key_name,
            dedup_table,
            format,
            max_events_per_second,
            max_requests_per_second,
            max_concurrency,
            enrich,
            alias_role_name,
            alias_external_id,
            account_fields,
            dedup_retention: Duration::from_secs(u64::from(ttl_days) * 86_400),
            dedup_lease: Duration::from_secs(u64::from(lease_seconds)),
            ca_file,
            log_level,
            filter,
        })
    }

    /// The sender's configuration, built and checked by the sender's own rules (an endpoint
    /// error names [`ENDPOINT`]).
    pub fn sink_config(&self) -> Result<HttpSinkConfig, ConfigError> {
        let mut c =
            HttpSinkConfig::new(&self.endpoint, true).map_err(|e| err(ENDPOINT, e.to_string()))?;
        c.ca_file = self.ca_file.clone();
        c.token.secret_arn = Some(self.secret_arn.clone());
        c.token.secret_key_name = self.secret_key_name.clone();
        c.max_events_per_second = NonZeroU32::new(self.max_events_per_second);
        c.max_requests_per_second = NonZeroU32::new(self.max_requests_per_second);
        c.max_concurrency = NonZeroU32::new(self.max_concurrency).unwrap_or(NonZeroU32::MIN);
        Ok(c)
    }

    /// The settings as a JSON object for the init log line (the external id is only said to be
    /// set, not shown).
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "endpoint": self.endpoint,
            "secret_arn": self.secret_arn,
            "secret_key_name": self.secret_key_name,
            "dedup_table": self.dedup_table,
            "format": self.format.to_string(),
            "max_events_per_second": self.max_events_per_second,
            "max_requests_per_second": self.max_requests_per_second,
            "max_concurrency": self.max_concurrency,
            "enrich": self.enrich,
            "alias_role_name": self.alias_role_name,
            "alias_external_id_set": self.alias_external_id.is_some(),
            "account_fields": self.account_fields.to_string(),
            "dedup_ttl_days": self.dedup_retention.as_secs() / 86_400,
            "dedup_lease_seconds": self.dedup_lease.as_secs(),
            "ca_file": self.ca_file.as_ref().map(|p| p.display().to_string()),
            "log_level": self.log_level,
            // Every setting that is not the default (empty: the defaults only).
            "filter": self.filter.to_string(),
        })
    }
}

/// A Secrets Manager secret ARN (its form only; whether it exists is a readiness check).
fn secret_arn(arn: String) -> Result<String, ConfigError> {
    if arn.starts_with("arn:") {
        Ok(arn)
    } else {
        Err(err(
            SECRET_ARN,
            format!(
                "expected a Secrets Manager secret ARN (arn:aws:secretsmanager:...), got {arn:?}"
            ),
        ))
    }
}

/// `true`/`false` (or 1/0, yes/no, on/off) of variable `var`.
fn switch(var: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(err(var, format!("expected true or false, got {v:?}"))),
    }
}

/// `ACCOUNT_FIELDS` (`FIELD=SOURCE,...`); refused with enrichment off, which resolves them.
fn account_fields(
    spec: Option<String>,
    enrich: bool,
) -> Result<gdfwd_core::account_fields::AccountFields, ConfigError> {
    let fields = gdfwd_core::account_fields::AccountFields::parse(spec.as_slice())
        .map_err(|e| err(ACCOUNT_FIELDS, e.to_string()))?;
    if !enrich && !fields.is_empty() {
        return Err(err(
            ACCOUNT_FIELDS,
            format!("{ENRICH} is false, but the account fields are set by account enrichment"),
        ));
    }
    Ok(fields)
}

/// `GDFWD_CA_FILE`: checked here, not when the HTTP client is built, so the error names the
/// variable.
fn ca_file(path: String) -> Result<PathBuf, ConfigError> {
    let path = PathBuf::from(path);
    if path.is_file() {
        Ok(path)
    } else {
        Err(err(
            CA_FILE,
            format!("{} is not a readable file", path.display()),
        ))
    }
}

/// `LOG_LEVEL` (default `info`), in the CLI's syntax: a level, or a tracing filter
/// (`info,gdfwd_core=debug`) without bare words (gdfwd_core::logfilter).
fn log_level(value: Option<String>) -> Result<String, ConfigError> {
    let level = value
        .unwrap_or_else(|| "info".to_owned())
        .to_ascii_lowercase();
    let problem = match gdfwd_core::logfilter::bare_word(&level) {
        Some(word) => Some(format!("{word:?} is neither a level nor target=level")),
        None => tracing_subscriber::EnvFilter::try_new(&level)
            .err()
            .map(|e| e.to_string()),
    };
    match problem {
        None => Ok(level),
        Some(e) => Err(err(
            LOG_LEVEL,
            format!(
                "expected error, warn, info, debug, trace or a filter such as info,gdfwd_core=debug, got {level:?} ({e})"
            ),
        )),
    }
}

/// The function's own rate-limit defaults (the template's): a conservative share of a tenant's
/// ingest limits.
const EVENTS_PER_SECOND: Range = Range {
    min: 1,
    max: 1_000_000,
    default: 100,
};
const REQUESTS_PER_SECOND: Range = Range {
    min: 1,
    max: 100_000,
    default: 10,
};

fn number(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    range: Range,
) -> Result<u32, ConfigError> {
    let Some(v) = get(var) else {
        return Ok(range.default);
    };
    match v.parse::<u32>() {
        Ok(n) if range.contains(n) => Ok(n),
        _ => Err(err(
            var,
            format!(
                "expected a whole number from {} to {}, got {v:?}",
                range.min, range.max
            ),
        )),
    }
}

/// `https://host/...`; plain `http://` only to a loopback host (tests, local benchmarks): the token
/// must never travel unencrypted over a network. The sender's own rule, so the function refuses
/// what the CLI refuses (credentials, a query string), and says so without repeating them.
fn check_endpoint(url: &str) -> Result<(), ConfigError> {
    gdfwd_sink_http::config::validate_endpoint(url, true)
        .map(drop)
        .map_err(|e| err(ENDPOINT, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:dt-token-AbCdEf";

    fn minimal() -> HashMap<String, String> {
        [
            (
                ENDPOINT,
                "https://abc12345.live.dynatrace.com/platform/ingest/v1/security.events",
            ),
            (SECRET_ARN, ARN),
            (DEDUP_TABLE_NAME, "gdfwd-dedup"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn with(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        let mut m = minimal();
        for (k, v) in pairs {
            m.insert((*k).to_owned(), (*v).to_owned());
        }
        m
    }

    fn error_of(vars: &HashMap<String, String>) -> ConfigError {
        Config::from_vars(vars).expect_err("config should be refused")
    }

    #[test]
    fn minimal_config_takes_the_template_defaults() {
        let c = Config::from_vars(&minimal()).expect("valid");
        assert_eq!(c.secret_key_name, DEFAULT_SECRET_KEY_NAME);
        assert_eq!(c.format, Format::Raw);
        assert_eq!(c.max_events_per_second, 100);
        assert_eq!(c.max_requests_per_second, 10);
        assert_eq!(c.max_concurrency, 2);
        assert!(c.enrich);
        assert_eq!(c.alias_role_name, DEFAULT_ALIAS_ROLE_NAME);
        assert_eq!(
            c.alias_role_name, "GuardDutyForwarderAliasReader",
            "the name the member-alias-role StackSet creates"
        );
        assert_eq!(c.alias_external_id, None);
        assert_eq!(c.dedup_retention, Duration::from_secs(90 * 86_400));
        assert_eq!(c.dedup_lease, Duration::from_secs(300));
        assert_eq!(c.ca_file, None);
        assert_eq!(c.log_level, "info");
    }

    #[test]
    fn log_level_takes_a_level_or_a_filter_as_the_cli_does() {
        for ok in [
            "debug",
            "WARN",
            "info,gdfwd_core=debug",
            "gdfwd_sink_http=trace",
        ] {
            let c = Config::from_vars(&with(&[(LOG_LEVEL, ok)])).expect(ok);
            assert_eq!(c.log_level, ok.to_ascii_lowercase());
        }
        for bad in ["verbose", "info,loud", "gdfwd=notalevel"] {
            let e = error_of(&with(&[(LOG_LEVEL, bad)]));
            assert_eq!(e.var, LOG_LEVEL, "{bad}: {e}");
        }
    }

    #[test]
    fn every_variable_is_read() {
        let ca = tempfile_path();
        let c = Config::from_vars(&with(&[
            (SECRET_KEY_NAME, "token"),
            (PAYLOAD_FORMAT, "Semantic"),
            (MAX_EVENTS_PER_SECOND, "250"),
            (MAX_REQUESTS_PER_SECOND, "20"),
            (MAX_CONCURRENCY, "5"),
            (ENRICH, "false"),
            (ALIAS_ROLE_NAME, "reader-role"),
            (ALIAS_EXTERNAL_ID, "ext-123"),
            (DEDUP_TTL_DAYS, "7"),
            (DEDUP_LEASE_SECONDS, "2"),
            (CA_FILE, ca.to_str().expect("utf-8 path")),
            (LOG_LEVEL, "DEBUG"),
        ]))
        .expect("valid");
        assert_eq!(c.secret_key_name, "token");
        assert_eq!(c.format, Format::Semantic);
        assert_eq!(c.max_events_per_second, 250);
        assert_eq!(c.max_requests_per_second, 20);
        assert_eq!(c.max_concurrency, 5);
        assert!(!c.enrich);
        assert_eq!(c.alias_role_name, "reader-role");
        assert_eq!(c.alias_external_id.as_deref(), Some("ext-123"));
        assert_eq!(c.dedup_retention, Duration::from_secs(7 * 86_400));
        assert_eq!(c.dedup_lease, Duration::from_secs(2));
        assert_eq!(c.ca_file.as_deref(), Some(ca.as_path()));
        assert_eq!(c.log_level, "debug");
        assert_eq!(c.summary()["alias_external_id_set"], true);
        assert!(!c.summary().to_string().contains("ext-123"));
    }

    fn tempfile_path() -> PathBuf {
        // The crate's own manifest: a file that exists wherever the tests run.
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")
    }

    #[test]
    fn missing_required_variables_are_named() {
        for var in [ENDPOINT, SECRET_ARN, DEDUP_TABLE_NAME] {
            let mut vars = minimal();
            vars.remove(var);
            let e = error_of(&vars);
            assert_eq!(e.var, var);
            assert!(
                e.to_string().starts_with(&format!("{var}: is not set")),
                "{e}"
            );
            // Blank counts as unset.
            vars.insert(var.to_owned(), "  ".to_owned());
            assert_eq!(error_of(&vars).var, var);
        }
    }

    #[test]
    fn blank_optional_variables_take_defaults() {
        let c = Config::from_vars(&with(&[
            (ALIAS_EXTERNAL_ID, ""),
            (CA_FILE, ""),
            (PAYLOAD_FORMAT, ""),
        ]))
        .expect("valid");
        assert_eq!(c.alias_external_id, None);
        assert_eq!(c.ca_file, None);
        assert_eq!(c.format, Format::Raw);
    }

    #[test]
    fn bad_values_are_refused_naming_the_variable_and_value() {
        for (var, value) in [
            (ENDPOINT, "abc12345.live.dynatrace.com"),
            (ENDPOINT, "http://abc12345.live.dynatrace.com/x"),
            (ENDPOINT, "https:///path"),
            (ENDPOINT, "ftp://localhost/x"),
            (SECRET_ARN, "dt-token"),
            (DEDUP_TABLE_NAME, "a"),
            (DEDUP_TABLE_NAME, "bad name"),
            (PAYLOAD_FORMAT, "json"),
            (MAX_EVENTS_PER_SECOND, "0"),
            (MAX_EVENTS_PER_SECOND, "ten"),
            (MAX_REQUESTS_PER_SECOND, "-1"),
            (MAX_CONCURRENCY, "1001"),
            (ENRICH, "maybe"),
            (ALIAS_ROLE_NAME, "role/with/slash"),
            (DEDUP_TTL_DAYS, "3651"),
            (DEDUP_LEASE_SECONDS, "0"),
            (DEDUP_LEASE_SECONDS, "1.5"),
            (CA_FILE, "/nonexistent/ca.pem"),
            (LOG_LEVEL, "verbose"),
        ] {
            let e = error_of(&with(&[(var, value)]));
            assert_eq!(e.var, var, "{var}={value}: {e}");
            let shown = e.to_string();
            assert!(shown.starts_with(var), "{shown}");
            assert!(
                shown.contains(value.trim_start_matches('-')) || var == ENDPOINT,
                "the message quotes the value: {shown}"
            );
        }
    }

    #[test]
    fn http_is_allowed_to_loopback_only() {
        for url in [
            "http://127.0.0.1:8080/platform/ingest/v1/security.events",
            "http://localhost/x",
            "http://[::1]:9/x",
        ] {
            Config::from_vars(&with(&[(ENDPOINT, url)])).expect(url);
        }
        assert_eq!(
            error_of(&with(&[(ENDPOINT, "http://10.0.0.1/x")])).var,
            ENDPOINT
        );
    }

    /// A token in the endpoint's query or credentials in it fail init, and the message (which
    /// goes to CloudWatch and the Runtime API) does not repeat them.
    #[test]
    fn secrets_in_the_endpoint_fail_init_without_being_shown() {
        for url in [
            "https://abc.live.dynatrace.com/platform/ingest/v1/security.events?api-token=dt0c01.SECRET",
            "https://user:SECRET@abc.live.dynatrace.com/platform/ingest/v1/security.events",
        ] {
            let e = error_of(&with(&[(ENDPOINT, url)]));
            assert_eq!(e.var, ENDPOINT);
            assert!(!e.to_string().contains("SECRET"), "{e}");
        }
    }

    #[test]
    fn account_fields_are_one_comma_separated_variable() {
        let mut vars = minimal();
        assert!(
            Config::from_vars(&vars)
                .expect("minimal")
                .account_fields
                .is_empty()
        );
        vars.insert(
            ACCOUNT_FIELDS.to_owned(),
            " dt.security_context=tag:dt-security-context, aws.organization.unit=ou,\
              team.owner='Payments, EMEA' "
                .to_owned(),
        );
        let c = Config::from_vars(&vars).expect("config");
        assert_eq!(
            c.account_fields.to_string(),
            "dt.security_context=tag:dt-security-context,aws.organization.unit=ou,\
             team.owner='Payments, EMEA'"
        );
        let needs = c.account_fields.needs();
        assert!(needs.tags && needs.ou && !needs.org_name);
        assert_eq!(
            c.summary()["account_fields"],
            c.account_fields.to_string().as_str()
        );

        vars.insert(
            ACCOUNT_FIELDS.to_owned(),
            "dt.security_context=tag:x,costcenter=tag:CostCenter".to_owned(),
        );
        let e = Config::from_vars(&vars).expect_err("bad field name");
        assert_eq!(e.var, ACCOUNT_FIELDS);
        assert!(e.message.contains("\"costcenter=tag:CostCenter\""), "{e}");

        vars.insert(
            ACCOUNT_FIELDS.to_owned(),
            "dt.security_context=ou".to_owned(),
        );
        vars.insert(ENRICH.to_owned(), "false".to_owned());
        let e = Config::from_vars(&vars).expect_err("enrichment off");
        assert_eq!(e.var, ACCOUNT_FIELDS);
        assert!(e.message.contains("ENRICH is false"), "{e}");
    }

    #[test]
    fn filter_variables_are_read_with_the_cli_parser_and_blank_is_unset() {
        let c = Config::from_vars(&minimal()).expect("minimal");
        assert!(c.filter.is_default(), "archived excluded, samples included");
        assert_eq!(c.summary()["filter"], "");

        let mut pairs: Vec<(&str, &str)> = vec![
            ("INCLUDE_TYPES", "Recon:*, *:Kubernetes/*"),
            ("EXCLUDE_TYPES", "Recon:EC2/Portscan"),
            ("INCLUDE_ACCOUNTS", "111122223333"),
            ("EXCLUDE_ACCOUNTS", "444455556666"),
            ("INCLUDE_REGIONS", "eu-west-1,us-east-1"),
            ("EXCLUDE_REGIONS", "us-east-1"),
            ("INCLUDE_RESOURCE_TYPES", "Instance"),
            ("EXCLUDE_RESOURCE_TYPES", "S3Bucket"),
            ("MIN_SEVERITY", "7"),
            ("ARCHIVED_FINDINGS", "include"),
            ("SAMPLE_FINDINGS", "exclude"),
        ];
        let c = Config::from_vars(&with(&pairs)).expect("valid");
        // The same filter the CLI's flags build from the same strings.
        let mut expected = FindingFilter::default();
        for (var, value) in &pairs {
            let input = FilterInput::ALL
                .into_iter()
                .find(|i| i.env_var() == *var)
                .expect("a filter variable");
            expected.apply(input, value, var).expect("valid");
        }
        assert_eq!(c.filter, expected);
        assert_eq!(c.filter.types.include, ["*:Kubernetes/*", "Recon:*"]);
        assert_eq!(c.summary()["filter"], c.filter.to_string().as_str());
        assert_eq!(pairs.len(), FilterInput::ALL.len(), "every variable");

        // Blank, as CloudFormation passes an empty parameter: the default.
        for pair in &mut pairs {
            pair.1 = "";
        }
        assert!(
            Config::from_vars(&with(&pairs))
                .expect("blank")
                .filter
                .is_default()
        );
    }

    #[test]
    fn a_bad_filter_value_fails_init_naming_the_variable() {
        for (var, value) in [
            ("INCLUDE_TYPES", "Recon:*,,Backdoor:*"),
            ("EXCLUDE_ACCOUNTS", "1234"),
            ("INCLUDE_REGIONS", "Frankfurt"),
            ("EXCLUDE_RESOURCE_TYPES", "S3 Bucket"),
            ("MIN_SEVERITY", "high"),
            ("ARCHIVED_FINDINGS", "yes"),
            ("SAMPLE_FINDINGS", "no"),
        ] {
            let e = error_of(&with(&[(var, value)]));
            assert_eq!(e.var, var, "{e}");
            assert!(e.to_string().starts_with(&format!("{var}: \"")), "{e}");
        }
    }
}
