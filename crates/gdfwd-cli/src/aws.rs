//! The AWS SDK configuration, loaded once per run and only when a command needs AWS (so a local
//! dry run never waits on credential discovery). Honours the standard environment, including
//! `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` for local emulators.

use tokio::sync::OnceCell;

static CONFIG: OnceCell<aws_config::SdkConfig> = OnceCell::const_new();

pub async fn sdk_config() -> &'static aws_config::SdkConfig {
    CONFIG
        .get_or_init(|| async {
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .load()
                .await
        })
        .await
}
