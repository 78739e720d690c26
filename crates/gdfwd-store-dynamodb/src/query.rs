//! The audit reads: one finding's record and history (`history`), and the records a
//! [`ListQuery`] selects (`list`).
//!
//! A finding's record and history entries share its partition, so `history` is one consistent
//! `Query` (paged). `list` with an account reads the audit index (`gsi1`: one account's records,
//! newest sighting first, the time window as a key condition); without one it is a filtered
//! `Scan`, acceptable because listing is audit only, never a hot path. The filters are built by
//! pure functions, and the port's own predicate ([`ListQuery::matches`]) is applied to what
//! comes back as a guard against the two drifting apart.

use gdfwd_core::store::{
    FindingHistory, FindingRecord, HistoryEntry, ListQuery, Status, StatusFilter,
};
use gdfwd_model::Timestamp;

use crate::expr::Expr;
use crate::item::{self, Item};
use crate::table::{GSI1, GSI1_PK, GSI1_SK, PK, SK};
use crate::{DynamoStore, DynamoStoreError};

/// One page of a `Query` or `Scan`: its items and where the next page starts.
type Page = (Vec<Item>, Option<Item>);

/// The filter every listed record passes: live at `now`, and the query's status and type.
fn list_filter(e: &mut Expr, q: &ListQuery, now: Timestamp) -> Vec<String> {
    let nowv = e.v("now", item::ts(now));
    let mut filter = vec![format!("{} > {nowv}", e.n(item::EXPIRES_MS))];
    match q.status {
        None => {}
        Some(counted @ (StatusFilter::Sent | StatusFilter::Duplicate | StatusFilter::Stale)) => {
            let counter = match counted {
                StatusFilter::Sent => item::VERSIONS_SENT,
                StatusFilter::Duplicate => item::DUPLICATES,
                _ => item::STALE,
            };
            filter.push(format!("{} > {}", e.n(counter), e.v("zero", item::n(0))));
        }
        Some(StatusFilter::Failed) => {
            filter.push(format!(
                "{} > {} AND {} = {}",
                e.n(item::FAILURES),
                e.v("zero", item::n(0)),
                e.n(item::STATUS),
                e.v("st", item::s(Status::Failed.as_str()))
            ));
        }
        Some(StatusFilter::Pending) => {
            filter.push(e.assign(item::STATUS, "st", item::s(Status::Pending.as_str())));
        }
    }
    if let Some(p) = &q.finding_type {
        filter.push(format!(
            "begins_with({}, {})",
            e.n(item::FINDING_TYPE),
            e.v("ftp", item::s(p))
        ));
    }
    filter
}

/// The audit index's key condition: account `acc`'s records, last seen in `[since, until)`.
fn account_key_condition(
    e: &mut Expr,
    acc: &str,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
) -> String {
    let mut kc = e.assign(GSI1_PK, "g1pk", item::s(item::account_pk(acc)));
    match (since, until) {
        (Some(a), Some(b)) => kc.push_str(&format!(
            " AND {} BETWEEN {} AND {}",
            e.n(GSI1_SK),
            e.v("lo", item::s(item::ms15(a))),
            // `<ms15(until)` exclusive: every key of an earlier ms sorts before it.
            e.v("hi", item::s(item::ms15(b.saturating_add_millis(-1)) + "$"))
        )),
        (Some(a), None) => {
            kc.push_str(&format!(
                " AND {} >= {}",
                e.n(GSI1_SK),
                e.v("lo", item::s(item::ms15(a)))
            ));
        }
        (None, Some(b)) => {
            kc.push_str(&format!(
                " AND {} < {}",
                e.n(GSI1_SK),
                e.v("hi", item::s(item::ms15(b)))
            ));
        }
        (None, None) => {}
    }
    kc
}

/// What the scan of all records adds to [`list_filter`]: records only (not history or
/// key/value items), last seen in `[since, until)`.
fn scan_filter(e: &mut Expr, filter: &mut Vec<String>, q: &ListQuery) {
    filter.push(e.assign(SK, "r", item::s(item::RECORD_SK)));
    if let Some(a) = q.since {
        filter.push(format!(
            "{} >= {}",
            e.n(item::LAST_SEEN),
            e.v("since", item::ts(a))
        ));
    }
    if let Some(b) = q.until {
        filter.push(format!(
            "{} < {}",
            e.n(item::LAST_SEEN),
            e.v("until", item::ts(b))
        ));
    }
}

/// The entries of `raw` that belong to `record`'s incarnation: an earlier, expired incarnation
/// of the record (not yet deleted by TTL) numbered its own under its own `first_seen`.
fn this_incarnation(record: &FindingRecord, raw: &[Item]) -> Result<Vec<HistoryEntry>, String> {
    let ours = item::history_prefix(record.first_seen);
    let numbered = format!("{}S", item::HISTORY_PREFIX);
    let mut entries = Vec::with_capacity(raw.len());
    for it in raw {
        let sk = item::get_s(it, SK)?;
        let e = item::history_from(it)?;
        let keep = if sk.starts_with(&numbered) {
            sk.starts_with(&ours)
        } else {
            // An older gdfwd's entry (time-ordered key, no number): the time cut-off it
            // was written for.
            e.at >= record.first_seen
        };
        if keep {
            entries.push(e);
        }
    }
    Ok(entries)
}

/// Newest sighting first (ties by id), at most `limit`.
fn newest_first(mut out: Vec<FindingRecord>, limit: Option<usize>) -> Vec<FindingRecord> {
    out.sort_by(|a, b| {
        b.last_seen
            .cmp(&a.last_seen)
            .then_with(|| a.finding_id.cmp(&b.finding_id))
    });
    if let Some(n) = limit {
        out.truncate(n);
    }
    out
}

impl DynamoStore {
    /// `history`: the record and this incarnation's entries; `None` when there is no live record.
    pub(crate) async fn read_history(
        &self,
        id: &str,
    ) -> Result<Option<FindingHistory>, DynamoStoreError> {
        const OP: &str = "history";
        let now = self.clock.now();
        let (record, raw_entries) = self.read_partition(id).await?;
        let key = item::finding_pk(id);
        let corrupt = |m| self.corrupt(OP, &key, m);
        let Some(rec) = record else {
            return Ok(None);
        };
        if item::expired(&rec, now).map_err(corrupt)? {
            return Ok(None);
        }
        let record = item::record_from(&rec).map_err(corrupt)?;
        let entries = this_incarnation(&record, &raw_entries).map_err(corrupt)?;
        Ok(Some(FindingHistory { record, entries }))
    }

    /// Every item of finding `id`'s partition: the record, if any, and the history entries.
    async fn read_partition(
        &self,
        id: &str,
    ) -> Result<(Option<Item>, Vec<Item>), DynamoStoreError> {
        const OP: &str = "history";
        let mut record = None;
        let mut raw_entries = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(":pk", item::s(item::finding_pk(id)))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.call_err(OP, e))?;
            for it in out.items() {
                let sk = item::get_s(it, SK).map_err(|m| self.corrupt(OP, id, m))?;
                if sk == item::RECORD_SK {
                    record = Some(it.clone());
                } else if sk.starts_with(item::HISTORY_PREFIX) {
                    raw_entries.push(it.clone());
                }
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok((record, raw_entries))
    }

    /// `list`: the live records `q` selects, newest sighting first.
    pub(crate) async fn list_records(
        &self,
        q: &ListQuery,
    ) -> Result<Vec<FindingRecord>, DynamoStoreError> {
        const OP: &str = "list";
        if q.limit == Some(0) {
            return Ok(Vec::new());
        }
        let now = self.clock.now();
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let (items, next) = match &q.account {
                Some(acc) => self.account_page(q, acc, now, start.take()).await?,
                None => self.scan_page(q, now, start.take()).await?,
            };
            for it in &items {
                let key = item::get_s(it, PK).unwrap_or("?").to_owned();
                let r = item::record_from(it).map_err(|m| self.corrupt(OP, &key, m))?;
                // The port's own predicate, as a guard against the filters drifting apart.
                if q.matches(&r) {
                    out.push(r);
                }
            }
            match next {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(newest_first(out, q.limit))
    }

    /// One page of the audit index: one account's records, newest sighting first.
    async fn account_page(
        &self,
        q: &ListQuery,
        acc: &str,
        now: Timestamp,
        start: Option<Item>,
    ) -> Result<Page, DynamoStoreError> {
        let mut e = Expr::default();
        let filter = list_filter(&mut e, q, now);
        let kc = account_key_condition(&mut e, acc, q.since, q.until);
        let res = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(GSI1)
            .key_condition_expression(kc)
            .filter_expression(filter.join(" AND "))
            .scan_index_forward(false)
            .set_expression_attribute_names(Some(e.names))
            .set_expression_attribute_values(Some(e.values))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|err| self.call_err("list", err))?;
        Ok((res.items().to_vec(), res.last_evaluated_key().cloned()))
    }

    /// One page of the scan of all records (no account given).
    async fn scan_page(
        &self,
        q: &ListQuery,
        now: Timestamp,
        start: Option<Item>,
    ) -> Result<Page, DynamoStoreError> {
        let mut e = Expr::default();
        let mut filter = list_filter(&mut e, q, now);
        scan_filter(&mut e, &mut filter, q);
        let res = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression(filter.join(" AND "))
            .set_expression_attribute_names(Some(e.names))
            .set_expression_attribute_values(Some(e.values))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|err| self.call_err("list", err))?;
        Ok((res.items().to_vec(), res.last_evaluated_key().cloned()))
    }
}

#[cfg(test)]
mod tests {
    use gdfwd_core::store::HistoryKind;

    use super::*;

    const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

    fn query(status: Option<StatusFilter>, finding_type: Option<&str>) -> ListQuery {
        ListQuery {
            status,
            finding_type: finding_type.map(str::to_owned),
            ..ListQuery::default()
        }
    }

    fn filter(q: &ListQuery) -> (Expr, String) {
        let mut e = Expr::default();
        let f = list_filter(&mut e, q, NOW).join(" AND ");
        (e, f)
    }

    #[test]
    fn the_status_filter_reads_the_counters_and_the_status() {
        let live = "#expires_at_ms > :now";
        assert_eq!(filter(&query(None, None)).1, live);
        for (status, counter) in [
            (StatusFilter::Sent, "versions_sent"),
            (StatusFilter::Duplicate, "duplicates"),
            (StatusFilter::Stale, "stale"),
        ] {
            let (e, f) = filter(&query(Some(status), None));
            assert_eq!(f, format!("{live} AND #{counter} > :zero"));
            assert_eq!(e.values[":zero"], item::n(0));
        }
        let (e, f) = filter(&query(Some(StatusFilter::Failed), None));
        assert_eq!(f, format!("{live} AND #failures > :zero AND #status = :st"));
        assert_eq!(e.values[":st"], item::s("failed"));
        let (e, f) = filter(&query(Some(StatusFilter::Pending), None));
        assert_eq!(f, format!("{live} AND #status = :st"));
        assert_eq!(e.values[":st"], item::s("pending"));
        let (e, f) = filter(&query(None, Some("Recon:EC2")));
        assert_eq!(f, format!("{live} AND begins_with(#finding_type, :ftp)"));
        assert_eq!(e.values[":ftp"], item::s("Recon:EC2"));
    }

    #[test]
    fn the_account_index_window_is_since_inclusive_until_exclusive() {
        let kc = |since: Option<i64>, until: Option<i64>| {
            let mut e = Expr::default();
            let kc = account_key_condition(
                &mut e,
                "111122223333",
                since.map(Timestamp::from_millis),
                until.map(Timestamp::from_millis),
            );
            (e, kc)
        };
        let (e, c) = kc(None, None);
        assert_eq!(c, "#gsi1pk = :g1pk");
        assert_eq!(e.values[":g1pk"], item::s("A#111122223333"));
        let (e, c) = kc(Some(1_000), None);
        assert_eq!(c, "#gsi1pk = :g1pk AND #gsi1sk >= :lo");
        assert_eq!(e.values[":lo"], item::s("000000000001000"));
        let (e, c) = kc(None, Some(2_000));
        assert_eq!(c, "#gsi1pk = :g1pk AND #gsi1sk < :hi");
        assert_eq!(e.values[":hi"], item::s("000000000002000"));
        // BETWEEN is inclusive: its upper end is the last key of the millisecond before `until`.
        let (e, c) = kc(Some(1_000), Some(2_000));
        assert_eq!(c, "#gsi1pk = :g1pk AND #gsi1sk BETWEEN :lo AND :hi");
        assert_eq!(e.values[":hi"], item::s("000000000001999$"));
        let last_before = item::gsi1_sk(Timestamp::from_millis(1_999), "zzzz");
        let first_at = item::gsi1_sk(Timestamp::from_millis(2_000), "");
        assert!(
            last_before.as_str() < "000000000001999$" && first_at.as_str() > "000000000001999$"
        );
    }

    #[test]
    fn the_scan_keeps_records_in_the_window_only() {
        let q = ListQuery {
            since: Some(Timestamp::from_millis(1_000)),
            until: Some(Timestamp::from_millis(2_000)),
            ..ListQuery::default()
        };
        let (mut e, mut f) = (Expr::default(), Vec::new());
        scan_filter(&mut e, &mut f, &q);
        assert_eq!(
            f,
            ["#sk = :r", "#last_seen >= :since", "#last_seen < :until"]
        );
        assert_eq!(e.values[":r"], item::s(item::RECORD_SK));
    }

    fn record(first_seen: i64) -> FindingRecord {
        let it = crate::expr::fresh_record(
            &crate::test_request("f-1", Timestamp::from_millis(1)),
            Timestamp::from_millis(first_seen),
            1,
            NOW,
            "tok",
        );
        item::record_from(&it).expect("a record")
    }

    fn entry(sk: String, at: i64) -> Item {
        let slot = item::Slot {
            first_seen: Timestamp::from_millis(0),
            seq: 1,
        };
        let at = Timestamp::from_millis(at);
        let mut it = item::history_item("f-1", slot, at, at, &HistoryKind::Claimed, NOW);
        it.insert(SK.to_owned(), item::s(sk));
        it
    }

    #[test]
    fn history_keeps_this_incarnations_entries_and_older_gdfwds_since_first_seen() {
        let r = record(5_000);
        let slot = |first_seen, seq| {
            item::history_sk(item::Slot {
                first_seen: Timestamp::from_millis(first_seen),
                seq,
            })
        };
        let raw = [
            entry(slot(1_000, 1), 1_000), // an earlier incarnation's
            entry(slot(5_000, 1), 5_000), // ours
            entry(slot(5_000, 2), 4_000), // ours, whatever its clock said
            entry("H#000000000004999#000000000001#p".into(), 4_999), // older gdfwd, before
            entry("H#000000000005000#000000000001#p".into(), 5_000), // older gdfwd, since
        ];
        let kept: Vec<i64> = this_incarnation(&r, &raw)
            .expect("decodable")
            .iter()
            .map(|e| e.at.millis())
            .collect();
        assert_eq!(kept, [5_000, 4_000, 5_000]);
        let mut broken = entry(slot(5_000, 3), 5_000);
        broken.remove(SK);
        assert!(this_incarnation(&r, &[broken]).is_err());
    }

    #[test]
    fn lists_newest_sighting_first_then_by_id_up_to_the_limit() {
        let rec = |id: &str, last_seen: i64| FindingRecord {
            finding_id: id.to_owned(),
            last_seen: Timestamp::from_millis(last_seen),
            ..record(0)
        };
        let out = vec![rec("b", 1), rec("c", 2), rec("a", 1), rec("d", 3)];
        let ids = |v: Vec<FindingRecord>| v.into_iter().map(|r| r.finding_id).collect::<Vec<_>>();
        assert_eq!(ids(newest_first(out.clone(), None)), ["d", "c", "a", "b"]);
        assert_eq!(ids(newest_first(out, Some(2))), ["d", "c"]);
    }
}
