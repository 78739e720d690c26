//! `bootstrap`: the Lambda custom runtime (`provided.al2023`) entry point.
//!
//! Thin on purpose (the awslabs/aws-lambda-rust-runtime shape): read and validate the
//! configuration, build the AWS clients, the HTTP client and the handler once, then serve. A bad
//! configuration fails init with one clear line naming the variable, reported to the Runtime API's
//! `/init/error` and printed on stderr, and a non-zero exit. What only AWS can refuse (the table,
//! the secret) is checked in the background from init and gates every invocation until it passes
//! (`gdfwd_lambda::ready`), so init itself waits for no such round trip.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use gdfwd_core::SystemClock;
use gdfwd_core::sink::Sink;
use gdfwd_core::store::{KvStore, StateStore};
use gdfwd_enrich_aws::{EnrichConfig, build_resolver};
use gdfwd_lambda::{
    Check, Checked, Config, Handler, NotReady, Readiness, init_logging, report_init_error, serve,
};
use gdfwd_sink_http::{HttpSink, SinkHttpError, TokenSource, build_token_source};
use gdfwd_store_dynamodb::{DynamoStore, DynamoStoreError};

/// Per-finding CPU is dominated by small allocations (SDK requests, JSON): mimalloc is markedly
/// cheaper than glibc malloc for that (docs/performance.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let vars: HashMap<String, String> = std::env::vars().collect();
    let config = match Config::from_vars(&vars) {
        Ok(c) => c,
        Err(e) => return init_failed(&vars, "Runtime.ConfigError", &e.to_string()),
    };
    if let Some(message) = outside_lambda(&vars) {
        return init_failed(&vars, "Runtime.ConfigError", &message);
    }
    init_logging(&config.log_level);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return init_failed(
                &vars,
                "Runtime.InitError",
                &format!("starting the async runtime: {e}"),
            );
        }
    };
    let function_name = vars
        .get("AWS_LAMBDA_FUNCTION_NAME")
        .cloned()
        .unwrap_or_else(|| "gdfwd".to_owned());
    let served = runtime.block_on(async {
        let (handler, ready) = build(&config).await?;
        tracing::info!(config = %config.summary(), "initialised");
        Ok(serve(Arc::new(handler), Arc::new(ready), function_name).await)
    });
    match served {
        Ok(Ok(())) => ExitCode::SUCCESS,
        // Not an init failure: the Runtime API went away or refused us after init.
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the Lambda runtime client stopped");
            ExitCode::FAILURE
        }
        Err((kind, message)) => init_failed(&vars, kind, &message),
    }
}

/// The variables Lambda sets for a custom runtime that `lambda_runtime` reads (it panics without
/// them): when one is missing, this is not running in Lambda, and saying so beats a panic after
/// the AWS clients were built.
fn outside_lambda(vars: &HashMap<String, String>) -> Option<String> {
    let missing: Vec<&str> = [
        "AWS_LAMBDA_RUNTIME_API",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    ]
    .into_iter()
    .filter(|k| vars.get(*k).is_none_or(|v| v.is_empty()))
    .collect();
    let memory_ok = vars
        .get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        .is_none_or(|v| v.is_empty() || v.parse::<i32>().is_ok());
    if missing.is_empty() && memory_ok {
        return None;
    }
    let what = if missing.is_empty() {
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE is not a number".to_owned()
    } else {
        format!("{} not set", missing.join(", "))
    };
    Some(format!(
        "{what}: bootstrap runs inside AWS Lambda (or a Lambda Runtime API emulator) only; to forward findings from files or stdin use `gdfwd forward`"
    ))
}

/// Why init failed: the Runtime API's error type and the message (naming the variable).
type InitError = (&'static str, String);

/// How long a readiness check waits for AWS. No answer is not a verdict on the configuration:
/// the invocation goes on with a warning, and the next one checks again.
const CHECK_BUDGET: Duration = Duration::from_secs(3);

/// Builds the clients and the handler, and starts the readiness checks in the background (the
/// table exists with our key schema; the secret holds a token: see `gdfwd_lambda::ready`). The
/// only AWS call init waits for is the resolver's one bounded `sts:GetCallerIdentity`.
async fn build(config: &Config) -> Result<(Handler, Readiness), InitError> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let clock = Arc::new(SystemClock);

    let dynamo = Arc::new(DynamoStore::new(
        gdfwd_store_dynamodb::client(&sdk),
        config.dedup_table.clone(),
        clock.clone(),
        config.dedup_retention,
    ));
    let sink_config = config
        .sink_config()
        .map_err(|e| ("Runtime.ConfigError", e.to_string()))?;
    let tokens = build_token_source(&sink_config.token, Some(&sdk))
        .await
        .map_err(|e| init_error(gdfwd_lambda::config::SECRET_ARN, e))?;
    let sink: Arc<dyn Sink> = Arc::new(HttpSink::new(sink_config, Arc::clone(&tokens)).map_err(
        |e| {
            (
                "Runtime.InitError",
                format!(
                    "building the Dynatrace client ({} / {}): {e}",
                    gdfwd_lambda::config::ENDPOINT,
                    gdfwd_lambda::config::CA_FILE
                ),
            )
        },
    )?);

    let enrich = EnrichConfig {
        enabled: config.enrich,
        role_name: config.alias_role_name.clone(),
        external_id: config.alias_external_id.clone(),
        account_fields: config.account_fields.clone(),
        ..EnrichConfig::default()
    };
    let ready = Readiness::start(aws_checks(dynamo.clone(), Arc::clone(&tokens)));
    let cache: Arc<dyn KvStore> = dynamo.clone();
    let store: Arc<dyn StateStore> = dynamo;
    let resolver = build_resolver(&enrich, &sdk, Some(cache), clock).await;

    let handler = Handler::new(
        Some(store),
        sink,
        resolver,
        config.format,
        config.dedup_lease,
    )
    .with_filter(config.filter.clone());
    Ok((handler, ready))
}

/// The readiness checks: `DescribeTable` and reading the token, concurrently. A refusal names the
/// variable to fix; an outage or no answer within [`CHECK_BUDGET`] is inconclusive (warned, and
/// checked again at the next invocation).
fn aws_checks(dynamo: Arc<DynamoStore>, tokens: Arc<dyn TokenSource>) -> Check {
    use gdfwd_lambda::config::{DEDUP_TABLE_NAME, SECRET_ARN, SECRET_KEY_NAME};
    Arc::new(move || {
        let dynamo = Arc::clone(&dynamo);
        let tokens = Arc::clone(&tokens);
        Box::pin(async move {
            let (table, token) = tokio::join!(
                tokio::time::timeout(CHECK_BUDGET, dynamo.check()),
                tokio::time::timeout(CHECK_BUDGET, async { tokens.token().await.map(drop) }),
            );
            let table = verdict("the table", table, |e: &DynamoStoreError| {
                e.is_refusal().then_some(DEDUP_TABLE_NAME)
            })?;
            let token = verdict("the token", token, |e: &SinkHttpError| match e {
                // The secret was read but holds no token under the key: the key name is wrong.
                SinkHttpError::SecretContent { .. } => Some(SECRET_KEY_NAME),
                e if e.is_refusal() => Some(SECRET_ARN),
                _ => None,
            })?;
            Ok(if table == Checked::Passed && token == Checked::Passed {
                Checked::Passed
            } else {
                Checked::Inconclusive
            })
        })
    })
}

/// One check's answer: a refusal fails naming the variable `refused` picks; another error or no
/// answer in time is inconclusive.
fn verdict<E: std::fmt::Display>(
    what: &str,
    answer: Result<Result<(), E>, tokio::time::error::Elapsed>,
    refused: impl Fn(&E) -> Option<&'static str>,
) -> Result<Checked, NotReady> {
    match answer {
        Ok(Ok(())) => Ok(Checked::Passed),
        Ok(Err(e)) => match refused(&e) {
            Some(var) => Err(not_ready(var, e)),
            None => {
                tracing::warn!(error = %e, "could not check {what}; checking again at the next invocation");
                Ok(Checked::Inconclusive)
            }
        },
        Err(_) => {
            tracing::warn!(
                "checking {what} got no answer within {CHECK_BUDGET:?}; checking again at the next invocation"
            );
            Ok(Checked::Inconclusive)
        }
    }
}

fn not_ready(var: &str, e: impl std::fmt::Display) -> NotReady {
    NotReady(format!("{var}: {e}"))
}

/// A configuration error at init, its message starting with the variable to fix.
fn init_error(var: &str, e: impl std::fmt::Display) -> InitError {
    ("Runtime.ConfigError", format!("{var}: {e}"))
}

/// Reports an init failure: a JSON line on stderr (CloudWatch), `/init/error` to the Runtime API
/// when there is one, exit status 1.
fn init_failed(vars: &HashMap<String, String>, kind: &str, message: &str) -> ExitCode {
    let line = serde_json::json!({"level": "ERROR", "message": "init failed", "error_type": kind, "error": message});
    eprintln!("{line}");
    if let Some(api) = vars.get("AWS_LAMBDA_RUNTIME_API").filter(|v| !v.is_empty())
        && let Err(e) = report_init_error(api, kind, message)
    {
        eprintln!(
            "{}",
            serde_json::json!({"level": "WARN", "message": "could not report the init error to the Runtime API", "error": e.to_string()})
        );
    }
    ExitCode::FAILURE
}
