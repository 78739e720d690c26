//! Item layout: attribute names, key spellings, and decoding items back into port types.
//!
//! One table holds three kinds of items (see `docs/state-store.md`, "DynamoDB"):
//! - finding record: `pk = F#<id>`, `sk = R`, with the latest version, status, lease, counters,
//!   the latest version's meta, `gsi1pk`/`gsi1sk` for the audit index, and the expiry twice:
//!   `expires_at_ms` (exact, what reads compare with the store clock) and `expires_at` (epoch
//!   seconds rounded up, for DynamoDB's TTL deletion);
//! - history entry: `pk = F#<id>`, `sk = H#S<first_seen ms, 15 digits>#<seq, 12 digits>`: the
//!   record's incarnation (its `first_seen`, set once when the record is created) and the entry's
//!   sequence number, which the record write that recorded the event counted (`seq` on the
//!   record, conditioned on its previous value), so the sort key is the store's order. Entries
//!   of an older gdfwd have `sk = H#<at ms, 15 digits>#<n, 12 digits>#<process tag>` (time
//!   order) and sort before these;
//! - key/value: `pk = KV#<namespace>`, `sk = <key>`, `v`, expiry as above.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use gdfwd_core::store::{FindingRecord, HistoryEntry, HistoryKind, Owner, Status};
use gdfwd_model::{FindingMeta, Timestamp};

pub(crate) type Item = HashMap<String, AttributeValue>;

pub(crate) const RECORD_SK: &str = "R";
pub(crate) const HISTORY_PREFIX: &str = "H#";

// Record attributes.
pub(crate) const FINDING_ID: &str = "finding_id";
pub(crate) const ACCOUNT: &str = "account_id";
pub(crate) const REGION: &str = "region";
pub(crate) const FINDING_TYPE: &str = "finding_type";
pub(crate) const SEVERITY: &str = "severity";
pub(crate) const TITLE: &str = "title";
pub(crate) const LATEST: &str = "latest_version";
/// The newest version delivered: older versions are stale against it alone. Absent until a
/// version is delivered (and on records written before it existed).
pub(crate) const SENT: &str = "sent_version";
pub(crate) const STATUS: &str = "status";
pub(crate) const LEASE_UNTIL: &str = "lease_until";
pub(crate) const FIRST_SEEN: &str = "first_seen";
pub(crate) const LAST_SEEN: &str = "last_seen";
pub(crate) const UPDATED_AT: &str = "updated_at";
pub(crate) const VERSIONS_SENT: &str = "versions_sent";
pub(crate) const DUPLICATES: &str = "duplicates";
pub(crate) const STALE: &str = "stale";
pub(crate) const FAILURES: &str = "failures";
pub(crate) const LAST_ERROR: &str = "last_error";
pub(crate) const EXPIRES_MS: &str = "expires_at_ms";
/// A random token each winning claim write sets: a claim whose write was applied but whose
/// answer was lost (timeout, 5xx) and whose retry then failed its condition recognises its own
/// lease by it, instead of calling its own claim a duplicate and never sending the finding.
pub(crate) const CLAIM_TOKEN: &str = "claim_token";
/// A random token each commit or release write sets: when its answer was lost and the SDK's
/// retry fails its condition against that very write, the retry recognises it by the token
/// instead of counting the delivery (or failure) a second time.
pub(crate) const FINISH_TOKEN: &str = "finish_token";
/// History entries written to this incarnation of the record: the last entry's number.
pub(crate) const SEQ_NO: &str = "seq";
// History attributes.
pub(crate) const AT: &str = "at";
pub(crate) const VERSION: &str = "version";
pub(crate) const KIND: &str = "kind";
// KV attribute.
pub(crate) const VALUE: &str = "v";

/// A fresh random token ([`CLAIM_TOKEN`], [`FINISH_TOKEN`]).
pub(crate) fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The claim's owner token is its [`CLAIM_TOKEN`]; a token this build cannot read matches no
/// caller (its commit is refused as a stale owner's).
pub(crate) fn owner_of(token: &str) -> Owner {
    token.parse().unwrap_or(Owner::NONE)
}

/// Whether `old` was last finished by the write that carried `token`.
pub(crate) fn is_own_finish(old: &Item, token: &str) -> bool {
    get_s(old, FINISH_TOKEN).is_ok_and(|t| t == token)
}

/// Whether `old` is the pending claim of version `v` that one of `tokens` wrote.
pub(crate) fn is_own_claim(old: &Item, v: Timestamp, tokens: &[String]) -> bool {
    let pending = matches!(get_s(old, STATUS), Ok(s) if s == Status::Pending.as_str());
    let same_version = get_ts(old, LATEST).is_ok_and(|l| l == v);
    let ours = get_s(old, CLAIM_TOKEN).is_ok_and(|t| tokens.iter().any(|k| k == t));
    pending && same_version && ours
}

pub(crate) fn finding_pk(id: &str) -> String {
    format!("F#{id}")
}

pub(crate) fn kv_pk(namespace: &str) -> String {
    format!("KV#{namespace}")
}

pub(crate) fn account_pk(account: &str) -> String {
    format!("A#{account}")
}

/// Fixed-width so that string order is numeric order (epoch ms has 13 digits until 2286).
pub(crate) fn ms15(t: Timestamp) -> String {
    format!("{:015}", t.millis().max(0))
}

pub(crate) fn gsi1_sk(last_seen: Timestamp, id: &str) -> String {
    format!("{}#{id}", ms15(last_seen))
}

/// The place a history-producing write gives its entry: the record's incarnation (its
/// `first_seen`) and the entry's sequence number in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) first_seen: Timestamp,
    pub(crate) seq: u64,
}

/// What a history-producing record write expects to find, as its condition: no record (a
/// first claim), or this incarnation with this many history entries. A concurrent writer that
/// got there first makes the condition fail, and the write is decided again from the record it
/// returns: so each entry's number is given once, in the order the store applied the writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    Absent,
    At { first_seen: Timestamp, seq: u64 },
}

impl Expect {
    /// What `old` (a record) holds; a record of an older gdfwd has no `seq`: 0.
    pub(crate) fn of(old: &Item) -> DecodeResult<Expect> {
        Ok(Expect::At {
            first_seen: get_ts(old, FIRST_SEEN)?,
            seq: get_opt_i64(old, SEQ_NO)?
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
        })
    }

    /// The slot of the next entry: the first of a record created at `now`, or the next one.
    pub(crate) fn next(self, now: Timestamp) -> Slot {
        match self {
            Expect::Absent => Slot {
                first_seen: now,
                seq: 1,
            },
            Expect::At { first_seen, seq } => Slot {
                first_seen,
                seq: seq.saturating_add(1),
            },
        }
    }
}

/// The sort key prefix of one incarnation's numbered entries.
pub(crate) fn history_prefix(first_seen: Timestamp) -> String {
    format!("{HISTORY_PREFIX}S{}#", ms15(first_seen))
}

/// A history sort key: the incarnation, then the sequence number (fixed width, so string order
/// is number order).
pub(crate) fn history_sk(slot: Slot) -> String {
    format!("{}{:012}", history_prefix(slot.first_seen), slot.seq)
}

/// Epoch seconds for DynamoDB TTL, rounded up so DynamoDB never deletes before we call it expired.
pub(crate) fn ttl_seconds(expires: Timestamp) -> i64 {
    expires.millis().div_euclid(1000) + i64::from(expires.millis().rem_euclid(1000) != 0)
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn ts(t: Timestamp) -> AttributeValue {
    n(t.millis())
}

/// Why an item could not be decoded (the caller adds table and key).
pub(crate) type DecodeResult<T> = Result<T, String>;

pub(crate) fn get_s<'a>(item: &'a Item, name: &str) -> DecodeResult<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        Some(other) => Err(format!("attribute {name} is not a string: {other:?}")),
        None => Err(format!("attribute {name} is missing")),
    }
}

pub(crate) fn get_opt_s(item: &Item, name: &str) -> DecodeResult<Option<String>> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
        Some(other) => Err(format!("attribute {name} is not a string: {other:?}")),
    }
}

pub(crate) fn get_opt_i64(item: &Item, name: &str) -> DecodeResult<Option<i64>> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::N(v)) => v
            .parse::<i64>()
            .map(Some)
            .map_err(|e| format!("attribute {name} = {v:?} is not an integer: {e}")),
        Some(other) => Err(format!("attribute {name} is not a number: {other:?}")),
    }
}

pub(crate) fn get_i64(item: &Item, name: &str) -> DecodeResult<i64> {
    get_opt_i64(item, name)?.ok_or_else(|| format!("attribute {name} is missing"))
}

pub(crate) fn get_ts(item: &Item, name: &str) -> DecodeResult<Timestamp> {
    get_i64(item, name).map(Timestamp::from_millis)
}

fn get_count(item: &Item, name: &str) -> DecodeResult<u64> {
    Ok(get_opt_i64(item, name)?.map_or(0, |v| u64::try_from(v).unwrap_or(0)))
}

fn get_opt_f64(item: &Item, name: &str) -> DecodeResult<Option<f64>> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::N(v)) => v
            .parse::<f64>()
            .map(Some)
            .map_err(|e| format!("attribute {name} = {v:?} is not a number: {e}")),
        Some(other) => Err(format!("attribute {name} is not a number: {other:?}")),
    }
}

pub(crate) fn status_from(s: &str) -> DecodeResult<Status> {
    match s {
        "pending" => Ok(Status::Pending),
        "sent" => Ok(Status::Sent),
        "failed" => Ok(Status::Failed),
        other => Err(format!("unknown status {other:?}")),
    }
}

/// Whether a record/kv item is expired at `now` (expired items read as absent).
pub(crate) fn expired(item: &Item, now: Timestamp) -> DecodeResult<bool> {
    Ok(get_i64(item, EXPIRES_MS)? <= now.millis())
}

pub(crate) fn record_from(item: &Item) -> DecodeResult<FindingRecord> {
    Ok(FindingRecord {
        finding_id: get_s(item, FINDING_ID)?.to_owned(),
        meta: FindingMeta {
            account_id: get_s(item, ACCOUNT)?.to_owned(),
            region: get_s(item, REGION)?.to_owned(),
            finding_type: get_opt_s(item, FINDING_TYPE)?,
            severity: get_opt_f64(item, SEVERITY)?,
            title: get_opt_s(item, TITLE)?,
        },
        latest_version: get_ts(item, LATEST)?,
        sent_version: get_opt_i64(item, SENT)?.map(Timestamp::from_millis),
        status: status_from(get_s(item, STATUS)?)?,
        lease_until: get_opt_i64(item, LEASE_UNTIL)?.map(Timestamp::from_millis),
        first_seen: get_ts(item, FIRST_SEEN)?,
        last_seen: get_ts(item, LAST_SEEN)?,
        versions_sent: get_count(item, VERSIONS_SENT)?,
        duplicates: get_count(item, DUPLICATES)?,
        stale: get_count(item, STALE)?,
        failures: get_count(item, FAILURES)?,
        last_error: get_opt_s(item, LAST_ERROR)?,
        expires_at: get_ts(item, EXPIRES_MS)?,
        // A token this build cannot read (an older gdfwd's) is nobody's: refused as stale.
        owner: get_opt_s(item, CLAIM_TOKEN)?.and_then(|t| t.parse().ok()),
        seq: get_opt_i64(item, SEQ_NO)?
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0),
    })
}

pub(crate) fn history_from(item: &Item) -> DecodeResult<HistoryEntry> {
    let kind = get_s(item, KIND)?;
    let kind: HistoryKind =
        serde_json::from_str(kind).map_err(|e| format!("history kind {kind:?}: {e}"))?;
    Ok(HistoryEntry {
        seq: get_opt_i64(item, SEQ_NO)?.and_then(|n| u64::try_from(n).ok()),
        at: get_ts(item, AT)?,
        version: get_ts(item, VERSION)?,
        kind,
    })
}

/// A history item to write: `pk`, `sk`, at, version, kind (JSON), expiry.
pub(crate) fn history_item(
    id: &str,
    slot: Slot,
    at: Timestamp,
    version: Timestamp,
    kind: &HistoryKind,
    expires: Timestamp,
) -> Item {
    // HistoryKind is plain data (strings, vectors, numbers): encoding cannot fail; the fallback
    // keeps the entry rather than losing it.
    let kind = serde_json::to_string(kind).unwrap_or_else(|e| {
        format!(r#"{{"kind":"failed","reason":"history entry could not be encoded: {e}"}}"#)
    });
    HashMap::from([
        (crate::table::PK.to_owned(), s(finding_pk(id))),
        (crate::table::SK.to_owned(), s(history_sk(slot))),
        (SEQ_NO.to_owned(), n(slot.seq)),
        (AT.to_owned(), ts(at)),
        (VERSION.to_owned(), ts(version)),
        (KIND.to_owned(), s(kind)),
        (EXPIRES_MS.to_owned(), ts(expires)),
        (
            crate::table::TTL_ATTRIBUTE.to_owned(),
            n(ttl_seconds(expires)),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_seconds_round_up() {
        assert_eq!(ttl_seconds(Timestamp::from_millis(5000)), 5);
        assert_eq!(ttl_seconds(Timestamp::from_millis(5001)), 6);
        assert_eq!(ttl_seconds(Timestamp::from_millis(5999)), 6);
    }

    #[test]
    fn history_keys_sort_by_incarnation_then_sequence_after_old_ones() {
        let t = Timestamp::from_millis(1_700_000_000_000);
        let slot = |seq| Slot { first_seen: t, seq };
        let (a, b, c) = (
            history_sk(slot(2)),
            history_sk(slot(10)),
            history_sk(slot(1_000)),
        );
        assert!(a < b && b < c, "{a} < {b} < {c}");
        // An older gdfwd's key (time, counter, process tag) sorts before every numbered one.
        let old = format!("{HISTORY_PREFIX}{}#000000000007#0000abcd", ms15(t));
        assert!(old < history_sk(slot(1)), "{old}");
        assert!(history_sk(slot(1)).starts_with(&history_prefix(t)));
        assert_eq!(Expect::Absent.next(t), slot(1));
        assert_eq!(
            Expect::At {
                first_seen: t,
                seq: 4
            }
            .next(Timestamp::from_millis(5)),
            slot(5)
        );
    }
}

/// DynamoDB's limits a claim's record must fit: partition keys up to 2,048 bytes, sort keys up to
/// 1,024 (here `gsi1sk`, which holds the finding id after 16 bytes of time), items up to 400 KB.
const MAX_PARTITION_KEY: usize = 2048;
const MAX_SORT_KEY: usize = 1024;
const MAX_ITEM: usize = 400 * 1024;
/// Room kept in the record for what later writes add: attribute names, numbers, tokens, and a
/// `last_error` (the sink's reasons are a few hundred bytes).
const RECORD_RESERVE: usize = 16 * 1024;

/// Why the finding record of `req` could never be written (naming the field), or `None`:
/// checked before claiming, so one such finding is refused alone instead of failing the claim
/// transaction of its whole batch.
pub(crate) fn refusal(req: &gdfwd_core::store::ClaimRequest) -> Option<String> {
    let id = req.key.finding_id.as_str();
    let m = &req.meta;
    let pk = finding_pk(id).len();
    let sk = gsi1_sk(Timestamp::from_millis(0), id).len();
    if pk > MAX_PARTITION_KEY || sk > MAX_SORT_KEY {
        return Some(format!(
            "field `id` is {} bytes; the DynamoDB state store keys findings by it and holds at most {} bytes",
            id.len(),
            MAX_SORT_KEY - (sk - id.len())
        ));
    }
    if account_pk(&m.account_id).len() > MAX_PARTITION_KEY {
        return Some(format!(
            "field `accountId` is {} bytes; the DynamoDB state store holds at most {} bytes",
            m.account_id.len(),
            MAX_PARTITION_KEY - 2
        ));
    }
    let text = |o: &Option<String>| o.as_ref().map_or(0, String::len);
    let record = 3 * id.len()
        + 2 * m.account_id.len()
        + m.region.len()
        + text(&m.finding_type)
        + text(&m.title);
    if record + RECORD_RESERVE > MAX_ITEM {
        return Some(format!(
            "fields `id`, `accountId`, `region`, `type` and `title` take {record} bytes in the state record; DynamoDB items hold at most {MAX_ITEM} bytes (title: {} bytes)",
            text(&m.title)
        ));
    }
    None
}

#[cfg(test)]
mod limit_tests {
    use gdfwd_core::store::ClaimRequest;
    use gdfwd_model::Timestamp;

    fn req(id: &str, title: &str) -> ClaimRequest {
        let mut req = crate::test_request(id, Timestamp::from_millis(1));
        req.meta.title = Some(title.to_owned());
        req
    }

    /// Issue #16, defect 3: what DynamoDB would refuse is refused before claiming, naming the
    /// field; what fits passes.
    #[test]
    fn keys_and_items_over_dynamodbs_limits_are_refused_naming_the_field() {
        assert_eq!(super::refusal(&req(&"a".repeat(1008), "t")), None);
        let long = super::refusal(&req(&"a".repeat(1009), "t")).expect("refused");
        assert!(long.contains("`id`") && long.contains("1009"), "{long}");
        assert_eq!(super::refusal(&req("f", &"t".repeat(300 * 1024))), None);
        let big = super::refusal(&req("f", &"t".repeat(400 * 1024))).expect("refused");
        assert!(big.contains("title"), "{big}");
    }
}
