//! `wsfault demo --scenario faults/X.yaml` (docs/reference.md#wsfault-demo) for every scenario in
//! `faults/`, with the real binary: echo backend, proxy with the scenario's
//! toxics, load client in resume mode with reconnect, one toxic flipped
//! halfway. The verdict must pass with nothing lost, duplicated or
//! reordered, unless the scenario is listed below with the reason it
//! cannot (yet), in which case the test pins down exactly how it fails.
//!
//! Also: a scenario file that does not exist is bad usage (exit 2, the
//! message names the file) for `wsfault demo` and `wsfault proxy`.

mod common;

use std::time::Duration;

use common::*;

/// The demo's load duration for the scenarios not listed in [`LONGER`].
const DURATION: &str = "10s";

/// Scenarios that need a longer run to pass by design, and why.
const LONGER: &[(&str, &str, &str)] = &[(
    "partition",
    "25s",
    "the partition window opens 10 s into each connection and lasts 10 s: a 10 s \
     run stops sending as it opens and drains for 5 s only, so what is in flight \
     stays in the blackhole until the load gives up (lost 1-2). 25 s lets the \
     window close and resume recover everything.",
)];

/// Scenarios whose resume-mode verdict fails today: the line of the
/// verdict table that shows the failure, and why. The test asserts exactly
/// that failure, and fails once the scenario passes so that the entry gets
/// removed. Both are bugs of the load client (src/load/client.rs), not of
/// the scenarios: each scenario is valid per docs/reference.md#proxies-and-toxics and its fault is one
/// a resume-protocol client must survive.
const KNOWN_FAILING: &[(&str, &str, &str)] = &[];

/// What one demo run showed.
struct Outcome {
    ran: Ran,
    /// `toxic=actions` for every `wsfault_toxic_actions_total` line printed.
    actions: Vec<String>,
}

fn demo(scenario: &str) -> Outcome {
    let duration = LONGER
        .iter()
        .find(|(name, _, _)| *name == scenario)
        .map(|(_, d, _)| *d)
        .unwrap_or(DURATION);
    let path = format!("{ROOT}/faults/{scenario}.yaml");
    let ran = run(
        &mut wsfault(&[
            "demo",
            "--scenario",
            &path,
            "--duration",
            duration,
            "--connections",
            "5",
            "--seed",
            "1",
        ]),
        &format!("wsfault demo {scenario}"),
        Duration::from_secs(120),
    );
    let actions = ran
        .stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("wsfault_toxic_actions_total{"))
        .filter_map(|l| {
            let toxic = l.split("toxic=\"").nth(1)?.split('"').next()?;
            let n = l.rsplit(' ').next()?;
            Some(format!("{toxic}={n}"))
        })
        .collect();
    Outcome { ran, actions }
}

/// The `messages` line of the verdict table, e.g. `lost 0  duplicated 0 ...`.
fn count(stdout: &str, what: &str) -> Option<u64> {
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("messages"))?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == what)?;
    words.next()?.parse().ok()
}

fn check(scenario: &str) {
    let out = demo(scenario);
    let ran = &out.ran;
    eprintln!(
        "{scenario}: exit {:?} in {:.1?}; toxic actions: {}",
        ran.code(),
        ran.took,
        if out.actions.is_empty() {
            "(none printed)".to_string()
        } else {
            out.actions.join(" ")
        }
    );
    if let Some((_, failure, why)) = KNOWN_FAILING.iter().find(|(n, _, _)| *n == scenario) {
        assert_ne!(
            ran.code(),
            Some(0),
            "{scenario} passes now: remove it from KNOWN_FAILING ({why})"
        );
        assert_eq!(ran.code(), Some(1), "{scenario}: {}", ran.both());
        assert!(
            ran.stdout.contains(failure),
            "{scenario}: expected the known failure `{failure}` ({why}): {}",
            ran.both()
        );
        let failed = ran
            .stdout
            .lines()
            .filter(|l| l.trim_start().starts_with("FAIL:"))
            .count();
        assert_eq!(failed, 1, "{scenario}: {}", ran.both());
        eprintln!("{scenario}: KNOWN FAILURE `{failure}`: {why}");
        return;
    }
    for what in ["lost", "duplicated", "reordered"] {
        assert_eq!(
            count(&ran.stdout, what),
            Some(0),
            "{scenario}: {what}: {}",
            ran.both()
        );
    }
    assert!(
        count(&ran.stdout, "received").is_some_and(|n| n > 0),
        "{scenario}: nothing received: {}",
        ran.both()
    );
    assert!(ran.ok(), "{scenario}: demo verdict failed: {}", ran.both());
    assert!(ran.stdout.contains("verdict: PASS"), "{}", ran.both());
    assert!(
        ran.stderr.contains(">> halfway: added toxic tunnel-drops")
            && ran.stderr.contains("(POST → 200)"),
        "{scenario}: no toxic flipped: {}",
        ran.both()
    );
}

macro_rules! scenarios {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[doc = concat!("`wsfault demo --scenario faults/", $name, ".yaml`")]
            #[test]
            fn $test() {
                check($name);
            }
        )*

        /// Every file in faults/ has a test above, and every test a file.
        #[test]
        fn every_scenario_is_covered() {
            let mut covered = vec![$($name.to_string()),*];
            covered.sort();
            assert_eq!(covered, scenarios(), "add the new scenario to demo_scenarios.rs");
        }
    };
}

scenarios! {
    canary_tenant => "canary-tenant",
    duplicate_delivery => "duplicate-delivery",
    dying_connection => "dying-connection",
    flaky_handshake => "flaky-handshake",
    fragmenting_intermediary => "fragmenting-intermediary",
    half_open_connection => "half-open-connection",
    heartbeat_loss => "heartbeat-loss",
    lb_idle_timeout => "lb-idle-timeout",
    mobile_network => "mobile-network",
    overloaded_server => "overloaded-server",
    partition => "partition",
    reset_storm => "reset-storm",
    rolling_restart => "rolling-restart",
    slow_close => "slow-close",
    slow_consumer => "slow-consumer",
}

/// The exceptions name real scenarios.
#[test]
fn exceptions_name_real_scenarios() {
    let all = scenarios();
    for (name, _, _) in LONGER.iter().chain(KNOWN_FAILING) {
        assert!(all.iter().any(|s| s == name), "{name} is not in faults/");
    }
}

/// A scenario that does not exist: exit 2 naming the file, right away.
#[test]
fn missing_scenario_is_bad_usage() {
    for args in [
        &["demo", "--scenario", "nope.yaml"][..],
        &["demo", "--scenario", "faults/nope.yaml", "--duration", "5s"],
        &[
            "proxy",
            "--config",
            "faults/nope.yaml",
            "--admin",
            "127.0.0.1:0",
        ],
    ] {
        let file = args[2];
        let ran = run(&mut wsfault(args), "wsfault", Duration::from_secs(20));
        assert_eq!(ran.code(), Some(2), "{args:?}: {}", ran.both());
        assert!(
            ran.stderr.contains(file) && ran.stderr.contains("cannot read config"),
            "{args:?}: the message does not name {file}: {}",
            ran.both()
        );
        assert!(
            ran.took < Duration::from_secs(5),
            "{args:?} took {:?}",
            ran.took
        );
    }
}
