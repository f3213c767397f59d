//! Config reload (issue 15; docs/reference.md#config-reload), through the
//! real `wsfault proxy --config FILE` binary: a change on disk and SIGHUP
//! apply the file (toxics added, changed, removed; proxies created,
//! rebound, deleted) while a live WebSocket connection keeps working; a bad
//! file is refused with its `FILE:LINE:COL` and the running config stays;
//! a Kubernetes ConfigMap update (the `..data` symlink swap, the file never
//! written) is seen; `wsfault_config_reloads_total{result}` counts them.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(15);

fn config(upstream: SocketAddr, listen: &str, toxics: &str) -> String {
    format!("proxies:\n  - name: app\n    listen: {listen}\n    upstream: {upstream}\n    toxics: {toxics}\n")
}

/// The toxic names of proxy `name`, or `None` when it does not exist.
fn toxic_names(proxy: &ProxyProc, name: &str) -> Option<Vec<String>> {
    let (status, body) = proxy.api("GET", &format!("/proxies/{name}"), None);
    if status != 200 {
        return None;
    }
    let view: Value = serde_json::from_str(&body).expect("JSON");
    Some(
        view["toxics"]
            .as_array()
            .expect("toxics")
            .iter()
            .filter_map(|t| t["name"].as_str().map(str::to_string))
            .collect(),
    )
}

fn reloads(proxy: &ProxyProc, result: &str) -> u64 {
    metric_sum(
        &proxy.metrics(),
        "wsfault_config_reloads_total",
        &[("result", result)],
    ) as u64
}

/// A live connection must still echo.
async fn still_echoes(ws: &mut WsClient, text: &str) {
    ws.send(Message::Text(text.into())).await.expect("send");
    let got = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("echo in time")
        .expect("open")
        .expect("frame");
    assert_eq!(got.into_text().expect("text").as_str(), text);
}

type WsClient =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: SocketAddr) -> WsClient {
    tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .expect("connect through the proxy")
        .0
}

fn write(path: &Path, text: &str) {
    // Write then rename, as editors do: the watcher must not see half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn sighup(proxy: &ProxyProc) {
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &proxy.pid().to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -HUP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_changes_and_sighup_apply_live_connections_stay() {
    let echo = tungstenite_echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("wsfault.yaml");
    write(&file, &config(echo, "127.0.0.1:0", "[]"));
    let path = file.display().to_string();
    let proxy = ProxyProc::start_args(&["--config", &path], "app");
    let mut ws = connect(proxy.listen).await;
    still_echoes(&mut ws, "before").await;
    assert_eq!((reloads(&proxy, "ok"), reloads(&proxy, "error")), (0, 0));

    // A toxic added on disk.
    write(
        &file,
        &config(
            echo,
            "127.0.0.1:0",
            "[{name: slow, type: latency, attributes: {latency: 50}}]",
        ),
    );
    wait_until(
        "the latency toxic",
        LIMIT,
        Duration::from_millis(50),
        || toxic_names(&proxy, "app") == Some(vec!["slow".into()]),
    );
    assert_eq!(reloads(&proxy, "ok"), 1);
    let started = std::time::Instant::now();
    still_echoes(&mut ws, "during").await;
    assert!(
        started.elapsed() >= Duration::from_millis(50),
        "the live connection got the new toxic"
    );

    // A bad file: refused, FILE:LINE:COL logged, the running config stays.
    write(
        &file,
        &config(
            echo,
            "127.0.0.1:0",
            "\n      - {name: lossy, type: message_loss, attributes: {probability: 7}}",
        ),
    );
    wait_until("the refusal", LIMIT, Duration::from_millis(50), || {
        reloads(&proxy, "error") == 1
    });
    assert_eq!(toxic_names(&proxy, "app"), Some(vec!["slow".into()]));
    let log = proxy.stderr();
    assert!(
        log.contains(&format!("{path}:6:")) && log.contains("probability"),
        "{log}"
    );
    still_echoes(&mut ws, "after a bad file").await;

    // SIGHUP re-reads the same (fixed) file: toxics replaced exactly.
    std::fs::write(
        &file,
        config(
            echo,
            "127.0.0.1:0",
            "[{name: dup, type: duplicate, attributes: {probability: 0}}]",
        ),
    )
    .expect("write");
    sighup(&proxy);
    wait_until(
        "the duplicate toxic",
        LIMIT,
        Duration::from_millis(50),
        || toxic_names(&proxy, "app") == Some(vec!["dup".into()]),
    );
    still_echoes(&mut ws, "after SIGHUP").await;

    // A new listen address rebinds; a second proxy appears; the live
    // connection (on the old address) stays.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut two = config(echo, &listen, "[]");
    two.push_str(&format!(
        "  - name: extra\n    listen: 127.0.0.1:0\n    upstream: {echo}\n"
    ));
    write(&file, &two);
    wait_until("the second proxy", LIMIT, Duration::from_millis(50), || {
        toxic_names(&proxy, "extra").is_some()
    });
    let moved: SocketAddr = listen.parse().expect("addr");
    let mut fresh = connect(moved).await;
    still_echoes(&mut fresh, "new address").await;
    still_echoes(&mut ws, "old connection").await;

    // The second proxy removed from the file is deleted.
    write(&file, &config(echo, &listen, "[]"));
    wait_until("the deletion", LIMIT, Duration::from_millis(50), || {
        toxic_names(&proxy, "extra").is_none()
    });
    still_echoes(&mut ws, "still there").await;
    assert_eq!(reloads(&proxy, "error"), 1);
    assert!(reloads(&proxy, "ok") >= 4, "{}", proxy.metrics());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_symlink_swap_is_seen() {
    let echo = tungstenite_echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    // How the kubelet lays out a mounted ConfigMap.
    let first = root.join("..2026_12_01_00_00_00.000000001");
    std::fs::create_dir(&first).expect("mkdir");
    std::fs::write(
        first.join("wsfault.yaml"),
        config(echo, "127.0.0.1:0", "[]"),
    )
    .expect("write");
    std::os::unix::fs::symlink(first.file_name().expect("name"), root.join("..data"))
        .expect("..data");
    std::os::unix::fs::symlink("..data/wsfault.yaml", root.join("wsfault.yaml")).expect("link");
    let path = root.join("wsfault.yaml").display().to_string();
    let proxy = ProxyProc::start_args(&["--config", &path], "app");
    let mut ws = connect(proxy.listen).await;
    still_echoes(&mut ws, "before").await;

    // The update: a new timestamped directory, then `..data` swapped by rename.
    let second = root.join("..2026_12_01_00_05_00.000000002");
    std::fs::create_dir(&second).expect("mkdir");
    std::fs::write(
        second.join("wsfault.yaml"),
        config(
            echo,
            "127.0.0.1:0",
            "[{name: cm, type: latency, attributes: {latency: 10}}]",
        ),
    )
    .expect("write");
    std::os::unix::fs::symlink(second.file_name().expect("name"), root.join("..data_tmp"))
        .expect("..data_tmp");
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap");
    std::fs::remove_dir_all(&first).expect("old dir");

    wait_until(
        "the ConfigMap update",
        LIMIT,
        Duration::from_millis(50),
        || toxic_names(&proxy, "app") == Some(vec!["cm".into()]),
    );
    assert_eq!(reloads(&proxy, "ok"), 1);
    still_echoes(&mut ws, "after the swap").await;
}
