//! Times and durations on the command line and in the environment, one grammar for every flag
//! and variable: a duration is a non-negative number (decimals allowed) and a unit, `ms`, `s`,
//! `m` (or `min`), `h`, `d` or `w`, a bare number meaning seconds (`10`, `500ms`, `1.5s`, `90d`).
//! A time is RFC 3339 (or any spelling [`Timestamp::parse`] takes) or a duration with its unit,
//! meaning that long ago.

use std::time::Duration;

use gdfwd_model::Timestamp;

/// Parses `s` relative to `now`. The error names the input and the accepted forms.
pub fn parse_time(s: &str, now: Timestamp) -> Result<Timestamp, String> {
    let t = s.trim();
    if let Some(ms) = parse_duration_ms(t) {
        return Ok(now.saturating_add_millis(-ms));
    }
    Timestamp::parse(t).ok_or_else(|| {
        format!("invalid time {s:?}: expected RFC 3339 (2025-01-31T12:00:00Z) or a relative form like 90d, 12h, 30m")
    })
}

/// Parses a duration in the grammar of the module doc. The error names the input and the forms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = t.split_at(
        t.find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected a number and a unit, e.g. 500ms, 10s, 2m, 12h, 90d, 2w"))?;
    let secs_per_unit = match unit.trim() {
        "ms" => 0.001,
        "s" | "" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3_600.0,
        "d" => 86_400.0,
        "w" => 7.0 * 86_400.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?}: use ms, s, m, h, d or w"
            ));
        }
    };
    Duration::try_from_secs_f64(n * secs_per_unit)
        .map_err(|_| format!("invalid duration {s:?}: out of range"))
}

/// A duration with an explicit unit (`90d`, `12h`, `30m`, `45s`, `2w`, `500ms`) in milliseconds:
/// what [`parse_time`] takes as "that long ago". A bare number is not one here, so it can still
/// be read as a time.
pub fn parse_duration_ms(s: &str) -> Option<i64> {
    let t = s.trim();
    if !t.ends_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let d = parse_duration(t).ok()?;
    i64::try_from(d.as_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_absolute() {
        let now = Timestamp::from_millis(10 * 86_400_000);
        assert_eq!(
            parse_time("1d", now),
            Ok(Timestamp::from_millis(9 * 86_400_000))
        );
        assert_eq!(
            parse_time("12h", now).map(Timestamp::millis),
            Ok(10 * 86_400_000 - 12 * 3_600_000)
        );
        assert_eq!(
            parse_time("1970-01-02T00:00:00Z", now),
            Ok(Timestamp::from_millis(86_400_000))
        );
        let err = parse_time("soon", now).expect_err("rejects");
        assert!(err.contains("\"soon\""), "{err}");
        assert!(parse_time("-3d", now).is_err());
    }

    #[test]
    fn one_duration_grammar() {
        let ok = [
            ("10", Duration::from_secs(10)),
            ("500ms", Duration::from_millis(500)),
            ("1.5s", Duration::from_millis(1500)),
            ("2m", Duration::from_secs(120)),
            ("2min", Duration::from_secs(120)),
            ("12h", Duration::from_secs(12 * 3600)),
            ("90d", Duration::from_secs(90 * 86_400)),
            ("2w", Duration::from_secs(14 * 86_400)),
            (" 30s ", Duration::from_secs(30)),
        ];
        for (s, d) in ok {
            assert_eq!(parse_duration(s), Ok(d), "{s}");
        }
        for bad in ["", "ten", "5y", "-3s", "1.2.3s", "s"] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        assert_eq!(parse_duration_ms("45s"), Some(45_000));
        assert_eq!(parse_duration_ms("500ms"), Some(500));
        assert_eq!(parse_duration_ms("45"), None, "a bare number may be a time");
    }
}
