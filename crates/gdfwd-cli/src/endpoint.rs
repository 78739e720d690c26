//! `gdfwd doctor --check-endpoint`: the sender's own configuration and token source (as
//! `forward` builds them) behind the doctor's endpoint port.

use std::sync::Arc;

use gdfwd_doctor::{EndpointAnswer, EndpointProbe};
use gdfwd_sink_http::{HttpSinkConfig, PROBE_BODY, ProbeAnswer, SenderArgs, TokenSource};

struct Probe {
    config: HttpSinkConfig,
    tokens: Arc<dyn TokenSource>,
}

#[async_trait::async_trait]
impl EndpointProbe for Probe {
    fn describe(&self) -> String {
        format!(
            "POST {} with an authorised empty array {PROBE_BODY}",
            self.config.endpoint
        )
    }

    async fn probe(&self) -> EndpointAnswer {
        match gdfwd_sink_http::probe(&self.config, self.tokens.as_ref()).await {
            ProbeAnswer::NoToken(e) => EndpointAnswer::NoToken(e),
            ProbeAnswer::Unreachable(e) => EndpointAnswer::Unreachable(e),
            ProbeAnswer::Status(s) => EndpointAnswer::Status(s),
        }
    }
}

/// The probe, from the same flags and environment `forward` reads (`--endpoint`,
/// `DT_API_TOKEN` or `--token-secret-arn`). A missing token source is a usage error.
pub async fn probe(sender: SenderArgs) -> anyhow::Result<Arc<dyn EndpointProbe>> {
    if sender
        .endpoint
        .as_deref()
        .is_none_or(|e| e.trim().is_empty())
    {
        return Err(crate::Usage(
            "--check-endpoint needs the endpoint: --endpoint URL or DYNATRACE_OPENPIPELINE_SECURITY_ENDPOINT"
                .to_owned(),
        )
        .into());
    }
    let config = sender.into_config()?;
    let sdk = crate::aws::sdk_config().await;
    let tokens = match gdfwd_sink_http::build_token_source(&config.token, Some(sdk)).await {
        Ok(t) => t,
        Err(gdfwd_sink_http::SinkHttpError::NoToken) => {
            return Err(crate::Usage(
                "--check-endpoint needs the token: DT_API_TOKEN, or --token-secret-arn ARN"
                    .to_owned(),
            )
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Arc::new(Probe { config, tokens }))
}
