//! The real binary: flags, exit codes, config errors, readiness, SIGTERM.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run wsfault")
}

#[test]
fn every_command_has_help_and_version() {
    for cmd in [
        &[][..],
        &["proxy"],
        &["echo"],
        &["load"],
        &["ctl"],
        &["demo"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let out = run(&args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut args = cmd.to_vec();
        args.push("--version");
        let out = run(&args);
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    }
}

#[test]
fn bad_flags_exit_2_and_name_the_flag() {
    let out = run(&["proxy", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bogus"));
    let out = run(&["--log-format", "xml", "proxy"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("xml") && err.contains("text") && err.contains("json"),
        "{err}"
    );
    let out = run(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "http://x:1",
        "--admin",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ws://host:port"));
    let out = run(&["proxy", "--admin", "nonsense"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--admin"));
    for bad in ["0", "many", "-1"] {
        let out = Command::new(BIN)
            .args([
                "proxy",
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                "127.0.0.1:1",
            ])
            .env("WSFAULT_RELAY_THREADS", bad)
            .output()
            .expect("run wsfault");
        assert_eq!(out.status.code(), Some(2), "WSFAULT_RELAY_THREADS={bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("WSFAULT_RELAY_THREADS") && err.contains(bad) && err.contains("1 to 1024"),
            "{err}"
        );
    }
}

/// `WSFAULT_RELAY_THREADS` starts that many relay workers (one current-thread
/// runtime each), and connections spread over them all relay.
#[tokio::test]
async fn relay_workers_are_started_and_every_connection_relays() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let echo = tungstenite_echo().await;
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let child = Command::new(BIN)
        .args([
            "proxy",
            "--listen",
            &listen.to_string(),
            "--upstream",
            &echo.to_string(),
            "--admin",
            &admin.to_string(),
        ])
        .env("WSFAULT_RELAY_THREADS", "3")
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn proxy");
    let child = KillOnDrop(child);
    wait_listening(listen).await;
    let mut clients = Vec::new();
    for _ in 0..12 {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{listen}/w"))
            .await
            .expect("connect through the proxy");
        clients.push(ws);
    }
    for round in 0..20 {
        for (i, ws) in clients.iter_mut().enumerate() {
            ws.send(Message::text(format!("{i}:{round}")))
                .await
                .expect("send");
        }
        for (i, ws) in clients.iter_mut().enumerate() {
            let got = ws.next().await.expect("echo").expect("echo frame");
            assert_eq!(got, Message::text(format!("{i}:{round}")));
        }
    }
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", child.0.id()))
        .expect("task list")
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .filter(|n| n.starts_with("wsfault-relay-"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["wsfault-relay-0", "wsfault-relay-1", "wsfault-relay-2"]
    );
}

#[test]
fn bad_config_files_exit_2_with_file_line_col() {
    let dir = tempfile::tempdir().expect("tmp");
    let cases = [
        ("unknown-key.yaml", "proxies:\n  - name: a\n    listen: 127.0.0.1:0\n    upstream: 127.0.0.1:1\n    colour: red\n", ":5:5:", "colour"),
        ("bad-type.yaml", "proxies:\n  - name: a\n    listen: 127.0.0.1:0\n    upstream: 127.0.0.1:1\n    toxics:\n      - type: latencyy\n", ":6:15:", "valid types are"),
        ("bad-attr.yaml", "proxies:\n  - name: a\n    listen: 127.0.0.1:0\n    upstream: 127.0.0.1:1\n    toxics:\n      - type: message_loss\n        attributes: {probability: 1.5}\n", ":7:35:", "0..=1"),
        ("missing-attr.yaml", "proxies:\n  - name: a\n    listen: 127.0.0.1:0\n    upstream: 127.0.0.1:1\n    toxics:\n      - type: latency\n", ":6:9:", "missing"),
        ("bad-stream.yaml", "proxies:\n  - name: a\n    listen: 127.0.0.1:0\n    upstream: 127.0.0.1:1\n    toxics:\n      - type: latency\n        stream: sideways\n        attributes: {latency: 1}\n", ":7:17:", "upstream"),
        ("bad-listen.yaml", "proxies:\n  - name: a\n    listen: nowhere\n    upstream: 127.0.0.1:1\n", ":3:13:", "listen \"nowhere\""),
        ("not-yaml.yaml", "proxies: [\n", ":", ""),
    ];
    for (name, text, at, needle) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        let out = run(&[
            "proxy",
            "--config",
            path.to_str().expect("utf8"),
            "--admin",
            "127.0.0.1:0",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(&format!("{name}{at}")), "{name}: {err}");
        assert!(err.contains(needle), "{name}: {err}");
    }
    let out = run(&["proxy", "--config", "/nonexistent/x.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.yaml"));
}

#[tokio::test]
async fn port_zero_is_reported_and_sigterm_closes_with_1001() {
    let upstream = RawUpstream::bind().await;
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let child = Command::new(BIN)
        .args([
            "--log-format",
            "json",
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream.addr.to_string(),
            "--admin",
            &admin.to_string(),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn proxy");
    let mut child = KillOnDrop(child);
    eventually("healthz", || async move {
        tokio::net::TcpStream::connect(admin).await.is_ok()
            && http(admin, "GET", "/healthz", None).await.0 == 200
    })
    .await;
    let (_, body) = http(admin, "GET", "/proxies/default", None).await;
    let view: serde_json::Value = serde_json::from_str(&body).expect("json");
    let listen: SocketAddr = view["listen"]
        .as_str()
        .expect("listen")
        .parse()
        .expect("addr");
    assert_ne!(listen.port(), 0);

    let (mut client, mut server) = raw_pair(listen, &upstream).await;
    client
        .send(true, 0, wsfault::frame::Opcode::Text, b"hi")
        .await;
    assert_eq!(&server.recv().await.plain_payload()[..], b"hi");

    let started = Instant::now();
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    assert_eq!(client.close_code_within(SOON).await, Some(1001));
    assert_eq!(server.close_code_within(SOON).await, Some(1001));
    // Both sides answer; the proxy exits 0 within 5 s.
    client
        .send_frame(&wsfault::frame::Frame::close(1001, "", Some([1, 2, 3, 4])))
        .await;
    server
        .send_frame(&wsfault::frame::Frame::close(1001, "", None))
        .await;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "proxy still running 5 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    let mut stderr = String::new();
    use std::io::Read;
    if let Some(mut pipe) = child.0.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let conn_line = stderr
        .lines()
        .find(|l| l.contains("connection open"))
        .expect("a connection log line");
    let json: serde_json::Value = serde_json::from_str(conn_line).expect("json log line");
    assert!(conn_line.contains("conn_id"), "{json}");
}

#[tokio::test]
async fn over_capacity_clients_get_503_and_existing_connections_keep_working() {
    // 100 descriptors: 25 reserved, room for 37 proxied connections.
    let echo = tungstenite_echo().await;
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let script = format!(
        "ulimit -n 100 && exec {BIN} proxy --listen {listen} --upstream {echo} --admin {admin}"
    );
    let child = Command::new("sh")
        .args(["-c", &script])
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn proxy");
    let mut child = KillOnDrop(child);
    wait_listening(admin).await;
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..45 {
        match tokio_tungstenite::connect_async(format!("ws://{listen}/")).await {
            Ok((ws, _)) => open.push(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 503);
                refused += 1;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(open.len(), 37, "capacity from the open-file limit");
    assert_eq!(refused, 8);
    // No busy loop while refusing: the proxy stays nearly idle.
    let cpu = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        fields
            .get(11)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            + fields
                .get(12)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
    };
    let pid = child.0.id();
    let before = cpu(pid);
    for _ in 0..20 {
        let _ = tokio_tungstenite::connect_async(format!("ws://{listen}/")).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ticks = cpu(pid) - before;
    assert!(ticks < 50, "proxy used {ticks} ticks while refusing");
    // Existing connections are unaffected.
    use futures_util::{SinkExt, StreamExt};
    for ws in open.iter_mut().take(5) {
        ws.send(tokio_tungstenite::tungstenite::Message::text("still fine"))
            .await
            .expect("send");
        let echoed = ws.next().await.expect("echo").expect("frame");
        assert_eq!(echoed.into_text().expect("text").as_str(), "still fine");
    }
    let _ = child.0.kill();
}
