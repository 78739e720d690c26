//! Helpers the CLI's end-to-end tests share: waiting for a fake to see traffic, and interrupting
//! a running `gdfwd` the way a user does (SIGINT), and starting it with a clean environment.

// Each test binary compiles this module and uses only some of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill")
            .success(),
        "kill -INT {pid}"
    );
}

/// Starts `cmd` with stderr captured (for the summary and messages) and stdout discarded.
pub fn spawn(cmd: &mut Command) -> Child {
    cmd.stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn gdfwd")
}

/// `gdfwd ARGS` with its state (the SQLite store) under `env_store` and none of the user's
/// environment that would change what it does (store, endpoint, secret, format, log filter).
pub fn gdfwd(args: &[&str], env_store: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gdfwd"));
    cmd.args(args)
        .env("XDG_STATE_HOME", env_store)
        .env_remove("GDFWD_STORE")
        .env_remove("DYNATRACE_OPENPIPELINE_SECURITY_ENDPOINT")
        .env_remove("AWS_SECRET_ARN")
        .env_remove("PAYLOAD_FORMAT")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}
