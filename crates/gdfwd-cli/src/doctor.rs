//! `gdfwd doctor`: does every account and region of the Organization reach Dynatrace? Parses the
//! flags, builds the adapters (GuardDuty client, AWS inspector, store, alias-role lookup, the
//! sender's token and endpoint), and hands them to `gdfwd_doctor`, where the checks live.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use gdfwd_core::timespec::parse_time;
use gdfwd_core::{Clock, SystemClock};
use gdfwd_doctor::collect::RELAY_STACK_SET;
use gdfwd_doctor::{AliasRoleProbe, ObserveError, Ports, Scope};
use gdfwd_enrich_aws::{AwsAccountLookup, EnrichArgs, build_lookup};
use gdfwd_guardduty::{ClientConfig, GuardDutyClient};

use crate::Usage;
use crate::render::{self, OutputArgs};
use crate::store::{StoreArgs, StoreSpec};

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Regions to check (comma-separated), or `all-enabled` for every region enabled in the
    /// account; default: the configured AWS region.
    #[arg(long, value_delimiter = ',', value_name = "REGIONS")]
    pub regions: Vec<String>,

    /// The forwarder's region (its stack, queues and table); default: the configured AWS region.
    #[arg(long, value_name = "REGION")]
    pub home_region: Option<String>,

    /// The forwarder stack's name.
    #[arg(long, default_value = "gdfwd", value_name = "NAME")]
    pub stack: String,

    /// The relay StackSet's name (its instances are checked when it is visible).
    #[arg(long, default_value = RELAY_STACK_SET, value_name = "NAME")]
    pub relay_stack_set: String,

    /// The forwarder's DynamoDB table: short for `--store dynamodb:TABLE`; default: the table of
    /// `--stack` (nested stacks included).
    #[arg(long, value_name = "TABLE", conflicts_with = "store")]
    pub table: Option<String>,

    #[command(flatten)]
    pub store: StoreArgs,

    /// The window of the flow checks: findings updated (GuardDuty) or seen (store) since then;
    /// RFC 3339 or relative (`7d`, `24h`).
    #[arg(long, default_value = "7d", value_name = "TIME")]
    pub since: String,

    #[command(flatten)]
    pub output: OutputArgs,

    /// Also check the Dynatrace endpoint: read the token (as `forward` does) and POST an empty
    /// JSON array `[]` to the endpoint, which ingests nothing; any answer but 401/403/404 passes.
    #[arg(long)]
    pub check_endpoint: bool,

    /// AWS calls at a time per kind (regions, accounts), 1..=64.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,

    #[command(flatten)]
    pub enrich: EnrichArgs,

    #[command(flatten)]
    pub sender: gdfwd_sink_http::SenderArgs,
}

/// The alias role through enrichment's own lookup, so doctor checks exactly what the forwarder
/// does.
struct AliasProbe(Arc<AwsAccountLookup>);

#[async_trait::async_trait]
impl AliasRoleProbe for AliasProbe {
    async fn probe(&self, account: &str) -> Result<(), String> {
        self.0.probe_alias_role(account).await
    }
}

pub async fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let format = args
        .output
        .format_among("gdfwd doctor", &render::doctor::FORMATS)?;
    let now = SystemClock.now();
    let since = parse_time(&args.since, now).map_err(|e| Usage(format!("--since: {e}")))?;
    let sdk = crate::aws::sdk_config().await;
    let home_region = home_region(&args, sdk)?;
    // Configuration errors first, before any AWS call.
    let endpoint = if args.check_endpoint {
        Some(crate::endpoint::probe(args.sender.clone()).await?)
    } else {
        None
    };
    let guardduty = Arc::new(GuardDutyClient::from_sdk(sdk, ClientConfig::default())?);
    let regions = regions_with_home(&args, &guardduty, &home_region).await?;
    let enrich = args.enrich.config().map_err(|e| Usage(e.to_string()))?;
    let lookup = Arc::new(build_lookup(&enrich, sdk));
    let scope = Scope {
        own_account: own_account(&lookup).await,
        home_region,
        regions,
        stack_name: args.stack.clone(),
        relay_stack_set: args.relay_stack_set.clone(),
        since,
        concurrency: usize::from(args.concurrency),
    };
    let aws = Arc::new(gdfwd_inspect_aws::AwsInspect::new(sdk));
    let store = store_spec(&args, aws.as_ref(), &scope).await;
    let ports = Ports {
        guardduty,
        aws,
        store: open_store(&args.store, store).await,
        alias: args
            .enrich
            .enabled()
            .then(|| Arc::new(AliasProbe(lookup.clone())) as Arc<dyn AliasRoleProbe>),
        endpoint,
    };
    let (progress, bar) = progress();
    let observations = gdfwd_doctor::collect(&scope, &ports, progress).await;
    bar.finish_and_clear();
    let report = gdfwd_doctor::diagnose(&observations);
    print!("{}", render::doctor::report(&report, format));
    Ok(if report.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `--home-region`, else the SDK's configured region; neither is a usage error.
fn home_region(args: &DoctorArgs, sdk: &aws_config::SdkConfig) -> anyhow::Result<String> {
    match (&args.home_region, sdk.region()) {
        (Some(r), _) => Ok(r.clone()),
        (None, Some(r)) => Ok(r.to_string()),
        (None, None) => {
            Err(Usage("no home region: give --home-region or set AWS_REGION".to_owned()).into())
        }
    }
}

/// `--regions` (as `backfill` reads them) and the home region, sorted.
async fn regions_with_home(
    args: &DoctorArgs,
    guardduty: &GuardDutyClient,
    home_region: &str,
) -> anyhow::Result<Vec<String>> {
    let mut regions = crate::backfill::resolve_regions(&args.regions, guardduty).await?;
    if !regions.iter().any(|r| r == home_region) {
        regions.push(home_region.to_owned());
        regions.sort();
    }
    Ok(regions)
}

/// This account's id, or `None` (with a warning) when STS cannot say.
async fn own_account(lookup: &AwsAccountLookup) -> Option<String> {
    match lookup.own_account_id().await {
        Ok(id) => Some(id.to_owned()),
        Err(e) => {
            tracing::warn!(error = %e, "own account unknown; checks that compare with it say ADMIN_ACCOUNT_ID");
            None
        }
    }
}

/// The store the flow checks read: `--table`, else an explicit `--store` (or `GDFWD_STORE`), else
/// the forwarder stack's own table, else the default store (whose absence is then reported).
async fn store_spec(
    args: &DoctorArgs,
    aws: &dyn gdfwd_doctor::AwsInspector,
    scope: &Scope,
) -> StoreSpec {
    if let Some(t) = &args.table {
        return StoreSpec::DynamoDb(t.clone());
    }
    if args.store.store != StoreSpec::Sqlite(None) {
        return args.store.store.clone();
    }
    match gdfwd_doctor::collect::forwarder_table(aws, &scope.home_region, &scope.stack_name).await {
        Some(t) => StoreSpec::DynamoDb(t),
        None => args.store.store.clone(),
    }
}

/// `spec` opened as it exists; a failure to open it makes the flow checks `unknown` instead of
/// stopping the others.
async fn open_store(
    args: &StoreArgs,
    spec: StoreSpec,
) -> Result<Arc<dyn gdfwd_core::store::StateStore>, ObserveError> {
    let mut store = args.clone();
    store.store = spec;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    store
        .open_existing(clock)
        .await
        .with_context(|| format!("opening the dedup store {}", store.store))
        .map_err(|e| {
            let message = gdfwd_aws_error::chain(e.as_ref());
            if message.contains("AccessDenied") {
                ObserveError::Denied {
                    permission: "dynamodb:DescribeTable and dynamodb:Query on the table".to_owned(),
                    message,
                }
            } else {
                ObserveError::Failed {
                    operation: format!("opening the dedup store {}", store.store),
                    message,
                }
            }
        })
}

/// A bar on stderr, shown only on a terminal and only once the run has taken over a second.
fn progress() -> (gdfwd_doctor::Progress, indicatif::ProgressBar) {
    let bar = indicatif::ProgressBar::hidden();
    bar.set_style(
        indicatif::ProgressStyle::with_template("gdfwd doctor: {bar:30} {pos}/{len} checks")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let b = bar.clone();
    let cb: gdfwd_doctor::Progress = Arc::new(move |done, total| {
        b.set_length(total);
        b.set_position(done);
        if tty && b.is_hidden() && started.elapsed().as_secs() >= 1 {
            b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
    });
    (cb, bar)
}
