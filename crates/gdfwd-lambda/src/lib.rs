//! The forwarder as an AWS Lambda function (custom runtime, binary `bootstrap`).
//!
//! Shaped like awslabs/aws-lambda-rust-runtime's examples: `main` reads [`config::Config`] once,
//! builds the AWS clients, the HTTP client and the [`handler::Handler`] once, then hands a plain
//! async function to `lambda_runtime::run` ([`serve`]). Everything that decides anything lives in
//! [`handler`], which is tested without the runtime; the end-to-end tests drive the real binary
//! through a fake Lambda Runtime API (`gdfwd-testkit-lambda`).

pub mod config;
pub mod handler;
pub mod metrics;
pub mod ready;
pub mod runtime;

pub use config::{Config, ConfigError};
pub use handler::{
    Answer, DirectAnswer, Handled, Handler, HandlerError, Invocation, Shape, SqsBatchResponse,
};
pub use metrics::InvocationMetrics;
pub use ready::{Check, Checked, NotReady, Readiness};
pub use runtime::{init_logging, report_init_error, serve};
