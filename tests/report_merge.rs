//! `wsfault report merge` (issue 15; docs/reference.md#merged-reports), the
//! real binary: one run's samples split across two report files merge to
//! exactly the percentiles of one report holding all of them; two real
//! `wsfault load` workers side by side merge to summed counters and one
//! verdict; bad input exits 2 naming the file.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use hdrhistogram::Histogram;
use serde_json::Value;
use wsfault::load::Report;

fn histogram(samples: &[u64]) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for &us in samples {
        h.record(us).expect("record");
    }
    h
}

/// A report holding `samples` (µs) as its latencies.
fn report_with(samples: &[u64], reconnects: &[u64]) -> Report {
    let mut r = Report {
        mode: "resume".into(),
        url: "ws://proxy:8080/".into(),
        duration_s: 30.0,
        throughput_mps: samples.len() as f64 / 30.0,
        ..Report::default()
    };
    r.connections.attempted = 1000;
    r.connections.succeeded = 1000;
    r.messages.sent = samples.len() as u64;
    r.messages.received = samples.len() as u64;
    r.set_histograms(&histogram(samples), &histogram(reconnects));
    r
}

fn write_report(dir: &Path, name: &str, r: &Report) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string(r).expect("JSON")).expect("write");
    path.display().to_string()
}

fn read_json(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("JSON")
}

/// Deterministic samples with a long tail (µs).
fn samples(n: u64, salt: u64) -> Vec<u64> {
    (0..n)
        .map(|i| {
            let x = (i * 2_654_435_761 + salt * 97) % 10_000;
            if x < 150 {
                100_000 + x * 13_000
            } else {
                800 + x % 4_000
            }
        })
        .collect()
}

#[test]
fn split_samples_merge_to_the_percentiles_of_one_process_with_all_of_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let all = samples(50_000, 1);
    let reconnects = samples(400, 2);
    let whole = report_with(&all, &reconnects);
    let (a, b) = all.split_at(21_000);
    let (ra, rb) = reconnects.split_at(150);
    let a = write_report(dir.path(), "a.json", &report_with(a, ra));
    let b = write_report(dir.path(), "b.json", &report_with(b, rb));
    let merged = dir.path().join("merged.json").display().to_string();
    let junit = dir.path().join("junit.xml").display().to_string();
    let ran = run(
        &mut wsfault(&[
            "report", "merge", &a, &b, "--slo", "p99<2s", "--slo", "loss==0", "--report", &merged,
            "--junit", &junit,
        ]),
        "wsfault report merge",
        Duration::from_secs(30),
    );
    assert_eq!(ran.code(), Some(0), "{}", ran.both());
    assert!(ran.stdout.contains("merged 2 reports"), "{}", ran.stdout);
    let m = read_json(&merged);
    let w = serde_json::to_value(&whole).expect("JSON");
    for field in ["p50", "p90", "p95", "p99", "p999", "max"] {
        assert_eq!(
            m["latency_ms"][field], w["latency_ms"][field],
            "latency {field}"
        );
    }
    for field in ["p50", "p99", "max"] {
        assert_eq!(
            m["reconnect_ms"][field], w["reconnect_ms"][field],
            "reconnect {field}"
        );
    }
    assert_eq!(m["messages"]["received"], 50_000);
    assert_eq!(m["connections"]["attempted"], 2_000);
    assert_eq!(m["pass"], true);
    let xml = std::fs::read_to_string(&junit).expect("junit");
    check_xml(&xml).unwrap_or_else(|e| panic!("{e}: {xml}"));
    assert!(xml.contains(r#"name="p99&lt;2s""#), "{xml}");

    // The whole fails an SLO that the part with fewer slow samples passes.
    let ran = run(
        &mut wsfault(&["report", "merge", &a, &b, "--slo", "p50<1ms"]),
        "wsfault report merge",
        Duration::from_secs(30),
    );
    assert_eq!(ran.code(), Some(1), "{}", ran.both());
    assert!(ran.stderr.contains("SLO p50<1ms failed"), "{}", ran.stderr);
}

#[test]
fn bad_reports_exit_2_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write_report(dir.path(), "good.json", &report_with(&[1_000, 2_000], &[]));
    let mut old = report_with(&[1_000], &[]);
    old.histograms = None;
    let old = write_report(dir.path(), "old.json", &old);
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "{not json").expect("write");
    let junk = junk.display().to_string();
    let missing = dir.path().join("missing.json").display().to_string();
    for (args, expected) in [
        (
            vec![good.as_str(), old.as_str()],
            format!("{old}: has no `histograms`"),
        ),
        (
            vec![good.as_str(), junk.as_str()],
            format!("{junk}: not a wsfault load report"),
        ),
        (
            vec![missing.as_str()],
            format!("{missing}: cannot read the report"),
        ),
        (vec![good.as_str(), "--slo", "p99<<1"], "p99<<1".to_string()),
    ] {
        let mut all = vec!["report", "merge"];
        all.extend(args.iter());
        let ran = run(
            &mut wsfault(&all),
            "wsfault report merge",
            Duration::from_secs(30),
        );
        assert_eq!(ran.code(), Some(2), "{args:?}: {}", ran.both());
        assert!(ran.stderr.contains(&expected), "{args:?}: {}", ran.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_real_load_workers_merge_to_one_verdict() {
    let echo = start_echo(None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = echo.url();
    let worker = |name: &str, conns: &str| {
        let path = dir.path().join(name).display().to_string();
        let cmd = wsfault(&[
            "load",
            "--url",
            &url,
            "--connections",
            conns,
            "--rate",
            "20",
            "--duration",
            "2s",
            "--report",
            &path,
        ]);
        (path, cmd)
    };
    let (a, mut cmd_a) = worker("a.json", "7");
    let (b, mut cmd_b) = worker("b.json", "5");
    let (ran_a, ran_b) = tokio::task::spawn_blocking(move || {
        let a = ChildGuard::spawn(&mut cmd_a, "worker a");
        let b = ChildGuard::spawn(&mut cmd_b, "worker b");
        (
            a.wait(Duration::from_secs(60)),
            b.wait(Duration::from_secs(60)),
        )
    })
    .await
    .expect("workers");
    assert_eq!(ran_a.code(), Some(0), "{}", ran_a.both());
    assert_eq!(ran_b.code(), Some(0), "{}", ran_b.both());
    let merged = dir.path().join("m.json").display().to_string();
    let ran = run(
        &mut wsfault(&["report", "merge", &a, &b, "--report", &merged]),
        "wsfault report merge",
        Duration::from_secs(30),
    );
    assert_eq!(ran.code(), Some(0), "{}", ran.both());
    let (ra, rb, m) = (read_json(&a), read_json(&b), read_json(&merged));
    for (group, field) in [
        ("connections", "succeeded"),
        ("connections", "attempted"),
        ("messages", "sent"),
        ("messages", "received"),
    ] {
        let sum = ra[group][field].as_u64().unwrap_or(0) + rb[group][field].as_u64().unwrap_or(0);
        assert_eq!(m[group][field].as_u64(), Some(sum), "{group}.{field}");
    }
    assert_eq!(m["connections"]["succeeded"], 12);
    let p99 = |r: &Value| r["latency_ms"]["p99"].as_f64().unwrap_or(-1.0);
    let (lo, hi) = (p99(&ra).min(p99(&rb)), p99(&ra).max(p99(&rb)));
    assert!(
        (lo..=hi).contains(&p99(&m)),
        "the merged p99 {} lies between the workers' {lo} and {hi}",
        p99(&m)
    );
    assert_eq!(m["pass"], true);
    let slos: Vec<&str> = m["slo"]
        .as_array()
        .expect("slo")
        .iter()
        .filter_map(|s| s["expr"].as_str())
        .collect();
    assert_eq!(slos, ["loss==0", "dup==0", "reorder==0", "corrupt==0"]);
    echo.shutdown().await.expect("echo shutdown");
}
