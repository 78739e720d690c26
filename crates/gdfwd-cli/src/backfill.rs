//! `gdfwd backfill` and `gdfwd audit gaps`: bulk ingest of the findings GuardDuty already holds,
//! and the list of versions it holds that the store never sent.
//!
//! Thin by design: arguments become a `FindingQuery`, a GuardDuty client (the finding source) and
//! a wired `Pipeline` (the same store, sink and enrichment as `forward`); the engines do the work
//! (`gdfwd_core::backfill` over the client, `gdfwd_guardduty::find_gaps`). Exit status: 0 all good, 1 some findings not delivered (or in
//! flight in another run) or a region failed, 130 interrupted (the checkpoint is saved; re-run to continue).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Usage;
use anyhow::Context;
use gdfwd_core::backfill::{
    Backfill, BackfillConfig, BackfillReport, NoProgress, PendingClaims, Progress, StopFn,
};
use gdfwd_core::pipeline::Summary;
use gdfwd_core::source::FindingQuery;
use gdfwd_core::{Clock, SystemClock};
use gdfwd_guardduty::{ClientConfig, GuardDutyClient, find_gaps, send_gaps};
use gdfwd_model::{FilterInput, Timestamp};

use crate::interrupt::{EXIT_INTERRUPTED, Interrupt};
use crate::render::progress::{BarsProgress, LogProgress};
use crate::render::{OutputArgs, printable};
use crate::store::StoreArgs;
use crate::wiring::PipelineArgs;

/// Which findings to read from GuardDuty (shared by `backfill` and `audit gaps`).
#[derive(Debug, Clone, clap::Args)]
pub struct SelectArgs {
    /// Oldest `updatedAt` to include: RFC 3339 or relative (`90d`, `12h`). GuardDuty keeps 90 days.
    #[arg(long, value_name = "TIME")]
    pub since: String,

    /// Newest `updatedAt` to include (exclusive); default: now, and whatever arrives meanwhile.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,

    /// Regions to read (comma-separated), or `all-enabled` for every region enabled in the
    /// account; default: the configured AWS region.
    #[arg(long, value_delimiter = ',', value_name = "REGIONS")]
    pub regions: Vec<String>,

    /// Only these member accounts (comma-separated ids): the same as --include-account.
    #[arg(long, value_name = "IDS")]
    pub accounts: Vec<String>,

    /// GuardDuty API calls per second, per region (GuardDuty throttles per account and region);
    /// 0 = unlimited. Throttled calls are retried with backoff either way.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub max_api_calls_per_second: u32,

    /// Regions processed at once.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=64))]
    pub region_concurrency: u64,
}

impl SelectArgs {
    /// The time range and `filter`, with `--accounts` added to its include-account list.
    fn query(&self, filter: &crate::filter::FilterArgs) -> anyhow::Result<FindingQuery> {
        let now = Timestamp::now();
        let since = gdfwd_core::timespec::parse_time(&self.since, now)
            .map_err(|e| Usage(format!("--since: {e}")))?;
        let until = self
            .until
            .as_deref()
            .map(|u| gdfwd_core::timespec::parse_time(u, now))
            .transpose()
            .map_err(|e| Usage(format!("--until: {e}")))?;
        if until.is_some_and(|u| u <= since) {
            return Err(Usage("--until must be later than --since".to_owned()).into());
        }
        let mut q = FindingQuery::new(since);
        q.until = until;
        q.filter = filter.filter()?;
        for accounts in &self.accounts {
            q.filter
                .apply(FilterInput::IncludeAccount, accounts, "--accounts")
                .map_err(|e| Usage(e.to_string()))?;
        }
        Ok(q)
    }

    async fn client(&self) -> anyhow::Result<Arc<GuardDutyClient>> {
        let sdk = crate::aws::sdk_config().await;
        let config = ClientConfig {
            max_calls_per_second: self.max_api_calls_per_second,
            ..ClientConfig::default()
        };
        Ok(Arc::new(GuardDutyClient::from_sdk(sdk, config)?))
    }

    async fn regions(&self, client: &GuardDutyClient) -> anyhow::Result<Vec<String>> {
        resolve_regions(&self.regions, client).await
    }
}

/// `--regions`: the given regions, every enabled one for `all-enabled`, else the configured
/// region; sorted, without repeats (backfill, audit gaps, doctor).
pub async fn resolve_regions(
    given: &[String],
    client: &GuardDutyClient,
) -> anyhow::Result<Vec<String>> {
    let mut regions: Vec<String> = given
        .iter()
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .collect();
    if regions.iter().any(|r| r == "all-enabled") {
        regions = client
            .list_enabled_regions()
            .await
            .context("--regions all-enabled: listing the account's enabled regions")?;
    }
    if regions.is_empty() {
        match crate::aws::sdk_config().await.region() {
            Some(r) => regions.push(r.to_string()),
            None => {
                anyhow::bail!("no region: give --regions r1,r2 (or all-enabled), or set AWS_REGION")
            }
        }
    }
    regions.sort();
    regions.dedup();
    Ok(regions)
}

#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub select: SelectArgs,

    /// Continue after the stored checkpoint of the same query (the default).
    #[arg(long, overrides_with = "no_resume")]
    pub resume: bool,

    /// Start from --since, ignoring stored checkpoints (the store still sends nothing twice).
    #[arg(long)]
    pub no_resume: bool,

    /// Send only the versions `gdfwd audit gaps` would list (never sent, failed, ...).
    #[arg(long)]
    pub only_gaps: bool,

    #[command(flatten)]
    pub pipeline: PipelineArgs,

    #[command(flatten)]
    pub filter: crate::filter::FilterArgs,

    /// Also write the summary (with per-region detail) as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,

    /// No progress bars or periodic progress lines.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct GapsArgs {
    #[command(flatten)]
    pub select: SelectArgs,

    #[command(flatten)]
    pub output: OutputArgs,

    #[command(flatten)]
    pub store: StoreArgs,

    /// What the filter drops is not sent on purpose, so it is no gap: the same flags as
    /// `backfill`'s.
    #[command(flatten)]
    pub filter: crate::filter::FilterArgs,
}

fn stop_fn(interrupt: &Interrupt) -> StopFn {
    let i = interrupt.clone();
    Arc::new(move || i.is_set())
}

pub async fn run_backfill(args: BackfillArgs) -> anyhow::Result<ExitCode> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let query = args.select.query(&args.filter)?;
    let dry_run = args.pipeline.dry_run();
    let client = args.select.client().await?;
    let regions = args.select.regions(&client).await?;
    let interrupt = Interrupt::install();
    // The query's filter, for --only-gaps too (Backfill::new hands it over itself).
    let pipeline = args
        .pipeline
        .build(true, clock, Some(&interrupt))
        .await?
        .with_filter(query.filter.clone());
    let started = Instant::now();

    if args.only_gaps {
        let gaps = OnlyGaps {
            client,
            query: &query,
            regions: &regions,
            interrupt: &interrupt,
        };
        return gaps.run(&args, &pipeline, dry_run, started).await;
    }

    let mut config = BackfillConfig::new(query, regions);
    config.resume = !args.no_resume;
    config.region_concurrency = usize::try_from(args.select.region_concurrency).unwrap_or(4);
    config.save_checkpoints = !dry_run;
    let report = Backfill::new(client, pipeline, config)
        .with_progress(progress_for(&args, dry_run))
        .with_stop(stop_fn(&interrupt))
        .run()
        .await;
    for (region, e) in report.errors() {
        eprintln!("error: {region}: {}", printable(&e.to_string()));
    }
    let region_failed = !report.errors().is_empty();
    finish(&args, &report, dry_run, started, region_failed)
}

/// Bars on a terminal (not in a dry run, whose events go to stdout), a line every 30 s
/// otherwise, nothing with `--quiet`.
fn progress_for(args: &BackfillArgs, dry_run: bool) -> Arc<dyn Progress> {
    if args.quiet {
        Arc::new(NoProgress)
    } else if std::io::stderr().is_terminal() && !dry_run {
        Arc::new(BarsProgress::new())
    } else {
        Arc::new(LogProgress::new(Duration::from_secs(30)))
    }
}

/// `backfill --only-gaps`: sends only the versions GuardDuty holds that the store never sent.
struct OnlyGaps<'a> {
    client: Arc<GuardDutyClient>,
    query: &'a FindingQuery,
    regions: &'a [String],
    interrupt: &'a Interrupt,
}

impl OnlyGaps<'_> {
    async fn run(
        self,
        args: &BackfillArgs,
        pipeline: &gdfwd_core::pipeline::Pipeline,
        dry_run: bool,
        started: Instant,
    ) -> anyhow::Result<ExitCode> {
        let store = pipeline
            .store()
            .cloned()
            .context("--only-gaps needs the store")?;
        let gaps = find_gaps(
            self.client.clone(),
            store,
            self.query,
            self.regions,
            usize::try_from(args.select.region_concurrency).unwrap_or(4),
            stop_fn(self.interrupt),
        )
        .await;
        for (region, e) in &gaps.errors {
            eprintln!("error: {region}: {}", printable(&e.to_string()));
        }
        let (summary, interrupted) = send_gaps(pipeline, &gaps.gaps, stop_fn(self.interrupt)).await;
        // Versions another run is sending are reported like the listing's pending claims.
        let pending = PendingClaims {
            count: summary.in_flight,
            until: None,
        };
        let report = BackfillReport {
            pending,
            summary,
            listed: gaps.checked,
            fetched: gaps.checked,
            interrupted: interrupted || gaps.interrupted,
            api: self.client.stats(),
            ..BackfillReport::default()
        };
        finish(args, &report, dry_run, started, !gaps.errors.is_empty())
    }
}

fn finish(
    args: &BackfillArgs,
    report: &BackfillReport,
    dry_run: bool,
    started: Instant,
    region_failed: bool,
) -> anyhow::Result<ExitCode> {
    print_summary(report, dry_run, started.elapsed());
    if let Some(path) = &args.summary {
        let json = serde_json::to_string_pretty(report).context("serialising the summary")?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("writing the summary to {}", path.display()))?;
    }
    Ok(if report.interrupted {
        eprintln!(
            "gdfwd backfill: interrupted; the checkpoint is saved, run the same command again to continue"
        );
        ExitCode::from(EXIT_INTERRUPTED)
    } else if report.summary.failed > 0 || report.summary.in_flight > 0 || region_failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_summary(r: &BackfillReport, dry_run: bool, took: Duration) {
    let s: &Summary = &r.summary;
    let verb = if dry_run {
        "would forward"
    } else {
        "forwarded"
    };
    // Only when it happened: a commit or release the store refused as a stale owner's.
    let stale_owner = match s.stale_owner {
        0 => String::new(),
        n => format!(", stale owner {n}"),
    };
    eprintln!(
        "gdfwd backfill: listed {}, fetched {}, {verb} {} ({} events), duplicates {}, in flight elsewhere {}, stale {}, filtered {}, invalid {}, failed {}, requests {}{stale_owner}; GuardDuty calls {} (throttled {}, retries {}) ({:.1}s)",
        r.listed,
        r.fetched,
        s.forwarded,
        s.events,
        s.duplicates,
        s.in_flight,
        s.stale,
        s.filtered,
        s.invalid,
        s.failed,
        s.requests,
        r.api.calls,
        r.api.throttled,
        r.api.retries,
        took.as_secs_f64()
    );
    if r.pending.count > 0 {
        let until = r
            .pending
            .until
            .map(|t| format!(" until {t}"))
            .unwrap_or_default();
        eprintln!(
            "gdfwd backfill: {} finding version(s) are claimed by another run{until} (a killed run's claims wait for their lease); run again after that to send whatever is still unsent",
            r.pending.count
        );
    }
}

pub async fn run_gaps(args: GapsArgs) -> anyhow::Result<ExitCode> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let query = args.select.query(&args.filter)?;
    let client = args.select.client().await?;
    let regions = args.select.regions(&client).await?;
    let store = args.store.open_existing(clock).await?;
    let interrupt = Interrupt::install();
    let report = find_gaps(
        client,
        store,
        &query,
        &regions,
        usize::try_from(args.select.region_concurrency).unwrap_or(4),
        stop_fn(&interrupt),
    )
    .await;
    print!(
        "{}",
        crate::render::gaps::gaps(&report.gaps, args.output.format())
    );
    for (region, e) in &report.errors {
        eprintln!("error: {region}: {}", printable(&e.to_string()));
    }
    eprintln!(
        "gdfwd audit gaps: {} finding(s) checked, {} sent, {} gap(s)",
        report.checked,
        report.covered,
        report.gaps.len()
    );
    Ok(if report.interrupted {
        ExitCode::from(EXIT_INTERRUPTED)
    } else if !report.errors.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
