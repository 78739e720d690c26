//! The bytes of one export object, as a blocking [`std::io::Read`] for the record reader's
//! thread: small objects fetched whole ahead of time, large ones streamed as they are read.
//!
//! Why shaped so: an organization's export is mostly small objects (GuardDuty writes one per
//! account, region and export interval), where the request latency dominates, so those are
//! fetched several at a time and held whole; but nothing stops an object from being large, and
//! holding it whole would make memory grow with the object. An object larger than
//! [`PREFETCH_MAX_BYTES`] is therefore only opened when its turn comes and read as a stream,
//! so memory stays bounded by `2 × concurrency + 1` small objects plus one stream's buffers,
//! whatever the export holds.
//!
//! A stream can break mid-body (a connection reset, S3 closing a connection left idle while the
//! sender waits out a rate limit). The reader then re-opens the object at the byte where it broke
//! (a `Range` request with `If-Match` on the entity tag it started with, so the bytes joined are
//! of one version) up to [`REOPENS`] times; the decompressor above it never notices. When that
//! fails too, the error names the object and the byte, the records before it stand, and the
//! object is not marked finished (the next run reads it again).

use std::io::{self, Cursor, Read};
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncBufRead;
use tokio_util::io::SyncIoBridge;

use crate::{Export, S3Error};

/// Objects up to this size (as stored, compressed) are fetched whole, ahead of their turn.
pub const PREFETCH_MAX_BYTES: u64 = 1 << 20;

/// Times a broken stream is re-opened at the byte where it broke before the object is given up.
pub const REOPENS: u32 = 3;

/// An export object to read: where it is, and which version of it the listing saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub bucket: String,
    pub key: String,
    /// Bytes as stored (compressed), from the listing.
    pub size: u64,
    /// The entity tag from the listing.
    pub etag: String,
}

impl ObjectRef {
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

/// One object's bytes, as stored (compressed; SSE-KMS is decrypted by S3).
#[derive(Debug)]
pub enum Body {
    /// Fetched whole ahead of its turn.
    Whole(Cursor<Bytes>),
    /// Read from S3 as it is consumed.
    Stream(ObjectReader),
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Whole(c) => c.read(buf),
            Self::Stream(s) => s.read(buf),
        }
    }
}

/// An object's stream from an open `GetObject`, read blocking.
type Stream = SyncIoBridge<Pin<Box<dyn AsyncBufRead + Send>>>;

/// Blocking reads of one object's body, re-opening it where it broke. Must be read on a thread
/// outside the runtime (the record reader's), never inside an async task.
pub struct ObjectReader {
    export: Export,
    object: ObjectRef,
    handle: tokio::runtime::Handle,
    current: Option<Stream>,
    /// Bytes handed to the caller so far: where a re-opened stream starts.
    offset: u64,
    /// The entity tag of the version being read (from the first answer): a re-opened range
    /// must come from the same version.
    etag: Option<String>,
    reopens: u32,
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader")
            .field("object", &self.object.url())
            .field("offset", &self.offset)
            .field("reopens", &self.reopens)
            .finish_non_exhaustive()
    }
}

impl ObjectReader {
    /// A reader that opens the object on its first read. `handle` is the runtime the S3 client
    /// runs on.
    pub fn new(export: Export, object: ObjectRef, handle: tokio::runtime::Handle) -> Self {
        Self {
            export,
            object,
            handle,
            current: None,
            offset: 0,
            etag: None,
            reopens: 0,
        }
    }

    fn started(mut self, stream: Stream, etag: Option<String>) -> Self {
        self.current = Some(stream);
        self.etag = etag;
        self
    }

    /// Re-opens after a break, or gives up naming the object and the byte.
    fn broke(&mut self, error: &io::Error) -> io::Result<()> {
        self.current = None;
        if self.reopens >= REOPENS {
            return Err(io::Error::new(
                error.kind(),
                format!(
                    "{}: the download broke at byte {} and re-opening it {REOPENS} times did not get further: {error}",
                    self.object.url(),
                    self.offset
                ),
            ));
        }
        self.reopens += 1;
        tracing::warn!(object = %self.object.url(), at = self.offset, attempt = self.reopens, error = %error,
            "the download broke; re-opening it where it stopped");
        std::thread::sleep(Duration::from_millis(200 << self.reopens));
        Ok(())
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(stream) = self.current.as_mut() else {
                let (reader, etag) = self
                    .handle
                    .block_on(
                        self.export
                            .open(&self.object, self.offset, self.etag.as_deref()),
                    )
                    .map_err(io::Error::other)?;
                if self.etag.is_none() {
                    self.etag = etag;
                }
                self.current = Some(SyncIoBridge::new_with_handle(reader, self.handle.clone()));
                continue;
            };
            match stream.read(buf) {
                Ok(0) if !buf.is_empty() && self.offset < self.object.size => {
                    // A body that ends early without an error from the transport.
                    let short = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the body ended at byte {} of {}",
                            self.offset, self.object.size
                        ),
                    );
                    self.broke(&short)?;
                }
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.broke(&e)?,
            }
        }
    }
}

impl Export {
    /// Opens `object` at byte `offset` (a `Range` request when not 0, `If-Match: etag` when
    /// given); returns its stream and the answer's entity tag.
    pub(crate) async fn open(
        &self,
        object: &ObjectRef,
        offset: u64,
        etag: Option<&str>,
    ) -> Result<(Pin<Box<dyn AsyncBufRead + Send>>, Option<String>), S3Error> {
        let out = self
            .send_get(&object.bucket, &object.key, offset, etag)
            .await?;
        let etag = out.e_tag().map(str::to_owned);
        Ok((Box::pin(out.body.into_async_read()), etag))
    }

    /// The body of `object`: fetched whole when it is small (as listed and as answered),
    /// otherwise a reader that streams it. Must run inside the runtime.
    pub async fn fetch(&self, object: ObjectRef) -> Result<Body, S3Error> {
        let handle = tokio::runtime::Handle::current();
        if object.size > PREFETCH_MAX_BYTES {
            return Ok(Body::Stream(ObjectReader::new(
                self.clone(),
                object,
                handle,
            )));
        }
        let out = self.send_get(&object.bucket, &object.key, 0, None).await?;
        let answered = out.content_length().and_then(|n| u64::try_from(n).ok());
        if answered.is_some_and(|n| n > PREFETCH_MAX_BYTES) {
            // Replaced by a larger version since it was listed: stream this one.
            let etag = out.e_tag().map(str::to_owned);
            let reader: Pin<Box<dyn AsyncBufRead + Send>> = Box::pin(out.body.into_async_read());
            let stream = SyncIoBridge::new_with_handle(reader, handle.clone());
            let object = ObjectRef {
                size: answered.unwrap_or(object.size),
                ..object
            };
            return Ok(Body::Stream(
                ObjectReader::new(self.clone(), object, handle).started(stream, etag),
            ));
        }
        let body = out.body.collect().await.map_err(|e| S3Error::Request {
            what: "reading the body of",
            url: object.url(),
            detail: aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
        })?;
        Ok(Body::Whole(Cursor::new(body.into_bytes())))
    }
}
