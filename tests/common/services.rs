//! Services and clients that nobody here wrote, from PyPI (see
//! tests/requirements.txt), started on loopback, and the real `wsfault
//! proxy` binary to put between them.
//!
//! - [`socketio_server`], [`graphql_server`], [`json_feed_server`],
//!   [`stomp_broker`]: the fixtures in tests/py/, each a [`PyService`] whose
//!   address is read from the `{"event":"listening","port":N}` line it
//!   prints first.
//! - [`socketio_client`], [`graphql_client`]: the real clients as
//!   [`PyProc`]es, running on their own until [`PyProc::wait`].
//! - [`ProxyProc`]: `wsfault proxy` as a child process, its admin API on a
//!   free port, its listen address read back from `/proxies/{name}`.
//!
//! Every Python process writes stdout and stderr to files (never a pipe that
//! could fill up), one JSON object per stdout line: [`PyProc::events`] reads
//! them at any time, also while it runs. Each script's docstring gives its
//! flags and the exact lines it prints. A missing interpreter or module goes
//! through [`skip_or_fail`](super::tools::skip_or_fail): the starters return
//! `None` then. They block (polling): call them from plain `#[test]`s, or
//! from a multi-threaded tokio test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::ports::free_port;
use super::procs::{http_blocking, wait_http_200, BIN, ROOT};
use super::tools::{interpreter_with, python};

/// How long a service may take to print its port (imports are slow on a
/// busy machine).
pub const SERVICE_START: Duration = Duration::from_secs(30);

/// The interpreter of [`python`] when it imports every one of `modules`
/// (dotted names allowed); else `None` after `skip_or_fail`, naming the
/// first one missing. One probe when all are there.
pub fn interpreter_with_all(modules: &[&str]) -> Option<PathBuf> {
    let python = python()?;
    let all = Command::new(&python)
        .args(["-c", &format!("import {}", modules.join(", "))])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if all {
        return Some(python);
    }
    for module in modules {
        interpreter_with(module)?;
    }
    Some(python)
}

/// Parses every line of `text` that is a JSON object (others are skipped).
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(Value::is_object)
        .collect()
}

/// The values of `field` in the lines whose `"event"` is one of `names`, in order.
pub fn field_of(events: &[Value], names: &[&str], field: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| names.iter().any(|n| e["event"] == *n))
        .map(|e| e[field].clone())
        .collect()
}

/// How many lines have `"event"` equal to `name`.
pub fn count_of(events: &[Value], name: &str) -> u64 {
    events.iter().filter(|e| e["event"] == name).count() as u64
}

/// `values` as numbers; panics on one that is not.
pub fn as_u64s(values: Vec<Value>) -> Vec<u64> {
    values
        .iter()
        .map(|v| v.as_u64().unwrap_or_else(|| panic!("not a number: {v}")))
        .collect()
}

/// `values` as strings; panics on one that is not.
pub fn as_strings(values: Vec<Value>) -> Vec<String> {
    values
        .iter()
        .map(|v| {
            v.as_str()
                .unwrap_or_else(|| panic!("not a string: {v}"))
                .to_string()
        })
        .collect()
}

/// A Python script of tests/py/ running as a child process, stdout and
/// stderr going to files; killed (and reaped) on drop.
pub struct PyProc {
    child: Child,
    dir: tempfile::TempDir,
    what: String,
    started: Instant,
    status: Option<ExitStatus>,
}

impl PyProc {
    /// Starts `python tests/py/SCRIPT ARGS` when the interpreter imports all
    /// of `modules`; `None` (after `skip_or_fail`) otherwise.
    pub fn spawn(script: &str, modules: &[&str], args: &[&str]) -> Option<PyProc> {
        let python = interpreter_with_all(modules)?;
        let dir = tempfile::tempdir().expect("tempdir");
        let out = std::fs::File::create(dir.path().join("stdout")).expect("stdout file");
        let err = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");
        let path = Path::new(ROOT).join("tests/py").join(script);
        let child = Command::new(&python)
            .arg(&path)
            .args(args)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {} {}: {e}", python.display(), path.display())
            });
        Some(PyProc {
            child,
            dir,
            what: format!("{script} {}", args.join(" ")),
            started: Instant::now(),
            status: None,
        })
    }

    /// Everything it printed on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    /// Everything it printed on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// Its stdout lines so far, as JSON objects.
    pub fn events(&self) -> Vec<Value> {
        json_lines(&self.stdout())
    }

    /// Its stdout lines so far whose `"event"` is `name`.
    pub fn events_named(&self, name: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == name)
            .collect()
    }

    /// Polls (every 20 ms) until a stdout line satisfies `check`, and
    /// returns it; panics after `limit`, or when the process exited first.
    pub fn wait_for_event(&mut self, limit: Duration, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(found) = self.events().into_iter().find(|e| check(e)) {
                return found;
            }
            assert!(
                self.running(),
                "{} exited before the awaited line\n{}",
                self.what,
                self.both()
            );
            assert!(
                Instant::now() < deadline,
                "{}: awaited line not printed within {limit:?}\n{}",
                self.what,
                self.both()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True while it runs.
    pub fn running(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.status = Some(status);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// [`wait`](Self::wait)s up to `limit` and asserts that it exited 0,
    /// with its output in the failure message.
    pub fn wait_ok(&mut self, limit: Duration) {
        let status = self.wait(limit);
        assert!(status.is_some_and(|s| s.success()), "{}", self.both());
    }

    /// Waits for it to exit, at most `limit`; kills it after that. Its exit
    /// status, `None` when it had to be killed.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while self.running() {
            if Instant::now() >= deadline {
                eprintln!("{}: still running {limit:?} later, killing it", self.what);
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.status
    }

    /// Its exit code once it exited by itself.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// What it is, how long it ran, and both outputs, for assertion messages.
    pub fn both(&self) -> String {
        format!(
            "{} (exit {:?} after {:.1?})\n--- stdout\n{}\n--- stderr\n{}",
            self.what,
            self.code(),
            self.started.elapsed(),
            self.stdout(),
            self.stderr()
        )
    }
}

impl Drop for PyProc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A fixture server of tests/py/, listening on 127.0.0.1.
pub struct PyService {
    /// The process (its stdout holds the server's event lines).
    pub proc: PyProc,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl PyService {
    /// Starts `tests/py/SCRIPT --port 0 ARGS` and waits for its
    /// `{"event":"listening","port":N}` line.
    pub fn start(script: &str, modules: &[&str], args: &[&str]) -> Option<PyService> {
        let mut all = vec!["--port", "0"];
        all.extend_from_slice(args);
        let mut proc = PyProc::spawn(script, modules, &all)?;
        let line = proc.wait_for_event(SERVICE_START, |e| e["event"] == "listening");
        let port = line["port"].as_u64().expect("port in the listening line") as u16;
        Some(PyService {
            proc,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }

    /// Its server-side event lines so far (see the script's docstring).
    pub fn events(&self) -> Vec<Value> {
        self.proc.events()
    }
}

/// [`socketio_server`] flags: a ping every second, a pong due within one,
/// and a tick every 100 ms into each joined room.
pub const PINGS_1S_TICKS_100MS: &[&str] = &[
    "--ping-interval",
    "1",
    "--ping-timeout",
    "1",
    "--tick-ms",
    "100",
];

/// `tests/py/socketio_server.py`: a python-socketio chat server (ASGI under
/// uvicorn), WebSocket transport only. `args` e.g. `["--ping-interval",
/// "1", "--ping-timeout", "1", "--tick-ms", "100"]`.
pub fn socketio_server(args: &[&str]) -> Option<PyService> {
    PyService::start("socketio_server.py", &["socketio", "uvicorn"], args)
}

/// `tests/py/graphql_server.py`: a strawberry-graphql server under uvicorn,
/// `graphql-transport-ws` and `graphql-ws` at `/graphql`.
pub fn graphql_server(args: &[&str]) -> Option<PyService> {
    PyService::start("graphql_server.py", &["strawberry.asgi", "uvicorn"], args)
}

/// `tests/py/json_feed_server.py`: a JSON feed with `seq`, `?from=N`
/// resume and `{"id"}` → `{"reply"}`, on Python `websockets`.
pub fn json_feed_server(args: &[&str]) -> Option<PyService> {
    PyService::start("json_feed_server.py", &["websockets"], args)
}

/// `tests/py/stomp_broker.py`: a STOMP 1.2 broker over WebSocket
/// (`v12.stomp`; topics, receipts, transactions, EOL heart-beats) on Python
/// `websockets`. `args` e.g. `["--heart-beat", "1000,1000"]`.
pub fn stomp_broker(args: &[&str]) -> Option<PyService> {
    PyService::start("stomp_broker.py", &["websockets"], args)
}

/// `tests/py/socketio_client.py URL ARGS`: the python-socketio AsyncClient
/// (WebSocket transport only), running until it ends by itself.
pub fn socketio_client(url: &str, args: &[&str]) -> Option<PyProc> {
    let mut all = vec![url];
    all.extend_from_slice(args);
    PyProc::spawn("socketio_client.py", &["socketio", "aiohttp"], &all)
}

/// `tests/py/graphql_client.py URL ARGS`: the gql client with its
/// `websockets` transport, running until it ends by itself.
pub fn graphql_client(url: &str, args: &[&str]) -> Option<PyProc> {
    let mut all = vec![url];
    all.extend_from_slice(args);
    PyProc::spawn("graphql_client.py", &["gql.transport.websockets"], &all)
}

/// `wsfault proxy` as a child process with its admin API on a free loopback
/// port; stdout and stderr go to files. Killed (and reaped) on drop.
pub struct ProxyProc {
    child: Child,
    dir: tempfile::TempDir,
    /// The address of the proxy named at the start.
    pub listen: SocketAddr,
    /// The admin API.
    pub admin: SocketAddr,
}

impl ProxyProc {
    /// `wsfault proxy --name app --listen 127.0.0.1:0 --upstream UPSTREAM`,
    /// plus `extra` arguments (e.g. `["--seed", "7"]`).
    pub fn start(upstream: &str, extra: &[&str]) -> ProxyProc {
        let mut args = vec![
            "--name",
            "app",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            upstream,
        ];
        args.extend_from_slice(extra);
        Self::start_args(&args, "app")
    }

    /// `wsfault proxy --config FILE` with `yaml` as the file (kept for the
    /// proxy's life); `name` is the proxy whose address becomes
    /// [`ProxyProc::listen`].
    pub fn start_config(yaml: &str, name: &str, extra: &[&str]) -> ProxyProc {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("wsfault.yaml");
        std::fs::write(&file, yaml).expect("write config");
        let path = file.to_str().expect("utf-8 path").to_string();
        let mut args = vec!["--config", path.as_str()];
        args.extend_from_slice(extra);
        Self::launch(dir, &args, name)
    }

    /// `wsfault proxy --admin 127.0.0.1:FREE ARGS`, waiting until its admin
    /// API answers and proxy `name` is listening.
    pub fn start_args(args: &[&str], name: &str) -> ProxyProc {
        Self::launch(tempfile::tempdir().expect("tempdir"), args, name)
    }

    fn launch(dir: tempfile::TempDir, args: &[&str], name: &str) -> ProxyProc {
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let out = std::fs::File::create(dir.path().join("stdout")).expect("stdout file");
        let err = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");
        let child = Command::new(BIN)
            .arg("proxy")
            .args(["--admin", &admin.to_string()])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or("warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn wsfault proxy");
        let mut proxy = ProxyProc {
            child,
            dir,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin,
        };
        wait_http_200(admin, "/healthz", Duration::from_secs(15));
        let (status, body) = proxy.api("GET", &format!("/proxies/{name}"), None);
        assert_eq!(
            status,
            200,
            "GET /proxies/{name}: {body}\n{}",
            proxy.stderr()
        );
        let view: Value = serde_json::from_str(&body).expect("proxy JSON");
        proxy.listen = view["listen"]
            .as_str()
            .and_then(|l| l.parse().ok())
            .unwrap_or_else(|| panic!("no bound listen address in {body}"));
        assert_ne!(proxy.listen.port(), 0, "listen not resolved: {body}");
        proxy
    }

    /// `GET /metrics`.
    pub fn metrics(&self) -> String {
        http_blocking(self.admin, "GET", "/metrics", None)
            .expect("GET /metrics")
            .1
    }

    /// One admin API call; the status and the body.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        http_blocking(self.admin, method, path, body).expect("admin API")
    }

    /// What it logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// The process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ProxyProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
