//! Reading input for `gdfwd forward`: files, stdin, gzip and the embedded sample, as a stream of
//! bounded records grouped into chunks.
//!
//! Nothing is read whole: a source is pulled through a 64 KiB buffer (and a gzip decoder when its
//! content starts with the gzip magic, whatever the file is called), cut into records, parsed, and
//! handed on [`Chunk`] by [`Chunk`], so memory is bounded by the chunk size and
//! `--max-record-bytes`, not by the input. Two record shapes:
//!
//! - **Lines** (NDJSON, the bulk format, and any source whose first record fits on its first
//!   line): every non-blank line is one record. One bad line, including one with a byte that is
//!   not UTF-8, is one invalid record; the lines around it still count. Only line-mode files get
//!   a resume [`Position`] (a line boundary), see `crate::checkpoint`.
//! - **Documents** (a source starting with `[`, or whose first line is the start of a longer
//!   JSON value, i.e. pretty-printed JSON): top-level values are cut out by bracket structure, and
//!   the elements of a top-level array are records of their own, so a pretty-printed array of
//!   any length streams too. A single value (`{"findings": [...]}`, one pretty-printed event) is
//!   one record and must fit in `--max-record-bytes`. Records are named by the line they start on.
//!
//! A record longer than `--max-record-bytes` is skipped to its end without being held (so a
//! gzip bomb is one invalid record, read at the decoder's pace in constant memory). A read error
//! (truncated or corrupt gzip, an I/O error) ends the source with one error naming the line where
//! it broke; every record before it has been handed on.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gdfwd_model::{Finding, Item, parse_record};
use serde::{Deserialize, Serialize};

/// The findings `gdfwd forward --sample` uses: 28 published AWS/vendor samples (one a CloudTrail
/// event, skipped) and 153 generated EventBridge deliveries of 60 findings with updates,
/// redeliveries and late versions. Every record is valid, so a newcomer's first run exits 0.
pub const SAMPLE: &str = include_str!("sample-findings.ndjson");

/// `gdfwd forward --sample-invalid`: three published samples that are not complete findings (no
/// account, no region), to show how invalid records are reported (exit status 2).
pub const SAMPLE_INVALID: &str = include_str!("sample-invalid.ndjson");

/// Read buffer (and gzip output buffer) per source.
pub const BUFFER: usize = 64 * 1024;

/// A chunk is handed on at this many bytes of records even when it holds fewer findings than
/// `--chunk`, so large records cannot make a chunk large. Parsed, a record takes up to about 15
/// times its bytes (many small numbers): 80 hostile records of 1 MB peaked at 270 MB with
/// 16 MiB here, 100 MB with 4 MiB. Ordinary findings (2–50 KB) fill `--chunk` first.
const CHUNK_MAX_BYTES: usize = 4 * 1024 * 1024;

/// A chunk is handed on at this many problem lines, so an input that is all bad stays bounded.
const CHUNK_MAX_PROBLEMS: usize = 1000;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Stdin,
    File(PathBuf),
    Sample,
    SampleInvalid,
    /// An object of GuardDuty's S3 export, read by [`crate::s3`]'s reader (its size from the
    /// listing).
    S3(gdfwd_source_s3::ObjectRef),
}

impl Source {
    pub fn name(&self) -> String {
        match self {
            Self::Stdin => "<stdin>".to_owned(),
            Self::File(p) => p.display().to_string(),
            Self::Sample => "<sample>".to_owned(),
            Self::SampleInvalid => "<sample-invalid>".to_owned(),
            Self::S3(object) => object.url(),
        }
    }

    /// Bytes to read, when known up front (for the progress bar's ETA; compressed size for gzip).
    pub fn size(&self) -> Option<u64> {
        match self {
            Self::Stdin => None,
            Self::File(p) => std::fs::metadata(p)
                .ok()
                .filter(std::fs::Metadata::is_file)
                .map(|m| m.len()),
            Self::Sample => Some(SAMPLE.len() as u64),
            Self::SampleInvalid => Some(SAMPLE_INVALID.len() as u64),
            Self::S3(object) => Some(object.size),
        }
    }
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

/// Where reading a source stands: bytes of (decompressed) content consumed and lines passed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub offset: u64,
    pub line: u64,
}

/// Limits of one read.
#[derive(Debug, Clone, Copy)]
pub struct ReadConfig {
    /// Findings per chunk (`--chunk`).
    pub chunk_findings: usize,
    /// Longest record (`--max-record-bytes`).
    pub max_record_bytes: usize,
}

/// What one stretch of a source yielded.
#[derive(Debug, Default)]
pub struct Chunk {
    /// Index of the source in the list given to the reader.
    pub source: usize,
    pub findings: Vec<Finding>,
    /// One line per bad record or unreadable source, ready to print.
    pub problems: Vec<String>,
    pub invalid: u64,
    pub skipped: u64,
    /// Where to resume after this chunk (line-mode files only).
    pub resume_at: Option<Position>,
    /// The source's last chunk (it was read to its end, or reading it failed).
    pub last: bool,
    /// The source was read to its end without a read error (with `last`).
    pub complete: bool,
    /// The S3 selection left some of this chunk's findings out (`--since/--until`,
    /// `--accounts`): the object's checkpoint says under which selection it was finished.
    pub narrowed: bool,
}

/// Adds the bytes pulled from the underlying source (compressed bytes for gzip) to a shared
/// counter: the progress bar's position, and the tests' view of how far reading ran ahead.
#[derive(Debug)]
pub struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R> Counting<R> {
    pub fn new(inner: R, count: Arc<AtomicU64>) -> Self {
        Self { inner, count }
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

type Input = Box<dyn BufRead + Send>;

/// Opens `src` at `from` (a line-mode [`Position`] saved by an earlier run; ignored for stdin and
/// the samples). Plain files seek there; gzip is decompressed and the first `from.offset` bytes
/// dropped (decompressed again, but neither parsed nor sent). Returns the reader and whether the
/// content is gzip.
pub fn open(src: &Source, from: Position, count: Arc<AtomicU64>) -> io::Result<(Input, bool)> {
    match src {
        Source::Stdin => content(BufReader::with_capacity(
            BUFFER,
            Counting::new(io::stdin(), count),
        )),
        Source::Sample => content(BufReader::new(Counting::new(SAMPLE.as_bytes(), count))),
        Source::SampleInvalid => content(BufReader::new(Counting::new(
            SAMPLE_INVALID.as_bytes(),
            count,
        ))),
        Source::S3(_) => Err(io::Error::other(
            "an S3 object is fetched by the S3 reader, not opened",
        )),
        Source::File(p) => {
            let mut file = File::open(p)?;
            if !file.metadata()?.is_file() {
                // A named pipe, `<(...)`, `/dev/stdin`: a stream like stdin, read from its start
                // (it has no checkpoint), which cannot seek back over the gzip magic.
                let raw = BufReader::with_capacity(BUFFER, Counting::new(file, count));
                return content(raw);
            }
            // The magic is read apart, so the counter (the bar's position) counts each byte once.
            let mut magic = [0u8; 2];
            let gzip = file.read(&mut magic)? == 2 && magic == GZIP_MAGIC;
            if gzip {
                file.rewind()?;
                let raw = BufReader::with_capacity(BUFFER, Counting::new(file, count));
                let (mut input, _) = content(raw)?;
                io::copy(&mut (&mut input).take(from.offset), &mut io::sink())?;
                Ok((input, true))
            } else {
                file.seek(SeekFrom::Start(from.offset))?;
                count.fetch_add(from.offset, Ordering::Relaxed);
                let raw = BufReader::with_capacity(BUFFER, Counting::new(file, count));
                Ok((Box::new(raw), false))
            }
        }
    }
}

/// Wraps a raw byte stream in a gzip decoder when it starts with the gzip magic.
pub fn content<R: BufRead + Send + 'static>(mut raw: R) -> io::Result<(Input, bool)> {
    if raw.fill_buf()?.starts_with(&GZIP_MAGIC) {
        let decoder = flate2::bufread::MultiGzDecoder::new(raw);
        Ok((Box::new(BufReader::with_capacity(BUFFER, decoder)), true))
    } else {
        Ok((Box::new(raw), false))
    }
}

/// One record's bytes, or why there are none.
#[derive(Debug, PartialEq)]
enum Raw {
    Text(Vec<u8>),
    /// Longer than the limit: skipped to its end; this many bytes.
    TooLong(u64),
    /// The input ended inside a top-level array.
    Unclosed,
}

#[derive(Debug)]
enum Step {
    Record {
        line: u64,
        raw: Raw,
    },
    /// Reading failed at this line; nothing more comes from this source.
    Broken {
        line: u64,
        error: io::Error,
    },
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The source's shape is decided on its first record.
    Undecided,
    Lines,
    Document,
}

/// State of the document scanner between records.
#[derive(Debug, Default)]
struct Scan {
    /// Inside a top-level array: its elements are the records.
    in_array: bool,
}

/// Cuts a byte stream into records (see the module documentation).
struct Records {
    inner: Input,
    max: usize,
    pos: Position,
    mode: Mode,
    scan: Scan,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("pos", &self.pos)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Whether `b`, met before a value starts, is between values (white space, or a top-level
/// array's brackets and commas); counts lines and tracks whether a top-level array is open.
fn between_values(b: u8, line: &mut u64, in_array: &mut bool) -> bool {
    match b {
        b'\n' => *line += 1,
        _ if is_space(b) => {}
        b',' if *in_array => {}
        b']' if *in_array => *in_array = false,
        b'[' if !*in_array => *in_array = true,
        _ => return false,
    }
    true
}

/// Where a value being scanned stands: its bracket depth and whether a string (or an escape in
/// it) is open. Only structure is tracked; syntax is the parser's business.
#[derive(Debug, Clone, Copy)]
struct Nesting {
    depth: u32,
    in_str: bool,
    esc: bool,
    /// The value is a scalar (a string, number, literal), not an object or array.
    scalar: bool,
}

impl Nesting {
    /// The state after the value's first byte `b`.
    fn start(b: u8) -> Self {
        let scalar = b != b'{' && b != b'[';
        Self {
            depth: u32::from(!scalar),
            in_str: b == b'"',
            esc: false,
            scalar,
        }
    }

    /// Whether `b` ends a bare scalar without being part of it (the delimiter after it).
    fn ends_before(&self, b: u8) -> bool {
        self.scalar && !self.in_str && (is_space(b) || b == b',' || b == b']')
    }

    /// Takes the value's next byte `b`; true when it completes the value.
    fn take(&mut self, b: u8) -> bool {
        if self.in_str {
            if self.esc {
                self.esc = false;
            } else if b == b'\\' {
                self.esc = true;
            } else if b == b'"' {
                self.in_str = false;
                return self.scalar;
            }
            return false;
        }
        match b {
            b'"' => self.in_str = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' => {
                self.depth = self.depth.saturating_sub(1);
                return self.depth == 0;
            }
            _ => {}
        }
        false
    }
}

/// The record without surrounding whitespace (and a leading byte-order mark, which some Windows
/// tools write and JSON does not allow).
fn trimmed(mut buf: Vec<u8>) -> Vec<u8> {
    let end = buf.iter().rposition(|&b| !is_space(b)).map_or(0, |i| i + 1);
    buf.truncate(end);
    let mut start = buf.iter().position(|&b| !is_space(b)).unwrap_or(end);
    if buf[start..].starts_with(b"\xef\xbb\xbf") {
        start += 3;
    }
    buf.drain(..start);
    buf
}

impl Records {
    fn new(inner: Input, max: usize, from: Position) -> Self {
        // A resumed source was in line mode when its position was saved.
        let mode = if from.offset > 0 {
            Mode::Lines
        } else {
            Mode::Undecided
        };
        Self {
            inner,
            max,
            pos: from,
            mode,
            scan: Scan::default(),
        }
    }

    fn next(&mut self) -> Step {
        match self.mode {
            Mode::Lines => self.next_line(),
            Mode::Document => self.next_value(),
            Mode::Undecided => self.decide(),
        }
    }

    /// Picks the mode from the content's start (after white space and a byte-order mark): a
    /// document when it is `[`, or when the first line is the unfinished start of a JSON value;
    /// lines otherwise. A document's first line is put back in front of the stream for the
    /// scanner.
    fn decide(&mut self) -> Step {
        // An array is a document however long its first line: a whole array on one line (`jq
        // -c`, `json.dumps`) is read element by element, each held to the record limit, instead
        // of being one line over it.
        match self.skip_to_content() {
            Err(error) => {
                return Step::Broken {
                    line: self.pos.line + 1,
                    error,
                };
            }
            Ok(None) => return Step::End,
            Ok(Some(b'[')) => {
                self.mode = Mode::Document;
                return self.next_value();
            }
            Ok(Some(_)) => {}
        }
        let start = self.pos;
        let mut line = Vec::new();
        let read = match read_line(&mut self.inner, self.max, &mut line) {
            Ok(read) => read,
            Err(error) => {
                return Step::Broken {
                    line: self.pos.line + 1,
                    error,
                };
            }
        };
        self.advance(&read);
        if !read.too_long && starts_a_document(line.trim_ascii_end()) {
            self.mode = Mode::Document;
            let rest = std::mem::replace(&mut self.inner, Box::new(io::empty()));
            self.inner = Box::new(io::Cursor::new(line).chain(rest));
            self.pos = start;
            return self.next_value();
        }
        self.mode = Mode::Lines;
        let raw = if read.too_long {
            Raw::TooLong(read.bytes - u64::from(read.newline))
        } else {
            Raw::Text(trimmed(line))
        };
        Step::Record {
            line: self.pos.line - u64::from(read.newline) + 1,
            raw,
        }
    }

    /// Consumes white space and a byte-order mark before the content, counting lines; returns
    /// the content's first byte (not consumed), or none at the end.
    fn skip_to_content(&mut self) -> io::Result<Option<u8>> {
        loop {
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let skip = if buf.starts_with(b"\xef\xbb\xbf") {
                3
            } else {
                match buf.first() {
                    None => return Ok(None),
                    Some(&b) if is_space(b) => {
                        self.pos.line += u64::from(b == b'\n');
                        1
                    }
                    Some(&b) => return Ok(Some(b)),
                }
            };
            self.inner.consume(skip);
            self.pos.offset += skip as u64;
        }
    }

    fn advance(&mut self, read: &LineRead) {
        self.pos.offset += read.bytes;
        self.pos.line += u64::from(read.newline);
    }

    fn next_line(&mut self) -> Step {
        let mut line = Vec::new();
        loop {
            let number = self.pos.line + 1;
            match read_line(&mut self.inner, self.max, &mut line) {
                Err(error) => {
                    return Step::Broken {
                        line: number,
                        error,
                    };
                }
                Ok(read) if read.bytes == 0 => return Step::End,
                Ok(read) => {
                    self.advance(&read);
                    if read.too_long {
                        return Step::Record {
                            line: number,
                            raw: Raw::TooLong(read.bytes - u64::from(read.newline)),
                        };
                    }
                    let text = trimmed(std::mem::take(&mut line));
                    if !text.is_empty() {
                        return Step::Record {
                            line: number,
                            raw: Raw::Text(text),
                        };
                    }
                }
            }
        }
    }

    /// The next top-level value, or element of a top-level array, by bracket structure (strings
    /// and escapes respected; syntax is left to the parser).
    fn next_value(&mut self) -> Step {
        let mut value = Vec::new();
        let mut started: Option<(u64, Nesting)> = None;
        let mut bytes = 0u64;
        loop {
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    return Step::Broken {
                        line: started.map_or(self.pos.line + 1, |(line, _)| line),
                        error,
                    };
                }
            };
            if buf.is_empty() {
                return self.value_at_end(started.map(|(line, _)| line), value, bytes);
            }
            let mut used = 0;
            let mut done = false;
            for &b in buf {
                let Some((_, nesting)) = started.as_mut() else {
                    used += 1;
                    if !between_values(b, &mut self.pos.line, &mut self.scan.in_array) {
                        started = Some((self.pos.line + 1, Nesting::start(b)));
                        bytes = 1;
                        value.push(b);
                    }
                    continue;
                };
                if nesting.ends_before(b) {
                    done = true;
                    break;
                }
                used += 1;
                bytes += 1;
                if value.len() < self.max {
                    value.push(b);
                }
                if b == b'\n' {
                    self.pos.line += 1;
                }
                if nesting.take(b) {
                    done = true;
                    break;
                }
            }
            self.inner.consume(used);
            self.pos.offset += used as u64;
            if done {
                let line = started.map_or(self.pos.line, |(line, _)| line);
                return Step::Record {
                    line,
                    raw: self.finish_value(value, bytes),
                };
            }
        }
    }

    /// The end of the input while looking for a value (`started`: the line it began on).
    fn value_at_end(&mut self, started: Option<u64>, value: Vec<u8>, bytes: u64) -> Step {
        match started {
            // An unfinished value: the parser names what is missing. The array it may be in
            // needs no second report.
            Some(line) => {
                self.scan.in_array = false;
                Step::Record {
                    line,
                    raw: self.finish_value(value, bytes),
                }
            }
            None if self.scan.in_array => {
                self.scan.in_array = false;
                Step::Record {
                    line: self.pos.line,
                    raw: Raw::Unclosed,
                }
            }
            None => Step::End,
        }
    }

    fn finish_value(&self, value: Vec<u8>, bytes: u64) -> Raw {
        if bytes > self.max as u64 {
            Raw::TooLong(bytes)
        } else {
            Raw::Text(value)
        }
    }
}

/// Whether a source's first line (an object's start; an array is decided before) is the
/// unfinished start of a longer JSON value (pretty-printed JSON) rather than one NDJSON record.
fn starts_a_document(line: &[u8]) -> bool {
    line.first() == Some(&b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(line)
            .is_err_and(|e| e.classify() == serde_json::error::Category::Eof)
}

/// What [`read_line`] consumed.
#[derive(Debug)]
struct LineRead {
    bytes: u64,
    newline: bool,
    /// Longer than the limit: `out` holds nothing useful.
    too_long: bool,
}

/// Appends one line (with its `\n`) to `out`, holding at most `max` bytes of it; a longer line is
/// consumed to its end and reported `too_long`.
fn read_line(input: &mut Input, max: usize, out: &mut Vec<u8>) -> io::Result<LineRead> {
    let mut read = LineRead {
        bytes: 0,
        newline: false,
        too_long: false,
    };
    loop {
        let buf = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            if !read.too_long && out.len() > max {
                read.too_long = true;
                out.clear();
            }
            return Ok(read);
        }
        let (take, newline) = match memchr::memchr(b'\n', buf) {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        // One byte of slack while the line is read: a CRLF line's `\r` is part of its ending,
        // not of the record the limit is about, and may come at the end of one buffer with the
        // `\n` at the start of the next. The exact check is made once the line has ended.
        if !read.too_long && out.len() + take - usize::from(newline) > max + 1 {
            read.too_long = true;
            out.clear();
            out.shrink_to(BUFFER);
        }
        if !read.too_long {
            out.extend_from_slice(&buf[..take]);
        }
        input.consume(take);
        read.bytes += take as u64;
        if newline {
            read.newline = true;
            let crlf = out.ends_with(b"\r\n");
            if !read.too_long && out.len() - 1 - usize::from(crlf) > max {
                read.too_long = true;
                out.clear();
            }
            return Ok(read);
        }
    }
}

/// Reads one source from `from` to its end, handing on chunks through `emit` (which answers
/// `false` when nobody listens any more: reading stops). `resumable`: chunks carry the position
/// to resume from (files in line mode).
pub fn read_source(
    index: usize,
    plan: &Plan,
    input: Input,
    gzip: bool,
    config: ReadConfig,
    emit: &mut dyn FnMut(Chunk) -> bool,
) {
    let name = &plan.source.name();
    let resumable = plan.resumable;
    let mut records = Records::new(input, config.max_record_bytes.max(1), plan.from);
    let new_chunk = || Chunk {
        source: index,
        ..Chunk::default()
    };
    let mut chunk = new_chunk();
    let mut bytes = 0usize;
    loop {
        let step = records.next();
        let ended = !matches!(step, Step::Record { .. });
        chunk.complete = matches!(step, Step::End);
        match step {
            Step::Record { line, raw } => {
                bytes += add_record(&mut chunk, name, line, raw, config.max_record_bytes);
            }
            Step::Broken { line, error } => {
                let what = if gzip { "gzip data" } else { "input" };
                chunk.invalid += 1;
                chunk.problems.push(format!(
                    "invalid: {name}:{line}: reading stopped, {what} broken: {error} (every record before line {line} was read)"
                ));
            }
            Step::End => {}
        }
        let full = chunk.findings.len() >= config.chunk_findings
            || bytes >= CHUNK_MAX_BYTES
            || chunk.problems.len() >= CHUNK_MAX_PROBLEMS;
        if full || ended {
            chunk.last = ended;
            chunk.resume_at = (resumable && records.mode == Mode::Lines).then_some(records.pos);
            if !emit(std::mem::replace(&mut chunk, new_chunk())) || ended {
                return;
            }
            bytes = 0;
        }
    }
}

/// Where and how the reader reads one source.
#[derive(Debug, Clone)]
pub struct Plan {
    pub source: Source,
    pub from: Position,
    /// Chunks carry resume positions (files with a checkpoint).
    pub resumable: bool,
}

/// Reads `plans` in order on a thread of its own, sending chunks into `tx`. The channel's bound
/// is the backpressure: the reader waits while the pipeline is busy (sending, retrying, waiting
/// for rate limits), so at most the channel's capacity plus one chunk are ever read ahead. It
/// stops when the receiver is dropped. A plain thread, not a runtime task: reading stdin may
/// block for ever, and an interrupted run must be able to exit without waiting for it.
pub fn spawn_reader(
    plans: Vec<Plan>,
    config: ReadConfig,
    count: Arc<AtomicU64>,
    tx: tokio::sync::mpsc::Sender<Chunk>,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("gdfwd-read".to_owned())
        .spawn(move || {
            let mut emit = |c: Chunk| tx.blocking_send(c).is_ok();
            for (index, plan) in plans.iter().enumerate() {
                let name = plan.source.name();
                match open(&plan.source, plan.from, count.clone()) {
                    Ok((input, gzip)) => read_source(index, plan, input, gzip, config, &mut emit),
                    Err(e) => {
                        if !emit(unreadable(index, format!("error: reading {name}: {e}"))) {
                            return;
                        }
                    }
                }
                if tx.is_closed() {
                    return;
                }
            }
        })
}

/// The one chunk of a source that could not be opened: one invalid record naming it.
pub fn unreadable(index: usize, problem: String) -> Chunk {
    Chunk {
        source: index,
        problems: vec![problem],
        invalid: 1,
        last: true,
        ..Chunk::default()
    }
}

/// Parses one record into `chunk`; returns its size.
fn add_record(chunk: &mut Chunk, name: &str, line: u64, raw: Raw, max: usize) -> usize {
    let text = match raw {
        Raw::Text(t) => t,
        Raw::TooLong(n) => {
            chunk.invalid += 1;
            chunk.problems.push(format!(
                "invalid: {name}:{line}: record of {n} bytes is longer than --max-record-bytes ({max}); skipped"
            ));
            return 0;
        }
        Raw::Unclosed => {
            chunk.invalid += 1;
            chunk.problems.push(format!(
                "invalid: {name}:{line}: the input ends inside a JSON array (truncated?)"
            ));
            return 0;
        }
    };
    let size = text.len();
    let text = match std::str::from_utf8(&text) {
        Ok(t) => t,
        Err(e) => {
            chunk.invalid += 1;
            chunk
                .problems
                .push(format!("invalid: {name}:{line}: not UTF-8 text: {e}"));
            return size;
        }
    };
    for item in parse_record(text) {
        match item {
            Ok(Item::Finding(f)) => chunk.findings.push(*f),
            Ok(Item::Skipped { reason }) => {
                // Counted, and findable: `--log-level info` names each one.
                tracing::info!(input = %name, line, reason, "skipped: not a GuardDuty finding");
                chunk.skipped += 1;
            }
            Err(e) => {
                chunk.invalid += 1;
                chunk.problems.push(format!("invalid: {name}:{line}: {e}"));
            }
        }
    }
    size
}

#[cfg(test)]
mod tests {
    use super::*;

    const FINDING: &str = r#"{"schemaVersion":"2.0","accountId":"111122223333","region":"us-east-1","id":"ID","type":"Recon:EC2/PortProbeUnprotectedPort","severity":2,"createdAt":"2024-01-01T00:00:00Z","updatedAt":"2024-01-02T00:00:00Z","title":"t","resource":{"resourceType":"Instance"}}"#;

    fn finding(i: usize) -> String {
        FINDING.replace("\"ID\"", &format!("\"f{i:08}\""))
    }

    fn plan() -> Plan {
        Plan {
            source: Source::File(PathBuf::from("in")),
            from: Position::default(),
            resumable: true,
        }
    }

    fn config(chunk: usize) -> ReadConfig {
        ReadConfig {
            chunk_findings: chunk,
            max_record_bytes: 4096,
        }
    }

    fn read_all(bytes: Vec<u8>, config: ReadConfig) -> Vec<Chunk> {
        let count = Arc::new(AtomicU64::new(0));
        let input: Input = Box::new(BufReader::new(Counting::new(io::Cursor::new(bytes), count)));
        let mut out = Vec::new();
        read_source(0, &plan(), input, false, config, &mut |c| {
            out.push(c);
            true
        });
        out
    }

    fn ids(chunks: &[Chunk]) -> Vec<String> {
        chunks
            .iter()
            .flat_map(|c| c.findings.iter().map(|f| f.id.clone()))
            .collect()
    }

    fn problems(chunks: &[Chunk]) -> Vec<String> {
        chunks.iter().flat_map(|c| c.problems.clone()).collect()
    }

    #[test]
    fn reading_never_runs_more_than_one_chunk_and_a_buffer_ahead() {
        let line = finding(0);
        let records = 20_000;
        let text: String = (0..records).map(|i| finding(i) + "\n").collect();
        let total = text.len() as u64;
        let count = Arc::new(AtomicU64::new(0));
        let input: Input = Box::new(BufReader::with_capacity(
            BUFFER,
            Counting::new(io::Cursor::new(text.into_bytes()), count.clone()),
        ));
        let chunk = 100;
        let mut handed_on = 0u64;
        let mut chunks = 0;
        read_source(0, &plan(), input, false, config(chunk), &mut |c| {
            handed_on += c.findings.len() as u64;
            chunks += 1;
            // Pulled from the source so far: what was handed on, plus at most one buffer.
            let pulled = count.load(Ordering::Relaxed);
            let held = pulled - (handed_on * (line.len() as u64 + 1)).min(pulled);
            assert!(
                held <= BUFFER as u64,
                "reader holds {held} bytes beyond the {handed_on} findings handed on"
            );
            // The consumer stops after three chunks: reading stops with it.
            chunks < 3
        });
        assert_eq!(handed_on, 3 * chunk as u64);
        assert!(
            count.load(Ordering::Relaxed) < total / 10,
            "read on after the stop"
        );
    }

    #[test]
    fn ndjson_is_chunked_with_resume_positions_on_line_boundaries() {
        let text: String = (0..25).map(|i| finding(i) + "\n\n").collect();
        let chunks = read_all(text.clone().into_bytes(), config(10));
        assert_eq!(chunks.len(), 3);
        assert_eq!(ids(&chunks).len(), 25);
        let first = chunks[0].resume_at.expect("a position");
        assert_eq!(first.line, 19, "10 records, each followed by a blank line");
        let record = finding(0).len() as u64 + 2;
        assert_eq!(
            first.offset,
            10 * record - 1,
            "just after the tenth record's newline"
        );
        assert!(chunks[2].last);
        assert_eq!(
            chunks[2].resume_at.map(|p| p.offset),
            Some(text.len() as u64)
        );
    }

    #[test]
    fn a_resumed_read_starts_after_the_position() {
        let text: String = (0..30).map(|i| finding(i) + "\n").collect();
        let at = read_all(text.clone().into_bytes(), config(10))[1]
            .resume_at
            .expect("position");
        let mut records = Records::new(
            Box::new(io::Cursor::new(
                text.into_bytes()[at.offset as usize..].to_vec(),
            )),
            4096,
            at,
        );
        match records.next() {
            Step::Record { line, .. } => assert_eq!(line, 21),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_oversized_line_is_one_invalid_record_and_is_never_held() {
        let long = format!("{{\"pad\":\"{}\"}}", "x".repeat(100_000));
        let text = format!("{}\n{long}\n{}\n", finding(1), finding(2));
        let chunks = read_all(text.into_bytes(), config(10));
        assert_eq!(ids(&chunks), ["f00000001", "f00000002"]);
        let p = problems(&chunks);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("in:2:") && p[0].contains("--max-record-bytes"),
            "{p:?}"
        );
    }

    #[test]
    fn large_records_make_chunks_of_a_few_mebibytes_not_of_chunk_findings() {
        // 60 findings of about 200 KB: a chunk is handed on at CHUNK_MAX_BYTES, long before
        // `--chunk 250`, so a chunk of large records stays a few MiB once parsed.
        let pad = "x".repeat(200 * 1024);
        let text: String = (0..60)
            .map(|i| finding(i).replace("\"title\":\"t\"", &format!("\"title\":\"{pad}\"")) + "\n")
            .collect();
        let chunks = read_all(
            text.into_bytes(),
            ReadConfig {
                chunk_findings: 250,
                max_record_bytes: 1024 * 1024,
            },
        );
        assert_eq!(ids(&chunks).len(), 60);
        let per_chunk = CHUNK_MAX_BYTES / (200 * 1024) + 1;
        assert!(
            chunks.iter().all(|c| c.findings.len() <= per_chunk),
            "{:?}",
            chunks.iter().map(|c| c.findings.len()).collect::<Vec<_>>()
        );
        // 12 MB of records: three chunks at least (one, with 16 MiB).
        assert!(chunks.len() >= 3, "{}", chunks.len());
    }

    #[test]
    fn the_limit_is_the_same_for_lf_and_crlf_lines() {
        let pad = |n: usize| format!("{{\"pad\":\"{}\"}}", "x".repeat(n - 10));
        let exact = pad(4096);
        assert_eq!(exact.len(), 4096);
        for end in ["\n", "\r\n"] {
            let text = format!("{exact}{end}{}{end}", pad(4097));
            let p = problems(&read_all(text.into_bytes(), config(10)));
            assert_eq!(p.len(), 2, "{end:?}: {p:?}");
            assert!(
                p[0].contains("in:1: ") && !p[0].contains("record of"),
                "{p:?}"
            );
            assert!(p[1].contains("in:2: record of"), "{p:?}");
        }
    }

    #[test]
    fn a_crlf_split_across_two_reads_is_still_the_line_ending() {
        let exact = "x".repeat(64);
        for capacity in [64, 65, 66, 8192] {
            let text = format!("{exact}\r\n{exact}y\r\n{exact}\n{exact}z");
            let mut input: Input = Box::new(BufReader::with_capacity(
                capacity,
                io::Cursor::new(text.into_bytes()),
            ));
            let mut lines = Vec::new();
            loop {
                let mut out = Vec::new();
                let read = read_line(&mut input, 64, &mut out).expect("read");
                if read.bytes == 0 {
                    break;
                }
                lines.push((read.too_long, read.bytes));
            }
            assert_eq!(
                lines,
                [(false, 66), (true, 67), (false, 65), (true, 65)],
                "buffer of {capacity}"
            );
        }
    }

    #[test]
    fn one_bad_byte_spoils_one_line() {
        let mut bytes = format!("{}\n", finding(1)).into_bytes();
        let mut bad = finding(2).into_bytes();
        bad[40] = 0xff;
        bytes.extend(bad);
        bytes.extend(format!("\n{}\n", finding(3)).into_bytes());
        let chunks = read_all(bytes, config(10));
        assert_eq!(ids(&chunks), ["f00000001", "f00000003"]);
        let p = problems(&chunks);
        assert!(p.len() == 1 && p[0].contains("in:2: not UTF-8"), "{p:?}");
    }

    #[test]
    fn pretty_printed_arrays_stream_element_by_element() {
        let items: Vec<serde_json::Value> = (0..5)
            .map(|i| serde_json::from_str(&finding(i)).expect("json"))
            .collect();
        let text = serde_json::to_string_pretty(&items).expect("json");
        let chunks = read_all(
            text.into_bytes(),
            ReadConfig {
                chunk_findings: 2,
                max_record_bytes: 2048,
            },
        );
        assert_eq!(ids(&chunks).len(), 5);
        assert_eq!(chunks.len(), 3);
        assert!(
            chunks.iter().all(|c| c.resume_at.is_none()),
            "documents do not resume"
        );
        assert!(problems(&chunks).is_empty(), "{:?}", problems(&chunks));
    }

    #[test]
    fn a_pretty_printed_object_and_a_wrapper_are_one_record_each() {
        let one: serde_json::Value = serde_json::from_str(&finding(1)).expect("json");
        let wrapper = serde_json::json!({"findings": [serde_json::from_str::<serde_json::Value>(&finding(2)).expect("json"), serde_json::from_str::<serde_json::Value>(&finding(3)).expect("json")]});
        let text = format!(
            "\u{feff}{}\n{}",
            serde_json::to_string_pretty(&one).expect("json"),
            serde_json::to_string_pretty(&wrapper).expect("json")
        );
        let chunks = read_all(text.into_bytes(), config(10));
        assert_eq!(ids(&chunks), ["f00000001", "f00000002", "f00000003"]);
    }

    #[test]
    fn an_array_on_one_line_longer_than_the_limit_is_read_element_by_element() {
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(5000));
        let items: Vec<String> = (0..20).map(finding).collect();
        let text = format!("\u{feff}\n  [{},{big},{}]\n", items.join(","), finding(20));
        assert!(text.len() > 4096 * 2);
        let chunks = read_all(text.into_bytes(), config(100));
        assert_eq!(ids(&chunks).len(), 21);
        let p = problems(&chunks);
        assert!(
            p.len() == 1 && p[0].contains("in:2: record of") && p[0].contains("--max-record-bytes"),
            "{p:?}"
        );
    }

    #[test]
    fn a_truncated_array_keeps_its_complete_elements() {
        let text = format!("[\n{},\n{},\n{}", finding(1), finding(2), &finding(3)[..50]);
        let chunks = read_all(text.into_bytes(), config(10));
        assert_eq!(ids(&chunks), ["f00000001", "f00000002"]);
        let p = problems(&chunks);
        assert!(p.len() == 1 && p[0].contains("in:4:"), "{p:?}");
    }
}
