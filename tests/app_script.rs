//! `wsfault load --script` against services nobody here wrote (issue 13;
//! docs/reference.md#script-mode), each through the real `wsfault proxy`
//! binary: a python-socketio chat server (ASGI under uvicorn), a
//! strawberry-graphql server with a counting subscription and a mutation,
//! and a JSON feed on Python `websockets`. The scripts are the shipped
//! examples in `examples/load/`, pointed at the proxy with `--url`.
//!
//! For each service: with no toxic the verdict is PASS with nothing lost,
//! duplicated or reordered; then what the proxy injected
//! (`wsfault_toxic_actions_total` of one toxic) equals what the client
//! detected: `message_loss` → lost, `duplicate` → duplicated, `reorder` →
//! reordered, `drop_connection` with `resume: true` and `--reconnect` →
//! reconnects, with lost == 0. Each toxic is added once every connection
//! has finished its `open` steps and acts a fixed number of times per
//! connection (`count.limit`), so the expected figure is also known in
//! advance; clean traffic follows, so every gap is seen.
//!
//! Plus: heartbeat loss on Socket.IO ends sessions by the service's own ping
//! timeout (its log says "ping timeout") and the client reconnects, with the
//! verdict saying why; and bad scripts exit 2 with `FILE:LINE:COL`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const CONNS: u64 = 4;

/// One `wsfault load --script` run through `proxy`, with `toxic` (if any)
/// added at `add_at` and removed at `remove_at` (seconds into the run).
struct Case<'a> {
    script: &'a str,
    url: String,
    duration_s: u64,
    rate: &'a str,
    extra: &'a [&'a str],
    toxic: Option<Value>,
    add_at: f64,
    remove_at: f64,
}

/// What a case measured: the report and the toxic's actions.
struct Outcome {
    report: Value,
    actions: u64,
    stdout: String,
    code: Option<i32>,
}

impl Outcome {
    fn messages(&self, field: &str) -> u64 {
        self.report["messages"][field].as_u64().unwrap_or(u64::MAX)
    }

    fn connections(&self, field: &str) -> u64 {
        self.report["connections"][field]
            .as_u64()
            .unwrap_or(u64::MAX)
    }

    fn show(&self) -> String {
        format!("exit {:?}\n{}", self.code, self.stdout)
    }
}

fn run_case(proxy: &ProxyProc, case: Case<'_>) -> Outcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let report_path = dir.path().join("report.json");
    let duration = format!("{}s", case.duration_s);
    let conns = CONNS.to_string();
    let script = Path::new(ROOT).join(case.script);
    let mut cmd = Command::new(BIN);
    cmd.args(["load", "--script"])
        .arg(&script)
        .args(["--url", &case.url, "--connections", &conns])
        .args(["--rate", case.rate, "--duration", &duration, "--report"])
        .arg(&report_path)
        .args(case.extra)
        .stdin(Stdio::null());
    let load = ChildGuard::spawn(&mut cmd, "wsfault load --script");
    let start = Instant::now();
    let name = case
        .toxic
        .as_ref()
        .and_then(|t| t["name"].as_str())
        .map(str::to_string);
    if let Some(toxic) = &case.toxic {
        sleep_until(start, case.add_at);
        let (status, body) = proxy.api("POST", "/proxies/app/toxics", Some(&toxic.to_string()));
        assert_eq!(status, 200, "adding {toxic}: {body}");
        sleep_until(start, case.remove_at);
        let path = format!("/proxies/app/toxics/{}", name.as_deref().unwrap_or(""));
        let (status, body) = proxy.api("DELETE", &path, None);
        assert_eq!(status, 204, "removing {path}: {body}");
    }
    let ran = load.wait(Duration::from_secs(case.duration_s + 30));
    let text = std::fs::read_to_string(&report_path)
        .unwrap_or_else(|e| panic!("no report ({e}): {}", ran.both()));
    let report: Value = serde_json::from_str(&text).expect("report JSON");
    let actions = name.map_or(0, |n| {
        metric_sum(
            &proxy.metrics(),
            "wsfault_toxic_actions_total",
            &[("proxy", "app"), ("toxic", &n)],
        ) as u64
    });
    Outcome {
        report,
        actions,
        stdout: ran.stdout.clone(),
        code: ran.code(),
    }
}

fn sleep_until(start: Instant, at_s: f64) {
    let at = start + Duration::from_secs_f64(at_s);
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

/// A toxic on the server → client stream acting on `per_conn` messages of
/// each connection (every `every`-th one that matches `message`).
fn counted(
    name: &str,
    kind: &str,
    attrs: Value,
    message: Value,
    every: u64,
    per_conn: u64,
) -> Value {
    json!({
        "name": name, "type": kind, "stream": "downstream", "attributes": attrs,
        "match": {"message": message},
        "count": {"every": every, "limit": per_conn},
    })
}

/// The checks every service gets: clean, loss, duplicate, reorder, drops.
/// `data` picks the server messages that carry the checked ids and
/// numbers; `sequenced` the ones with a sequence number (for `reorder`,
/// which is seen only in sequences).
fn injected_equals_detected(
    proxy: &ProxyProc,
    script: &str,
    url: &str,
    data: Value,
    sequenced: Value,
) {
    let case = |toxic: Option<Value>, extra: &'static [&'static str]| Case {
        script,
        url: url.to_string(),
        duration_s: 5,
        rate: "10",
        extra,
        toxic,
        add_at: 1.0,
        remove_at: 3.5,
    };

    let clean = run_case(proxy, case(None, &[]));
    assert_eq!(clean.code, Some(0), "{}", clean.show());
    assert_eq!(clean.report["pass"], true, "{}", clean.show());
    assert!(
        clean.messages("sent") > 0 && clean.messages("received") > 0,
        "{}",
        clean.show()
    );
    for field in ["lost", "duplicated", "reordered", "corrupted"] {
        assert_eq!(clean.messages(field), 0, "{field}: {}", clean.show());
    }
    assert_eq!(clean.connections("succeeded"), CONNS, "{}", clean.show());
    assert!(
        clean.stdout.contains("checks") && clean.stdout.contains("sequence: +1 per"),
        "the table names the checks: {}",
        clean.show()
    );

    // One toxic per run, acting on `picks` messages of each connection (every
    // `every`-th one that matches): what it did is what the client saw.
    // `reorder`: the picked messages go to the toxic in turn, one is held and
    // the next releases it (not held itself), so 4 picks are 2 actions.
    let cases = [
        (
            "loss",
            "message_loss",
            json!({"probability": 1.0}),
            &data,
            7,
            3,
            3,
            "lost",
            "duplicated",
        ),
        (
            "dup",
            "duplicate",
            json!({"probability": 1.0}),
            &data,
            5,
            4,
            4,
            "duplicated",
            "lost",
        ),
        (
            "reorder",
            "reorder",
            json!({"distance": 1, "probability": 1.0}),
            &sequenced,
            6,
            4,
            2,
            "reordered",
            "lost",
        ),
    ];
    for (name, kind, attrs, message, every, picks, acts, detected, untouched) in cases {
        let toxic = counted(name, kind, attrs, message.clone(), every, picks);
        let out = run_case(proxy, case(Some(toxic), &[]));
        assert_eq!(out.actions, CONNS * acts, "{name}: {}", out.show());
        assert_eq!(
            out.messages(detected),
            out.actions,
            "{name}: {detected} == injected: {}",
            out.show()
        );
        assert_eq!(out.messages(untouched), 0, "{name}: {}", out.show());
        assert_eq!(
            out.report["pass"],
            false,
            "{name}: an SLO fails: {}",
            out.show()
        );
        assert_eq!(out.code, Some(1), "{name}: {}", out.show());
    }

    let drops = run_case(
        proxy,
        case(
            Some(json!({
                "name": "drops", "type": "drop_connection", "stream": "downstream",
                "attributes": {"after_messages": 25, "probability": 1.0, "mode": "reset"},
            })),
            &["--reconnect"],
        ),
    );
    assert!(
        drops.actions >= CONNS,
        "every connection dropped at least once: {}",
        drops.show()
    );
    assert_eq!(
        drops.connections("reconnects"),
        drops.actions,
        "reconnects == drops: {}",
        drops.show()
    );
    for field in ["lost", "duplicated", "reordered"] {
        assert_eq!(
            drops.messages(field),
            0,
            "resume: {field}: {}",
            drops.show()
        );
    }
    assert_eq!(drops.report["pass"], true, "{}", drops.show());
}

#[test]
fn json_feed_on_python_websockets() {
    let Some(feed) = json_feed_server(&["--rate", "40"]) else {
        return;
    };
    let proxy = ProxyProc::start(&feed.addr.to_string(), &[]);
    let url = format!("ws://{}/?from={{{{last_seq}}}}", proxy.listen);
    injected_equals_detected(
        &proxy,
        "examples/load/json-feed.yaml",
        &url,
        json!({"kind": "data"}),
        json!({"contains": "\"seq\""}),
    );
}

#[test]
fn socketio_chat_room_on_python_socketio() {
    let Some(server) = socketio_server(&["--tick-ms", "50"]) else {
        return;
    };
    let proxy = ProxyProc::start(&server.addr.to_string(), &[]);
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", proxy.listen);
    injected_equals_detected(
        &proxy,
        "examples/load/socketio-chat.yaml",
        &url,
        json!({"kind": "data"}),
        json!({"contains": "\"seq\""}),
    );
    // Every reconnect joined again with `from`, and the server replayed.
    let joins = server.proc.events_named("join");
    assert!(
        joins
            .iter()
            .any(|j| j["from"].as_u64().is_some_and(|f| f > 0) && j["replayed"].as_u64().is_some()),
        "resumed joins: {joins:?}"
    );
}

#[test]
fn graphql_subscription_on_strawberry() {
    let Some(server) = graphql_server(&[]) else {
        return;
    };
    let proxy = ProxyProc::start(&server.addr.to_string(), &[]);
    let url = format!("ws://{}/graphql", proxy.listen);
    injected_equals_detected(
        &proxy,
        "examples/load/graphql-subscription.yaml",
        &url,
        json!({"json": {"pointer": "/type", "equals": "next"}}),
        json!({"contains": "\"seq\""}),
    );
}

#[test]
fn socketio_heartbeat_loss_is_the_services_ping_timeout() {
    let Some(server) = socketio_server(PINGS_1S_TICKS_100MS) else {
        return;
    };
    let proxy = ProxyProc::start(&server.addr.to_string(), &[]);
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", proxy.listen);
    let out = run_case(
        &proxy,
        Case {
            script: "examples/load/socketio-chat.yaml",
            url,
            duration_s: 9,
            rate: "5",
            extra: &["--reconnect"],
            toxic: Some(json!({
                "name": "pongs", "type": "message_loss", "stream": "upstream",
                "attributes": {"probability": 1.0},
                "match": {"message": {"kind": "heartbeat"}},
            })),
            add_at: 1.0,
            remove_at: 5.5,
        },
    );
    let timeouts = server
        .proc
        .events_named("disconnect")
        .iter()
        .filter(|e| e["reason"] == "ping timeout")
        .count() as u64;
    assert!(
        timeouts >= CONNS,
        "every session timed out at least once: {}",
        out.show()
    );
    assert_eq!(out.connections("disconnects"), timeouts, "{}", out.show());
    assert_eq!(out.connections("reconnects"), timeouts, "{}", out.show());
    assert!(
        out.actions >= timeouts,
        "one lost pong or more per timeout: {}",
        out.show()
    );
    for field in ["lost", "duplicated", "reordered"] {
        assert_eq!(out.messages(field), 0, "resumed: {field}: {}", out.show());
    }
    assert!(
        out.report["script"]["heartbeats_answered"]
            .as_u64()
            .unwrap_or(0)
            > timeouts,
        "{}",
        out.show()
    );
    let samples = out.report["errors"]["samples"].to_string();
    assert!(
        samples.contains("socketio: heartbeat timeout on the service's side"),
        "the verdict names the service's heartbeat timeout: {samples}"
    );
    assert!(
        out.stdout
            .contains("heartbeat timeout on the service's side"),
        "{}",
        out.show()
    );
}

/// Writes `text` as a script file and runs `wsfault load --script` on it.
fn load_with_script(text: &str, extra: &[&str]) -> Ran {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, text).expect("write script");
    let mut cmd = Command::new(BIN);
    cmd.args(["load", "--script"])
        .arg(&path)
        .args(extra)
        .stdin(Stdio::null());
    run(&mut cmd, "wsfault load --script", Duration::from_secs(60))
}

#[test]
fn bad_scripts_exit_2_naming_file_line_and_column() {
    let url = ["--url", "ws://127.0.0.1:9/"];
    let cases: &[(&str, &str, &[&str])] = &[
        ("send: [oops\n", "bad.yaml:", &[]),
        (
            "send: x\nrepyl: {id: '(x)'}\n",
            "bad.yaml:2:1: unknown field `repyl`",
            &["reply", "sequence"],
        ),
        (
            "send: '{{n}}'\nreply: {id: '(\\d+'}\n",
            "bad.yaml:2:",
            &["`reply.id`", "not a valid regex"],
        ),
        (
            "sequence: {seq: '\"seq\":\\d+'}\n",
            "bad.yaml:1:",
            &["`sequence.seq`", "no capture group"],
        ),
        (
            "send: '{\"id\":{{id}}}'\n",
            "bad.yaml:1:7:",
            &[
                "unknown placeholder `{{id}}`",
                "{{conn}}, {{n}}, {{last_seq}}",
            ],
        ),
        (
            "protocol: sockets\n",
            "bad.yaml:1:11:",
            &["socketio, graphql-ws, stomp, signalr, phoenix"],
        ),
    ];
    for (text, at, words) in cases {
        let ran = load_with_script(text, &url);
        assert_eq!(ran.code(), Some(2), "{text:?}: {}", ran.both());
        assert!(
            ran.stderr.contains(at),
            "{text:?} names {at}: {}",
            ran.stderr
        );
        for w in *words {
            assert!(ran.stderr.contains(w), "{text:?} says {w}: {}", ran.stderr);
        }
        assert!(!ran.stderr.contains("panicked"), "{}", ran.stderr);
    }
    let ran = load_with_script(
        "send: x\n",
        &["--url", "ws://127.0.0.1:9/", "--mode", "echo"],
    );
    assert_eq!(ran.code(), Some(2), "{}", ran.both());
    assert!(ran.stderr.contains("--script"), "{}", ran.stderr);
    let ran = load_with_script("send: x\n", &[]);
    assert_eq!(ran.code(), Some(2), "{}", ran.both());
    assert!(
        ran.stderr.contains("give --url or `url:`"),
        "{}",
        ran.stderr
    );
}

#[test]
fn an_expect_that_never_comes_is_a_counted_connection_error() {
    let Some(feed) = json_feed_server(&["--rate", "20"]) else {
        return;
    };
    let url = format!("ws://{}/", feed.addr);
    let started = Instant::now();
    let ran = load_with_script(
        "open:\n  - {expect: '\"never\"', timeout: 1s}\nsequence: {seq: '\"seq\":(\\d+)'}\n",
        &["--url", &url, "--connections", "3", "--duration", "2s"],
    );
    assert!(started.elapsed() < Duration::from_secs(20), "no hang");
    assert_eq!(ran.code(), Some(1), "{}", ran.both());
    assert!(
        ran.stdout.contains("failed 3"),
        "three connection errors: {}",
        ran.both()
    );
    assert!(
        ran.stdout
            .contains("no server message matching `\"never\"` within 1s"),
        "{}",
        ran.both()
    );
}

/// STOMP 1.2 over WebSocket (`v12.stomp`): the shipped example against
/// tests/py/stomp_broker.py through the proxy. The script's CONNECT asks
/// for a heart-beat a second; the broker's EOLs are answered with EOLs, the
/// proxy's stomp profile sees those as `heartbeat` (a `message_loss` on
/// that kind swallows exactly one answer per connection, and the broker
/// counts the others in). Then injected == detected, where a RECEIPT is the
/// `reply` to a SEND and a MESSAGE carries the SEND's "n" for the
/// per-destination `sequence`.
#[test]
fn stomp_topic_on_a_stomp_1_2_broker() {
    const SCRIPT: &str = "examples/load/stomp-topic.yaml";
    let Some(mut broker) = stomp_broker(&["--heart-beat", "500,0"]) else {
        return;
    };
    let proxy = ProxyProc::start(&broker.addr.to_string(), &[]);
    let url = format!("ws://{}/ws", proxy.listen);

    let beats = run_case(
        &proxy,
        Case {
            script: SCRIPT,
            url: url.clone(),
            duration_s: 4,
            rate: "10",
            extra: &[],
            toxic: Some(json!({
                "name": "answers", "type": "message_loss", "stream": "upstream",
                "attributes": {"probability": 1.0},
                "match": {"message": {"kind": "heartbeat"}},
                "count": {"every": 1, "limit": 1},
            })),
            add_at: 0.5,
            remove_at: 3.8,
        },
    );
    assert_eq!(beats.code, Some(0), "{}", beats.show());
    assert_eq!(beats.report["pass"], true, "{}", beats.show());
    assert_eq!(
        beats.report["script"]["protocol"],
        "stomp",
        "{}",
        beats.show()
    );
    let answered = beats.report["script"]["heartbeats_answered"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        answered >= 2 * CONNS,
        "a heart-beat a second per connection, each answered: {}",
        beats.show()
    );
    assert_eq!(beats.actions, CONNS, "one answer swallowed per connection");
    let metrics = proxy.metrics();
    let kind = |stream: &str, kind: &str| {
        metric_sum(
            &metrics,
            "wsfault_messages_total",
            &[("proxy", "app"), ("stream", stream), ("kind", kind)],
        ) as u64
    };
    let answers_seen = kind("upstream", "heartbeat");
    assert!(
        answers_seen >= beats.actions && answers_seen <= answered,
        "the proxy's stomp profile classifies the EOL answers as heartbeat: {answers_seen} of {answered}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let closed = loop {
        let closed = broker.proc.events_named("closed");
        if closed.len() as u64 >= CONNS || Instant::now() > deadline {
            break closed;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(closed.len() as u64, CONNS, "{}", broker.proc.both());
    let broker_got: u64 = closed
        .iter()
        .map(|c| c["heartbeats_in"].as_u64().unwrap_or(0))
        .sum();
    eprintln!(
        "stomp heart-beats: answered {answered}, swallowed {}, classified {answers_seen}, the broker got {broker_got}",
        beats.actions
    );
    assert_eq!(
        broker_got + beats.actions,
        answered,
        "every answer but the swallowed ones reached the broker: {}",
        broker.proc.both()
    );

    injected_equals_detected(
        &proxy,
        SCRIPT,
        &url,
        json!({"kind": "data"}),
        json!({"contains": "\"n\":"}),
    );
    let metrics = proxy.metrics();
    let kind = |stream: &str, kind: &str| {
        metric_sum(
            &metrics,
            "wsfault_messages_total",
            &[("proxy", "app"), ("stream", stream), ("kind", kind)],
        ) as u64
    };
    assert!(
        kind("downstream", "heartbeat") > 0 && kind("downstream", "data") > 0,
        "the broker's EOLs are heartbeat, its MESSAGE and RECEIPT frames data: {metrics}"
    );
    assert!(
        broker.proc.events_named("error").is_empty(),
        "no ERROR frame: {}",
        broker.proc.both()
    );
    assert!(broker.proc.running(), "{}", broker.proc.both());
}

/// A latency with jitter, then a toxic whose `match.message` passes data
/// by: the data keeps its order (messages passed by a toxic overtake what
/// that toxic holds, never each other). Found by the compose stage: it
/// once reordered about 1 500 messages in 10 s.
#[test]
fn jitter_then_a_matcher_keeps_the_order() {
    let Some(feed) = json_feed_server(&["--rate", "50"]) else {
        return;
    };
    let proxy = ProxyProc::start(&feed.addr.to_string(), &["--seed", "11"]);
    for toxic in [
        json!({"name": "jitter", "type": "latency", "attributes": {"latency": 100, "jitter": 60}}),
        json!({"name": "hb", "type": "latency", "attributes": {"latency": 2000},
               "match": {"message": {"kind": "heartbeat"}}}),
    ] {
        let (status, body) = proxy.api("POST", "/proxies/app/toxics", Some(&toxic.to_string()));
        assert_eq!(status, 200, "{body}");
    }
    let out = run_case(
        &proxy,
        Case {
            script: "examples/load/json-feed.yaml",
            url: format!("ws://{}/?from={{{{last_seq}}}}", proxy.listen),
            duration_s: 3,
            rate: "10",
            extra: &[],
            toxic: None,
            add_at: 0.0,
            remove_at: 0.0,
        },
    );
    assert!(out.messages("received") > 300, "{}", out.show());
    assert_eq!(out.messages("reordered"), 0, "{}", out.show());
    assert_eq!(out.report["pass"], true, "{}", out.show());
    let jittered = metric_sum(
        &proxy.metrics(),
        "wsfault_toxic_actions_total",
        &[("toxic", "jitter")],
    );
    assert!(jittered > 300.0, "the jitter acted: {jittered}");
}
