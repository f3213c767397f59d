//! The real docker-compose stack (docs/reference.md#docker-image-compose-stack-and-ci): `docker-compose.yml` with the
//! image built from this test's own binary through
//! `docker/Dockerfile.prebuilt`, from an empty engine too (the base image is
//! built with `docker/build-base-image.sh` when it is missing, which takes
//! minutes).
//!
//! Brings up `backend` and `proxy` under a project name of its own, on free
//! host ports, waits for the proxy's healthcheck, runs the `load` service to
//! a verdict (resume mode, `loss==0 dup==0 reorder==0`) while toxics are
//! added and removed from the host through the published admin port, then
//! checks the exit status, the JSON report in the reports directory and the
//! proxy's `/metrics`. A second project starts the proxy with a scenario
//! file that does not exist: it must exit 2 naming the file. Every project
//! is torn down (`down -v --remove-orphans`) and the test image removed,
//! also when the test fails.
//!
//! Needs `docker` and `docker-compose` (v1) or `docker compose`, and
//! `debootstrap` when the base image is missing; skipped without them
//! unless `WSFAULT_REQUIRE_TOOLS=1`.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Something the stack needs from the host: the compose CLI, the
/// environment every compose call gets, and the test image to remove.
struct Env {
    cli: Vec<String>,
    vars: Vec<(String, String)>,
    image: String,
    binary_copy: PathBuf,
}

impl Env {
    /// A compose command for project `project` with `extra` variables.
    fn compose(&self, project: &str, extra: &[(&str, &str)], args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.cli[0]);
        cmd.args(&self.cli[1..])
            .args([
                "--project-directory",
                ROOT,
                "-f",
                &format!("{ROOT}/docker-compose.yml"),
                "-p",
                project,
            ])
            .args(args)
            .current_dir(ROOT);
        // Variables of the caller's shell must not leak into the stack.
        for var in [
            "WSFAULT_SCENARIO",
            "WSFAULT_ADMIN_TOKEN",
            "COMPOSE_FILE",
            "COMPOSE_PROJECT_NAME",
            "RUST_LOG",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = docker(&["image", "rm", "-f", &self.image], Duration::from_secs(60));
        let _ = std::fs::remove_file(&self.binary_copy);
    }
}

/// A started compose project: printed and torn down on drop, on every path.
struct Project<'a> {
    env: &'a Env,
    name: String,
    extra: Vec<(String, String)>,
}

impl<'a> Project<'a> {
    fn new(env: &'a Env, suffix: &str, extra: &[(&str, &str)]) -> Project<'a> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Project {
            env,
            name: format!("wsfault-test-{}-{nanos:x}-{suffix}", std::process::id()),
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let extra: Vec<(&str, &str)> = self
            .extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.env.compose(&self.name, &extra, args)
    }

    /// Runs a compose subcommand; panics unless it exits 0.
    fn ok(&self, args: &[&str], limit: Duration) -> Ran {
        let ran = run(&mut self.cmd(args), &format!("compose {args:?}"), limit);
        assert!(ran.ok(), "compose {args:?} ({}): {}", self.name, ran.both());
        ran
    }

    /// The id of the container of `service`.
    fn container(&self, service: &str) -> String {
        let ran = self.ok(&["ps", "-q", service], Duration::from_secs(60));
        let id = ran.stdout.trim().to_string();
        assert!(!id.is_empty(), "no container for {service}: {}", ran.both());
        id
    }

    fn logs(&self) -> String {
        let ran = run(
            &mut self.cmd(&["logs", "--no-color", "--tail", "60"]),
            "compose logs",
            Duration::from_secs(60),
        );
        format!("{}{}", ran.stdout, ran.stderr)
    }
}

impl Drop for Project<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} logs\n{}", self.name, self.logs());
        }
        let ran = run(
            &mut self.cmd(&["down", "-v", "--remove-orphans", "-t", "2"]),
            "compose down",
            Duration::from_secs(120),
        );
        if !ran.ok() {
            eprintln!("teardown of {} failed: {}", self.name, ran.both());
        }
    }
}

/// Step 1 and 2: the base image (built when missing) and the image under
/// test, built by compose from this test's binary.
fn build_image(cli: Vec<String>) -> Env {
    let t = Instant::now();
    let base = run(
        Command::new(format!("{ROOT}/docker/build-base-image.sh")).current_dir(ROOT),
        "build-base-image.sh",
        Duration::from_secs(1800),
    );
    assert!(base.ok(), "docker/build-base-image.sh: {}", base.both());
    eprintln!(
        "base image ready in {:.1?}: {}",
        t.elapsed(),
        base.stdout.trim()
    );

    // The build context is the repository; .dockerignore lets exactly this
    // path of target/ through. Debug info is stripped: it is most of a test
    // binary's size and the context is sent whole.
    let rel = BINARY_IN_CONTEXT;
    let binary_copy = binary_in_context();

    let tag = format!("wsfault:test-{}", run_suffix());
    let env = Env {
        cli,
        vars: vec![
            ("WSFAULT_IMAGE".into(), tag.clone()),
            (
                "WSFAULT_DOCKERFILE".into(),
                "docker/Dockerfile.prebuilt".into(),
            ),
            ("WSFAULT_BINARY".into(), rel.into()),
        ],
        image: tag,
        binary_copy,
    };
    let t = Instant::now();
    let build = run(
        &mut env.compose("wsfault-test-build", &[], &["build", "proxy"]),
        "compose build",
        Duration::from_secs(300),
    );
    assert!(build.ok(), "compose build: {}", build.both());
    eprintln!("image {} built in {:.1?}", env.image, t.elapsed());
    // docs/reference.md#docker-image-compose-stack-and-ci: the image runs as non-root with wsfault as its entrypoint.
    assert_eq!(inspect(&env.image, "{{.Config.User}}"), "10001:10001");
    assert_eq!(
        inspect(&env.image, "{{json .Config.Entrypoint}}"),
        r#"["wsfault"]"#
    );
    env
}

#[test]
fn compose_stack_passes_its_verdict_while_toxics_flip() {
    let Some(cli) = docker_compose() else {
        return;
    };
    if !base_image_buildable() {
        return;
    }
    let started = Instant::now();
    let env = build_image(cli);

    let reports = tempfile::tempdir().expect("reports dir");
    let proxy_port = free_port();
    let admin_port = free_port();
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let uid = run(Command::new("id").arg("-u"), "id", Duration::from_secs(5));
    let gid = run(Command::new("id").arg("-g"), "id", Duration::from_secs(5));
    let user = format!("{}:{}", uid.stdout.trim(), gid.stdout.trim());
    let proxy_port_s = proxy_port.to_string();
    let admin_port_s = admin_port.to_string();
    let reports_s = reports.path().to_str().unwrap().to_string();
    let stack = Project::new(
        &env,
        "stack",
        &[
            ("WSFAULT_SCENARIO", "mobile-network"),
            ("WSFAULT_PROXY_PORT", &proxy_port_s),
            ("WSFAULT_ADMIN_PORT", &admin_port_s),
            ("WSFAULT_REPORTS", &reports_s),
            ("WSFAULT_LOAD_USER", &user),
            ("LOAD_DURATION", "20s"),
        ],
    );

    // Step 3: backend and proxy, then the proxy's healthcheck.
    let t = Instant::now();
    stack.ok(
        &["up", "-d", "--no-build", "backend", "proxy"],
        Duration::from_secs(180),
    );
    let proxy_id = stack.container("proxy");
    wait_healthy(&proxy_id, Duration::from_secs(90), || stack.logs());
    eprintln!("backend + proxy healthy in {:.1?}", t.elapsed());
    let proxies = admin(admin_addr, "GET", "/proxies", None, 200);
    assert!(proxies.contains("\"app\""), "{proxies}");
    assert!(
        proxies.contains("downlink-loss"),
        "scenario not loaded: {proxies}"
    );
    // The published proxy port answers too (plain HTTP is reverse-proxied
    // to the echo backend, whatever it answers).
    wait_tcp(
        format!("127.0.0.1:{proxy_port}").parse().unwrap(),
        Duration::from_secs(10),
    );

    // Step 4: the load client to a verdict, toxics flipped from the host.
    let t = Instant::now();
    let load = ChildGuard::spawn(
        &mut stack.cmd(&["run", "-T", "--rm", "--no-deps", "load"]),
        "compose run load",
    );
    std::thread::sleep(Duration::from_secs(5));
    admin(
        admin_addr,
        "POST",
        "/proxies/app/toxics",
        Some(
            r#"{"name":"host-reset","type":"drop_connection","stream":"downstream","attributes":{"after_messages":20,"probability":0.5,"mode":"reset"}}"#,
        ),
        200,
    );
    admin(
        admin_addr,
        "POST",
        "/proxies/app/toxics",
        Some(
            r#"{"name":"host-loss","type":"message_loss","stream":"upstream","attributes":{"probability":0.05}}"#,
        ),
        200,
    );
    std::thread::sleep(Duration::from_secs(7));
    let metrics_mid = admin(admin_addr, "GET", "/metrics", None, 200);
    admin(
        admin_addr,
        "DELETE",
        "/proxies/app/toxics/host-reset",
        None,
        204,
    );
    admin(
        admin_addr,
        "DELETE",
        "/proxies/app/toxics/host-loss",
        None,
        204,
    );
    let ran = load.wait(Duration::from_secs(120));
    eprintln!("load ran {:.1?} (exit {:?})", t.elapsed(), ran.code());
    assert!(ran.ok(), "load verdict: {}", ran.both());

    // Step 5: the report in the reports dir and the proxy's metrics.
    let report = read_report(&reports.path().join("report.json"));
    assert_clean_report(&report, "compose stack");
    assert!(
        reports.path().join("junit.xml").exists(),
        "no junit.xml in the reports dir"
    );
    let metrics = admin(admin_addr, "GET", "/metrics", None, 200);
    let actions = |toxic: &str| {
        let labels = [("proxy", "app"), ("toxic", toxic)];
        metric_sum(&metrics, "wsfault_toxic_actions_total", &labels).max(metric_sum(
            &metrics_mid,
            "wsfault_toxic_actions_total",
            &labels,
        ))
    };
    for toxic in [
        "host-reset",
        "host-loss",
        "downlink-latency",
        "downlink-loss",
    ] {
        assert!(
            actions(toxic) > 0.0,
            "no actions counted for {toxic}:\n{metrics}"
        );
    }
    let messages = metric_sum(&metrics, "wsfault_messages_total", &[("proxy", "app")]);
    assert!(messages > 0.0, "no messages counted:\n{metrics}");
    eprintln!(
        "verdict pass: sent {} received {} reconnects {}; proxy messages {messages}, host-reset actions {}",
        report["messages"]["sent"],
        report["messages"]["received"],
        report["connections"]["reconnects"],
        actions("host-reset")
    );
    drop(stack);

    // Bad input: a scenario that does not exist. The proxy exits 2 naming
    // the file (restart policy or not), and the project is torn down.
    let t = Instant::now();
    let bad = Project::new(
        &env,
        "nope",
        &[
            ("WSFAULT_SCENARIO", "nope"),
            ("WSFAULT_PROXY_PORT", &free_port().to_string()),
            ("WSFAULT_ADMIN_PORT", &free_port().to_string()),
            ("WSFAULT_REPORTS", &reports_s),
        ],
    );
    bad.ok(
        &["up", "-d", "--no-build", "proxy"],
        Duration::from_secs(180),
    );
    let id = bad.container("proxy");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = inspect(
            &id,
            "{{.State.ExitCode}} {{.RestartCount}} {{.State.Status}}",
        );
        let mut parts = state.split(' ');
        let code = parts.next().unwrap_or("");
        let _restarts = parts.next();
        let status = parts.next().unwrap_or("");
        // While the restart policy has it running again, Docker reports exit
        // code 0; the code of the failed start is visible between restarts
        // (their back-off grows, so such a moment always comes).
        if status == "exited" || status == "restarting" {
            assert_eq!(code, "2", "proxy with a missing scenario: state {state}");
            break;
        }
        assert!(Instant::now() < deadline, "proxy never exited: {state}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let logs = docker(&["logs", &id], Duration::from_secs(30));
    let text = format!("{}{}", logs.stdout, logs.stderr);
    assert!(
        text.contains("/faults/nope.yaml") && text.contains("cannot read config"),
        "the error does not name the file: {text}"
    );
    drop(bad);
    let left = docker(
        &["ps", "-aq", "--filter", &format!("ancestor={}", env.image)],
        Duration::from_secs(30),
    );
    assert!(
        left.stdout.trim().is_empty(),
        "containers left: {}",
        left.stdout
    );
    eprintln!(
        "missing scenario: exit 2, torn down in {:.1?}; whole test {:.1?}",
        t.elapsed(),
        started.elapsed()
    );
}
