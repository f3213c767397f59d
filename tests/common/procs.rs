//! Real processes (the `wsfault` binary, `docker`, `docker-compose`):
//! child processes with a time limit that are killed on drop, a blocking
//! one-shot HTTP client for the admin API, Prometheus text parsing, and
//! loopback copies of the `faults/` scenarios.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use super::wait::wait_until;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_wsfault");
/// The repository root.
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// What a finished (or killed) command left behind.
#[derive(Debug)]
pub struct Ran {
    /// Its exit status (`None` when it was killed for running too long).
    pub status: Option<ExitStatus>,
    /// Everything it wrote on stdout.
    pub stdout: String,
    /// Everything it wrote on stderr.
    pub stderr: String,
    /// How long it ran.
    pub took: Duration,
}

impl Ran {
    /// Its exit code; `None` when killed by a signal or for running too long.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// True when it exited with 0.
    pub fn ok(&self) -> bool {
        self.code() == Some(0)
    }

    /// stdout and stderr, for assertion messages.
    pub fn both(&self) -> String {
        format!(
            "exit {:?} after {:.1?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code(),
            self.took,
            self.stdout,
            self.stderr
        )
    }
}

/// A child process spawned elsewhere, killed (and reaped) when dropped, so
/// a failing test leaves nothing running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child process with its output captured, killed (and reaped) when
/// dropped, so a failing test leaves nothing running.
pub struct ChildGuard {
    child: Option<Child>,
    started: Instant,
    what: String,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout and stderr captured.
    pub fn spawn(cmd: &mut Command, what: &str) -> ChildGuard {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        ChildGuard {
            child: Some(child),
            started: Instant::now(),
            what: what.to_string(),
        }
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits for it to exit, at most `limit` from now; kills it after that.
    /// Output is collected concurrently so a chatty child cannot block on a
    /// full pipe.
    pub fn wait(mut self, limit: Duration) -> Ran {
        let mut child = self.child.take().expect("child already waited for");
        let mut out = child.stdout.take().expect("stdout piped");
        let mut err = child.stderr.take().expect("stderr piped");
        let out_reader = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = out.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = err.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        });
        let deadline = Instant::now() + limit;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    eprintln!("{}: still running {limit:?} later, killing it", self.what);
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        Ran {
            status,
            stdout: out_reader.join().unwrap_or_default(),
            stderr: err_reader.join().unwrap_or_default(),
            took: self.started.elapsed(),
        }
    }

    /// Stops it (SIGKILL) and returns what it wrote.
    pub fn stop(mut self) -> Ran {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.wait(Duration::from_secs(10))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `cmd` to completion, killing it after `limit`.
pub fn run(cmd: &mut Command, what: &str, limit: Duration) -> Ran {
    ChildGuard::spawn(cmd, what).wait(limit)
}

/// The `wsfault` binary as a command.
pub fn wsfault(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    cmd
}

/// Runs `wsfault ARGS` to completion off the async runtime.
pub async fn run_wsfault(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run wsfault")
    })
    .await
    .expect("join")
}

/// One blocking HTTP/1.1 request with `Connection: close`; returns the
/// status and the (de-chunked) body. Errors (refused, reset, timeout) come
/// back as `Err`.
pub fn http_blocking(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// Decodes a chunked HTTP body.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// Polls `GET path` until it answers 200, at most `limit`.
pub fn wait_http_200(addr: SocketAddr, path: &str, limit: Duration) {
    wait_until(
        &format!("GET http://{addr}{path} never answered 200"),
        limit,
        Duration::from_millis(100),
        || matches!(http_blocking(addr, "GET", path, None), Ok((200, _))),
    );
}

/// Sum of every sample of metric `name` whose labels include all of `labels`
/// (`key="value"` pairs), from Prometheus text format.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, r)) => (m, r.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            if !all {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .sum()
}

/// A copy of `faults/<name>.yaml` whose proxy listens on `listen` and relays
/// to `upstream` instead of the compose stack's `0.0.0.0:8080` → `backend:9000`.
pub fn loopback_scenario(name: &str, listen: &str, upstream: &str) -> String {
    let path = Path::new(ROOT).join("faults").join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let from_listen = "listen: 0.0.0.0:8080";
    let from_upstream = "upstream: backend:9000";
    assert_eq!(
        text.matches(from_listen).count(),
        1,
        "{}: expected one `{from_listen}`",
        path.display()
    );
    assert_eq!(
        text.matches(from_upstream).count(),
        1,
        "{}: expected one `{from_upstream}`",
        path.display()
    );
    text.replace(from_listen, &format!("listen: {listen}"))
        .replace(from_upstream, &format!("upstream: {upstream}"))
}

/// Every scenario in `faults/`, by name (without `.yaml`), sorted.
pub fn scenarios() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(Path::new(ROOT).join("faults"))
        .expect("faults/")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".yaml").map(str::to_string))
        .collect();
    names.sort();
    names
}

/// Reads a JSON report written by `wsfault load --report`.
pub fn read_report(path: &Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("report {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("report {}: {e}\n{text}", path.display()))
}

/// Asserts that a report passed with nothing lost, duplicated or reordered.
pub fn assert_clean_report(report: &serde_json::Value, context: &str) {
    let m = &report["messages"];
    let count = |k: &str| {
        m[k].as_u64()
            .unwrap_or_else(|| panic!("{context}: no messages.{k} in {report}"))
    };
    assert_eq!(
        report["pass"],
        serde_json::json!(true),
        "{context}: verdict failed: {report:#}"
    );
    assert!(count("sent") > 0, "{context}: nothing sent: {report:#}");
    assert!(
        count("received") > 0,
        "{context}: nothing received: {report:#}"
    );
    for k in ["lost", "duplicated", "reordered"] {
        assert_eq!(count(k), 0, "{context}: messages.{k} != 0: {report:#}");
    }
}
