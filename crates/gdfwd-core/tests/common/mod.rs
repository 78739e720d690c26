//! Fakes shared by the pipeline and backfill tests: an in-memory store (with a key/value space
//! for checkpoints) and a scriptable sink.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use gdfwd_core::StoreError;
use gdfwd_core::sink::{EventOutcome, OutEvent, SendReport, Sink};
use gdfwd_core::store::{
    ClaimOutcome, ClaimRequest, Delivery, FindingHistory, FindingRecord, Finish, KvStore,
    ListQuery, Owner, StateStore, VersionKey,
};
use gdfwd_model::Timestamp;

/// Just enough of the store contract for pipeline tests (the real contract suite runs against the
/// real backends): older than the newest delivered version is stale, the delivered version a
/// duplicate, this or an older version behind a pending claim in flight (under a lease ending
/// at [`LEASE_END`]), anything else new.
#[derive(Debug, Default)]
pub struct MemStore {
    /// finding id → (version claimed last, its state)
    pub items: Mutex<HashMap<String, (Timestamp, &'static str)>>,
    /// finding id → newest version delivered
    pub sent: Mutex<HashMap<String, Timestamp>>,
    pub committed: Mutex<Vec<(VersionKey, Delivery)>>,
    pub released: Mutex<Vec<(VersionKey, String)>>,
    pub fail_claims: bool,
    /// `finish_many` calls, and how many items each had.
    pub finish_calls: Mutex<Vec<usize>>,
    /// Commits of this finding fail (after Dynatrace accepted it).
    pub fail_commit_of: Option<String>,
    /// Commits of this finding are refused: another sender claimed it after our lease.
    pub stale_owner_of: Option<String>,
    /// Every claim's answer, in order.
    pub answers: Mutex<Vec<ClaimOutcome>>,
    /// The key/value space as every put, in order: (namespace, key, value); a get reads the
    /// last put of its key (nothing expires). The order shows when a run saved what.
    pub kv_puts: Mutex<Vec<(String, String, String)>>,
}

#[async_trait]
impl StateStore for MemStore {
    fn describe(&self) -> String {
        "memory".into()
    }
    async fn claim(
        &self,
        req: &ClaimRequest,
        _lease: Duration,
    ) -> Result<ClaimOutcome, StoreError> {
        if self.fail_claims {
            return Err(StoreError::Unavailable {
                backend: "memory".into(),
                operation: "claim",
                source: "injected outage".into(),
            });
        }
        let mut items = self.items.lock().expect("lock");
        let v = req.key.version;
        let sent = self
            .sent
            .lock()
            .expect("lock")
            .get(&req.key.finding_id)
            .copied();
        let answer = match (sent, items.get(&req.key.finding_id)) {
            (Some(newest), _) if v < newest => Ok(ClaimOutcome::Stale { newest }),
            (Some(newest), _) if v == newest => Ok(ClaimOutcome::Duplicate),
            (_, Some((cur, "pending"))) if v <= *cur => Ok(ClaimOutcome::InFlight {
                lease_until: LEASE_END,
            }),
            _ => {
                items.insert(req.key.finding_id.clone(), (v, "pending"));
                Ok(ClaimOutcome::New {
                    owner: Owner(u128::from(v.millis().unsigned_abs())),
                })
            }
        };
        if let Ok(a) = &answer {
            self.answers.lock().expect("lock").push(*a);
        }
        answer
    }
    async fn commit(
        &self,
        key: &VersionKey,
        _owner: Owner,
        d: &Delivery,
    ) -> Result<(), StoreError> {
        if self.stale_owner_of.as_ref() == Some(&key.finding_id) {
            return Err(StoreError::StaleOwner {
                backend: "memory".into(),
                operation: "commit",
                finding_id: key.finding_id.clone(),
                version: key.version,
            });
        }
        if self.fail_commit_of.as_ref() == Some(&key.finding_id) {
            return Err(StoreError::Unavailable {
                backend: "memory".into(),
                operation: "commit",
                source: "injected outage".into(),
            });
        }
        let mut items = self.items.lock().expect("lock");
        if items
            .get(&key.finding_id)
            .is_some_and(|(v, _)| *v == key.version)
        {
            items.insert(key.finding_id.clone(), (key.version, "sent"));
        }
        let mut sent = self.sent.lock().expect("lock");
        let newest = sent.entry(key.finding_id.clone()).or_insert(key.version);
        *newest = (*newest).max(key.version);
        self.committed
            .lock()
            .expect("lock")
            .push((key.clone(), d.clone()));
        Ok(())
    }
    async fn release(
        &self,
        key: &VersionKey,
        _owner: Owner,
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut items = self.items.lock().expect("lock");
        if items.get(&key.finding_id) == Some(&(key.version, "pending")) {
            items.insert(key.finding_id.clone(), (key.version, "failed"));
        }
        self.released
            .lock()
            .expect("lock")
            .push((key.clone(), reason.to_owned()));
        Ok(())
    }
    async fn finish_many(
        &self,
        items: &[(VersionKey, Owner, Finish)],
    ) -> Vec<Result<(), StoreError>> {
        self.finish_calls.lock().expect("lock").push(items.len());
        let mut out = Vec::new();
        for (key, owner, finish) in items {
            out.push(match finish {
                Finish::Commit(d) => self.commit(key, *owner, d).await,
                Finish::Release(r) => self.release(key, *owner, r).await,
            });
        }
        out
    }
    async fn history(&self, _: &str) -> Result<Option<FindingHistory>, StoreError> {
        Ok(None)
    }
    async fn list(&self, _: &ListQuery) -> Result<Vec<FindingRecord>, StoreError> {
        Ok(vec![])
    }
    fn kv(self: Arc<Self>) -> Option<Arc<dyn KvStore>> {
        Some(self)
    }
}

#[async_trait]
impl KvStore for MemStore {
    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<String>, StoreError> {
        let puts = self.kv_puts.lock().expect("lock");
        let last = puts
            .iter()
            .rev()
            .find(|(n, k, _)| n == namespace && k == key);
        Ok(last.map(|(_, _, v)| v.clone()))
    }
    async fn kv_put(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        _ttl: Duration,
    ) -> Result<(), StoreError> {
        let put = (namespace.to_owned(), key.to_owned(), value.to_owned());
        self.kv_puts.lock().expect("lock").push(put);
        Ok(())
    }
}

/// The lease end [`MemStore`] reports for a pending version.
pub const LEASE_END: Timestamp = Timestamp::from_millis(1_800_000_000_000);

/// Records what it was given; answers with `script` (one entry per call, then all sent).
pub type Rule = Box<dyn Fn(usize) -> EventOutcome + Send>;

#[derive(Default)]
pub struct FakeSink {
    pub received: Mutex<Vec<OutEvent>>,
    pub script: Mutex<Vec<Rule>>,
    /// The deadline of every `send` call.
    pub deadlines: Mutex<Vec<Option<Instant>>>,
}

impl std::fmt::Debug for FakeSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeSink")
    }
}

#[async_trait]
impl Sink for FakeSink {
    async fn send(&self, events: &[OutEvent], deadline: Option<Instant>) -> SendReport {
        self.deadlines.lock().expect("lock").push(deadline);
        let rule = {
            let mut s = self.script.lock().expect("lock");
            if s.is_empty() {
                None
            } else {
                Some(s.remove(0))
            }
        };
        let outcomes: Vec<EventOutcome> = (0..events.len())
            .map(|i| {
                rule.as_ref().map_or(
                    EventOutcome::Sent {
                        request_id: Some("req-1".into()),
                    },
                    |r| r(i),
                )
            })
            .collect();
        self.received.lock().expect("lock").extend(
            outcomes
                .iter()
                .zip(events)
                .filter(|(o, _)| o.is_sent())
                .map(|(_, e)| e.clone()),
        );
        SendReport::one_request(outcomes)
    }
}

impl FakeSink {
    /// The next `send` refuses every event for good (HTTP 400).
    pub fn refuse_all(&self) {
        self.script
            .lock()
            .expect("lock")
            .push(Box::new(|_| EventOutcome::Definitive {
                reason: "HTTP 400".into(),
            }));
    }

    /// The next `send` fails event `i` with a retryable HTTP 503 and delivers the rest.
    pub fn fail_503_at(&self, i: usize) {
        self.script.lock().expect("lock").push(Box::new(move |j| {
            if j == i {
                EventOutcome::Retryable {
                    reason: "HTTP 503".into(),
                }
            } else {
                EventOutcome::Sent { request_id: None }
            }
        }));
    }
}

/// A finding's JSON: account `account`, updated at `updated`.
pub fn finding(id: &str, account: &str, updated: &str) -> String {
    format!(
        r#"{{"id":"{id}","accountId":"{account}","region":"eu-west-1","updatedAt":"{updated}","createdAt":"2025-01-01T00:00:00Z","type":"Recon:EC2/Portscan","severity":5,"title":"t","resource":{{"resourceType":"Instance","instanceDetails":{{"instanceId":"i-1"}}}}}}"#
    )
}
