//! The CI chaos stage (README "(b)", `.github/workflows/chaos.yml`) on
//! loopback binaries: `wsfault echo`, `wsfault proxy --config` with a
//! scenario from `faults/`, and `wsfault load` in resume mode with the SLOs
//! `loss==0 dup==0 reorder==0`, while toxics are added and removed mid-run
//! through the admin API with `wsfault ctl`. The verdict must pass, the
//! report must show nothing lost, duplicated or reordered, and the proxy
//! must have counted the toxics' actions.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;

/// A toxic switched on and off during the run through `wsfault ctl`.
struct Flip {
    name: &'static str,
    args: &'static [&'static str],
}

/// Runs one scenario through the whole stage. `expect_actions` names
/// toxics (from the scenario or the flips) that must have acted.
fn stage(scenario: &str, flips: &[Flip], expect_actions: &[&str]) {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let echo_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let proxy_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin_url = format!("http://{admin_addr}");

    let _echo = ChildGuard::spawn(
        &mut wsfault(&["echo", "--listen", &echo_addr.to_string()]),
        "wsfault echo",
    );
    wait_tcp(echo_addr, Duration::from_secs(10));

    let config = dir.path().join(format!("{scenario}.yaml"));
    std::fs::write(
        &config,
        loopback_scenario(scenario, &proxy_addr.to_string(), &echo_addr.to_string()),
    )
    .unwrap();
    let proxy = ChildGuard::spawn(
        &mut wsfault(&[
            "proxy",
            "--config",
            config.to_str().unwrap(),
            "--admin",
            &admin_addr.to_string(),
            "--seed",
            "7",
        ]),
        "wsfault proxy",
    );
    wait_http_200(admin_addr, "/healthz", Duration::from_secs(10));
    wait_tcp(proxy_addr, Duration::from_secs(10));

    let report = dir.path().join("report.json");
    let junit = dir.path().join("junit.xml");
    let load = ChildGuard::spawn(
        &mut wsfault(&[
            "load",
            "--url",
            &format!("ws://{proxy_addr}/"),
            "--mode",
            "resume",
            "--reconnect",
            "--connections",
            "10",
            "--rate",
            "20",
            "--duration",
            "12s",
            "--slo",
            "loss==0",
            "--slo",
            "dup==0",
            "--slo",
            "reorder==0",
            "--report",
            report.to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
        ]),
        "wsfault load",
    );

    let ctl = |args: &[&str]| {
        let mut all = vec!["ctl", "--admin", &admin_url, "--timeout", "5s"];
        all.extend_from_slice(args);
        let ran = run(&mut wsfault(&all), "wsfault ctl", Duration::from_secs(15));
        assert!(ran.ok(), "ctl {args:?}: {}", ran.both());
        ran
    };

    // Phase 1 (3 s in): the extra toxics on. Phase 2 (8 s in): off again,
    // so the load's last seconds run under the scenario alone.
    std::thread::sleep(Duration::from_secs(3));
    for flip in flips {
        let mut args = vec!["toxic", "add", "app", "-n", flip.name];
        args.extend_from_slice(flip.args);
        ctl(&args);
    }
    let inspect = ctl(&["inspect", "app"]);
    for flip in flips {
        assert!(
            inspect.stdout.contains(flip.name),
            "{} not listed: {}",
            flip.name,
            inspect.both()
        );
    }
    std::thread::sleep(Duration::from_secs(5));
    let metrics_mid = http_blocking(admin_addr, "GET", "/metrics", None)
        .expect("GET /metrics")
        .1;
    for flip in flips {
        ctl(&["toxic", "remove", "app", "-n", flip.name]);
    }

    let ran = load.wait(Duration::from_secs(60));
    let metrics = http_blocking(admin_addr, "GET", "/metrics", None)
        .expect("GET /metrics")
        .1;
    let proxy_out = proxy.stop();
    assert!(
        ran.ok(),
        "{scenario}: load verdict failed: {}\n--- proxy stderr (tail)\n{}",
        ran.both(),
        tail(&proxy_out.stderr, 40)
    );
    let report = read_report(&report);
    assert_clean_report(&report, scenario);
    assert!(
        std::fs::read_to_string(&junit)
            .expect("junit.xml")
            .contains("testcase"),
        "junit.xml without test cases"
    );

    for toxic in expect_actions {
        // Counters of removed toxics stay in /metrics; the mid-run scrape
        // covers an implementation that drops them with the toxic.
        let n = metric_sum(
            &metrics,
            "wsfault_toxic_actions_total",
            &[("proxy", "app"), ("toxic", toxic)],
        )
        .max(metric_sum(
            &metrics_mid,
            "wsfault_toxic_actions_total",
            &[("proxy", "app"), ("toxic", toxic)],
        ));
        assert!(
            n > 0.0,
            "{scenario}: no actions counted for toxic {toxic}:\n{metrics}"
        );
    }
    let messages = metric_sum(&metrics, "wsfault_messages_total", &[("proxy", "app")]);
    assert!(
        messages > 0.0,
        "{scenario}: no messages counted:\n{metrics}"
    );
    eprintln!(
        "{scenario}: pass in {:.1?}: sent {} received {} reconnects {} proxy messages {messages}",
        started.elapsed(),
        report["messages"]["sent"],
        report["messages"]["received"],
        report["connections"]["reconnects"],
    );
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// faults/mobile-network.yaml, with resets and heavier uplink loss flipped on mid-run.
#[test]
fn mobile_network_with_flipped_resets_and_loss() {
    stage(
        "mobile-network",
        &[
            Flip {
                name: "stage-reset",
                args: &[
                    "-t",
                    "drop_connection",
                    "-a",
                    "mode=reset",
                    "-a",
                    "after_messages=20",
                    "-a",
                    "probability=0.5",
                ],
            },
            Flip {
                name: "stage-loss",
                args: &[
                    "-t",
                    "message_loss",
                    "-s",
                    "upstream",
                    "-a",
                    "probability=0.05",
                ],
            },
        ],
        &[
            "downlink-loss",
            "uplink-loss",
            "downlink-latency",
            "stage-reset",
            "stage-loss",
        ],
    );
}

/// faults/reset-storm.yaml, with message loss and re-fragmentation flipped on mid-run.
#[test]
fn reset_storm_with_flipped_loss_and_fragments() {
    stage(
        "reset-storm",
        &[
            Flip {
                name: "stage-loss",
                args: &["-t", "message_loss", "-a", "probability=0.05"],
            },
            Flip {
                name: "stage-fragment",
                args: &["-t", "fragment", "-a", "max_frame_bytes=16"],
            },
        ],
        &["rst", "stage-loss", "stage-fragment"],
    );
}
