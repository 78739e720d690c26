//! Request building, pure: cutting events into batches and serialising a batch as a JSON array.
//!
//! Events arrive already serialised ([`OutEvent::json`]), so a batch's size is known exactly before
//! anything is written: `[` + events joined by `,` + `]`. Batches keep input order and are
//! contiguous index ranges, which makes mapping answers back to events (and splitting on 413) a
//! matter of range arithmetic.

use std::io::Write;
use std::ops::Range;

use gdfwd_core::sink::OutEvent;

/// The size of `events` sent as one JSON array.
pub fn array_len(events: &[OutEvent]) -> usize {
    2 + events.iter().map(|e| e.json.len()).sum::<usize>() + events.len().saturating_sub(1)
}

/// Cuts `events` into contiguous batches of at most `max_events` events and `max_bytes` bytes (as a
/// JSON array). An event too large on its own gets a batch of its own (the endpoint decides).
pub fn plan_batches(events: &[OutEvent], max_bytes: usize, max_events: usize) -> Vec<Range<usize>> {
    let max_events = max_events.max(1);
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = 2; // "[]"
    for (i, e) in events.iter().enumerate() {
        let n = i - start;
        let add = e.json.len() + usize::from(n > 0);
        if n > 0 && (n >= max_events || size + add > max_bytes) {
            out.push(start..i);
            start = i;
            size = 2 + e.json.len();
        } else {
            size += add;
        }
    }
    if start < events.len() {
        out.push(start..events.len());
    }
    out
}

/// Splits a range in two halves (the first one gets the smaller half for odd lengths).
pub fn halves(r: &Range<usize>) -> (Range<usize>, Range<usize>) {
    let mid = r.start + (r.end - r.start) / 2;
    (r.start..mid, mid..r.end)
}

/// `[e1,e2,...]` from the pre-serialised events.
pub fn json_array(events: &[OutEvent]) -> Vec<u8> {
    let mut body = Vec::with_capacity(array_len(events));
    body.push(b'[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(e.json.as_bytes());
    }
    body.push(b']');
    body
}

/// Gzip with the default level: security events are verbose JSON and compress about tenfold.
pub fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::default(),
    );
    enc.write_all(body)?;
    enc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(json: &str) -> OutEvent {
        OutEvent {
            id: "0".repeat(32),
            json: json.to_owned(),
        }
    }

    #[test]
    fn array_is_valid_json_with_exact_size() {
        let events = vec![ev(r#"{"a":1}"#), ev(r#"{"b":"x,y"}"#), ev("{}")];
        let body = json_array(&events);
        assert_eq!(body.len(), array_len(&events));
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v.as_array().map(Vec::len), Some(3));
        assert_eq!(json_array(&[]), b"[]");
        assert_eq!(array_len(&[]), 2);
    }

    #[test]
    fn batches_respect_both_limits_and_cover_everything_in_order() {
        let events: Vec<OutEvent> = (0..25).map(|i| ev(&format!("{{\"i\":{i:03}}}"))).collect(); // 9 bytes each
        // by count
        let b = plan_batches(&events, 1_000_000, 10);
        assert_eq!(b, vec![0..10, 10..20, 20..25]);
        // by bytes: 3 events = 2 + 27 + 2 = 31 bytes; 4 = 41
        let b = plan_batches(&events, 31, 1000);
        assert!(b.iter().all(|r| r.len() == 3 || r == &(24..25)), "{b:?}");
        for r in &b {
            assert!(array_len(&events[r.clone()]) <= 31);
        }
        let flat: Vec<usize> = b.iter().flat_map(Clone::clone).collect();
        assert_eq!(flat, (0..25).collect::<Vec<_>>());
    }

    #[test]
    fn oversize_event_travels_alone() {
        let big = "x".repeat(100);
        let events = vec![
            ev("{}"),
            ev(&format!("{{\"b\":\"{big}\"}}")),
            ev("{}"),
            ev("{}"),
        ];
        assert_eq!(plan_batches(&events, 50, 1000), vec![0..1, 1..2, 2..4]);
        assert_eq!(plan_batches(&[], 50, 1000), Vec::<Range<usize>>::new());
    }

    #[test]
    fn halves_cover_the_range() {
        assert_eq!(halves(&(4..9)), (4..6, 6..9));
        assert_eq!(halves(&(0..2)), (0..1, 1..2));
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read;
        let body = json_array(&vec![ev(r#"{"a":"aaaaaaaaaaaaaaaaaaaaaaaa"}"#); 50]);
        let gz = gzip(&body).expect("gzip");
        assert!(gz.len() < body.len() / 5);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .expect("gunzip");
        assert_eq!(back, body);
    }
}
