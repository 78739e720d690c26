//! `gdfwd forward s3://BUCKET/PREFIX`: GuardDuty's S3 findings export as an input of `forward`,
//! so it shares every option of the file path (store, endpoint, format, rate limits, enrichment,
//! filters) and the same pipeline, chunking and backpressure.
//!
//! Planning lists the export ([`gdfwd_source_s3::Export::list`]), keeps the objects whose keys
//! fall inside `--accounts`/`--regions`/`--since`/`--until` (warning about `--accounts` with no
//! folder: an organization's export is all in the administrator's), and drops the ones an earlier run
//! finished (an [`ObjectCheckpoint`] in the store), all without fetching an object. The reader is
//! a thread like the file reader's: the bodies arrive in plan order from a bounded concurrent
//! prefetch (small objects whole, large ones as streams re-opened where a download breaks), and
//! each goes through the file path's record reader ([`input::read_source`]), so an
//! invalid line is reported as `s3://bucket/key:line`. Findings whose `updatedAt` is outside the
//! window, or whose account is not in `--accounts`, are counted as skipped.

use std::io::BufReader;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use futures::StreamExt;
use gdfwd_model::Timestamp;
use gdfwd_source_s3::{Export, ExportObject, Location, S3Error, Selection};

use crate::Usage;
use crate::checkpoint::{Checkpoint, Checkpoints, Narrowing, ObjectCheckpoint, ObjectId};
use crate::forward::ForwardArgs;
use crate::input::{self, Chunk, Counting, Plan, Position, ReadConfig, Source};
use crate::render::printable;

/// The help heading of the `s3://` input's options (per option: a heading on the flattened
/// struct would also cover the options `forward` declares after it).
const HEADING: &str = "S3 export (inputs s3://BUCKET/PREFIX)";

/// Options of the `s3://` input.
#[derive(Debug, Clone, clap::Args)]
pub struct S3Args {
    /// Oldest `updatedAt` to forward: RFC 3339 or relative (`400d`, `12h`). Objects written on
    /// an earlier day are not read.
    #[arg(long, value_name = "TIME", help_heading = HEADING)]
    pub since: Option<String>,

    /// Newest `updatedAt` to forward (exclusive). Objects written more than a day after it (the
    /// export's lag) are not read.
    #[arg(long, value_name = "TIME", help_heading = HEADING)]
    pub until: Option<String>,

    /// Only findings of these accounts (comma-separated 12-digit ids), read from their own
    /// export folders (only those prefixes are listed). An organization's export keeps every
    /// member's findings in the delegated administrator's folder: select members there with
    /// --include-account instead.
    #[arg(long, value_delimiter = ',', value_name = "ACCOUNTS", help_heading = HEADING)]
    pub accounts: Vec<String>,

    /// Only these regions (comma-separated): with --accounts, only their prefixes are listed.
    #[arg(long, value_delimiter = ',', value_name = "REGIONS", help_heading = HEADING)]
    pub regions: Vec<String>,

    /// Export objects fetched at a time. Objects up to 1 MiB (compressed) are fetched whole and
    /// held until read; larger ones are streamed when their turn comes.
    #[arg(long, default_value_t = 8, value_name = "N", help_heading = HEADING, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub s3_concurrency: u64,
}

impl S3Args {
    fn selects(&self) -> bool {
        self.since.is_some()
            || self.until.is_some()
            || !self.accounts.is_empty()
            || !self.regions.is_empty()
    }
}

/// Checkpoint lookups in flight while planning (each is one store read).
const LOOKUPS: usize = 16;

/// The `s3://` inputs of one run.
#[derive(Debug)]
pub struct S3Input {
    locations: Vec<Location>,
    selection: Selection,
    concurrency: usize,
    export: OnceLock<Export>,
}

fn parse_time(what: &str, value: Option<&str>, now: Timestamp) -> Result<Option<Timestamp>, Usage> {
    value
        .map(|v| {
            gdfwd_core::timespec::parse_time(v, now).map_err(|e| Usage(format!("{what}: {e}")))
        })
        .transpose()
}

impl S3Input {
    /// The run's `s3://` inputs; `None` when it has none. Mixing them with files, stdin or the
    /// samples, or S3 options without them, is a usage error.
    pub fn from_args(args: &ForwardArgs) -> anyhow::Result<Option<Self>> {
        let is_s3 = |p: &std::path::PathBuf| p.to_str().is_some_and(|s| s.starts_with("s3://"));
        let urls: Vec<&std::path::PathBuf> = args.files.iter().filter(|p| is_s3(p)).collect();
        let o = &args.s3;
        if urls.is_empty() {
            if o.selects() {
                return Err(Usage(
                    "--since, --until, --accounts and --regions select from an s3:// input; give s3://BUCKET/PREFIX"
                        .to_owned(),
                )
                .into());
            }
            return Ok(None);
        }
        if urls.len() != args.files.len() || args.sample || args.sample_invalid {
            return Err(Usage(
                "s3:// inputs cannot be mixed with files, stdin or --sample: forward them in separate runs"
                    .to_owned(),
            )
            .into());
        }
        let mut locations = Vec::new();
        for url in urls {
            let text = url.to_str().unwrap_or_default();
            let location = Location::parse(text).ok_or_else(|| {
                Usage(format!(
                    "{}: not an s3://BUCKET/PREFIX URL (a bucket name is lower case letters, digits, '-', '.')",
                    printable(text)
                ))
            })?;
            locations.push(location);
        }
        if let Some(bad) = o
            .accounts
            .iter()
            .find(|a| a.len() != 12 || !a.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(Usage(format!(
                "--accounts: {:?} is not a 12-digit account id",
                printable(bad)
            ))
            .into());
        }
        let now = Timestamp::now();
        let since = parse_time("--since", o.since.as_deref(), now)?;
        let until = parse_time("--until", o.until.as_deref(), now)?;
        if let (Some(s), Some(u)) = (since, until)
            && u <= s
        {
            return Err(Usage("--until must be later than --since".to_owned()).into());
        }
        Ok(Some(Self {
            locations,
            selection: Selection {
                accounts: o.accounts.clone(),
                regions: o.regions.clone(),
                since,
                until,
            },
            concurrency: usize::try_from(o.s3_concurrency).unwrap_or(8),
            export: OnceLock::new(),
        }))
    }

    /// Lists the export and plans the objects to read, with their checkpoints (with a store).
    /// A missing bucket or a refused listing is a usage error (exit status 2) naming the bucket.
    pub async fn plan(
        &self,
        args: &ForwardArgs,
        store: Option<&Checkpoints>,
    ) -> anyhow::Result<Vec<(Plan, Option<Checkpoint>)>> {
        let sdk = crate::aws::sdk_config().await;
        let export = self.export.get_or_init(|| Export::new(sdk));
        // Checkpoints hold for this filter only (a finding it drops is settled).
        let resume = Resume {
            store,
            scope: crate::checkpoint::scope(&args.filter.filter()?),
            narrowing: Narrowing {
                since_ms: self.selection.since.map(Timestamp::millis),
                until_ms: self.selection.until.map(Timestamp::millis),
                accounts: self.selection.accounts.clone(),
            },
            ttl: args.pipeline.store.retention(),
            no_resume: args.no_resume,
        };
        let mut out = Vec::new();
        // The accounts whose folders hold a selected object, over every location.
        let mut present = std::collections::HashSet::new();
        for location in &self.locations {
            let listing = export
                .list(location, &self.selection)
                .await
                .map_err(|e| match e {
                    S3Error::Request { .. } => anyhow::Error::new(e),
                    _ => Usage(e.to_string()).into(),
                })?;
            let listed = listing.objects.len();
            present.extend(listing.objects.iter().map(|o| o.export.account.clone()));
            let checked = resume.check(listing.objects).await;
            let (mut finished, mut bytes) = (0u64, 0u64);
            for (object, checkpoint, done) in checked {
                if done {
                    tracing::info!(object = %object.url(), "finished by an earlier run: not read");
                    finished += 1;
                    continue;
                }
                bytes += object.size;
                let plan = Plan {
                    source: Source::S3(object.object_ref()),
                    from: Position::default(),
                    resumable: true,
                };
                out.push((plan, checkpoint.map(Checkpoint::Object)));
            }
            eprintln!(
                "gdfwd forward: {}: {listed} export object(s) selected ({} outside --since/--until, {} of other accounts or regions, {} not export objects, passed over); {finished} finished by an earlier run, not read (--no-resume reads them); reading {} ({:.1} MB)",
                printable(&location.to_string()),
                listing.outside_window,
                listing.other_scope,
                listing.not_export,
                listed as u64 - finished,
                bytes as f64 / 1e6,
            );
        }
        let missing = self
            .selection
            .accounts_without(present.iter().map(String::as_str));
        if !missing.is_empty() {
            eprintln!("{}", missing_accounts(&missing));
        }
        Ok(out)
    }

    /// Reads the planned objects on a thread of its own, as [`input::spawn_reader`] reads files:
    /// bodies come from a prefetch of `--s3-concurrency` objects at a time, chunks go into `tx`
    /// (whose bound is the backpressure), and it stops when the receiver is dropped. Must be
    /// called inside the runtime, after [`S3Input::plan`].
    pub fn spawn_reader(
        &self,
        plans: Vec<Plan>,
        config: ReadConfig,
        count: Arc<AtomicU64>,
        tx: tokio::sync::mpsc::Sender<Chunk>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let export = self
            .export
            .get()
            .ok_or_else(|| std::io::Error::other("the S3 export was not planned"))?;
        let targets = plans
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match &p.source {
                Source::S3(object) => Some((i, object.clone())),
                _ => None,
            })
            .collect();
        let mut bodies = export.prefetch(targets, self.concurrency);
        let selection = self.selection.clone();
        std::thread::Builder::new()
            .name("gdfwd-read-s3".to_owned())
            .spawn(move || {
                let mut emit = |mut c: Chunk| {
                    let before = c.findings.len();
                    c.findings.retain(|f| {
                        selection.keeps_updated(f.updated_at)
                            && selection.keeps_account(&f.account_id)
                    });
                    let left_out = (before - c.findings.len()) as u64;
                    c.skipped += left_out;
                    c.narrowed = left_out > 0;
                    tx.blocking_send(c).is_ok()
                };
                while let Some((index, body)) = bodies.blocking_recv() {
                    let Some(plan) = plans.get(index) else {
                        continue;
                    };
                    let name = plan.source.name();
                    let opened = body.map_err(|e| format!("error: {e}")).and_then(|body| {
                        let raw = Counting::new(body, count.clone());
                        input::content(BufReader::with_capacity(input::BUFFER, raw))
                            .map_err(|e| format!("error: reading {name}: {e}"))
                    });
                    match opened {
                        Ok((reader, gzip)) => {
                            input::read_source(index, plan, reader, gzip, config, &mut emit);
                        }
                        Err(problem) => {
                            if !emit(input::unreadable(index, problem)) {
                                return;
                            }
                        }
                    }
                    if tx.is_closed() {
                        return;
                    }
                }
            })
    }
}

/// How planning finds the objects an earlier run finished: each object's checkpoint under this
/// run's filter `scope` and selection (`narrowing`), looked up [`LOOKUPS`] at a time.
struct Resume<'a> {
    store: Option<&'a Checkpoints>,
    scope: String,
    narrowing: Narrowing,
    ttl: std::time::Duration,
    no_resume: bool,
}

impl Resume<'_> {
    /// Each object with its checkpoint (with a store) and whether an earlier run finished it.
    async fn check(
        &self,
        objects: Vec<ExportObject>,
    ) -> Vec<(ExportObject, Option<ObjectCheckpoint>, bool)> {
        futures::stream::iter(objects)
            .map(|object| async move {
                let checkpoint = self.store.map(|s| {
                    let id = ObjectId {
                        url: &object.url(),
                        etag: &object.etag,
                        size: object.size,
                    };
                    let narrowing = self.narrowing.clone();
                    ObjectCheckpoint::new(s.clone(), id, &self.scope, narrowing, self.ttl)
                });
                let finished = match &checkpoint {
                    Some(c) if !self.no_resume => c.finished().await,
                    _ => false,
                };
                (object, checkpoint, finished)
            })
            .buffered(LOOKUPS)
            .collect()
            .await
    }
}

/// The warning for `--accounts` that have no export folder in the selection. An organization's
/// export is written by the delegated administrator, under its own account, with every member's
/// findings inside: a member's id selects no folder there, and `--include-account` (which looks
/// at each finding's `accountId`) is what selects its findings.
fn missing_accounts(missing: &[&str]) -> String {
    let list = missing.join(",");
    format!(
        "warning: gdfwd forward: no export object of --accounts {list} in the selection (no AWSLogs/<account>/GuardDuty/ folder of theirs, or nothing in it inside --since/--until). An organization's export holds every member's findings in the delegated administrator's folder: to select member accounts there, give --include-account {list} instead of --accounts"
    )
}
