//! Verdicts that are true: the load client through the proxy, where the
//! truth is known from the proxy's own counters.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::json;
use wsfault::load::{run, LoadConfig, Mode, Progress};

async fn echo_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(wsfault::echo::serve(
        listener,
        None,
        std::future::pending::<()>(),
    ));
    addr
}

fn config(addr: SocketAddr, mode: Mode, connections: u32, rate: f64, secs: u64) -> LoadConfig {
    let mut cfg = LoadConfig::new(
        format!("ws://{addr}/load"),
        connections,
        rate,
        Duration::from_secs(secs),
    );
    cfg.mode = mode;
    cfg.progress = Progress::Off;
    cfg.slos = Vec::new();
    if mode == Mode::Resume {
        cfg.reconnect = true;
    }
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_mode_lost_equals_the_proxys_dropped_count() {
    let echo = echo_backend().await;
    let (proxy, addr) = TestProxy::with_proxy(&echo.to_string(), Some(42)).await;
    proxy
        .toxic("p", json!({"name": "loss", "type": "message_loss", "stream": "upstream", "attributes": {"probability": 0.05}}))
        .await;
    let report = run(config(addr, Mode::Echo, 5, 50.0, 3))
        .await
        .expect("run");
    let dropped = proxy
        .metric("wsfault_toxic_actions_total{proxy=\"p\",toxic=\"loss\"")
        .await as u64;
    assert!(dropped > 0, "the toxic acted");
    assert_eq!(report.messages.lost, dropped, "{:?}", report.messages);
    assert_eq!(report.messages.duplicated, 0);
    assert!(!report.pass, "loss==0 must fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_mode_duplicated_equals_the_proxys_duplicate_count() {
    let echo = echo_backend().await;
    let (proxy, addr) = TestProxy::with_proxy(&echo.to_string(), Some(7)).await;
    proxy
        .toxic("p", json!({"name": "dup", "type": "duplicate", "stream": "downstream", "attributes": {"probability": 0.05}}))
        .await;
    let report = run(config(addr, Mode::Echo, 5, 50.0, 3))
        .await
        .expect("run");
    let copies = proxy
        .metric("wsfault_toxic_actions_total{proxy=\"p\",toxic=\"dup\"")
        .await as u64;
    assert!(copies > 0, "the toxic acted");
    assert_eq!(report.messages.duplicated, copies, "{:?}", report.messages);
    assert_eq!(report.messages.lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_mode_is_exactly_once_through_resets_and_partitions() {
    let echo = echo_backend().await;
    let (proxy, addr) = TestProxy::with_proxy(&echo.to_string(), Some(3)).await;
    // A reset about every 50 server messages.
    proxy
        .toxic("p", json!({"name": "resets", "type": "drop_connection", "stream": "downstream", "attributes": {"probability": 0.02, "mode": "reset"}}))
        .await;
    // Partitions: a blackhole that cuts the connection after 800 ms, 1.5 s out of every 4 s.
    proxy
        .toxic("p", json!({"name": "partition", "type": "timeout", "stream": "upstream", "attributes": {"timeout": 800},
                           "schedule": {"start_after": 1000, "duration": 1500, "period": 4000}}))
        .await;
    let report = run(config(addr, Mode::Resume, 5, 20.0, 8))
        .await
        .expect("run");
    let m = &report.messages;
    assert_eq!(
        (m.lost, m.duplicated, m.reordered, m.corrupted),
        (0, 0, 0, 0),
        "{m:?}"
    );
    assert!(
        report.connections.reconnects > 0,
        "{:?}",
        report.connections
    );
    assert!(
        proxy
            .metric("wsfault_toxic_actions_total{proxy=\"p\",toxic=\"resets\"")
            .await
            > 0.0
    );
    assert!(report.pass, "{:?}", report.failures);
}
