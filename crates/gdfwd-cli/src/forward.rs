//! `gdfwd forward`: files or stdin in, Dynatrace (or stdout with `--dry-run`) out.
//!
//! Input is read source by source and fed to the pipeline in chunks, so memory stays bounded by
//! one source plus one chunk and an interruption loses at most the chunk in flight (whose claims
//! are released). Exit status: 0 all good, 2 some input invalid, 1 some findings not delivered,
//! 130 interrupted.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use gdfwd_core::pipeline::{Outcome, Pipeline, Summary};
use gdfwd_core::preview::PreviewStore;
use gdfwd_core::sink::{Sink, WriterSink};
use gdfwd_core::store::StateStore;
use gdfwd_core::{Clock, SystemClock};
use gdfwd_model::Format;

use crate::input;
use crate::interrupt::{EXIT_INTERRUPTED, Interrupt};
use crate::store::StoreArgs;

#[derive(Debug, clap::Args)]
pub struct ForwardArgs {
    /// Input files (JSON, JSON arrays, NDJSON, EventBridge events, GetFindings output; `.gz` too).
    /// `-` reads stdin, which is also the default when stdin is not a terminal.
    #[arg(value_name = "FILES")]
    pub files: Vec<PathBuf>,

    /// Also read the embedded sample findings (31 published samples, 60 generated findings
    /// delivered 153 times with updates, redeliveries and late versions).
    #[arg(long)]
    pub sample: bool,

    /// Payload format: `raw` (the EventBridge event, for Dynatrace's built-in processing) or
    /// `semantic` (flat Semantic Dictionary fields mapped here).
    #[arg(long, env = "PAYLOAD_FORMAT", default_value = "raw", value_parser = parse_format)]
    pub format: Format,

    /// Print the events that would be sent (NDJSON on stdout) instead of sending. Consults the
    /// store to show what would be suppressed, but claims nothing. The default while no endpoint
    /// is configured.
    #[arg(long)]
    pub dry_run: bool,

    /// Send every finding, bypassing the dedup store.
    #[arg(long)]
    pub no_dedup: bool,

    #[command(flatten)]
    pub store: StoreArgs,

    /// Claim lease in seconds: a claim left by a crashed run is taken over after this long.
    #[arg(
        long,
        env = "DEDUP_LEASE_SECONDS",
        default_value_t = 300,
        value_name = "SECONDS"
    )]
    pub lease: u64,

    /// Stop retrying after this long (e.g. `10m`, `1h`); what is unsent then is released for a
    /// later run and counted as failed.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub deadline: Option<Duration>,

    /// Findings handed to the pipeline at a time.
    #[arg(long, default_value_t = 500, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub chunk: u64,

    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,

    #[command(flatten)]
    pub sender: gdfwd_sink_http::SenderArgs,

    #[command(flatten)]
    pub enrich: gdfwd_enrich_aws::EnrichArgs,
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    gdfwd_core::timespec::parse_duration_ms(s)
        .map(|ms| Duration::from_millis(ms.unsigned_abs()))
        .ok_or_else(|| format!("invalid duration {s:?}: expected e.g. 30s, 10m, 2h"))
}

pub async fn run(args: ForwardArgs) -> anyhow::Result<ExitCode> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut files = args.files.clone();
    if files.is_empty() && !args.sample {
        if std::io::stdin().is_terminal() {
            anyhow::bail!(
                "no input: give FILES, `-` for stdin, or --sample for the embedded sample findings"
            );
        }
        files.push(PathBuf::from("-"));
    }
    let sources = input::sources(&files, args.sample);

    // Until an endpoint is configured, forwarding means previewing.
    let dry_run = args.dry_run
        || args
            .sender
            .endpoint
            .as_deref()
            .is_none_or(|e| e.trim().is_empty());
    let pipeline = build_pipeline(&args, dry_run, clock).await?;

    let interrupt = Interrupt::install();
    let started = Instant::now();
    let run_deadline = args.deadline.map(|d| started + d);
    // Sending must end well before the lease does, or another run could take over the claims.
    let lease_budget = Duration::from_secs(args.lease)
        .saturating_sub(Duration::from_secs(30).min(Duration::from_secs(args.lease / 2)));

    let mut summary = Summary::default();
    let mut interrupted = false;
    'sources: for src in &sources {
        // Reading blocks (stdin may stay open for ever): do it off the runtime, and stop waiting
        // for it when interrupted.
        let read = {
            let src = src.clone();
            tokio::task::spawn_blocking(move || input::read_source(&src))
        };
        let read = tokio::select! {
            r = read => r.unwrap_or_else(|e| Err(anyhow::anyhow!("reading {}: {e}", src.name()))),
            () = interrupt.wait() => {
                interrupted = true;
                break 'sources;
            }
        };
        let text = match read {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e:#}");
                summary.invalid += 1;
                summary.received += 1;
                continue;
            }
        };
        let parsed = input::parse_source(&src.name(), &text);
        drop(text);
        for e in &parsed.errors {
            eprintln!("invalid: {e}");
        }
        summary.invalid += parsed.errors.len() as u64;
        summary.skipped += parsed.skipped;
        summary.received += parsed.errors.len() as u64 + parsed.skipped;
        for chunk in parsed
            .findings
            .chunks(usize::try_from(args.chunk).unwrap_or(500))
        {
            if interrupt.is_set() {
                interrupted = true;
                break 'sources;
            }
            let chunk_deadline = Instant::now() + lease_budget;
            let deadline = Some(run_deadline.map_or(chunk_deadline, |d| d.min(chunk_deadline)));
            let report = pipeline.process(chunk, deadline).await;
            for (f, o) in chunk.iter().zip(&report.outcomes) {
                if let Outcome::Failed { retryable, reason } = o {
                    let kind = if *retryable {
                        "will retry on the next run"
                    } else {
                        "definitive"
                    };
                    eprintln!(
                        "failed: {} finding {} version {}: {reason} ({kind})",
                        src.name(),
                        f.id,
                        f.updated_at
                    );
                }
            }
            summary.merge(&report.summary);
        }
    }
    interrupted |= interrupt.is_set();

    print_summary(&summary, dry_run, started.elapsed());
    if let Some(path) = &args.summary {
        let json = serde_json::to_string_pretty(&summary).context("serialising the summary")?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("writing the summary to {}", path.display()))?;
    }
    Ok(if interrupted {
        ExitCode::from(EXIT_INTERRUPTED)
    } else if summary.invalid > 0 {
        ExitCode::from(2)
    } else if summary.failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Wires store, sink and enrichment. A dry run reads the store but writes nothing, prints instead
/// of sending, and makes no AWS calls for enrichment (`gdfwd accounts` checks names).
async fn build_pipeline(
    args: &ForwardArgs,
    dry_run: bool,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Pipeline> {
    let real_store = if args.no_dedup {
        None
    } else {
        Some(args.store.open(clock.clone()).await?)
    };
    if dry_run {
        let store = real_store.map(|s| Arc::new(PreviewStore::new(s)) as Arc<dyn StateStore>);
        let sink: Arc<dyn Sink> = Arc::new(WriterSink::new(std::io::stdout()));
        return Ok(
            Pipeline::new(store, sink, args.format).with_lease(Duration::from_secs(args.lease))
        );
    }
    let config = args.sender.clone().into_config()?;
    let sdk = if config.token.secret_arn.is_some() || args.enrich.enabled() {
        Some(crate::aws::sdk_config().await)
    } else {
        None
    };
    let tokens = gdfwd_sink_http::build_token_source(&config.token, sdk).await?;
    let sink: Arc<dyn Sink> = Arc::new(gdfwd_sink_http::HttpSink::new(config, tokens)?);
    let resolver = match sdk {
        Some(sdk) => {
            gdfwd_enrich_aws::build_resolver(&args.enrich.config(), sdk, real_store.clone(), clock)
                .await
        }
        None => None,
    };
    Ok(Pipeline::new(real_store, sink, args.format)
        .with_resolver(resolver)
        .with_lease(Duration::from_secs(args.lease)))
}

fn print_summary(s: &Summary, dry_run: bool, took: Duration) {
    let verb = if dry_run {
        "would forward"
    } else {
        "forwarded"
    };
    eprintln!(
        "gdfwd forward: received {}, {verb} {} ({} events), duplicates {}, stale {}, skipped {}, invalid {}, failed {}, requests {} ({:.1}s)",
        s.received,
        s.forwarded,
        s.events,
        s.duplicates,
        s.stale,
        s.skipped,
        s.invalid,
        s.failed,
        s.requests,
        took.as_secs_f64()
    );
}
