//! Timestamps as GuardDuty writes them, normalised to UTC milliseconds.
//!
//! `updatedAt` is the dedup version key, so every spelling of one instant must normalise to the
//! same value: ISO-8601 with or without fraction or zone, `YYYY-MM-DD hh:mm:ss.fff`, and epoch
//! seconds or milliseconds as numbers (GuardDuty's own JSON uses fractional epoch seconds).

use std::fmt;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// An instant in UTC with millisecond precision (epoch milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

/// Numbers above this are taken as epoch milliseconds, below as epoch seconds. 1e11 seconds is
/// the year 5138; 1e11 milliseconds is March 1973, before GuardDuty existed.
const MILLIS_THRESHOLD: f64 = 1e11;

/// Epoch numbers from this magnitude on are refused: 1e14 milliseconds is the year 5138 again,
/// so such a number is in another unit (epoch microseconds are ~1.7e15, nanoseconds ~1.7e18)
/// and reading it as milliseconds would make a version thousands of years ahead.
pub const EPOCH_LIMIT: f64 = 1e14;

impl Timestamp {
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub const fn millis(self) -> i64 {
        self.0
    }

    pub fn now() -> Self {
        Self(Utc::now().timestamp_millis())
    }

    /// Parses a JSON timestamp value: a string in any supported spelling or an epoch number.
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        match v {
            serde_json::Value::String(s) => Self::parse(s),
            serde_json::Value::Number(n) => n.as_f64().and_then(Self::from_epoch_number),
            _ => None,
        }
    }

    /// Epoch seconds or milliseconds, told apart by magnitude; `None` from [`EPOCH_LIMIT`] on
    /// (another unit).
    pub fn from_epoch_number(n: f64) -> Option<Self> {
        if !n.is_finite() || n.abs() >= EPOCH_LIMIT {
            return None;
        }
        let ms = if n.abs() >= MILLIS_THRESHOLD {
            n
        } else {
            n * 1000.0
        };
        // Below EPOCH_LIMIT ms and seconds both stay far inside i64 and chrono's range.
        Some(Self(ms.round() as i64))
    }

    /// Parses ISO-8601 / RFC 3339 (with or without fraction or zone; no zone means UTC),
    /// `YYYY-MM-DD hh:mm:ss[.fff]`, or a numeric string of epoch seconds/milliseconds.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
            return Some(Self(dt.timestamp_millis()));
        }
        // RFC 3339 with a space instead of `T`, or a zone like `+0000`.
        for fmt in [
            "%Y-%m-%d %H:%M:%S%.f%:z",
            "%Y-%m-%dT%H:%M:%S%.f%z",
            "%Y-%m-%d %H:%M:%S%.f%z",
        ] {
            if let Ok(dt) = DateTime::parse_from_str(s, fmt) {
                return Some(Self(dt.timestamp_millis()));
            }
        }
        let naive = s.strip_suffix('Z').unwrap_or(s);
        for fmt in [
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M",
            "%Y-%m-%d %H:%M",
        ] {
            if let Ok(dt) = NaiveDateTime::parse_from_str(naive, fmt) {
                return Some(Self(Utc.from_utc_datetime(&dt).timestamp_millis()));
            }
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(naive, "%Y-%m-%d") {
            let dt = d.and_hms_opt(0, 0, 0)?;
            return Some(Self(Utc.from_utc_datetime(&dt).timestamp_millis()));
        }
        s.parse::<f64>().ok().and_then(Self::from_epoch_number)
    }

    /// RFC 3339 in UTC with exactly three fraction digits: `2025-02-25T20:40:06.721Z`.
    pub fn to_rfc3339(self) -> String {
        match Utc.timestamp_millis_opt(self.0).single() {
            Some(dt) => dt.to_rfc3339_opts(SecondsFormat::Millis, true),
            None => format!("@{}ms", self.0),
        }
    }

    pub fn saturating_add_millis(self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_one_instant_is_equal() {
        let want = Timestamp::parse("2025-02-25T20:40:06.721Z").map(Timestamp::millis);
        assert_eq!(want, Some(1_740_516_006_721));
        for s in [
            "2025-02-25T20:40:06.721Z",
            "2025-02-25T20:40:06.721",
            "2025-02-25 20:40:06.721",
            "2025-02-25T21:40:06.721+01:00",
            "2025-02-25T20:40:06.721+0000",
            "1740516006721",
            "1740516006.721",
        ] {
            assert_eq!(Timestamp::parse(s).map(Timestamp::millis), want, "{s}");
        }
        assert_eq!(
            Timestamp::from_json(&serde_json::json!(1_740_516_006.721)).map(Timestamp::millis),
            want
        );
        assert_eq!(
            Timestamp::from_json(&serde_json::json!(1_740_516_006_721_i64)).map(Timestamp::millis),
            want
        );
    }

    #[test]
    fn whole_seconds_and_formatting() {
        let t = Timestamp::parse("2025-10-01T14:40:03Z").expect("parses");
        assert_eq!(t.to_rfc3339(), "2025-10-01T14:40:03.000Z");
        assert_eq!(
            Timestamp::from_json(&serde_json::json!(1_759_329_603)),
            Some(t)
        );
    }

    /// Issue #16: epoch microseconds or nanoseconds are not read as far-future milliseconds.
    #[test]
    fn epoch_numbers_in_another_unit_are_refused() {
        for n in [
            1_740_516_006_721_000_f64,
            1_740_516_006_721_000_000_f64,
            -1e15,
        ] {
            assert_eq!(Timestamp::from_epoch_number(n), None, "{n}");
        }
        assert_eq!(Timestamp::parse("1740516006721000"), None);
        assert!(Timestamp::from_epoch_number(9.9e13).is_some());
    }

    #[test]
    fn rejects_garbage() {
        for s in ["", "yesterday", "2025-13-01T00:00:00Z", "NaN", "inf"] {
            assert_eq!(Timestamp::parse(s), None, "{s}");
        }
        assert_eq!(Timestamp::from_json(&serde_json::json!(true)), None);
    }
}
