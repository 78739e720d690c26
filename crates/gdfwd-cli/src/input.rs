//! Reading input for `gdfwd forward`: files, stdin, gzip, and the embedded sample.
//!
//! Each source is read whole and handed to the model's tolerant parser; every bad record becomes
//! one error naming the source and record/line, and the good records around it still go through.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use gdfwd_model::{Finding, Item, parse_document};

/// The findings `gdfwd forward --sample` uses: 28 published AWS/vendor samples (one a CloudTrail
/// event, skipped) and 153 generated EventBridge deliveries of 60 findings with updates,
/// redeliveries and late versions. Every record is valid, so a newcomer's first run exits 0.
pub const SAMPLE: &str = include_str!("sample-findings.ndjson");

/// `gdfwd forward --sample-invalid`: three published samples that are not complete findings (no
/// account, no region), to show how invalid records are reported (exit status 2).
pub const SAMPLE_INVALID: &str = include_str!("sample-invalid.ndjson");

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Stdin,
    File(PathBuf),
    Sample,
    SampleInvalid,
}

impl Source {
    pub fn name(&self) -> String {
        match self {
            Self::Stdin => "<stdin>".to_owned(),
            Self::File(p) => p.display().to_string(),
            Self::Sample => "<sample>".to_owned(),
            Self::SampleInvalid => "<sample-invalid>".to_owned(),
        }
    }
}

/// What one source yielded.
#[derive(Debug, Default)]
pub struct Parsed {
    pub findings: Vec<Finding>,
    pub skipped: u64,
    /// One human-readable line per bad record.
    pub errors: Vec<String>,
}

/// Reads a source's bytes, gunzipping when the content starts with the gzip magic (so `.gz`
/// files and gzip piped through stdin both work, whatever the file is called).
pub fn read_source(src: &Source) -> anyhow::Result<String> {
    let bytes = match src {
        Source::Sample => return Ok(SAMPLE.to_owned()),
        Source::SampleInvalid => return Ok(SAMPLE_INVALID.to_owned()),
        Source::Stdin => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading stdin")?;
            buf
        }
        Source::File(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
    };
    decode(&bytes, &src.name())
}

fn decode(bytes: &[u8], name: &str) -> anyhow::Result<String> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .with_context(|| format!("decompressing {name} (gzip)"))?;
        Ok(text_of(&out))
    } else {
        Ok(text_of(bytes))
    }
}

/// The bytes as text. A line that is not UTF-8 (one record mangled by another encoding) is
/// replaced by a line saying so, which the parser reports as that line's error, so the records
/// around it still count (before, the whole file was refused).
fn text_of(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => bytes
            .split(|&b| b == b'\n')
            .map(|line| match std::str::from_utf8(line) {
                Ok(s) => std::borrow::Cow::Borrowed(s),
                Err(e) => std::borrow::Cow::Owned(format!(
                    "(not UTF-8: invalid byte at column {})",
                    e.valid_up_to() + 1
                )),
            })
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

pub fn parse_source(name: &str, text: &str) -> Parsed {
    let mut out = Parsed::default();
    for r in parse_document(text) {
        match r {
            Ok(Item::Finding(f)) => out.findings.push(*f),
            Ok(Item::Skipped { .. }) => out.skipped += 1,
            Err(e) => {
                let place = match e.line {
                    Some(line) => format!("{name}:{line}"),
                    None => format!("{name}: record {}", e.record),
                };
                out.errors.push(format!("{place}: {}", e.error));
            }
        }
    }
    out
}

pub fn sources(files: &[PathBuf], sample: bool, sample_invalid: bool) -> Vec<Source> {
    let mut out: Vec<Source> = files
        .iter()
        .map(|p| {
            if p == Path::new("-") {
                Source::Stdin
            } else {
                Source::File(p.clone())
            }
        })
        .collect();
    if sample {
        out.push(Source::Sample);
    }
    if sample_invalid {
        out.push(Source::SampleInvalid);
    }
    out
}
