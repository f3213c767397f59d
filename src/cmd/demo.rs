//! `wsfault demo`: the whole chaos loop in one process (docs/reference.md#wsfault-demo).
//!
//! Starts `wsfault echo` and a proxy on free loopback ports, applies a
//! scenario's toxics (a built-in mobile-network one by default), runs the
//! load client in resume mode with reconnect, adds one toxic (connection
//! resets) through the admin API halfway through, and ends with the verdict
//! table.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::config::ProxySpec;
use crate::proxy::Server;
use crate::toxics::{StreamDir, ToxicSpec};

/// Flags of `wsfault demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// A scenario from the faults/ library (its first proxy's toxics are used).
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// How long the load runs.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Concurrent client connections.
    #[arg(long, default_value_t = 20)]
    pub connections: u32,
    /// Messages per second per connection.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Seed for every random decision of the proxy.
    #[arg(long)]
    pub seed: Option<u64>,
}

fn toxic(name: &str, kind: &str, stream: StreamDir, attributes: serde_json::Value) -> ToxicSpec {
    ToxicSpec {
        name: name.to_string(),
        kind: kind.to_string(),
        stream,
        toxicity: 1.0,
        attributes: attributes.as_object().cloned().unwrap_or_default(),
        matcher: None,
        schedule: None,
        count: None,
    }
}

/// The built-in scenario: a flaky mobile network.
fn builtin_toxics() -> Vec<ToxicSpec> {
    vec![
        toxic(
            "slow-mobile",
            "latency",
            StreamDir::Downstream,
            serde_json::json!({"latency": 60, "jitter": 40}),
        ),
        toxic(
            "lossy-uplink",
            "message_loss",
            StreamDir::Upstream,
            serde_json::json!({"probability": 0.02}),
        ),
    ]
}

/// The toxic switched on halfway (on top of any scenario): dropped connections.
fn builtin_flip() -> ToxicSpec {
    toxic(
        "tunnel-drops",
        "drop_connection",
        StreamDir::Downstream,
        serde_json::json!({"probability": 0.01, "mode": "reset"}),
    )
}

/// One request to the admin API over loopback (the demo uses the real API).
async fn admin_request(
    admin: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let mut tcp = tokio::net::TcpStream::connect(admin).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    tcp.read_to_string(&mut response).await?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Runs the demo.
pub async fn run_command(args: DemoArgs) -> anyhow::Result<()> {
    let (toxics, scenario_name) = match &args.scenario {
        Some(path) => {
            let config = crate::config::load_file(path)?;
            let first = config.proxies.into_iter().next().ok_or_else(|| {
                crate::error::UsageError(format!("{}: the scenario has no proxies", path.display()))
            })?;
            (first.toxics, path.display().to_string())
        }
        None => (builtin_toxics(), "built-in: mobile network".to_string()),
    };

    // Backend.
    let echo_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the echo backend")?;
    let echo_addr = echo_listener.local_addr()?;
    let (stop_echo, stop_echo_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(crate::echo::serve(echo_listener, None, async move {
        let _ = stop_echo_rx.await;
    }));

    // Proxy and admin API.
    let server = Server::new(args.seed);
    let mut spec = ProxySpec::new("demo", "127.0.0.1:0", &echo_addr.to_string());
    spec.toxics = toxics.clone();
    server
        .create(spec)
        .await
        .map_err(|e| crate::error::UsageError(format!("scenario {scenario_name}: {e}")))?;
    let proxy_addr = server
        .proxy("demo")
        .and_then(|p| p.bound_addr())
        .context("the demo proxy did not bind")?;
    let admin_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the admin API")?;
    let admin_addr = admin_listener.local_addr()?;
    let (stop_admin, stop_admin_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(crate::admin::serve(
        admin_listener,
        server.clone(),
        crate::admin::AdminOptions::default(),
        stop_admin_rx,
    ));

    eprintln!("wsfault demo — scenario: {scenario_name}");
    eprintln!("  echo backend   ws://{echo_addr}");
    eprintln!("  proxy          ws://{proxy_addr}  (admin http://{admin_addr})");
    for t in &toxics {
        eprintln!(
            "  toxic          {} ({}, {}) {}",
            t.name,
            t.kind,
            t.stream.label(),
            serde_json::Value::Object(t.attributes.clone())
        );
    }
    eprintln!(
        "  load           {} connections × {} msg/s for {}, resume mode, reconnect on",
        args.connections,
        args.rate,
        humantime::format_duration(args.duration)
    );

    let mut cfg = crate::load::LoadConfig::new(
        format!("ws://{proxy_addr}/demo"),
        args.connections,
        args.rate,
        args.duration,
    );
    cfg.mode = crate::load::Mode::Resume;
    cfg.reconnect = true;
    let load = tokio::spawn(crate::load::run(cfg));

    // Halfway: flip one toxic through the admin API. It is added on top of
    // the scenario's toxics rather than removing one of them, so that faults
    // timed from a connection's start (a close after 10 s, a partition
    // window) still fire in a run of the default length.
    tokio::time::sleep(args.duration / 2).await;
    let flip = builtin_flip();
    let flip = if toxics.iter().any(|t| t.name == flip.name) {
        let (status, body) = admin_request(
            admin_addr,
            "DELETE",
            &format!("/proxies/demo/toxics/{}", flip.name),
            "",
        )
        .await?;
        format!(
            "removed toxic {} (DELETE → {status}) {}",
            flip.name,
            body.trim()
        )
    } else {
        let body = serde_json::to_string(&flip)?;
        let (status, _) = admin_request(admin_addr, "POST", "/proxies/demo/toxics", &body).await?;
        format!(
            "added toxic {} ({}: reset about 1 in 100 server messages) (POST → {status})",
            flip.name, flip.kind
        )
    };
    eprintln!("\n>> halfway: {flip}\n");

    let report = load.await.context("the load client stopped")??;
    let _ = stop_admin.send(true);
    let _ = stop_echo.send(());

    println!("{}", crate::load::render_table(&report));
    let metrics = server.metrics.render();
    let actions: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("wsfault_toxic_actions_total{"))
        .collect();
    if !actions.is_empty() {
        println!("What the proxy injected (wsfault_toxic_actions_total):");
        for line in actions {
            println!("  {line}");
        }
    }
    shutdown(&server).await;
    if report.pass {
        println!("\nverdict: PASS — the client survived the faults without losing, repeating or reordering a message.");
        Ok(())
    } else {
        Err(crate::error::FailedError("verdict: FAIL".into()).into())
    }
}

async fn shutdown(server: &Arc<Server>) {
    server.shutdown(Duration::from_secs(1)).await;
}
