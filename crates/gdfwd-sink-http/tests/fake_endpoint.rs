//! HttpSink against the fake OpenPipeline endpoint (a real HTTPS server on 127.0.0.1): delivery
//! under faults, 413 splitting, token refresh, Retry-After, deadlines, a dead endpoint, rate,
//! request and in-flight limits (counted from the fake's arrival log; speed is for the sender
//! benchmark) and the token staying out of logs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use gdfwd_core::sink::{EventOutcome, OutEvent, Sink};
use gdfwd_sink_http::{
    HttpSink, HttpSinkConfig, Refresh, RetryConfig, Secret, SinkHttpError, StaticToken, TokenSource,
};
use gdfwd_testkit_openpipeline::{FakeOpenPipeline, Fault, RetryAfter};

const TOKEN: &str = "dt0c01.TESTTOKEN.SUPERSECRETVALUE0123456789";

fn events(prefix: &str, n: usize, pad: usize) -> Vec<OutEvent> {
    (0..n)
        .map(|i| {
            let id = format!("{prefix}{i:08}");
            OutEvent {
                json: format!(r#"{{"uuid":"{id}","n":{i},"pad":"{}"}}"#, "p".repeat(pad)),
                id,
            }
        })
        .collect()
}

struct Setup {
    fake: FakeOpenPipeline,
    _dir: tempfile::TempDir,
    cfg: HttpSinkConfig,
}

/// A fake expecting TOKEN and a config for its HTTPS endpoint with fast retries.
async fn setup() -> Setup {
    let fake = FakeOpenPipeline::start(TOKEN).await.expect("fake");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = fake.write_ca_file(dir.path()).expect("ca file");
    let mut cfg = HttpSinkConfig::new(&fake.endpoint(), false).expect("config");
    cfg.ca_file = Some(ca);
    cfg.timeout = Duration::from_millis(500);
    cfg.retry = RetryConfig {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        max_attempts: 20,
        ..RetryConfig::default()
    };
    Setup {
        fake,
        _dir: dir,
        cfg,
    }
}

fn static_token(t: &str) -> Arc<dyn TokenSource> {
    Arc::new(StaticToken::new(Secret::new(t)))
}

/// The first `sent` outcomes are sent, every other one retryable with `why` in its reason.
fn assert_first_sent_rest_retryable(outcomes: &[EventOutcome], sent: usize, why: &str) {
    assert!(
        outcomes[..sent].iter().all(EventOutcome::is_sent),
        "{outcomes:?}"
    );
    for o in &outcomes[sent..] {
        assert!(
            matches!(o, EventOutcome::Retryable { reason } if reason.contains(why)),
            "{o:?}"
        );
    }
}

/// Ids the fake accepted, with how often each was accepted.
fn accepted(fake: &FakeOpenPipeline) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for id in fake.event_ids() {
        *m.entry(id).or_insert(0) += 1;
    }
    m
}

fn assert_all_sent_once(fake: &FakeOpenPipeline, input: &[OutEvent], outcomes: &[EventOutcome]) {
    assert_eq!(outcomes.len(), input.len());
    for (e, o) in input.iter().zip(outcomes) {
        assert!(o.is_sent(), "{} not sent: {o:?}", e.id);
    }
    let got = accepted(fake);
    assert_eq!(got.len(), input.len(), "distinct events accepted");
    for e in input {
        assert_eq!(got.get(&e.id), Some(&1), "{} accepted once", e.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_exactly_once_under_twenty_percent_faults() {
    let s = setup().await;
    s.fake.set_random_faults(
        0.2,
        42,
        vec![
            Fault::TooManyRequests(None),
            Fault::Status(500),
            Fault::Status(503),
            Fault::Drop,
            Fault::Slow(Duration::from_millis(900)),
        ],
    );
    let mut cfg = s.cfg.clone();
    cfg.max_batch_events = 10;
    let sink = HttpSink::new(cfg, static_token(TOKEN)).expect("sink");
    let input = events("faults", 400, 50);
    let report = sink.send(&input, None).await;
    assert_all_sent_once(&s.fake, &input, &report.outcomes);
    let c = s.fake.counters();
    assert!(c.faults > 0, "faults were injected: {c:?}");
    assert!(report.stats.retries > 0);
    assert_eq!(report.stats.events_sent, 400);
    assert_eq!(c.accepted_requests, 40);
    // Every sent event carries the fake's request id.
    assert!(report.outcomes.iter().all(
        |o| matches!(o, EventOutcome::Sent { request_id: Some(r) } if r.starts_with("fake-"))
    ));
}

/// Dynatrace accepted a batch and the answer was lost on the way back: the sender cannot tell
/// this from a request that never arrived, so it resends, and the batch arrives twice with the
/// same event ids (which downstream deduplication keys on). A duplicate, never a loss.
#[tokio::test]
async fn a_lost_answer_to_an_accepted_batch_gives_a_duplicate_never_a_loss() {
    let s = setup().await;
    s.fake
        .push_faults([Fault::Pass, Fault::AcceptThenDrop, Fault::Pass]);
    let mut cfg = s.cfg.clone();
    cfg.max_batch_events = 10;
    cfg.max_in_flight = 1;
    let sink = HttpSink::new(cfg, static_token(TOKEN)).expect("sink");
    let input = events("lost", 30, 10);
    let report = sink.send(&input, None).await;
    assert!(
        report.outcomes.iter().all(EventOutcome::is_sent),
        "{:?}",
        report.outcomes
    );
    assert!(report.stats.retries >= 1);
    let got = accepted(&s.fake);
    assert_eq!(got.len(), 30, "no event lost");
    let twice: Vec<&String> = got
        .iter()
        .filter(|(_, n)| **n == 2)
        .map(|(id, _)| id)
        .collect();
    let second_batch: Vec<&String> = input[10..20].iter().map(|e| &e.id).collect();
    assert_eq!(
        twice, second_batch,
        "exactly the batch whose answer was lost arrived twice"
    );
    assert!(got.values().all(|n| *n <= 2));
}

#[tokio::test]
async fn gzip_over_loopback_http_with_opt_in() {
    let s = setup().await;
    assert!(
        HttpSinkConfig::new(
            &s.fake.http_url("/platform/ingest/v1/security.events"),
            false
        )
        .is_err()
    );
    let mut cfg = HttpSinkConfig::new(
        &s.fake.http_url("/platform/ingest/v1/security.events"),
        true,
    )
    .expect("config");
    cfg.compress = true;
    let sink = HttpSink::new(cfg, static_token(TOKEN)).expect("sink");
    let input = events("gzip", 30, 200);
    let report = sink.send(&input, None).await;
    assert_all_sent_once(&s.fake, &input, &report.outcomes);
    let reqs = s.fake.requests();
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0].gzip);
    assert!(
        reqs[0].body_bytes < 30 * 200 / 4,
        "compressed: {}",
        reqs[0].body_bytes
    );
}

#[tokio::test]
async fn payload_too_large_splits_batches_until_they_fit() {
    let s = setup().await;
    // 16 events of ~90 bytes: one 1.5 kB batch; the fake takes at most 400 bytes.
    s.fake.set_max_body_bytes(Some(400));
    let sink = HttpSink::new(s.cfg.clone(), static_token(TOKEN)).expect("sink");
    let input = events("split", 16, 50);
    let report = sink.send(&input, None).await;
    assert_all_sent_once(&s.fake, &input, &report.outcomes);
    let statuses: Vec<Option<u16>> = s.fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses[0], Some(413));
    assert!(statuses.contains(&Some(202)));
    // Halving 16 -> 8 -> 4: every accepted request has at most 4 events.
    assert!(
        s.fake
            .requests()
            .iter()
            .filter(|r| r.status == Some(202))
            .all(|r| r.events <= 4)
    );
}

#[tokio::test]
async fn a_single_event_over_the_size_limit_is_definitive_and_the_rest_is_sent() {
    let s = setup().await;
    s.fake.set_max_body_bytes(Some(400));
    let sink = HttpSink::new(s.cfg.clone(), static_token(TOKEN)).expect("sink");
    let mut input = events("small", 5, 10);
    input.insert(2, events("big", 1, 1000).remove(0));
    let report = sink.send(&input, None).await;
    for (i, o) in report.outcomes.iter().enumerate() {
        if i == 2 {
            assert!(
                matches!(o, EventOutcome::Definitive { reason } if reason.contains("413")),
                "{o:?}"
            );
        } else {
            assert!(o.is_sent(), "{i}: {o:?}");
        }
    }
    let got = accepted(&s.fake);
    assert_eq!(got.len(), 5);
    assert!(!got.contains_key("big00000000"));
}

/// The `refused` events failed definitively with the 400 OpenPipeline gave them alone; every
/// other event was sent.
fn assert_only_refused_fail(input: &[OutEvent], outcomes: &[EventOutcome], refused: &[String]) {
    assert_eq!(outcomes.len(), input.len());
    for (e, o) in input.iter().zip(outcomes) {
        if refused.contains(&e.id) {
            assert!(
                matches!(o, EventOutcome::Definitive { reason } if reason.contains("400")),
                "{}: {o:?}",
                e.id
            );
        } else {
            assert!(o.is_sent(), "{}: {o:?}", e.id);
        }
    }
}

/// OpenPipeline answers 400 to a whole request for one invalid event: the sender halves the batch
/// until the refused events stand alone, so their batch-mates are still delivered.
#[tokio::test]
async fn a_request_refused_for_invalid_events_is_halved_until_only_those_fail() {
    let s = setup().await;
    let sink = HttpSink::new(s.cfg.clone(), static_token(TOKEN)).expect("sink");
    let input = events("bad", 16, 10);
    let refused = [input[3].id.clone(), input[12].id.clone()];
    s.fake.refuse_events(refused.clone());
    let report = sink.send(&input, None).await;
    assert_only_refused_fail(&input, &report.outcomes, &refused);
    let got = accepted(&s.fake);
    assert_eq!(got.len(), 14, "{got:?}");
    assert!(
        got.values().all(|&n| n == 1),
        "each valid event once: {got:?}"
    );
    // 16 -> 8+8 -> 4+4 (of the refused halves) -> 2+2 -> 1+1: two refused paths of four levels.
    let requests = s.fake.requests().len();
    assert!(requests <= 1 + 2 * 2 * 4, "{requests} requests");
    assert_eq!(report.stats.requests as usize, requests);
}

/// Invalid events close together refuse every part of a level of the refused branch (here the
/// quarters of the first half), while the other half was accepted: that is not a general
/// refusal, and halving goes on until only the invalid events fail.
#[tokio::test]
async fn invalid_events_close_together_still_fail_alone() {
    let s = setup().await;
    let sink = HttpSink::new(s.cfg.clone(), static_token(TOKEN)).expect("sink");
    let input = events("near", 8, 10);
    let refused = [input[0].id.clone(), input[2].id.clone()];
    s.fake.refuse_events(refused.clone());
    let report = sink.send(&input, None).await;
    assert_only_refused_fail(&input, &report.outcomes, &refused);
    assert_eq!(accepted(&s.fake).len(), 6);
}

/// When every part down to quarters is refused, a systemic refusal is suspected: one part is
/// halved down to single events (two requests a level), and when those are refused too the rest
/// is refused without further requests, instead of 2n - 1 of them.
#[tokio::test]
async fn a_batch_refused_in_every_part_stops_after_one_part_reaches_single_events() {
    let s = setup().await;
    let sink = HttpSink::new(s.cfg.clone(), static_token(TOKEN)).expect("sink");
    let input = events("allbad", 64, 10);
    s.fake.refuse_events(input.iter().map(|e| e.id.clone()));
    let report = sink.send(&input, None).await;
    assert!(
        report
            .outcomes
            .iter()
            .all(|o| matches!(o, EventOutcome::Definitive { .. })),
        "{:?}",
        report.outcomes
    );
    assert!(accepted(&s.fake).is_empty());
    // The whole batch, its halves, its quarters (1 + 2 + 4), then one part of 8 halved down to
    // single events: 2 parts of 8, 4, 2 and 1.
    assert_eq!(s.fake.requests().len(), 15);
    assert_eq!(s.fake.counters().refused, 15);
}

/// Every other event invalid refuses every part of every level above single events, which looks
/// like a refusal of the whole payload; single events tell it apart, and every valid event is
/// delivered while only the invalid ones fail.
#[tokio::test]
async fn alternating_invalid_and_valid_events_are_decided_one_by_one() {
    let s = setup().await;
    let sink = HttpSink::new(s.cfg.clone(), static_token(TOKEN)).expect("sink");
    let input = events("alt", 16, 10);
    let refused: Vec<String> = input.iter().step_by(2).map(|e| e.id.clone()).collect();
    s.fake.refuse_events(refused.clone());
    let report = sink.send(&input, None).await;
    assert_only_refused_fail(&input, &report.outcomes, &refused);
    let got = accepted(&s.fake);
    assert_eq!(got.len(), 8, "{got:?}");
    assert!(
        got.values().all(|&n| n == 1),
        "each valid event once: {got:?}"
    );
}

/// A 128 MiB error body is read only up to the cap: the fake hands over at most the cap plus what
/// socket and flow-control buffers take, and the answer still counts by its status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_error_body_is_read_only_up_to_the_cap() {
    const HUGE: u64 = 128 << 20;
    let s = setup().await;
    let mut cfg = s.cfg.clone();
    // Long enough that reading the whole body would finish rather than time out.
    cfg.timeout = Duration::from_secs(60);
    let sink = HttpSink::new(cfg, static_token(TOKEN)).expect("sink");
    s.fake.push_faults([Fault::HugeBody {
        status: 403,
        bytes: HUGE,
    }]);
    let input = events("huge", 3, 10);
    let report = sink.send(&input, None).await;
    for o in &report.outcomes {
        assert!(
            matches!(o, EventOutcome::Definitive { reason } if reason.contains("403")),
            "{o:?}"
        );
    }
    let served = s.fake.counters().error_body_bytes;
    assert!(
        served < 16 << 20,
        "{served} bytes of the error body were read: more than the cap plus buffers"
    );
}

/// A token source whose stored value can be rotated, counting refreshes.
#[derive(Debug)]
struct Rotating {
    current: Mutex<String>,
    stored: Mutex<String>,
    refreshes: AtomicU32,
}

#[async_trait]
impl TokenSource for Rotating {
    async fn token(&self) -> Result<Secret, SinkHttpError> {
        Ok(Secret::new(self.current.lock().expect("lock").clone()))
    }
    async fn refresh(&self) -> Result<Refresh, SinkHttpError> {
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        let stored = self.stored.lock().expect("lock").clone();
        *self.current.lock().expect("lock") = stored;
        Ok(Refresh::Reloaded)
    }
}

#[tokio::test]
async fn unauthorized_refreshes_the_token_once_then_succeeds() {
    let s = setup().await;
    let tokens = Arc::new(Rotating {
        current: Mutex::new("dt0c01.OLD".into()),
        stored: Mutex::new(TOKEN.into()),
        refreshes: AtomicU32::new(0),
    });
    let sink = HttpSink::new(s.cfg.clone(), tokens.clone()).expect("sink");
    let input = events("rotate", 5, 10);
    let report = sink.send(&input, None).await;
    assert_all_sent_once(&s.fake, &input, &report.outcomes);
    assert_eq!(tokens.refreshes.load(Ordering::SeqCst), 1);
    let statuses: Vec<Option<u16>> = s.fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![Some(401), Some(202)]);
}

#[tokio::test]
async fn unauthorized_with_a_token_that_cannot_change_is_definitive_after_one_request() {
    let s = setup().await;
    let sink = HttpSink::new(s.cfg.clone(), static_token("dt0c01.WRONG")).expect("sink");
    let input = events("wrong", 3, 10);
    let report = sink.send(&input, None).await;
    for o in &report.outcomes {
        assert!(
            matches!(o, EventOutcome::Definitive { reason } if reason.contains("401")),
            "{o:?}"
        );
    }
    assert_eq!(s.fake.counters().requests, 1);
    assert!(s.fake.event_ids().is_empty());
}

#[tokio::test]
async fn retry_after_in_seconds_and_as_a_date_is_honoured() {
    let s = setup().await;
    s.fake.push_faults([
        Fault::TooManyRequests(Some(RetryAfter::Seconds(1))),
        Fault::TooManyRequests(Some(RetryAfter::HttpDateIn(Duration::from_secs(1)))),
    ]);
    let sink = HttpSink::new(s.cfg.clone(), static_token(TOKEN)).expect("sink");
    let input = events("after", 3, 10);
    let report = sink.send(&input, None).await;
    assert_all_sent_once(&s.fake, &input, &report.outcomes);
    assert_eq!(report.stats.throttled, 2);
    let reqs = s.fake.requests();
    assert_eq!(reqs.len(), 3);
    for pair in reqs.windows(2) {
        let not_before = pair[0]
            .retry_not_before
            .expect("the fake stated Retry-After");
        assert!(
            pair[1].received_wall >= not_before,
            "retry at {:?} came before {:?}",
            pair[1].received_wall,
            not_before
        );
    }
}

#[tokio::test]
async fn deadline_leaves_unsent_batches_retryable() {
    let s = setup().await;
    let mut faults = vec![Fault::Pass];
    faults.extend(std::iter::repeat_n(Fault::Status(503), 200));
    s.fake.push_faults(faults);
    let mut cfg = s.cfg.clone();
    cfg.max_batch_events = 5;
    cfg.max_in_flight = 1;
    // Enough attempts that the deadline, not the attempt limit, ends the retries: with full
    // jitter, 20 attempts' waits can add up to less than the 1.5 s below.
    cfg.retry.max_attempts = 1000;
    let sink = HttpSink::new(cfg, static_token(TOKEN)).expect("sink");
    let input = events("deadline", 15, 10);
    let deadline = Instant::now() + Duration::from_millis(1500);
    let report = sink.send(&input, Some(deadline)).await;
    assert_first_sent_rest_retryable(&report.outcomes, 5, "deadline");
    assert_eq!(accepted(&s.fake).len(), 5);
}

#[tokio::test]
async fn endpoint_down_leaves_everything_retryable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut cfg = HttpSinkConfig::new(
        &format!("https://127.0.0.1:{port}/platform/ingest/v1/security.events"),
        false,
    )
    .expect("config");
    cfg.retry = RetryConfig {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        ..RetryConfig::default()
    };
    let sink = HttpSink::new(cfg, static_token(TOKEN)).expect("sink");
    let input = events("down", 7, 10);
    let report = sink
        .send(&input, Some(Instant::now() + Duration::from_secs(3)))
        .await;
    assert_eq!(report.outcomes.len(), 7);
    for o in &report.outcomes {
        assert!(
            matches!(o, EventOutcome::Retryable { reason } if reason.contains("connection")),
            "{o:?}"
        );
    }
    assert_eq!(report.stats.events_sent, 0);
    assert!(report.stats.requests >= 2, "retried: {:?}", report.stats);
}

/// The events limit as Dynatrace observes it, counted from the fake's arrival log: in no second
/// do more events arrive than the rate plus one batch (the burst), retries included: a batch
/// answered 503 or 429 spends the budget again when it is resent. (How close the sender gets to
/// the limit is measured by the sender benchmark, not asserted here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_spend_the_events_per_second_budget() {
    let s = setup().await;
    s.fake.set_random_faults(
        0.3,
        7,
        vec![Fault::Status(503), Fault::TooManyRequests(None)],
    );
    let mut cfg = s.cfg.clone();
    cfg.max_batch_events = 20;
    cfg.max_events_per_second = std::num::NonZeroU32::new(200);
    let sink = HttpSink::new(cfg, static_token(TOKEN)).expect("sink");
    let input = events("rate", 600, 10);
    let report = sink.send(&input, None).await;
    assert_all_sent_once(&s.fake, &input, &report.outcomes);
    let c = s.fake.counters();
    assert!(c.faults >= 3, "batches were retried: {c:?}");
    let arrived: usize = s.fake.requests().iter().map(|r| r.events).sum();
    assert!(arrived > 600, "retries resent events: {arrived}");
    // Over 2 s: two seconds' worth plus the burst, plus a tenth of a second's worth for arrival
    // jitter on a loaded machine. Retries left uncharged (30% of batches resent) would exceed it.
    let peak = s.fake.max_sent_in_window(Duration::from_secs(2));
    assert!(
        peak <= 2 * 200 + 20 + 20,
        "{peak} events arrived within 2 s, retries included, at 200/s with a burst of 20"
    );
}

/// The requests limit (no burst) and the in-flight limit, counted from the fake's arrival log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_second_and_in_flight_limits_are_never_exceeded() {
    let s = setup().await;
    // The first three requests are slow, so three are in flight at once if the sender allows it.
    s.fake.push_faults(std::iter::repeat_n(
        Fault::Slow(Duration::from_millis(300)),
        3,
    ));
    let mut cfg = s.cfg.clone();
    cfg.max_batch_events = 2;
    cfg.max_in_flight = 3;
    cfg.max_requests_per_second = std::num::NonZeroU32::new(10);
    let sink = HttpSink::new(cfg, static_token(TOKEN)).expect("sink");
    let input = events("reqs", 60, 10);
    let report = sink.send(&input, None).await;
    assert_all_sent_once(&s.fake, &input, &report.outcomes);
    let requests = s.fake.counters().requests;
    assert!(requests >= 33, "30 batches and 3 retries: {requests}");
    // Over 2 s: two seconds' worth plus one (no burst), plus two for arrival jitter; unlimited,
    // the 33 requests would arrive within a second.
    let peak = s.fake.max_requests_in_window(Duration::from_secs(2));
    assert!(peak <= 2 * 10 + 1 + 2, "{peak} requests within 2 s at 10/s");
    let in_flight = s.fake.max_concurrent_requests();
    assert!(
        in_flight <= 3,
        "{in_flight} requests in flight at a limit of 3"
    );
    assert!(in_flight >= 2, "the slow requests overlapped: {in_flight}");

    // One in flight: never two requests at the fake at once.
    let s = setup().await;
    s.fake.push_faults(std::iter::repeat_n(
        Fault::Slow(Duration::from_millis(100)),
        3,
    ));
    let mut cfg = s.cfg.clone();
    cfg.max_batch_events = 2;
    cfg.max_in_flight = 1;
    let sink = HttpSink::new(cfg, static_token(TOKEN)).expect("sink");
    let input = events("serial", 10, 10);
    let report = sink.send(&input, None).await;
    assert_all_sent_once(&s.fake, &input, &report.outcomes);
    assert_eq!(s.fake.max_concurrent_requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_share_divides_the_global_limit() {
    let s = setup().await;
    let mut cfg = s.cfg.clone();
    cfg.max_batch_events = 1000;
    cfg.max_events_per_second = std::num::NonZeroU32::new(400);
    cfg.max_concurrency = std::num::NonZeroU32::new(4).expect("4");
    let sink = HttpSink::new(cfg, static_token(TOKEN)).expect("sink");
    // This process may send 100 events/s, so batches are capped at 100 events.
    assert_eq!(sink.effective_max_batch_events(), 100);
    let input = events("share", 300, 10);
    let report = sink.send(&input, None).await;
    assert_all_sent_once(&s.fake, &input, &report.outcomes);
    assert!(s.fake.max_accepted_in_window(Duration::from_secs(1)) <= 200);
}

/// A source whose refresh is always refused as too soon (a rotation within the refresh interval).
#[derive(Debug)]
struct RefreshTooSoon;

#[async_trait]
impl TokenSource for RefreshTooSoon {
    async fn token(&self) -> Result<Secret, SinkHttpError> {
        Ok(Secret::new("dt0c01.STALE"))
    }
    async fn refresh(&self) -> Result<Refresh, SinkHttpError> {
        Ok(Refresh::TooSoon)
    }
}

#[tokio::test]
async fn unauthorized_while_refresh_is_too_soon_leaves_events_retryable() {
    let s = setup().await;
    let sink = HttpSink::new(s.cfg.clone(), Arc::new(RefreshTooSoon)).expect("sink");
    let report = sink.send(&events("soon", 2, 10), None).await;
    for o in &report.outcomes {
        assert!(
            matches!(o, EventOutcome::Retryable { reason } if reason.contains("401")),
            "{o:?}"
        );
    }
    assert_eq!(s.fake.counters().requests, 1);
}

/// The stop signal (the CLI's Ctrl-C) ends a `Retry-After` wait at once: the batch already
/// accepted stays sent (its answer was awaited, so it is committed, not resent), the waiting and
/// the never-started batches are retryable as "stopped", and no request starts after the stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_ends_waits_but_keeps_what_was_accepted() {
    let s = setup().await;
    let mut faults = vec![Fault::Pass];
    faults.extend(std::iter::repeat_n(
        Fault::TooManyRequests(Some(RetryAfter::Seconds(60))),
        50,
    ));
    s.fake.push_faults(faults);
    let mut cfg = s.cfg.clone();
    cfg.max_batch_events = 5;
    cfg.max_in_flight = 1;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sink = Arc::new(
        HttpSink::new(cfg, static_token(TOKEN))
            .expect("sink")
            .with_stop(stopped),
    );
    let input = events("stop", 15, 10);
    let send = tokio::spawn({
        let (sink, input) = (Arc::clone(&sink), input.clone());
        async move { sink.send(&input, None).await }
    });
    // The second batch got its 429: the sender now waits a minute.
    for _ in 0..400 {
        if s.fake.counters().requests >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.fake.counters().requests, 2, "one accepted, one throttled");
    stop.send_replace(true);
    // Bounded wait, not a speed measurement: without the stop this takes a minute per retry.
    let report = tokio::time::timeout(Duration::from_secs(30), send)
        .await
        .expect("the stopped send still waited out Retry-After")
        .expect("join");
    assert_first_sent_rest_retryable(&report.outcomes, 5, "stopped");
    assert_eq!(report.stats.requests, 2);
    assert_eq!(report.stats.events_sent, 5);
    assert_eq!(s.fake.counters().requests, 2, "no request after the stop");
    assert_eq!(accepted(&s.fake).len(), 5);
}
