//! wsfault in front of a service that is not ours, for real with Docker:
//! `docker/compose-socketio.yml` (docs/chaos-your-service.md), the
//! python-socketio chat of `tests/py/socketio_server.py` built into an image
//! by `docker/socketio/Dockerfile`, the proxy and the load client from this
//! test's own binary through `docker/Dockerfile.prebuilt`.
//!
//! Builds the two base images when missing (`docker/build-base-image.sh`
//! and `--python`, minutes each) and the service's Python dependencies
//! (`docker/socketio/build-deps.sh`, host pip, when missing). Then, under a
//! project name of its own on free host ports: the service and the proxy
//! come up healthy; plain HTTP (`/health`) and the python-socketio client
//! (`tests/py/socketio_client.py`) work through the published proxy port;
//! the `load` service (`wsfault load --mode script --script
//! examples/load/socketio-chat.yaml`) passes its verdict with no toxic and
//! under toxics a correct service survives (latency with jitter, re-framing,
//! late Engine.IO pongs; connection resets, with reconnects and the
//! service's replay), and fails it (exit 1, `lost > 0` in the report)
//! once a `message_loss` toxic on Socket.IO data messages is added, all
//! through the admin API from the host.
//! The project and the test images are removed on every path.
//!
//! Needs `docker`, `docker-compose` (v1) or `docker compose`, a Python with
//! pip when the dependencies are not built yet, `debootstrap` when a base
//! image is missing; skipped without them unless `WSFAULT_REQUIRE_TOOLS=1`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const COMPOSE_FILE: &str = "docker/compose-socketio.yml";

/// The started stack: its compose CLI and variables, torn down on drop with
/// its images, on every path.
struct Stack {
    cli: Vec<String>,
    name: String,
    vars: Vec<(String, String)>,
    images: Vec<String>,
    binary_copy: PathBuf,
}

impl Stack {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.cli[0]);
        cmd.args(&self.cli[1..])
            .args(["-f", &format!("{ROOT}/{COMPOSE_FILE}"), "-p", &self.name])
            .args(args)
            .current_dir(ROOT);
        // Variables of the caller's shell must not leak into the stack.
        for var in [
            "WSFAULT_CONFIG",
            "WSFAULT_ADMIN_TOKEN",
            "COMPOSE_FILE",
            "COMPOSE_PROJECT_NAME",
            "RUST_LOG",
            "LOAD_CONNECTIONS",
            "LOAD_RATE",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(self.vars.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs a compose subcommand; panics unless it exits 0.
    fn ok(&self, args: &[&str], limit: Duration) -> Ran {
        let ran = run(&mut self.cmd(args), &format!("compose {args:?}"), limit);
        assert!(ran.ok(), "compose {args:?} ({}): {}", self.name, ran.both());
        ran
    }

    fn logs(&self) -> String {
        let ran = run(
            &mut self.cmd(&["logs", "--no-color", "--tail", "40"]),
            "compose logs",
            Duration::from_secs(60),
        );
        format!("{}{}", ran.stdout, ran.stderr)
    }

    /// Waits until the container of `service` reports healthy.
    fn wait_healthy(&self, service: &str, limit: Duration) {
        let id = self.ok(&["ps", "-q", service], Duration::from_secs(60));
        let id = id.stdout.trim();
        assert!(!id.is_empty(), "no container for {service}");
        wait_healthy(id, limit, || self.logs());
    }

    /// `compose run load ARGS...` (the service's own command when empty),
    /// with the stack's reports directory; returns the run and its report.
    fn load(&self, reports: &Path, args: &[&str]) -> (Ran, serde_json::Value) {
        let _ = std::fs::remove_file(reports.join("report.json"));
        let mut all = vec!["run", "-T", "--rm", "--no-deps", "load"];
        all.extend_from_slice(args);
        let ran = run(
            &mut self.cmd(&all),
            "compose run load",
            Duration::from_secs(180),
        );
        let report_path = reports.join("report.json");
        assert!(
            report_path.exists(),
            "load wrote no report: {}\n{}",
            ran.both(),
            self.logs()
        );
        (ran, read_report(&report_path))
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} logs\n{}", self.name, self.logs());
        }
        let down = run(
            &mut self.cmd(&["down", "-v", "--remove-orphans", "-t", "2"]),
            "compose down",
            Duration::from_secs(120),
        );
        if !down.ok() {
            eprintln!("teardown of {} failed: {}", self.name, down.both());
        }
        for image in &self.images {
            let _ = docker(&["image", "rm", "-f", image], Duration::from_secs(120));
        }
        let _ = std::fs::remove_file(&self.binary_copy);
    }
}

/// A script of the repository, run to completion; panics unless it exits 0.
fn script(path: &str, args: &[&str], env: &[(&str, &str)], limit: Duration) {
    let t = Instant::now();
    let ran = run(
        Command::new(Path::new(ROOT).join(path))
            .args(args)
            .envs(env.iter().copied())
            .current_dir(ROOT),
        path,
        limit,
    );
    assert!(ran.ok(), "{path} {args:?}: {}", ran.both());
    eprintln!(
        "{path} {args:?}: {:.1?}: {}",
        t.elapsed(),
        ran.stdout.trim().lines().last().unwrap_or("")
    );
}

/// A count of the report at JSON pointer `path`; panics when it is missing.
fn count(report: &serde_json::Value, path: &str) -> u64 {
    report
        .pointer(path)
        .and_then(|v| v.as_u64())
        .unwrap_or_else(|| panic!("no {path} in the report: {report:#}"))
}

#[test]
fn socketio_service_behind_the_proxy_gates_on_the_script_verdict() {
    let Some(cli) = docker_compose() else {
        return;
    };
    let python_base = std::env::var("WSFAULT_PYTHON_BASE_IMAGE")
        .unwrap_or_else(|_| "wsfault-base-python:bookworm".into());
    if !base_image_buildable()
        || (!docker(
            &["image", "inspect", &python_base],
            Duration::from_secs(120),
        )
        .ok()
            && debootstrap().is_none())
    {
        return;
    }
    let Some(python) = python() else {
        return;
    };
    let started = Instant::now();

    // Step 1: base images, the service's Python dependencies, this test's
    // binary in the build context.
    script(
        "docker/build-base-image.sh",
        &[],
        &[],
        Duration::from_secs(1800),
    );
    script(
        "docker/build-base-image.sh",
        &["--python"],
        &[],
        Duration::from_secs(1800),
    );
    let python = python.to_string_lossy().into_owned();
    script(
        "docker/socketio/build-deps.sh",
        &[],
        &[("PYTHON", &python)],
        Duration::from_secs(300),
    );
    let binary_copy = binary_in_context();

    // Step 2: the two images, by compose, under names of this run.
    let unique = run_suffix();
    let reports = tempfile::tempdir().expect("reports dir");
    let proxy_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let id = |flag: &str| {
        let ran = run(Command::new("id").arg(flag), "id", Duration::from_secs(5));
        ran.stdout.trim().to_string()
    };
    let wsfault_image = format!("wsfault:test-{unique}");
    let service_image = format!("wsfault-socketio:test-{unique}");
    let vars: Vec<(String, String)> = [
        ("WSFAULT_IMAGE", wsfault_image.clone()),
        ("SOCKETIO_IMAGE", service_image.clone()),
        ("SOCKETIO_BASE_IMAGE", python_base),
        ("WSFAULT_DOCKERFILE", "docker/Dockerfile.prebuilt".into()),
        ("WSFAULT_BINARY", BINARY_IN_CONTEXT.into()),
        ("WSFAULT_PROXY_PORT", proxy_addr.port().to_string()),
        ("WSFAULT_ADMIN_PORT", admin_addr.port().to_string()),
        (
            "WSFAULT_REPORTS",
            reports.path().to_string_lossy().into_owned(),
        ),
        ("WSFAULT_LOAD_USER", format!("{}:{}", id("-u"), id("-g"))),
        ("LOAD_DURATION", "10s".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let stack = Stack {
        cli,
        name: format!("wsfault-test-sio-{unique}"),
        vars,
        images: vec![wsfault_image, service_image.clone()],
        binary_copy,
    };
    let t = Instant::now();
    stack.ok(&["build", "backend", "proxy"], Duration::from_secs(600));
    let size = docker(
        &["image", "inspect", "-f", "{{.Size}}", &service_image],
        Duration::from_secs(120),
    );
    eprintln!(
        "images built in {:.1?}; {service_image}: {:.1} MB",
        t.elapsed(),
        size.stdout.trim().parse::<f64>().unwrap_or(0.0) / 1e6
    );

    // Step 3: the service, then the proxy in front of it, both healthy.
    let t = Instant::now();
    stack.ok(
        &["up", "-d", "--no-build", "backend", "proxy"],
        Duration::from_secs(180),
    );
    stack.wait_healthy("backend", Duration::from_secs(60));
    stack.wait_healthy("proxy", Duration::from_secs(60));
    eprintln!("service + proxy healthy in {:.1?}", t.elapsed());
    let proxies = admin(admin_addr, "GET", "/proxies", None, 200);
    assert!(
        proxies.contains(r#""chat""#) && proxies.contains("backend:9000"),
        "{proxies}"
    );

    // Step 4: through the published proxy port, plain HTTP reaches the
    // service's /health and a real python-socketio client chats.
    wait_tcp(proxy_addr, Duration::from_secs(10));
    let (status, body) = http_blocking(proxy_addr, "GET", "/health", None).expect("GET /health");
    assert_eq!((status, body.trim()), (200, "ok"), "/health via the proxy");
    let Some(mut client) = socketio_client(
        &format!("http://{proxy_addr}"),
        &"--room smoke --count 5 --rate 20 --duration 30"
            .split(' ')
            .collect::<Vec<_>>(),
    ) else {
        return;
    };
    client.wait_ok(Duration::from_secs(40));
    assert_eq!(
        client.events_named("ack").len(),
        5,
        "acks via the proxy: {}",
        client.both()
    );
    assert_eq!(
        client.events_named("chat").len(),
        5,
        "chats via the proxy: {}",
        client.both()
    );
    let metrics = admin(admin_addr, "GET", "/metrics", None, 200);
    // (Kind "unclassified": nothing asks for kinds while no toxic does.)
    let messages = metric_sum(&metrics, "wsfault_messages_total", &[("proxy", "chat")]);
    assert!(messages >= 10.0, "messages not counted:\n{metrics}");

    // Step 5: the load service's verdict, no toxic: PASS.
    let t = Instant::now();
    let (ran, report) = stack.load(reports.path(), &[]);
    assert!(ran.ok(), "load verdict with no toxic: {}", ran.both());
    assert_clean_report(&report, "socketio, no toxic");
    assert!(
        reports.path().join("junit.xml").exists(),
        "no junit.xml in the reports dir"
    );
    eprintln!(
        "no toxic: PASS in {:.1?}: sent {} received {}, p99 {} ms",
        t.elapsed(),
        report["messages"]["sent"],
        report["messages"]["received"],
        report["latency_ms"]["p99"]
    );

    // Step 6: faults a correct service and client survive: a slow, jittery
    // link toward the clients, every client event re-framed into 16-byte
    // frames, the clients' Engine.IO pongs 2 s late (the ping timeout is
    // 5 s): PASS, and each toxic acted. (A matcher behind the jittery
    // latency on the same stream keeps the order too: tests/app_script.rs
    // jitter_then_a_matcher_keeps_the_order.)
    for body in [
        r#"{"name":"slow","type":"latency","stream":"downstream","attributes":{"latency":150,"jitter":50}}"#,
        r#"{"name":"tiny-frames","type":"fragment","stream":"upstream","attributes":{"max_frame_bytes":16}}"#,
        r#"{"name":"late-pongs","type":"latency","stream":"upstream","attributes":{"latency":2000},"match":{"message":{"kind":"heartbeat"}}}"#,
    ] {
        admin(admin_addr, "POST", "/proxies/chat/toxics", Some(body), 200);
    }
    let t = Instant::now();
    let (ran, report) = stack.load(reports.path(), &[]);
    assert!(
        ran.ok(),
        "load verdict under survivable toxics: {}",
        ran.both()
    );
    assert_clean_report(&report, "socketio, survivable toxics");
    let metrics = admin(admin_addr, "GET", "/metrics", None, 200);
    for toxic in ["slow", "tiny-frames", "late-pongs"] {
        let actions = metric_sum(
            &metrics,
            "wsfault_toxic_actions_total",
            &[("proxy", "chat"), ("toxic", toxic)],
        );
        assert!(actions > 0.0, "{toxic} never acted:\n{metrics}");
    }
    eprintln!(
        "latency + fragment + late pongs: PASS in {:.1?}: sent {} received {}, p50 {} ms, p99 {} ms",
        t.elapsed(),
        report["messages"]["sent"],
        report["messages"]["received"],
        report["latency_ms"]["p50"],
        report["latency_ms"]["p99"]
    );
    admin(admin_addr, "POST", "/reset", None, 204);

    // Step 7: connections reset (5% of the messages toward the clients
    // after the 100th of a connection). The load service reconnects, joins
    // again from its last seq and the service replays what it missed: PASS,
    // with reconnects; sends whose ack was due at a cut are unconfirmed,
    // not lost.
    admin(
        admin_addr,
        "POST",
        "/proxies/chat/toxics",
        Some(
            r#"{"name":"cut","type":"drop_connection","stream":"downstream","attributes":{"after_messages":100,"probability":0.05,"mode":"reset"}}"#,
        ),
        200,
    );
    let t = Instant::now();
    let (ran, report) = stack.load(reports.path(), &[]);
    assert!(ran.ok(), "load verdict under resets: {}", ran.both());
    assert_clean_report(&report, "socketio, connection resets");
    assert!(count(&report, "/connections/reconnects") > 0, "{report:#}");
    eprintln!(
        "drop_connection: PASS in {:.1?}: reconnects {}, reconnect p99 {} ms, unconfirmed {}",
        t.elapsed(),
        report["connections"]["reconnects"],
        report["reconnect_ms"]["p99"],
        report["messages"]["unconfirmed"]
    );
    admin(admin_addr, "POST", "/reset", None, 204);

    // Step 8: Socket.IO data messages lost on the way to the clients (acks
    // and broadcasts; heartbeats and handshakes pass): FAIL, lost > 0.
    admin(
        admin_addr,
        "POST",
        "/proxies/chat/toxics",
        Some(
            r#"{"name":"lose-data","type":"message_loss","stream":"downstream","attributes":{"probability":0.1},"match":{"message":{"kind":"data"}}}"#,
        ),
        200,
    );
    let t = Instant::now();
    let (ran, report) = stack.load(reports.path(), &[]);
    assert_eq!(
        ran.code(),
        Some(1),
        "load verdict with message_loss: {}",
        ran.both()
    );
    assert_eq!(report["pass"], serde_json::json!(false), "{report:#}");
    assert!(count(&report, "/messages/lost") > 0, "{report:#}");
    assert!(
        ran.stderr.contains("verdict FAIL"),
        "no verdict line: {}",
        ran.both()
    );
    let metrics = admin(admin_addr, "GET", "/metrics", None, 200);
    let actions = metric_sum(
        &metrics,
        "wsfault_toxic_actions_total",
        &[("proxy", "chat"), ("toxic", "lose-data")],
    );
    assert!(actions > 0.0, "lose-data never acted:\n{metrics}");
    eprintln!(
        "message_loss on data: FAIL in {:.1?} as it must: lost {}, toxic actions {actions}",
        t.elapsed(),
        report["messages"]["lost"]
    );
    admin(admin_addr, "POST", "/reset", None, 204);

    drop(stack);
    eprintln!("whole test {:.1?}", started.elapsed());
}
