//! `gdfwd accounts`: resolves account names (and the `--account-field` values) the way the
//! forwarder would, to check the alias role and Organizations access before (or after) a rollout.

use std::process::ExitCode;

use gdfwd_enrich_aws::{EnrichArgs, build_lookup, resolve_all};

use crate::render::OutputArgs;

#[derive(Debug, clap::Args)]
pub struct AccountsArgs {
    /// Account ids to resolve; default: every account of the organization
    /// (organizations:ListAccounts).
    #[arg(value_name = "ACCOUNT_ID")]
    pub accounts: Vec<String>,

    #[command(flatten)]
    pub output: OutputArgs,

    /// Lookups at a time (1..=64).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,

    #[command(flatten)]
    pub enrich: EnrichArgs,
}

pub async fn run(args: AccountsArgs) -> anyhow::Result<ExitCode> {
    if !args.enrich.enabled() {
        return Err(crate::Usage(
            "gdfwd accounts resolves account names, which --no-enrich (or ENRICH=false) turns off: nothing to do"
                .to_owned(),
        )
        .into());
    }
    let config = args
        .enrich
        .config()
        .map_err(|e| crate::Usage(e.to_string()))?;
    let lookup = build_lookup(&config, crate::aws::sdk_config().await);
    let ids = if args.accounts.is_empty() {
        lookup
            .organization_accounts()
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    } else {
        args.accounts.clone()
    };
    let reports = resolve_all(
        &lookup,
        &ids,
        &config.account_fields,
        config.budget,
        usize::from(args.concurrency),
    )
    .await;
    let format = args.output.format();
    print!(
        "{}",
        crate::render::accounts::accounts(&reports, &config.account_fields, format)
    );
    let unresolved = reports.iter().filter(|r| r.name.is_none()).count();
    if unresolved > 0 {
        eprintln!(
            "{unresolved} of {} accounts have no name (see the error column)",
            reports.len()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
