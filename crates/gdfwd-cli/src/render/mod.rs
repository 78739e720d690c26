//! Every report the CLI prints, in every output format: the one place presentation lives.
//!
//! The library crates return data (core's audit records and stats rows, audit check's
//! violations, GuardDuty's gaps, enrichment's account reports, doctor's report); this module
//! turns it into text. Here are the pieces every report shares: [`OutputFormat`], the one
//! `--output` flag ([`OutputArgs`], flattened into every command that prints a report so `--help`
//! reads the same everywhere) with its one default rule ([`default_format`]: a table on a
//! terminal, JSON otherwise), and the generic [`table`], [`csv`] and [`json`] writers. Each file
//! beside it renders one thing in every format. A new format is a variant here and an arm in each
//! of those files; a new report is one file. One file is live output rather than a report:
//! [`progress`], the backfill engine's progress on stderr.
//!
//! Output conventions, shared by the three formats:
//! - times are RFC 3339 UTC with milliseconds (`2025-02-25T20:40:06.721Z`), never epoch numbers;
//! - `table` is for terminals: aligned columns, numbers right-aligned, long titles shortened, and
//!   control characters in finding-supplied text escaped (a finding title must not be able to
//!   move the cursor or recolour the terminal);
//! - `csv` is RFC 4180: a header row, fields quoted when they contain `,`, `"`, CR or LF (quotes
//!   doubled), `\n` line ends, values unshortened; control characters other than newline and tab
//!   are escaped as in the table (values starting with `=`, `+`, `-`, `@` are NOT altered: open
//!   exports in a spreadsheet as text);
//! - `json` is pretty-printed, ending with a newline.

pub mod accounts;
pub mod audit;
pub mod audit_check;
pub mod doctor;
pub mod gaps;
pub mod progress;

use std::io::IsTerminal;

use serde_json::Value;

use crate::Usage;

/// `--output`: how a report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// Pretty-printed JSON for programs.
    Json,
    /// RFC 4180 CSV with a header row, for spreadsheets.
    Csv,
}

impl OutputFormat {
    fn name(self) -> &'static str {
        match self {
            Self::Table => "table",
            Self::Json => "json",
            Self::Csv => "csv",
        }
    }
}

/// The `--output` flag of every command that prints a report.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OutputArgs {
    /// Report format; default: table when stdout is a terminal, json otherwise.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
}

impl OutputArgs {
    /// The format asked for, else [`default_format`] for this process's stdout.
    pub fn format(&self) -> OutputFormat {
        self.output
            .unwrap_or_else(|| default_format(std::io::stdout().is_terminal()))
    }

    /// [`Self::format`] for a command whose report has only the formats in `offered`: a format
    /// asked for outside them is a usage error naming `command`; the default, when it falls
    /// outside them, is the first offered.
    pub fn format_among(
        &self,
        command: &str,
        offered: &[OutputFormat],
    ) -> Result<OutputFormat, Usage> {
        let format = self.format();
        if offered.contains(&format) {
            return Ok(format);
        }
        match (self.output, offered.first()) {
            (None, Some(first)) => Ok(*first),
            _ => {
                let names: Vec<&str> = offered.iter().map(|f| f.name()).collect();
                Err(Usage(format!(
                    "{command} has no {} output: use --output {}",
                    format.name(),
                    names.join(" or ")
                )))
            }
        }
    }
}

/// The one default of `--output`: a table when a person reads the terminal, JSON when a
/// program reads a pipe or a file.
pub fn default_format(stdout_is_terminal: bool) -> OutputFormat {
    if stdout_is_terminal {
        OutputFormat::Table
    } else {
        OutputFormat::Json
    }
}

/// Pretty-printed JSON and a newline. Serialising a `Value` cannot fail (its keys are strings);
/// the compact form is the fallback all the same, so nothing is ever lost.
pub fn json(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    s.push('\n');
    s
}

/// CSV with a header row (RFC 4180 quoting, control characters escaped).
pub fn csv(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = String>| {
        let joined: Vec<String> = cells.map(|c| csv_field(&c)).collect();
        out.push_str(&joined.join(","));
        out.push('\n');
    };
    line(&mut out, &mut header.iter().map(|h| (*h).to_owned()));
    for r in rows {
        line(&mut out, &mut r.iter().cloned());
    }
    out
}

/// RFC 4180 field quoting, after escaping control characters other than newline and tab (CSV
/// is usually printed to a terminal first).
fn csv_field(s: &str) -> String {
    let s = escape_controls(s, &['\n', '\t']);
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// Aligned columns separated by two spaces; `right[i]` right-aligns column `i` (numbers).
/// Control characters in cells are escaped, so finding-supplied text cannot drive the terminal.
pub fn table(header: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| printable(c)).collect())
        .collect();
    let widths = widths(header, &rows);
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, c) in cells.enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(c.chars().count());
            if right.get(i).copied().unwrap_or(false) {
                l.extend(std::iter::repeat_n(' ', pad));
                l.push_str(c);
            } else {
                l.push_str(c);
                l.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for r in &rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

/// Each column's width in characters: its widest cell or header.
fn widths(header: &[&str], rows: &[Vec<String>]) -> Vec<usize> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    widths
}

/// `s` cut to `max` characters, the last one an ellipsis when anything was cut.
pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Escapes control characters so finding-supplied text cannot drive the terminal. Everything the
/// CLI prints that a finding (or a file name, or a server) supplied goes through this: the
/// tables here, and the invalid, failed and error lines of `forward`, `backfill` and `main`. It
/// lives here, not in a library, because only the CLI writes to a terminal: the libraries'
/// errors carry the text as it is, and the CLI escapes it when it prints them.
pub fn printable(s: &str) -> String {
    escape_controls(s, &[])
}

/// Writes control characters except those in `keep`, and the invisible characters that reorder
/// or hide text (bidirectional overrides and isolates, zero-width characters, the byte order
/// mark), as Rust escapes (`\u{1b}`, `\n`, `\u{202e}`).
fn escape_controls(s: &str, keep: &[char]) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if (c.is_control() || is_invisible(c)) && !keep.contains(&c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// How the text log format writes an event's fields: each value through [`printable`], so a
/// finding id, account or region that a log line carries (`filtered: ...` at info) cannot forge
/// a line or drive the terminal. The JSON log format (`--log-format json`, for machines) escapes
/// only what JSON requires (C0 controls): C1 controls and bidi characters stay as they are.
pub fn log_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let text = printable(&format!("{value:?}"));
        if field.name() == "message" {
            write!(w, "{text}")
        } else {
            write!(w, "{field}={text}")
        }
    })
    .delimited(" ")
}

/// Unicode format and separator characters that change how the text around them reads or
/// hide text: a finding id holding U+202E prints the rest of the line backwards, U+2028 breaks
/// it in some viewers, tag characters carry invisible text.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00ad}'
            | '\u{061c}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{e0000}'..='\u{e007f}'
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use clap::{Args, FromArgMatches};

    #[test]
    fn printable_escapes_controls_and_text_reordering_characters() {
        assert_eq!(printable("a\u{1b}[2J\r\nb"), r"a\u{1b}[2J\r\nb");
        assert_eq!(printable("x\u{9b}31m"), r"x\u{9b}31m");
        assert_eq!(printable("id\u{202e}cba"), r"id\u{202e}cba");
        assert_eq!(
            printable("\u{feff}\u{200b}\u{2066}"),
            r"\u{feff}\u{200b}\u{2066}"
        );
        assert_eq!(printable("a\u{2028}b\u{e0041}"), r"a\u{2028}b\u{e0041}");
        // Letters of any script stay as they are.
        assert_eq!(printable("région 東京 ☃"), "région 東京 ☃");
    }

    /// `args` parsed as a command whose only flag is the flattened `--output`.
    fn parse(args: &[&str]) -> Result<OutputArgs, String> {
        let matches = OutputArgs::augment_args(clap::Command::new("gdfwd"))
            .try_get_matches_from(std::iter::once("gdfwd").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        OutputArgs::from_arg_matches(&matches).map_err(|e| e.to_string())
    }

    #[test]
    fn one_default_rule_table_on_a_terminal_json_otherwise() {
        assert_eq!(default_format(true), OutputFormat::Table);
        assert_eq!(default_format(false), OutputFormat::Json);
        // Tests run with stdout captured, not a terminal.
        assert_eq!(parse(&[]).expect("no flag").format(), OutputFormat::Json);
    }

    #[test]
    fn parse_format() {
        assert_eq!(
            parse(&["--output", "csv"]).expect("csv").output,
            Some(OutputFormat::Csv)
        );
        let e = parse(&["--output", "yaml"]).expect_err("rejected");
        assert!(e.contains("'yaml'") && e.contains("table"), "{e}");
    }

    #[test]
    fn a_format_a_report_lacks_is_a_usage_error_naming_the_command() {
        let offered = [OutputFormat::Table, OutputFormat::Json];
        let csv = parse(&["--output", "csv"]).expect("csv");
        let e = csv
            .format_among("gdfwd doctor", &offered)
            .expect_err("no csv");
        assert_eq!(
            e.0,
            "gdfwd doctor has no csv output: use --output table or json"
        );
        let json = parse(&["--output", "json"]).expect("json");
        assert_eq!(
            json.format_among("gdfwd doctor", &offered).expect("json"),
            OutputFormat::Json
        );
        assert_eq!(
            OutputArgs::default()
                .format_among("gdfwd doctor", &offered)
                .expect("default"),
            OutputFormat::Json
        );
    }

    #[test]
    fn csv_quoting() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }

    /// A minimal RFC 4180 reader for the round-trip checks of the reports.
    pub(crate) fn parse_csv(s: &str) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        let mut row = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                (true, '"') => quoted = false,
                (true, c) => field.push(c),
                (false, '"') => quoted = true,
                (false, ',') => row.push(std::mem::take(&mut field)),
                (false, '\n') => {
                    row.push(std::mem::take(&mut field));
                    rows.push(std::mem::take(&mut row));
                }
                (false, c) => field.push(c),
            }
        }
        rows
    }
}
