//! `gdfwd audit`: what the dedup store knows — one finding's history, filtered lists, and stats.
//! Queries go through the `StateStore` trait, so both backends answer the same way; aggregation
//! is `gdfwd_core::audit`'s, printing [`crate::render`]'s.

use std::process::ExitCode;
use std::sync::Arc;

use futures::StreamExt;
use gdfwd_core::audit::{self, GroupBy};
use gdfwd_core::audit_check::{self, Violation};
use gdfwd_core::store::{FindingRecord, ListQuery, StateStore, StatusFilter};
use gdfwd_core::timespec::parse_time;
use gdfwd_core::{Clock, SystemClock};
use gdfwd_model::Timestamp;

use crate::render::{self, OutputArgs};
use crate::store::StoreArgs;

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Finding versions GuardDuty holds that the store never sent, with the reason when known.
    Gaps(Box<crate::backfill::GapsArgs>),
    /// One finding's history: every version seen, when, and what happened to it. Exit status 3
    /// when the store does not know the finding (never seen, or expired).
    Show {
        /// The GuardDuty finding id.
        finding_id: String,
        #[command(flatten)]
        common: Common,
    },
    /// Findings in the store, most recently seen first, filtered.
    List {
        /// Only this account.
        #[arg(long, value_name = "ID")]
        account: Option<String>,
        /// Last seen at or after (RFC 3339 or relative: 24h, 7d).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Last seen before (RFC 3339 or relative).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// sent, duplicate, stale, failed (and released) or pending (claimed, not yet sent).
        #[arg(long, value_parser = parse_status)]
        status: Option<StatusFilter>,
        /// Finding type prefix, e.g. `Recon:EC2` or `UnauthorizedAccess:IAMUser/`.
        #[arg(long = "type", value_name = "PREFIX")]
        finding_type: Option<String>,
        /// At most this many rows.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        #[command(flatten)]
        common: Common,
    },
    /// Checks the store's invariants and lists every violation: a version sent with no claim,
    /// a record left pending after its lease ended (its sender died), an older version claimed
    /// and sent after a newer one was sent, history entries out of sequence (gap, duplicate).
    /// Exit status 0 when there is none, 1 when there is any (each names its finding and
    /// version).
    Check {
        /// Only findings last seen at or after (RFC 3339 or relative: 24h, 7d).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Histories read at once.
        #[arg(long, default_value_t = 8, value_name = "N")]
        concurrency: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Counts of versions received, sent, duplicates, stale and failed.
    Stats {
        /// Findings last seen at or after (RFC 3339 or relative: 24h, 7d).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Group rows by account, type, severity or day (default: one total row).
        #[arg(long, value_parser = parse_group, default_value = "none")]
        by: GroupBy,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, clap::Args)]
pub struct Common {
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

fn parse_status(s: &str) -> Result<StatusFilter, String> {
    s.parse()
}
fn parse_group(s: &str) -> Result<GroupBy, String> {
    s.parse()
}

fn time(s: Option<&str>, now: Timestamp) -> anyhow::Result<Option<Timestamp>> {
    s.map(|s| parse_time(s, now))
        .transpose()
        .map_err(|e| crate::Usage(e.to_string()).into())
}

pub async fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    match args.command {
        AuditCommand::Gaps(args) => crate::backfill::run_gaps(*args).await,
        AuditCommand::Show { finding_id, common } => show(&finding_id, &common, clock).await,
        AuditCommand::List {
            account,
            since,
            until,
            status,
            finding_type,
            limit,
            common,
        } => {
            let now = clock.now();
            let query = ListQuery {
                account,
                since: time(since.as_deref(), now)?,
                until: time(until.as_deref(), now)?,
                status,
                finding_type,
                limit,
            };
            let store = common.store.open_existing(clock).await?;
            let records = store.list(&query).await?;
            print!(
                "{}",
                render::audit::records(&records, common.output.format())
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Check {
            since,
            concurrency,
            common,
        } => check(since.as_deref(), concurrency, &common, clock).await,
        AuditCommand::Stats { since, by, common } => {
            let (_, records) = list_since(since.as_deref(), &common, clock).await?;
            let rows = audit::stats(&records, by);
            print!(
                "{}",
                render::audit::stats(&rows, by, common.output.format())
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `audit show`: exit status 3 when the store does not know the finding.
async fn show(
    finding_id: &str,
    common: &Common,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<ExitCode> {
    let store = common.store.open_existing(clock).await?;
    match store.history(finding_id).await? {
        Some(h) => {
            print!("{}", render::audit::history(&h, common.output.format()));
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!(
                "not found: finding {finding_id} is not in {} (never seen, or expired)",
                store.describe()
            );
            Ok(ExitCode::from(3))
        }
    }
}

/// `audit check`: exit status 1 when any invariant is violated.
async fn check(
    since: Option<&str>,
    concurrency: usize,
    common: &Common,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<ExitCode> {
    let (store, records) = list_since(since, common, clock.clone()).await?;
    let violations = check_all(store.as_ref(), &records, concurrency.max(1), clock.now()).await?;
    let format = common.output.format();
    print!(
        "{}",
        render::audit_check::report(&violations, records.len(), format)
    );
    Ok(if violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The store and its records last seen at or after `since` (all of them without it).
async fn list_since(
    since: Option<&str>,
    common: &Common,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(Arc<dyn StateStore>, Vec<FindingRecord>)> {
    let query = ListQuery {
        since: time(since, clock.now())?,
        ..ListQuery::default()
    };
    let store = common.store.open_existing(clock).await?;
    let records = store.list(&query).await?;
    Ok((store, records))
}

/// Reads each record's history (`concurrency` at a time) and checks it. A finding that expired
/// between the listing and its read is skipped: it is no longer in the store.
async fn check_all(
    store: &dyn StateStore,
    records: &[FindingRecord],
    concurrency: usize,
    now: Timestamp,
) -> anyhow::Result<Vec<Violation>> {
    let histories: Vec<_> = futures::stream::iter(records)
        .map(|r| store.history(&r.finding_id))
        .buffered(concurrency)
        .collect()
        .await;
    let mut out = Vec::new();
    for h in histories {
        if let Some(h) = h? {
            out.extend(audit_check::check(&h, now));
        }
    }
    Ok(out)
}
