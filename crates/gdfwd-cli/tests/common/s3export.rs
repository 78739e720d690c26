//! A GuardDuty S3 findings export written into moto: findings generated from the shared
//! fixtures (each with its own id, account, region and `updatedAt`), gzip NDJSON objects under
//! `PREFIX/AWSLogs/<account>/GuardDuty/<region>/YYYY/MM/DD/`, as GuardDuty lays them out. Shared
//! by the end-to-end tests and the bulk benchmark (`examples/bulk_bench.rs`).

#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

/// An S3 client for `endpoint` (moto, or a proxy in front of it), addressing buckets by path.
pub async fn client(endpoint: &str) -> aws_sdk_s3::Client {
    let sdk = gdfwd_testkit_moto::sdk_config_at(endpoint).await;
    let conf = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Points a `gdfwd` command's AWS calls at `endpoint` (moto, or a proxy in front of it), with
/// moto's test credentials and region and nothing from the caller's AWS environment.
pub fn aws_env(cmd: &mut std::process::Command, endpoint: &str) {
    cmd.env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", gdfwd_testkit_moto::REGION)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE");
}

/// The 40 generated fixture findings (API shape), parsed.
pub fn base_findings() -> Vec<serde_json::Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/guardduty/generated/raw-findings-40.ndjson");
    std::fs::read_to_string(path)
        .expect("fixture")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("fixture JSON"))
        .collect()
}

/// Finding `n` of the export: fixture `n % 40` with id `id`, in `account` and `region`,
/// created and updated at `updated` (RFC 3339).
pub fn finding(
    base: &[serde_json::Value],
    n: usize,
    id: &str,
    account: &str,
    region: &str,
    updated: &str,
) -> String {
    let mut f = base[n % base.len()].clone();
    f["id"] = serde_json::json!(id);
    f["accountId"] = serde_json::json!(account);
    f["region"] = serde_json::json!(region);
    f["arn"] = serde_json::json!(format!(
        "arn:aws:guardduty:{region}:{account}:detector/d/finding/{id}"
    ));
    f["createdAt"] = serde_json::json!(updated);
    f["updatedAt"] = serde_json::json!(updated);
    f.to_string()
}

/// The key GuardDuty gives an export object.
pub fn key(prefix: &str, account: &str, region: &str, day: &str, name: &str) -> String {
    format!(
        "{prefix}AWSLogs/{account}/GuardDuty/{region}/{}/{name}.jsonl.gz",
        day.replace('-', "/")
    )
}

/// Gzips `lines` (one finding each) into `bucket/key`; returns the object's size.
pub async fn put(client: &aws_sdk_s3::Client, bucket: &str, key: &str, lines: &[String]) -> u64 {
    put_gzip(client, bucket, key, lines, flate2::Compression::fast()).await
}

/// [`put`] with gzip's stored (uncompressed) blocks: a valid `.gz` as large as its content, for
/// objects too large to be fetched whole.
pub async fn put_stored(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    lines: &[String],
) -> u64 {
    put_gzip(client, bucket, key, lines, flate2::Compression::none()).await
}

async fn put_gzip(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    lines: &[String],
    level: flate2::Compression,
) -> u64 {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), level);
    for line in lines {
        enc.write_all(line.as_bytes()).expect("gzip");
        enc.write_all(b"\n").expect("gzip");
    }
    let body = enc.finish().expect("gzip");
    let size = body.len() as u64;
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into())
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutObject {bucket}/{key}: {e:?}"));
    size
}

/// Creates `bucket` in moto.
pub async fn bucket(client: &aws_sdk_s3::Client, bucket: &str) {
    client
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateBucket {bucket}: {e:?}"));
}

/// A bucket name of the test's own (lower case, as S3 requires).
pub fn bucket_name(prefix: &str) -> String {
    gdfwd_testkit_moto::unique_name(prefix).to_lowercase()
}
