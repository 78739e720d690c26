//! Times on the command line: RFC 3339 (or any spelling [`Timestamp::parse`] takes) or relative
//! to now (`90d`, `12h`, `30m`, `45s`, `2w`), meaning that long ago.

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

/// `90d`, `12h`, `30m`, `45s`, `2w` in milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let n: i64 = s[..s.len() - unit.len_utf8()].parse().ok()?;
    if n < 0 {
        return None;
    }
    let mult = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        'w' => 7 * 86_400_000,
        _ => return None,
    };
    n.checked_mul(mult)
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
}
