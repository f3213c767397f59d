//! Autobahn conformance through the proxy (kosoku, fuzzingclient mode).
//!
//! Each server under test is driven once directly and once through
//! `wsfault proxy`; the per-case outcomes (behavior, behaviorClose, remote
//! close code) must be identical (a case that races inside the server is
//! re-run; see `assert_identical`). With the default `extensions: strip` the
//! compression cases (12.*, 13.*) differ by design, so a sample of them is
//! compared through a proxy with `extensions: pass` instead.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use common::*;
use wsfault::config::{ExtensionsMode, ProxySpec};

type Outcomes = BTreeMap<String, (String, String, Option<i64>)>;

async fn run_suite(
    python: &Path,
    target: SocketAddr,
    out: &Path,
    cases: &[&str],
    exclude: &[&str],
) -> Outcomes {
    let mut cmd = tokio::process::Command::new(python);
    cmd.args([
        "-c",
        "import sys; from kosoku._cli import main; sys.argv[0] = 'kosoku'; sys.exit(main())",
        "-m",
        "fuzzingclient",
        "-p",
        "4",
        "-o",
    ])
    .arg(out);
    for c in cases {
        cmd.args(["-i", c]);
    }
    for c in exclude {
        cmd.args(["-x", c]);
    }
    cmd.arg(target.to_string());
    let output = cmd.output().await.expect("run kosoku");
    assert!(
        output.status.success() || out.join("index.json").exists(),
        "kosoku failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("index.json")).expect("index.json"))
            .expect("json");
    let agent = index
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(|v| v.as_object())
        .expect("agent");
    agent
        .iter()
        .map(|(case, r)| {
            (
                case.clone(),
                (
                    r["behavior"].as_str().unwrap_or("").to_string(),
                    r["behaviorClose"].as_str().unwrap_or("").to_string(),
                    r["remoteCloseCode"].as_i64(),
                ),
            )
        })
        .collect()
}

/// Cases whose outcome differs between the two runs.
fn differing(direct: &Outcomes, proxied: &Outcomes, what: &str) -> Vec<String> {
    assert!(!direct.is_empty(), "{what}: no cases ran");
    assert_eq!(direct.len(), proxied.len(), "{what}: case count differs");
    direct
        .iter()
        .filter(|(case, outcome)| proxied.get(*case) != Some(outcome))
        .map(|(case, _)| case.clone())
        .collect()
}

/// Requires identical outcomes. A few cases race inside the server itself
/// (e.g. whether an echo leaves before a protocol error is noticed, which
/// decides OK vs NON-STRICT), so a differing case is run again,
/// five times each way: it passes only if the proxied outcome is also one the
/// server gives directly.
#[allow(clippy::too_many_arguments)]
async fn assert_identical(
    python: &Path,
    direct_addr: SocketAddr,
    proxied_addr: SocketAddr,
    dir: &Path,
    direct: &Outcomes,
    proxied: &Outcomes,
    what: &str,
) {
    let mut failures = Vec::new();
    for case in differing(direct, proxied, what) {
        let mut seen_direct = vec![direct[&case].clone()];
        let mut seen_proxied = vec![proxied[&case].clone()];
        for round in 0..5 {
            let d = run_suite(
                python,
                direct_addr,
                &dir.join(format!("re-d-{case}-{round}")),
                &[&case],
                &[],
            )
            .await;
            let p = run_suite(
                python,
                proxied_addr,
                &dir.join(format!("re-p-{case}-{round}")),
                &[&case],
                &[],
            )
            .await;
            seen_direct.extend(d.get(&case).cloned());
            seen_proxied.extend(p.get(&case).cloned());
        }
        let unexplained: Vec<_> = seen_proxied
            .iter()
            .filter(|o| !seen_direct.contains(o))
            .collect();
        if unexplained.is_empty() {
            continue;
        }
        // OK vs NON-STRICT with the same close behaviour and code is a
        // timing difference (under load the proxy hands two chopped frames
        // to the server in one segment, so it sees the bad frame before its
        // echo leaves): both are passes. Reported, not failed.
        let timing_only = unexplained.iter().all(|(b, c, code)| {
            seen_direct.iter().any(|(db, dc, dcode)| {
                dc == c
                    && dcode == code
                    && matches!(
                        (db.as_str(), b.as_str()),
                        ("OK", "NON-STRICT") | ("NON-STRICT", "OK")
                    )
            })
        });
        let line = format!("{case}: direct {seen_direct:?} vs proxied {seen_proxied:?}");
        if timing_only {
            eprintln!("note: {what}: timing-only difference (OK vs NON-STRICT): {line}");
        } else {
            failures.push(line);
        }
    }
    assert!(
        failures.is_empty(),
        "{what}: {} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

async fn compare(python: &Path, server: SocketAddr, label: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let proxy = TestProxy::start(None).await;
    let strip = proxy.add("strip", &server.to_string()).await;
    let mut pass_spec = ProxySpec::new("pass", "127.0.0.1:0", &server.to_string());
    pass_spec.extensions = ExtensionsMode::Pass;
    let pass = proxy.add_spec(pass_spec).await;

    // Everything but compression, through the default proxy.
    let exclude = ["12.*", "13.*"];
    let direct = run_suite(python, server, &dir.path().join("direct"), &[], &exclude).await;
    let proxied = run_suite(python, strip, &dir.path().join("strip"), &[], &exclude).await;
    let what = format!("{label}, extensions: strip");
    assert_identical(python, server, strip, dir.path(), &direct, &proxied, &what).await;

    // Compression cases through a proxy that passes the extension. The
    // full 12.*/13.* groups take minutes on two cores (deflate of 1000
    // messages up to 128 KiB each in Python); the first nine cases of three
    // groups cover small messages with and without context takeover.
    let cases: Vec<String> = ["12.1", "13.1", "13.7"]
        .iter()
        .flat_map(|group| (1..=9).map(move |n| format!("{group}.{n}")))
        .collect();
    let cases: Vec<&str> = cases.iter().map(String::as_str).collect();
    let direct = run_suite(python, server, &dir.path().join("direct-z"), &cases, &[]).await;
    let proxied = run_suite(python, pass, &dir.path().join("pass-z"), &cases, &[]).await;
    let what = format!("{label}, extensions: pass");
    assert_identical(python, server, pass, dir.path(), &direct, &proxied, &what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_outcomes_are_identical_through_the_proxy_python_server() {
    let Some(python) = interpreter_with("kosoku") else {
        return;
    };
    let Some(server) = PyEcho::start_with(&["--deflate"]).await else {
        return;
    };
    compare(&python, server.addr, "python websockets (deflate)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_outcomes_are_identical_through_the_proxy_wsfault_echo() {
    let Some(python) = interpreter_with("kosoku") else {
        return;
    };
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let _echo = KillOnDrop(
        std::process::Command::new(BIN)
            .args(["echo", "--listen", &addr.to_string()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn wsfault echo"),
    );
    wait_listening(addr).await;
    compare(&python, addr, "wsfault echo").await;
}
