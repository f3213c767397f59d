//! Metrics (docs/reference.md#metrics): the exposition passes `promtool check metrics`, the
//! counters agree with the traffic, every toxic action is counted, and a
//! real Prometheus server scrapes the admin listener.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use wsfault::frame::{Frame, Opcode};

/// One parsed sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

async fn scrape(admin: SocketAddr) -> Vec<Sample> {
    let (status, text) = http(admin, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(parse_sample)
        .collect()
}

fn parse_sample(line: &str) -> Sample {
    let (series, value) = line
        .rsplit_once(' ')
        .unwrap_or_else(|| panic!("sample line {line:?}"));
    let value = value
        .parse()
        .unwrap_or_else(|_| panic!("value in {line:?}"));
    let (name, labels) = match series.split_once('{') {
        None => (series.to_string(), BTreeMap::new()),
        Some((name, rest)) => {
            let labels = rest
                .trim_end_matches('}')
                .split("\",")
                .filter(|kv| !kv.is_empty())
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.trim_matches('"').to_string()))
                })
                .collect();
            (name.to_string(), labels)
        }
    };
    (name, labels, value)
}

/// Sum of the samples named `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

async fn value_now(admin: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(&scrape(admin).await, name, labels)
}

#[tokio::test]
async fn counters_agree_with_the_traffic() {
    let upstream = RawUpstream::bind().await;
    let (proxy, addr) = TestProxy::with_proxy(&upstream.addr.to_string(), None).await;
    let admin = proxy.admin;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    eventually("connection counted", || async {
        value_now(admin, "wsfault_connections_active", &[("proxy", "p")]).await == 1.0
    })
    .await;
    assert_eq!(
        value_now(admin, "wsfault_connections_total", &[("proxy", "p")]).await,
        1.0
    );

    // Upstream: 6 whole text messages, one message in two frames, one ping.
    const N: usize = 7;
    let mut wire = 0u64;
    for i in 0..N - 1 {
        let payload = format!("message {i}");
        client.send(true, 0, Opcode::Text, payload.as_bytes()).await;
        wire += 2 + 4 + payload.len() as u64;
    }
    client.send(false, 0, Opcode::Binary, b"first half").await;
    client
        .send(true, 0, Opcode::Continuation, b"second half")
        .await;
    client.send(true, 0, Opcode::Ping, b"are you there").await;
    wire += (2 + 4 + 10) + (2 + 4 + 11) + (2 + 4 + 13);
    for _ in 0..N + 2 {
        server.recv().await;
    }
    // Downstream: a pong and 3 binary messages.
    server.send(true, 0, Opcode::Pong, b"are you there").await;
    for _ in 0..3 {
        server.send(true, 0, Opcode::Binary, &[7u8; 200]).await;
    }
    for _ in 0..4 {
        client.recv().await;
    }
    let up = [("proxy", "p"), ("stream", "upstream")];
    let down = [("proxy", "p"), ("stream", "downstream")];
    eventually("upstream frames counted", || async {
        value_now(admin, "wsfault_frames_total", &up).await == (N + 2) as f64
            && value_now(admin, "wsfault_frames_total", &down).await == 4.0
    })
    .await;
    let s = scrape(admin).await;
    assert_eq!(value(&s, "wsfault_messages_total", &up), N as f64);
    assert_eq!(value(&s, "wsfault_messages_total", &down), 3.0);
    let frames = |labels: &[(&str, &str)], opcode: &str| {
        let mut l = labels.to_vec();
        l.push(("opcode", opcode));
        value(&s, "wsfault_frames_total", &l)
    };
    assert_eq!(frames(&up, "text"), (N - 1) as f64);
    assert_eq!(frames(&up, "binary"), 1.0);
    assert_eq!(frames(&up, "continuation"), 1.0);
    assert_eq!(frames(&up, "ping"), 1.0);
    assert_eq!(frames(&down, "pong"), 1.0);
    assert_eq!(frames(&down, "binary"), 3.0);
    assert_eq!(frames(&down, "close"), 0.0);
    assert_eq!(value(&s, "wsfault_bytes_total", &up), wire as f64);
    assert_eq!(
        value(&s, "wsfault_bytes_total", &down),
        (2 + 13 + 3 * (2 + 2 + 200)) as f64
    );
    let delays = value(&s, "wsfault_relay_delay_seconds_count", &up);
    assert_eq!(
        delays,
        (N + 2) as f64,
        "one relay delay per forwarded frame"
    );
    assert_eq!(value(&s, "wsfault_relay_delay_seconds_count", &down), 4.0);
    assert_eq!(
        value(
            &s,
            "wsfault_relay_delay_seconds_bucket",
            &[("proxy", "p"), ("stream", "upstream"), ("le", "+Inf")]
        ),
        delays
    );

    // The upstream closes with 4000, the client answers 1000.
    server.send_frame(&Frame::close(4000, "bye", None)).await;
    assert_eq!(client.close_code_within(SOON).await, Some(4000));
    client
        .send_frame(&Frame::close(1000, "", Some([9, 9, 9, 9])))
        .await;
    assert_eq!(server.close_code_within(SOON).await, Some(1000));
    drop((client, server));
    eventually("closes counted and the connection gone", || async {
        let s = scrape(admin).await;
        value(
            &s,
            "wsfault_closes_total",
            &[("proxy", "p"), ("code", "4000"), ("by", "upstream")],
        ) == 1.0
            && value(
                &s,
                "wsfault_closes_total",
                &[("proxy", "p"), ("code", "1000"), ("by", "client")],
            ) == 1.0
            && value(&s, "wsfault_connections_active", &[("proxy", "p")]) == 0.0
    })
    .await;
    let s = scrape(admin).await;
    assert_eq!(
        value(&s, "wsfault_connections_total", &[("proxy", "p")]),
        1.0
    );
    assert_eq!(value(&s, "wsfault_closes_total", &[("proxy", "p")]), 2.0);
}

#[tokio::test]
async fn every_toxic_action_is_counted() {
    let upstream = RawUpstream::bind().await;
    let (proxy, addr) = TestProxy::with_proxy(&upstream.addr.to_string(), Some(7)).await;
    proxy.toxic("p", json!({"name": "loss", "type": "message_loss", "stream": "upstream", "attributes": {"probability": 1.0}})).await;
    proxy.toxic("p", json!({"name": "twice", "type": "duplicate", "stream": "downstream", "attributes": {"probability": 1.0}})).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    for _ in 0..3 {
        client.send(true, 0, Opcode::Text, b"dropped").await;
    }
    for _ in 0..2 {
        server.send(true, 0, Opcode::Text, b"doubled").await;
    }
    for _ in 0..4 {
        assert_eq!(&client.recv().await.payload[..], b"doubled");
    }
    assert!(server
        .recv_within(Duration::from_millis(200))
        .await
        .is_none());
    let admin = proxy.admin;
    eventually("toxic actions counted", || async {
        let s = scrape(admin).await;
        value(
            &s,
            "wsfault_toxic_actions_total",
            &[("proxy", "p"), ("toxic", "loss"), ("type", "message_loss")],
        ) == 3.0
            && value(
                &s,
                "wsfault_toxic_actions_total",
                &[("proxy", "p"), ("toxic", "twice"), ("type", "duplicate")],
            ) == 2.0
    })
    .await;
    // One more of each: +1 each.
    client.send(true, 0, Opcode::Text, b"dropped").await;
    server.send(true, 0, Opcode::Text, b"doubled").await;
    client.recv().await;
    client.recv().await;
    eventually("one more action each", || async {
        let s = scrape(admin).await;
        value(&s, "wsfault_toxic_actions_total", &[("toxic", "loss")]) == 4.0
            && value(&s, "wsfault_toxic_actions_total", &[("toxic", "twice")]) == 3.0
    })
    .await;
}

#[tokio::test]
async fn process_metrics_are_present() {
    let proxy = TestProxy::start(None).await;
    let s = scrape(proxy.admin).await;
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds_total",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(s.iter().any(|(n, _, _)| n == name), "{name} missing");
    }
    assert!(value(&s, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(value(&s, "process_open_fds", &[]) > 0.0);
}

#[tokio::test]
async fn a_real_scrape_passes_promtool() {
    let Some(promtool) = promtool() else {
        return;
    };
    let echo = tungstenite_echo().await;
    let (proxy, addr) = TestProxy::with_proxy(&echo.to_string(), None).await;
    proxy
        .toxic(
            "p",
            json!({"type": "latency", "attributes": {"latency": 1}}),
        )
        .await;
    // Traffic first, so that every family has samples (closes, delays...).
    let mut client = RawWs::connect(addr, "/", &[]).await;
    client.send(true, 0, Opcode::Text, b"hello").await;
    client.recv().await;
    client
        .send_frame(&Frame::close(1000, "", Some([1, 2, 3, 4])))
        .await;
    let _ = client.close_code_within(SOON).await;
    let (_, text) = http(proxy.admin, "GET", "/metrics", None).await;
    for family in [
        "wsfault_connections_active",
        "wsfault_connections_total",
        "wsfault_handshake_failures_total",
        "wsfault_frames_total",
        "wsfault_messages_total",
        "wsfault_bytes_total",
        "wsfault_toxic_actions_total",
        "wsfault_closes_total",
        "wsfault_relay_delay_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} not exposed:\n{text}"
        );
    }
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("feed promtool");
    }
    let out = child.wait_with_output().expect("promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics:\n{report}\n---\n{text}"
    );
    for bucket in wsfault::metrics::RELAY_DELAY_BUCKETS {
        let series = format!(
            "wsfault_relay_delay_seconds_bucket{{proxy=\"p\",stream=\"upstream\",le=\"{bucket}\"}}"
        );
        assert!(text.contains(&series), "{series} missing:\n{text}");
    }
}

async fn prometheus_query(prom: SocketAddr, query: &str) -> serde_json::Value {
    let path = format!(
        "/api/v1/query?query={}",
        query
            .replace('{', "%7B")
            .replace('}', "%7D")
            .replace('"', "%22")
            .replace('=', "%3D")
    );
    let (status, body) = http(prom, "GET", &path, None).await;
    if status != 200 {
        return serde_json::Value::Null;
    }
    serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_admin_listener() {
    let Some(prometheus) = prometheus() else {
        return;
    };
    let echo = tungstenite_echo().await;
    let (proxy, addr) = TestProxy::with_proxy(&echo.to_string(), None).await;
    let mut client = RawWs::connect(addr, "/", &[]).await;
    client.send(true, 0, Opcode::Text, b"scrape me").await;
    client.recv().await;

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: wsfault\n    static_configs:\n      - targets: ['{}']\n",
            proxy.admin
        ),
    )
    .expect("write config");
    let prom: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
    let _server = KillOnDrop(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address={prom}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut up = serde_json::Value::Null;
    let mut messages = serde_json::Value::Null;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if tokio::net::TcpStream::connect(prom).await.is_err() {
            continue;
        }
        up = prometheus_query(prom, "up").await;
        messages = prometheus_query(
            prom,
            "wsfault_messages_total{stream=\"upstream\",kind=\"data\"}",
        )
        .await;
        let target_up = up["data"]["result"][0]["value"][1] == "1";
        let seen = messages["data"]["result"][0]["value"][1] == "1";
        if target_up && seen {
            assert_eq!(
                up["data"]["result"][0]["metric"]["instance"],
                proxy.admin.to_string()
            );
            assert_eq!(messages["data"]["result"][0]["metric"]["proxy"], "p");
            return;
        }
    }
    let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    panic!("prometheus never saw the target up with a wsfault series\nup: {up}\nmessages: {messages}\nlog tail:\n{}", log.lines().rev().take(20).collect::<Vec<_>>().join("\n"));
}
