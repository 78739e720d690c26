//! Command-line flags and environment variables of enrichment (feature `cli`), for the `gdfwd`
//! CLI. The Lambda reads the same variable names in its own configuration
//! (`gdfwd-lambda/src/config.rs`) and builds the same [`EnrichConfig`].

use std::time::Duration;

use clap::builder::BoolishValueParser;

use gdfwd_core::account_fields::AccountFields;

use crate::EnrichError;
use crate::build::EnrichConfig;
use crate::lookup::DEFAULT_ROLE_NAME;

/// Account enrichment (`aws.account.name` / `aws.account.alias`). `Debug` redacts the external id.
#[derive(Clone, clap::Args)]
pub struct EnrichArgs {
    /// Do not resolve account names (same as ENRICH=false).
    #[arg(long)]
    pub no_enrich: bool,

    /// Resolve account names: true/false (also yes/no, 1/0). `--no-enrich` wins.
    #[arg(
        long = "enrich",
        env = "ENRICH",
        value_name = "BOOL",
        default_value = "true",
        value_parser = BoolishValueParser::new(),
        action = clap::ArgAction::Set,
        hide = true
    )]
    pub enrich: bool,

    /// Role assumed in member accounts to read their IAM account alias.
    #[arg(long, env = "ALIAS_ROLE_NAME", default_value = DEFAULT_ROLE_NAME, value_parser = crate::lookup::parse_role_name)]
    pub alias_role_name: String,

    /// ExternalId for assuming the alias role, when its trust policy requires one.
    #[arg(long, env = "ALIAS_EXTERNAL_ID", hide_env_values = true)]
    pub alias_external_id: Option<String>,

    /// Time budget of one account lookup; over it the finding goes out without the name.
    #[arg(
        long,
        env = "ENRICH_TIMEOUT_MS",
        default_value_t = 2000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub enrich_timeout_ms: u64,

    /// How long resolved account names are cached (memory and state store).
    #[arg(
        long,
        env = "ENRICH_TTL_HOURS",
        default_value_t = 24,
        value_parser = clap::value_parser!(u64).range(1..=8760)
    )]
    pub enrich_ttl_hours: u64,

    /// Set FIELD on every event of an account's findings, from SOURCE: tag:KEY (the account's tag
    /// in AWS Organizations), ou (its organizational-unit path, Root/Workloads/Prod), name (its
    /// Organizations name), alias (its IAM alias) or 'literal'. Repeatable, or comma-separated,
    /// e.g. dt.security_context=tag:dt-security-context. tag:, ou and name need the forwarder to
    /// run in the management account or a delegated administrator for AWS Organizations.
    #[arg(
        long = "account-field",
        env = "ACCOUNT_FIELDS",
        value_name = "FIELD=SOURCE"
    )]
    pub account_field: Vec<String>,
}

impl std::fmt::Debug for EnrichArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrichArgs")
            .field("no_enrich", &self.no_enrich)
            .field("enrich", &self.enrich)
            .field("alias_role_name", &self.alias_role_name)
            .field(
                "alias_external_id",
                &crate::lookup::redacted(&self.alias_external_id),
            )
            .field("enrich_timeout_ms", &self.enrich_timeout_ms)
            .field("enrich_ttl_hours", &self.enrich_ttl_hours)
            .field("account_field", &self.account_field)
            .finish()
    }
}

impl EnrichArgs {
    pub fn enabled(&self) -> bool {
        self.enrich && !self.no_enrich
    }

    /// The settings; an error when an account field spec is unusable or account fields are
    /// configured with enrichment off.
    pub fn config(&self) -> Result<EnrichConfig, EnrichError> {
        let config = EnrichConfig {
            enabled: self.enabled(),
            role_name: self.alias_role_name.clone(),
            external_id: self.alias_external_id.clone().filter(|x| !x.is_empty()),
            budget: Duration::from_millis(self.enrich_timeout_ms),
            ttl: Duration::from_secs(self.enrich_ttl_hours * 3600),
            account_fields: AccountFields::parse(&self.account_field)?,
            ..EnrichConfig::default()
        };
        config.check()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        enrich: EnrichArgs,
    }

    // Environment variables are process-global and tests run in parallel, so only the flag side is
    // tested here; `ENRICH` uses the same parser as `--enrich`.
    fn parse(args: &[&str]) -> Result<EnrichConfig, String> {
        Cli::try_parse_from(std::iter::once("gdfwd").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?
            .enrich
            .config()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).expect("parse");
        assert_eq!(c, EnrichConfig::default());
    }

    #[test]
    fn enrichment_can_be_turned_off_by_flag_or_by_value() {
        assert!(!parse(&["--no-enrich"]).expect("parse").enabled);
        assert!(!parse(&["--enrich", "false"]).expect("parse").enabled);
        assert!(
            !parse(&["--enrich=true", "--no-enrich"])
                .expect("parse")
                .enabled
        );
        assert!(parse(&["--enrich", "true"]).expect("parse").enabled);
        assert!(parse(&["--enrich", "maybe"]).is_err());
    }

    #[test]
    fn role_timeout_and_ttl() {
        let c = parse(&[
            "--alias-role-name",
            "Reader",
            "--alias-external-id",
            "zz-xid-42",
            "--enrich-timeout-ms",
            "500",
            "--enrich-ttl-hours",
            "6",
        ])
        .expect("parse");
        assert_eq!(c.role_name, "Reader");
        assert_eq!(c.external_id.as_deref(), Some("zz-xid-42"));
        assert!(!format!("{c:?}").contains("zz-xid-42"), "{c:?}");
        assert_eq!(c.budget, Duration::from_millis(500));
        assert_eq!(c.ttl, Duration::from_secs(6 * 3600));
        assert!(parse(&["--enrich-timeout-ms", "0"]).is_err());
    }

    #[test]
    fn a_role_path_or_arn_is_refused_as_the_lambda_refuses_it() {
        for bad in [
            "role/with/slash",
            "arn:aws:iam::111122223333:role/R",
            "",
            &"R".repeat(65),
        ] {
            assert!(parse(&["--alias-role-name", bad]).is_err(), "{bad:?}");
        }
        assert!(parse(&["--alias-role-name", "a+b=c,d.e@f_g-h"]).is_ok());
    }

    #[test]
    fn account_fields_repeat_or_come_as_one_list() {
        let c = parse(&[
            "--account-field",
            "dt.security_context=tag:dt-security-context",
            "--account-field",
            "dt.cost.costcenter=tag:CostCenter,aws.organization.unit=ou",
        ])
        .expect("parse");
        assert_eq!(
            c.account_fields.to_string(),
            "dt.security_context=tag:dt-security-context,dt.cost.costcenter=tag:CostCenter,\
             aws.organization.unit=ou"
        );
        let needs = c.lookup_options().context;
        assert!(needs.tags && needs.ou && !needs.org_name, "{needs:?}");
        assert!(parse(&[]).expect("parse").account_fields.is_empty());
        assert!(!parse(&[]).expect("parse").lookup_options().context.any());

        let e = parse(&["--account-field", "dt.security_context=tags:x"]).expect_err("bad");
        assert!(e.contains("\"dt.security_context=tags:x\""), "{e}");
        let e = parse(&["--no-enrich", "--account-field", "a.b='x'"]).expect_err("off");
        assert!(e.contains("enrichment, which is off"), "{e}");
    }
}
