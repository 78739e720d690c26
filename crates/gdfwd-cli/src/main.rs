//! `gdfwd`: the command-line binary. Thin by design: it parses arguments, reads configuration,
//! wires adapters into the core pipeline and reports. Logic lives in the library crates.

mod accounts;
mod audit;
mod aws;
mod backfill;
mod checkpoint;
mod doctor;
mod endpoint;
mod filter;
mod forward;
mod input;
mod interrupt;
mod progress;
mod render;
mod s3;
mod store;
mod wiring;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// No `#[global_allocator]`: glibc malloc, unlike the Lambda (mimalloc). A bulk `forward` parses
// findings on its reader thread and frees them on the runtime's, the pattern mimalloc handles
// worst: with it, 1,000,000 findings from S3 peaked at 121 MB RSS and ran 17 % slower than with
// glibc's 50 MB (docs/performance.md, "Allocator").

/// Forward Amazon GuardDuty findings to Dynatrace (OpenPipeline security events), once each.
#[derive(Debug, Parser)]
#[command(name = "gdfwd", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Log filter (tracing syntax, e.g. `info`, `gdfwd=debug`); RUST_LOG takes precedence.
    #[arg(long, global = true, env = "LOG_LEVEL", default_value = "warn")]
    log_level: String,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read findings from files, stdin or GuardDuty's S3 export (s3://BUCKET/PREFIX) and forward
    /// them (or, with --dry-run, print the events).
    #[command(after_help = forward::EXIT_STATUS)]
    Forward(Box<forward::ForwardArgs>),
    /// Send the findings GuardDuty already holds (up to 90 days), resumably, through the same
    /// dedup and sender as `forward`.
    Backfill(Box<backfill::BackfillArgs>),
    /// Dedup audit queries: what was sent, suppressed, failed.
    Audit(audit::AuditArgs),
    /// Resolve account names as the forwarder would (checks the alias role and Organizations access).
    Accounts(accounts::AccountsArgs),
    /// Does every account and region of the Organization reach Dynatrace? Checks GuardDuty
    /// membership, the forwarder and relays, the queues, the dedup store's flow and the alias
    /// role, and prints each gap with its fix. Exit 1 when anything is missing. Read-only.
    Doctor(Box<doctor::DoctorArgs>),
    /// The state store itself.
    Store(StoreArgs),
}

#[derive(Debug, clap::Args)]
struct StoreArgs {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Create the store: the SQLite file and schema, or the DynamoDB table (for local use and
    /// tests; in AWS the CloudFormation template creates it with the same definition).
    Init(store::StoreArgs),
}

/// A value clap accepted but a later check refused (a time, an account id, a range): a usage
/// error like clap's own, so the exit status is 2, not 1.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn init_logging(cli: &Cli) {
    // The SDK's credential and region providers warn at length (with raw responses) when a
    // source they probe is absent, such as IMDS off EC2; our own errors say what failed. They
    // stay audible when the filter names them.
    let level = if cli.log_level.contains("aws") {
        cli.log_level.clone()
    } else {
        format!("{},aws_config=error", cli.log_level)
    };
    // A bare word would silently log nothing of ours (gdfwd_core::logfilter).
    let bare = gdfwd_core::logfilter::bare_word(&cli.log_level);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .map_err(|e| e.to_string())
        .or_else(|_| match bare {
            Some(word) => Err(format!("{word:?} is neither a level nor target=level")),
            None => tracing_subscriber::EnvFilter::try_new(&level).map_err(|e| e.to_string()),
        })
        .unwrap_or_else(|e| {
            eprintln!(
                "warning: --log-level/LOG_LEVEL {:?} is not a log filter ({e}); using warn",
                cli.log_level
            );
            tracing_subscriber::EnvFilter::new("warn,aws_config=error")
        });
    // Colour only on a terminal: redirected logs would carry escape codes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.fmt_fields(render::log_fields()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Forward(args) => forward::run(*args).await,
            Command::Backfill(args) => backfill::run_backfill(*args).await,
            Command::Audit(args) => audit::run(args).await,
            Command::Accounts(args) => accounts::run(args).await,
            Command::Doctor(args) => doctor::run(*args).await,
            Command::Store(StoreArgs {
                command: StoreCommand::Init(args),
            }) => {
                let message = args.init().await?;
                eprintln!("{message}");
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line, each cause once (a wrapper often repeats its cause).
            // Errors quote file names and input: escaped, as every line showing input is.
            eprintln!(
                "error: {}",
                render::printable(&gdfwd_aws_error::chain(e.as_ref()))
            );
            if e.downcast_ref::<Usage>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
