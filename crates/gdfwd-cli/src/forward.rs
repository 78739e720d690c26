//! `gdfwd forward`: files or stdin in, Dynatrace (or stdout with `--dry-run`) out.
//!
//! Input streams: a reader thread ([`input::spawn_reader`]) cuts the sources into chunks of
//! `--chunk` findings while the pipeline claims, sends and commits the previous one, through a
//! channel of one chunk, so memory stays bounded by a few chunks whatever the input's size, and a
//! slow or throttling endpoint slows the reading down. After each settled chunk of a file the
//! file's checkpoint advances ([`crate::checkpoint`]), so an interrupted run is resumed where it
//! stopped; an interruption loses at most the chunk in flight (whose claims are released).
//! Exit status ([`EXIT_STATUS`]): 130 interrupted, else 1 some findings not delivered (whatever
//! else happened: undelivered findings must never hide behind invalid input), else 2 some input
//! invalid, else 0.
//!
//! Every line that shows text from the input (file names, finding ids, reasons quoting a finding
//! or a server) goes through [`printable`], as the audit tables do, so a finding cannot drive the
//! terminal.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::Context;
use gdfwd_core::pipeline::{Outcome, Summary};
use gdfwd_core::{Clock, SystemClock};

use crate::checkpoint::{Checkpoint, Checkpoints, FileCheckpoint};
use crate::input;
use crate::interrupt::{EXIT_INTERRUPTED, Interrupt};
use crate::progress::Progress;
use crate::render::{printable, shorten};
use crate::wiring::PipelineArgs;

#[derive(Debug, clap::Args)]
pub struct ForwardArgs {
    /// Input files (JSON, JSON arrays, NDJSON, EventBridge events, GetFindings output; `.gz` too).
    /// `-` reads stdin, which is also the default when stdin is not a terminal.
    /// `s3://BUCKET/PREFIX` reads GuardDuty's S3 findings export instead (see the S3 export
    /// options below and docs/bulk-import.md).
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

    #[command(flatten)]
    pub filter: crate::filter::FilterArgs,

    #[command(flatten)]
    pub s3: crate::s3::S3Args,

    /// Stop retrying after this long (e.g. `10m`, `1h`); what is unsent then is released for a
    /// later run and counted as failed.
    #[arg(long, value_parser = gdfwd_core::timespec::parse_duration, value_name = "DURATION")]
    pub deadline: Option<Duration>,

    /// Findings handed to the pipeline at a time, or fewer when they reach 4 MiB of records.
    /// Memory grows with it (at most three chunks are alive, roughly 50 KB a finding in all);
    /// requests are cut by size, not by chunk.
    #[arg(long, default_value_t = 250, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub chunk: u64,

    /// Longest input record (an NDJSON line, one element of a JSON array, a whole JSON document)
    /// in bytes; a longer one is reported invalid with its file and line, and reading goes on.
    #[arg(long, default_value_t = 1024 * 1024, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1024..=1024 * 1024 * 1024))]
    pub max_record_bytes: u64,

    /// Read every file from its start, ignoring the checkpoints earlier runs saved (the store
    /// still sends nothing twice). By default a file an earlier run was interrupted in is read
    /// on from where everything before was settled, and an S3 export object an earlier run
    /// finished is not read again.
    #[arg(long)]
    pub no_resume: bool,

    /// No progress bar (it is shown only when stderr is a terminal).
    #[arg(long)]
    pub quiet: bool,

    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
}

/// The exit statuses of `gdfwd forward`, in precedence order (`--help` shows this text).
pub const EXIT_STATUS: &str = "Exit status: 130 interrupted; else 1 when some findings were not delivered (failed, or in flight in another run) or on an error, even if some input was also invalid; else 2 when some input records were invalid (or on a usage error); else 0.";

/// Findings named per distinct failure reason before the rest are only counted.
const SAME_REASON_SHOWN: u64 = 3;
/// Reader problem lines (invalid records) named per source; the rest are counted in one line at
/// the source's end, so an input that is all garbage cannot flood the terminal or a log.
const PROBLEMS_SHOWN_PER_SOURCE: u64 = 100;
/// Longest finding id an invalid or failed line prints (characters); the rest is cut with `…`.
const MAX_ID_SHOWN: usize = 200;

pub async fn run(args: ForwardArgs) -> anyhow::Result<ExitCode> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let files = input_files(&args)?;
    let s3 = crate::s3::S3Input::from_args(&args)?;
    let filter = args.filter.filter()?;
    let sources = input::sources(&files, args.sample, args.sample_invalid);
    check_summary_dir(args.summary.as_deref())?;

    let dry_run = args.pipeline.dry_run();
    let interrupt = Interrupt::install();
    let pipeline = args
        .pipeline
        .build(!args.no_dedup, clock, Some(&interrupt))
        .await?
        .with_filter(filter);
    let started = Instant::now();
    let run_deadline = args.deadline.map(|d| started + d);

    let (plans, mut checkpoints) = plan(&args, s3.as_ref(), &sources, &pipeline).await?;
    let sources: Vec<input::Source> = plans.iter().map(|p| p.source.clone()).collect();
    let read = Arc::new(AtomicU64::new(0));
    let progress = progress_for(&args, &sources, read.clone());
    let (reader, mut rx) = start_reader(&args, s3.as_ref(), plans, read)?;

    let totals = drain(
        &mut rx,
        &interrupt,
        &pipeline,
        &sources,
        &mut checkpoints,
        run_deadline,
        &progress,
    )
    .await;
    progress.finish();
    drop(rx);
    // Not interrupted: the channel closed because the reader is done. (Interrupted, it may be
    // blocked on stdin: leave it.)
    if !interrupt.is_set() && reader.join().is_err() {
        anyhow::bail!("the input reader failed (a bug): some input may not have been read");
    }
    let interrupted = interrupt.is_set();
    print_repeated(totals.reasons);
    print_summary(&totals.summary, dry_run, started.elapsed());
    if let Some(path) = &args.summary {
        write_summary(path, &totals.summary)?;
    }
    Ok(ExitCode::from(exit_status(&totals.summary, interrupted)))
}

/// What to read, each with its checkpoint: the S3 export's objects ([`crate::s3::S3Input::plan`])
/// or the files and stdin ([`plan_sources`]); the checkpoints live in the pipeline's store.
async fn plan(
    args: &ForwardArgs,
    s3: Option<&crate::s3::S3Input>,
    sources: &[input::Source],
    pipeline: &gdfwd_core::pipeline::Pipeline,
) -> anyhow::Result<(Vec<input::Plan>, Vec<Option<Checkpoint>>)> {
    let checkpoints = pipeline.store().and_then(Checkpoints::of);
    let planned = match s3 {
        Some(s3) => s3.plan(args, checkpoints.as_ref()).await?,
        None => plan_sources(args, sources, checkpoints.as_ref(), pipeline.filter()).await,
    };
    Ok(planned.into_iter().unzip())
}

/// A bar on stderr when it is a terminal, unless `--quiet` or a dry run writes events to the same
/// terminal; its total is the inputs' size when every size is known.
fn progress_for(args: &ForwardArgs, sources: &[input::Source], read: Arc<AtomicU64>) -> Progress {
    let total = sources.iter().map(input::Source::size).sum::<Option<u64>>();
    let show = !args.quiet
        && std::io::stderr().is_terminal()
        && !(args.pipeline.dry_run() && std::io::stdout().is_terminal());
    Progress::new(show, total, read)
}

/// The reader thread, cutting the planned sources into chunks of `--chunk` findings. One chunk
/// waits in the channel while the pipeline works on another: reading, parsing and sending
/// overlap, and the reader waits when the pipeline is slow.
fn start_reader(
    args: &ForwardArgs,
    s3: Option<&crate::s3::S3Input>,
    plans: Vec<input::Plan>,
    read: Arc<AtomicU64>,
) -> anyhow::Result<(
    std::thread::JoinHandle<()>,
    tokio::sync::mpsc::Receiver<input::Chunk>,
)> {
    let config = input::ReadConfig {
        chunk_findings: usize::try_from(args.chunk).unwrap_or(250),
        max_record_bytes: usize::try_from(args.max_record_bytes).unwrap_or(usize::MAX),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<input::Chunk>(1);
    let reader = match s3 {
        Some(s3) => s3.spawn_reader(plans, config, read, tx),
        None => input::spawn_reader(plans, config, read, tx),
    }
    .context("starting the reader")?;
    Ok((reader, rx))
}

/// Hands every chunk the reader sends to the pipeline until the input ends or the run is
/// interrupted, advancing each file's checkpoint after its chunk is settled.
async fn drain(
    rx: &mut tokio::sync::mpsc::Receiver<input::Chunk>,
    interrupt: &Interrupt,
    pipeline: &gdfwd_core::pipeline::Pipeline,
    sources: &[input::Source],
    checkpoints: &mut [Option<Checkpoint>],
    run_deadline: Option<Instant>,
    progress: &Progress,
) -> Totals {
    let mut totals = Totals::default();
    loop {
        let chunk = tokio::select! {
            c = rx.recv() => c,
            () = interrupt.wait() => None,
        };
        let Some(chunk) = chunk else { break };
        totals.report_problems(&chunk, sources, progress);
        totals.summary.invalid += chunk.invalid;
        totals.summary.skipped += chunk.skipped;
        totals.summary.received += chunk.invalid + chunk.skipped;
        if interrupt.is_set() {
            break;
        }
        let name = sources[chunk.source].name();
        let settled = totals
            .process(pipeline, &chunk, &name, run_deadline, progress)
            .await;
        if let Some(cp) = &mut checkpoints[chunk.source]
            && let Err(e) = cp.advance(&chunk, settled).await
        {
            progress.println(&printable(&format!("warning: {e:#}")));
        }
        progress.update(totals.handled);
    }
    totals
}

/// `--summary FILE`: the run's counters as pretty JSON.
fn write_summary(path: &std::path::Path, summary: &Summary) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(summary).context("serialising the summary")?;
    std::fs::write(path, json + "\n")
        .with_context(|| format!("writing the summary to {}", path.display()))
}

/// The inputs: FILES, else stdin when it is not a terminal (`-`); none is a usage error.
fn input_files(args: &ForwardArgs) -> anyhow::Result<Vec<PathBuf>> {
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
    Ok(files)
}

/// Checked before sending: a summary that cannot be written would turn a delivered run into a
/// failed one at the very end.
fn check_summary_dir(path: Option<&std::path::Path>) -> anyhow::Result<()> {
    let Some(path) = path else { return Ok(()) };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(d) = dir.filter(|d| !d.is_dir()) {
        return Err(crate::Usage(format!(
            "--summary {}: directory {} does not exist",
            path.display(),
            d.display()
        ))
        .into());
    }
    Ok(())
}

/// What the run has done so far.
#[derive(Debug, Default)]
struct Totals {
    summary: Summary,
    /// Findings handed to the pipeline (the progress bar's count).
    handled: u64,
    /// Undelivered findings per reason. A whole-run problem (a refused token, an unreachable
    /// endpoint) fails every finding with the same reason: the first few are named, the rest
    /// counted ([`print_repeated`]).
    reasons: HashMap<String, u64>,
    /// Reader problem lines per source: (printed, not printed).
    problems: HashMap<usize, (u64, u64)>,
}

impl Totals {
    /// Prints a chunk's reader problems, the first [`PROBLEMS_SHOWN_PER_SOURCE`] of its source,
    /// and at the source's end how many more there were. The line saying why a source stopped
    /// early (broken, unreadable), the last problem of its last chunk, is always printed.
    fn report_problems(
        &mut self,
        chunk: &input::Chunk,
        sources: &[input::Source],
        progress: &Progress,
    ) {
        let stop = chunk
            .problems
            .last()
            .filter(|_| chunk.last && !chunk.complete);
        let per_record = &chunk.problems[..chunk.problems.len() - usize::from(stop.is_some())];
        let (shown, hidden) = self.problems.entry(chunk.source).or_default();
        for p in per_record {
            if *shown < PROBLEMS_SHOWN_PER_SOURCE {
                progress.println(&printable(p));
                *shown += 1;
            } else {
                *hidden += 1;
            }
        }
        if chunk.last && *hidden > 0 {
            progress.println(&format!(
                "invalid: {}: {hidden} more problem line(s) not shown (the first {PROBLEMS_SHOWN_PER_SOURCE} are above; the summary counts every invalid record)",
                printable(&sources[chunk.source].name())
            ));
        }
        if let Some(p) = stop {
            progress.println(&printable(p));
        }
    }

    /// Sends one chunk's findings through the pipeline (which also stops before the claims'
    /// lease ends); whether every one of them is settled.
    async fn process(
        &mut self,
        pipeline: &gdfwd_core::pipeline::Pipeline,
        chunk: &input::Chunk,
        name: &str,
        deadline: Option<Instant>,
        progress: &Progress,
    ) -> bool {
        if chunk.findings.is_empty() {
            return true;
        }
        let report = pipeline.process(&chunk.findings, deadline).await;
        let settled = report_undone(
            name,
            &chunk.findings,
            &report.outcomes,
            &mut self.reasons,
            progress,
        );
        self.summary.merge(&report.summary);
        self.handled += chunk.findings.len() as u64;
        settled
    }
}

/// The count of undelivered findings beyond the few named, per reason.
fn print_repeated(reasons: HashMap<String, u64>) {
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

/// Reports the findings of a chunk that are not done (failed, refused as invalid by the pipeline,
/// or in flight elsewhere), the first few per reason; returns whether every finding is settled.
/// A finding the pipeline refused as invalid leaves its chunk unsettled, so the file's checkpoint
/// stops before it: an `updatedAt` too far ahead may be accepted by a later run.
fn report_undone(
    name: &str,
    findings: &[gdfwd_model::Finding],
    outcomes: &[Outcome],
    reasons: &mut HashMap<String, u64>,
    progress: &Progress,
) -> bool {
    let mut settled = true;
    for (f, o) in findings.iter().zip(outcomes) {
        let Some((retryable, reason)) = o.undone() else {
            continue;
        };
        settled = false;
        let kind = if retryable {
            "will retry on the next run"
        } else {
            "definitive"
        };
        // In-flight reasons differ only by their lease end: one group.
        let (what, group) = match o {
            Outcome::InFlight { .. } => (
                "in flight",
                "being sent by another run (claims held; run again after they end)".to_owned(),
            ),
            Outcome::Invalid { .. } => ("invalid", reason.clone()),
            _ => ("failed", reason.clone()),
        };
        let seen = reasons.entry(group).or_default();
        *seen += 1;
        if *seen > SAME_REASON_SHOWN {
            continue;
        }
        progress.println(&format!(
            "{what}: {} finding {} version {}: {} ({kind})",
            printable(name),
            printable(&shorten(&f.id, MAX_ID_SHOWN)),
            f.updated_at,
            printable(&reason)
        ));
    }
    settled
}

/// What the reader reads from where: each source with its checkpoint (files, with a store, and
/// not with `--no-resume`: the stored position; a new checkpoint otherwise), for this `filter`.
async fn plan_sources(
    args: &ForwardArgs,
    sources: &[input::Source],
    store: Option<&Checkpoints>,
    filter: &gdfwd_model::FindingFilter,
) -> Vec<(input::Plan, Option<Checkpoint>)> {
    let scope = crate::checkpoint::scope(filter);
    let mut out = Vec::with_capacity(sources.len());
    for source in sources {
        let checkpoint = match (source, store) {
            (input::Source::File(path), Some(store)) => {
                FileCheckpoint::load(
                    store.clone(),
                    path,
                    &scope,
                    !args.no_resume,
                    args.pipeline.store.retention(),
                )
                .await
            }
            _ => None,
        };
        let from = checkpoint.as_ref().map(|c| c.start).unwrap_or_default();
        if from.offset > 0 {
            eprintln!(
                "gdfwd forward: {}: resuming after line {} (settled by an earlier run; --no-resume reads it all)",
                printable(&source.name()),
                from.line
            );
        }
        let plan = input::Plan {
            source: source.clone(),
            from,
            resumable: checkpoint.is_some(),
        };
        out.push((plan, checkpoint.map(Checkpoint::File)));
    }
    out
}

fn print_summary(s: &Summary, dry_run: bool, took: Duration) {
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
        "gdfwd forward: received {}, {verb} {} ({} events), duplicates {}, in flight elsewhere {}, stale {}, filtered {}, skipped {}, invalid {}, failed {}, requests {}{stale_owner} ({:.1}s)",
        s.received,
        s.forwarded,
        s.events,
        s.duplicates,
        s.in_flight,
        s.stale,
        s.filtered,
        s.skipped,
        s.invalid,
        s.failed,
        s.requests,
        took.as_secs_f64()
    );
}
