//! The token never shows up in logs (every crate at TRACE, reqwest/hyper/rustls included), in
//! outcome reasons, in errors or in `Debug` output, across success, throttling, 401 and transport
//! failures.
//!
//! The subscriber is installed globally (this file holds one test, so one process), which also
//! routes the `log` records of reqwest, hyper-util and rustls into it.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gdfwd_core::sink::{OutEvent, Sink};
use gdfwd_sink_http::config::TokenConfig;
use gdfwd_sink_http::{
    HttpSink, HttpSinkConfig, RetryConfig, Secret, StaticToken, build_token_source,
};
use gdfwd_testkit_openpipeline::{FakeOpenPipeline, Fault};

const TOKEN: &str = "dt0c01.REDACTIONTEST.VERYSECRETTOKENVALUE42";
const TOKEN_PART: &str = "VERYSECRETTOKENVALUE42";

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn events(n: usize) -> Vec<OutEvent> {
    (0..n)
        .map(|i| OutEvent {
            id: format!("{i:032x}"),
            json: format!(r#"{{"uuid":"{i:032x}"}}"#),
        })
        .collect()
}

#[tokio::test]
async fn token_stays_out_of_logs_errors_and_debug() {
    let buf = Buffer::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing_subscriber::util::SubscriberInitExt::try_init(subscriber).expect("global subscriber");

    let fake = FakeOpenPipeline::start(TOKEN).await.expect("fake");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = HttpSinkConfig::new(&fake.endpoint(), false).expect("config");
    cfg.ca_file = Some(fake.write_ca_file(dir.path()).expect("ca"));
    cfg.retry = RetryConfig {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        ..RetryConfig::default()
    };
    cfg.token = TokenConfig {
        static_token: Some(Secret::new(TOKEN)),
        ..TokenConfig::default()
    };
    let mut seen = vec![format!("{cfg:?}")];

    let tokens = build_token_source(&cfg.token, None).await.expect("tokens");
    seen.push(format!("{tokens:?}"));
    let sink = HttpSink::new(cfg.clone(), tokens).expect("sink");
    seen.push(format!("{sink:?}"));

    // Success after throttling and a dropped connection.
    fake.push_faults([
        Fault::TooManyRequests(None),
        Fault::Drop,
        Fault::Status(500),
    ]);
    let report = sink.send(&events(5), None).await;
    assert!(report.outcomes.iter().all(|o| o.is_sent()), "{report:?}");
    seen.push(format!("{report:?}"));

    // 401: the endpoint now wants another token.
    fake.set_expected_authorization(Some("Api-Token dt0c01.OTHER".into()));
    let report = sink.send(&events(2), None).await;
    assert!(report.outcomes.iter().all(|o| !o.is_sent()));
    seen.push(format!("{report:?}"));

    // Transport failures: the endpoint is gone.
    let mut fake = fake;
    fake.stop();
    drop(fake);
    let report = sink
        .send(
            &events(2),
            Some(Instant::now() + Duration::from_millis(500)),
        )
        .await;
    seen.push(format!("{report:?}"));

    // A wrongly configured sink's error.
    let mut bad = cfg.clone();
    bad.ca_file = Some(dir.path().join("missing.pem"));
    let err =
        HttpSink::new(bad, Arc::new(StaticToken::new(Secret::new(TOKEN)))).expect_err("must fail");
    seen.push(format!("{err} {err:?}"));

    let logs = String::from_utf8(buf.0.lock().expect("lock").clone()).expect("utf8");
    assert!(
        logs.contains("retrying batch") && logs.contains("401"),
        "the capture works and saw the interesting paths:\n{logs}"
    );
    assert!(
        logs.contains("rustls") && logs.contains("reqwest"),
        "TRACE logs from the HTTP stack were captured:\n{logs}"
    );
    assert!(!logs.contains(TOKEN_PART), "token in logs");
    for s in &seen {
        assert!(!s.contains(TOKEN_PART), "token in {s}");
    }
}
