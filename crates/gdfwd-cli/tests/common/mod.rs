//! Helpers the CLI's end-to-end tests share: waiting for a fake to see traffic, and interrupting
//! a running `gdfwd` the way a user (SIGINT) or a service manager (SIGTERM) does.

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
    signal(child, "INT");
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
