//! The update and condition expressions of the record writes, built as plain data.
//!
//! Every record write is one conditional update whose condition encodes a rule of the port
//! (when a claim wins, when a finish applies) plus the record state it was decided from (the
//! incarnation and history count, see [`item::Expect`]). They are pure functions here, apart
//! from the SDK calls that send them, so the single path and the transactional path send the
//! same write and the expressions can be tested without a table.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use gdfwd_core::store::{ClaimRequest, Owner, Status};
use gdfwd_model::{FindingMeta, Timestamp};

use crate::item::{self, Item};
use crate::table::{GSI1_PK, GSI1_SK, PK, SK, TTL_ATTRIBUTE};

/// Expression attribute names and values, recorded as they are used (DynamoDB rejects unused ones).
#[derive(Debug, Default)]
pub(crate) struct Expr {
    pub(crate) names: HashMap<String, String>,
    pub(crate) values: HashMap<String, AttributeValue>,
}

impl Expr {
    /// `#attr`; every attribute goes through a placeholder, so reserved words (`status`,
    /// `region`, ...) never matter.
    pub(crate) fn n(&mut self, attr: &str) -> String {
        let k = format!("#{attr}");
        self.names.insert(k.clone(), attr.to_owned());
        k
    }

    /// `:name`, bound to `value`.
    pub(crate) fn v(&mut self, name: &str, value: AttributeValue) -> String {
        let k = format!(":{name}");
        self.values.insert(k.clone(), value);
        k
    }

    /// `#attr = :name`, the clause that sets `attr` to `value`.
    pub(crate) fn assign(&mut self, attr: &str, name: &str, value: AttributeValue) -> String {
        format!("{} = {}", self.n(attr), self.v(name, value))
    }
}

/// One conditional update of a finding record: what the single `UpdateItem` and the
/// transaction's `Update` both send.
#[derive(Debug)]
pub(crate) struct RecordUpdate {
    pub(crate) expr: Expr,
    pub(crate) update: String,
    pub(crate) condition: String,
}

/// The condition that the record is as `expect` says, and the update that counts entry
/// `slot` (`expect`'s next); both go with the write that records the event.
pub(crate) fn expect_clause(
    e: &mut Expr,
    sets: &mut Vec<String>,
    expect: item::Expect,
    slot: item::Slot,
) -> String {
    sets.push(e.assign(item::SEQ_NO, "nseq", item::n(slot.seq)));
    match expect {
        item::Expect::Absent => format!("attribute_not_exists({})", e.n(PK)),
        item::Expect::At { first_seen, seq } => {
            let sq = e.n(item::SEQ_NO);
            let sv = e.v("eseq", item::n(seq));
            // A record of an older gdfwd has no count yet: it counts from 0.
            let count = if seq == 0 {
                format!("(attribute_not_exists({sq}) OR {sq} = {sv})")
            } else {
                format!("{sq} = {sv}")
            };
            format!(
                "attribute_exists({}) AND {} = {} AND {count}",
                e.n(PK),
                e.n(item::FIRST_SEEN),
                e.v("efs", item::ts(first_seen))
            )
        }
    }
}

/// Sets both expiry attributes (exact ms for reads, rounded-up seconds for DynamoDB TTL).
pub(crate) fn set_expiry(e: &mut Expr, sets: &mut Vec<String>, expires: Timestamp) {
    sets.push(e.assign(item::EXPIRES_MS, "exp_ms", item::ts(expires)));
    sets.push(e.assign(TTL_ATTRIBUTE, "exp_s", item::n(item::ttl_seconds(expires))));
}

/// The finding's id and meta as the claim records them; returns the optional attributes the
/// version has not (an older version's title must not stay on the record).
fn meta_sets(e: &mut Expr, sets: &mut Vec<String>, id: &str, m: &FindingMeta) -> Vec<String> {
    sets.push(e.assign(item::FINDING_ID, "id", item::s(id)));
    sets.push(e.assign(item::ACCOUNT, "acc", item::s(&m.account_id)));
    sets.push(e.assign(item::REGION, "reg", item::s(&m.region)));
    let optional = [
        (
            item::FINDING_TYPE,
            "ft",
            m.finding_type.as_deref().map(item::s),
        ),
        (
            item::SEVERITY,
            "sev",
            m.severity.filter(|s| s.is_finite()).map(item::n),
        ),
        (item::TITLE, "title", m.title.as_deref().map(item::s)),
    ];
    let mut removes = Vec::new();
    for (attr, name, value) in optional {
        match value {
            Some(value) => sets.push(e.assign(attr, name, value)),
            None => removes.push(e.n(attr)),
        }
    }
    removes
}

/// Counters a first claim creates at zero (an existing record keeps its own).
fn zero_counters(e: &mut Expr, sets: &mut Vec<String>) {
    let zero = e.v("zero", item::n(0));
    for c in [
        item::VERSIONS_SENT,
        item::DUPLICATES,
        item::STALE,
        item::FAILURES,
    ] {
        let c = e.n(c);
        sets.push(format!("{c} = if_not_exists({c}, {zero})"));
    }
}

/// The winning claim's write: an upsert of the record, conditioned on the record being absent,
/// or live with no newer-or-equal version delivered and either an older latest version or a
/// latest claim released or whose lease ran out ([`gdfwd_core::store::judge_claim`]'s New).
/// The single claim and the batched (transactional) claim use the same write.
pub(crate) fn claim_write(
    req: &ClaimRequest,
    now: Timestamp,
    lease_ms: i64,
    expires: Timestamp,
    token: &str,
    expect: item::Expect,
) -> (RecordUpdate, item::Slot) {
    let id = req.key.finding_id.as_str();
    let mut e = Expr::default();
    let mut sets = vec![e.assign(item::CLAIM_TOKEN, "tok", item::s(token))];
    let removes = meta_sets(&mut e, &mut sets, id, &req.meta);
    let vv = e.v("v", item::ts(req.key.version));
    let nowv = e.v("now", item::ts(now));
    let pending = e.v("pending", item::s(Status::Pending.as_str()));
    sets.push(format!("{} = {vv}", e.n(item::LATEST)));
    sets.push(format!("{} = {pending}", e.n(item::STATUS)));
    let lease = item::ts(now.saturating_add_millis(lease_ms));
    sets.push(e.assign(item::LEASE_UNTIL, "lease", lease));
    let first = e.n(item::FIRST_SEEN);
    sets.push(format!("{first} = if_not_exists({first}, {nowv})"));
    sets.push(format!("{} = {nowv}", e.n(item::LAST_SEEN)));
    sets.push(format!("{} = {nowv}", e.n(item::UPDATED_AT)));
    set_expiry(&mut e, &mut sets, expires);
    let g1pk = item::s(item::account_pk(&req.meta.account_id));
    sets.push(e.assign(GSI1_PK, "g1pk", g1pk));
    sets.push(e.assign(GSI1_SK, "g1sk", item::s(item::gsi1_sk(now, id))));
    zero_counters(&mut e, &mut sets);
    let slot = expect.next(now);
    let expected = expect_clause(&mut e, &mut sets, expect, slot);
    let mut update = format!("SET {}", sets.join(", "));
    if !removes.is_empty() {
        update.push_str(&format!(" REMOVE {}", removes.join(", ")));
    }
    // A first claim expects no record; any other expects the record it was decided from
    // (or guessed: a wrong guess fails and returns the record to decide from).
    let condition = match expect {
        item::Expect::Absent => expected,
        item::Expect::At { .. } => claimable(&mut e, &expected, &vv, &nowv, &pending),
    };
    let write = RecordUpdate {
        expr: e,
        update,
        condition,
    };
    (write, slot)
}

/// `expected` and the rule that version `vv` may be claimed from the existing record at `nowv`.
/// A record without `sent_version` whose latest version is sent fails here (`st` is neither
/// failed nor pending) and is judged against that version.
fn claimable(e: &mut Expr, expected: &str, vv: &str, nowv: &str, pending: &str) -> String {
    format!(
        "{expected} AND {exp} > {nowv} AND (attribute_not_exists({sent}) OR {sent} < {vv}) AND ({lat} < {vv} OR {st} = {failed} OR ({st} = {pending} AND {lease} <= {nowv}))",
        exp = e.n(item::EXPIRES_MS),
        sent = e.n(item::SENT),
        lat = e.n(item::LATEST),
        st = e.n(item::STATUS),
        lease = e.n(item::LEASE_UNTIL),
        failed = e.v("failed", item::s(Status::Failed.as_str())),
    )
}

/// The write of a claim that lost (Duplicate, Stale, InFlight): the record was seen now, and
/// `counter` (none for an answer in flight) counts the suppression; expects the record the
/// decision was made from, and that it is still live.
pub(crate) fn suppress_write(
    id: &str,
    now: Timestamp,
    expires: Timestamp,
    counter: Option<&str>,
    expect: item::Expect,
) -> (RecordUpdate, item::Slot) {
    let mut e = Expr::default();
    let mut sets = Vec::new();
    let nowv = e.v("now", item::ts(now));
    sets.push(format!("{} = {nowv}", e.n(item::LAST_SEEN)));
    sets.push(format!("{} = {nowv}", e.n(item::UPDATED_AT)));
    set_expiry(&mut e, &mut sets, expires);
    sets.push(e.assign(GSI1_SK, "g1sk", item::s(item::gsi1_sk(now, id))));
    let slot = expect.next(now);
    let expected = expect_clause(&mut e, &mut sets, expect, slot);
    let mut update = format!("SET {}", sets.join(", "));
    if let Some(counter) = counter {
        update.push_str(&format!(" ADD {} {}", e.n(counter), e.v("one", item::n(1))));
    }
    let condition = format!("{expected} AND {} > {nowv}", e.n(item::EXPIRES_MS));
    let write = RecordUpdate {
        expr: e,
        update,
        condition,
    };
    (write, slot)
}

/// The record write of a commit (`reason: None`) or a release. `latest_only`: the write that
/// applies when `v` is the latest version (sets the status, ends the lease); otherwise the
/// counters-only write for an older version.
pub(crate) fn finish_write(
    v: Timestamp,
    now: Timestamp,
    expires: Timestamp,
    reason: Option<&str>,
    latest_only: Option<Owner>,
    token: &str,
    expect: item::Expect,
) -> (RecordUpdate, item::Slot) {
    let mut e = Expr::default();
    let mut sets = Vec::new();
    let slot = expect.next(now);
    let expected = expect_clause(&mut e, &mut sets, expect, slot);
    let nowv = e.v("now", item::ts(now));
    let vv = e.v("v", item::ts(v));
    sets.push(format!("{} = {nowv}", e.n(item::UPDATED_AT)));
    let ft = e.n(item::FINISH_TOKEN);
    let ftok = e.v("ftok", item::s(token));
    sets.push(format!("{ft} = {ftok}"));
    set_expiry(&mut e, &mut sets, expires);
    let counter = finish_counter(&mut e, &mut sets, reason);
    // Never twice the same write: a retry of an applied write fails here and finds its token.
    let mut condition = format!(
        "{expected} AND {} > {nowv} AND (attribute_not_exists({ft}) OR {ft} <> {ftok})",
        e.n(item::EXPIRES_MS)
    );
    let remove = match latest_only {
        Some(owner) => latest_finish(&mut e, &mut sets, &mut condition, &vv, reason, owner),
        None => {
            let cmp = if reason.is_some() { ">=" } else { ">" };
            condition.push_str(&format!(" AND {} {cmp} {vv}", e.n(item::LATEST)));
            String::new()
        }
    };
    let update = format!(
        "SET {}{remove} ADD {} {}",
        sets.join(", "),
        e.n(counter),
        e.v("one", item::n(1))
    );
    let write = RecordUpdate {
        expr: e,
        update,
        condition,
    };
    (write, slot)
}

/// The counter a finish adds one to: failures for a release (whose reason becomes the
/// record's last error), versions sent for a commit.
fn finish_counter(e: &mut Expr, sets: &mut Vec<String>, reason: Option<&str>) -> &'static str {
    match reason {
        Some(r) => {
            sets.push(e.assign(item::LAST_ERROR, "err", item::s(r)));
            item::FAILURES
        }
        None => item::VERSIONS_SENT,
    }
}

/// The part of a finish write that applies only to the latest version `vv` and its owner's
/// claim: the new status, the delivered version, the end of the lease (returned as the
/// `REMOVE` clause), and the conditions that say so.
fn latest_finish(
    e: &mut Expr,
    sets: &mut Vec<String>,
    condition: &mut String,
    vv: &str,
    reason: Option<&str>,
    owner: Owner,
) -> String {
    let new_status = if reason.is_some() {
        Status::Failed
    } else {
        Status::Sent
    };
    sets.push(e.assign(item::STATUS, "st", item::s(new_status.as_str())));
    let remove = format!(" REMOVE {}", e.n(item::LEASE_UNTIL));
    if reason.is_none() {
        // The latest claimed version is never older than the newest delivered one.
        sets.push(format!("{} = {vv}", e.n(item::SENT)));
    }
    condition.push_str(&format!(" AND {} = {vv}", e.n(item::LATEST)));
    // Only the claim's current owner (issue #20).
    condition.push_str(&format!(
        " AND {}",
        e.assign(item::CLAIM_TOKEN, "owner", item::s(owner.to_string()))
    ));
    if reason.is_some() {
        // Only a pending claim is freed: a sent version never becomes claimable.
        let pending = item::s(Status::Pending.as_str());
        condition.push_str(&format!(
            " AND {}",
            e.assign(item::STATUS, "pending", pending)
        ));
    }
    remove
}

/// After a delivery of `v` that was not the latest claim: the newest delivered version
/// becomes `v` unless a newer one was delivered already (a condition, since an update
/// expression cannot take a maximum), on a live record.
pub(crate) fn sent_version_write(v: Timestamp, now: Timestamp) -> RecordUpdate {
    let mut e = Expr::default();
    let sent = e.n(item::SENT);
    let vv = e.v("v", item::ts(v));
    let update = format!("SET {sent} = {vv}");
    let condition = format!(
        "attribute_exists({}) AND {} > {} AND (attribute_not_exists({sent}) OR {sent} < {vv})",
        e.n(PK),
        e.n(item::EXPIRES_MS),
        e.v("now", item::ts(now)),
    );
    RecordUpdate {
        expr: e,
        update,
        condition,
    }
}

/// A fresh record (counters at zero, history counted from 1) for a claim that replaces an
/// expired one: the item the conditional `PutItem` writes.
pub(crate) fn fresh_record(
    req: &ClaimRequest,
    now: Timestamp,
    lease_ms: i64,
    expires: Timestamp,
    token: &str,
) -> Item {
    let id = req.key.finding_id.as_str();
    let m = &req.meta;
    let mut it: Item = HashMap::from([
        (item::CLAIM_TOKEN.to_owned(), item::s(token)),
        (PK.to_owned(), item::s(item::finding_pk(id))),
        (SK.to_owned(), item::s(item::RECORD_SK)),
        (item::FINDING_ID.to_owned(), item::s(id)),
        (item::ACCOUNT.to_owned(), item::s(&m.account_id)),
        (item::REGION.to_owned(), item::s(&m.region)),
        (item::LATEST.to_owned(), item::ts(req.key.version)),
        (item::STATUS.to_owned(), item::s(Status::Pending.as_str())),
        (
            item::LEASE_UNTIL.to_owned(),
            item::ts(now.saturating_add_millis(lease_ms)),
        ),
        (item::FIRST_SEEN.to_owned(), item::ts(now)),
        (item::LAST_SEEN.to_owned(), item::ts(now)),
        (item::UPDATED_AT.to_owned(), item::ts(now)),
        (item::VERSIONS_SENT.to_owned(), item::n(0)),
        (item::DUPLICATES.to_owned(), item::n(0)),
        (item::STALE.to_owned(), item::n(0)),
        (item::FAILURES.to_owned(), item::n(0)),
        // A new incarnation (first_seen = now) numbers its history from 1.
        (item::SEQ_NO.to_owned(), item::n(1)),
        (item::EXPIRES_MS.to_owned(), item::ts(expires)),
        (
            TTL_ATTRIBUTE.to_owned(),
            item::n(item::ttl_seconds(expires)),
        ),
        (GSI1_PK.to_owned(), item::s(item::account_pk(&m.account_id))),
        (GSI1_SK.to_owned(), item::s(item::gsi1_sk(now, id))),
    ]);
    if let Some(t) = &m.finding_type {
        it.insert(item::FINDING_TYPE.to_owned(), item::s(t));
    }
    if let Some(sev) = m.severity.filter(|s| s.is_finite()) {
        it.insert(item::SEVERITY.to_owned(), item::n(sev));
    }
    if let Some(t) = &m.title {
        it.insert(item::TITLE.to_owned(), item::s(t));
    }
    it
}

#[cfg(test)]
mod tests {
    use gdfwd_core::store::VersionKey;

    use super::*;

    const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_123);
    const EXPIRES: Timestamp = Timestamp::from_millis(1_900_000_000_456);
    const V: Timestamp = Timestamp::from_millis(1_700_000_000_000);
    const FIRST: Timestamp = Timestamp::from_millis(1_600_000_000_000);
    const OWNER: &str = "0000000000000000000000000000abcd";

    fn expects() -> [item::Expect; 3] {
        [
            item::Expect::Absent,
            item::Expect::At {
                first_seen: FIRST,
                seq: 0,
            },
            item::Expect::At {
                first_seen: FIRST,
                seq: 7,
            },
        ]
    }

    fn req(meta: FindingMeta) -> ClaimRequest {
        ClaimRequest {
            key: VersionKey {
                finding_id: "f-1".into(),
                version: V,
            },
            meta,
        }
    }

    fn full() -> FindingMeta {
        FindingMeta {
            account_id: "111122223333".into(),
            region: "eu-west-1".into(),
            finding_type: Some("Recon:EC2/Portscan".into()),
            severity: Some(5.5),
            title: Some("Portscan".into()),
        }
    }

    fn bare(severity: Option<f64>) -> FindingMeta {
        FindingMeta {
            finding_type: None,
            severity,
            title: None,
            ..full()
        }
    }

    fn owner() -> Owner {
        OWNER.parse().expect("an owner token")
    }

    /// The `#name` / `:value` placeholders `text` uses.
    fn placeholders(text: &str, sigil: char) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        let mut rest = text;
        while let Some(at) = rest.find(sigil) {
            let tail = &rest[at + 1..];
            let len = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            out.insert(format!("{sigil}{}", &tail[..len]));
            rest = &tail[len..];
        }
        out
    }

    /// DynamoDB rejects an expression with an undefined placeholder, and a request with an
    /// unused name or value: each placeholder is defined exactly when it is used.
    fn assert_consistent(w: &RecordUpdate) {
        let text = format!("{} {}", w.update, w.condition);
        let names: std::collections::BTreeSet<_> = w.expr.names.keys().cloned().collect();
        let values: std::collections::BTreeSet<_> = w.expr.values.keys().cloned().collect();
        assert_eq!(placeholders(&text, '#'), names, "{text}");
        assert_eq!(placeholders(&text, ':'), values, "{text}");
        for (k, attr) in &w.expr.names {
            assert_eq!(k, &format!("#{attr}"));
        }
    }

    fn value<'a>(w: &'a RecordUpdate, name: &str) -> &'a AttributeValue {
        w.expr
            .values
            .get(name)
            .unwrap_or_else(|| panic!("no value {name} in {:?}", w.expr.values))
    }

    fn all_writes() -> Vec<RecordUpdate> {
        let mut out = Vec::new();
        for expect in expects() {
            for meta in [full(), bare(None), bare(Some(f64::NAN))] {
                out.push(claim_write(&req(meta), NOW, 300_000, EXPIRES, "tok", expect).0);
            }
            for counter in [None, Some(item::DUPLICATES)] {
                out.push(suppress_write("f-1", NOW, EXPIRES, counter, expect).0);
            }
            for reason in [None, Some("boom")] {
                for latest in [None, Some(owner())] {
                    out.push(finish_write(V, NOW, EXPIRES, reason, latest, "ftok", expect).0);
                }
            }
        }
        out.push(sent_version_write(V, NOW));
        out
    }

    #[test]
    fn every_placeholder_is_defined_and_every_definition_used() {
        for w in all_writes() {
            assert_consistent(&w);
        }
    }

    #[test]
    fn the_expected_record_state_is_the_condition_and_the_next_count_the_update() {
        let slot = |e: item::Expect| e.next(NOW);
        let clause = |expect| {
            let (mut e, mut sets) = (Expr::default(), Vec::new());
            let c = expect_clause(&mut e, &mut sets, expect, slot(expect));
            (e, sets, c)
        };
        let (e, sets, c) = clause(item::Expect::Absent);
        assert_eq!(c, "attribute_not_exists(#pk)");
        assert_eq!(sets, ["#seq = :nseq"]);
        assert_eq!(e.values[":nseq"], item::n(1));
        // A record of an older gdfwd has no count yet: expecting 0 accepts a missing one.
        let (e, _, c) = clause(expects()[1]);
        assert_eq!(
            c,
            "attribute_exists(#pk) AND #first_seen = :efs AND (attribute_not_exists(#seq) OR #seq = :eseq)"
        );
        assert_eq!(e.values[":eseq"], item::n(0));
        assert_eq!(e.values[":nseq"], item::n(1));
        assert_eq!(e.values[":efs"], item::ts(FIRST));
        let (e, _, c) = clause(expects()[2]);
        assert_eq!(
            c,
            "attribute_exists(#pk) AND #first_seen = :efs AND #seq = :eseq"
        );
        assert_eq!(e.values[":eseq"], item::n(7));
        assert_eq!(e.values[":nseq"], item::n(8));
    }

    #[test]
    fn expiry_is_set_exactly_and_as_ttl_seconds_rounded_up() {
        let (mut e, mut sets) = (Expr::default(), Vec::new());
        set_expiry(&mut e, &mut sets, Timestamp::from_millis(1_500));
        assert_eq!(sets, ["#expires_at_ms = :exp_ms", "#expires_at = :exp_s"]);
        assert_eq!(e.values[":exp_ms"], item::n(1_500));
        assert_eq!(e.values[":exp_s"], item::n(2));
    }

    #[test]
    fn a_claim_sets_the_versions_meta_and_removes_what_it_lacks() {
        let (w, _) = claim_write(&req(full()), NOW, 300_000, EXPIRES, "tok", expects()[0]);
        assert!(!w.update.contains("REMOVE"), "{}", w.update);
        assert_eq!(value(&w, ":sev"), &item::n(5.5));
        assert_eq!(value(&w, ":title"), &item::s("Portscan"));
        // A version without type, title or a finite severity must not keep an older one's.
        for meta in [bare(None), bare(Some(f64::NAN)), bare(Some(f64::INFINITY))] {
            let (w, _) = claim_write(&req(meta), NOW, 300_000, EXPIRES, "tok", expects()[0]);
            assert!(
                w.update
                    .ends_with(" REMOVE #finding_type, #severity, #title"),
                "{}",
                w.update
            );
            assert!(!w.expr.values.contains_key(":sev"));
        }
    }

    #[test]
    fn a_claim_takes_the_lease_and_keeps_first_seen_and_counters() {
        let (w, slot) = claim_write(&req(full()), NOW, 300_000, EXPIRES, "tok", expects()[2]);
        assert_eq!(
            value(&w, ":lease"),
            &item::ts(Timestamp::from_millis(1_800_000_300_123))
        );
        assert_eq!(value(&w, ":pending"), &item::s("pending"));
        assert_eq!(value(&w, ":tok"), &item::s("tok"));
        assert_eq!(value(&w, ":g1pk"), &item::s("A#111122223333"));
        assert_eq!(value(&w, ":g1sk"), &item::s("001800000000123#f-1"));
        assert!(
            w.update
                .contains("#first_seen = if_not_exists(#first_seen, :now)")
        );
        for c in ["#versions_sent", "#duplicates", "#stale", "#failures"] {
            assert!(
                w.update
                    .contains(&format!("{c} = if_not_exists({c}, :zero)")),
                "{c}"
            );
        }
        assert_eq!(
            slot,
            item::Slot {
                first_seen: FIRST,
                seq: 8
            }
        );
    }

    #[test]
    fn a_first_claim_expects_no_record_and_any_other_the_claim_rule() {
        let (w, slot) = claim_write(&req(full()), NOW, 300_000, EXPIRES, "tok", expects()[0]);
        assert_eq!(w.condition, "attribute_not_exists(#pk)");
        assert_eq!(
            slot,
            item::Slot {
                first_seen: NOW,
                seq: 1
            }
        );
        let (w, _) = claim_write(&req(full()), NOW, 300_000, EXPIRES, "tok", expects()[2]);
        assert_eq!(
            w.condition,
            "attribute_exists(#pk) AND #first_seen = :efs AND #seq = :eseq \
             AND #expires_at_ms > :now \
             AND (attribute_not_exists(#sent_version) OR #sent_version < :v) \
             AND (#latest_version < :v OR #status = :failed OR (#status = :pending AND #lease_until <= :now))"
        );
        assert_eq!(value(&w, ":failed"), &item::s("failed"));
    }

    #[test]
    fn a_lost_claim_counts_its_suppression_on_a_live_record() {
        let (w, slot) = suppress_write("f-1", NOW, EXPIRES, Some(item::STALE), expects()[2]);
        assert!(w.update.ends_with(" ADD #stale :one"), "{}", w.update);
        assert!(
            w.condition.ends_with(" AND #expires_at_ms > :now"),
            "{}",
            w.condition
        );
        assert_eq!(value(&w, ":g1sk"), &item::s("001800000000123#f-1"));
        assert_eq!(slot.seq, 8);
        // An answer in flight counts nothing.
        let (w, _) = suppress_write("f-1", NOW, EXPIRES, None, expects()[2]);
        assert!(!w.update.contains("ADD"), "{}", w.update);
    }

    #[test]
    fn a_commit_of_the_latest_version_marks_it_sent_for_its_owner_only() {
        let (w, _) = finish_write(V, NOW, EXPIRES, None, Some(owner()), "ftok", expects()[2]);
        assert!(w.update.contains("#status = :st"), "{}", w.update);
        assert!(w.update.contains("#sent_version = :v"), "{}", w.update);
        assert!(
            w.update
                .contains(" REMOVE #lease_until ADD #versions_sent :one"),
            "{}",
            w.update
        );
        assert_eq!(value(&w, ":st"), &item::s("sent"));
        assert_eq!(value(&w, ":owner"), &item::s(OWNER));
        assert!(
            w.condition.ends_with(
                " AND (attribute_not_exists(#finish_token) OR #finish_token <> :ftok) \
                 AND #latest_version = :v AND #claim_token = :owner"
            ),
            "{}",
            w.condition
        );
    }

    #[test]
    fn a_release_of_the_latest_version_frees_only_a_pending_claim() {
        let (w, _) = finish_write(
            V,
            NOW,
            EXPIRES,
            Some("boom"),
            Some(owner()),
            "ftok",
            expects()[2],
        );
        assert_eq!(value(&w, ":st"), &item::s("failed"));
        assert_eq!(value(&w, ":err"), &item::s("boom"));
        assert!(!w.update.contains("#sent_version"), "{}", w.update);
        assert!(
            w.update
                .ends_with(" REMOVE #lease_until ADD #failures :one"),
            "{}",
            w.update
        );
        assert!(
            w.condition
                .ends_with(" AND #claim_token = :owner AND #status = :pending"),
            "{}",
            w.condition
        );
    }

    #[test]
    fn a_finish_of_an_older_version_only_counts() {
        let (w, _) = finish_write(V, NOW, EXPIRES, None, None, "ftok", expects()[2]);
        assert!(
            !w.update.contains("#status") && !w.update.contains("REMOVE"),
            "{}",
            w.update
        );
        assert!(
            w.condition.ends_with(" AND #latest_version > :v"),
            "{}",
            w.condition
        );
        // A release may also be of the latest version once it was sent.
        let (w, _) = finish_write(V, NOW, EXPIRES, Some("boom"), None, "ftok", expects()[2]);
        assert!(w.update.ends_with(" ADD #failures :one"), "{}", w.update);
        assert!(
            w.condition.ends_with(" AND #latest_version >= :v"),
            "{}",
            w.condition
        );
    }

    #[test]
    fn the_newest_delivered_version_only_rises() {
        let w = sent_version_write(V, NOW);
        assert_eq!(w.update, "SET #sent_version = :v");
        assert_eq!(
            w.condition,
            "attribute_exists(#pk) AND #expires_at_ms > :now \
             AND (attribute_not_exists(#sent_version) OR #sent_version < :v)"
        );
    }

    #[test]
    fn a_fresh_record_is_a_new_incarnation_with_zero_counters() {
        let it = fresh_record(&req(full()), NOW, 300_000, EXPIRES, "tok");
        let record = item::record_from(&it).expect("a record");
        assert_eq!(record.first_seen, NOW);
        assert_eq!(record.latest_version, V);
        assert_eq!(record.status, Status::Pending);
        assert_eq!(
            record.lease_until,
            Some(Timestamp::from_millis(1_800_000_300_123))
        );
        assert_eq!(record.seq, 1);
        assert_eq!(record.meta, full());
        assert_eq!(
            (
                record.versions_sent,
                record.duplicates,
                record.stale,
                record.failures
            ),
            (0, 0, 0, 0)
        );
        assert_eq!(it[PK], item::s("F#f-1"));
        assert_eq!(it[SK], item::s(item::RECORD_SK));
        assert_eq!(it[TTL_ATTRIBUTE], item::n(1_900_000_001));
        let it = fresh_record(&req(bare(Some(f64::NAN))), NOW, 300_000, EXPIRES, "tok");
        for attr in [item::FINDING_TYPE, item::SEVERITY, item::TITLE] {
            assert!(!it.contains_key(attr), "{attr}");
        }
    }
}
