//! `gdfwd forward s3://BUCKET/PREFIX` end to end: a GuardDuty findings export in moto S3 (3
//! accounts x 2 regions x 3 days), read through a counting, fault-injecting proxy, forwarded to
//! the fake OpenPipeline. A date window leaves whole days unread and single findings out; an
//! interrupted run resumes without fetching the objects it finished and every finding arrives
//! once; a missing bucket and a denied object are errors naming them; a large object whose
//! download breaks is re-opened where it broke, and one that keeps breaking is named and read
//! again by the next run.

use std::path::Path;
use std::process::{Command, Output};

use gdfwd_testkit_moto::{Fault as S3Fault, FaultProxy};
use gdfwd_testkit_openpipeline::{FakeOpenPipeline, Fault};

mod common;
#[path = "common/s3export.rs"]
mod s3export;

use common::{forward_to, gdfwd};

const ACCOUNTS: [&str; 3] = ["111100000001", "111100000002", "111100000003"];
const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];
const DAYS: [&str; 3] = ["2024-03-05", "2024-03-06", "2024-03-07"];
/// Findings per object, updated at 10:00, 10:01, ... of the object's day.
const PER_OBJECT: usize = 5;

/// The window the tests read: all of 03-06, and 03-07 before 10:03 (three findings per object).
const SINCE: &str = "2024-03-06T00:00:00Z";
const UNTIL: &str = "2024-03-07T10:03:00Z";

/// Writes the export tree into a new bucket under `exports/`; returns the bucket, the keys (in
/// listing order) and the ids of the findings inside the window.
async fn export_tree() -> (String, Vec<String>, Vec<String>) {
    let client = s3export::client(&gdfwd_testkit_moto::endpoint()).await;
    let bucket = s3export::bucket_name("gdfwd-export");
    s3export::bucket(&client, &bucket).await;
    let base = s3export::base_findings();
    let (mut keys, mut inside) = (Vec::new(), Vec::new());
    let mut n = 0;
    for account in ACCOUNTS {
        for region in REGIONS {
            for day in DAYS {
                let mut lines = Vec::new();
                for i in 0..PER_OBJECT {
                    let id = format!("s3e{n:06}");
                    let updated = format!("{day}T10:0{i}:00.000Z");
                    if day == "2024-03-06" || (day == "2024-03-07" && i < 3) {
                        inside.push(id.clone());
                    }
                    lines.push(s3export::finding(&base, n, &id, account, region, &updated));
                    n += 1;
                }
                let key = s3export::key("exports/", account, region, day, "a1b2c3");
                s3export::put(&client, &bucket, &key, &lines).await;
                keys.push(key);
            }
        }
    }
    // Not an export object: listed, passed over, never fetched.
    let readme = "exports/AWSLogs/README.txt".to_owned();
    s3export::put(&client, &bucket, &readme, &["not a finding".to_owned()]).await;
    keys.sort();
    inside.sort();
    (bucket, keys, inside)
}

/// `cmd` reading S3 through `proxy`, with moto's test credentials.
fn via(cmd: &mut Command, proxy: &FaultProxy) {
    s3export::aws_env(cmd, &proxy.endpoint());
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run gdfwd")
}

fn summary(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("summary")).expect("json")
}

fn n(s: &serde_json::Value, key: &str) -> u64 {
    s[key].as_u64().unwrap_or_else(|| panic!("no {key}: {s}"))
}

/// The number in "N finished by an earlier run" of a run's planning line.
fn finished_earlier(err: &str) -> u64 {
    err.lines()
        .find_map(|l| {
            let (before, _) = l.split_once(" finished by an earlier run")?;
            before.rsplit(' ').next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no planning line: {err}"))
}

/// GetObject requests the proxy saw for keys under `exports/` containing `part` (a listing is
/// `GET /bucket/` with the prefix in the query, which the proxy does not count in the operation).
fn gets(proxy: &FaultProxy, bucket: &str, part: &str) -> u64 {
    proxy
        .counts()
        .iter()
        .filter(|(op, _)| op.starts_with(&format!("GET /{bucket}/exports/")) && op.contains(part))
        .map(|(_, c)| c)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_export_import_resumes_and_forwards_each_finding_once() {
    let (bucket, keys, inside) = export_tree().await;
    let proxy = FaultProxy::start_moto().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeOpenPipeline::start("tok").await.expect("fake");
    let ca = fake.write_ca_file(dir.path()).expect("ca");
    let url = format!("s3://{bucket}/exports/");
    let sum = dir.path().join("s.json");
    let options = |extra: &[&str]| -> Vec<String> {
        let mut o: Vec<String> = [
            "--since",
            SINCE,
            "--until",
            UNTIL,
            "--chunk",
            "5",
            "--max-in-flight",
            "1",
            "--s3-concurrency",
            "2",
            "--summary",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        o.push(sum.to_str().expect("utf8").to_owned());
        o.extend(extra.iter().map(|s| (*s).to_owned()));
        o
    };
    let run = |extra: &[&str]| {
        let o = options(extra);
        let o: Vec<&str> = o.iter().map(String::as_str).collect();
        let mut cmd = forward_to(&fake, &ca, dir.path(), &o, Path::new(&url));
        via(&mut cmd, &proxy);
        cmd
    };

    // Three objects are delivered; the fourth request hangs until the run is interrupted.
    fake.push_faults(
        [Fault::Pass, Fault::Pass, Fault::Pass]
            .into_iter()
            .chain((0..50).map(|_| Fault::Slow(std::time::Duration::from_secs(2)))),
    );
    let child = common::spawn(&mut run(&[]));
    common::wait_until("the fourth request never came", || {
        fake.counters().requests >= 4
    })
    .await;
    let out = common::interrupt_and_wait(child).await;
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "s3://{bucket}/exports/: 12 export object(s) selected (6 outside --since/--until, 0 of other accounts or regions, 1 not export objects, passed over); 0 finished by an earlier run"
        )),
        "{err}"
    );
    assert_eq!(
        gets(&proxy, &bucket, "/2024/03/05/"),
        0,
        "a day outside the window was read"
    );
    common::assert_nothing_pending(dir.path());

    // The resumed run fetches only the objects the first did not finish.
    fake.clear_faults();
    proxy.reset_counts();
    let out = output(run(&[])).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let finished = finished_earlier(&err);
    assert!((3..12).contains(&finished), "{err}");
    assert_eq!(gets(&proxy, &bucket, "/"), 12 - finished, "{err}");

    // Every finding of the window arrived, each event once; none outside it.
    assert_eq!(common::delivered_once(&fake), inside);

    // The second run read the objects after the finished ones, in key order: their findings
    // inside the window were forwarded, the two per 03-07 object after 10:03 skipped.
    let selected: Vec<&String> = keys
        .iter()
        .filter(|k| k.contains("/2024/03/06/") || k.contains("/2024/03/07/"))
        .collect();
    let unread = &selected[usize::try_from(finished).expect("small")..];
    let late = unread.iter().filter(|k| k.contains("/2024/03/07/")).count() as u64;
    let s = summary(&sum);
    assert_eq!(
        (n(&s, "forwarded"), n(&s, "skipped"), n(&s, "duplicates")),
        (unread.len() as u64 * 5 - 2 * late, 2 * late, 0),
        "{s}"
    );

    // Nothing was ever fetched from the day before the window, nor the non-export object.
    proxy.reset_counts();
    let out = output(run(&[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(finished_earlier(&stderr(&out)), 12, "{}", stderr(&out));
    assert_eq!(
        gets(&proxy, &bucket, "/"),
        0,
        "a finished object was fetched again"
    );
    assert_eq!(summary(&sum)["received"].as_u64(), Some(0));

    // --no-resume reads the window again; the store still sends nothing twice.
    let out = output(run(&["--no-resume"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = summary(&sum);
    assert_eq!(
        (n(&s, "forwarded"), n(&s, "duplicates")),
        (0, inside.len() as u64),
        "{s}"
    );
    assert_eq!(gets(&proxy, &bucket, "/2024/03/05/"), 0);
    assert_eq!(gets(&proxy, &bucket, "README"), 0);
    assert_eq!(gets(&proxy, &bucket, "/"), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_and_regions_are_listed_by_prefix() {
    let (bucket, _, _) = export_tree().await;
    let proxy = FaultProxy::start_moto().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sum = dir.path().join("s.json");
    let url = format!("s3://{bucket}/exports/");
    let selection = ["--accounts", ACCOUNTS[1], "--regions", "eu-west-1"];
    let mut cmd = common::dry_run_command(dir.path(), &sum, &selection, &url);
    via(&mut cmd, &proxy);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(n(&summary(&sum), "forwarded"), 3 * PER_OBJECT as u64);
    // Only the one prefix was listed: no key of another account, region or kind came back.
    assert!(
        stderr(&out).contains("3 export object(s) selected (0 outside --since/--until, 0 of other accounts or regions, 0 not export objects"),
        "{}",
        stderr(&out)
    );
    let expected = format!("/{}/GuardDuty/eu-west-1/", ACCOUNTS[1]);
    assert_eq!(gets(&proxy, &bucket, &expected), 3);
    assert_eq!(gets(&proxy, &bucket, "AWSLogs/"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_object_is_named_and_the_others_are_read() {
    let (bucket, keys, _) = export_tree().await;
    let proxy = FaultProxy::start_moto().await;
    let denied = &keys[4];
    proxy.fail_always(
        S3Fault::AccessDenied,
        Some(&format!("GET /{bucket}/{denied}")),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeOpenPipeline::start("tok").await.expect("fake");
    let ca = fake.write_ca_file(dir.path()).expect("ca");
    let sum = dir.path().join("s.json");
    let url = format!("s3://{bucket}/exports/");
    let run = || {
        let options = ["--summary", sum.to_str().expect("utf8")];
        let mut cmd = forward_to(&fake, &ca, dir.path(), &options, Path::new(&url));
        via(&mut cmd, &proxy);
        cmd
    };
    let cmd = run();
    let out = output(cmd).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "error: s3://{bucket}/{denied}: access denied (reading it needs s3:GetObject on the object and kms:Decrypt"
        )),
        "{err}"
    );
    assert!(
        !err.contains("testing"),
        "a credential in the output: {err}"
    );
    let s = summary(&sum);
    assert_eq!(n(&s, "forwarded"), 17 * PER_OBJECT as u64, "{s}");
    assert_eq!(n(&s, "invalid"), 1, "{s}");

    // The denied object was not marked finished: a later run reads it (and only it).
    proxy.clear_faults();
    proxy.reset_counts();
    let out = output(run()).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(gets(&proxy, &bucket, "AWSLogs/"), 1);
    assert_eq!(gets(&proxy, &bucket, denied), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_a_usage_error_naming_it() {
    let proxy = FaultProxy::start_moto().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket = s3export::bucket_name("gdfwd-missing");
    let url = format!("s3://{bucket}/exports/");
    let mut cmd = gdfwd(&["forward", "--dry-run", &url], dir.path());
    via(&mut cmd, &proxy);
    let out = output(cmd).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("error: s3://{bucket}: no such bucket")),
        "{err}"
    );

    // S3 options without an s3:// input, and s3:// mixed with a file, are usage errors too.
    let out = gdfwd(
        &["forward", "--dry-run", "--since", "1d", "--sample"],
        dir.path(),
    )
    .output()
    .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("select from an s3:// input"),
        "{}",
        stderr(&out)
    );
    let out = gdfwd(&["forward", "--dry-run", &url, "findings.json"], dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot be mixed"), "{}", stderr(&out));
}

/// A bucket holding one export object of `count` findings, too large to be fetched whole (it is
/// streamed); returns the bucket, the key and the finding ids.
async fn large_object(count: usize) -> (String, String, Vec<String>) {
    let client = s3export::client(&gdfwd_testkit_moto::endpoint()).await;
    let bucket = s3export::bucket_name("gdfwd-large");
    s3export::bucket(&client, &bucket).await;
    let base = s3export::base_findings();
    let mut ids = Vec::new();
    let lines: Vec<String> = (0..count)
        .map(|n| {
            let id = format!("s3l{n:06}");
            ids.push(id.clone());
            let updated = format!("2024-03-06T10:{:02}:{:02}.000Z", n / 60 % 60, n % 60);
            s3export::finding(&base, n, &id, ACCOUNTS[0], REGIONS[0], &updated)
        })
        .collect();
    let key = s3export::key("", ACCOUNTS[0], REGIONS[0], DAYS[1], "large");
    let size = s3export::put_stored(&client, &bucket, &key, &lines).await;
    assert!(
        size > gdfwd_source_s3::PREFETCH_MAX_BYTES,
        "the object ({size} bytes) would be fetched whole"
    );
    ids.sort();
    (bucket, key, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_download_is_reopened_where_it_broke() {
    let (bucket, key, ids) = large_object(700).await;
    let proxy = FaultProxy::start_moto().await;
    // The first answer and the first re-opened one break after 300 kB each.
    proxy.cut_next_bodies(2, 300_000, &format!("GET /{bucket}/{key}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeOpenPipeline::start("tok").await.expect("fake");
    let ca = fake.write_ca_file(dir.path()).expect("ca");
    let sum = dir.path().join("s.json");
    let url = format!("s3://{bucket}/");
    let options = ["--summary", sum.to_str().expect("utf8")];
    let mut cmd = forward_to(&fake, &ca, dir.path(), &options, Path::new(&url));
    via(&mut cmd, &proxy);
    let out = output(cmd).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(common::delivered_once(&fake), ids);
    let s = summary(&sum);
    assert_eq!((n(&s, "forwarded"), n(&s, "invalid")), (700, 0), "{s}");
    // The whole object once, then twice from where it broke.
    assert_eq!(proxy.count(&key), 3, "{:?}", proxy.counts());
    assert_eq!(proxy.faulted(&key), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_that_keeps_breaking_is_named_and_read_again_next_run() {
    let (bucket, key, ids) = large_object(700).await;
    let proxy = FaultProxy::start_moto().await;
    proxy.cut_next_bodies(100, 150_000, &format!("GET /{bucket}/{key}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeOpenPipeline::start("tok").await.expect("fake");
    let ca = fake.write_ca_file(dir.path()).expect("ca");
    let sum = dir.path().join("s.json");
    let url = format!("s3://{bucket}/");
    let run = || {
        let options = ["--summary", sum.to_str().expect("utf8")];
        let mut cmd = forward_to(&fake, &ca, dir.path(), &options, Path::new(&url));
        via(&mut cmd, &proxy);
        cmd
    };
    let out = output(run()).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("s3://{bucket}/{key}: the download broke at byte")),
        "{err}"
    );
    // The first answer and three re-opened ones, each cut.
    assert_eq!(proxy.count(&key), 4, "{:?}", proxy.counts());
    let s = summary(&sum);
    let first = n(&s, "forwarded");
    assert!(first > 0 && first < 700, "{s}");
    assert_eq!(n(&s, "invalid"), 1, "{s}");

    // Not marked finished: the next run reads it again and forwards the rest, nothing twice.
    proxy.clear_faults();
    let out = output(run()).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = summary(&sum);
    assert_eq!(
        (n(&s, "forwarded"), n(&s, "duplicates")),
        (700 - first, first),
        "{s}"
    );
    assert_eq!(common::delivered_once(&fake), ids);
}

const ADMIN: &str = "222200000000";
const MEMBERS: [&str; 2] = ["222200000001", "222200000002"];

/// An organization's export: every object is in the delegated administrator's folder and holds
/// the administrator's and both members' findings (2 of each per object, 2 regions x 2 days).
/// Returns the bucket.
async fn org_export_tree() -> String {
    let client = s3export::client(&gdfwd_testkit_moto::endpoint()).await;
    let bucket = s3export::bucket_name("gdfwd-org-export");
    s3export::bucket(&client, &bucket).await;
    let base = s3export::base_findings();
    let mut n = 0;
    for region in REGIONS {
        for day in &DAYS[..2] {
            let mut lines = Vec::new();
            for account in [ADMIN, MEMBERS[0], MEMBERS[1]] {
                for i in 0..2 {
                    let id = format!("org{n:06}");
                    let updated = format!("{day}T11:0{i}:00.000Z");
                    lines.push(s3export::finding(&base, n, &id, account, region, &updated));
                    n += 1;
                }
            }
            let key = s3export::key("", ADMIN, region, day, "0rg0");
            s3export::put(&client, &bucket, &key, &lines).await;
        }
    }
    bucket
}

/// A dry run over the organization's export with `selection`: its exit code, summary, stderr.
async fn org_run(bucket: &str, selection: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let proxy = FaultProxy::start_moto().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sum = dir.path().join("s.json");
    let url = format!("s3://{bucket}/");
    let mut cmd = common::dry_run_command(dir.path(), &sum, selection, &url);
    via(&mut cmd, &proxy);
    let out = output(cmd).await;
    (out.status.code(), summary(&sum), stderr(&out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organization_export_selects_members_by_include_account_and_says_so() {
    let bucket = org_export_tree().await;
    // 4 objects x 2 findings of each account.
    let per_account = 4 * 2;

    // A member's id selects no folder: nothing is read, and the run says what to give instead.
    let (code, s, err) = org_run(&bucket, &["--accounts", MEMBERS[0]]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(n(&s, "forwarded"), 0, "{s}");
    let warning = err
        .lines()
        .find(|l| l.starts_with("warning:") && l.contains(&format!("--accounts {}", MEMBERS[0])))
        .unwrap_or_else(|| panic!("no warning naming the member: {err}"));
    assert!(
        warning.contains(&format!("--include-account {}", MEMBERS[0])),
        "{warning}"
    );

    // --include-account reads the administrator's folder and keeps the member's findings.
    let (code, s, err) = org_run(&bucket, &["--include-account", MEMBERS[0]]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(n(&s, "forwarded"), per_account, "{s}");
    assert_eq!(n(&s, "filtered"), 2 * per_account, "{s}");
    assert!(!err.contains("warning:"), "{err}");

    // The administrator's id reads its folder and keeps only its own findings.
    let (code, s, err) = org_run(&bucket, &["--accounts", ADMIN]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(n(&s, "forwarded"), per_account, "{s}");
    assert_eq!(n(&s, "skipped"), 2 * per_account, "{s}");
    assert!(!err.contains("warning:"), "{err}");
}

/// A run that left findings out of the objects it finished (`--accounts ADMIN` on an
/// organization's export) does not make a wider run skip them: the wider run reads the objects
/// again and sends the members' findings; a run selecting no more than the first skips them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_finished_under_a_narrower_selection_are_read_again_by_a_wider_one() {
    let bucket = org_export_tree().await;
    let proxy = FaultProxy::start_moto().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeOpenPipeline::start("tok").await.expect("fake");
    let ca = fake.write_ca_file(dir.path()).expect("ca");
    let url = format!("s3://{bucket}/");
    let sum = dir.path().join("s.json");
    let run = |extra: &[&str]| {
        let mut o = vec!["--summary", sum.to_str().expect("utf8")];
        o.extend_from_slice(extra);
        let mut cmd = forward_to(&fake, &ca, dir.path(), &o, Path::new(&url));
        via(&mut cmd, &proxy);
        output(cmd)
    };
    let per_account = 4 * 2;

    let out = run(&["--accounts", ADMIN]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = summary(&sum);
    assert_eq!(
        (n(&s, "forwarded"), n(&s, "skipped")),
        (per_account, 2 * per_account),
        "{s}"
    );

    // The same selection again: every object finished, none fetched.
    proxy.reset_counts();
    let out = run(&["--accounts", ADMIN]).await;
    assert_eq!(finished_earlier(&stderr(&out)), 4, "{}", stderr(&out));
    assert_eq!(gets(&proxy, &bucket, "AWSLogs/"), 0);

    // No --accounts selects more: every object is read again and the members' findings sent.
    let out = run(&[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(finished_earlier(&stderr(&out)), 0, "{}", stderr(&out));
    let s = summary(&sum);
    assert_eq!(
        (n(&s, "forwarded"), n(&s, "duplicates")),
        (2 * per_account, per_account),
        "{s}"
    );
    assert_eq!(common::delivered_once(&fake).len() as u64, 3 * per_account);

    // That run took every finding: its objects are finished for any selection.
    let out = run(&["--accounts", MEMBERS[0]]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(&[]).await;
    assert_eq!(finished_earlier(&stderr(&out)), 4, "{}", stderr(&out));
}
