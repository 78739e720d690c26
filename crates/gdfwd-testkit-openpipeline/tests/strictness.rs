//! The fake refuses what real Dynatrace refuses, with its status codes, and its lost-answer fault
//! keeps the events it accepted: a sender tested against it cannot rely on a leniency or an
//! exactly-once the real endpoint does not have.

use gdfwd_testkit_openpipeline::{FakeOpenPipeline, Fault, SECURITY_EVENTS_PATH};

const TOKEN: &str = "strict-token";

/// Posts `body` with `content_type` to `path` over plain HTTP; the status, or `None` when the
/// connection closed without an answer.
async fn post(fake: &FakeOpenPipeline, path: &str, content_type: &str, body: &str) -> Option<u16> {
    reqwest::Client::new()
        .post(fake.http_url(path))
        .header("authorization", format!("Api-Token {TOKEN}"))
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

#[tokio::test]
async fn only_json_event_objects_posted_to_a_security_events_path_are_accepted() {
    let fake = FakeOpenPipeline::start(TOKEN).await.expect("fake");
    let json = "application/json";
    let cases: &[(&str, &str, &str, u16)] = &[
        (SECURITY_EVENTS_PATH, json, r#"{"uuid":"a"}"#, 202),
        (
            SECURITY_EVENTS_PATH,
            "application/json; charset=utf-8",
            r#"[{"uuid":"b"},{"uuid":"c"}]"#,
            202,
        ),
        (
            SECURITY_EVENTS_PATH,
            "Application/JSON;charset=UTF-8",
            "[]",
            202,
        ),
        (
            "/platform/ingest/v1/events.security",
            json,
            r#"{"uuid":"d"}"#,
            202,
        ),
        (
            "/platform/ingest/custom/security.events/guardduty",
            json,
            r#"{"uuid":"e"}"#,
            202,
        ),
        ("/platform/ingest/v1/events", json, r#"{"uuid":"x"}"#, 404),
        (
            "/platform/ingest/v1/security.events/extra",
            json,
            r#"{"uuid":"x"}"#,
            404,
        ),
        (
            "/platform/ingest/custom/security.events/",
            json,
            r#"{"uuid":"x"}"#,
            404,
        ),
        ("/", json, r#"{"uuid":"x"}"#, 404),
        (SECURITY_EVENTS_PATH, "text/plain", r#"{"uuid":"x"}"#, 415),
        (
            SECURITY_EVENTS_PATH,
            "application/x-ndjson",
            r#"{"uuid":"x"}"#,
            415,
        ),
        (SECURITY_EVENTS_PATH, json, r#""a string""#, 400),
        (SECURITY_EVENTS_PATH, json, "42", 400),
        (SECURITY_EVENTS_PATH, json, r#"[{"uuid":"x"}, 1]"#, 400),
        (SECURITY_EVENTS_PATH, json, r#"[[{"uuid":"x"}]]"#, 400),
        (SECURITY_EVENTS_PATH, json, r#"{"uuid":"#, 400),
    ];
    for (path, ct, body, want) in cases {
        assert_eq!(
            post(&fake, path, ct, body).await,
            Some(*want),
            "{path} {ct} {body}"
        );
    }
    let mut ids = fake.event_ids();
    ids.sort();
    assert_eq!(
        ids,
        ["a", "b", "c", "d", "e"],
        "only accepted events are recorded"
    );
    assert_eq!(fake.counters().malformed, 11);

    let resp = reqwest::Client::new()
        .get(fake.http_url(SECURITY_EVENTS_PATH))
        .header("authorization", format!("Api-Token {TOKEN}"))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status().as_u16(), 405);
    // The error body is Dynatrace's envelope.
    let body: serde_json::Value =
        serde_json::from_str(&resp.text().await.expect("body")).expect("JSON error");
    assert_eq!(body["error"]["code"], 405);
}

#[tokio::test]
async fn accept_then_drop_records_the_events_and_loses_the_answer() {
    let fake = FakeOpenPipeline::start(TOKEN).await.expect("fake");
    fake.push_faults([Fault::AcceptThenDrop, Fault::AcceptThenDrop]);
    let json = "application/json";
    // Accepted, then no answer: the events are in, the sender cannot know it.
    assert_eq!(
        post(&fake, SECURITY_EVENTS_PATH, json, r#"[{"uuid":"a"}]"#).await,
        None
    );
    assert_eq!(fake.event_ids(), ["a"]);
    // A refused request is answered as usual, even under the fault.
    assert_eq!(
        post(&fake, SECURITY_EVENTS_PATH, "text/plain", r#"{"uuid":"b"}"#).await,
        Some(415)
    );
    // The resend of "a" arrives a second time.
    assert_eq!(
        post(&fake, SECURITY_EVENTS_PATH, json, r#"[{"uuid":"a"}]"#).await,
        Some(202)
    );
    assert_eq!(fake.event_ids(), ["a", "a"]);
    let reqs = fake.requests();
    assert_eq!(reqs[0].status, Some(202));
    assert_eq!(reqs[0].fault, Some(Fault::AcceptThenDrop));
    assert_eq!(fake.counters().accepted_requests, 2);
}
