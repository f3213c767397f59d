//! The benchmark command (`scripts/bench.sh` runs it): echo round trips
//! measured side by side in one run — direct to `wsfault echo`, through
//! `wsfault proxy`, and through nginx as a WebSocket proxy — plus RSS per
//! idle proxied connection and the toxic accuracy targets. Prints a
//! markdown report on stdout (figures as ratios to direct and to nginx).
//!
//! `cargo bench --bench relay -- --quick` runs a shorter version;
//! `-- --only toxics,memory` runs only the named sections (relay,
//! added-latency, tls, toxics, metrics, capacity, memory), `--cells 100x64`
//! only those round-trip cells; `WSFAULT_BENCH_PROXY=/path/to/wsfault`
//! benchmarks another build as the proxy.

mod support;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{free_port, Proc};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_wsfault");

/// The binary run as the proxy under test: `BIN`, or `$WSFAULT_BENCH_PROXY`
/// (another build, or a wrapper script) to compare two proxies side by side
/// with the same driver, echo server and nginx.
fn proxy_bin() -> String {
    std::env::var("WSFAULT_BENCH_PROXY").unwrap_or_else(|_| BIN.to_string())
}

/// nginx's master: SIGKILL would orphan its workers, so it gets SIGTERM
/// (fast shutdown: the master stops its workers) and is waited for.
struct Nginx(Child);
impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_port(addr: SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{addr} never listened");
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn nginx_pids(prefix: &std::path::Path) -> Vec<u32> {
    // Master and workers: every process whose cmdline names our prefix, plus their children.
    let mut pids = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmd.contains("nginx")
                && (cmd.contains(&*prefix.to_string_lossy()) || cmd.contains("worker process"))
            {
                pids.push(pid);
            }
        }
    }
    pids
}

#[derive(Clone, Copy)]
struct Figures {
    mps: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
    /// CPU time of the proxy under test per round trip (µs), when measured.
    cpu_us: f64,
}

/// Runs a closed loop and charges the CPU time of `pids` (the proxy under
/// test) to its round trips: a steadier figure than msg/s on shared cores.
async fn closed_loop_cpu(
    target: SocketAddr,
    conns: usize,
    size: usize,
    secs: f64,
    pids: &[u32],
) -> Figures {
    let before: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
    let mut f = closed_loop(target, conns, size, secs).await;
    let after: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
    let round_trips = f.mps * secs;
    f.cpu_us = (after - before) as f64 * 10_000.0 / round_trips.max(1.0);
    f
}

/// Closed loop: each connection sends a message and waits for its echo.
async fn closed_loop(target: SocketAddr, conns: usize, size: usize, secs: f64) -> Figures {
    run_load(target, conns, size, secs, None).await.0
}

/// Runs `conns` connections (closed loop, or `rate_per_conn` messages/s
/// each) and returns the figures with the round-trip histogram (µs).
async fn run_load(
    target: SocketAddr,
    conns: usize,
    size: usize,
    secs: f64,
    rate_per_conn: Option<f64>,
) -> (Figures, Histogram<u64>) {
    run_load_over(target, conns, size, secs, rate_per_conn, None).await
}

/// A client WebSocket, plain or over TLS (`wss://` to a TLS listener).
#[allow(clippy::large_enum_variant)] // a few hundred, moved once each
enum ClientWs {
    Plain(
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    ),
    Tls(tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

/// Opens one connection; with `tls`, a TLS handshake (trusting its roots)
/// comes first.
async fn open_client(
    target: SocketAddr,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> Option<ClientWs> {
    match tls {
        None => tokio_tungstenite::connect_async(format!("ws://{target}/bench"))
            .await
            .ok()
            .map(|(ws, _)| ClientWs::Plain(ws)),
        Some(connector) => {
            let tcp = tokio::net::TcpStream::connect(target).await.ok()?;
            let _ = tcp.set_nodelay(true);
            let name = rustls_pki_types::ServerName::try_from("localhost").ok()?;
            let stream = connector.connect(name, tcp).await.ok()?;
            tokio_tungstenite::client_async(
                format!("wss://localhost:{}/bench", target.port()),
                stream,
            )
            .await
            .ok()
            .map(|(ws, _)| ClientWs::Tls(ws))
        }
    }
}

/// [`run_load`], over TLS when `tls` is given.
async fn run_load_over(
    target: SocketAddr,
    conns: usize,
    size: usize,
    secs: f64,
    rate_per_conn: Option<f64>,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> (Figures, Histogram<u64>) {
    let errors = Arc::new(AtomicU64::new(0));
    let mut sockets = Vec::with_capacity(conns);
    for _ in 0..conns {
        match open_client(target, tls).await {
            Some(ws) => sockets.push(ws),
            None => {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for (i, ws) in sockets.into_iter().enumerate() {
        let errors = errors.clone();
        let plan = Plan {
            size,
            start,
            end,
            rate_per_conn,
            slot: i,
        };
        tasks.push(tokio::spawn(async move {
            match ws {
                ClientWs::Plain(ws) => conn_loop(ws, plan, errors).await,
                ClientWs::Tls(ws) => conn_loop(ws, plan, errors).await,
            }
        }));
    }
    let mut hist = round_trip_histogram();
    let mut total = 0;
    for t in tasks {
        if let Ok((h, c)) = t.await {
            let _ = hist.add(&h);
            total += c;
        }
    }
    let figures = Figures {
        mps: total as f64 / secs,
        p50_us: hist.value_at_quantile(0.5) as f64,
        p99_us: hist.value_at_quantile(0.99) as f64,
        errors: errors.load(Ordering::Relaxed),
        cpu_us: f64::NAN,
    };
    (figures, hist)
}

/// What one connection of [`run_load_over`] does.
#[derive(Clone, Copy)]
struct Plan {
    size: usize,
    start: Instant,
    end: Instant,
    rate_per_conn: Option<f64>,
    slot: usize,
}

/// One connection's round trips until `plan.end`: the histogram and the count.
async fn conn_loop<S>(
    mut ws: tokio_tungstenite::WebSocketStream<S>,
    plan: Plan,
    errors: Arc<AtomicU64>,
) -> (Histogram<u64>, u64)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut hist = round_trip_histogram();
    let payload = vec![b'x'; plan.size];
    let mut count = 0u64;
    tokio::time::sleep_until(plan.start.into()).await;
    let interval = plan.rate_per_conn.map(|r| Duration::from_secs_f64(1.0 / r));
    // Spread fixed-rate senders over the interval.
    let mut next = plan.start
        + interval.map_or(Duration::ZERO, |iv| {
            iv.mul_f64((plan.slot % 97) as f64 / 97.0)
        });
    while Instant::now() < plan.end {
        if let Some(iv) = interval {
            tokio::time::sleep_until(next.into()).await;
            next += iv;
        }
        let t0 = Instant::now();
        let msg = if plan.size < 1024 {
            Message::text(String::from_utf8(payload.clone()).unwrap_or_default())
        } else {
            Message::binary(payload.clone())
        };
        if ws.send(msg).await.is_err() {
            errors.fetch_add(1, Ordering::Relaxed);
            break;
        }
        match ws.next().await {
            Some(Ok(_)) => {
                let us = t0.elapsed().as_micros() as u64;
                let _ = hist.record(us.max(1));
                count += 1;
            }
            _ => {
                errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    let _ = ws.close(None).await;
    (hist, count)
}

/// An empty histogram of round-trip times in µs (1 µs to 60 s).
fn round_trip_histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram")
}

/// Round trips of all rounds in one histogram: p50 and p99 from every sample.
fn pooled(hists: &[Histogram<u64>]) -> Figures {
    let mut all = round_trip_histogram();
    for h in hists {
        let _ = all.add(h);
    }
    Figures {
        mps: f64::NAN,
        p50_us: all.value_at_quantile(0.5) as f64,
        p99_us: all.value_at_quantile(0.99) as f64,
        errors: 0,
        cpu_us: f64::NAN,
    }
}

async fn admin_post(admin: SocketAddr, path: &str, body: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(admin).await.expect("admin");
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    let _ = tcp.read_to_string(&mut out).await;
    assert!(out.starts_with("HTTP/1.1 20"), "admin {path}: {out}");
}

async fn admin_delete(admin: SocketAddr, path: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(admin).await.expect("admin");
    let req = format!("DELETE {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    let _ = tcp.read_to_string(&mut out).await;
}

async fn idle_rss(target: SocketAddr, pids: &[u32], n: usize) -> (f64, usize) {
    let before: u64 = pids.iter().map(|p| rss_kib(*p)).sum();
    let mut held = Vec::with_capacity(n);
    let mut failed = 0;
    for chunk in 0..n.div_ceil(500) {
        let mut batch = Vec::new();
        for _ in 0..500.min(n - chunk * 500) {
            batch.push(tokio::spawn(tokio_tungstenite::connect_async(format!(
                "ws://{target}/idle"
            ))));
        }
        for b in batch {
            match b.await {
                Ok(Ok((ws, _))) => held.push(ws),
                _ => failed += 1,
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after: u64 = pids.iter().map(|p| rss_kib(*p)).sum();
    let per_conn = (after.saturating_sub(before)) as f64 * 1024.0 / held.len().max(1) as f64;
    drop(held);
    tokio::time::sleep(Duration::from_secs(2)).await;
    (per_conn, failed)
}

fn binomial_interval(n: f64, p: f64) -> (f64, f64) {
    // 99.9% two-sided normal approximation (z = 3.29).
    let sd = (n * p * (1.0 - p)).sqrt();
    (n * p - 3.29 * sd, n * p + 3.29 * sd)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let secs = if quick { 2.0 } else { 4.0 };
    // Each cell is measured `rounds` times, the targets interleaved, and the
    // median round kept: the cores are shared, so one slow second must not
    // decide a ratio.
    let args: Vec<String> = std::env::args().collect();
    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(if quick { 1 } else { 3 });
    // `--only a,b` runs only those sections: relay, added-latency, toxics,
    // metrics, capacity, memory.
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').map(str::to_string).collect());
    let want = |section: &str| only.as_ref().is_none_or(|o| o.iter().any(|s| s == section));
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
    let echo_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let proxy_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let quiet = || Stdio::null();
    let echo = Proc(
        Command::new(BIN)
            .args(["echo", "--listen", &echo_addr.to_string()])
            .stderr(quiet())
            .spawn()
            .expect("spawn echo"),
    );
    let proxy = Proc(
        Command::new(proxy_bin())
            .args([
                "proxy",
                "--listen",
                &proxy_addr.to_string(),
                "--upstream",
                &echo_addr.to_string(),
                "--admin",
                &admin_addr.to_string(),
                "--seed",
                "7",
            ])
            .env("RUST_LOG", "warn")
            .stderr(quiet())
            .spawn()
            .expect("spawn proxy"),
    );
    wait_port(echo_addr).await;
    wait_port(proxy_addr).await;

    // nginx as a WebSocket proxy, in a prefix of its own.
    let nginx_dir = tempfile::tempdir().expect("tmp");
    let nginx_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let conf = format!(
        "worker_processes auto;\nworker_rlimit_nofile 40000;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\ndaemon off;\nevents {{ worker_connections 30000; }}\nhttp {{\n  access_log off;\n  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}\n  upstream echo {{ server {echo_addr}; }}\n  server {{\n    listen {nginx_addr} backlog=4096;\n    location / {{\n      proxy_pass http://echo;\n      proxy_http_version 1.1;\n      proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection $connection_upgrade;\n      proxy_read_timeout 3600s;\n      proxy_buffering off;\n    }}\n  }}\n}}\n",
        dir = nginx_dir.path().display()
    );
    let conf_path = nginx_dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("nginx conf");
    // stdout too: an nginx worker left holding the caller's pipe keeps
    // `scripts/bench.sh | tee` waiting forever.
    let nginx = Command::new("nginx")
        .args([
            "-p",
            &nginx_dir.path().to_string_lossy(),
            "-c",
            &conf_path.to_string_lossy(),
        ])
        .stdin(quiet())
        .stdout(quiet())
        .stderr(quiet())
        .spawn()
        .ok()
        .map(Nginx);
    if nginx.is_some() {
        wait_port(nginx_addr).await;
    } else {
        eprintln!("nginx not found: scripts/bench.sh installs it; nginx columns are skipped");
    }

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!("# wsfault benchmark\n");
    println!("Machine: {} cores, {cpu}; loopback; {} s per cell; driver: tokio-tungstenite closed loop in one process.\n", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), secs);
    if want("relay") {
        println!("## Echo round trips (closed loop)\n");
        println!("| conns | size | direct msg/s | wsfault msg/s | nginx msg/s | wsfault/direct | wsfault/nginx | p50 direct/wsfault/nginx (µs) | p99 direct/wsfault/nginx (µs) | proxy CPU µs per round trip wsfault/nginx | errors |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        let sizes = [64usize, 16 * 1024];
        let conn_counts = if quick {
            vec![1usize, 100]
        } else {
            vec![1usize, 100, 1000]
        };
        // `--cells 100x64,1x16384` measures only those (connections x bytes).
        let cells: Vec<(usize, usize)> = match args.iter().position(|a| a == "--cells") {
            Some(i) => args
                .get(i + 1)
                .map(|v| {
                    v.split(',')
                        .filter_map(|c| c.split_once('x'))
                        .filter_map(|(n, b)| Some((n.parse().ok()?, b.parse().ok()?)))
                        .collect()
                })
                .unwrap_or_default(),
            None => conn_counts
                .iter()
                .flat_map(|&n| sizes.iter().map(move |&b| (n, b)))
                .collect(),
        };
        let mut verdict_cell = None;
        for &(conns, size) in &cells {
            {
                let (mut ds, mut ws, mut ns) = (Vec::new(), Vec::new(), Vec::new());
                for _ in 0..rounds {
                    ds.push(closed_loop(echo_addr, conns, size, secs).await);
                    ws.push(closed_loop_cpu(proxy_addr, conns, size, secs, &[proxy.0.id()]).await);
                    if nginx.is_some() {
                        let pids = nginx_pids(nginx_dir.path());
                        ns.push(closed_loop_cpu(nginx_addr, conns, size, secs, &pids).await);
                    }
                }
                let (d, w, n) = (median(ds), median(ws), (!ns.is_empty()).then(|| median(ns)));
                let nm = n.map_or(f64::NAN, |n| n.mps);
                if conns == 100 && size == 64 {
                    verdict_cell = Some((w.mps, d.mps, nm));
                }
                println!(
                "| {conns} | {size} B | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} | {:.1} / {:.1} | {} |",
                d.mps,
                w.mps,
                nm,
                w.mps / d.mps,
                w.mps / nm,
                d.p50_us,
                w.p50_us,
                n.map_or(f64::NAN, |n| n.p50_us),
                d.p99_us,
                w.p99_us,
                n.map_or(f64::NAN, |n| n.p99_us),
                w.cpu_us,
                n.map_or(f64::NAN, |n| n.cpu_us),
                d.errors + w.errors + n.map_or(0, |n| n.errors)
            );
            }
        }

        if let Some((w, d, n)) = verdict_cell {
            println!(
            "\n- target 100 conns × 64 B ≥ 0.9× nginx: {:.2}× — **{}**; ≥ 0.7× direct: {:.2}× — **{}**",
            w / n,
            if w / n >= 0.9 { "met".to_string() } else { format!("MISSED by {:.0}%", (0.9 - w / n) / 0.9 * 100.0) },
            w / d,
            if w / d >= 0.7 { "met".to_string() } else { format!("MISSED by {:.0}%", (0.7 - w / d) / 0.7 * 100.0) },
        );
        }
    }
    if want("added-latency") {
        println!("\n## Added latency at 1 000 msg/s (100 connections × 10 msg/s, 64 B)\n");
        // A p99 of a few hundred µs on shared cores moves by ±100 µs between
        // 4 s windows: the three paths are interleaved over at least eight
        // rounds and each p99 is taken over all of its samples (≥ 32 000).
        let (mut ds, mut ws, mut ns) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds.max(8) {
            ds.push(run_load(echo_addr, 100, 64, secs, Some(10.0)).await.1);
            ws.push(run_load(proxy_addr, 100, 64, secs, Some(10.0)).await.1);
            if nginx.is_some() {
                ns.push(run_load(nginx_addr, 100, 64, secs, Some(10.0)).await.1);
            }
        }
        let (d, w) = (pooled(&ds), pooled(&ws));
        println!("| path | p50 µs | p99 µs | added p50 µs | added p99 µs |\n|---|---|---|---|---|");
        println!("| direct | {:.0} | {:.0} | - | - |", d.p50_us, d.p99_us);
        println!(
            "| wsfault | {:.0} | {:.0} | {:.0} | {:.0} |",
            w.p50_us,
            w.p99_us,
            w.p50_us - d.p50_us,
            w.p99_us - d.p99_us
        );
        if !ns.is_empty() {
            let n = pooled(&ns);
            println!(
                "| nginx | {:.0} | {:.0} | {:.0} | {:.0} |",
                n.p50_us,
                n.p99_us,
                n.p50_us - d.p50_us,
                n.p99_us - d.p99_us
            );
            let (wa, na) = (w.p99_us - d.p99_us, n.p99_us - d.p99_us);
            println!(
            "\n- target added p99 not above nginx's: wsfault +{wa:.0} µs vs nginx +{na:.0} µs — **{}**",
            if wa <= na { "met".to_string() } else { format!("MISSED by {:.0} µs", wa - na) }
        );
        }
    }
    if want("tls") {
        println!("\n## TLS on the listener\n");
        // A second proxy in the same process, same upstream, `tls: self-signed`;
        // the client trusts exactly the certificate it serves.
        let tls_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let body = format!(
            r#"{{"name":"tls","listen":"{tls_addr}","upstream":"{echo_addr}","tls":"self-signed"}}"#
        );
        admin_post(admin_addr, "/proxies", &body).await;
        let pem = admin_get_body(admin_addr, "/proxies/tls/certificate").await;
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        use rustls_pki_types::pem::PemObject as _;
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()).flatten() {
            roots.add(cert).expect("the served certificate");
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let (mut plains, mut tlss) = (Vec::new(), Vec::new());
        for _ in 0..rounds.max(2) {
            plains.push(closed_loop(proxy_addr, 100, 64, secs).await);
            tlss.push(
                run_load_over(tls_addr, 100, 64, secs, None, Some(&connector))
                    .await
                    .0,
            );
        }
        let (plain, tls) = (median(plains), median(tlss));
        println!(
            "- wss:// vs ws:// to the same proxy, 100 conns × 64 B, closed loop: {:.0} msg/s vs {:.0} = {:.3}× (target ≥ 0.8×); p99 {:.0} µs vs {:.0} µs; errors {} / {}",
            tls.mps,
            plain.mps,
            tls.mps / plain.mps,
            tls.p99_us,
            plain.p99_us,
            tls.errors,
            plain.errors
        );
    }
    if want("toxics") {
        println!("\n## Toxics\n");
        // A toxic list that never triggers (probability 0 and a non-matching match).
        // Interleaved rounds (none, never, none, never, ...), medians compared.
        let (mut bases, mut nevers) = (Vec::new(), Vec::new());
        for _ in 0..rounds.max(2) {
            bases.push(closed_loop(proxy_addr, 100, 64, secs).await);
            admin_post(admin_addr, "/proxies/default/toxics", r#"{"name":"never1","type":"message_loss","stream":"upstream","attributes":{"probability":0}}"#).await;
            admin_post(admin_addr, "/proxies/default/toxics", r#"{"name":"never2","type":"latency","match":{"path":"/nothing*"},"attributes":{"latency":500}}"#).await;
            nevers.push(closed_loop(proxy_addr, 100, 64, secs).await);
            admin_delete(admin_addr, "/proxies/default/toxics/never1").await;
            admin_delete(admin_addr, "/proxies/default/toxics/never2").await;
        }
        let (base, never) = (median(bases), median(nevers));
        println!("- never-triggering toxics, 100 conns × 64 B: {:.0} msg/s vs {:.0} with none = {:.3}× (target ≥ 0.95×)", never.mps, base.mps, never.mps / base.mps);

        // Message matchers that never match (interleaved: none, kind, regex).
        let (mut nones, mut kinds, mut regexes) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds.max(2) {
            nones.push(closed_loop(proxy_addr, 100, 64, secs).await);
            admin_post(admin_addr, "/proxies/default/toxics", r#"{"name":"kind-never","type":"message_loss","stream":"downstream","attributes":{"probability":1},"match":{"message":{"kind":"close"}}}"#).await;
            kinds.push(closed_loop(proxy_addr, 100, 64, secs).await);
            admin_delete(admin_addr, "/proxies/default/toxics/kind-never").await;
            admin_post(admin_addr, "/proxies/default/toxics", r#"{"name":"regex-never","type":"message_loss","stream":"downstream","attributes":{"probability":1},"match":{"message":{"regex":"^never[0-9]+$"}}}"#).await;
            regexes.push(closed_loop(proxy_addr, 100, 64, secs).await);
            admin_delete(admin_addr, "/proxies/default/toxics/regex-never").await;
        }
        let (none, kind, regex) = (median(nones), median(kinds), median(regexes));
        println!("- `match.message.kind` that never matches, 100 conns × 64 B: {:.0} msg/s vs {:.0} with no toxic = {:.3}× (target ≥ 0.95×)", kind.mps, none.mps, kind.mps / none.mps);
        println!("- payload `regex` that never matches, 100 conns × 64 B: {:.0} msg/s vs {:.0} with no toxic = {:.3}× (target ≥ 0.85×)", regex.mps, none.mps, regex.mps / none.mps);

        // 100 ms latency at 1000 connections × 10 msg/s.
        let lat_conns = if quick { 200 } else { 1000 };
        let direct = run_load(echo_addr, lat_conns, 64, secs, Some(10.0)).await.0;
        let plain = run_load(proxy_addr, lat_conns, 64, secs, Some(10.0))
            .await
            .0;
        admin_post(
            admin_addr,
            "/proxies/default/toxics",
            r#"{"name":"lat","type":"latency","stream":"downstream","attributes":{"latency":100}}"#,
        )
        .await;
        let lat = run_load(proxy_addr, lat_conns, 64, secs, Some(10.0))
            .await
            .0;
        admin_delete(admin_addr, "/proxies/default/toxics/lat").await;
        println!(
        "- latency 100 ms at {lat_conns} conns × 10 msg/s: added p50 {:.2} ms (target 100 ± 1), added p99 {:.2} ms (target 100 ± 5); direct p50 {:.2} ms p99 {:.2} ms",
        (lat.p50_us - direct.p50_us) / 1000.0,
        (lat.p99_us - direct.p99_us) / 1000.0,
        direct.p50_us / 1000.0,
        direct.p99_us / 1000.0
    );
        let (a50, a99) = (
            (lat.p50_us - direct.p50_us) / 1000.0,
            (lat.p99_us - direct.p99_us) / 1000.0,
        );
        let (b50, b99) = (
            (lat.p50_us - plain.p50_us) / 1000.0,
            (lat.p99_us - plain.p99_us) / 1000.0,
        );
        println!(
        "  - vs direct: p50 **{}**, p99 **{}**; vs the proxy without the toxic (p50 {:.2} ms, p99 {:.2} ms): added p50 {b50:.2} ms (**{}**), added p99 {b99:.2} ms (**{}**)",
        verdict_ms(a50, 1.0),
        verdict_ms(a99, 5.0),
        plain.p50_us / 1000.0,
        plain.p99_us / 1000.0,
        verdict_ms(b50, 1.0),
        verdict_ms(b99, 5.0)
    );

        // 1% loss over 100 000 messages, counted by the proxy and seen by clients.
        admin_post(admin_addr, "/proxies/default/toxics", r#"{"name":"loss","type":"message_loss","stream":"upstream","attributes":{"probability":0.01}}"#).await;
        let total: u64 = if quick { 20_000 } else { 100_000 };
        let lost = loss_run(proxy_addr, 100, total).await;
        admin_delete(admin_addr, "/proxies/default/toxics/loss").await;
        let (lo, hi) = binomial_interval(total as f64, 0.01);
        println!(
        "- message_loss 1% over {total} messages: {lost} lost = {:.3}% (99.9% interval {lo:.0}..{hi:.0}: {})",
        lost as f64 * 100.0 / total as f64,
        if (lost as f64) >= lo && (lost as f64) <= hi { "inside" } else { "OUTSIDE" }
    );
    }
    if want("metrics") {
        println!("\n## Metrics as shipped\n");
        // Metrics are always on (no switch): every relay figure above includes
        // them. Here: the same cell with and without a Prometheus scraper
        // hitting /metrics every 100 ms (a harsh scrape interval).
        let (mut quiet_runs, mut scraped_runs) = (Vec::new(), Vec::new());
        let mut scrape_bytes = 0usize;
        for _ in 0..rounds.max(2) {
            quiet_runs.push(closed_loop(proxy_addr, 100, 64, secs).await);
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let scraper = {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut bytes = 0;
                    while !stop.load(Ordering::Relaxed) {
                        bytes = admin_get(admin_addr, "/metrics").await;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    bytes
                })
            };
            scraped_runs.push(closed_loop(proxy_addr, 100, 64, secs).await);
            stop.store(true, Ordering::Relaxed);
            scrape_bytes = scraper.await.unwrap_or(0);
        }
        let (quiet_m, scraped_m) = (median(quiet_runs), median(scraped_runs));
        println!(
        "- 100 conns × 64 B: {:.0} msg/s (metrics counted, not scraped) vs {:.0} msg/s while `/metrics` ({scrape_bytes} B) is scraped every 100 ms = {:.3}×",
        quiet_m.mps,
        scraped_m.mps,
        scraped_m.mps / quiet_m.mps
    );
    }
    if want("capacity") {
        println!("\n## Above capacity\n");
        capacity_check(echo_addr).await;
    }
    if want("memory") {
        println!("\n## Memory per idle connection\n");
        println!("| connections | wsfault RSS/conn | nginx RSS/conn | failed |\n|---|---|---|---|");
        let counts = if quick {
            vec![1000usize]
        } else {
            vec![5000usize, 9000]
        };
        let mut verdicts = Vec::new();
        for n in counts {
            let (w, wf) = idle_rss(proxy_addr, &[proxy.0.id()], n).await;
            let (ng, nf) = if nginx.is_some() {
                idle_rss(nginx_addr, &nginx_pids(nginx_dir.path()), n).await
            } else {
                (f64::NAN, 0)
            };
            println!(
                "| {n} | {:.1} KiB | {:.1} KiB | {wf} / {nf} |",
                w / 1024.0,
                ng / 1024.0,
            );
            verdicts.push(format!(
            "- {n} idle proxied connections: {:.1} KiB each (target ≤ 16 KiB: **{}**), {wf} failed (**{}**)",
            w / 1024.0,
            if w <= 16.0 * 1024.0 { "met".to_string() } else { format!("MISSED by {:.1} KiB", w / 1024.0 - 16.0) },
            if wf == 0 { "met" } else { "MISSED" }
        ));
        }
        println!();
        for v in verdicts {
            println!("{v}");
        }
    }
    drop(nginx);
    drop(proxy);
    drop(echo);
}

/// `GET path` on the admin API: the response body.
async fn admin_get_body(admin: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(admin).await.expect("admin");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    let _ = tcp.read_to_string(&mut out).await;
    out.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

async fn admin_get(admin: SocketAddr, path: &str) -> usize {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut tcp) = tokio::net::TcpStream::connect(admin).await else {
        return 0;
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    let _ = tcp.write_all(req.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tcp.read_to_end(&mut out).await;
    out.len()
}

fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// A second proxy started with a 1 064 open-file limit (capacity
/// (1064 − 64) / 2 = 500): fill it, then knock 200 more times, then check
/// the refusals are 503s, the accept loop is not busy, and the 500 live
/// connections still echo.
async fn capacity_check(echo_addr: SocketAddr) {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let Ok(child) = Command::new("prlimit")
        .args(["--nofile=1064:1064", "--", BIN, "proxy", "--listen"])
        .arg(addr.to_string())
        .args([
            "--upstream",
            &echo_addr.to_string(),
            "--admin",
            &admin.to_string(),
        ])
        .env("RUST_LOG", "error")
        .stderr(Stdio::null())
        .spawn()
    else {
        println!("- prlimit not found: skipped");
        return;
    };
    let proxy = Proc(child);
    wait_port(addr).await;
    let pid = proxy.0.id();
    let mut held = Vec::new();
    let mut early = 0;
    for _ in 0..500 {
        match tokio_tungstenite::connect_async(format!("ws://{addr}/cap")).await {
            Ok((ws, _)) => held.push(ws),
            Err(_) => early += 1,
        }
    }
    let (mut refused503, mut other) = (0, 0);
    let c0 = cpu_ticks(pid);
    let t0 = Instant::now();
    for _ in 0..200 {
        match tokio_tungstenite::connect_async(format!("ws://{addr}/cap")).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) if resp.status() == 503 => {
                refused503 += 1
            }
            Ok((mut ws, _)) => {
                other += 1;
                let _ = ws.close(None).await;
            }
            Err(_) => other += 1,
        }
    }
    let burst = t0.elapsed().as_secs_f64();
    let c1 = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c2 = cpu_ticks(pid);
    let mut alive = 0;
    for ws in held.iter_mut() {
        if ws.send(Message::text("still here")).await.is_ok()
            && matches!(
                tokio::time::timeout(Duration::from_secs(5), ws.next()).await,
                Ok(Some(Ok(_)))
            )
        {
            alive += 1;
        }
    }
    let n = held.len();
    drop(held);
    let tick = 100.0; // USER_HZ
    println!(
        "- proxy with open-file limit 1 064 (capacity 500): {n} connections accepted ({early} refused early); 200 more: {refused503} got 503, {other} other; proxy CPU {:.0} ms during the {:.2} s refusal burst, {:.0} ms in the 2 s after (idle, limit reached); {alive}/{n} existing connections still echo — **{}**",
        (c1 - c0) as f64 * 1000.0 / tick,
        burst,
        (c2 - c1) as f64 * 1000.0 / tick,
        if n == 500 && refused503 == 200 && alive == n && (c2 - c1) <= 2 { "met" } else { "MISSED" }
    );
}

/// "met" when `added_ms` is within ±`tol` ms of 100 ms, else by how much it missed.
fn verdict_ms(added_ms: f64, tol: f64) -> String {
    let off = (added_ms - 100.0).abs();
    if off <= tol {
        "met".to_string()
    } else {
        format!("MISSED by {:.2} ms", off - tol)
    }
}

/// The round with the median throughput.
fn median(mut v: Vec<Figures>) -> Figures {
    v.sort_by(|a, b| a.mps.total_cmp(&b.mps));
    v[v.len() / 2]
}

/// Sends `total` messages spread over `conns` connections, one at a time per
/// connection with a short receive window, and counts messages never echoed.
async fn loss_run(target: SocketAddr, conns: usize, total: u64) -> u64 {
    let per = total / conns as u64;
    let mut tasks = Vec::new();
    for c in 0..conns {
        tasks.push(tokio::spawn(async move {
            let Ok((mut ws, _)) =
                tokio_tungstenite::connect_async(format!("ws://{target}/loss")).await
            else {
                return per;
            };
            // Pipeline: send all, then read echoes until a quiet period.
            let mut received = 0u64;
            for i in 0..per {
                if ws.send(Message::text(format!("{c}:{i}"))).await.is_err() {
                    break;
                }
                if i % 64 == 63 {
                    while let Ok(Some(Ok(_))) =
                        tokio::time::timeout(Duration::from_millis(0), ws.next()).await
                    {
                        received += 1;
                    }
                }
            }
            while let Ok(Some(Ok(m))) =
                tokio::time::timeout(Duration::from_millis(1500), ws.next()).await
            {
                if m.is_text() {
                    received += 1;
                }
            }
            let _ = ws.close(None).await;
            per - received.min(per)
        }));
    }
    let mut lost = 0;
    for t in tasks {
        lost += t.await.unwrap_or(0);
    }
    lost
}
