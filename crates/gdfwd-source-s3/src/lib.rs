//! GuardDuty's S3 findings export as a source of findings: list the export objects under an
//! `s3://BUCKET/PREFIX`, select them by key (account, region, day: [`key`]) without reading them,
//! and read the selected ones concurrently with a bound ([`Export::prefetch`]).
//!
//! Why shaped so: the export is the only place findings older than GuardDuty's 90 days live, and
//! it can hold an organization's years of history, so selection happens on the listing (keys
//! carry everything needed) and the bodies come in plan order through a bounded channel: at most
//! `concurrency` objects are being fetched and `concurrency` more wait to be parsed. Small objects
//! come whole, large ones as streams ([`body`]), so memory is bounded whatever the size of the
//! export or of one object. Parsing stays with the caller (the CLI's reader), so the objects go
//! through exactly the same record reader as files do.
//!
//! Every error names the bucket or the object (`s3://bucket/key`) and what permission a denial
//! needs; none carries a credential.

pub mod body;
pub mod key;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use futures::StreamExt;

pub use body::{Body, ObjectReader, ObjectRef, PREFETCH_MAX_BYTES};
pub use key::{ExportKey, Location, Selection, Verdict, listing_prefixes, parse_key};

/// What failed talking to S3, naming the bucket or object.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error(
        "s3://{bucket}: no such bucket (check its name, and that the account you read with can see it)"
    )]
    NoSuchBucket { bucket: String },
    #[error(
        "s3://{bucket}: the bucket is in region {region}, not the configured one: set AWS_REGION={region}"
    )]
    WrongRegion { bucket: String, region: String },
    #[error("{url}: access denied ({needs})")]
    AccessDenied { url: String, needs: &'static str },
    #[error("{url}: no such object (deleted since it was listed?)")]
    NoSuchKey { url: String },
    #[error("{url}: the object changed while it was being read (re-run to read the new version)")]
    Changed { url: String },
    #[error("{what} {url}: {detail}")]
    Request {
        what: &'static str,
        url: String,
        detail: String,
    },
}

/// One export object chosen for reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportObject {
    pub bucket: String,
    pub key: String,
    /// Bytes as stored (compressed).
    pub size: u64,
    /// The entity tag from the listing: identifies this version of the object for checkpoints.
    pub etag: String,
    pub export: ExportKey,
}

impl ExportObject {
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// What reading it needs: where it is and which version was listed.
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef {
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            size: self.size,
            etag: self.etag.clone(),
        }
    }
}

/// A listing, selected: the objects to read (in key order) and what was passed over, by reason.
#[derive(Debug, Default)]
pub struct Listing {
    pub objects: Vec<ExportObject>,
    pub not_export: u64,
    pub other_scope: u64,
    pub outside_window: u64,
    /// `ListObjectsV2` requests made.
    pub requests: u64,
}

/// The S3 client the export is read with.
#[derive(Debug, Clone)]
pub struct Export {
    client: aws_sdk_s3::Client,
}

/// The fields of an SDK error needed to classify it: HTTP status, error code, one line.
fn describe<E>(err: &SdkError<E, HttpResponse>) -> (Option<u16>, Option<String>, String)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().map(str::to_owned);
    let detail = match (err.code(), err.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_owned(),
        _ => DisplayErrorContext(err).to_string(),
    };
    (status, code, detail)
}

fn bucket_region<E>(err: &SdkError<E, HttpResponse>) -> Option<String> {
    err.raw_response()?
        .headers()
        .get("x-amz-bucket-region")
        .map(str::to_owned)
}

impl Export {
    /// A client from the SDK configuration. With a custom endpoint (`AWS_ENDPOINT_URL`, e.g. a
    /// local emulator) buckets are addressed by path, as emulators expect; against AWS by host.
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        let mut conf = aws_sdk_s3::config::Builder::from(sdk);
        if sdk.endpoint_url().is_some() {
            conf = conf.force_path_style(true);
        }
        Self {
            client: aws_sdk_s3::Client::from_conf(conf.build()),
        }
    }

    /// Lists the export objects under `location` that `selection` reads, narrowing the listing
    /// to the selected accounts and regions where the layout allows ([`listing_prefixes`]).
    pub async fn list(
        &self,
        location: &Location,
        selection: &Selection,
    ) -> Result<Listing, S3Error> {
        let mut listing = Listing::default();
        let prefixes = listing_prefixes(&location.prefix, &selection.accounts, &selection.regions);
        for prefix in prefixes {
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(&location.bucket)
                .prefix(&prefix)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                listing.requests += 1;
                let page = page.map_err(|e| list_error(&location.bucket, &prefix, &e))?;
                for object in page.contents() {
                    let Some(key) = object.key() else { continue };
                    match selection.verdict(key) {
                        Verdict::Read(export) => listing.objects.push(ExportObject {
                            bucket: location.bucket.clone(),
                            key: key.to_owned(),
                            size: object
                                .size()
                                .and_then(|s| u64::try_from(s).ok())
                                .unwrap_or(0),
                            etag: object.e_tag().unwrap_or_default().to_owned(),
                            export,
                        }),
                        Verdict::NotExport => listing.not_export += 1,
                        Verdict::OtherScope => listing.other_scope += 1,
                        Verdict::OutsideWindow => listing.outside_window += 1,
                    }
                }
            }
        }
        Ok(listing)
    }

    /// Sends a `GetObject` for `bucket`/`key` from byte `offset` (a `Range` when not 0), with
    /// `If-Match: etag` when given; errors name the object and what a denial needs.
    pub(crate) async fn send_get(
        &self,
        bucket: &str,
        key: &str,
        offset: u64,
        etag: Option<&str>,
    ) -> Result<GetObjectOutput, S3Error> {
        let url = format!("s3://{bucket}/{key}");
        let mut request = self.client.get_object().bucket(bucket).key(key);
        if offset > 0 {
            request = request.range(format!("bytes={offset}-"));
        }
        if let Some(etag) = etag {
            request = request.if_match(etag);
        }
        request.send().await.map_err(|e| {
            let (status, code, detail) = describe(&e);
            match (status, code.as_deref()) {
                (_, Some("NoSuchBucket")) => S3Error::NoSuchBucket {
                    bucket: bucket.to_owned(),
                },
                (_, Some("NoSuchKey")) => S3Error::NoSuchKey { url },
                (Some(412), _) | (_, Some("PreconditionFailed")) => S3Error::Changed { url },
                (Some(403), _) | (_, Some("AccessDenied")) => S3Error::AccessDenied {
                    url,
                    needs: "reading it needs s3:GetObject on the object and kms:Decrypt on the export's KMS key",
                },
                _ => match bucket_region(&e) {
                    Some(region) if status == Some(301) => S3Error::WrongRegion {
                        bucket: bucket.to_owned(),
                        region,
                    },
                    _ => S3Error::Request {
                        what: "GetObject",
                        url,
                        detail,
                    },
                },
            }
        })
    }

    /// Fetches `objects` (each with a tag of the caller's) in the given order with at most
    /// `concurrency` requests at a time ([`Export::fetch`]: small objects whole, large ones as
    /// streams opened when read), and hands them on through a channel holding at most
    /// `concurrency` more: the receiver reads them at its pace, and dropping it stops the
    /// fetching. Must be called inside a tokio runtime; the bodies must be read outside it.
    pub fn prefetch<T: Send + 'static>(
        &self,
        objects: Vec<(T, ObjectRef)>,
        concurrency: usize,
    ) -> tokio::sync::mpsc::Receiver<(T, Result<Body, S3Error>)> {
        let concurrency = concurrency.max(1);
        let (tx, rx) = tokio::sync::mpsc::channel(concurrency);
        let export = self.clone();
        tokio::spawn(async move {
            let mut bodies = futures::stream::iter(objects)
                .map(|(tag, object)| {
                    let export = export.clone();
                    async move { (tag, export.fetch(object).await) }
                })
                .buffered(concurrency);
            while let Some(body) = bodies.next().await {
                if tx.send(body).await.is_err() {
                    return;
                }
            }
        });
        rx
    }
}

fn list_error<E>(bucket: &str, prefix: &str, e: &SdkError<E, HttpResponse>) -> S3Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let (status, code, detail) = describe(e);
    match (status, code.as_deref()) {
        (_, Some("NoSuchBucket")) | (Some(404), _) => S3Error::NoSuchBucket {
            bucket: bucket.to_owned(),
        },
        (Some(403), _) | (_, Some("AccessDenied")) => S3Error::AccessDenied {
            url: format!("s3://{bucket}/{prefix}"),
            needs: "listing it needs s3:ListBucket on the bucket",
        },
        _ => match bucket_region(e) {
            Some(region) if status == Some(301) => S3Error::WrongRegion {
                bucket: bucket.to_owned(),
                region,
            },
            _ => S3Error::Request {
                what: "ListObjectsV2",
                url: format!("s3://{bucket}/{prefix}"),
                detail,
            },
        },
    }
}
