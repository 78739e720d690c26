//! The one rule the CLI's `--log-level`/`LOG_LEVEL` and the Lambda's `LOG_LEVEL` add to tracing's
//! filter syntax: every directive is a level or `target=level`.
//!
//! Tracing reads a bare word as a target name, so `verbose` is a valid filter that logs nothing
//! of ours: a silent mistake worth refusing. Here, not in either binary, so both apply the same
//! rule (the full syntax check stays with `tracing_subscriber`, which only the binaries link).

/// The levels a directive may be on its own.
pub const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// The first directive of `filter` that is neither a level nor `target=level`, if any.
pub fn bare_word(filter: &str) -> Option<&str> {
    filter.split(',').map(str::trim).find(|d| {
        !d.is_empty() && !d.contains('=') && !LEVELS.contains(&d.to_ascii_lowercase().as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_targets_pass_bare_words_do_not() {
        for ok in [
            "info",
            "WARN",
            "info,gdfwd_core=debug",
            "gdfwd=trace",
            "off",
            "",
        ] {
            assert_eq!(bare_word(ok), None, "{ok}");
        }
        assert_eq!(bare_word("verbose"), Some("verbose"));
        assert_eq!(bare_word("info, loud"), Some("loud"));
    }
}
