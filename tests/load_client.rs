//! `wsfault load`: clean verdicts against the real echo server (library and
//! binary), exact reports against a deliberately broken server, exit codes,
//! the JSON report, JUnit XML, scenarios, baselines, and a Python
//! `websockets` echo server.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use wsfault::load::{self, LoadConfig, Mode, Progress, Slo};

fn cfg(url: &str, connections: u32, rate: f64, secs: f64) -> LoadConfig {
    let mut c = LoadConfig::new(url, connections, rate, Duration::from_secs_f64(secs));
    c.progress = Progress::Off;
    c
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn read_json(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).expect("report written");
    serde_json::from_str(&text).expect("report is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_mode_against_the_echo_server_passes() {
    let server = start_echo(None).await;
    let mut c = cfg(&server.url(), 20, 50.0, 1.5);
    c.message_bytes = 200;
    c.slos = vec![
        Slo::parse("p99<2000ms").unwrap(),
        Slo::parse("connect_success>99%").unwrap(),
    ];
    let live = c.live.clone();
    let report = load::run(c).await.unwrap();
    assert!(report.pass, "{}", load::render_table(&report));
    let m = &report.messages;
    assert!(m.sent >= 20, "sent {}", m.sent);
    assert_eq!(m.received, m.sent);
    assert_eq!(
        (m.lost, m.duplicated, m.reordered, m.corrupted),
        (0, 0, 0, 0)
    );
    assert_eq!(report.connections.attempted, 20);
    assert_eq!(report.connections.succeeded, 20);
    assert!(report.latency_ms.p50 > 0.0 && report.latency_ms.p50 <= report.latency_ms.p99);
    assert!(report.latency_ms.p99 <= report.latency_ms.max);
    assert!(report.throughput_mps > 0.0);
    let snap = live.snapshot();
    assert_eq!(snap.sent, m.sent);
    assert_eq!(snap.received, m.received);
    assert!(!snap.running);
    assert!(load::render_table(&report).contains("PASS"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_mode_against_the_echo_server_passes() {
    let server = start_echo(None).await;
    let mut c = cfg(&server.url(), 10, 40.0, 1.5);
    c.mode = Mode::Resume;
    c.reconnect = true;
    let report = load::run(c).await.unwrap();
    assert!(report.pass, "{}", load::render_table(&report));
    let m = &report.messages;
    assert!(m.sent >= 10);
    assert_eq!(m.received, m.sent);
    assert_eq!(
        (m.lost, m.duplicated, m.reordered, m.corrupted),
        (0, 0, 0, 0)
    );
    assert_eq!(report.mode, "resume");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_mode_reconnects_after_a_server_restart() {
    // The echo server restarts mid-run (its sessions are lost, so only the
    // reconnect itself is checked): the client must notice, reconnect with
    // backoff and measure the time it took.
    let server = start_echo(None).await;
    let addr = server.addr;
    let mut c = cfg(&server.url(), 3, 20.0, 3.0);
    c.mode = Mode::Resume;
    c.reconnect = true;
    c.drain = Some(Duration::from_secs(2));
    c.slos = vec![Slo::parse("reconnects>=1").unwrap()];
    let run = tokio::spawn(load::run(c));
    tokio::time::sleep(Duration::from_millis(800)).await;
    server.shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listener = tokio::net::TcpListener::bind(addr).await.expect("rebind");
    let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(wsfault::echo::serve(listener, None, async move {
        let _ = rx.await;
    }));
    let report = run.await.unwrap().unwrap();
    assert!(
        report.connections.reconnects >= 1,
        "{}",
        load::render_table(&report)
    );
    assert!(report.connections.disconnects >= 1);
    assert!(report.reconnect_ms.max > 0.0);
    assert!(report.reconnect_ms.p50 <= report.reconnect_ms.max);
    assert!(report.slo[0].pass);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_writes_a_full_report_and_junit() {
    let server = start_echo(None).await;
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("report.json");
    let junit_path = dir.path().join("junit.xml");
    let out = run_wsfault(vec![
        "load".into(),
        "--url".into(),
        server.url(),
        "--connections".into(),
        "5".into(),
        "--rate".into(),
        "20".into(),
        "--duration".into(),
        "1s".into(),
        "--slo".into(),
        "p99<5s".into(),
        "--slo".into(),
        "loss==0".into(),
        "--slo".into(),
        "errors<1%".into(),
        "--slo".into(),
        "throughput>0".into(),
        "--header".into(),
        "X-Test: <&\"yes\">".into(),
        "--report".into(),
        report_path.display().to_string(),
        "--junit".into(),
        junit_path.display().to_string(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("PASS") && stdout.contains("p99<5s"),
        "{stdout}"
    );
    let r = read_json(&report_path);
    assert_eq!(r["pass"], true);
    assert!(r["duration_s"].as_f64().unwrap() > 0.5);
    for k in ["attempted", "succeeded", "failed", "reconnects"] {
        assert!(r["connections"][k].is_u64(), "connections.{k}");
    }
    for k in [
        "sent",
        "received",
        "lost",
        "duplicated",
        "reordered",
        "corrupted",
    ] {
        assert!(r["messages"][k].is_u64(), "messages.{k}");
    }
    for k in ["p50", "p90", "p95", "p99", "p999", "max"] {
        assert!(r["latency_ms"][k].is_number(), "latency_ms.{k}");
    }
    assert!(r["throughput_mps"].as_f64().unwrap() > 0.0);
    for k in ["p50", "p99", "max"] {
        assert!(r["reconnect_ms"][k].is_number(), "reconnect_ms.{k}");
    }
    let slo = r["slo"].as_array().unwrap();
    assert_eq!(slo.len(), 4);
    for s in slo {
        assert!(
            s["expr"].is_string() && s["value"].is_number() && s["pass"] == true,
            "{s}"
        );
    }
    let xml = std::fs::read_to_string(&junit_path).unwrap();
    check_xml(&xml).unwrap_or_else(|e| panic!("junit not well-formed: {e}\n{xml}"));
    assert_eq!(xml.matches("<testcase ").count(), 4);
    assert!(xml.contains("name=\"p99&lt;5s\""));
    assert!(!xml.contains("<failure"));
    if let Some(py) = python() {
        let ok = std::process::Command::new(py)
            .args([
                "-c",
                "import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])",
            ])
            .arg(&junit_path)
            .status()
            .unwrap();
        assert!(ok.success(), "python rejects the junit XML");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_slo_and_bad_flags_exit_2() {
    let base = |extra: &[&str]| {
        let mut v = s(&["load", "--url", "ws://127.0.0.1:1/", "--duration", "1s"]);
        v.extend(s(extra));
        v
    };
    let out = run_wsfault(base(&["--slo", "p98<<1ms"])).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("p98<<1ms") && err.contains("connect_success") && err.contains("p99"),
        "{err}"
    );
    let out = run_wsfault(base(&["--slo", "throughput>5ms"])).await;
    assert_eq!(out.status.code(), Some(2));
    let out = run_wsfault(base(&["--header", "no-colon"])).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--header"));
    let out = run_wsfault(s(&["load", "--url", "http://x/"])).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--url"));
    let out = run_wsfault(base(&["--mode", "sideways"])).await;
    assert_eq!(out.status.code(), Some(2));
    let out = run_wsfault(base(&["--duration", "soon"])).await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_scenario_exits_2_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "phases:\n  - {name: ramp, duration: 3 fortnights, connections: 5}\n",
    )
    .unwrap();
    let out = run_wsfault(vec![
        "load".into(),
        "--url".into(),
        "ws://127.0.0.1:1/".into(),
        "--scenario".into(),
        path.display().to_string(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml") && err.contains("duration") && err.contains("ramp"),
        "{err}"
    );

    std::fs::write(
        &path,
        "phases:\n  - {name: a, duration: 1s, connections: 5, colour: red}\n",
    )
    .unwrap();
    let out = run_wsfault(s(&[
        "load",
        "--url",
        "ws://127.0.0.1:1/",
        "--scenario",
        &path.display().to_string(),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("colour"));

    let missing = dir.path().join("missing.yaml");
    let out = run_wsfault(s(&[
        "load",
        "--url",
        "ws://127.0.0.1:1/",
        "--scenario",
        &missing.display().to_string(),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.yaml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_ramps_and_holds() {
    let server = start_echo(None).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.yaml");
    std::fs::write(
        &path,
        "phases:\n  - {name: ramp, duration: 800ms, connections: 6, rate: 20}\n  - {name: hold, duration: 700ms, connections: 6}\n  - {name: down, duration: 500ms, connections: 2, rate: 5}\n",
    )
    .unwrap();
    let report_path = dir.path().join("r.json");
    let out = run_wsfault(s(&[
        "load",
        "--url",
        &server.url(),
        "--scenario",
        &path.display().to_string(),
        "--report",
        &report_path.display().to_string(),
    ]))
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let r = read_json(&report_path);
    assert_eq!(r["connections"]["attempted"], 6);
    assert_eq!(r["connections"]["peak_active"], 6);
    assert_eq!(r["messages"]["lost"], 0);
    assert!(r["duration_s"].as_f64().unwrap() >= 1.9);
}

/// Runs the binary against a broken server and returns (exit code, report).
async fn against_broken(fault: Fault, mode: &str) -> (Option<i32>, Value, String) {
    let addr = start_broken(fault).await;
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("r.json");
    let out = run_wsfault(s(&[
        "load",
        "--url",
        &format!("ws://{addr}/"),
        "--mode",
        mode,
        "--rate",
        "50",
        "--duration",
        "1s",
        "--report",
        &report_path.display().to_string(),
    ]))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    (out.status.code(), read_json(&report_path), stdout)
}

fn counts(r: &Value) -> (u64, u64, u64, u64) {
    let m = &r["messages"];
    (
        m["lost"].as_u64().unwrap(),
        m["duplicated"].as_u64().unwrap(),
        m["reordered"].as_u64().unwrap(),
        m["corrupted"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_mode_reports_exactly_a_swapped_pair() {
    let (code, r, out) = against_broken(Fault::SwapEcho(5), "echo").await;
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(counts(&r), (0, 0, 1, 0), "{out}");
    assert_eq!(r["pass"], false);
    assert!(out.contains("reorder==0") && out.contains("FAIL"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_mode_reports_exactly_a_repeated_echo() {
    let (code, r, out) = against_broken(Fault::RepeatEcho(7), "echo").await;
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(counts(&r), (0, 1, 0, 0), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_mode_reports_exactly_a_missing_echo() {
    let (code, r, out) = against_broken(Fault::SkipEcho(3), "echo").await;
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(counts(&r), (1, 0, 0, 0), "{out}");
    let m = &r["messages"];
    assert_eq!(
        m["received"].as_u64().unwrap() + 1,
        m["sent"].as_u64().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_mode_reports_a_seq_skipped_on_resume() {
    let (code, r, out) = against_broken(Fault::ResumeSkip(5), "resume").await;
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(counts(&r), (1, 0, 0, 0), "{out}");
    assert!(r["messages"]["resent"].as_u64().unwrap() >= 1, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_mode_reports_a_repeated_seq() {
    // The reused seq is a duplicate; the message it was given to never
    // arrives under a seq of its own, so it is lost too.
    let (code, r, out) = against_broken(Fault::ResumeRepeat(4), "resume").await;
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(counts(&r), (1, 1, 0, 0), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_mode_against_a_plain_echo_server_says_so() {
    // A plain echo server echoes the hello back instead of a welcome.
    let addr = start_broken(Fault::PlainEcho).await;
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("r.json");
    let out = run_wsfault(s(&[
        "load",
        "--url",
        &format!("ws://{addr}/"),
        "--mode",
        "resume",
        "--duration",
        "1s",
        "--report",
        &report_path.display().to_string(),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("does not speak the resume protocol"), "{all}");
    let r = read_json(&report_path);
    assert_eq!(r["connections"]["failed"], 1);
    assert_eq!(r["connections"]["succeeded"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_url_fails_with_a_clear_message_and_a_report() {
    let port = closed_port();
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("r.json");
    let out = run_wsfault(s(&[
        "load",
        "--url",
        &format!("ws://127.0.0.1:{port}/"),
        "--connections",
        "2",
        "--duration",
        "1s",
        "--reconnect",
        "--report",
        &report_path.display().to_string(),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("cannot connect") && all.contains(&port.to_string()),
        "{all}"
    );
    assert!(all.contains("no connection succeeded"), "{all}");
    let r = read_json(&report_path);
    assert_eq!(r["pass"], false);
    assert!(r["connections"]["failed"].as_u64().unwrap() >= 2);
    assert_eq!(r["connections"]["succeeded"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upgrade_shows_status_and_body() {
    let addr = start_http_refuser("401 Unauthorized", "token required").await;
    let out = run_wsfault(s(&[
        "load",
        "--url",
        &format!("ws://{addr}/chat"),
        "--duration",
        "1s",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("HTTP 401") && all.contains("token required"),
        "{all}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worse_baseline_fails_the_verdict() {
    let server = start_echo(None).await;
    let mut base = load::Report {
        throughput_mps: 1e9,
        latency_ms: load::report::LatencyMs {
            p50: 1e6,
            p99: 1e6,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut c = cfg(&server.url(), 2, 20.0, 0.5);
    c.baseline = Some(base.clone());
    let report = load::run(c).await.unwrap();
    assert!(!report.pass);
    let b: Vec<_> = report
        .baseline
        .iter()
        .map(|b| (b.metric.as_str(), b.pass))
        .collect();
    assert_eq!(
        b,
        vec![
            ("throughput_mps", false),
            ("latency_ms.p50", true),
            ("latency_ms.p99", true)
        ]
    );
    // Within the allowed regression: pass.
    base.throughput_mps = 1.0;
    let mut c = cfg(&server.url(), 2, 20.0, 0.5);
    c.baseline = Some(base);
    let report = load::run(c).await.unwrap();
    assert!(report.pass, "{}", load::render_table(&report));
    let xml = load::report::junit_xml(&report);
    check_xml(&xml).unwrap();
    assert_eq!(xml.matches("<testcase ").count(), 4 + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_mode_against_python_websockets() {
    let Some(server) = PyEcho::start().await else {
        return;
    };
    let mut c = cfg(&format!("ws://{}/", server.addr), 5, 20.0, 1.0);
    c.message_bytes = 1000;
    let report = load::run(c).await.unwrap();
    assert!(report.pass, "{}", load::render_table(&report));
    assert!(report.messages.sent >= 5);
    assert_eq!(report.messages.received, report.messages.sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_mode_is_exactly_once_through_message_loss() {
    let server = start_echo(None).await;
    let proxy = start_lossy_proxy(
        server.addr,
        Lossy {
            drop_every_up: Some(11),
            drop_every_down: Some(7),
            cut_after: None,
        },
    )
    .await;
    let mut c = cfg(&format!("ws://{proxy}/"), 4, 20.0, 2.0);
    c.mode = Mode::Resume;
    c.reconnect = true;
    c.resend_after = Duration::from_millis(300);
    // Each recovery round (hello up, replayed echo down) fails about one
    // time in five at these loss rates; rounds are resend_after (300 ms) to
    // twice that apart, so 8 s of drain leaves plenty. The drain ends as
    // soon as every message is acknowledged.
    c.drain = Some(Duration::from_secs(8));
    let report = load::run(c).await.unwrap();
    let m = &report.messages;
    assert!(report.pass, "{}", load::render_table(&report));
    assert_eq!(
        (m.lost, m.duplicated, m.reordered, m.corrupted),
        (0, 0, 0, 0)
    );
    assert_eq!(m.received, m.sent);
    assert!(
        m.resent > 0,
        "nothing was resent: {}",
        load::render_table(&report)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_mode_is_exactly_once_across_abrupt_disconnects() {
    let server = start_echo(None).await;
    let proxy = start_lossy_proxy(
        server.addr,
        Lossy {
            cut_after: Some(Duration::from_millis(600)),
            ..Lossy::default()
        },
    )
    .await;
    let mut c = cfg(&format!("ws://{proxy}/"), 4, 30.0, 2.5);
    c.mode = Mode::Resume;
    c.reconnect = true;
    c.drain = Some(Duration::from_secs(8));
    c.slos = [
        "loss==0",
        "dup==0",
        "reorder==0",
        "reconnects>=4",
        "reconnect_p99<5s",
    ]
    .iter()
    .map(|e| Slo::parse(e).unwrap())
    .collect();
    let report = load::run(c).await.unwrap();
    assert!(report.pass, "{}", load::render_table(&report));
    assert_eq!(report.messages.received, report.messages.sent);
    assert!(report.connections.disconnects >= 4);
    assert!(report.reconnect_ms.max > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stress: run by hand with WSFAULT_STRESS=up,down,cut_ms"]
async fn stress_resume_through_faults() {
    let spec = std::env::var("WSFAULT_STRESS").unwrap_or_else(|_| "3,3,900".into());
    let v: Vec<u64> = spec.split(',').map(|x| x.parse().unwrap()).collect();
    let server = start_echo(None).await;
    let opt = |n: u64| (n > 0).then_some(n);
    let proxy = start_lossy_proxy(
        server.addr,
        Lossy {
            drop_every_up: opt(v[0]),
            drop_every_down: opt(v[1]),
            cut_after: opt(v[2]).map(Duration::from_millis),
        },
    )
    .await;
    let mut c = cfg(&format!("ws://{proxy}/"), 20, 30.0, 3.0);
    c.mode = Mode::Resume;
    c.reconnect = true;
    c.resend_after = Duration::from_millis(300);
    c.drain = Some(Duration::from_secs(10));
    let report = load::run(c).await.unwrap();
    println!("{}", load::render_table(&report));
    assert!(report.pass);
}
