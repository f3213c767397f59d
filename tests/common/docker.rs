//! What the Docker tests share: `docker` commands, the test binary copied
//! into the build context, names unique to a run, and admin API calls from
//! the host to a published port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::procs::{http_blocking, run, Ran, BIN, ROOT};

/// Where the test binary is copied inside the build context (a path the
/// `.dockerignore` lets through).
pub const BINARY_IN_CONTEXT: &str = "target/docker/wsfault";

/// A `docker` command, run to completion (killed after `limit`).
pub fn docker(args: &[&str], limit: Duration) -> Ran {
    run(
        Command::new("docker").args(args),
        &format!("docker {}", args.first().unwrap_or(&"")),
        limit,
    )
}

/// Copies this test's `wsfault` binary to [`BINARY_IN_CONTEXT`], without
/// its debug info (most of a test binary; the context is sent whole).
pub fn binary_in_context() -> PathBuf {
    let copy = Path::new(ROOT).join(BINARY_IN_CONTEXT);
    std::fs::create_dir_all(copy.parent().expect("a parent")).expect("target/docker");
    let stripped = Command::new("objcopy")
        .args(["--strip-debug", BIN])
        .arg(&copy)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !stripped {
        std::fs::copy(BIN, &copy).expect("copy the binary into the build context");
    }
    copy
}

/// A suffix unique to this run (process id and clock), for image tags and
/// compose project names.
pub fn run_suffix() -> String {
    format!(
        "{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    )
}

/// Calls the admin API from the host; panics unless the status is `want`.
pub fn admin(addr: SocketAddr, method: &str, path: &str, body: Option<&str>, want: u16) -> String {
    let (status, text) =
        http_blocking(addr, method, path, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    assert_eq!(status, want, "{method} {path}: {text}");
    text
}

/// `docker inspect -f FORMAT ID`, trimmed; panics when docker fails.
pub fn inspect(id: &str, format: &str) -> String {
    let ran = docker(&["inspect", "-f", format, id], Duration::from_secs(30));
    assert!(ran.ok(), "docker inspect {id}: {}", ran.both());
    ran.stdout.trim().to_string()
}

/// Waits until container `id`'s healthcheck says healthy; panics after
/// `limit` or when it exited, with `logs()` in the message.
pub fn wait_healthy(id: &str, limit: Duration, logs: impl Fn() -> String) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let state = inspect(
            id,
            "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
        );
        if state.ends_with(" healthy") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline && !state.starts_with("exited"),
            "{id} not healthy within {limit:?} (state: {state})\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
