//! Script mode with the rest of `wsfault load` (docs/reference.md#script-mode):
//! `--scenario` phases, SLOs, `--junit`, `--baseline` and the progress lines
//! work as in the other modes, against the JSON feed on Python `websockets`
//! (no proxy: these are the load client's own features).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

fn load(args: &[&str]) -> Ran {
    let mut cmd = Command::new(BIN);
    cmd.arg("load").args(args).stdin(Stdio::null());
    run(&mut cmd, "wsfault load", Duration::from_secs(60))
}

#[test]
fn scenario_slos_junit_baseline_and_progress_work_in_script_mode() {
    let Some(feed) = json_feed_server(&["--rate", "20"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = dir.path().join("phases.yaml");
    std::fs::write(
        &scenario,
        "phases:\n  - {name: ramp, duration: 1500ms, connections: 3, rate: 10}\n  - {name: hold, duration: 1500ms, connections: 3, rate: 20}\n",
    )
    .expect("scenario");
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let (first, second, junit) = (path("first.json"), path("second.json"), path("junit.xml"));
    let url = format!("ws://{}/?from={{{{last_seq}}}}", feed.addr);
    let script = format!("{ROOT}/examples/load/json-feed.yaml");
    let common = [
        "--script",
        script.as_str(),
        "--url",
        url.as_str(),
        "--scenario",
        scenario.to_str().expect("utf-8"),
        "--slo",
        "p99<2s",
        "--slo",
        "loss==0",
        "--slo",
        "connect_success>99%",
    ];

    let ran = load(&[&common[..], &["--report", &first, "--junit", &junit]].concat());
    assert_eq!(ran.code(), Some(0), "{}", ran.both());
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&first).expect("report")).expect("JSON");
    assert_eq!(report["mode"], "script");
    assert_eq!(
        report["connections"]["succeeded"], 3,
        "scenario target reached"
    );
    assert!(report["messages"]["sent"].as_u64().unwrap_or(0) > 0);
    assert!(report["latency_ms"]["p99"].as_f64().unwrap_or(0.0) > 0.0);
    let slos: Vec<&str> = report["slo"]
        .as_array()
        .expect("slo array")
        .iter()
        .filter_map(|s| s["expr"].as_str())
        .collect();
    assert_eq!(slos, ["p99<2s", "loss==0", "connect_success>99%"]);
    assert_eq!(report["script"]["protocol"], "none");
    assert_eq!(
        report["script"]["checks"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
    let xml = std::fs::read_to_string(&junit).expect("junit");
    assert!(
        xml.contains(r#"name="p99&lt;2s""#) && xml.contains(r#"name="loss==0""#),
        "{xml}"
    );
    // Progress: plain lines (stderr is not a terminal), with phase names.
    assert!(
        ran.stderr.contains("ramp conns") || ran.stderr.contains("hold conns"),
        "{}",
        ran.stderr
    );

    let ran = load(
        &[
            &common[..],
            &[
                "--report",
                &second,
                "--baseline",
                &first,
                "--max-regression",
                "1000%",
            ],
        ]
        .concat(),
    );
    assert_eq!(ran.code(), Some(0), "{}", ran.both());
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&second).expect("report")).expect("JSON");
    let metrics: Vec<&str> = report["baseline"]
        .as_array()
        .expect("baseline array")
        .iter()
        .filter_map(|b| b["metric"].as_str())
        .collect();
    assert_eq!(
        metrics,
        ["throughput_mps", "latency_ms.p50", "latency_ms.p99"]
    );

    // A failing SLO fails the verdict in script mode too.
    let ran = load(&[&common[..], &["--slo", "throughput>1000000"]].concat());
    assert_eq!(ran.code(), Some(1), "{}", ran.both());
    assert!(
        ran.stderr.contains("SLO throughput>1000000 failed"),
        "{}",
        ran.both()
    );
}
