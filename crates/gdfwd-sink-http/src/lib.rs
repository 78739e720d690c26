//! The OpenPipeline sender: delivers security events to Dynatrace's ingest API.
//!
//! Shaped like vector's HTTP sinks, with the pure parts apart from the I/O so they are unit-tested
//! without a server:
//! - [`request`]: batching by bytes and count, the JSON array body, gzip (pure);
//! - [`retry`]: what to do after each answer, with a human reason (pure);
//! - `service`: the one `reqwest::Client` and one POST;
//! - [`sink`]: [`HttpSink`], which wires them with rate limits, in-flight limits and deadlines and
//!   implements [`gdfwd_core::sink::Sink`];
//! - [`token`]: where the API token comes from ([`StaticToken`], [`SecretsManagerToken`]);
//! - [`config`]: [`HttpSinkConfig`] (the Lambda builds it from its environment), and with the `cli`
//!   feature [`cli::SenderArgs`] (the CLI flattens it into its commands).
//!
//! The token is a [`Secret`] everywhere: it never reaches logs, errors or `Debug` output.

#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
pub mod error;
mod halving;
pub mod probe;
pub mod request;
pub mod retry;
pub mod secret;
mod service;
pub mod sink;
pub mod token;

#[cfg(feature = "cli")]
pub use cli::SenderArgs;
pub use config::{AuthScheme, HttpSinkConfig, RetryConfig, TokenConfig};
pub use error::SinkHttpError;
pub use probe::{PROBE_BODY, ProbeAnswer, probe};
pub use secret::Secret;
pub use sink::HttpSink;
pub use token::{Refresh, SecretsManagerToken, StaticToken, TokenSource, build_token_source};
