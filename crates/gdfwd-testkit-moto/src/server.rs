//! Finding or starting the moto_server a test process talks to.
//!
//! The server is started once per process (a `OnceLock`, so parallel tests wait for the same
//! start) through `sh -c` with a watchdog loop: the shell polls the test process's pid and kills
//! moto when the test process is gone, however it ended (even SIGKILL), without any `unsafe`
//! (`prctl(PR_SET_PDEATHSIG)` would need it). If moto itself dies, the shell exits too, which is
//! how a failed start (e.g. the port was taken in between) is noticed and retried on a new port.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// When set (CI's `.ci/run` does), the moto endpoint every test uses; nothing is started.
pub const ENDPOINT_ENV: &str = "GDFWD_TEST_MOTO_ENDPOINT";

/// How long moto may take to answer after start (importing moto is slow on a loaded machine).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

const INSTALL_HINT: &str = "install it with `pip install 'moto[server]'` (moto 5.x) so that `moto_server` is on PATH, \
     or set GDFWD_TEST_MOTO_ENDPOINT to a running moto_server's URL";

static ENDPOINT: OnceLock<String> = OnceLock::new();
/// Keeps the watchdog shell's handle (so it is not a zombie we forgot about).
static CHILD: Mutex<Option<Child>> = Mutex::new(None);

/// The URL (`http://127.0.0.1:PORT`, no trailing slash) of a running moto_server for this test
/// process: [`ENDPOINT_ENV`] when set, else one started on first use.
///
/// # Panics
/// When moto cannot be started or does not answer within 90 s: tests must fail, not skip.
pub fn endpoint() -> String {
    ENDPOINT.get_or_init(find_or_start).clone()
}

fn find_or_start() -> String {
    if let Ok(url) = std::env::var(ENDPOINT_ENV) {
        let url = url.trim().trim_end_matches('/').to_owned();
        if !url.is_empty() {
            let deadline = Instant::now() + READY_TIMEOUT;
            loop {
                if answers(&url) {
                    return url;
                }
                if Instant::now() > deadline {
                    panic!(
                        "{ENDPOINT_ENV}={url} is set but nothing answers GET {url}/moto-api/ within {READY_TIMEOUT:?}; \
                         start moto with `moto_server -H 127.0.0.1 -p PORT` or unset the variable"
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    let mut failures = Vec::new();
    for _attempt in 0..3 {
        match start_local() {
            Ok(url) => return url,
            Err(why) => failures.push(why),
        }
    }
    panic!(
        "could not start `moto_server -H 127.0.0.1 -p PORT` for the tests: {}; {INSTALL_HINT}",
        failures.join("; then: ")
    );
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("binding 127.0.0.1:0: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("reading the bound port: {e}"))
}

fn log_path(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("gdfwd-moto-{}-{port}.log", std::process::id()))
}

/// The watchdog: `$1` port, `$2` pid of the test process, `$3` log file.
const SCRIPT: &str = r#"
command -v moto_server >/dev/null 2>&1 || { echo "moto_server: command not found" >"$3"; exit 127; }
moto_server -H 127.0.0.1 -p "$1" >"$3" 2>&1 &
child=$!
while kill -0 "$2" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 1; done
kill "$child" 2>/dev/null
wait "$child"
"#;

fn start_local() -> Result<String, String> {
    let port = free_port()?;
    let log = log_path(port);
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("gdfwd-moto-watchdog")
        .arg(port.to_string())
        .arg(std::process::id().to_string())
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawning `sh -c` to run moto_server: {e}"))?;
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if answers(&url) {
            if let Ok(mut slot) = CHILD.lock() {
                *slot = Some(child);
            }
            return Ok(url);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: String = tail
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            return Err(format!(
                "moto_server on port {port} exited ({status}) before answering; its output ({}):\n{tail}",
                log.display()
            ));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!(
                "moto_server on port {port} did not answer GET {url}/moto-api/ within {READY_TIMEOUT:?} (output in {})",
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether an HTTP server answers `GET /moto-api/` at `url` (any HTTP status counts).
fn answers(url: &str) -> bool {
    let Some(hostport) = url
        .strip_prefix("http://")
        .map(|r| r.split('/').next().unwrap_or(r))
    else {
        return false;
    };
    let Ok(addrs) = std::net::ToSocketAddrs::to_socket_addrs(hostport) else {
        return false;
    };
    for addr in addrs {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let req = format!("GET /moto-api/ HTTP/1.0\r\nHost: {hostport}\r\n\r\n");
        if s.write_all(req.as_bytes()).is_err() {
            continue;
        }
        let mut buf = [0u8; 12];
        if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") {
            return true;
        }
    }
    false
}
