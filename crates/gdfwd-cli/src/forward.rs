//! `gdfwd forward`: files or stdin in, Dynatrace (or stdout with `--dry-run`) out.
//!
//! Input is read source by source and fed to the pipeline in chunks, so memory stays bounded by
//! one source plus one chunk and an interruption loses at most the chunk in flight (whose claims
//! are released). Exit status ([`EXIT_STATUS`]): 130 interrupted, else 1 some findings not
//! delivered (whatever else happened: undelivered findings must never hide behind invalid input),
//! else 2 some input invalid, else 0.
//!
//! Every line that shows text from the input (file names, finding ids, reasons quoting a finding
//! or a server) goes through [`printable`], as the audit tables do, so a finding cannot drive the
//! terminal.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use gdfwd_core::audit::printable;
use gdfwd_core::pipeline::{Outcome, Summary};
use gdfwd_core::{Clock, SystemClock};

use crate::input;
use crate::interrupt::{EXIT_INTERRUPTED, Interrupt};
use crate::wiring::PipelineArgs;

#[derive(Debug, clap::Args)]
pub struct ForwardArgs {
    /// Input files (JSON, JSON arrays, NDJSON, EventBridge events, GetFindings output; `.gz` too).
    /// `-` reads stdin, which is also the default when stdin is not a terminal.
    #[arg(value_name = "FILES")]
    pub files: Vec<PathBuf>,

    /// Also read the embedded sample findings (28 published samples, one of them a CloudTrail
    /// event that is skipped, and 60 generated findings delivered 153 times with updates,
    /// redeliveries and late versions). All valid: the run exits 0.
    #[arg(long)]
    pub sample: bool,

    /// Also read three embedded published samples that are not complete findings (no account, no
    /// region): shows how invalid records are reported (exit status 2).
    #[arg(long)]
    pub sample_invalid: bool,

    /// Send every finding, bypassing the dedup store.
    #[arg(long)]
    pub no_dedup: bool,

    #[command(flatten)]
    pub pipeline: PipelineArgs,

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
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    gdfwd_core::timespec::parse_duration_ms(s)
        .map(|ms| Duration::from_millis(ms.unsigned_abs()))
        .ok_or_else(|| format!("invalid duration {s:?}: expected e.g. 30s, 10m, 2h"))
}

/// The exit statuses of `gdfwd forward`, in precedence order (`--help` shows this text).
pub const EXIT_STATUS: &str = "Exit status: 130 interrupted; else 1 when some findings were not delivered (failed, or in flight in another run) or on an error, even if some input was also invalid; else 2 when some input records were invalid (or on a usage error); else 0.";

/// Findings named per distinct failure reason before the rest are only counted.
const SAME_REASON_SHOWN: u64 = 3;

pub async fn run(args: ForwardArgs) -> anyhow::Result<ExitCode> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut files = args.files.clone();
    if files.is_empty() && !args.sample && !args.sample_invalid {
        if std::io::stdin().is_terminal() {
            return Err(crate::Usage(
                "no input: give FILES, `-` for stdin, or --sample for the embedded sample findings"
                    .to_owned(),
            )
            .into());
        }
        files.push(PathBuf::from("-"));
    }
    let sources = input::sources(&files, args.sample, args.sample_invalid);
    // Checked before sending: a summary that cannot be written would turn a delivered run into
    // a failed one at the very end.
    if let Some(path) = &args.summary {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if dir.is_some_and(|d| !d.is_dir()) {
            return Err(crate::Usage(format!(
                "--summary {}: directory {} does not exist",
                path.display(),
                dir.map(|d| d.display().to_string()).unwrap_or_default()
            ))
            .into());
        }
    }

    let dry_run = args.pipeline.dry_run();
    let interrupt = Interrupt::install();
    let pipeline = args
        .pipeline
        .build(!args.no_dedup, clock, Some(&interrupt))
        .await?;
    let started = Instant::now();
    let run_deadline = args.deadline.map(|d| started + d);

    let mut summary = Summary::default();
    let mut interrupted = false;
    // A whole-run problem (a refused token, an unreachable endpoint) fails every finding with the
    // same reason: name the first few findings, then count the rest.
    let mut reasons: HashMap<String, u64> = HashMap::new();
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
                eprintln!("error: {}", printable(&gdfwd_aws_error::chain(e.as_ref())));
                summary.invalid += 1;
                summary.received += 1;
                continue;
            }
        };
        let parsed = input::parse_source(&src.name(), &text);
        drop(text);
        for e in &parsed.errors {
            eprintln!("invalid: {}", printable(e));
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
            // The pipeline also stops each chunk's sending before its claims' lease ends.
            let report = pipeline.process(chunk, run_deadline).await;
            for (f, o) in chunk.iter().zip(&report.outcomes) {
                if let Some((retryable, reason)) = o.undone() {
                    let kind = if retryable {
                        "will retry on the next run"
                    } else {
                        "definitive"
                    };
                    // In-flight reasons differ only by their lease end: one group.
                    let (what, group) = match o {
                        Outcome::InFlight { .. } => (
                            "in flight",
                            "being sent by another run (claims held; run again after they end)"
                                .to_owned(),
                        ),
                        Outcome::Invalid { .. } => ("invalid", reason.clone()),
                        _ => ("failed", reason.clone()),
                    };
                    let seen = reasons.entry(group).or_default();
                    *seen += 1;
                    if *seen > SAME_REASON_SHOWN {
                        continue;
                    }
                    eprintln!(
                        "{what}: {} finding {} version {}: {} ({kind})",
                        printable(&src.name()),
                        printable(&f.id),
                        f.updated_at,
                        printable(&reason)
                    );
                }
            }
            summary.merge(&report.summary);
        }
    }
    interrupted |= interrupt.is_set();
    let mut repeated: Vec<(String, u64)> = reasons
        .into_iter()
        .filter(|(_, n)| *n > SAME_REASON_SHOWN)
        .collect();
    repeated.sort();
    for (reason, n) in repeated {
        eprintln!(
            "... {} more finding(s) not delivered for the same reason: {}",
            n - SAME_REASON_SHOWN,
            printable(&reason)
        );
    }

    print_summary(&summary, dry_run, started.elapsed());
    if let Some(path) = &args.summary {
        let json = serde_json::to_string_pretty(&summary).context("serialising the summary")?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("writing the summary to {}", path.display()))?;
    }
    Ok(ExitCode::from(exit_status(&summary, interrupted)))
}

/// [`EXIT_STATUS`]: undelivered findings win over invalid input, so a run that both met bad
/// records and left findings unsent never reads as "only some input was bad".
fn exit_status(summary: &Summary, interrupted: bool) -> u8 {
    if interrupted {
        EXIT_INTERRUPTED
    } else if summary.failed > 0 || summary.in_flight > 0 {
        1
    } else if summary.invalid > 0 {
        2
    } else {
        0
    }
}

fn print_summary(s: &Summary, dry_run: bool, took: Duration) {
    let verb = if dry_run {
        "would forward"
    } else {
        "forwarded"
    };
    eprintln!(
        "gdfwd forward: received {}, {verb} {} ({} events), duplicates {}, in flight elsewhere {}, stale {}, skipped {}, invalid {}, failed {}, requests {} ({:.1}s)",
        s.received,
        s.forwarded,
        s.events,
        s.duplicates,
        s.in_flight,
        s.stale,
        s.skipped,
        s.invalid,
        s.failed,
        s.requests,
        took.as_secs_f64()
    );
}
