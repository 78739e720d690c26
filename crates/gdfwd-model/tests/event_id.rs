//! The event id pinned by value. Downstream deduplication in Dynatrace keys on it, so a change to
//! how it is derived would make every finding already sent arrive again as a new event. Snapshots
//! also show it, but a snapshot refresh accepts a change; these values cannot be refreshed away.
//!
//! The expected ids were computed independently of this crate (Python's `uuid.uuid5` over the
//! namespace `67646677-642d-4775-6172-644475747930` and the key
//! `"{finding id}\n{updatedAt in epoch ms}\n{object index}"`).

use std::path::PathBuf;

use gdfwd_model::{Enrichment, Format, Item, Timestamp, event_id, map_finding, parse_document};

#[test]
fn known_inputs_give_known_ids() {
    let t = Timestamp::from_millis(1_740_516_006_721);
    assert_eq!(event_id("abc", t, 0), "b4a9c9fc72225cd5a4af23a8c1be3a39");
    assert_eq!(event_id("abc", t, 1), "6fe3969cbc785b2ea26d063101e9918a");
    assert_eq!(
        event_id("abc", t.saturating_add_millis(1), 0),
        "991178c462085b07963cf761aff87262"
    );
}

#[test]
fn a_real_finding_s_first_event_has_its_known_id_in_both_formats() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(
        "../../tests/fixtures/guardduty/real/aws-samples-auto-response__guardduty_ec2_event.json",
    );
    let text = std::fs::read_to_string(&path).expect("fixture");
    let finding = match parse_document(&text).remove(0) {
        Ok(Item::Finding(f)) => *f,
        other => panic!("not a finding: {other:?}"),
    };
    assert_eq!(finding.id, "16afba5c5c43e07c9e3e5e2e544e95df");
    assert_eq!(finding.updated_at.millis(), 1_509_491_783_824);
    let want = "324cfd4de43452019453eacc9fb63233";
    let raw = map_finding(&finding, Format::Raw, &Enrichment::default());
    assert_eq!(raw[0].id, want);
    assert_eq!(raw[0].body["uuid"], want, "the raw event carries its id");
    let semantic = map_finding(&finding, Format::Semantic, &Enrichment::default());
    assert_eq!(
        semantic[0].id, want,
        "both formats give one event the same id"
    );
    assert_eq!(semantic[0].body["event.id"], want);
}
