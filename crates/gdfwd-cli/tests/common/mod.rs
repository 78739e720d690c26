//! Helpers the CLI's end-to-end tests share: the fixtures, a `gdfwd` command with a private state
//! directory, waiting for a fake to see traffic, and interrupting a running `gdfwd` the way a user
//! (SIGINT) or a service manager (SIGTERM) does.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The shared GuardDuty fixtures (`tests/fixtures/guardduty`).
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/guardduty")
}

/// `gdfwd` reading `input` in a dry run without the store, archived findings included (the
/// fixtures hold some; these runs are about reading), with `extra` options and the JSON summary
/// written to `summary`.
pub fn dry_run_command(state: &Path, summary: &Path, extra: &[&str], input: &str) -> Command {
    let mut args = vec![
        "forward",
        "--dry-run",
        "--no-dedup",
        "--archived",
        "include",
        "--summary",
        summary.to_str().expect("utf8"),
    ];
    args.extend_from_slice(extra);
    args.push(input);
    gdfwd(&args, state)
}

/// The built `gdfwd` with `args`, its default store under `state`, and none of the environment
/// variables that would point it elsewhere (store, endpoint, secret, token, format, log filter).
pub fn gdfwd(args: &[&str], state: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gdfwd"));
    cmd.args(args)
        .env("XDG_STATE_HOME", state)
        .env_remove("GDFWD_STORE")
        .env_remove("DYNATRACE_OPENPIPELINE_SECURITY_ENDPOINT")
        .env_remove("AWS_SECRET_ARN")
        .env_remove("DT_API_TOKEN")
        .env_remove("PAYLOAD_FORMAT")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

/// Polls `cond` every 25 ms for up to 10 s; panics naming `what` if it never holds.
pub async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..400 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(cond(), "{what}");
}

/// Sends SIGINT to `child`, as Ctrl-C does.
pub fn interrupt(child: &Child) {
    signal(child, "INT");
}

/// Interrupts `child` (SIGINT) and waits for it to end: its exit status and captured output.
pub async fn interrupt_and_wait(child: Child) -> std::process::Output {
    interrupt(&child);
    tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait")
}

/// Sends `SIG<name>` (`INT`, `TERM`, ...) to `child`.
pub fn signal(child: &Child, name: &str) {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("kill")
            .success(),
        "kill -{name} {pid}"
    );
}

/// Starts `cmd` with stderr captured (for the summary and messages) and stdout discarded.
pub fn spawn(cmd: &mut Command) -> Child {
    cmd.stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn gdfwd")
}

/// `gdfwd forward FILE` sending to `fake` (token `tok`, its CA), with `extra` options. With
/// `--archived include`: the tests using it are about delivery, and the fixtures hold archived
/// findings, which the default filter drops (the filters have tests of their own).
pub fn forward_to(
    fake: &gdfwd_testkit_openpipeline::FakeOpenPipeline,
    ca: &Path,
    state: &Path,
    extra: &[&str],
    file: &Path,
) -> Command {
    let options: Vec<&str> = ["--archived", "include"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    forward_with_default_filter(fake, ca, state, &options, file)
}

/// [`forward_to`] with the default filter (archived findings dropped): for the filter tests.
pub fn forward_with_default_filter(
    fake: &gdfwd_testkit_openpipeline::FakeOpenPipeline,
    ca: &Path,
    state: &Path,
    extra: &[&str],
    file: &Path,
) -> Command {
    let mut c = gdfwd(
        &[
            "forward",
            "--endpoint",
            &fake.endpoint(),
            "--ca-file",
            ca.to_str().expect("utf8"),
            "--no-enrich",
        ],
        state,
    );
    c.args(extra).arg(file).env("DT_API_TOKEN", "tok");
    c
}

/// Asserts that `fake` received no event twice (event ids are per finding version and object),
/// and returns the distinct finding ids it received, sorted.
pub fn delivered_once(fake: &gdfwd_testkit_openpipeline::FakeOpenPipeline) -> Vec<String> {
    let mut ids = fake.event_ids();
    let events = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), events, "an event arrived twice");
    let mut findings: Vec<String> = fake
        .events()
        .iter()
        .filter_map(|e| e.body["detail"]["id"].as_str().map(str::to_owned))
        .collect();
    findings.sort();
    findings.dedup();
    findings
}

/// Asserts that the store under `state` holds no claim (`audit list --status pending` is empty):
/// what an interrupted run had in flight was released.
pub fn assert_nothing_pending(state: &Path) {
    let pending = gdfwd(
        &["audit", "list", "--status", "pending", "--output", "json"],
        state,
    )
    .output()
    .expect("audit");
    assert_eq!(String::from_utf8_lossy(&pending.stdout).trim(), "[]");
}
