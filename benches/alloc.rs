//! Allocations per relayed message (issue 2: "the hot path does not allocate
//! per frame with no toxic").
//!
//! The proxy runs in this process: its runtime and the relay workers it
//! starts (`proxy::workers`). A counting global allocator counts every
//! allocation except those made on threads flagged as the client's (the
//! main thread and the client's runtime), so the relay workers are counted
//! wherever they run, and the `wsfault echo` backend (a child process) is
//! not. After the
//! connections are open and warmed up, 100 000 echo round trips (200 000
//! frames through the proxy) are sent and the allocation count is read
//! before and after: with no toxic, then with a never-triggering toxic
//! (message_loss p = 0), which takes the decoding path.
//!
//! `cargo bench --bench alloc -- [--quick]`

mod support;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::{free_port, Proc};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const BIN: &str = env!("CARGO_BIN_EXE_wsfault");

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the client's threads: their allocations are not the proxy's.
    static CLIENT_THREAD: Cell<bool> = const { Cell::new(false) };
}

struct Counting;

fn count(size: usize) {
    // A thread whose locals are gone (exiting) is not counted.
    if !CLIENT_THREAD.try_with(|c| c.get()).unwrap_or(true) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// `conns` connections, each sending `per_conn` 64-byte text messages in a
/// closed loop; returns the number of echoes received.
async fn round_trips(target: SocketAddr, conns: usize, per_conn: u64) -> u64 {
    let mut sockets = Vec::new();
    for _ in 0..conns {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{target}/alloc"))
            .await
            .expect("connect through the proxy");
        sockets.push(ws);
    }
    // Warm up: buffers, pools, timer wheel, metric handles.
    let run = |mut sockets: Vec<Ws>, n: u64| async move {
        let mut tasks = Vec::new();
        for mut ws in sockets.drain(..) {
            tasks.push(tokio::spawn(async move {
                let mut got = 0u64;
                for _ in 0..n {
                    if ws.send(Message::text("x".repeat(64))).await.is_err() {
                        break;
                    }
                    match ws.next().await {
                        Some(Ok(_)) => got += 1,
                        _ => break,
                    }
                }
                (ws, got)
            }));
        }
        let mut back = Vec::new();
        let mut total = 0;
        for t in tasks {
            let (ws, got) = t.await.expect("task");
            back.push(ws);
            total += got;
        }
        (back, total)
    };
    let (sockets, _) = run(sockets, 100).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a0 = ALLOCS.load(Ordering::Relaxed);
    let b0 = BYTES.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let (mut sockets, total) = run(sockets, per_conn).await;
    let secs = t0.elapsed().as_secs_f64();
    let a1 = ALLOCS.load(Ordering::Relaxed);
    let b1 = BYTES.load(Ordering::Relaxed);
    let per_msg = (a1 - a0) as f64 / total.max(1) as f64;
    println!(
        "| {total} | {} | {per_msg:.4} | {:.1} | {:.0} |",
        a1 - a0,
        (b1 - b0) as f64 / total.max(1) as f64,
        total as f64 / secs
    );
    for ws in sockets.iter_mut() {
        let _ = ws.close(None).await;
    }
    total
}

fn main() {
    CLIENT_THREAD.with(|c| c.set(true));
    let quick = std::env::args().any(|a| a == "--quick");
    let total: u64 = if quick { 20_000 } else { 100_000 };
    let conns = 100usize;
    let echo_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let _echo = Proc(
        Command::new(BIN)
            .args(["echo", "--listen", &echo_addr.to_string()])
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn echo"),
    );
    let proxy_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("proxy runtime");
    let server = wsfault::proxy::Server::new(Some(7));
    let proxy_addr = proxy_rt.block_on({
        let server = server.clone();
        async move {
            server
                .create(wsfault::config::ProxySpec::new(
                    "default",
                    "127.0.0.1:0",
                    &echo_addr.to_string(),
                ))
                .await
                .expect("create proxy");
            server
                .proxy("default")
                .and_then(|p| p.bound_addr())
                .expect("bound")
        }
    });
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .on_thread_start(|| CLIENT_THREAD.with(|c| c.set(true)))
        .build()
        .expect("client runtime");
    client_rt.block_on(async {
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(echo_addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    });
    println!("## Allocations in the proxy per relayed message\n");
    println!("Counting global allocator on every thread but the client's (proxy in-process: its runtime and its relay workers; client on another runtime, not counted; `wsfault echo` a child process); the last row is a control that must allocate; {conns} connections, 64 B text messages, closed loop, after a warm-up; one message = one echo round trip = 2 frames through the proxy.\n");
    println!("| toxics | round trips | allocations | allocations/round trip | bytes allocated/round trip | msg/s (counting on) |");
    println!("|---|---|---|---|---|---|");
    print!("| none ");
    client_rt.block_on(round_trips(proxy_addr, conns, total / conns as u64));
    let spec: wsfault::toxics::ToxicSpec = serde_json::from_str(
        r#"{"name":"never","type":"message_loss","stream":"upstream","attributes":{"probability":0}}"#,
    )
    .expect("toxic json");
    proxy_rt
        .block_on(server.add_toxic("default", spec))
        .expect("add toxic");
    print!("| message_loss p=0 (upstream) ");
    client_rt.block_on(round_trips(proxy_addr, conns, total / conns as u64));
    // Control: a toxic that acts decodes and queues every frame, so the
    // counter must see allocations on the relay workers.
    proxy_rt
        .block_on(server.remove_toxic("default", "never"))
        .expect("remove toxic");
    let spec: wsfault::toxics::ToxicSpec = serde_json::from_str(
        r#"{"name":"slow","type":"latency","stream":"upstream","attributes":{"latency":1}}"#,
    )
    .expect("toxic json");
    proxy_rt
        .block_on(server.add_toxic("default", spec))
        .expect("add toxic");
    print!("| control: latency 1 ms (upstream), frames decoded and held ");
    let control_total = (total / 10).max(conns as u64);
    client_rt.block_on(round_trips(proxy_addr, conns, control_total / conns as u64));
    drop(client_rt);
    proxy_rt.shutdown_timeout(Duration::from_millis(100));
}
