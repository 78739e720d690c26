//! SecretsManagerToken against moto: JSON and bare secrets, rotation picked up by refresh, the
//! refresh interval, errors that name the secret but not its value, and a sink that recovers from
//! a 401 by re-reading a rotated secret.

use std::sync::Arc;
use std::time::Duration;

use gdfwd_core::ManualClock;
use gdfwd_core::model::Timestamp;
use gdfwd_core::sink::{OutEvent, Sink};
use gdfwd_sink_http::config::TokenConfig;
use gdfwd_sink_http::{
    HttpSink, HttpSinkConfig, Refresh, SecretsManagerToken, SinkHttpError, TokenSource,
    build_token_source,
};
use gdfwd_testkit_openpipeline::FakeOpenPipeline;

const KEY: &str = "DYNATRACE_OPENPIPELINE_INGEST_API_TOKEN";

async fn client() -> (aws_config::SdkConfig, aws_sdk_secretsmanager::Client) {
    let sdk = gdfwd_testkit_moto::sdk_config().await;
    let c = aws_sdk_secretsmanager::Client::new(&sdk);
    (sdk, c)
}

async fn create(c: &aws_sdk_secretsmanager::Client, value: &str) -> String {
    let out = c
        .create_secret()
        .name(gdfwd_testkit_moto::unique_name("gdfwd-sink-token"))
        .secret_string(value)
        .send()
        .await
        .expect("create secret");
    out.arn().expect("arn").to_owned()
}

async fn rotate(c: &aws_sdk_secretsmanager::Client, arn: &str, value: &str) {
    c.put_secret_value()
        .secret_id(arn)
        .secret_string(value)
        .send()
        .await
        .expect("put secret value");
}

fn json(token: &str) -> String {
    serde_json::json!({ KEY: token, "other": "x" }).to_string()
}

#[tokio::test]
async fn reads_json_secret_and_refresh_is_rate_limited_then_picks_up_rotation() {
    let (sdk, c) = client().await;
    let arn = create(&c, &json("dt0c01.FIRST")).await;
    let src = SecretsManagerToken::from_sdk_config(&sdk, &arn, KEY);
    assert_eq!(src.token().await.expect("token").expose(), "dt0c01.FIRST");

    rotate(&c, &arn, &json("dt0c01.SECOND")).await;
    // The cache holds until a refresh; a refresh right after the first read is refused.
    assert_eq!(src.token().await.expect("token").expose(), "dt0c01.FIRST");
    assert_eq!(src.refresh().await.expect("refresh"), Refresh::TooSoon);
    assert_eq!(src.token().await.expect("token").expose(), "dt0c01.FIRST");

    // The interval on an injected clock: refused until it has passed, however long moto takes.
    let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
    let stepped = SecretsManagerToken::from_sdk_config(&sdk, &arn, KEY)
        .with_min_refresh_interval(Duration::from_secs(60))
        .with_clock(Arc::new(clock.clone()));
    assert_eq!(
        stepped.token().await.expect("token").expose(),
        "dt0c01.SECOND"
    );
    rotate(&c, &arn, &json("dt0c01.THIRD")).await;
    clock.advance(Duration::from_millis(59_999));
    assert_eq!(stepped.refresh().await.expect("refresh"), Refresh::TooSoon);
    assert_eq!(
        stepped.token().await.expect("token").expose(),
        "dt0c01.SECOND"
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(stepped.refresh().await.expect("refresh"), Refresh::Reloaded);
    assert_eq!(
        stepped.token().await.expect("token").expose(),
        "dt0c01.THIRD"
    );
    // The interval starts again at the refresh.
    rotate(&c, &arn, &json("dt0c01.FOURTH")).await;
    clock.advance(Duration::from_secs(30));
    assert_eq!(stepped.refresh().await.expect("refresh"), Refresh::TooSoon);
    clock.advance(Duration::from_secs(30));
    assert_eq!(stepped.refresh().await.expect("refresh"), Refresh::Reloaded);
    assert_eq!(
        stepped.token().await.expect("token").expose(),
        "dt0c01.FOURTH"
    );
}

#[tokio::test]
async fn bare_secret_string_and_custom_key_via_build_token_source() {
    let (sdk, c) = client().await;
    let bare = create(&c, "dt0c01.BARE").await;
    let cfg = TokenConfig {
        secret_arn: Some(bare),
        ..TokenConfig::default()
    };
    let src = build_token_source(&cfg, Some(&sdk)).await.expect("source");
    assert_eq!(src.token().await.expect("token").expose(), "dt0c01.BARE");

    let custom = create(&c, r#"{"MY_KEY":"dt0c01.CUSTOM"}"#).await;
    let cfg = TokenConfig {
        secret_arn: Some(custom),
        secret_key_name: "MY_KEY".into(),
        ..TokenConfig::default()
    };
    let src = build_token_source(&cfg, Some(&sdk)).await.expect("source");
    assert_eq!(src.token().await.expect("token").expose(), "dt0c01.CUSTOM");
}

#[tokio::test]
async fn errors_name_the_secret_and_key_but_never_the_value() {
    let (sdk, c) = client().await;
    let arn = create(&c, r#"{"WRONG_KEY":"dt0c01.HIDDENVALUE"}"#).await;
    let err = SecretsManagerToken::from_sdk_config(&sdk, &arn, KEY)
        .token()
        .await
        .expect_err("must fail");
    let text = format!("{err} {err:?}");
    assert!(matches!(err, SinkHttpError::SecretContent { .. }), "{text}");
    assert!(
        text.contains(&arn) && text.contains(KEY) && text.contains("WRONG_KEY"),
        "{text}"
    );
    assert!(!text.contains("HIDDENVALUE"), "{text}");

    let missing = format!("{arn}-does-not-exist");
    let err = SecretsManagerToken::from_sdk_config(&sdk, &missing, KEY)
        .token()
        .await
        .expect_err("must fail");
    // Not found is a refusal (the configuration is wrong), not an outage.
    assert!(
        matches!(&err, SinkHttpError::SecretRefused { arn, .. } if *arn == missing),
        "{err}"
    );
    assert!(err.is_refusal());
    assert!(
        err.to_string().contains("ResourceNotFoundException"),
        "{err}"
    );
}

#[tokio::test]
async fn sink_recovers_from_401_by_reading_the_rotated_secret() {
    let (sdk, c) = client().await;
    let arn = create(&c, &json("dt0c01.BEFORE")).await;
    let fake = FakeOpenPipeline::start("dt0c01.AFTER").await.expect("fake");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = HttpSinkConfig::new(&fake.endpoint(), false).expect("config");
    cfg.ca_file = Some(fake.write_ca_file(dir.path()).expect("ca"));
    cfg.token = TokenConfig {
        secret_arn: Some(arn.clone()),
        // The first read happens at the first send; a refresh right after must be allowed.
        min_refresh_interval: Duration::ZERO,
        ..TokenConfig::default()
    };
    let tokens: Arc<dyn TokenSource> = build_token_source(&cfg.token, Some(&sdk))
        .await
        .expect("tokens");
    // Read "BEFORE" into the cache, then rotate behind the sink's back.
    assert_eq!(
        tokens.token().await.expect("token").expose(),
        "dt0c01.BEFORE"
    );
    rotate(&c, &arn, &json("dt0c01.AFTER")).await;

    let sink = HttpSink::new(cfg, tokens).expect("sink");
    let events: Vec<OutEvent> = (0..3)
        .map(|i| OutEvent {
            id: format!("{i:032x}"),
            json: format!(r#"{{"uuid":"rot{i}"}}"#),
        })
        .collect();
    let report = sink.send(&events, None).await;
    assert!(report.outcomes.iter().all(|o| o.is_sent()), "{report:?}");
    let statuses: Vec<Option<u16>> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![Some(401), Some(202)]);
}
