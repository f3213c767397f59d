//! `wsfault ctl` through the real binary: exit codes, messages and the HTTP
//! requests it sends, against a tiny scripted admin server (std only).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::thread;

use common::*;

/// One request as the fake admin server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Responder = dyn Fn(&Seen) -> (u16, String) + Send + Sync;

/// A scripted HTTP/1.1 server: answers each request with `respond`'s status
/// and JSON body, records every request, closes each connection after one answer.
struct FakeAdmin {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeAdmin {
    fn start(respond: impl Fn(&Seen) -> (u16, String) + Send + Sync + 'static) -> FakeAdmin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let respond: Arc<Responder> = Arc::new(respond);
        let log = seen.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (log, respond) = (log.clone(), respond.clone());
                thread::spawn(move || serve(stream, &log, &*respond));
            }
        });
        FakeAdmin { url, seen }
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

fn serve(stream: TcpStream, log: &Mutex<Vec<Seen>>, respond: &Responder) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let seen = Seen {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let (status, answer) = respond(&seen);
    log.lock().expect("lock").push(seen);
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
}

fn ctl(admin: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("ctl")
        .arg("--admin")
        .arg(admin)
        .args(args)
        .env_remove("WSFAULT_ADMIN")
        .env_remove("WSFAULT_ADMIN_TOKEN")
        .output()
        .expect("run wsfault")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const PROXIES: &str = r#"{"chat": {"name": "chat", "listen": "0.0.0.0:8080", "upstream": "backend:9000",
  "enabled": true, "toxics": [{"name": "lossy", "type": "message_loss", "stream": "upstream",
  "toxicity": 1.0, "attributes": {"probability": 0.02}}]}}"#;

#[test]
fn unreachable_admin_exits_1_naming_the_url() {
    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}");
    let out = ctl(&url, &["list"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&url), "{}", stderr(&out));
}

#[test]
fn bad_usage_exits_2() {
    let fake = FakeAdmin::start(|_| (200, "{}".into()));
    for args in [
        &["toxic", "add", "chat", "-t", "latency", "-a", "latency"][..],
        &["toxic", "add", "chat", "-t", "latency", "-a", "=3"],
        &["toxic", "add", "chat", "-t", "latency", "-s", "sideways"],
        &["toxic", "add", "chat", "-t", "latency", "--toxicity", "2"],
        &["toxic", "update", "chat", "-n", "lossy"],
        &["create", "chat", "-l", "0.0.0.0:1"],
        &["frobnicate"],
    ] {
        let out = ctl(&fake.url, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    assert!(
        fake.requests().is_empty(),
        "bad usage must not reach the server"
    );

    let out = ctl("https://127.0.0.1:8474", &["list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--admin"), "{}", stderr(&out));
    let out = ctl("http://127.0.0.1:99999", &["list"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn list_prints_a_table_or_json() {
    let fake = FakeAdmin::start(|_| (200, PROXIES.into()));
    let out = ctl(&fake.url, &["list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "NAME  LISTEN        UPSTREAM      ENABLED  TOXICS"
    );
    assert_eq!(lines[1], "chat  0.0.0.0:8080  backend:9000  true     1");

    let out = ctl(&fake.url, &["list", "--json"]);
    assert!(out.status.success());
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(value["chat"]["toxics"][0]["name"], "lossy");
    let seen = fake.requests();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", "/proxies")
    );
}

#[test]
fn server_errors_exit_1_with_the_server_message() {
    let fake = FakeAdmin::start(|_| (404, r#"{"error":"proxy not found","status":404}"#.into()));
    let out = ctl(&fake.url, &["inspect", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("proxy not found"), "{}", stderr(&out));
    assert_eq!(fake.requests()[0].path, "/proxies/ghost");
}

#[test]
fn toxic_add_sends_typed_attributes_and_the_token() {
    let fake = FakeAdmin::start(|req| (200, req.body.clone()));
    let out = ctl(
        &fake.url,
        &[
            "--token",
            "s3cret",
            "toxic",
            "add",
            "chat",
            "-t",
            "drop_control",
            "-n",
            "no-pongs",
            "-s",
            "upstream",
            "--toxicity",
            "0.5",
            "-a",
            r#"opcodes=["pong"]"#,
            "-a",
            "probability=1",
            "-a",
            "note=hello world",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("no-pongs"), "{}", stdout(&out));
    let seen = fake.requests();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("POST", "/proxies/chat/toxics")
    );
    assert_eq!(seen[0].header("authorization"), Some("Bearer s3cret"));
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).expect("json body");
    assert_eq!(
        body,
        serde_json::json!({"name": "no-pongs", "type": "drop_control", "stream": "upstream",
            "toxicity": 0.5, "attributes": {"opcodes": ["pong"], "probability": 1, "note": "hello world"}})
    );
}

#[test]
fn toggle_flips_enabled() {
    let fake = FakeAdmin::start(|req| {
        if req.method == "GET" {
            (
                200,
                r#"{"name":"chat","listen":"a","upstream":"b","enabled":true,"toxics":[]}"#.into(),
            )
        } else {
            (
                200,
                r#"{"name":"chat","listen":"a","upstream":"b","enabled":false,"toxics":[]}"#.into(),
            )
        }
    });
    let out = ctl(&fake.url, &["toggle", "chat"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("disabled"));
    let seen = fake.requests();
    assert_eq!(seen[1].method, "POST");
    let body: serde_json::Value = serde_json::from_str(&seen[1].body).expect("json body");
    assert_eq!(body, serde_json::json!({"enabled": false}));
}

#[test]
fn health_exit_status_follows_healthz() {
    let ok = FakeAdmin::start(|_| (200, r#"{"status":"ok"}"#.into()));
    assert!(ctl(&ok.url, &["health"]).status.success());
    assert_eq!(ok.requests()[0].path, "/healthz");
    let down = FakeAdmin::start(|_| (503, r#"{"error":"starting","status":503}"#.into()));
    assert_eq!(ctl(&down.url, &["health"]).status.code(), Some(1));
}

#[test]
fn toxic_add_sets_message_match_and_count_on_a_real_proxy() {
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let upstream = format!("127.0.0.1:{}", closed_port());
    let _proxy = ChildGuard::spawn(
        wsfault(&[
            "proxy",
            "--admin",
            &admin.to_string(),
            "--name",
            "chat",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream,
        ])
        .env("RUST_LOG", "warn"),
        "wsfault proxy",
    );
    wait_http_200(admin, "/healthz", std::time::Duration::from_secs(10));
    let url = format!("http://{admin}");
    let toxics = || {
        let (status, body) =
            http_blocking(admin, "GET", "/proxies/chat/toxics", None).expect("GET toxics");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).expect("json")
    };

    let out = ctl(
        &url,
        &[
            "toxic",
            "add",
            "chat",
            "-t",
            "message_loss",
            "-n",
            "beats",
            "-a",
            "probability=1",
            "--kind",
            "heartbeat",
            "--json-pointer",
            "/type",
            "--json-equals",
            r#""next""#,
            "--count-after",
            "10",
            "--count-every",
            "3",
            "--count-limit",
            "5",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out)
            .contains(r#"kind=heartbeat json:/type=="next" count: after 10, every 3, limit 5"#),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        toxics(),
        serde_json::json!([{
            "name": "beats", "type": "message_loss", "stream": "downstream", "toxicity": 1.0,
            "attributes": {"probability": 1},
            "match": {"message": {"kind": "heartbeat", "json": {"pointer": "/type", "equals": "next"}}},
            "count": {"after": 10, "every": 3, "limit": 5}
        }]),
        "read back as written"
    );

    // Only the limit changes; after, every and the match are kept.
    let out = ctl(
        &url,
        &[
            "toxic",
            "update",
            "chat",
            "-n",
            "beats",
            "--count-limit",
            "2",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        toxics()[0]["count"],
        serde_json::json!({"after": 10, "every": 3, "limit": 2})
    );
    assert_eq!(toxics()[0]["match"]["message"]["kind"], "heartbeat");

    // A bad flag: exit 2 naming the flag, the value and the choices; nothing sent.
    let before = toxics();
    let out = ctl(
        &url,
        &["toxic", "add", "chat", "-t", "latency", "--kind", "ping"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("--kind")
            && err.contains("ping")
            && err.contains("data, heartbeat, handshake, close"),
        "{err}"
    );
    assert_eq!(toxics(), before);
}
